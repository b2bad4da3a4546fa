"""Brain scale: exact co-occurrence counts, hand-computed affinities, planted lobes, nulls, genres."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from featuregeo.core.data import FeatureCloud
from featuregeo.core.errors import InputError, NotFittedError
from featuregeo.tl.lobes import (
    AFFINITIES,
    LobesLayer,
    LobesParams,
    LobesResult,
    SpectralSweep,
    affinity,
    ami_test,
    analyze_firing,
    angular_affinity,
    cooccurrence,
    lobe_genre_table,
    logreg_test,
    spectral_embedding,
    split_by_document,
)

# the stage modules (their names are shadowed in the package by the functions it re-exports)
cooc_module = importlib.import_module("featuregeo.tl.lobes.cooccurrence")
spectral_module = importlib.import_module("featuregeo.tl.lobes.spectral")


def run(firing, x, *, doc_ids=None, genres=None, **kw):
    """analyze_firing with LobesParams(**kw)."""
    return analyze_firing(firing, x, LobesParams(**kw), doc_ids=doc_ids, genres=genres)


def planted_blocks(groups, n_blocks, seed, p_in=0.3, p_out=0.01):
    """Each block draws one group (its genre); that group's features fire with probability ``p_in``,
    the others with ``p_out``."""
    rng = np.random.default_rng([seed, 1])
    genre = rng.integers(0, groups.max() + 1, n_blocks)
    firing = rng.random((n_blocks, groups.size)) < np.where(groups[None, :] == genre[:, None], p_in, p_out)
    return firing, np.array([f"genre{g}" for g in genre])


def planted(n_groups=6, per=30, d=24, n_blocks=1500, p_in=0.3, p_out=0.01, noise=0.3, seed=0, random_geometry=False):
    """A synthetic SAE whose features belong to ``n_groups`` groups that co-fire within groups, with
    decoder rows near their group's centroid: (firing, decoder rows, groups, block genres)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per)
    firing, genres = planted_blocks(groups, n_blocks, seed, p_in, p_out)
    cent = rng.standard_normal((n_groups, d))
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    x = cent[groups] + noise * rng.standard_normal((groups.size, d)) / np.sqrt(d)
    if random_geometry:
        x = rng.standard_normal((groups.size, d))
    return firing, x.astype(np.float32), groups, genres


def brute_force_counts(b: np.ndarray) -> np.ndarray:
    """The reference: one outer product per block, accumulated."""
    out = np.zeros((b.shape[1], b.shape[1]), dtype=np.int64)
    for row in b.astype(np.int64):
        out += np.outer(row, row)
    return out


# ---------------------------------------------------------------------------------------------
# co-occurrence
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_counts_equal_brute_force(method, as_sparse):
    b = np.random.default_rng(1).random((97, 41)) < 0.2
    ref = brute_force_counts(b)
    inp = sparse.csr_matrix(b.astype(np.uint8)) if as_sparse else b
    for threads in (1, 2):
        co = cooccurrence(inp, method=method, n_threads=threads)
        assert co.storage == "dense" and co.pairs.dtype == np.int32
        np.testing.assert_array_equal(co.pairs, ref)
        np.testing.assert_array_equal(co.counts, b.sum(axis=0))
        assert co.n_blocks == 97
    assert cooccurrence(b, method="sparse").method == "sparse"


def test_dense_product_falls_back_to_int64_beyond_float32_exactness(monkeypatch):
    b = np.random.default_rng(2).random((300, 17)) < 0.5
    monkeypatch.setattr(cooc_module, "F32_EXACT", 64)  # pretend float32 stops being exact at 64 blocks
    co = cooccurrence(b, method="dense")
    assert co.pairs.dtype == np.int64
    np.testing.assert_array_equal(co.pairs, brute_force_counts(b))


def test_method_chosen_by_density():
    rng = np.random.default_rng(3)
    assert cooccurrence(rng.random((400, 300)) < 0.01).method == "sparse"
    assert cooccurrence(rng.random((400, 300)) < 0.5).method == "dense"


