"""Atom scale on synthetic data: planted crystals are recovered (ANN search, exhaustive agrees), nulls
stay null, a planted length distractor is found by PC1 and removed by LDA (scored on held-out pairs),
shuffled tasks stay at chance; results round-trip through save/load."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from featuregeo.core.errors import InputError
from featuregeo.io.pairs import make_task
from featuregeo.tl.atoms import (
    CRYSTAL_COLUMNS,
    CrystalParams,
    CrystalResult,
    MethodScore,
    SpaceScores,
    analyze_pairs,
    build_pair_data,
    canonical_quadruple,
    crystal_null,
    crystal_recall,
    find_crystals,
    planted_crystals,
)

BRUTE = CrystalParams(backend="brute", max_results=100)

# ---------------------------------------------------------------------------------------------- crystals


@pytest.fixture(scope="module")
def planted():
    return planted_crystals(n=1500, d=192, n_crystals=40, seed=3)


def _canon(res: CrystalResult, i: int) -> tuple[int, int, int, int]:
    q = res.quadruples
    return canonical_quadruple(int(q.a[i]), int(q.b[i]), int(q.c[i]), int(q.d[i]))


def test_ann_search_recovers_planted_crystals(planted):
    X, quads = planted
    ids = np.arange(X.shape[0]) * 10 + 7  # original feature ids are reported, not row numbers
    res = find_crystals(X, BRUTE, feature_ids=ids)
    planted_ids = [canonical_quadruple(*(int(ids[i]) for i in q)) for q in quads]
    found = res.canonical_set()
    assert np.mean([q in found for q in planted_ids]) >= 0.9
    kinds = {_canon(res, i): str(res.quadruples.kind[i]) for i in range(len(res))}
    for t, q in enumerate(planted_ids):  # every 4th planted crystal has a side twice as long
        assert kinds.get(q) in (None, "trapezoid" if t % 4 == 3 else "parallelogram")
    # the planted crystals are the best-scoring ones
    assert len({_canon(res, i) for i in range(40)} & set(planted_ids)) >= 36
    # deduplicated, never degenerate, ranked, typed
    q = res.quadruples
    assert len(found) == len(res) and res.n_matches >= len(res)
    assert all(len({q.a[i], q.b[i], q.c[i], q.d[i]}) == 4 for i in range(len(res)))
    assert np.all(np.diff(q.score) <= 0)
    # the planted shapes' side ratios: about 1 for parallelograms, about 1/2 for the trapezoids (one side
    # twice as long; normalising the rows distorts lengths somewhat)
    ratio = {_canon(res, i): float(q.length_ratio[i]) for i in range(len(res))}
    for t, pq in enumerate(planted_ids):
        if pq in ratio:
            assert (0.4 < ratio[pq] < 0.75) if t % 4 == 3 else ratio[pq] > 0.8, (t, ratio[pq])
    assert q.a.dtype == np.int64 and q.cosine.dtype == np.float64 and res.backend == "exact"
    again = find_crystals(X, BRUTE, feature_ids=ids)
    assert again.to_dict() == res.to_dict()


def test_exhaustive_is_exact_and_contains_ann():
    X, quads = planted_crystals(n=96, d=256, n_crystals=6, seed=5)
    exh = find_crystals(X, CrystalParams(mode="exhaustive", max_results=1_000_000))
    assert crystal_recall(exh, quads) == 1.0
    # the best matches are the planted crystals, or thin parallelograms made of two planted crystals' short
    # sides (rung / side ~ 0.36, real near-parallelograms, cosine ~0.9): never a background feature
    corners = {x for q in quads for x in q}
    top = [_canon(exh, i) for i in range(12)]
    assert all(set(t) <= corners for t in top)
    assert sum(t in {canonical_quadruple(*q) for q in quads} for t in top) >= 4
    ann = find_crystals(X, CrystalParams(backend="brute", max_results=1_000_000))
    # k-NN candidate pairs are a subset of all pairs (one result per set of four corners)
    assert {tuple(sorted(q)) for q in ann.canonical_set()} <= {tuple(sorted(q)) for q in exh.canonical_set()}
    assert crystal_recall(ann, quads) == 1.0


def test_projected_backend_is_contained_in_exact():
    X, quads = planted_crystals(n=600, d=192, n_crystals=15, seed=4)
    proj = find_crystals(X, CrystalParams(backend="projected", ann_dim=96, max_results=100_000))
    exact = find_crystals(X, CrystalParams(backend="brute", max_results=100_000))
    assert proj.backend == "projected" and proj.ann_dim == 96 and exact.ann_dim is None
    assert crystal_recall(proj, quads) >= 0.9
    # matched in the projection, then rescored exactly with the same thresholds: never a false crystal
    corner_sets = lambda r: {tuple(sorted(q)) for q in r.canonical_set()}  # noqa: E731
    assert corner_sets(proj) <= corner_sets(exact) and np.all(proj.quadruples.cosine >= 0.4)


def test_null_clouds_give_no_crystals(planted):
    X, _ = planted
    rng = np.random.default_rng(1)
    p = CrystalParams(backend="brute", min_cosine=0.6)
    assert find_crystals(rng.standard_normal((1000, 192)).astype(np.float32), p).n_matches == 0
    assert crystal_null(X, p).n_matches == 0  # same shape, no planted structure
    assert find_crystals(X, p).n_matches >= 36  # while the planted cloud has them at that threshold


def test_crystal_rows_and_roundtrip(tmp_path, planted):
    X, _ = planted
    res = find_crystals(X, CrystalParams(backend="brute", max_results=20))
    res.layer = 4
    res.save(tmp_path)
    with open(tmp_path / "crystals.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(CRYSTAL_COLUMNS) == ["rank", "layer", "a", "b", "c", "d", "cosine", "length_ratio", "kind", "score"]
    assert len(rows) == 21 and all(r[1] == "4" and r[8] in ("parallelogram", "trapezoid") for r in rows[1:])
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 21))
    back = CrystalResult.load(tmp_path)
    assert back.to_dict() == res.to_dict() and back.params == res.params
    assert back.quadruples.kind.dtype.kind == "U" and back.examples[0].xy.shape == (4, 2)
    assert back.canonical_set() == res.canonical_set()


def test_crystal_bad_inputs():
    with pytest.raises(InputError, match="crystal mode: expected one of ann, exhaustive. Got 'fast' instead"):
        find_crystals(np.ones((10, 4)), CrystalParams(mode="fast"))
    with pytest.raises(InputError, match="n_features <= 400"):
        find_crystals(np.random.default_rng(0).standard_normal((500, 8)), CrystalParams(mode="exhaustive"))
    with pytest.raises(InputError, match="NaN/inf"):
        find_crystals(np.full((10, 4), np.nan))
    with pytest.raises(InputError, match="crystal min_cosine: expected a finite number > 0.0"):
        CrystalParams(min_cosine=0.0).validate()
    with pytest.raises(InputError, match="crystal k: expected an integer >= 1. Got -2 instead"):
        CrystalParams(k=-2).validate()
    with pytest.raises(InputError, match="crystal remove_pcs: expected fewer than 4"):
        find_crystals(np.random.default_rng(0).standard_normal((10, 4)), CrystalParams(remove_pcs=5))


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
    assert isinstance(res, SpaceScores) and all(isinstance(m, MethodScore) for m in res.methods)
    assert abs(res.distractors.pc1_r_chars) > 0.95 and res.distractors.best_pc_chars == 1
    raw = res.best("raw")
    lda = max((r for r in res.methods if r.method == "lda"), key=lambda r: r.n_components)
    assert lda.n_components == 4
    assert lda.analogy_accuracy > raw.analogy_accuracy + 0.2
    assert lda.task_accuracy >= raw.task_accuracy and lda.task_accuracy > 0.95
    assert lda.silhouette > raw.silhouette + 0.5
    assert raw.pc1_r_chars > 0.95 and lda.pc1_r_chars < 0.3  # held-out PC1 no longer tracks length
    pc1 = next(r for r in res.methods if r.method == "pc_removed" and r.n_components == 1)
    assert pc1.analogy_accuracy > raw.analogy_accuracy  # the baseline removes it too
    assert raw.n_quadruples == lda.n_quadruples > 100
    assert len(res.embedding.lda) == int(data.test.sum()) and res.embedding.lda.shape[1] == 2


def test_lda_null_shuffled_tasks_is_at_chance():
    tasks, words, X, ntok = _synthetic(shuffle_tasks=True)
    data = build_pair_data(tasks, words, X, ntok, test_fraction=0.3, seed=0)
    res = analyze_pairs(data, seed=0, remove_pcs=())
    for r in res.methods:
        assert r.task_accuracy < 0.45, r  # chance is 0.2; held-out scoring does not inflate it
        assert r.silhouette < 0.1


def test_analogy_sample_depends_on_seed_and_key_only():
    tasks, words, X, ntok = _synthetic(n_tasks=3, per=40)
    data = build_pair_data(tasks, words, X, ntok)
    a = analyze_pairs(data, max_quadruples=20, seed=0, key=7)
    b = analyze_pairs(data, max_quadruples=20, seed=0, key=7)
    assert [m.analogy_by_task for m in a.methods] == [m.analogy_by_task for m in b.methods]
    assert a.best("raw").n_quadruples <= 60


def test_pair_data_skips_small_tasks():
    tasks, words, X, ntok = _synthetic(n_tasks=3, per=10)
    tiny = make_task("tiny", [(words[0], words[1]), (words[0], words[1])], "test")
    data = build_pair_data(tasks + [tiny], words, X, ntok)
    assert data.task_names == ["task0", "task1", "task2"]
    assert data.skipped[0].task == "tiny" and "1 pair(s) after removing 1 duplicate" in data.skipped[0].reason
    assert [t.n_train + t.n_test for t in data.tasks] == [10, 10, 10]
    with pytest.raises(InputError, match="uses words without vectors"):
        build_pair_data([make_task("x", [("nope", "never"), ("a", "b"), ("c", "d")], "t")], words, X, ntok)
    with pytest.raises(InputError, match="at least 2 tasks"):
        analyze_pairs(build_pair_data(tasks[:1], words, X, ntok))


@pytest.mark.slow
def test_pynndescent_backend_recovers_planted_crystals(planted):
    """pynndescent's numba compilation takes about a minute per process: slow."""
    X, quads = planted
    res = find_crystals(X, CrystalParams(backend="pynndescent", max_results=100))
    assert res.backend == "pynndescent" and crystal_recall(res, quads) >= 0.9


