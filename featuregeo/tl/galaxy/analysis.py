"""The galaxy analysis of one cloud and of a suite (resumable per layer through a Checkpoint)."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud, Provenance, Suite
from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint, say, seed_sequence
from featuregeo.io.activations import ActivationSource
from featuregeo.tl.galaxy.bias import correct_slope_bias
from featuregeo.tl.galaxy.bootstrap import bootstrap_slopes, normal_interval
from featuregeo.tl.galaxy.entropy import RowSampler, entropy_from_sampler, top_eigenvectors
from featuregeo.tl.galaxy.nulls import isotropic_null_cloud
from featuregeo.tl.galaxy.powerlaw import fit_power_law, window_sensitivity
from featuregeo.tl.galaxy.result import GalaxyLayer, GalaxyParams, GalaxyResult
from featuregeo.tl.galaxy.spectrum import accumulate, eigenspectrum

#: seed sub-streams (``seed_sequence(seed, layer_or_0, STREAM)``)
NULL_STREAM, SAMPLE_STREAM, ENTROPY_NULL_STREAM, BOOTSTRAP_STREAM, ACT_BOOTSTRAP_STREAM, BASIS_STREAM = 1, 2, 3, 4, 5, 6
BIAS_STREAM = 7

Activations = np.ndarray | FeatureCloud


def _layer_key(layer: int | None) -> int:
    return 0 if layer is None else int(layer)


def _activation_cloud(activations: Activations | None, cloud: FeatureCloud) -> FeatureCloud | None:
    if activations is None:
        return None
    if isinstance(activations, FeatureCloud):
        acts = activations
    else:
        arr = activations if isinstance(activations, np.ndarray) else np.asarray(activations)
        if arr.ndim != 2:
            raise InputError(f"activations: expected a 2-D array [n_tokens, d_model]. Got shape {arr.shape} instead.")
        acts = FeatureCloud(arr, cloud.layer, Provenance(source="<activations>"), exclude_dead=False)
    if acts.d_model != cloud.d_model:
        raise InputError(f"activations: expected d_model {cloud.d_model} to match the SAE (layer {cloud.layer}). "
                         f"Got {acts.d_model} instead.")
    return acts


def _spectrum(cloud: FeatureCloud, p: GalaxyParams, name: str, on_chunk=None, keep: list | None = None,
              client: Any = None):
    acc = accumulate(cloud, center=p.center, normalize=p.normalize, chunk_rows=p.chunk_rows, on_chunk=on_chunk,
                     name=name, client=client)
    cov, n = acc.result()
    if keep is not None:
        keep[:] = [cov, acc.mean()]
    return eigenspectrum(cov), n


def _bootstrap(data: FeatureCloud, kept: list, fit, p: GalaxyParams, seed) -> tuple[tuple[float, float], float,
                                                                                     np.ndarray]:
    """(percentile interval, replicate sd, replicate slopes) of the row bootstrap of ``fit``'s slope."""
    slopes, base = bootstrap_slopes(data, kept[0], kept[1], fit.fit_ranks, replicates=p.slope_bootstrap,
                                    center=p.center, normalize=p.normalize, seed=seed, chunk_rows=p.chunk_rows)
    return normal_interval(fit.slope, slopes, p.confidence), float(np.std(slopes, ddof=1)), slopes


def _entropy_basis(cov: np.ndarray, p: GalaxyParams, seed) -> np.ndarray | None:
    """Top ``entropy_pca_dim`` axes of the whole cloud's correlation (or covariance) matrix, computed once
    for every entropy subsample; None when a per-subsample PCA is needed (normalised rows, small d, all dims)."""
    d = cov.shape[0]
    if p.normalize or p.entropy_pca_dim is None or 4 * (p.entropy_pca_dim + 20) >= d:
        return None
    c = cov
    if p.entropy_zscore:
        sd = np.sqrt(np.diag(cov))
        if not np.all(sd > 0):
            return None
        c = cov / np.outer(sd, sd)
    return top_eigenvectors(lambda q: c @ q, d, int(p.entropy_pca_dim), seed)


