"""Harvest: model + SAEs + corpus -> which features fire in each block of text (and, optionally,
the residual activations themselves).

For every complete block of ``block_len`` tokens (default 256, as the paper) and every layer with
an SAE, the set of features whose activation exceeds ``threshold`` (default 1.0; the paper's rule)
on any token of the block is stored sparse (blocks x features), with the block's document id,
source and genre, and (``dashboards``, on by default) every feature's top activating contexts,
activation histogram and firing density (:mod:`featuregeo.io.harvest.dashboards`).  Several
layers come from one forward pass.  With ``store_activations`` the residual stream of every requested layer is also written (float16, scaled by a per-layer constant
recorded in the manifest), for SAE training and raw-activation spectra.

The output directory is its own checkpoint: blocks are cut into shards of ``shard_blocks`` blocks
(a whole number of batches), each written with an atomic rename, and a rerun skips finished
shards — so an interrupted harvest ends byte-identical to an uninterrupted one.  The fingerprint
in ``harvest.json`` covers the params, the layers, the model (name, dtype, width), every SAE's
weight checksum and the corpus's content (:meth:`~featuregeo.io.corpus.Corpus.fingerprint`); a
rerun with other inputs is refused unless the directory has no finished shard yet.  Every input is
checked before anything is written.

Layout::

    DIR/harvest.json                 configuration, fingerprint, per-layer activation scales
    DIR/shards/shard_000000.npz      block metadata + firing CSR per layer (written last = done)
    DIR/acts/layer_L/shard_000000.npy  float16 [shard_blocks * block_len, d_model] (optional)
    DIR/dashboards/logits_L.npz      logit effects of layer L's decoder directions (with dashboards)
    DIR/.checkpoint/.lock            held while a process writes the directory

Modules: :mod:`~featuregeo.io.harvest.params`, :mod:`~featuregeo.io.harvest.run` (writing),
:mod:`~featuregeo.io.harvest.reader` (:class:`Harvest`), :mod:`~featuregeo.io.harvest.files`.
"""

from __future__ import annotations

from featuregeo.io.harvest.files import FORMAT_VERSION, check_out_dir, npz_bytes, read_manifest
from featuregeo.io.harvest.params import HarvestError, HarvestParams
from featuregeo.io.harvest.reader import BlockTable, Harvest
from featuregeo.io.harvest.dashboards import FeatureDashboards, auto_labels, export_json, feature_json
from featuregeo.io.harvest.run import HarvestPlan, harvest, plan_harvest, sae_checksum, shard_files

__all__ = ["harvest", "Harvest", "HarvestParams", "HarvestError", "HarvestPlan", "plan_harvest", "BlockTable",
           "read_manifest", "check_out_dir", "sae_checksum", "npz_bytes", "FORMAT_VERSION", "FeatureDashboards",
           "auto_labels", "export_json", "feature_json", "shard_files"]