def test_topk_storage_exact_and_each_affinity_is_its_knn_graph():
    b = np.random.default_rng(4).random((200, 30)) < 0.25
    b[:, 0] = False  # never fires
    ref = brute_force_counts(b)
    k = 4
    top = cooccurrence(b, storage="topk", top_k=k)
    dense = cooccurrence(b)
    assert top.storage == "topk" and "top 4 partners" in top.note
    coo = top.pairs.tocoo()
    np.testing.assert_array_equal(coo.data, ref[coo.row, coo.col])  # exact counts where stored
    for kind in AFFINITIES:
        for shift in (True, False):
            a = affinity(top, kind, phi_shift=shift)
            d = affinity(dense, kind, phi_shift=shift).matrix
            m = a.matrix.toarray()
            assert np.allclose(m, m.T)
            nz = m > 0
            np.testing.assert_allclose(m[nz], d[nz], rtol=1e-6)  # values of the dense affinity
            for i in range(d.shape[0]):  # every row keeps the k largest values of the dense row
                want = np.sort(d[i][d[i] > 0])[::-1][:k]
                got = np.sort(m[i][m[i] > 0])[::-1][:k]
                np.testing.assert_allclose(got, want, rtol=1e-6)


def test_memory_budget_switches_to_topk_and_says_so():
    b = np.random.default_rng(5).random((50, 20)) < 0.3
    assert cooccurrence(b, memory_budget=3 * 20 * 20 * 4).storage == "dense"
    co = cooccurrence(b, memory_budget=3 * 20 * 20 * 4 - 1, top_k=5)
    assert co.storage == "topk" and "budget" in co.note and co.summary().top_k == 5


# ---------------------------------------------------------------------------------------------
# affinities
# ---------------------------------------------------------------------------------------------
def two_features(n11, n1, n2, T):
    rows = [(1, 1)] * n11 + [(1, 0)] * (n1 - n11) + [(0, 1)] * (n2 - n11)
    rows += [(0, 0)] * (T - len(rows))
    return np.array(rows, dtype=bool)


def test_each_affinity_matches_a_hand_computed_2x2_table():
    # n11=3, n10=3, n01=1, n00=3 (T=10): phi = (3*3 - 3*1)/sqrt(6*4*4*6) = 0.25
    co = cooccurrence(two_features(3, 6, 4, 10))
    want = {"phi": 1.25, "jaccard": 3 / 7, "dice": 6 / 10, "overlap": 3 / 4, "simple_matching": 6 / 10}
    for kind, v in want.items():
        a = affinity(co, kind)
        np.testing.assert_allclose(a.matrix, [[0, v], [v, 0]], rtol=1e-6)  # zero diagonal
        assert a.matrix.dtype == np.float32
    np.testing.assert_allclose(affinity(co, "phi", phi_shift=False).matrix[0, 1], 0.25, rtol=1e-6)
    # n11=1: phi = (10*1 - 6*4)/24 = -7/12 -> +1 gives 5/12; clipping gives 0 and counts the pair
    co = cooccurrence(two_features(1, 6, 4, 10))
    np.testing.assert_allclose(affinity(co, "phi").matrix[0, 1], 5 / 12, rtol=1e-6)
    clipped = affinity(co, "phi", phi_shift=False)
    assert clipped.matrix[0, 1] == 0 and clipped.n_clipped == 1 and "clipped" in clipped.note


def test_never_and_always_firing_features_are_excluded_and_counted():
    b = np.random.default_rng(6).random((40, 8)) < 0.3
    b[:, 2] = False
    b[:, 5] = True
    co = cooccurrence(b)
    for kind in AFFINITIES:
        a = affinity(co, kind)
        assert a.excluded == {"never_fired": 1, "always_fired": 1}
        assert a.feature_index.tolist() == [0, 1, 3, 4, 6, 7]
        assert np.isfinite(a.matrix).all() and a.matrix.min() >= 0


