"""Galaxy scale: planted power laws, nulls, entropy of Gaussians with known covariance, the contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ortho_group

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud, Provenance, Suite
from featuregeo.core.errors import InputError
from featuregeo.tl.galaxy import (
    GalaxyLayer,
    GalaxyParams,
    GalaxyResult,
    GaussianRows,
    RowSampler,
    analyze,
    analyze_cloud,
    clustering_entropy,
    covariance,
    eigenspectrum,
    fit_power_law,
    gaussian_entropy,
    knn_entropy,
    numerical_rank,
)


def planted_cloud(n, d, alpha, seed=0):
    """Gaussian rows whose covariance eigenvalues are rank^-alpha, under a random rotation."""
    rng = np.random.default_rng(seed)
    ev = np.arange(1, d + 1, dtype=float) ** -alpha
    q = ortho_group.rvs(d, random_state=seed + 1)
    x = (rng.standard_normal((n, d)) * np.sqrt(ev)) @ q.T
    return x.astype(np.float32) + 3.0  # an offset: the covariance must remove the mean


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_planted_power_law_recovered(alpha):
    x = planted_cloud(40000, 256, alpha)
    cov, n = covariance(x)
    fit = fit_power_law(eigenspectrum(cov), (11, 150))
    # eigenvalue ~ rank^-alpha, so the log-log slope is -alpha
    assert abs(fit.slope + alpha) < 0.02, fit
    assert fit.slope_ci[0] < fit.slope < fit.slope_ci[1]
    assert fit.r2 > 0.99
    assert n == 40000 and fit.fit_ranks == (11, 150) and fit.clipped is None


def test_isotropic_gaussian_slope_near_zero_and_is_the_null():
    x = np.random.default_rng(3).standard_normal((60000, 256)).astype(np.float32)
    fit = fit_power_law(eigenspectrum(covariance(x)[0]))
    # not "slope <= 0" (a descending spectrum always has that): the slope Marchenko-Pastur predicts,
    # from the quantiles of the MP law at ratio d / n
    y = 256 / 60000
    lo, hi = (1 - y ** 0.5) ** 2, (1 + y ** 0.5) ** 2
    grid = np.linspace(lo, hi, 200001)
    dens = np.sqrt(np.maximum((hi - grid) * (grid - lo), 0)) / (2 * np.pi * y * grid)
    cdf = np.cumsum(dens) / dens.sum()
    ranks = np.arange(11, 151)
    mp = np.interp(1 - (ranks - 0.5) / 256, cdf, grid)
    expected = np.polyfit(np.log10(ranks), np.log10(mp), 1)[0]
    assert abs(fit.slope - expected) < 0.01, (fit.slope, expected)
    cloud = FeatureCloud(planted_cloud(20000, 256, 0.5), layer=3)
    rec = analyze_cloud(cloud, GalaxyParams(entropy=False))
    # the null of the same shape is near flat and far from the planted slope
    assert abs(rec.null_slope) < 0.15
    assert rec.null_slope_ci[0] > rec.slope_ci[1]
    assert abs(rec.slope + 0.5) < 0.05 and rec.layer == 3 and rec.numerical_rank == 256


def test_covariance_matches_numpy_streamed_and_options():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1000, 20)) * np.linspace(1, 5, 20) + 50).astype(np.float32)
    cov, n = covariance(x, chunk_rows=97)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-4, atol=1e-4)
    unc, _ = covariance(x, center=False, chunk_rows=100)
    np.testing.assert_allclose(unc, x.T.astype(np.float64) @ x / len(x), rtol=1e-4)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    nc, _ = covariance(x, normalize=True)
    np.testing.assert_allclose(nc, np.cov(xn.astype(np.float64), rowvar=False), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-30])
def test_huge_and_tiny_values_give_the_same_spectrum_and_slope(scale):
    """A slope is scale invariant; float32 products of 1e20 overflowed (LinAlgError) before."""
    x = planted_cloud(4000, 64, 0.7, seed=4) - 3.0
    big = (x.astype(np.float64) * scale).astype(np.float32)
    assert np.isfinite(big).all()
    ev, ev_big = eigenspectrum(covariance(x)[0]), eigenspectrum(covariance(big, chunk_rows=999)[0])
    np.testing.assert_allclose(ev_big / scale**2, ev, rtol=1e-4)
    a, b = fit_power_law(ev, (3, 40)), fit_power_law(ev_big, (3, 40))
    assert abs(a.slope + 0.7) < 0.1 and b.slope == pytest.approx(a.slope, abs=1e-5)
    nb, _ = covariance(big, normalize=True)
    np.testing.assert_allclose(nb, covariance(x, normalize=True)[0], rtol=1e-4, atol=1e-9)


def test_nonfinite_array_is_one_line_error():
    x = np.ones((10, 3), dtype=np.float32)
    x[2, 1] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        covariance(x)


def test_streamed_cloud_excludes_bad_rows_and_equals_in_memory():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x[7] = 0.0
    x[9, 3] = np.nan
    x[11, 0] = np.inf
    cloud = FeatureCloud(x, layer=0)
    assert cloud.exclusions == {"nonfinite": 2, "dead": 1}
    assert cloud.n_features == 497 and 7 not in cloud.feature_ids and 9 not in cloud.feature_ids
    good = np.delete(x, [7, 9, 11], axis=0)
    np.testing.assert_allclose(covariance(cloud, chunk_rows=50)[0], np.cov(good.astype(float), rowvar=False),
                               rtol=1e-4, atol=1e-5)


def test_gaussian_rows_deterministic_any_chunking():
    g = GaussianRows(10000, 8, seed=5)
    whole = g.read(0, 10000)
    np.testing.assert_array_equal(np.concatenate([g.read(s, min(10000, s + 777)) for s in range(0, 10000, 777)]),
                                  whole)
    assert not np.array_equal(GaussianRows(10000, 8, seed=6).read(0, 10), whole[:10])


def test_fit_window_validation_and_clipping():
    ev = np.arange(1, 50, dtype=float) ** -0.5
    with pytest.raises(InputError, match="fit_ranks"):
        fit_power_law(ev, (11, 5))
    with pytest.raises(InputError, match="at least 3"):
        fit_power_law(ev, (48, 150))
    # clipped to the spectrum and exact for a pure power law, and the clipping is recorded
    f = fit_power_law(ev, (11, 150))
    assert f.fit_ranks == (11, 49) and abs(f.slope + 0.5) < 1e-12
    assert f.requested_ranks == (11, 150) and "numerical rank 49" in f.clipped


def test_fit_window_stops_at_numerical_rank_of_rank_deficient_clouds():
    """50 rows in 640 dims have rank 49: the 'ranks 11-150' fit ran into round-off (slope -9.85)."""
    x = np.random.default_rng(0).standard_normal((50, 640)).astype(np.float32)
    cov, n = covariance(x)
    ev = eigenspectrum(cov)
    assert numerical_rank(ev) == 49 and numerical_rank(ev, n_rows=n) == 49
    fit = fit_power_law(ev, (11, 150), n_rows=n)
    assert fit.fit_ranks == (11, 49) and fit.numerical_rank == 49 and fit.clipped
    assert -1.0 < fit.slope < 0  # a Marchenko-Pastur bulk, not -9.85
    # 3 distinct rows repeated: rank 2; no window is left -> refuse
    y = np.repeat(np.random.default_rng(1).standard_normal((3, 640)).astype(np.float32), 100, axis=0)
    ev3 = eigenspectrum(covariance(y)[0])
    assert numerical_rank(ev3) == 2
    with pytest.raises(InputError, match="numerical rank 2"):
        fit_power_law(ev3, (11, 150))


# ---------------------------------------------------------------------------- entropy
@pytest.mark.parametrize("kind", ["isotropic", "power-law"])
def test_knn_entropy_recovers_analytic_gaussian_entropy_low_dim(kind):
    """Kozachenko-Leonenko on 8000 points in 8 dims: within 0.1 nats of the analytic value."""
    p = 8
    lam = np.ones(p) * 2.0 if kind == "isotropic" else np.arange(1, p + 1, dtype=float) ** -1.0
    rng = np.random.default_rng(11)
    estimates = [knn_entropy(rng.standard_normal((8000, p)) * np.sqrt(lam), k=1) for _ in range(3)]
    truth = gaussian_entropy(lam)
    assert truth == pytest.approx(0.5 * p * math.log(2 * math.pi * math.e) + 0.5 * np.log(lam).sum())
    assert abs(np.mean(estimates) - truth) < 0.1, (np.mean(estimates), truth)


def test_knn_entropy_scales_with_volume():
    """Scaling data by s adds p*log(s) to the entropy (checks the estimator's dimension factor)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 20))
    assert knn_entropy(3.0 * x) - knn_entropy(x) == pytest.approx(20 * math.log(3.0), abs=1e-9)


def test_knn_entropy_rejects_duplicates():
    x = np.random.default_rng(0).standard_normal((100, 3))
    x[5] = x[6]
    with pytest.raises(InputError, match="duplicate"):
        knn_entropy(x)


@pytest.mark.parametrize("kind", ["isotropic", "power-law"])
def test_clustering_entropy_null_calibrated_on_gaussians(kind):
    """In 100 dims the k-NN estimator is biased by several nats; the same-code null absorbs it:
    a Gaussian cloud shows no excess clustering (|excess| < 1.5 nats) while the raw difference is large."""
    d = 300
    lam = np.ones(d) if kind == "isotropic" else np.arange(1, d + 1, dtype=float) ** -0.5
    x = np.random.default_rng(4).standard_normal((6000, d)) * np.sqrt(lam)
    r = clustering_entropy(x, subsample=3000, pca_dim=100, repeats=3, seed=0)
    assert abs(r.difference) > 5  # the bias the paper's fixed offset could not separate from structure
    assert abs(r.excess) < 1.5, r
    assert r.replacement is False and r.subsample == 3000 and r.pca_dim == 100
    assert r.per_repeat.duplicates_dropped.sum() == 0


def test_clustering_entropy_detects_planted_clusters():
    rng = np.random.default_rng(5)
    d, k = 100, 40
    centers = rng.standard_normal((k, d)) * 3
    x = centers[rng.integers(0, k, 6000)] + 0.3 * rng.standard_normal((6000, d))
    r = clustering_entropy(x, subsample=3000, pca_dim=50, repeats=3, seed=1)
    assert r.excess > 20 and r.excess_ci[0] > 10, r


def test_clustering_entropy_reproducible_and_subsamples_differ():
    x = np.random.default_rng(0).standard_normal((2000, 30))
    a = clustering_entropy(x, subsample=500, pca_dim=10, repeats=3, seed=7)
    b = clustering_entropy(x, subsample=500, pca_dim=10, repeats=3, seed=7, chunk_rows=333)  # any chunking
    assert a == b and a.to_dict() == b.to_dict()
    assert len(set(a.per_repeat.knn.tolist())) == 3
    assert clustering_entropy(x, subsample=500, pca_dim=10, repeats=3, seed=8) != a


def test_small_cloud_uses_at_most_80_percent():
    x = np.random.default_rng(0).standard_normal((200, 10))
    r = clustering_entropy(x, subsample=5000, pca_dim=None, zscore=False, repeats=3)
    assert r.subsample == 160


def test_row_sampler_is_uniform_without_replacement_and_bounded():
    """The streamed bottom-k sample: distinct rows, independent of chunking, uniform over rows,
    and never more than repeats * size rows held (the whole cloud is never materialised)."""
    n, size, repeats = 20000, 300, 4
    ids = np.arange(n)
    rows = ids[:, None].astype(np.float32)
    a, b = RowSampler(size, repeats, seed=3), RowSampler(size, repeats, seed=3)
    held = 0
    for s in range(0, n, 1000):
        a.add(ids[s:s + 1000], rows[s:s + 1000])
        held = max(held, a.n_held)
    for s in range(0, n, 4096):
        b.add(ids[s:s + 4096], rows[s:s + 4096])
    assert held <= repeats * size
    for r in range(repeats):
        sa = a.sample(r, size)[:, 0]
        np.testing.assert_array_equal(sa, b.sample(r, size)[:, 0])
        assert np.unique(sa).size == size
    # uniform: the sampled ids' mean is n/2 within 4 standard errors
    allv = np.concatenate([a.sample(r, size)[:, 0] for r in range(repeats)])
    assert abs(allv.mean() - n / 2) < 4 * (n / math.sqrt(12)) / math.sqrt(allv.size)


def test_analyze_cloud_streams_a_file_without_materialising(tmp_path):
    from featuregeo.io import load_cloud

    x = planted_cloud(6000, 48, 0.6, seed=2)
    np.save(tmp_path / "dec.npy", x.astype(np.float16))
    cloud = load_cloud(tmp_path / "dec.npy")
    p = GalaxyParams(fit_ranks=(3, 30), entropy_subsample=500, entropy_pca_dim=10, entropy_repeats=2,
                     chunk_rows=700)
    rec = analyze_cloud(cloud, p)
    assert not cloud.is_materialised
    assert abs(rec.slope + 0.6) < 0.1 and rec.entropy.subsample == 500 and rec.layer is None
    # same inputs + seed -> identical outputs, whatever the chunking of the file
    again = analyze_cloud(load_cloud(tmp_path / "dec.npy"), p.replace(chunk_rows=4096))
    assert again.entropy == rec.entropy and again.null_slope == pytest.approx(rec.null_slope, abs=1e-6)


# ---------------------------------------------------------------------------- params
@pytest.mark.parametrize("change, match", [
    ({"entropy_pca_dim": -5}, r"entropy_pca_dim: expected an integer >= 1 or None\. Got -5 instead"),
    ({"entropy_subsample": 0}, "entropy_subsample"),
    ({"entropy_repeats": 0}, "entropy_repeats"),
    ({"entropy_k": 0}, "entropy_k"),
    ({"fit_ranks": (5, 6)}, "fit_ranks"),
    ({"fit_ranks": (0, 50)}, "fit_ranks"),
    ({"windows": ((2, 50), (9, 3))}, "windows"),
    ({"seed": -1}, "seed"),
    ({"confidence": 1.5}, "confidence"),
    ({"chunk_rows": 0}, "chunk_rows"),
    ({"null": "yes"}, "null"),
])
def test_params_validate_rejects_nonsense(change, match):
    with pytest.raises(InputError, match=match):
        GalaxyParams().replace(**change).validate()
    with pytest.raises(InputError, match=match):  # analyze validates before reading anything
        analyze(FeatureCloud(np.ones((3, 2), dtype=np.float32)), GalaxyParams().replace(**change))


def test_params_round_trip_and_fingerprint():
    p = GalaxyParams(fit_ranks=(5, 40), entropy_pca_dim=None, seed=3)
    assert GalaxyParams.from_dict(p.to_dict()) == p
    assert p.fingerprint() != p.replace(seed=4).fingerprint()


# ---------------------------------------------------------------------------- suite, save/load, resume
def _planted_suite(clouds, calls, name="planted"):
    def loader(layer):
        calls.append(layer)
        return FeatureCloud(clouds[layer], layer, Provenance(source=name))

    return Suite(sorted(clouds), loader, name=name)


SMALL = GalaxyParams(fit_ranks=(5, 40), entropy_subsample=800, entropy_pca_dim=20, entropy_repeats=2)


def test_result_round_trip_save_load(tmp_path):
    clouds = {0: planted_cloud(3000, 64, 0.3, seed=1), 2: planted_cloud(3000, 64, 0.8, seed=2)}
    acts = {0: np.random.default_rng(0).standard_normal((1500, 64)), 2: planted_cloud(1500, 64, 1.2, seed=5)}
    res = analyze(_planted_suite(clouds, []), SMALL, activations=acts)
    assert [r.layer for r in res.layers] == [0, 2] and res.params == SMALL
    assert res.layers[1].slope < res.layers[0].slope < 0
    assert abs(res.layers[1].activation_slope + 1.2) < 0.15 and res.layers[0].entropy.excess is not None
    res.save(tmp_path)
    back = GalaxyResult.load(tmp_path)
    assert back == res
    assert isinstance(back.layers[0], GalaxyLayer) and isinstance(back.layers[0].eigenvalues, np.ndarray)
    assert back.layers[0].entropy.ci == res.layers[0].entropy.ci and back.layers[0].sensitivity[0].fit_ranks == (2, 50)
    table = back.table()
    assert list(table["layer"]) == [0, 2] and "entropy_excess" in table and "window_clipped" in table


def test_resume_reuses_every_layer_and_recomputes_a_changed_source(tmp_path):
    clouds = {0: planted_cloud(3000, 64, 0.3, seed=1), 2: planted_cloud(3000, 64, 0.8, seed=2)}
    calls: list = []
    with Checkpoint(tmp_path / ".checkpoint") as ck:
        first = analyze(_planted_suite(clouds, calls), SMALL, checkpoint=ck)
        assert sorted(ck.computed) == ["layer_0", "layer_2"] and ck.reused == []
    lines: list[str] = []
    with Checkpoint(tmp_path / ".checkpoint") as ck:
        again = analyze(_planted_suite(clouds, calls), SMALL, checkpoint=ck, progress=lines.append)
        assert sorted(ck.reused) == ["layer_0", "layer_2"] and ck.computed == []
    assert again == first and all("reused" in line for line in lines)
    # other contents under the same name and layer: recomputed, never the stale slope
    changed = dict(clouds)
    changed[2] = planted_cloud(3000, 64, 1.5, seed=9)
    with Checkpoint(tmp_path / ".checkpoint") as ck:
        third = analyze(_planted_suite(changed, calls), SMALL, checkpoint=ck)
        assert ck.reused == ["layer_0"] and ck.computed == ["layer_2"]
    assert abs(third.layers[1].slope + 1.5) < 0.1 and third.layers[0] == first.layers[0]
    # other parameters recompute
    with Checkpoint(tmp_path / ".checkpoint") as ck:
        analyze(_planted_suite(changed, calls), SMALL.replace(entropy=False), checkpoint=ck)
        assert ck.reused == []


def test_seed_keys_work_for_layer_none_and_results_are_reproducible():
    x = planted_cloud(2000, 32, 0.5, seed=3)
    p = GalaxyParams(fit_ranks=(3, 25), entropy_subsample=400, entropy_pca_dim=10, entropy_repeats=2, seed=5)
    a = analyze_cloud(FeatureCloud(x), p)
    b = analyze(FeatureCloud(x), p).layers[0]
    assert a.layer is None and a == b
    assert analyze_cloud(FeatureCloud(x), p.replace(seed=6)).entropy != a.entropy


def test_activations_missing_for_a_layer_is_an_error():
    clouds = {0: planted_cloud(500, 16, 0.3, seed=1), 2: planted_cloud(500, 16, 0.8, seed=2)}
    with pytest.raises(InputError, match="no array for layer 2"):
        analyze(_planted_suite(clouds, []), SMALL.replace(fit_ranks=(2, 10)), activations={0: np.ones((50, 16))})
    with pytest.raises(InputError, match="d_model 16"):
        analyze_cloud(FeatureCloud(clouds[0]), SMALL, activations=np.ones((50, 8)))


# ----------------------------------------------------------------------------------------------
# issue 11: honest slope intervals, curvature, nulls of the entropy that are unclustered but not Gaussian
# ----------------------------------------------------------------------------------------------
def _slope_coverage(n, d, window, replicates, boots, alpha=0.5, seed=5):
    """Fraction of planted power laws whose exponent the bootstrap / the t-interval covers."""
    from threadpoolctl import threadpool_limits

    from featuregeo.tl.galaxy.bootstrap import bootstrap_slopes, normal_interval
    from featuregeo.tl.galaxy.spectrum import accumulate

    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    rng = np.random.default_rng(seed)
    hit_boot = hit_t = 0
    with threadpool_limits(1):  # tiny matrices: one BLAS thread is many times faster
        for r in range(replicates):
            x = (rng.standard_normal((n, d)) * np.sqrt(lam)).astype(np.float32)
            acc = accumulate(x)
            cov, _ = acc.result()
            fit = fit_power_law(eigenspectrum(cov), window)
            slopes, _ = bootstrap_slopes(x, cov, acc.mean(), fit.fit_ranks, replicates=boots, seed=r)
            lo, hi = normal_interval(fit.slope, slopes, 0.95)
            hit_boot += lo <= -alpha <= hi
            hit_t += fit.slope_ci[0] <= -alpha <= fit.slope_ci[1]
    return hit_boot / replicates, hit_t / replicates


def test_row_bootstrap_interval_covers_planted_exponent_at_nominal_rate():
    # 60 planted power laws: the row bootstrap covers the truth about 95% of the time (binomial sd 0.03);
    # the regression t-interval, which treats correlated log-eigenvalues as independent, does not
    boot, t = _slope_coverage(2000, 40, (2, 20), replicates=60, boots=100)
    assert 0.87 <= boot <= 1.0, boot
    assert t < boot - 0.05, (t, boot)


@pytest.mark.slow
def test_row_bootstrap_coverage_large():
    boot, t = _slope_coverage(4000, 80, (3, 40), replicates=300, boots=100, seed=11)
    assert abs(boot - 0.95) < 0.04, boot
    assert t < 0.85, t


def test_bootstrap_projected_route_matches_full_eigendecomposition():
    from featuregeo.tl.galaxy.bootstrap import bootstrap_slopes
    from featuregeo.tl.galaxy.spectrum import accumulate

    x = planted_cloud(3000, 400, 0.5)
    acc = accumulate(x)
    cov, _ = acc.result()
    fit = fit_power_law(eigenspectrum(cov), (3, 40))
    full, base_full = bootstrap_slopes(x, cov, acc.mean(), fit.fit_ranks, replicates=30, seed=1, extra_dims=1000)
    ritz, base_ritz = bootstrap_slopes(x, cov, acc.mean(), fit.fit_ranks, replicates=30, seed=1)
    assert abs(base_full - fit.slope) < 1e-5
    # the Rayleigh-Ritz route (112 of 400 dims, randomized basis; same weights) tracks every replicate
    # and gives the same spread, which is all the interval uses
    assert np.corrcoef(full, ritz)[0, 1] > 0.95
    assert abs(np.std(ritz) / np.std(full) - 1) < 0.15


def test_curvature_and_window_range_reported_next_to_the_slope():
    # a bent spectrum (log-log quadratic) has clearly negative curvature and slopes that move with the window;
    # a pure power law has neither
    d = 400
    r = np.log10(np.arange(1, d + 1, dtype=float))
    bent = 10 ** (-0.3 * r - 0.25 * r ** 2)
    rng = np.random.default_rng(0)
    out = {}
    for ev, bends in ((bent, True), (np.arange(1, d + 1, dtype=float) ** -0.5, False)):
        x = (rng.standard_normal((8000, d)) * np.sqrt(ev)).astype(np.float32)
        rec = analyze_cloud(FeatureCloud(x), GalaxyParams(entropy=False, null=False, slope_bootstrap=40))
        out[bends] = rec
        assert "row bootstrap (40 replicates)" in rec.slope_ci_method and rec.slope_replicates.size == 40
        row = GalaxyResult(layers=[rec]).rows()[0]
        assert row["curvature"] == rec.curvature and row["window_slope_min"] == rec.window_slope_range[0]
    width = {k: r.window_slope_range[1] - r.window_slope_range[0] for k, r in out.items()}
    assert out[True].curvature < -0.15 and abs(out[False].curvature) < 0.05, (out[True].curvature, out[False].curvature)
    # the pure law's windows still differ (sample-size distortion at 8,000 x 400 near the rank limit), but
    # far less than the bent spectrum's
    assert width[True] > 2 * width[False], width


def _t_cloud(n, d, nu, seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.25
    return g / np.sqrt(rng.chisquare(nu, n) / nu)[:, None]


def test_entropy_unclustered_heavy_tails_give_no_clustering_excess():
    # multivariate t (nu = 5): far from Gaussian, but not clustered
    e = clustering_entropy(_t_cloud(4000, 64, 5, 0), subsample=2000, pca_dim=None, repeats=3, seed=1)
    assert e.excess_gaussian > 8, e.excess_gaussian          # the old "excess over a Gaussian" calls it clustered
    assert abs(e.excess) < 1.0, e.excess                     # the excess over the strongest null does not
    assert e.strongest_null == "radial"
    assert [u.name for u in e.nulls] == ["gaussian", "radial", "marginals"]


def test_entropy_planted_clusters_keep_their_excess_over_every_null():
    rng = np.random.default_rng(2)
    d = 64
    scale = np.arange(1, d + 1) ** -0.25
    centres = rng.standard_normal((40, d)) * scale * 3
    x = centres[rng.integers(0, 40, 4000)] + 0.5 * rng.standard_normal((4000, d)) * scale
    e = clustering_entropy(x, subsample=2000, pca_dim=None, repeats=3, seed=1)
    assert e.excess > 20 and e.excess_ci[0] > 20, (e.excess, e.excess_ci)
    assert all(e.difference - u.difference > 20 for u in e.nulls)


def test_entropy_gaussian_cloud_has_no_excess_over_any_null():
    x = np.random.default_rng(4).standard_normal((4000, 32)) * np.arange(1, 33) ** -0.5
    e = clustering_entropy(x, subsample=2000, pca_dim=None, repeats=4, seed=3)
    assert all(abs(e.difference - u.difference) < 0.5 for u in e.nulls), [(u.name, u.difference) for u in e.nulls]
