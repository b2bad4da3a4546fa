"""Galaxy scale: planted power laws, nulls, and entropy of Gaussians with known covariance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import ortho_group

from featuregeo.core.data import FeatureCloud, Provenance, Suite
from featuregeo.core.errors import InputError
from featuregeo.tl.galaxy import (
    GalaxyParams,
    GalaxyResult,
    GaussianRows,
    analyze_layer,
    clustering_entropy,
    covariance,
    eigenspectrum,
    fit_power_law,
    gaussian_entropy,
    knn_entropy,
    run_galaxy,
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
    assert n == 40000 and fit.fit_ranks == [11, 150]


def test_isotropic_gaussian_slope_near_zero_and_is_the_null():
    x = np.random.default_rng(3).standard_normal((60000, 256)).astype(np.float32)
    fit = fit_power_law(eigenspectrum(covariance(x)[0]))
    assert -0.08 < fit.slope <= 0.0
    cloud = FeatureCloud(planted_cloud(20000, 256, 0.5), layer=3)
    rec = analyze_layer(cloud, GalaxyParams(entropy=False))
    # the null of the same shape is near flat and far from the planted slope
    assert abs(rec.null_slope) < 0.15
    assert rec.null_slope_ci[0] > rec.slope_ci[1]


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


def test_fit_window_validation():
    ev = np.arange(1, 50, dtype=float) ** -0.5
    with pytest.raises(InputError, match="fit_ranks"):
        fit_power_law(ev, (11, 5))
    with pytest.raises(InputError, match="at least 3"):
        fit_power_law(ev, (48, 150))
    # clipped to the spectrum and exact for a pure power law
    f = fit_power_law(ev, (11, 150))
    assert f.fit_ranks == [11, 49] and abs(f.slope + 0.5) < 1e-12


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
    r = clustering_entropy(x, subsample=3000, pca_dim=100, repeats=4, seed=0)
    assert abs(r.difference) > 5  # the bias the paper's fixed offset could not separate from structure
    assert abs(r.excess) < 1.5, r
    assert r.params["replacement"] is False and r.params["subsample"] == 3000
    assert sum(r.per_repeat["duplicates_dropped"]) == 0


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
    b = clustering_entropy(x, subsample=500, pca_dim=10, repeats=3, seed=7)
    assert a.to_dict() == b.to_dict()
    assert len(set(a.per_repeat["knn"])) == 3


def test_small_cloud_uses_at_most_80_percent():
    x = np.random.default_rng(0).standard_normal((200, 10))
    r = clustering_entropy(x, subsample=5000, pca_dim=None, zscore=False, repeats=3)
    assert r.params["subsample"] == 160


# ---------------------------------------------------------------------------- suite + resume
def test_run_galaxy_suite_writes_and_resumes(tmp_path):
    clouds = {0: planted_cloud(3000, 64, 0.3, seed=1), 2: planted_cloud(3000, 64, 0.8, seed=2)}
    calls = []

    def loader(layer):
        calls.append(layer)
        return FeatureCloud(clouds[layer], layer, Provenance(source="planted"))

    suite = Suite([0, 2], loader, name="planted")
    params = GalaxyParams(fit_ranks=(5, 40), entropy_subsample=1000, entropy_pca_dim=20, entropy_repeats=2)
    res = run_galaxy(suite, tmp_path, params)
    paths = res.write(tmp_path)
    recs = json.loads(paths["json"].read_text())
    assert [r["layer"] for r in recs] == [0, 2]
    for r in recs:
        for key in ("layer", "n_features", "n_excluded", "d_model", "slope", "slope_ci", "fit_ranks", "r2",
                    "null_slope", "entropy"):
            assert key in r
        assert set(r["entropy"]) >= {"gaussian", "knn", "difference", "ci"}
    assert recs[1]["slope"] < recs[0]["slope"] < 0
    back = GalaxyResult.read(tmp_path)
    assert len(back.layers[0].eigenvalues) == 64
    # a rerun reuses the finished layers without reloading them
    calls.clear()
    res2 = run_galaxy(suite, tmp_path, params)
    assert calls == [] and res2.records() == res.records()
    # different parameters recompute
    run_galaxy(suite, tmp_path, GalaxyParams(fit_ranks=(5, 30), entropy=False))
    assert calls == [0, 2]
