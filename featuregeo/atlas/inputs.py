"""What the atlas draws besides the decoder rows: a small typed input model.

The atlas never reads another analysis's files and never looks inside another analysis's Result
class.  Whoever calls :func:`featuregeo.atlas.build` (usually :mod:`featuregeo.pipeline.atlas`)
translates what it has into these plain records, one :class:`LayerInputs` per layer:

* :class:`FiringInput` — from a harvest: the blocks x features firing matrix of the layer's SAE
  (read lazily, only when the layer is computed);
* :class:`LobesInput` — lobe labels per affinity and number of clusters over feature ids, plus
  one :class:`LobeSummary` per partition;
* :class:`CrystalsInput` — crystal rows (:class:`Crystal`: feature ids a, b, c, d, cosine, kind);
* :class:`GalaxyInput` — the layer's decoder spectrum, power-law slope and null;
* :class:`DashboardInput` — from a harvest: every feature's top contexts, activation histogram,
  density and logit effects (:class:`~featuregeo.io.harvest.dashboards.FeatureDashboards`, read lazily);
* labels — ``{feature id: text}`` (user or Neuronpedia labels; they win over automatic ones).

Each input may record the SAE it was computed on (:class:`SaeIdentity`: feature count, d_model,
source, path, fingerprint).  :func:`check_layer_inputs` refuses an input drawn from another SAE with
a one-line :class:`~featuregeo.core.errors.InputError` naming the input's ``origin`` (for example
``--harvest runs/h``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint


def finite_or_none(v: Any) -> float | None:
    """``float(v)``, or None for None / NaN / inf / empty strings (JSON has no NaN)."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def content_fingerprint(obj: Any) -> str:
    """Fingerprint of a dataclass's values (arrays by bytes); ``origin`` fields and callables are skipped,
    so an input moved to another directory with the same content keeps its fingerprint."""

    def plain(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {f.name: plain(getattr(o, f.name)) for f in dataclasses.fields(o)
                    if f.name != "origin" and not callable(getattr(o, f.name))}
        if isinstance(o, Mapping):
            return {str(k): plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        return o

    return fingerprint(type(obj).__name__, plain(obj))


# ----------------------------------------------------------------------------------------------
# the SAE an input was computed on
# ----------------------------------------------------------------------------------------------
@dataclass
class SaeIdentity:
    """What an input recorded about the SAE it was computed on; None = not recorded (not checked).

    Attributes
    ----------
    n_features : int or None
        All decoder rows of the SAE (``d_sae``, excluded rows included).
    d_model : int or None
        Width of the residual stream the SAE reads.
    source : str or None
        The source string it was opened with.
    path : str or None
        The decoder file it was read from.
    fingerprint : str or None
        :meth:`featuregeo.core.data.FeatureCloud.fingerprint` of the cloud.
    """

    n_features: int | None = None
    d_model: int | None = None
    source: str | None = None
    path: str | None = None
    fingerprint: str | None = None


def _same_place(a: str, b: str) -> bool:
    try:
        pa, pb = Path(a), Path(b)
        if pa.exists() and pb.exists():
            return pa.resolve() == pb.resolve()
    except (OSError, ValueError):
        pass
    return a == b


def sae_mismatch(recorded: SaeIdentity | None, cloud, names: tuple[str, ...] = ()) -> str | None:
    """Why ``recorded`` is not the SAE of ``cloud`` (a phrase), or None when it matches or is unknown.

    A recorded ``source`` matches the cloud's source, its file, or any of ``names`` (e.g. the
    suite's source string)."""
    if recorded is None:
        return None
    if recorded.n_features is not None and int(recorded.n_features) != cloud.n_total:
        return f"{recorded.n_features} features but the SAE has {cloud.n_total}"
    if recorded.d_model is not None and int(recorded.d_model) != cloud.d_model:
        return f"d_model {recorded.d_model} but the SAE has d_model {cloud.d_model}"
    if recorded.fingerprint is not None and recorded.fingerprint != cloud.fingerprint():
        return "a different SAE fingerprint (other decoder weights)"
    prov = cloud.provenance
    if recorded.path and prov.path:
        if not _same_place(recorded.path, prov.path):
            return f"SAE file {recorded.path} but the SAE is {prov.path}"
    elif recorded.source and not any(_same_place(recorded.source, s) for s in (prov.source, prov.path, *names) if s):
        return f"source {recorded.source!r} but the SAE is {prov.source!r}"
    return None


# ----------------------------------------------------------------------------------------------
# the inputs
# ----------------------------------------------------------------------------------------------
@dataclass
class FiringInput:
    """Which features fired in which blocks of text (one layer of a harvest).

    Attributes
    ----------
    matrix : scipy sparse matrix, ndarray, or a callable returning one
        ``[n_blocks, n_features]``, nonzero where a feature fired; a callable is called only when
        the layer is computed (not when a checkpointed layer is reused).
    fingerprint : str
        Identity and content of the firing data (e.g. the harvest's fingerprint and shards); part
        of the layer's checkpoint fingerprint.
    sae : SaeIdentity, optional
        The SAE the harvest encoded with (at least ``n_features``, the matrix's column count).
    origin : str
        How to name this input in messages (``--harvest DIR``).
    """

    matrix: Any
    fingerprint: str
    sae: SaeIdentity | None = None
    origin: str = "firing"

    def load(self):
        """The firing matrix (calls ``matrix`` when it is a callable)."""
        m = self.matrix() if callable(self.matrix) else self.matrix
        if getattr(m, "ndim", 0) != 2:
            raise InputError(f"{self.origin}: expected a 2-D blocks x features firing matrix. "
                             f"Got {type(m).__name__} instead.")
        return m


@dataclass
class DashboardInput:
    """Feature dashboards of one layer (a harvest's :class:`~featuregeo.io.harvest.dashboards.FeatureDashboards`).

    Attributes
    ----------
    data : FeatureDashboards or a callable returning one
        Called (once) only when the layer is written.
    fingerprint : str
        Identity and content (e.g. the harvest's fingerprint and shards).
    sae : SaeIdentity, optional
    origin : str
    """

    data: Any
    fingerprint: str
    sae: SaeIdentity | None = None
    origin: str = "dashboards"

    def load(self):
        """The dashboards (calls ``data`` the first time when it is a callable)."""
        if callable(self.data):
            self.data = self.data()
        return self.data


@dataclass
class LobeSummary:
    """One lobe partition's statistics (a row of ``lobes.csv``); None where not recorded."""

    affinity: str
    n_clusters: int
    n_lobes: int | None = None
    ami: float | None = None
    ami_null_mean: float | None = None
    ami_sigma: float | None = None
    ami_p: float | None = None
    logreg_bal_acc: float | None = None
    logreg_sigma: float | None = None
    logreg_p: float | None = None
    genre_cramers_v: float | None = None


@dataclass
class LobesInput:
    """Lobe labels of one layer.

    Attributes
    ----------
    feature_ids : ndarray of int
        The features the lobes were computed on.
    labels : dict
        ``{affinity: {n_clusters: int array aligned with feature_ids}}``.
    summaries : list of LobeSummary
    sae : SaeIdentity, optional
    origin : str
    """

    feature_ids: np.ndarray
    labels: dict[str, dict[int, np.ndarray]]
    summaries: list[LobeSummary] = field(default_factory=list)
    sae: SaeIdentity | None = None
    origin: str = "lobes"


@dataclass
class Crystal:
    """One crystal: feature ids ``a, b, c, d`` with ``b - a ≈ d - c``."""

    rank: int
    a: int
    b: int
    c: int
    d: int
    cosine: float | None
    kind: str
    length_ratio: float | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        self.cosine = finite_or_none(self.cosine)
        self.length_ratio = finite_or_none(self.length_ratio)
        self.score = finite_or_none(self.score)

    @property
    def ids(self) -> tuple[int, int, int, int]:
        return (self.a, self.b, self.c, self.d)


@dataclass
class CrystalsInput:
    """The crystals found among one layer's features (in rank order)."""

    rows: list[Crystal]
    sae: SaeIdentity | None = None
    origin: str = "crystals"


@dataclass
class GalaxyInput:
    """The galaxy-scale record of one layer: decoder spectrum and its power-law fit.

    Attributes
    ----------
    eigenvalues : ndarray
        Eigenvalues of the decoder rows' covariance, descending.
    slope, r2, null_slope, entropy_excess : float or None
        Power-law slope over ``fit_ranks``, its r², the slope of a Gaussian null cloud, and the
        clustering-entropy excess (nats).
    slope_ci : tuple of float, optional
        The slope's 95 % interval (row bootstrap; it surrounds ``slope_corrected`` when there is one).
    slope_corrected : float, optional
        The slope with its finite-sample bias removed (:mod:`featuregeo.tl.galaxy.bias`): the exponent
        to quote.
    fit_ranks : tuple of int, optional
    null_eigenvalues : ndarray, optional
    sae : SaeIdentity, optional
    origin : str
    """

    eigenvalues: np.ndarray
    slope: float | None = None
    slope_ci: tuple[float, float] | None = None
    slope_corrected: float | None = None
    fit_ranks: tuple[int, int] | None = None
    r2: float | None = None
    null_slope: float | None = None
    entropy_excess: float | None = None
    null_eigenvalues: np.ndarray | None = None
    sae: SaeIdentity | None = None
    origin: str = "galaxy"

    def __post_init__(self) -> None:
        for name in ("slope", "slope_corrected", "r2", "null_slope", "entropy_excess"):
            setattr(self, name, finite_or_none(getattr(self, name)))
        if self.slope_ci is not None:
            ci = tuple(finite_or_none(x) for x in self.slope_ci)
            self.slope_ci = None if None in ci or len(ci) != 2 else ci
        if self.fit_ranks is not None:
            self.fit_ranks = tuple(int(x) for x in self.fit_ranks)


@dataclass
class LayerInputs:
    """Everything but the decoder rows that the atlas shows for one layer (all optional)."""

    firing: FiringInput | None = None
    lobes: LobesInput | None = None
    crystals: CrystalsInput | None = None
    galaxy: GalaxyInput | None = None
    labels: dict[int, str] = field(default_factory=dict)
    dashboards: DashboardInput | None = None

    def fingerprint(self) -> str:
        """Identity and content of these inputs (firing and dashboards by their declared fingerprints)."""
        return fingerprint(
            None if self.firing is None else [self.firing.fingerprint, content_fingerprint(self.firing.sae)],
            None if self.dashboards is None else [self.dashboards.fingerprint, content_fingerprint(self.dashboards.sae)],
            None if self.lobes is None else content_fingerprint(self.lobes),
            None if self.crystals is None else content_fingerprint(self.crystals),
            None if self.galaxy is None else content_fingerprint(self.galaxy),
            sorted((int(k), str(v)) for k, v in self.labels.items()))


@dataclass
class AtlasInputs:
    """The inputs of every layer: given up front (``layers``) or made on demand (``provider``).

    Attributes
    ----------
    layers : dict
        ``{layer: LayerInputs}``; layers not listed have no extra inputs.
    provider : callable, optional
        ``provider(layer, cloud) -> LayerInputs``, used for layers not in ``layers`` (the pipeline
        reads label files per layer, matched through the cloud's Neuronpedia id).
    figures : list of path
        Suite-level figures copied into the site's ``figures/`` and shown under the layer's spectrum.

    Examples
    --------
    >>> AtlasInputs({2: LayerInputs(labels={0: "the"})}).for_layer(2, None).labels
    {0: 'the'}
    """

    layers: dict[int, LayerInputs] = field(default_factory=dict)
    provider: Callable[[int, Any], LayerInputs] | None = None
    figures: list[Path] = field(default_factory=list)

    def for_layer(self, layer: int, cloud) -> LayerInputs:
        if layer in self.layers:
            return self.layers[layer]
        if self.provider is not None:
            return self.provider(layer, cloud)
        return LayerInputs()


def check_layer_inputs(layer: int, cloud, inputs: LayerInputs, names: tuple[str, ...] = ()) -> None:
    """Refuse inputs drawn from another SAE than ``cloud`` (one-line InputError naming the input).

    Checks each input's recorded :class:`SaeIdentity` (feature count, d_model, fingerprint,
    file/source), that lobe and crystal feature ids exist in the SAE, and that lobe label arrays
    are aligned with their feature ids.  Cheap: nothing is loaded.
    """
    where = f"layer {layer}"
    for inp in (inputs.firing, inputs.lobes, inputs.crystals, inputs.galaxy, inputs.dashboards):
        if inp is None:
            continue
        why = sae_mismatch(inp.sae, cloud, names)
        if why is not None:
            raise InputError(f"{inp.origin}: {where} was computed on an SAE with {why} "
                             f"({cloud.provenance.source}); expected inputs computed on the SAE drawn")
    n = cloud.n_total
    lob = inputs.lobes
    if lob is not None:
        fids = np.asarray(lob.feature_ids)
        if fids.size and (fids.min() < 0 or fids.max() >= n):
            raise InputError(f"{lob.origin}: {where} has feature id {int(fids.max())} but the SAE "
                             f"({cloud.provenance.source}) has {n} features; expected lobes of the SAE drawn")
        for aff, per_k in lob.labels.items():
            for k, lab in per_k.items():
                if np.shape(lab) != fids.shape:
                    raise InputError(f"{lob.origin}: {where} labels for {aff!r}, k={k} have shape {np.shape(lab)} "
                                     f"but there are {fids.size} feature ids; expected one label per feature")
    cry = inputs.crystals
    if cry is not None and cry.rows:
        top = max(max(c.ids) for c in cry.rows)
        low = min(min(c.ids) for c in cry.rows)
        if low < 0 or top >= n:
            raise InputError(f"{cry.origin}: {where} has a crystal with feature id {top if top >= n else low} but "
                             f"the SAE ({cloud.provenance.source}) has {n} features; expected crystals of the SAE drawn")
    gal = inputs.galaxy
    if gal is not None and np.size(gal.eigenvalues) > cloud.d_model:
        raise InputError(f"{gal.origin}: {where} has {np.size(gal.eigenvalues)} eigenvalues but the SAE has "
                         f"d_model {cloud.d_model}; expected the galaxy of the SAE drawn")


__all__ = ["AtlasInputs", "LayerInputs", "FiringInput", "DashboardInput", "LobesInput", "LobeSummary", "Crystal", "CrystalsInput",
           "GalaxyInput", "SaeIdentity", "check_layer_inputs", "sae_mismatch", "finite_or_none",
           "content_fingerprint"]