def _correct_bias(rec: GalaxyLayer, ev: np.ndarray, n: int, p: GalaxyParams, seed, stderr: float) -> None:
    """Centre the slope interval on the slope corrected for the sample-size distortion (:mod:`.bias`).

    Half-width: the sample slope's spread (row bootstrap sd, or the regression standard error without a
    bootstrap) divided by the gain d(sample slope)/d(population slope), widened for the Monte Carlo
    error of the correction (``sqrt(1 + 1/sims)``: the simulated clouds are as noisy as the observed one).
    """
    from scipy import stats

    c = correct_slope_bias(ev, n, rec.fit_ranks, iterations=p.slope_bias_iterations, sims=p.slope_bias_sims,
                           center=p.center, seed=seed)
    sd = rec.slope_bootstrap_sd if rec.slope_bootstrap_sd is not None else stderr
    gain = c.gain if np.isfinite(c.gain) and c.gain > 0.2 else 1.0
    half = stats.norm.ppf(0.5 + p.confidence / 2) * sd / gain * np.sqrt(1 + 1 / p.slope_bias_sims)
    rec.slope_sample_ci = rec.slope_ci
    rec.slope_corrected, rec.slope_bias, rec.slope_bias_se, rec.slope_bias_gain = c.slope, c.bias, c.bias_se, c.gain
    rec.slope_ci = (float(c.slope - half), float(c.slope + half))
    spread = (f"row bootstrap ({p.slope_bootstrap} replicates)" if rec.slope_bootstrap_sd is not None
              else "regression t")
    rec.slope_ci_method = f"bias-corrected ({p.slope_bias_sims} simulated clouds) +- {spread}"


def _window_range(fits) -> tuple[float, float] | None:
    return (float(min(f.slope for f in fits)), float(max(f.slope for f in fits))) if fits else None