def test_angular_affinity_values_and_topk():
    x = np.array([[1, 0], [0, 1], [-1, 0], [1, 1]], dtype=np.float32)
    a = angular_affinity(x).matrix
    np.testing.assert_allclose(a[0], [0, 0.5, 0.0, 0.75], atol=1e-6)
    t = angular_affinity(x, storage="topk", top_k=1).matrix.toarray()
    assert t[0, 3] == pytest.approx(0.75) and t[0, 2] == 0


# ---------------------------------------------------------------------------------------------
# embedding and sweep
# ---------------------------------------------------------------------------------------------
def test_sweep_reproduces_sklearn_spectral_clustering():
    from sklearn.cluster import SpectralClustering
    from sklearn.manifold import spectral_embedding as sk_embedding

    b, _, groups, _ = planted(n_groups=5, per=20, n_blocks=800)
    w = affinity(cooccurrence(b), "jaccard").matrix.astype(np.float64)
    sw = SpectralSweep([2, 5], n_init=10, seed=0).fit(w)
    ref = sk_embedding(w, n_components=5, random_state=0, drop_first=False)
    # the same 5-dimensional subspace (the 4 non-trivial eigenvalues of equal groups are near-degenerate)
    q1, q2 = np.linalg.qr(ref)[0], np.linalg.qr(sw.embedding_.vectors.astype(np.float64))[0]
    assert np.linalg.svd(q1.T @ q2, compute_uv=False).min() > 0.999
    sk = SpectralClustering(5, affinity="precomputed", random_state=0).fit_predict(w)
    assert adjusted_rand_score(sk, sw.labels_[5]) > 0.99
    assert adjusted_mutual_info_score(groups, sw.labels_[5]) > 0.99


def test_arpack_and_dense_solvers_agree():
    b, _, _, _ = planted(n_groups=4, per=30, n_blocks=600)
    w = affinity(cooccurrence(b), "dice").matrix
    e1 = spectral_embedding(w, 4, solver="dense")
    e2 = spectral_embedding(sparse.csr_matrix(w), 4, solver="arpack")
    np.testing.assert_allclose(e1.eigenvalues, e2.eigenvalues, atol=1e-5)
    q1, q2 = np.linalg.qr(e1.vectors.astype(np.float64))[0], np.linalg.qr(e2.vectors.astype(np.float64))[0]
    assert np.linalg.svd(q1.T @ q2, compute_uv=False).min() > 0.999


def test_sweep_not_fitted_and_bad_affinity():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        SpectralSweep([2]).labels
    with pytest.raises(InputError, match="non-negative"):
        spectral_embedding(-np.ones((4, 4)), 2)
    with pytest.raises(InputError, match="every value is >= the 3 usable"):
        SpectralSweep([3, 4]).fit(np.ones((3, 3)))
    with pytest.raises(InputError, match="symmetric"):
        spectral_embedding(np.triu(np.ones((50, 50))), 2)


def test_embedding_computed_once_per_affinity(monkeypatch):
    calls = []
    real = spectral_module.spectral_embedding

    def counting(w, n_components, **kw):
        calls.append(n_components)
        return real(w, n_components, **kw)

    monkeypatch.setattr(spectral_module, "spectral_embedding", counting)
    b, x, _, _ = planted(n_groups=4, per=15, n_blocks=400)
    run(b, x, affinities=("jaccard", "dice"), n_clusters=(2, 3, 4, 8), n_permutations=5, logreg_null_repeats=0)
    assert calls == [8, 8, 8]  # geometry + two affinities, each once with the largest n_clusters


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------
def test_ami_null_matches_sklearn_per_permutation():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 7, 300), rng.integers(0, 5, 300)
    b[:150] = a[:150] % 5
    res = ami_test(a, b, n_permutations=20, seed=3, return_null=True)
    assert res.ami == pytest.approx(adjusted_mutual_info_score(a, b), abs=1e-12)
    perm_rng = np.random.default_rng(3)
    want = [adjusted_mutual_info_score(a[perm_rng.permutation(a.size)], b) for _ in range(20)]
    np.testing.assert_allclose(res.null, want, atol=1e-10)
    assert res.sigma > 10 and res.p == pytest.approx(1 / 21)
    again = ami_test(a, b, n_permutations=20, seed=3)
    assert again.null_mean == res.null_mean and again.null is None  # seeded


