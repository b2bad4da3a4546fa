"""Galaxy scale: the shape of the feature point cloud.

One contract (see ``docs/architecture.md``)::

    from featuregeo.tl import galaxy
    result = galaxy.analyze(suite, galaxy.GalaxyParams(), checkpoint=None, progress=print)

Stages, one module each:

* :mod:`~featuregeo.tl.galaxy.spectrum` — streamed covariance (power-of-two scaled chunks, float64
  sums), eigenvalues, numerical rank.
* :mod:`~featuregeo.tl.galaxy.powerlaw` — least squares of log10(eigenvalue) on log10(rank) over a rank
  window clipped at the numerical rank, with a t-interval on the slope; window sensitivity.
* :mod:`~featuregeo.tl.galaxy.bootstrap` — row bootstrap of the slope; :mod:`~featuregeo.tl.galaxy.bias` —
  the slope corrected for the sample-size distortion of the spectrum (simulated Gaussian clouds).
* :mod:`~featuregeo.tl.galaxy.nulls` — isotropic Gaussian clouds of the same shape, streamed.
* :mod:`~featuregeo.tl.galaxy.entropy` — Gaussian minus Kozachenko-Leonenko k-NN entropy on
  subsamples drawn without replacement while the rows stream, with a same-spectrum Gaussian null.
* :mod:`~featuregeo.tl.galaxy.analysis` — :func:`analyze_cloud` (one layer) and :func:`analyze` (a suite,
  resumable per layer through a :class:`~featuregeo.core.checkpoint.Checkpoint`).
* :mod:`~featuregeo.tl.galaxy.result` — :class:`GalaxyParams`, :class:`GalaxyLayer`, :class:`GalaxyResult`.

References
----------
Li et al., "The Geometry of Concepts: Sparse Autoencoder Feature Structure", Entropy 27(4):344 (2025).
Kozachenko & Leonenko, "Sample estimate of the entropy of a random vector", Probl. Inf. Transm. 23 (1987).
"""

from __future__ import annotations

from featuregeo.tl.galaxy.analysis import analyze, analyze_cloud
from featuregeo.tl.galaxy.bias import SlopeBiasCorrection, correct_slope_bias
from featuregeo.tl.galaxy.entropy import (EntropyEstimate, EntropyRepeats, RowSampler, clustering_entropy,
                                          gaussian_entropy, knn_entropy)
from featuregeo.tl.galaxy.nulls import GaussianRows, isotropic_null_cloud
from featuregeo.tl.galaxy.powerlaw import (DEFAULT_FIT_RANKS, DEFAULT_WINDOWS, PowerLawFit, fit_power_law,
                                           window_sensitivity)
from featuregeo.tl.galaxy.result import GalaxyLayer, GalaxyParams, GalaxyResult
from featuregeo.tl.galaxy.spectrum import covariance, eigenspectrum, numerical_rank

__all__ = [
    "analyze", "analyze_cloud", "GalaxyParams", "GalaxyLayer", "GalaxyResult",
    "covariance", "eigenspectrum", "numerical_rank", "fit_power_law", "window_sensitivity", "PowerLawFit",
    "GaussianRows", "isotropic_null_cloud", "gaussian_entropy", "knn_entropy", "clustering_entropy",
    "EntropyEstimate", "EntropyRepeats", "RowSampler", "DEFAULT_FIT_RANKS", "DEFAULT_WINDOWS",
    "SlopeBiasCorrection", "correct_slope_bias",
]