# ---- issue 11: settings chosen on a validation split of the train pairs; analogies over all pairs' words ----
def test_lda_and_pc_settings_are_chosen_without_looking_at_test_pairs():
    tasks, words, X, ntok = _synthetic()
    data = build_pair_data(tasks, words, X, ntok, test_fraction=0.3, seed=0)
    res = analyze_pairs(data, seed=0)
    for method in ("lda", "pc_removed"):
        chosen = [r for r in res.methods if r.method == method and r.chosen]
        assert len(chosen) == 1 and res.best(method) is chosen[0]
        assert all(r.validation_accuracy is not None for r in res.methods if r.method == method)
    # scramble every test-only word vector: test scores change, the choice and validation scores cannot
    test_words = np.unique(np.concatenate([data.a[data.test], data.b[data.test]]))
    train_words = np.unique(np.concatenate([data.a[~data.test], data.b[~data.test]]))
    only_test = np.setdiff1d(test_words, train_words)
    X2 = X.copy()
    X2[only_test] = np.random.default_rng(9).standard_normal((only_test.size, X.shape[1])) * 5
    res2 = analyze_pairs(build_pair_data(tasks, words, X2, ntok, test_fraction=0.3, seed=0), seed=0)
    for r, r2 in zip(res.methods, res2.methods):
        assert (r.validation_accuracy, r.chosen) == (r2.validation_accuracy, r2.chosen)
    assert res2.best("lda").analogy_accuracy < res.best("lda").analogy_accuracy - 0.3


