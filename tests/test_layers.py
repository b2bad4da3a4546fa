"""Layer comparison without a model: arborescences, StructLens trees, tree distances, CKA, redundancy,
SAE matching with its rotation null, parameters, the result's round trip, SAE checkpoint units.

The real-model parts (hooks, pruning loss, the whole analysis and its resume, the CLI) are in
tests/test_hooks.py and tests/test_layers_pipeline.py."""

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


def test_debiased_cka_scores_independent_reps_zero_with_fewer_tokens_than_dims(rng):
    from featuregeo.tl.layers import debiased_cka_matrix, gaussian_cka_baseline

    # 576 tokens, 640 dims: two independent Gaussians look half-similar to linear CKA (the 0.53)
    lin, deb = gaussian_cka_baseline(576, 640, seed=1)
    assert 0.5 < lin < 0.56 and abs(deb) < 0.01
    # planted shared structure: y shares a 10-dim subspace with x (plus independent noise)
    shared = rng.standard_normal((576, 10)) * 5
    x = np.hstack([shared, rng.standard_normal((576, 630))])
    y = np.hstack([shared @ random_rotation(10, 2), rng.standard_normal((576, 630))])
    z = rng.standard_normal((576, 640))
    m = debiased_cka_matrix([x, y, z])
    lin_m = cka_matrix([x, y, z])
    assert abs(m[0, 2]) < 0.02 and m[0, 1] > 0.3  # independent ~0, shared structure clearly above
    assert lin_m[0, 2] > 0.25  # linear CKA of the same independent pair is far from 0 at this n / d
    # a rotated, rescaled copy of a representation is the same representation
    q = random_rotation(640, 3)
    assert debiased_cka_matrix([x, 3.0 * x @ q])[0, 1] == pytest.approx(1.0, abs=1e-6)


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
        assert red[0].block == 3, (m, red[:3])
        assert red[0].score == pytest.approx(1.0)
        assert red[1].score < 0.999
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
    assert m.frac_persist[1] > 0.99 and m.frac_appear[1] < 0.01
    assert m.frac_assigned[2] > 0.99
    assert np.array_equal(m.assignment[perm], np.arange(n))  # row i of b is a[perm[i]]
    assert m.best_hist.sum() == n and m.best_hist[-1] > 0.9 * n  # nearly all best cosines in the top bin
    null = match_features(a, b @ random_rotation(d, 3), thresholds=(0.5, 0.7, 0.9))
    assert null.frac_persist[1] < 0.02 and null.best_mean < 0.5
    assert null.assigned_mean < 0.45 < 0.99 < m.assigned_mean
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
    p13, p34 = res.pairs
    assert (p13.layer_a, p13.layer_b, p34.layer_a, p34.layer_b) == (1, 3, 3, 4)  # adjacent = available
    assert p13.real.frac_persist[1] > 0.97 and p13.real.frac_assigned[1] > 0.97
    assert p34.real.frac_persist[0] < 0.2 and p34.real.frac_appear[0] > 0.8
    assert p13.null.frac_persist[1] < 0.01  # the rotated layer keeps its geometry but loses alignment
    slopes = {r.layer: r.slope for r in res.layers}
    assert slopes[1] < -0.6 and slopes[3] == pytest.approx(slopes[1], abs=0.02) and slopes[4] > slopes[1] + 0.5
    assert all(r.slope_from == "fit" and r.slope_ci[0] < r.slope < r.slope_ci[1] for r in res.layers)
    # slopes given by the caller (from a galaxy.json) replace the fit for those layers only
    given = sae_geometry(_array_suite({1: a, 3: b, 4: c}), thresholds=(0.5, 0.9), seed=1, slopes={3: -0.9})
    assert [(r.slope_from, r.slope_ci is None) for r in given.layers] == [("fit", False), ("galaxy", True), ("fit", False)]
    assert given.layers[1].slope == -0.9 and given.layers[0].slope == slopes[1]
    assert given.pairs[0].null.frac_persist == p13.null.frac_persist  # the same seeded rotation
    with pytest.raises(InputError, match="at least 2 layers"):
        sae_geometry(_array_suite({1: a}))



