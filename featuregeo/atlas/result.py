"""The atlas's parameters and result: :class:`AtlasParams`, :class:`AtlasLayer`, :class:`AtlasResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from featuregeo.atlas.inputs import Crystal, GalaxyInput, LobeSummary
from featuregeo.atlas.layout import LAYOUTS, TOP_COFIRING
from featuregeo.core.errors import InputError
from featuregeo.core.util import deep_equal
from featuregeo.core.results import Params, Result, check_choice, check_int

#: bumped when the content of an :class:`AtlasLayer` changes meaning (invalidates checkpoints)
FORMAT_VERSION = 3


@dataclass(frozen=True)
class AtlasParams(Params):
    """Parameters of an atlas export.

    Attributes
    ----------
    layout : {"umap", "tsne", "pca"}, default="umap"
        2-D layout of the decoder directions (cosine geometry).
    affinity : str, default="phi"
        Which lobes (by co-occurrence affinity) colour the map and fill the ``lobe_<k>`` columns.
    n_clusters : int or None, default=None
        The lobe partition that colours the map when the page opens (None: the smallest k >= 8,
        else the largest).  Every partition stays available in the colour menu and the tables.
    seed : int, default=0
        Random state of the layout.
    top_cofiring : int, default=5
        Co-firing partners listed per feature.
    n_neighbors : int, default=15
        UMAP neighbourhood size.
    contexts : int, default=5
        Top activating contexts shown per feature (from a harvest with dashboards).
    logit_tokens : int, default=5
        Promoted and suppressed output tokens shown per feature.
    umap_epochs : int or None, default=None
        UMAP optimisation epochs (None: umap-learn's default, 500 below 10,000 features).

    Examples
    --------
    >>> AtlasParams(layout="pca", seed=1).validate().layout
    'pca'
    """

    layout: str = "umap"
    affinity: str = "phi"
    n_clusters: int | None = None
    seed: int = 0
    top_cofiring: int = TOP_COFIRING
    n_neighbors: int = 15
    contexts: int = 5
    logit_tokens: int = 5
    umap_epochs: int | None = None

    def validate(self) -> "AtlasParams":
        check_choice("layout", self.layout, LAYOUTS)
        if not isinstance(self.affinity, str) or not self.affinity.strip():
            raise InputError(f"affinity: expected the name of a lobe affinity such as 'phi'. Got {self.affinity!r} instead.")
        check_int("n_clusters", self.n_clusters, minimum=2, allow_none=True)
        check_int("seed", self.seed, minimum=0)
        check_int("top_cofiring", self.top_cofiring, minimum=1, maximum=100)
        check_int("n_neighbors", self.n_neighbors, minimum=2)
        check_int("contexts", self.contexts, minimum=1, maximum=100)
        check_int("logit_tokens", self.logit_tokens, minimum=1, maximum=100)
        check_int("umap_epochs", self.umap_epochs, minimum=1, allow_none=True)
        return self


same = deep_equal  # array-aware equality shared by every result


@dataclass(eq=False)
class AtlasLayer(Result):
    """Everything the atlas shows for one layer; per-feature arrays in the order of ``ids``.

    Attributes
    ----------
    layer : int
    n_features, n_total, n_excluded, d_model : int
        Kept decoder rows, all rows, excluded rows (NaN/inf or zero), residual width.
    neuronpedia_id : str or None
        ``"<model>/<source>"`` for links to Neuronpedia.
    ids : ndarray (n,) int64
        Feature ids of the kept rows.
    xy : ndarray (n, 2) float32
        2-D layout coordinates.
    norm : ndarray (n,) float32
        Decoder row norms.
    lobes : dict
        ``{n_clusters: int32 labels (n,)}`` of the chosen affinity, -1 where a feature has no lobe.
    n_blocks : int or None
        Blocks of text in the harvest (None without one).
    n_fired : ndarray (n,) int32 or None
        Blocks in which each feature fired.
    freq : ndarray (n,) float32 or None
        ``n_fired / n_blocks``.
    cofire : ndarray (n, top) int32 or None
        Top co-firing partners by Jaccard similarity (-1 pads).
    cofire_n11 : ndarray (n, top) int32 or None
        Blocks shared with each partner.
    labels : dict
        ``{feature id: text}`` (kept features only): user or Neuronpedia labels.
    auto_labels : dict
        ``{feature id: text}``: automatic labels from the dashboards (``auto: fires on ...;
        promotes ...``); shown only where ``labels`` has none.
    density : ndarray (n,) float32 or None
        Share of harvested tokens on which each feature is positive (from the dashboards).
    crystals : list of Crystal
    galaxy : GalaxyInput or None
    lobe_summaries : list of LobeSummary
    """

    kind: ClassVar[str] = "atlas_layer"
    layer: int = 0
    n_features: int = 0
    n_total: int = 0
    n_excluded: int = 0
    d_model: int = 0
    neuronpedia_id: str | None = None
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    norm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    lobes: dict[int, np.ndarray] = field(default_factory=dict)
    n_blocks: int | None = None
    n_fired: np.ndarray | None = None
    freq: np.ndarray | None = None
    cofire: np.ndarray | None = None
    cofire_n11: np.ndarray | None = None
    labels: dict[int, str] = field(default_factory=dict)
    auto_labels: dict[int, str] = field(default_factory=dict)
    density: np.ndarray | None = None
    crystals: list[Crystal] = field(default_factory=list)
    galaxy: GalaxyInput | None = None
    lobe_summaries: list[LobeSummary] = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        return same(self, other)

    @property
    def has_firing(self) -> bool:
        return self.freq is not None

    @property
    def has_dashboards(self) -> bool:
        return self.density is not None

    def label(self, feature: int) -> str | None:
        """The label shown for ``feature``: the user's, else the automatic one, else None."""
        return self.labels.get(int(feature), self.auto_labels.get(int(feature)))

    def summary(self) -> dict[str, Any]:
        """One flat row: counts and the galaxy slope (the layer's row of ``atlas.csv``)."""
        g = self.galaxy
        return {"layer": self.layer, "n_features": self.n_features, "n_total": self.n_total,
                "n_excluded": self.n_excluded, "d_model": self.d_model, "neuronpedia_id": self.neuronpedia_id,
                "n_labels": len(self.labels), "n_auto_labels": len(self.auto_labels), "n_crystals": len(self.crystals),
                "lobe_n_clusters": ";".join(str(k) for k in sorted(self.lobes)) or None,
                "has_firing": self.has_firing, "n_blocks": self.n_blocks,
                "galaxy_slope": None if g is None else g.slope,
                "galaxy_slope_corrected": None if g is None else g.slope_corrected}

    def rows(self) -> list[dict[str, Any]]:
        return [self.summary()]


@dataclass(eq=False)
class AtlasResult(Result):
    """An atlas export: the parameters, the source, one :class:`AtlasLayer` per layer.

    The site and tables next to ``atlas.json`` have fixed names: ``index.html``, ``assets/``,
    ``data/layer_L.js``, ``figures/``, ``features.parquet``, ``crystals.csv``, ``lobes.csv``,
    ``galaxy.csv`` (see :data:`featuregeo.atlas.FILES`).

    Examples
    --------
    >>> res = AtlasResult.load("out/atlas")          # doctest: +SKIP
    >>> res.layer(12).labels[1234]                   # doctest: +SKIP
    """

    kind: ClassVar[str] = "atlas"
    source: str = ""
    params: AtlasParams = field(default_factory=AtlasParams)
    layers: list[AtlasLayer] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        return same(self, other)

    @property
    def n_features(self) -> int:
        return int(sum(la.n_features for la in self.layers))

    def layer(self, layer: int) -> AtlasLayer:
        for la in self.layers:
            if la.layer == layer:
                return la
        raise InputError(f"layer: expected one of {[la.layer for la in self.layers]}. Got {layer!r} instead.")

    def rows(self) -> list[dict[str, Any]]:
        return [la.summary() for la in self.layers]


__all__ = ["AtlasParams", "AtlasLayer", "AtlasResult", "FORMAT_VERSION", "same"]