def test_logreg_beats_gaussian_null_on_spatial_labels():
    _, x, groups, _ = planted(n_groups=4, per=30)
    res = logreg_test(x, groups, null_repeats=8, seed=0)
    assert res.bal_acc > 0.95 and res.null_mean < 0.45 and res.sigma > 5
    assert res.n_used == 120 and res.n_dropped == 0
    cv = logreg_test(x, groups, folds=3, null_repeats=2, seed=0)
    assert cv.bal_acc > 0.95
    single = np.r_[groups[:-1], 9]  # a one-member lobe cannot be stratified: dropped and counted
    lone = logreg_test(x, single, null_repeats=0)
    assert lone.n_dropped == 1 and lone.null_mean is None


def test_genre_table_on_heldout_blocks():
    b, _, groups, genres = planted(n_groups=4, per=20, n_blocks=400, seed=8)
    res = lobe_genre_table(sparse.csr_matrix(b), genres, groups)
    assert res.majority == {f"genre{g}": g for g in range(4)}
    assert res.p < 1e-50 and res.cramers_v > 0.9 and res.dof == 9
    assert res.table.sum() + res.n_silent == 400
    one = lobe_genre_table(b, np.array(["web"] * 400), groups)
    assert one.chi2 is None and "single genre" in one.note


# ---------------------------------------------------------------------------------------------
# the whole analysis: planted truth
# ---------------------------------------------------------------------------------------------
def test_planted_lobes_recovered_and_spatial():
    b, x, groups, genres = planted(seed=0, n_blocks=2100)
    docs = np.arange(2100) // 3  # 700 documents of 3 blocks; 30% of them held out for the genre table
    res = run(b, x, doc_ids=docs, genres=genres, affinities=("phi", "jaccard"), n_clusters=(2, 6),
              n_permutations=100, logreg_null_repeats=5, heldout_fraction=0.3, seed=0)
    assert (res.n_blocks, res.n_blocks_heldout) == (1470, 630)
    for kind in ("phi", "jaccard", "geometry"):
        assert adjusted_mutual_info_score(groups[res.feature_ids], res.labels(kind, 6)) >= 0.9
    for kind in ("phi", "jaccard"):
        rec = res.record(kind, 6)
        assert rec.ami >= 0.9 and rec.ami_sigma > 30 and rec.ami_p == pytest.approx(1 / 101)
        assert rec.logreg_bal_acc > 0.9 and rec.logreg_sigma > 5
        # the held-out genre -> lobe map recovers the planted genre -> group map
        lab = res.labels(kind, 6)
        lobe_group = {lobe: int(np.bincount(groups[lab == lobe]).argmax()) for lobe in range(6)}
        assert {g: lobe_group[lobe] for g, lobe in rec.genre_majority.items()} == {f"genre{i}": i for i in range(6)}
        assert rec.genre_cramers_v > 0.9
    assert res.exclusions.decoder_invalid == res.exclusions.never_fired == res.exclusions.always_fired == 0
    assert res.cooccurrence.storage == "dense" and res.cooccurrence.n_blocks == 1470
    assert res.genre_table("geometry", 6).cramers_v > 0.9
    assert res.labelings == ["phi", "jaccard", "geometry"] and res.map_2d.shape == (180, 2)


def test_randomised_geometry_gives_noise_sigma():
    sig = []
    for seed in range(4):
        b, x, _, _ = planted(n_groups=5, per=20, n_blocks=600, seed=seed, random_geometry=True)
        res = run(b, x, affinities=("jaccard",), n_clusters=(5,), n_permutations=100, logreg_null_repeats=0,
                  seed=seed)
        sig.append(res.record("jaccard", 5).ami_sigma)
    assert np.mean(np.abs(sig)) < 3, sig