def analyze_cloud(cloud: FeatureCloud, params: GalaxyParams | None = None, *,
                  activations: Activations | None = None, client: Any = None) -> GalaxyLayer:
    """Galaxy analysis of one point cloud (one layer).

    One streamed pass over the rows builds the covariance and draws the entropy subsamples; the
    spectrum is fitted over ``fit_ranks`` clipped at its numerical rank; an isotropic Gaussian of
    the same shape goes through the same code as the null.

    Parameters
    ----------
    cloud : FeatureCloud
        Decoder rows (streamed when the cloud is file-backed).
    params : GalaxyParams, optional
        Validated first.
    activations : ndarray (n_tokens, d_model) or FeatureCloud, optional
        Raw residual activations of the same layer; their spectrum is computed by the same code
        (the paper's "SAE features vs raw activations" comparison).
    client : distributed.Client, optional
        Compute the covariance sums (cloud, null, activations) on a Dask cluster
        (:func:`featuregeo.io.cluster.connect`), reduced in chunk order: the same result whatever
        the number of workers.

    Returns
    -------
    GalaxyLayer

    Raises
    ------
    InputError
        Bad parameters, fewer than 3 ranks of the window above round-off, mismatched activations.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((2000, 32)) * np.arange(1, 33) ** -0.25
    >>> rec = analyze_cloud(FeatureCloud(x.astype(np.float32)), GalaxyParams(fit_ranks=(2, 20), entropy=False))
    >>> -0.7 < rec.slope < -0.3, rec.layer
    (True, None)
    """
    p = (params or GalaxyParams()).validate()
    if not isinstance(cloud, FeatureCloud):
        raise InputError(f"cloud: expected a FeatureCloud. Got {type(cloud).__name__} instead.")
    acts = _activation_cloud(activations, cloud)
    t0 = time.perf_counter()
    lk = _layer_key(cloud.layer)
    name = cloud.provenance.source
    sampler = (RowSampler(p.entropy_subsample, p.entropy_repeats, seed_sequence(p.seed, lk, SAMPLE_STREAM))
               if p.entropy else None)
    kept: list = []
    ev, n = _spectrum(cloud, p, name, sampler.add if sampler else None,
                      keep=kept if (p.slope_bootstrap or p.entropy) else None, client=client)
    basis = _entropy_basis(kept[0], p, seed_sequence(p.seed, lk, BASIS_STREAM)) if p.entropy else None
    fit_kw = dict(n_rows=n, center=p.center, rank_rtol=p.rank_rtol)
    try:
        fit = fit_power_law(ev, p.fit_ranks, p.confidence, **fit_kw)
    except InputError as e:
        raise InputError(f"{name} (layer {cloud.layer}): {e}") from None
    sens = window_sensitivity(ev, p.windows, p.confidence, **fit_kw)
    rec = GalaxyLayer(
        layer=cloud.layer, n_features=n, n_excluded=cloud.n_excluded, exclusions=cloud.exclusions,
        d_model=cloud.d_model, numerical_rank=fit.numerical_rank, slope=fit.slope, slope_ci=fit.slope_ci, r2=fit.r2,
        fit_ranks=fit.fit_ranks, window_clipped=fit.clipped, sensitivity=sens,
        provenance=cloud.provenance, eigenvalues=ev, slope_t_ci=fit.slope_ci, curvature=fit.curvature,
        rms_residual=fit.rms_residual, window_slope_range=_window_range(sens + [fit]),
    )
    if p.slope_bootstrap:
        rec.slope_ci, rec.slope_bootstrap_sd, rec.slope_replicates = _bootstrap(
            cloud, kept, fit, p, seed_sequence(p.seed, lk, BOOTSTRAP_STREAM))
        rec.slope_ci_method = f"row bootstrap ({p.slope_bootstrap} replicates, normal)"
    del kept
    if p.slope_bias_sims:
        _correct_bias(rec, ev, n, p, seed_sequence(p.seed, lk, BIAS_STREAM), fit.stderr)
    if p.null:
        null_seed = int(seed_sequence(p.seed, lk, NULL_STREAM).integers(2**63))
        nev, _ = _spectrum(isotropic_null_cloud(n, cloud.d_model, null_seed), p, "null", client=client)
        nfit = fit_power_law(nev, p.fit_ranks, p.confidence, **fit_kw)
        rec.null_slope, rec.null_slope_ci, rec.null_eigenvalues = nfit.slope, nfit.slope_ci, nev
        rec.null_curvature = nfit.curvature
    if acts is not None:
        akept: list = []
        aev, an = _spectrum(acts, p, "activations", keep=akept if p.slope_bootstrap else None, client=client)
        try:
            afit = fit_power_law(aev, p.fit_ranks, p.confidence, n_rows=an, center=p.center, rank_rtol=p.rank_rtol)
        except InputError as e:
            raise InputError(f"activations (layer {cloud.layer}): {e}") from None
        rec.activation_slope, rec.activation_slope_ci = afit.slope, afit.slope_ci
        rec.activation_tokens, rec.activation_eigenvalues = an, aev
        rec.activation_curvature, rec.activation_rms_residual = afit.curvature, afit.rms_residual
        if p.slope_bootstrap:
            rec.activation_slope_ci = _bootstrap(acts, akept, afit, p, seed_sequence(p.seed, lk, ACT_BOOTSTRAP_STREAM))[0]
    if sampler is not None:
        rec.entropy = entropy_from_sampler(
            sampler, subsample=p.entropy_subsample, pca_dim=p.entropy_pca_dim, zscore=p.entropy_zscore,
            k=p.entropy_k, null=p.entropy_null, confidence=p.confidence,
            seed=seed_sequence(p.seed, lk, ENTROPY_NULL_STREAM), name=name, basis=basis)
    rec.seconds = time.perf_counter() - t0
    return rec


def _activation_lookup(activations: Any, keys: list) -> Callable[[Any], tuple[Activations | None, Any]]:
    """``lookup(key) -> (activations or None, identity for the fingerprint)``; checks every key up front."""
    n = len(keys)
    if activations is None:
        return lambda key: (None, None)
    if isinstance(activations, ActivationSource):
        activations.require(keys)
        return lambda key: (activations.get(key, n), activations.fingerprint(key, n))

    def identity(a: Activations) -> str:
        return a.fingerprint() if isinstance(a, FeatureCloud) else fingerprint(np.asarray(a))

    if isinstance(activations, (np.ndarray, FeatureCloud)):
        if n != 1:
            raise InputError(f"activations: one array given for {n} layers {keys}; expected a mapping layer -> array")
        return lambda key: (activations, identity(activations))
    if isinstance(activations, Mapping):
        missing = [k for k in keys if k not in activations]
        if missing:
            raise InputError(f"activations: no array for layer {missing[0]}; expected one for every analysed layer "
                             f"{keys}. Got layers {sorted(activations, key=str)} instead.")
        return lambda key: (activations[key], identity(activations[key]))
    if callable(activations):
        def call(key):
            a = activations(key)
            if a is None:
                raise InputError(f"activations: no array for layer {key}; expected one for every analysed layer")
            return a, identity(a)
        return call
    raise InputError("activations: expected an ActivationSource, an array, a mapping layer -> array or a callable. "
                     f"Got {type(activations).__name__} instead.")


