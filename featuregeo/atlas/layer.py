"""One layer of the atlas: decoder rows + :class:`~featuregeo.atlas.inputs.LayerInputs` -> :class:`AtlasLayer`."""

from __future__ import annotations

import numpy as np

from featuregeo.atlas.inputs import LayerInputs, LobesInput
from featuregeo.atlas.layout import cofiring, layout_2d
from featuregeo.atlas.result import AtlasLayer, AtlasParams
from featuregeo.core.errors import InputError


def lobe_columns(lobes: LobesInput, feature_ids: np.ndarray, affinity: str = "phi") -> dict[int, np.ndarray]:
    """``{n_clusters: int32 labels aligned with feature_ids}`` (-1 for features the lobes left out).

    Parameters
    ----------
    lobes : LobesInput
    feature_ids : ndarray of int
        The atlas's features (rows of the map).
    affinity : str
        Which lobes; an affinity the lobes do not have is an error naming ``--affinity``.

    Examples
    --------
    >>> lob = LobesInput(np.array([9, 2]), {"phi": {2: np.array([1, 0])}})
    >>> lobe_columns(lob, np.array([2, 3, 9]))[2].tolist()
    [0, -1, 1]
    """
    if affinity not in lobes.labels:
        raise InputError(f"--affinity: {lobes.origin} has no lobes for {affinity!r}; expected one of "
                         f"{sorted(lobes.labels)}")
    fids = np.asarray(lobes.feature_ids, dtype=np.int64)
    feature_ids = np.asarray(feature_ids, dtype=np.int64)
    order = np.argsort(fids, kind="stable")
    sorted_ids = fids[order]
    pos = np.clip(np.searchsorted(sorted_ids, feature_ids), 0, max(0, fids.size - 1))
    found = (sorted_ids[pos] == feature_ids) if fids.size else np.zeros(feature_ids.shape, bool)
    out = {}
    for k, lab in sorted(lobes.labels[affinity].items()):
        col = np.full(feature_ids.shape, -1, dtype=np.int32)
        if fids.size:
            col[found] = np.asarray(lab)[order][pos[found]]
        out[int(k)] = col
    return out


def compute_layer(cloud, layer: int, inputs: LayerInputs, params: AtlasParams) -> AtlasLayer:
    """Assemble one layer's atlas record: layout, norms, lobes, firing and co-firing, labels (user and
    automatic), dashboard densities, crystals.

    Parameters
    ----------
    cloud : FeatureCloud
        The layer's decoder rows.
    layer : int
    inputs : LayerInputs
        Checked against ``cloud`` by :func:`~featuregeo.atlas.inputs.check_layer_inputs` first.
    params : AtlasParams

    Returns
    -------
    AtlasLayer
    """
    x = cloud.vectors
    ids = np.asarray(cloud.feature_ids, dtype=np.int64)
    la = AtlasLayer(layer=int(layer), n_features=int(ids.size), n_total=int(cloud.n_total),
                    n_excluded=int(cloud.n_excluded), d_model=int(cloud.d_model),
                    neuronpedia_id=cloud.provenance.neuronpedia_id, ids=ids,
                    xy=layout_2d(x, params.layout, seed=params.seed, n_neighbors=params.n_neighbors,
                                 n_epochs=params.umap_epochs),
                    norm=np.linalg.norm(x, axis=1).astype(np.float32))
    if inputs.lobes is not None:
        la.lobes = lobe_columns(inputs.lobes, ids, params.affinity)
        la.lobe_summaries = [s for s in inputs.lobes.summaries if s.affinity == params.affinity]
    if inputs.firing is not None:
        firing = inputs.firing.load()
        if firing.shape[1] != cloud.n_total:
            raise InputError(f"{inputs.firing.origin}: layer {layer} firing has {firing.shape[1]} feature columns but "
                             f"the SAE ({cloud.provenance.source}) has {cloud.n_total} features; expected a harvest "
                             "of the same SAE")
        counts, partners, n11 = cofiring(firing, params.top_cofiring)
        la.n_blocks = int(firing.shape[0])
        la.n_fired = counts[ids].astype(np.int32)
        la.freq = (la.n_fired / max(1, la.n_blocks)).astype(np.float32)
        la.cofire, la.cofire_n11 = partners[ids], n11[ids]
    if inputs.dashboards is not None:
        from featuregeo.io.harvest.dashboards import auto_labels

        dash = inputs.dashboards.load()
        if dash.n_features != cloud.n_total:
            raise InputError(f"{inputs.dashboards.origin}: layer {layer} dashboards have {dash.n_features} features but "
                             f"the SAE ({cloud.provenance.source}) has {cloud.n_total}; expected a harvest of the same SAE")
        la.density = dash.density[ids].astype(np.float32)
        la.auto_labels = auto_labels(dash, ids)
    keep = set(ids.tolist())
    la.labels = {int(k): str(v) for k, v in sorted(inputs.labels.items()) if int(k) in keep}
    if inputs.crystals is not None:
        la.crystals = sorted(inputs.crystals.rows, key=lambda c: c.rank)
    la.galaxy = inputs.galaxy
    return la


__all__ = ["compute_layer", "lobe_columns"]
