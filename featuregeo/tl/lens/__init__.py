"""Lenses and probes: what each layer of a language model already knows.

::

    from featuregeo.tl import lens
    params = lens.LensParams.fast()
    result = lens.analyze(model, corpus, params, checkpoint=None, progress=print)
    result.layer(5).tuned.kl.mean; result.table(); result.tuned_lens.save("out/tuned_lens")

* **Logit lens** — the model's own final norm, unembedding and final logit soft-cap applied to the
  residual stream after block ``L`` (:func:`featuregeo.io.lens_hooks.find_readout`).  At the last
  block it is the model's output.
* **Tuned lens** (Belrose et al. 2023) — an affine translator per layer, trained to minimise
  KL(final || lens) on the training split (:mod:`~featuregeo.tl.lens.tuned`).
* **Evaluation** — cross-entropy, KL to the final distribution, entropy and top-1 agreement on
  held-out documents, full vocabulary, with document-bootstrap 95 % intervals
  (:mod:`~featuregeo.tl.lens.metrics`).
* **Probes** — logistic probes for document genre and Python token category, a control task per
  probe (Hewitt & Liang 2019) and a causal check that mean-ablates the probe directions
  (:mod:`~featuregeo.tl.lens.probes`).

Modules: :mod:`~featuregeo.tl.lens.params`, :mod:`~featuregeo.tl.lens.results`,
:mod:`~featuregeo.tl.lens.tuned`, :mod:`~featuregeo.tl.lens.metrics`, :mod:`~featuregeo.tl.lens.probes`,
:mod:`~featuregeo.tl.lens.analysis`.
"""

from __future__ import annotations

from featuregeo.tl.lens.analysis import LensData, analyze, check_inputs, lens_data, read_layers, trajectory
from featuregeo.tl.lens.metrics import METRICS, block_bootstrap, evaluate_lenses
from featuregeo.tl.lens.params import DEFAULT_SENTENCE, LensParams
from featuregeo.tl.lens.probes import ProbeFit, control_labels, fit_probe, probe_directions, random_directions
from featuregeo.tl.lens.results import (CausalCheck, Interval, LensLayer, LensResult, LensScores, ProbeScore,
                                        Trajectory)
from featuregeo.tl.lens.train import train_lenses
from featuregeo.tl.lens.tuned import LENS_FORMAT, TunedLens, choose_subset, subset_readout, train_translator, translate

__all__ = ["LensParams", "LensResult", "LensLayer", "LensScores", "Interval", "ProbeScore", "CausalCheck", "Trajectory",
           "LensData", "TunedLens", "analyze", "check_inputs", "lens_data", "read_layers", "trajectory", "METRICS",
           "block_bootstrap", "evaluate_lenses", "train_lenses", "ProbeFit", "fit_probe", "control_labels",
           "probe_directions", "random_directions", "LENS_FORMAT", "choose_subset", "subset_readout",
           "train_translator", "translate", "DEFAULT_SENTENCE"]