def analyze(suite_or_cloud: Suite | FeatureCloud, params: GalaxyParams | None = None, *,
            activations: Any = None, checkpoint: Checkpoint | None = None,
            progress: Callable[[str], None] | None = None, client: Any = None) -> GalaxyResult:
    """Galaxy analysis of every layer of a suite (or of one cloud), one layer in memory at a time.

    Parameters
    ----------
    suite_or_cloud : Suite or FeatureCloud
    params : GalaxyParams, optional
        Validated before anything is read.
    activations : ActivationSource, mapping layer -> array, array, or callable, optional
        Raw activations per layer; every analysed layer must have one (else a one-line InputError).
    checkpoint : Checkpoint, optional
        Each layer is one unit ``layer_<L>``, reused only when its fingerprint (params, the cloud's
        identity and content, the activations' identity, the layer) is unchanged.
    progress : callable, optional
        Receives one line per layer.
    client : distributed.Client, optional
        Compute the covariance sums on a Dask cluster (see :func:`analyze_cloud`).

    Returns
    -------
    GalaxyResult
        ``layers`` in suite order; a layer of unknown number is keyed by its suite key (0 for a bare file).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((400, 24)).astype(np.float32)
    >>> res = analyze(FeatureCloud(x, layer=3), GalaxyParams(fit_ranks=(2, 20), entropy=False, null=False))
    >>> [r.layer for r in res.layers], abs(res.layers[0].slope) < 0.3
    ([3], True)
    """
    p = (params or GalaxyParams()).validate()
    if isinstance(suite_or_cloud, FeatureCloud):
        cloud0 = suite_or_cloud
        keys, load, name = [cloud0.layer], (lambda key: cloud0), cloud0.provenance.source
    elif isinstance(suite_or_cloud, Suite):
        keys, load, name = suite_or_cloud.layers, suite_or_cloud.load, suite_or_cloud.name
    else:
        raise InputError(f"suite_or_cloud: expected a Suite or a FeatureCloud (open sources with featuregeo.io.open_suite). "
                         f"Got {type(suite_or_cloud).__name__} instead.")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise InputError(f"checkpoint: expected a Checkpoint or None. Got {type(checkpoint).__name__} instead.")
    lookup = _activation_lookup(activations, keys)
    records = []
    for key in keys:
        cloud = load(key)
        acts, acts_id = lookup(key)

        def compute(cloud=cloud, acts=acts, key=key) -> GalaxyLayer:
            rec = analyze_cloud(cloud, p, activations=acts, client=client)
            rec.layer = key if rec.layer is None else rec.layer
            return rec

        unit = f"layer_{'none' if key is None else key}"
        if checkpoint is None:
            rec, reused = compute(), False
        else:
            fp = fingerprint("galaxy_layer", p.fingerprint(), cloud.fingerprint(), key, acts_id)
            before = len(checkpoint.reused)
            rec = checkpoint.result(unit, fp, compute, GalaxyLayer)
            reused = len(checkpoint.reused) > before
        del cloud
        clip = f"; {rec.window_clipped}" if rec.window_clipped else ""
        null = "" if rec.null_slope is None else f" null {rec.null_slope:.3f}"
        say(progress, f"galaxy layer {rec.layer}: {'reused from checkpoint, ' if reused else ''}slope {rec.slope:.3f} "
                      f"[{rec.slope_ci[0]:.3f}, {rec.slope_ci[1]:.3f}] curvature {rec.curvature:.3f}{null} ({rec.n_features} features, "
                      f"{rec.n_excluded} excluded, {rec.seconds:.1f}s{clip})")
        records.append(rec)
    return GalaxyResult(source=name, params=p, layers=records)


__all__ = ["analyze", "analyze_cloud", "NULL_STREAM", "SAMPLE_STREAM", "ENTROPY_NULL_STREAM", "BOOTSTRAP_STREAM",
           "ACT_BOOTSTRAP_STREAM", "BASIS_STREAM", "BIAS_STREAM"]