def test_sae_geometry_checkpoint_units_reuse_and_recompute(rng, tmp_path):
    from featuregeo.core.checkpoint import Checkpoint
    from featuregeo.tl.layers import sae_geometry

    a, b = rng.standard_normal((80, 16)), rng.standard_normal((80, 16))
    kw = dict(thresholds=(0.5, 0.9), null_assignment=False, seed=2)
    with Checkpoint(tmp_path / "ck") as ck:
        first = sae_geometry(_array_suite({1: a, 2: b}), checkpoint=ck, **kw)
        assert sorted(ck.computed) == ["sae_match_1_2", "sae_slope_1", "sae_slope_2"] and not ck.reused
    with Checkpoint(tmp_path / "ck") as ck:
        again = sae_geometry(_array_suite({1: a, 2: b}), checkpoint=ck, **kw)
        assert sorted(ck.reused) == ["sae_match_1_2", "sae_slope_1", "sae_slope_2"] and not ck.computed
    assert again.to_dict() == first.to_dict()
    b2 = b.copy()
    b2[0] *= -1  # same shape and source name, other content: the units of layer 2 are recomputed
    with Checkpoint(tmp_path / "ck") as ck:
        changed = sae_geometry(_array_suite({1: a, 2: b2}), checkpoint=ck, **kw)
        assert sorted(ck.computed) == ["sae_match_1_2", "sae_slope_2"] and ck.reused == ["sae_slope_1"]
    fresh = sae_geometry(_array_suite({1: a, 2: b2}), **kw)
    assert changed.to_dict() == fresh.to_dict() != first.to_dict()
    with Checkpoint(tmp_path / "ck") as ck:  # other thresholds: the match is recomputed, the slopes reused
        sae_geometry(_array_suite({1: a, 2: b2}), checkpoint=ck, **{**kw, "thresholds": (0.3, 0.9)})
        assert ck.computed == ["sae_match_1_2"]


# ---------------------------------------------------------------------------------------------
# parameters and the result


@pytest.mark.parametrize("changes, name", [
    ({"measures": ("cosine", "svcca")}, "measures"), ({"measures": ()}, "measures"), ({"n_blocks": 1}, "n_blocks"),
    ({"block_len": 3}, "block_len"), ({"loss_blocks": 0}, "loss_blocks"), ({"loss_block_len": 1}, "loss_block_len"),
    ({"prune_max": -1}, "prune_max"), ({"random_drops": -2}, "random_drops"), ({"random_drops": 1.5}, "random_drops"),
    ({"thresholds": (0.9, 0.5)}, "thresholds"), ({"thresholds": (0.5, 1.5)}, "thresholds"), ({"thresholds": ()}, "thresholds"),
    ({"null_assignment": "yes"}, "null_assignment"), ({"seed": -1}, "seed"), ({"seed": True}, "seed"),
])
def test_params_validate_names_the_parameter(changes, name):
    from featuregeo.tl.layers import LayersParams

    with pytest.raises(InputError, match=rf"^{name}: expected .*Got .* instead\.$"):
        LayersParams(**changes).validate()


def test_params_fast_preset_and_normalisation():
    from featuregeo.tl.layers import LayersParams

    p = LayersParams.fast(prune_max=1)
    assert (p.n_blocks, p.prune_max, p.random_drops, p.null_assignment) == (16, 1, 2, False)
    # the fast preset reads more similarity tokens than the default model's d_model (640): see the CKA baseline
    assert p.n_blocks * p.block_len > 640
    assert p.validate() is p
    assert LayersParams(measures="cka,cosine,cka").measures == ("cka", "cosine")
    assert LayersParams(thresholds=[0.5, 0.8]).thresholds == (0.5, 0.8)
    assert LayersParams.from_dict(p.to_dict()) == p
    assert p.fingerprint() != LayersParams.fast().fingerprint()
    assert check_measures("cka,cosine") == ["cka", "cosine"]


def _synthetic_result(rng):
    from featuregeo.tl.layers import (HeldoutRows, LayersParams, LayersResult, PruningCheck, PruningRow,
                                      RandomDropSummary, sae_geometry)

    R = 5
    acts = np.cumsum(rng.standard_normal((R, 3, 8, 6)), axis=0)
    mats = similarity_matrices(acts, MEASURES)
    a = rng.standard_normal((40, 6))
    sae = sae_geometry(_array_suite({2: a, 5: a[::-1] + 0.01}), thresholds=(0.5, 0.9), seed=0)
    pr = PruningCheck(baseline=3.0, n_tokens=24, prune_max=1, n_blocks=R - 1,
                      table=[PruningRow(method="cka", n_drop=1, dropped=[2], loss=3.5, delta=0.5)],
                      random=[PruningRow(method="random", n_drop=1, dropped=[0], loss=4.0, delta=1.0, seed=0)],
                      random_summary=[RandomDropSummary(n_drop=1, mean=4.0, std=None, n=1)])
    data = HeldoutRows(corpus="x:heldout(0.1)", rows=rng.integers(0, 100, (3, 9)), loss_rows=rng.integers(0, 100, (1, 9)),
                       genres=["code"] * 3, loss_genres=["prose"], doc_ids=["a", "b", "c"], loss_doc_ids=["d"])
    return LayersResult(params=LayersParams(thresholds=(0.5, 0.9)), model="toy", labels=["embed", "0", "1", "2", "3"],
                        matrices=mats, redundancy={m: redundancy(mats[m]) for m in MEASURES}, sae=sae, pruning=pr,
                        data=data, seconds=1.5)


