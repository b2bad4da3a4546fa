"""Atom scale: planted crystals are recovered, a planted length distractor is found by PC1 and removed
by LDA (scored on held-out pairs), nulls stay null, files and errors; one real-model run."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from featuregeo.tl.atoms import (CRYSTAL_COLUMNS, AtomResult, CrystalResult, analyze_pairs, build_pair_data,
                              canonical_quadruple, crystal_null, crystal_recall, find_crystals, planted_crystals,
                              run_atoms, word_vectors)
from featuregeo.core.errors import InputError
from featuregeo.io.pairs import make_task

# ---------------------------------------------------------------------------------------------- crystals


@pytest.fixture(scope="module")
def planted():
    return planted_crystals(n=1500, d=192, n_crystals=40, seed=3)


def test_ann_search_recovers_planted_crystals(planted):
    X, quads = planted
    ids = np.arange(X.shape[0]) * 10 + 7  # original feature ids are reported, not row numbers
    res = find_crystals(X, feature_ids=ids, mode="ann", backend="brute", top=100, seed=0)
    found = res.quadruples()
    recall = np.mean([canonical_quadruple(*(int(ids[i]) for i in q)) in found for q in quads])
    assert recall >= 0.9
    kinds = {canonical_quadruple(*(r[k] for k in "abcd")): r["kind"] for r in res.crystals}
    for t, q in enumerate(quads):  # every 4th planted crystal has a side twice as long
        kind = kinds.get(canonical_quadruple(*(int(ids[i]) for i in q)))
        assert kind in (None, "trapezoid" if t % 4 == 3 else "parallelogram")
    # the planted crystals are the best-scoring ones
    top = {canonical_quadruple(*(r[k] for k in "abcd")) for r in res.crystals[:40]}
    assert len(top & {canonical_quadruple(*(int(ids[i]) for i in q)) for q in quads}) >= 36
    # deduplicated, never degenerate, ranked
    assert len(found) == len(res.crystals)
    assert all(len({r[k] for k in "abcd"}) == 4 for r in res.crystals)
    assert [r["rank"] for r in res.crystals] == list(range(1, len(res.crystals) + 1))
    assert all(0 < r["length_ratio"] <= 1 for r in res.crystals)
    again = find_crystals(X, feature_ids=ids, mode="ann", backend="brute", top=100, seed=0)
    assert again.crystals == res.crystals


def test_exhaustive_is_exact_and_contains_ann(rng):
    X, quads = planted_crystals(n=96, d=256, n_crystals=6, seed=5)
    exh = find_crystals(X, mode="exhaustive", top=10_000)
    assert crystal_recall(exh, quads) == 1.0
    top6 = {canonical_quadruple(*(r[k] for k in "abcd")) for r in exh.crystals[:6]}
    assert top6 == {canonical_quadruple(*q) for q in quads}
    ann = find_crystals(X, mode="ann", backend="brute", top=10_000)
    assert ann.quadruples() <= exh.quadruples()  # k-NN candidate pairs are a subset of all pairs
    assert crystal_recall(ann, quads) == 1.0


def test_null_clouds_give_no_crystals(planted):
    X, _ = planted
    rng = np.random.default_rng(1)
    res = find_crystals(rng.standard_normal((1000, 192)).astype(np.float32), min_cosine=0.6, backend="brute")
    assert res.n_matches == 0
    assert crystal_null(X, min_cosine=0.6, backend="brute").n_matches == 0  # same shape, no planted structure


def test_crystal_files(tmp_path, planted):
    X, quads = planted
    res = find_crystals(X, layer=4, backend="brute", top=20)
    res.write_csv(tmp_path / "crystals.csv")
    res.save(tmp_path / "crystals.json")
    with open(tmp_path / "crystals.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(CRYSTAL_COLUMNS) == "rank,layer,a,b,c,d,cosine,length_ratio,kind,score".split(",")
    assert len(rows) == 21 and all(r[1] == "4" and r[8] in ("parallelogram", "trapezoid") for r in rows[1:])
    back = CrystalResult.load(tmp_path / "crystals.json")
    assert back.quadruples() == res.quadruples() and back.examples and len(back.examples[0]["xy"]) == 4


def test_crystal_bad_inputs():
    with pytest.raises(InputError, match="mode: expected 'ann' or 'exhaustive'"):
        find_crystals(np.ones((10, 4)), mode="fast")
    with pytest.raises(InputError, match="n_features <= 400"):
        find_crystals(np.random.default_rng(0).standard_normal((500, 8)), mode="exhaustive")
    with pytest.raises(InputError, match="NaN/inf"):
        find_crystals(np.full((10, 4), np.nan))


# ---------------------------------------------------------------------------------------------- LDA


def _synthetic(n_tasks=5, per=30, d=64, length_scale=4.0, seed=0, shuffle_tasks=False):
    """Task directions plus a shared 'length' direction with large variance; the word's extra
    characters set its length component, so PC1 of the differences tracks the change in length."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n_tasks, d)) * 0.6
    ell = rng.standard_normal(d)
    ell /= np.linalg.norm(ell)
    words, X, pairs = [], [], []
    for t in range(n_tasks):
        for i in range(per):
            m = int(rng.integers(0, 7))
            a, b = f"t{t}a{i:03d}", f"t{t}b{i:03d}" + "z" * m
            xa = rng.standard_normal(d)
            words += [a, b]
            X += [xa, xa + F[t] + length_scale * (m - 3) * ell + 0.1 * rng.standard_normal(d)]
            pairs.append((t, (a, b)))
    if shuffle_tasks:  # null: task labels carry no information about the differences
        labels = rng.permutation([t for t, _ in pairs])
        pairs = [(lab, p) for lab, (_, p) in zip(labels, pairs)]
    tasks = [make_task(f"task{t}", [p for lab, p in pairs if lab == t], "synthetic") for t in range(n_tasks)]
    n_tokens = np.array([1 + len(w) // 4 for w in words])
    return tasks, words, np.array(X, dtype=np.float32), n_tokens


def test_length_distractor_found_by_pc1_and_removed_by_lda():
    tasks, words, X, ntok = _synthetic()
    data = build_pair_data(tasks, words, X, ntok, test_fraction=0.3, seed=0)
    res = analyze_pairs(data, seed=0)
    assert abs(res.distractors["pc1_r_chars"]) > 0.95
    raw = res.best("raw")
    lda = max((r for r in res.methods if r["method"] == "lda"), key=lambda r: r["n_components"])
    assert lda["n_components"] == 4
    assert lda["analogy_accuracy"] > raw["analogy_accuracy"] + 0.2
    assert lda["task_accuracy"] >= raw["task_accuracy"] and lda["task_accuracy"] > 0.95
    assert lda["silhouette"] > raw["silhouette"] + 0.5
    assert raw["pc1_r_chars"] > 0.95 and lda["pc1_r_chars"] < 0.3  # held-out PC1 no longer tracks length
    pc1 = next(r for r in res.methods if r["method"] == "pc_removed" and r["n_components"] == 1)
    assert pc1["analogy_accuracy"] > raw["analogy_accuracy"]  # the baseline removes it too
    assert raw["n_quadruples"] == lda["n_quadruples"] > 100
    assert len(res.embedding["lda"]) == res.n_test == int(data.test.sum())


def test_lda_null_shuffled_tasks_is_at_chance():
    tasks, words, X, ntok = _synthetic(shuffle_tasks=True)
    data = build_pair_data(tasks, words, X, ntok, test_fraction=0.3, seed=0)
    res = analyze_pairs(data, seed=0, remove_pcs=())
    for r in res.methods:
        assert r["task_accuracy"] < 0.45, r  # chance is 0.2; held-out scoring does not inflate it
        assert r["silhouette"] < 0.1


def test_pair_data_skips_small_tasks_and_roundtrips(tmp_path):
    tasks, words, X, ntok = _synthetic(n_tasks=3, per=10)
    tiny = make_task("tiny", [(words[0], words[1]), (words[0], words[1])], "test")
    data = build_pair_data(tasks + [tiny], words, X, ntok)
    assert data.task_names == ["task0", "task1", "task2"]
    assert data.skipped[0]["task"] == "tiny" and "1 pair(s) after removing 1 duplicate" in data.skipped[0]["reason"]
    res = analyze_pairs(data, layer=2)
    res.save(tmp_path / "atoms.json")
    back = AtomResult.load(tmp_path / "atoms.json")
    assert back.methods == res.to_dict()["methods"] and back.skipped == res.skipped
    with pytest.raises(InputError, match="uses words without vectors"):
        build_pair_data([make_task("x", [("nope", "never"), ("a", "b"), ("c", "d")], "t")], words, X, ntok)
    with pytest.raises(InputError, match="at least 2 tasks"):
        analyze_pairs(build_pair_data(tasks[:1], words, X, ntok))


# ---------------------------------------------------------------------------------------------- real model


def test_real_model_word_vectors_and_run(default_model, tmp_path):
    from featuregeo.io.models import residual_stream

    words = ["king", "queen", "Zyxqwvbtla"]
    vecs, ntok = word_vectors(default_model, words, [3, 5])
    assert vecs[3].shape == (3, default_model.d_model) and np.isfinite(vecs[3]).all()
    assert ntok[0] == 1 and ntok[2] > 1  # a multi-token word: the vector is its last token's
    ref = residual_stream(default_model, [" Zyxqwvbtla"], [5], as_numpy=True)[5]
    np.testing.assert_allclose(vecs[5][2], ref[-1], rtol=1e-4, atol=1e-2)

    out = tmp_path / "atoms"
    kw = dict(sae="none", tasks=["male-female", "comparative", "superlative"], max_pairs=12, seed=0)
    res = run_atoms(default_model, [3], out, **kw)
    a = res[3]["atoms"]
    assert (out / "atoms.json").is_file() and (out / "crystals.csv").read_text().strip() == ",".join(CRYSTAL_COLUMNS)
    assert a.task_names == ["male-female", "comparative", "superlative"] and a.n_pairs == 36
    assert {r["method"] for r in a.methods} == {"raw", "lda", "pc_removed"}
    assert all(t["n_multi_token_words"] >= 0 and t["n_train"] + t["n_test"] == 12 for t in a.tasks)
    stamp = (out / "atoms.json").stat().st_mtime_ns
    run_atoms(default_model, [3], out, **kw)  # resumed: nothing recomputed
    assert (out / "atoms.json").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match=r"layer 40 is out of range .* 0\.\.17"):
        run_atoms(default_model, [40], out, **kw)
    with pytest.raises(InputError, match="template: expected a string containing"):
        run_atoms(default_model, [3], out, **{**kw, "template": "no placeholder"})


def test_cli_rejects_bad_tasks(tmp_path):
    from featuregeo.cli import main

    assert main(["atoms", "--layer", "3", "--out", str(tmp_path), "--tasks", "colour", "--sae", "none"]) == 2
    assert main(["atoms", "--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_pynndescent_backend_recovers_planted_crystals(planted):
    """pynndescent's numba compilation takes about a minute per process: slow."""
    X, quads = planted
    res = find_crystals(X, mode="ann", backend="pynndescent", top=100, seed=0)
    assert res.params["backend"] == "pynndescent" and crystal_recall(res, quads) >= 0.9