def test_topk_run_recovers_planted_lobes():
    b, x, groups, _ = planted(n_groups=4, per=25, n_blocks=800)
    res = run(b, x, affinities=("jaccard", "phi"), n_clusters=(4,), n_permutations=20, logreg_null_repeats=0,
              memory_budget=1000, top_k=20)
    assert res.cooccurrence.storage == "topk" and any("top 20 partners" in n for n in res.notes)
    assert res.cooccurrence.n_stored_pairs > 0 and all(a.sparse for a in res.affinities)
    for kind in ("jaccard", "phi", "geometry"):
        assert adjusted_mutual_info_score(groups, res.labels(kind, 4)) >= 0.9


def test_exclusions_skips_and_notes():
    b, x, _, _ = planted(n_groups=3, per=10, n_blocks=300)
    b[:, 0] = False
    b[:, 1] = True
    x[2] = np.nan
    res = run(b, x, doc_ids=np.arange(300), genres=np.array(["web"] * 300), affinities=("dice",),
              n_clusters=(3, 27, 40), n_permutations=10, logreg_null_repeats=0, phi_shift=False)
    assert (res.exclusions.decoder_invalid, res.exclusions.never_fired, res.exclusions.always_fired) == (1, 1, 1)
    assert res.n_usable == 27 and 2 not in res.feature_ids and res.n_features == 30
    assert res.n_clusters == [3] and res.skipped_n_clusters == [27, 40]
    assert any("skipped" in n for n in res.notes) and any("single genre" in n for n in res.notes)
    assert res.record("dice", 3).genre_chi2 is None and res.genre_tables == []


def test_feature_cloud_decoder():
    b, x, groups, _ = planted(n_groups=3, per=10, n_blocks=300)
    x[4] = 0  # a dead decoder row is excluded by the cloud
    res = run(b, FeatureCloud.from_array(x), affinities=("dice",), n_clusters=(3,), n_permutations=5,
              logreg_null_repeats=0)
    assert 4 not in res.feature_ids and res.exclusions.decoder_invalid == 1


def test_seeded_and_round_trip(tmp_path):
    b, x, groups, genres = planted(n_groups=3, per=10, n_blocks=400)
    kw = dict(doc_ids=np.arange(400) // 4, genres=genres, affinities=("phi", "dice"), n_clusters=(2, 3),
              n_permutations=10, logreg_null_repeats=2, seed=5)
    res = run(b, x, **kw)
    again = run(b, x, **kw)
    assert again.records == res.records and again.genre_tables == res.genre_tables
    assert all(np.array_equal(again.lobe_labels[k], res.lobe_labels[k]) for k in res.lobe_labels)
    other = run(b, x, **{**kw, "seed": 6})  # another seed holds out other documents
    assert other.record("phi", 3).ami_null_mean != res.record("phi", 3).ami_null_mean
    # one layer and a whole result: save -> load gives an equal object
    res.save(tmp_path / "one")
    assert LobesLayer.load(tmp_path / "one") == res
    full = LobesResult(params=LobesParams(**{k: v for k, v in kw.items() if k not in ("doc_ids", "genres")}),
                       layers=[res, again], source="planted", harvest="abc")
    full.save(tmp_path / "all")
    back = LobesResult.load(tmp_path / "all")
    assert back == full and back.params.affinities == ("phi", "dice") and back.layers[0].labels("dice", 3).dtype == np.int32
    doc = json.loads((tmp_path / "all" / "lobes.json").read_text())
    assert doc["kind"] == "lobes" and len(doc["layers"][0]["records"]) == 4
    for key in ("affinity", "n_clusters", "ami", "ami_null_mean", "ami_null_std", "ami_sigma", "ami_p",
                "logreg_bal_acc", "logreg_null_mean", "logreg_null_std", "logreg_sigma", "genre_cramers_v"):
        assert key in doc["layers"][0]["records"][0]
    with np.load(tmp_path / "all" / "lobes.npz", allow_pickle=False) as z:
        assert z["layers.0.lobe_labels.phi"].shape == (2, 30)
    table = full.table()
    assert len(table) == 8 and {"layer", "affinity", "ami_sigma", "genre_majority"} <= set(table.columns)
    with pytest.raises(InputError, match="expected a lobes result"):
        LobesResult.load(tmp_path / "one" / "lobes_layer.json")


