"""Layer comparison: arborescences, StructLens trees, tree distances, CKA, redundancy, SAE matching,
pruning on the real model, and the resumable driver."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from featuregeo.core.errors import InputError
from featuregeo.tl.layers import (MEASURES, check_measures, cka_matrix, linear_cka, match_features,
                               maximum_spanning_arborescence, random_rotation, redundancy, sentence_trees,
                               similarity_matrices, structlens_scores, structlens_tree, tree_edit_distance, uas)


# ---------------------------------------------------------------------------------------------
# arborescence solver against independent references


def _random_graph(rng, n, p_missing=0.3):
    S = rng.random((n, n))
    S[rng.random((n, n)) < p_missing] = -np.inf
    S[0, 1:] = rng.random(n - 1)  # the root reaches everyone: an arborescence exists
    S[:, 0] = -np.inf
    np.fill_diagonal(S, -np.inf)
    return S


def _score(S, heads):
    return sum(S[heads[d], d] for d in range(1, len(heads)))


def _brute_force(S):
    n = S.shape[0]
    best, arg = -np.inf, None
    for choice in itertools.product(range(n), repeat=n - 1):
        heads = np.array((-1,) + choice)
        if any(not np.isfinite(S[heads[d], d]) for d in range(1, n)):
            continue
        ok = True
        for d in range(1, n):  # every node must reach the root
            v, steps = d, 0
            while v != 0 and steps <= n:
                v, steps = heads[v], steps + 1
            ok &= v == 0
        if ok and _score(S, heads) > best:
            best, arg = _score(S, heads), heads
    return arg


def test_arborescence_matches_brute_force(rng):
    for _ in range(60):
        n = int(rng.integers(2, 6))
        S = _random_graph(rng, n)
        np.testing.assert_array_equal(maximum_spanning_arborescence(S), _brute_force(S))


def test_arborescence_matches_networkx(rng):
    nx = pytest.importorskip("networkx")
    for _ in range(150):
        n = int(rng.integers(2, 12))
        S = _random_graph(rng, n, p_missing=rng.uniform(0, 0.7))
        heads = maximum_spanning_arborescence(S)
        G = nx.DiGraph()
        G.add_weighted_edges_from((i, j, S[i, j]) for i in range(n) for j in range(1, n) if np.isfinite(S[i, j]))
        ref = np.full(n, -1)
        for u, v in nx.maximum_spanning_arborescence(G).edges:
            ref[v] = u
        np.testing.assert_array_equal(heads, ref)
        assert _score(S, heads) == pytest.approx(_score(S, ref))


def test_arborescence_rejects_unreachable_and_bad_input():
    S = np.full((3, 3), -np.inf)
    S[0, 1] = 1.0
    with pytest.raises(InputError, match="no incoming arc"):
        maximum_spanning_arborescence(S)
    with pytest.raises(InputError, match="square"):
        maximum_spanning_arborescence(np.zeros((2, 3)))
    with pytest.raises(InputError, match="NaN"):
        maximum_spanning_arborescence(np.full((2, 2), np.nan))


def test_structlens_tree_forward_only_and_equals_edmonds(rng):
    for T in (1, 2, 5, 17, 40):
        x = rng.standard_normal((T, 6)) * rng.uniform(0.1, 100)
        S = structlens_scores(x)
        assert np.all(S[1:, 1:][np.tril_indices(T)] == -np.inf) and np.all(S[0, 1:] == 0)
        g = structlens_tree(x)
        e = structlens_tree(x, method="edmonds")
        np.testing.assert_array_equal(g, e)
        assert g[0] == -1 and np.all(g[1:] < np.arange(1, T)) and np.all(g[1:] >= 0)  # head before dependent
        for j in range(1, T):  # the head is the nearest earlier token (score 1 / (1 + L2))
            d = np.linalg.norm(x[:j] - x[j], axis=1)
            assert d[g[j]] == pytest.approx(d.min())
    with pytest.raises(InputError, match="method"):
        structlens_tree(x, method="mst")


# ---------------------------------------------------------------------------------------------
# tree comparison


def test_tree_edit_distance_known_cases(rng):
    # Zhang & Shasha's example: f(d(a c(b)) e) vs f(c(d(a b)) e) -> 2
    ha, la = [-1, 0, 1, 1, 3, 0], list("fdacbe")
    hb, lb = [-1, 0, 1, 2, 2, 0], list("fcdabe")
    for numba in (True, False):
        assert tree_edit_distance(ha, hb, la, lb, use_numba=numba) == 2
    assert tree_edit_distance([-1, 0, 0], [-1, 0], list("abc"), list("ab")) == 1  # one extra leaf
    assert tree_edit_distance([-1], [-1], ["a"], ["b"]) == 1  # relabel
    chain, star = np.array([-1, 0, 1, 2]), np.array([-1, 0, 0, 0])
    # a path maps only onto a path (ancestry is kept) and the star's longest path has 2 nodes:
    # delete two chain nodes and insert two star nodes
    assert tree_edit_distance(chain, star) == 4
    assert tree_edit_distance(chain, star) == tree_edit_distance(chain, star, use_numba=False)
    trees = [structlens_tree(rng.standard_normal((12, 4))) for _ in range(4)]
    assert tree_edit_distance(trees[0], trees[1]) == tree_edit_distance(trees[0], trees[1], use_numba=False)
    for a, b, c in itertools.permutations(trees, 3):  # a metric: symmetric, triangle inequality
        assert tree_edit_distance(a, b) == tree_edit_distance(b, a)
        assert tree_edit_distance(a, c) <= tree_edit_distance(a, b) + tree_edit_distance(b, c)
    with pytest.raises(InputError, match="cycle"):
        tree_edit_distance([1, 0], [-1, 0])


def test_identical_trees_uas_one_ted_zero(rng):
    h = structlens_tree(rng.standard_normal((30, 5)))
    assert uas(h, h) == 1.0
    assert tree_edit_distance(h, h) == 0
    h2 = h.copy()
    h2[-1] = 0 if h[-1] != 0 else 1
    assert uas(h, h2) == pytest.approx(29 / 30)
    assert tree_edit_distance(h, h2) >= 1


# ---------------------------------------------------------------------------------------------
# CKA


def test_cka_invariances_and_independence(rng):
    x = rng.standard_normal((500, 20)) @ rng.standard_normal((20, 20))
    q = random_rotation(20, 1)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-5)
    assert linear_cka(x, 37.5 * x + 4.0) == pytest.approx(1.0, abs=1e-5)
    y = rng.standard_normal((4000, 10))
    z = rng.standard_normal((4000, 10))
    assert linear_cka(y, z) < 0.01  # small-sample bias ~ d / n
    assert linear_cka(y, y[:, :5]) > 0.4
    # token-space and feature-space branches agree
    reps = [rng.standard_normal((30, 8)) for _ in range(3)]
    a = cka_matrix(reps)  # n=30 > 2*8: feature space
    b = cka_matrix([np.hstack([r, np.zeros((30, 40))]) for r in reps])  # zero columns: token space
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(InputError, match="rows like x"):
        linear_cka(y, z[:10])


# ---------------------------------------------------------------------------------------------
# planted redundancy


def test_copied_layer_is_most_redundant_for_every_measure(rng):
    R, S, T, d = 7, 4, 16, 12
    acts = rng.standard_normal((R, S, T, d)).astype(np.float32)
    acts = np.cumsum(acts, axis=0)  # a residual-stream-like stack: each layer adds to the previous
    acts[4] = acts[3]  # block 3 (input rep 3, output rep 4) does nothing
    mats = similarity_matrices(acts, MEASURES)
    for m in MEASURES:
        red = redundancy(mats[m])
        assert red[0]["block"] == 3, (m, red[:3])
        assert red[0]["score"] == pytest.approx(1.0)
        assert red[1]["score"] < 0.999
    assert mats["ted_distance"][3, 4] == 0
    heads = sentence_trees(acts)
    assert heads.shape == (R, S, T) and np.array_equal(heads[3], heads[4])


def test_bad_measures_and_shapes():
    with pytest.raises(InputError, match="measures"):
        check_measures(["cosine", "svcca"])
    with pytest.raises(InputError, match="measures"):
        similarity_matrices(np.zeros((3, 2, 5, 4)), "bogus")
    with pytest.raises(InputError, match="at least 2 layers"):
        similarity_matrices(np.zeros((1, 2, 5, 4)), ["cosine"])
    with pytest.raises(InputError, match="square"):
        redundancy(np.zeros((3, 4)))


# ---------------------------------------------------------------------------------------------
# SAE feature matching


def test_matching_recovers_planted_permutation_and_null_matches_little(rng):
    n, d = 300, 64
    a = rng.standard_normal((n, d))
    perm = rng.permutation(n)
    b = a[perm] + 0.05 * rng.standard_normal((n, d))
    m = match_features(a, b, thresholds=(0.5, 0.7, 0.9))
    assert m["frac_persist"][1] > 0.99 and m["frac_appear"][1] < 0.01
    assert m["frac_assigned"][2] > 0.99
    assert np.array_equal(np.asarray(m["assignment"])[perm], np.arange(n))  # row i of b is a[perm[i]]
    null = match_features(a, b @ random_rotation(d, 3), thresholds=(0.5, 0.7, 0.9))
    assert null["frac_persist"][1] < 0.02 and null["best_mean"] < 0.5
    assert null["assigned_mean"] < 0.45 < 0.99 < m["assigned_mean"]
    with pytest.raises(InputError, match="d_model"):
        match_features(a, b[:, :10])


def _array_suite(arrays: dict):
    from featuregeo.core.data import FeatureCloud, Suite

    return Suite(sorted(arrays), lambda L: FeatureCloud.from_array(arrays[L], layer=L), name="planted")


def test_sae_geometry_planted_persistence_and_slopes(rng):
    from featuregeo.tl.layers import sae_geometry

    d = 48
    scales = np.arange(1, d + 1, dtype=float) ** -0.6  # a power-law spectrum
    a = rng.standard_normal((400, d)) * scales
    b = a[rng.permutation(400)] + 0.02 * rng.standard_normal((400, d))  # layer 3 = layer 1 permuted
    c = rng.standard_normal((400, d))  # layer 4: new, unrelated features
    res = sae_geometry(_array_suite({1: a, 3: b, 4: c}), thresholds=(0.5, 0.9), seed=1)
    p13, p34 = res["pairs"]
    assert (p13["layer_a"], p13["layer_b"], p34["layer_a"], p34["layer_b"]) == (1, 3, 3, 4)  # adjacent = available
    assert p13["frac_persist"][1] > 0.97 and p13["frac_assigned"][1] > 0.97
    assert p34["frac_persist"][0] < 0.2 and p34["frac_appear"][0] > 0.8
    assert p13["null"]["frac_persist"][1] < 0.01  # the rotated layer keeps its geometry but loses alignment
    slopes = {r["layer"]: r["slope"] for r in res["layers"]}
    assert slopes[1] < -0.6 and slopes[3] == pytest.approx(slopes[1], abs=0.02) and slopes[4] > slopes[1] + 0.5
    with pytest.raises(InputError, match="at least 2 layers"):
        sae_geometry(_array_suite({1: a}))


# ---------------------------------------------------------------------------------------------
# the real model: representations, pruning, restoration


@pytest.fixture(scope="module")
def real_rows(default_model):
    from featuregeo.io.corpus import builtin_corpus

    corpus = builtin_corpus(sources=["python-stdlib"])
    _, held = corpus.split(0.1)
    tok = default_model.tokenizer
    ids = tok(held[0].text + "\n" + held[1].text, add_special_tokens=False)["input_ids"]
    body = np.asarray(ids[:64], dtype=np.int64).reshape(2, 32)
    return np.hstack([np.full((2, 1), tok.bos_token_id), body])


def _hooks(model):
    from featuregeo.io.models import decoder_layers

    return sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in decoder_layers(model))


def test_representations_match_residual_stream(default_model, real_rows):
    from featuregeo.tl.layers import read_representations
    from featuregeo.io.models import residual_stream

    reps = read_representations(default_model, real_rows)
    assert reps.shape == (default_model.n_layers + 1, 2, 32, default_model.d_model)
    ref = residual_stream(default_model, real_rows, [0, 9, 17], add_bos=False, drop_bos=True, as_numpy=True)
    for L in (0, 9, 17):
        np.testing.assert_allclose(reps[L + 1], ref[L], rtol=1e-5, atol=1e-3)
    assert _hooks(default_model.model) == 0


def test_pruning_loss_real_model_and_restoration(default_model, real_rows):
    import torch

    from featuregeo.tl.layers import heldout_loss, skip_blocks

    base = heldout_loss(default_model, real_rows, chunk=24)  # chunks that do not divide the positions
    ids = torch.as_tensor(real_rows)
    with torch.inference_mode():
        ref = default_model.model(input_ids=ids, labels=ids, use_cache=False).loss
    assert base["loss"] == pytest.approx(float(ref), abs=1e-4)  # the unpruned loss, computed by transformers
    assert base["n_tokens"] == 64
    dropped = heldout_loss(default_model, real_rows, drop=[6])
    assert dropped["loss"] > base["loss"] + 0.01
    with pytest.raises(RuntimeError, match="boom"):
        with skip_blocks(default_model, [3, 4]):
            assert _hooks(default_model.model) == 2
            raise RuntimeError("boom")
    assert _hooks(default_model.model) == 0
    again = heldout_loss(default_model, real_rows, chunk=24)
    assert again["loss"] == base["loss"]  # restored exactly
    with pytest.raises(InputError, match="out of range"):
        heldout_loss(default_model, real_rows, drop=[default_model.n_layers])


def test_run_layers_end_to_end_and_resume(default_model, tmp_path, rng):
    from featuregeo.pl import layers as plot_layers
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.tl.layers import LayerResult, run_layers

    logs = []
    a = rng.standard_normal((64, default_model.d_model))
    suite = _array_suite({3: a, 4: a + 0.1 * rng.standard_normal(a.shape)})
    kw = dict(sae=suite, n_blocks=3, block_len=12, loss_blocks=1, loss_block_len=12, prune_max=1, random_drops=2,
              null_assignment=False, corpus=builtin_corpus(sources=["python-stdlib"]), progress=logs.append)
    res = run_layers(default_model, tmp_path, **kw)
    assert set(res.matrices) == {"cosine", "cka", "uas", "ted", "ted_distance"}
    for m in MEASURES:
        M = res.matrix(m)
        assert M.shape == (19, 19) and np.allclose(M, M.T) and np.allclose(np.diag(M), 1)
    assert [p["layer_a"] for p in res.sae["pairs"]] == [3]
    assert res.pruning["table"][0]["loss"] > 0 and len(res.pruning["random"]) == 2
    loaded = LayerResult.load(tmp_path / "layers.json")
    assert loaded.matrices["cka"] == res.matrices["cka"]
    paths = plot_layers.plot_all(loaded, tmp_path)
    assert {"fig_cosine", "fig_pruning", "fig_matching"} <= set(paths) and all(p.stat().st_size > 0 for p in paths.values())
    logs.clear()
    res2 = run_layers(default_model, tmp_path, **kw)  # resumes: nothing recomputed
    assert any("reused activations" in m for m in logs)
    assert not any("matrix in" in m or "dropped:" in m for m in logs)
    assert res2.pruning == res.pruning and res2.matrices == res.matrices
    assert any("reused SAE" in m for m in logs)
    with pytest.raises(InputError, match="prune_max"):
        run_layers(default_model, tmp_path, prune_max=18)
    with pytest.raises(InputError, match="n_blocks"):
        run_layers(default_model, tmp_path, n_blocks=1)


def test_cli_rejects_bad_input_before_loading(tmp_path, capsys):
    from featuregeo.cli import main

    assert main(["layers", "--out", str(tmp_path), "--measures", "cosine,svcca"]) == 2
    assert "measures" in capsys.readouterr().err
    assert main(["layers", "--out", str(tmp_path), "--prune-max", "-1"]) == 2
    assert "--prune-max" in capsys.readouterr().err
