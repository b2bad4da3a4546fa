"""Feature atlas: a static, offline web map of every layer's SAE features, plus machine-readable tables.

:func:`build` draws the decoder rows of a :class:`~featuregeo.core.data.Suite` and, optionally,
what other analyses found — handed over as a typed :class:`~featuregeo.atlas.inputs.AtlasInputs`
(firing and co-firing from a harvest, lobes, crystals, galaxy spectra, labels); the atlas never
reads another analysis's files (:mod:`featuregeo.pipeline.atlas` does that).  It writes into ``out``
(:data:`FILES`):

* ``index.html`` + ``assets/`` + ``data/layer_L.js`` (+ ``data/dash_L.js`` and ``data/dashboards.js``
  with feature dashboards, :mod:`featuregeo.atlas.dashboards`) + ``figures/`` — a site that opens from
  ``file://`` with no network: a WebGL scatter (Canvas2D fallback) of a 2-D layout of each layer's
  decoder directions, coloured by lobe; search by id, label or context text; a feature panel (with
  top activating contexts, activation histogram and logit table when a harvest has dashboards); a layer selector;
  per-layer galaxy spectra; crystals drawn on demand;
* ``features.parquet``, ``crystals.csv``, ``lobes.csv``, ``galaxy.csv`` (:mod:`featuregeo.atlas.tables`);
* ``atlas.json`` / ``atlas.npz`` / ``atlas.csv`` — the :class:`AtlasResult` (``AtlasResult.load(out)``).

Each layer is one checkpoint unit (``checkpoint.result("layer_L", ...)``) whose fingerprint covers
the parameters, the cloud (:meth:`~featuregeo.core.data.FeatureCloud.fingerprint`) and the layer's
inputs, so an interrupted export resumes and a changed input recomputes only its layers.

Examples
--------
>>> from featuregeo.io import open_suite                                    # doctest: +SKIP
>>> from featuregeo.atlas import AtlasInputs, AtlasParams, LayerInputs, build  # doctest: +SKIP
>>> suite = open_suite("default", [2, 5])                                    # doctest: +SKIP
>>> res = build(suite, AtlasParams(layout="pca"), "out/atlas",               # doctest: +SKIP
...             inputs=AtlasInputs({2: LayerInputs(labels={0: "the"})}))
>>> res.layer(2).labels[0]                                                   # doctest: +SKIP
'the'
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from featuregeo.atlas.dashboards import SharedTokens, write_dashboards, write_shared
from featuregeo.atlas.inputs import (AtlasInputs, Crystal, CrystalsInput, DashboardInput, FiringInput, GalaxyInput,
                                     LayerInputs, LobesInput, LobeSummary, SaeIdentity, check_layer_inputs)
from featuregeo.atlas.layer import compute_layer, lobe_columns
from featuregeo.atlas.layout import LAYOUTS, cofiring, layout_2d
from featuregeo.atlas.result import FORMAT_VERSION, AtlasLayer, AtlasParams, AtlasResult
from featuregeo.atlas.site import copy_figures, script_json, write_layer, write_site
from featuregeo.atlas.tables import write_tables
from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint, say

#: the files of an atlas directory (besides ``data/layer_L.js`` and ``figures/``)
FILES = ("index.html", "assets/atlas.js", "assets/atlas.css", "features.parquet", "crystals.csv", "lobes.csv",
         "galaxy.csv", "atlas.json", "atlas.npz", "atlas.csv")


def layer_fingerprint(params: AtlasParams, cloud, inputs: LayerInputs, layer: int) -> str:
    """Everything that determines one :class:`AtlasLayer`: format, params, cloud, inputs, layer."""
    return fingerprint("atlas-layer", FORMAT_VERSION, params.fingerprint(), cloud.fingerprint(),
                       inputs.fingerprint(), int(layer))


def prepare(suite, params: AtlasParams, inputs: AtlasInputs) -> dict[int, LayerInputs]:
    """Every layer's inputs, checked against its SAE before anything is computed (cheap: no rows read)."""
    prepared = {}
    for layer in suite.layers:
        cloud = suite.load(layer)
        li = inputs.for_layer(layer, cloud)
        check_layer_inputs(layer, cloud, li, (suite.name,))
        if li.lobes is not None and params.affinity not in li.lobes.labels:
            raise InputError(f"--affinity: {li.lobes.origin} has no lobes for {params.affinity!r} at layer {layer}; "
                             f"expected one of {sorted(li.lobes.labels)}")
        prepared[layer] = li
    return prepared


def build(suite, params: AtlasParams, out: str | Path, *, inputs: AtlasInputs | None = None, checkpoint=None,
          progress: Callable[[str], None] | None = None) -> AtlasResult:
    """Write the atlas of ``suite`` into ``out`` and return its :class:`AtlasResult`.

    Parameters
    ----------
    suite : Suite
        The SAEs drawn, one layer in memory at a time.
    params : AtlasParams
        Validated first.
    out : path
        Output directory (created; a file in the way is an error).
    inputs : AtlasInputs, optional
        Firing, lobes, crystals, galaxy records and labels per layer; each is checked against the
        layer's SAE (feature count, d_model, recorded source) and a mismatch is refused.
    checkpoint : Checkpoint, optional
        One unit per layer (``layer_L``); finished layers are reused when nothing they depend on
        changed.
    progress : callable, optional
        Called with one line of text per layer.

    Returns
    -------
    AtlasResult

    Examples
    --------
    >>> res = build(suite, AtlasParams(layout="pca"), "out/atlas")   # doctest: +SKIP
    >>> res.table()[["layer", "n_features"]]                        # doctest: +SKIP
    """
    params.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"out: {out} is a file; expected a directory for the atlas")
    inputs = inputs if inputs is not None else AtlasInputs()
    prepared = prepare(suite, params, inputs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"out: {out} lies under a file; expected a directory for the atlas") from None
    layers = []
    shared = SharedTokens()
    for layer in suite.layers:
        t0 = time.perf_counter()
        cloud = suite.load(layer)
        li = prepared[layer]

        def compute(cloud=cloud, layer=layer, li=li) -> AtlasLayer:
            return compute_layer(cloud, layer, li, params)

        if checkpoint is None:
            rec, reused = compute(), False
        else:
            n_reused = len(checkpoint.reused)
            rec = checkpoint.result(f"layer_{layer}", layer_fingerprint(params, cloud, li, layer), compute, AtlasLayer)
            reused = len(checkpoint.reused) > n_reused
        write_layer(out, rec)
        if li.dashboards is not None:
            write_dashboards(out, rec, li.dashboards.load(), params, shared)
        layers.append(rec)
        say(progress, f"atlas layer {layer}: reused" if reused else
            f"atlas layer {layer}: {rec.n_features} features, {time.perf_counter() - t0:.1f}s")
        del cloud
    result = AtlasResult(source=suite.name, params=params, layers=layers,
                         figures=copy_figures(out, inputs.figures))
    write_tables(out, result)
    if any(la.has_dashboards for la in layers):
        write_shared(out, shared)
    write_site(out, result)
    result.save(out)
    return result


__all__ = ["build", "AtlasParams", "AtlasLayer", "AtlasResult", "AtlasInputs", "LayerInputs", "FiringInput",
           "DashboardInput",
           "LobesInput", "LobeSummary", "Crystal", "CrystalsInput", "GalaxyInput", "SaeIdentity",
           "check_layer_inputs", "compute_layer", "lobe_columns", "layout_2d", "cofiring", "script_json",
           "layer_fingerprint", "LAYOUTS", "FILES"]