def test_result_save_load_round_trip(rng, tmp_path):
    from featuregeo.tl.layers import LayersResult

    res = _synthetic_result(rng)
    res.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"layers.json", "layers.npz", "layers.csv"}
    back = LayersResult.load(tmp_path)
    assert back.to_dict() == res.to_dict()
    assert back.params == res.params and back.pruning == res.pruning and back.redundancy == res.redundancy
    assert isinstance(back.matrices["cka"], np.ndarray) and np.array_equal(back.matrix("cka"), res.matrix("cka"))
    assert isinstance(back.sae.pairs[0].real.best_hist, np.ndarray) and back.sae.layers == res.sae.layers
    assert np.array_equal(back.data.rows, res.data.rows) and back.data.n_tokens == 3 * 8
    table = back.table()  # one row per block, a score and a rank per measure
    assert list(table["block"]) == [0, 1, 2, 3] and set(table["cka_rank"]) == {1, 2, 3, 4}
    assert back.most_redundant("cka") == [res.redundancy["cka"][0].block]
    with pytest.raises(InputError, match="measure"):
        back.matrix("svcca")
    assert len(res.sae.rows()) == 1 and "null_persist@0.5" in res.sae.rows()[0]


def test_cli_turns_flags_into_params_and_prints_the_summary(rng, tmp_path, capsys, monkeypatch):
    import featuregeo.pipeline.layers as pipeline
    from featuregeo.cli import main
    from featuregeo.tl.layers import LayersParams

    seen = {}

    def fake_run(model, out, params, *, sae, galaxy):
        seen.update(model=model, out=out, params=params, sae=sae, galaxy=galaxy)
        return _synthetic_result(rng)

    monkeypatch.setattr(pipeline, "run", fake_run)
    argv = ["layers", "--out", str(tmp_path), "--fast", "--prune-max", "1", "--measures", "cka,uas", "--seed", "3",
            "--sae", "none", "--model", "m"]
    assert main(argv) == 0
    assert seen["params"] == LayersParams.fast(prune_max=1, measures=("cka", "uas"), seed=3)
    assert (seen["model"], seen["sae"], seen["galaxy"]) == ("m", "none", None)
    out = capsys.readouterr().out
    assert "most redundant blocks" in out and "baseline loss 3.0000" in out and "random drop 1: 4.0000 ± -" in out
    assert main(["layers", "--out", str(tmp_path), "--n-blocks", "40"]) == 0
    assert seen["params"] == LayersParams(n_blocks=40)


def test_read_galaxy_slopes_old_and_new_files(tmp_path):
    import json

    from featuregeo.pipeline.layers import read_galaxy_slopes

    old = tmp_path / "old.json"  # the pre-contract file: a list of layer records
    old.write_text(json.dumps([{"layer": 3, "slope": -0.8, "slope_ci": [-0.9, -0.7], "null_slope": -0.1},
                               {"layer": 5, "slope": None}]))
    assert read_galaxy_slopes(old) == {3: -0.8}
    new = tmp_path / "g"
    new.mkdir()
    (new / "galaxy.json").write_text(json.dumps({"kind": "galaxy", "params": {"seed": 0}, "layers": [
        {"layer": 3, "null": {"slope": -0.1}, "fit": {"slope": -0.75, "slope_ci": [-0.8, -0.7]}},
        {"layer": 4, "slope": -0.6}]}))
    assert read_galaxy_slopes(new) == {3: -0.75, 4: -0.6}  # the folder works too
    for text, match in (("{", "not readable JSON"), ('{"layers": 3}', "list of layer records"),
                        ('[{"layer": 1}]', "no layer record")):
        old.write_text(text)
        with pytest.raises(InputError, match=match):
            read_galaxy_slopes(old)
    with pytest.raises(InputError, match="no such file"):
        read_galaxy_slopes(tmp_path / "missing.json")