def test_split_by_document_holds_out_whole_documents():
    docs = np.repeat(np.arange(20), 5)
    tr, he = split_by_document(docs, 0.25, seed=1)
    assert set(docs[tr]).isdisjoint(docs[he]) and len(set(docs[he])) == 5 and tr.size + he.size == 100


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_inputs():
    b, x, _, genres = planted(n_groups=3, per=10, n_blocks=100)
    kw = dict(n_clusters=(3,), n_permutations=5, logreg_null_repeats=0, affinities=("dice",))
    with pytest.raises(InputError, match="the harvest has 30 features .* but the SAE has 29"):
        run(b, x[:-1], **kw)
    with pytest.raises(InputError, match="but the SAE has 31"):
        run(b, FeatureCloud.from_array(np.vstack([x, x[:1]])), **kw)
    with pytest.raises(InputError, match="no complete block"):
        run(b[:0], x, **kw)
    with pytest.raises(InputError, match="every value is >= the 30 usable features"):
        run(b, x, **{**kw, "n_clusters": (30, 64)})
    with pytest.raises(InputError, match="n_clusters: expected a non-empty sequence of integers >= 2"):
        run(b, x, **{**kw, "n_clusters": (1, 4)})
    with pytest.raises(InputError, match="expected 0/1"):
        run(b * 2.5, x, **kw)
    with pytest.raises(InputError, match="expected both"):
        run(b, x, doc_ids=np.arange(100), **kw)
    with pytest.raises(InputError, match="genres: expected one entry per block"):
        run(b, x, doc_ids=np.arange(100), genres=genres[:5], **kw)
    with pytest.raises(InputError, match="all blocks come from one document"):
        run(b, x, doc_ids=np.zeros(100), genres=genres, **kw)
    with pytest.raises(InputError, match="affinities: expected one of"):
        run(b, x, **{**kw, "affinities": ("cosine",)})
    with pytest.raises(TypeError, match="bogus"):
        run(b, x, bogus=1, **kw)
    with pytest.raises(InputError, match="seed: expected an integer >= 0"):
        run(b, x, seed=-1, **kw)
    with pytest.raises(InputError, match="only 0 usable"):
        run(np.zeros_like(b), x, **kw)
    with pytest.raises(InputError, match="method: expected one of"):
        cooccurrence(b, method="gpu")
    with pytest.raises(InputError, match="top-k counts were ranked by"):
        affinity(cooccurrence(b, storage="topk", rank_by=("dice",)), "jaccard")


@pytest.mark.parametrize("field, value, message", [
    ("n_permutations", -5, "n_permutations: expected an integer >= 1. Got -5 instead."),
    ("logreg_null_repeats", -1, "logreg_null_repeats: expected an integer >= 0"),
    ("affinities", (), "affinities: expected a non-empty tuple"),
    ("affinities", ("phi", "phi"), "affinities: expected each affinity once"),
    ("n_clusters", (2, 2.5), "n_clusters: expected a sequence of integers >= 2"),
    ("heldout_fraction", 1.0, "heldout_fraction: expected a finite number >= 0 and < 1"),
    ("logreg_test_size", 0, "logreg_test_size: expected a finite number > 0"),
    ("phi_shift", "yes", "phi_shift: expected True or False"),
    ("solver", "lobpcg", "solver: expected one of auto, dense, arpack"),
    ("top_k", 0, "top_k: expected an integer >= 1"),
    ("n_threads", 0, "n_threads: expected an integer >= 1 or None"),
])
def test_params_validate_names_the_parameter(field, value, message):
    with pytest.raises(InputError) as e:
        LobesParams(**{field: value}).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_params_lists_become_tuples_and_threads_do_not_change_the_fingerprint():
    p = LobesParams(affinities=["phi"], n_clusters=[2, 3])
    assert p.affinities == ("phi",) and p.n_clusters == (2, 3) and LobesParams.from_dict(p.to_dict()) == p
    assert p.replace(n_threads=1).fingerprint() == p.fingerprint() != p.replace(seed=1).fingerprint()