def test_analogy_over_the_whole_vocabulary_of_pairs_is_never_easier():
    tasks, words, X, ntok = _synthetic()
    data = build_pair_data(tasks, words, X, ntok, test_fraction=0.3, seed=0)
    res = analyze_pairs(data, seed=0)
    for r in res.methods:  # the same quadruples against a superset of candidates
        assert r.analogy_accuracy_all <= r.analogy_accuracy
    # planted competitors: task q starts from near-copies of task p's answers, so over the whole
    # vocabulary about half of p's analogies land on q's copy; within p's own words they do not
    rng = np.random.default_rng(1)
    d, n = 32, 30
    F, G = rng.standard_normal(d) * 2, rng.standard_normal(d) * 2
    A = rng.standard_normal((n, d)) * 3
    B = A + F + 0.3 * rng.standard_normal((n, d))
    C = B + 0.01 * rng.standard_normal((n, d))
    E = C + G
    words = [f"{s}{i}" for s in "abce" for i in range(n)]
    Xp = np.vstack([A, B, C, E]).astype(np.float32)
    tp = [make_task("p", [(f"a{i}", f"b{i}") for i in range(n)], "synthetic"),
          make_task("q", [(f"c{i}", f"e{i}") for i in range(n)], "synthetic")]
    data = build_pair_data(tp, words, Xp, np.ones(len(words), dtype=np.int64), test_fraction=0.5, seed=0)
    raw = analyze_pairs(data, seed=0, remove_pcs=()).best("raw")
    assert raw.analogy_by_task["p"] > 0.95 and raw.analogy_accuracy_all < raw.analogy_accuracy - 0.1, raw


# ---- issue 11: crystals whose corners sit in tight groups of split features, and long sides ----------------
def test_crystals_inside_tight_split_feature_groups_are_found():
    from featuregeo.tl.atoms.crystals import planted_clustered_crystals

    X, quads, groups = planted_clustered_crystals(n=1200, d=128, n_crystals=12, cluster_size=12, seed=3)
    res = find_crystals(X, CrystalParams())
    assert crystal_recall(res, quads, groups) == 1.0
    # once per group of copies: no two results are copies of one crystal
    g = [canonical_quadruple(*(int(groups[x]) for x in q)) for q in res.canonical_set()]
    assert len(g) == len(set(g))
    # what the search did before: the k = 10 nearest neighbours are all copies, nothing is found
    old = find_crystals(X, CrystalParams(min_rung=0.5, duplicate_cosine=1.0, duplicate_depth=0))
    assert crystal_recall(old, quads, groups) < 0.1
    # a Gaussian with this (strongly anisotropic) covariance matches far less
    assert crystal_null(X).n_matches < res.n_matches / 20


def test_long_sided_crystals_are_found_after_normalisation():
    X, quads = planted_crystals(n=1200, d=128, n_crystals=20, side=3.0, trapezoid_every=0, seed=4)
    # after normalisation a side-3 crystal is thin (rung / side 0.26-0.43): found at the new min_rung 0.25
    assert crystal_recall(find_crystals(X, CrystalParams()), quads) >= 0.85
    assert crystal_recall(find_crystals(X, CrystalParams(min_rung=0.5)), quads) == 0.0  # the old default