# ---------------------------------------------------------------------------------------------
# figures (read results only)
# ---------------------------------------------------------------------------------------------
def test_figures_written(tmp_path):
    from featuregeo.pl import lobes as plot_lobes

    b, x, groups, genres = planted(n_groups=3, per=10, n_blocks=300)
    res = run(b, x, doc_ids=np.arange(300), genres=genres, affinities=("phi", "dice"), n_clusters=(2, 3),
              n_permutations=10, logreg_null_repeats=2)
    paths = plot_lobes.plot_all(LobesResult(layers=[res]), tmp_path)
    assert set(paths) == {None}
    assert set(paths[None]) == {"ami", "balanced_accuracy", "map", "genre_heatmap"}
    assert all(p.exists() and p.stat().st_size > 1000 and p.parent.name == "layer_none" for p in paths[None].values())


# ---- issue 11: accuracy's own spread across splits; permutation p for sparse genre tables ----------------
def test_logreg_sigma_includes_the_accuracy_spread_across_splits():
    from featuregeo.tl.lobes import logreg_test

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    x = rng.standard_normal((180, 16)).astype(np.float32)
    x[:, 0] += 0.6 * y  # weakly separable: the accuracy moves from split to split
    lr = logreg_test(x, y, null_repeats=10, seed=1, split_repeats=8)
    assert len(lr.bal_acc_splits) == 8 and lr.bal_acc == pytest.approx(np.mean(lr.bal_acc_splits))
    assert lr.bal_acc_sd > 0.02
    expect = (lr.bal_acc - lr.null_mean) / np.hypot(lr.bal_acc_sd, lr.null_std)
    assert lr.sigma == pytest.approx(expect) and lr.sigma < lr.sigma_null_only
    # unrelated labels: no significance claimed
    noise = logreg_test(rng.standard_normal((180, 16)).astype(np.float32), rng.permutation(y), null_repeats=10,
                        seed=2, split_repeats=8)
    assert abs(noise.sigma) < 2.5, noise.sigma


def _genre_case(rng, n_blocks, n_lobes, genres, planted):
    lab = np.repeat(np.arange(n_lobes), 4)
    win = rng.integers(0, n_lobes, n_blocks)
    g = rng.choice(genres, n_blocks)
    if planted:
        win = np.array([genres.index(x) % n_lobes for x in g])
    firing = np.zeros((n_blocks, lab.size), dtype=np.float32)
    firing[np.arange(n_blocks)[:, None], 4 * win[:, None] + np.arange(4)] = 1
    return firing, g, lab


def test_genre_table_uses_a_permutation_p_when_expected_counts_are_small():
    from featuregeo.tl.lobes import lobe_genre_table

    rng = np.random.default_rng(3)
    genres = ["code", "news", "wiki", "forum"]
    ps = []
    for _ in range(30):  # no association, 8 lobes on 40 blocks: expected counts ~1.2
        t = lobe_genre_table(*_genre_case(rng, 40, 8, genres, False), n_permutations=200, seed=1)
        assert t.p_method == "permutation" and t.min_expected < 5 and t.p == t.p_permutation
        ps.append(t.p)
    # a valid test rejects about 5% of null tables at 0.05
    assert np.mean(np.array(ps) < 0.05) <= 0.17
    planted = lobe_genre_table(*_genre_case(rng, 40, 8, genres, True), n_permutations=200, seed=1)
    assert planted.p == pytest.approx(1 / 201) and planted.p_chi2 < 1e-10  # not a p of 1e-10 on 40 blocks
    big = lobe_genre_table(*_genre_case(rng, 2000, 2, ["a", "b"], False), n_permutations=50)
    assert big.p_method == "chi-square" and big.p == big.p_chi2
