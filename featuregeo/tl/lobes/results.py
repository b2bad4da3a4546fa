"""Parameters and results of the lobes analysis (:class:`LobesParams`, :class:`LobesLayer`, :class:`LobesResult`).

Re-exported by :mod:`featuregeo.tl.lobes`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, Result, check_choice, check_float, check_int
from featuregeo.core.util import fingerprint
from featuregeo.tl.lobes.affinity import AffinitySummary
from featuregeo.tl.lobes.common import (AFFINITIES, DEFAULT_MAX_COMPONENTS, DEFAULT_MEMORY_BUDGET, DEFAULT_N_CLUSTERS,
                                        DEFAULT_TOP_K, ArrayEq, check_n_clusters)
from featuregeo.tl.lobes.cooccurrence import CooccurrenceSummary
from featuregeo.tl.lobes.spectral import EmbeddingSummary
from featuregeo.tl.lobes.stats import GenreTable

#: the name of the angular (decoder-geometry) labeling next to the co-occurrence affinities
GEOMETRY = "geometry"


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected True or False. Got {value!r} instead.")


@dataclass(frozen=True)
class LobesParams(Params):
    """Every tuning parameter of the lobes analysis (stored with every result).

    Parameters
    ----------
    affinities : tuple of str, default=all five
        Co-occurrence affinities to cluster: ``phi``, ``jaccard``, ``dice``, ``overlap``,
        ``simple_matching``.
    n_clusters : tuple of int, default=(2, 3, 4, 8, ..., 1024)
        Lobe counts of the sweep (each >= 2); values not below the number of usable features are
        skipped with a note.
    n_permutations : int, default=100
        Size of the AMI permutation null.
    logreg_null_repeats : int, default=20
        Random Gaussian geometries in the logistic-regression null (0: no null).
    logreg_max_clusters : int or None, default=64
        No logistic regression above this many lobes (None: always).
    logreg_folds : int or None, default=None
        Stratified cross-validation folds instead of one ``logreg_test_size`` split.
    logreg_test_size : float, default=0.2
    logreg_max_iter : int, default=200
    logreg_split_repeats : int, default=10
        Independent stratified splits of the logistic regression; its sigma compares the accuracy's
        distribution over splits with the null's.
    genre_permutations : int, default=2000
        Permutations of the held-out genre table's permutation p (used whenever an expected count is < 5).
    heldout_fraction : float in [0, 1), default=0.2
        Fraction of documents held out for the genre x lobe table (0: no held-out blocks, no table).
    genre_table_max_clusters : int, default=16
        Full genre tables are kept for n_clusters up to this (the statistics are kept for all).
    phi_shift : bool, default=True
        ``phi + 1`` (the paper's convention) instead of clipping negative phi to 0.
    n_init : int, default=3
        k-means restarts per n_clusters.
    row_normalize : bool, default=False
        Ng-Jordan-Weiss row normalisation of the embedding.
    solver : {"auto", "dense", "arpack"}, default="auto"
    method : {"auto", "sparse", "dense"}, default="auto"
        The co-occurrence product.
    storage : {"auto", "dense", "topk"}, default="auto"
    memory_budget : int, default=8 GiB
        Bytes allowed for dense pair matrices; beyond it counts are stored as top-k.
    top_k : int, default=256
        Partners kept per feature in top-k storage and in top-k affinity graphs.
    graph : {"auto", "dense", "topk"}, default="auto"
        Affinity matrices: ``"topk"`` keeps each feature's ``top_k`` strongest partners per affinity
        (symmetrised, sparse; never an n x n matrix), ``"dense"`` the full matrix (needs dense counts).
        ``"auto"``: top-k when the counts are top-k or there are more than
        :data:`~featuregeo.tl.lobes.common.GRAPH_DENSE_MAX` usable features, dense otherwise.
    max_components : int or None, default=256
        Eigenvectors of each spectral embedding (None: the largest n_clusters, scikit-learn's
        convention); larger n_clusters cluster all of them.
    kmeans : {"auto", "full", "fast"}, default="auto"
        ``"full"``: k-means++ and ``n_init`` restarts; ``"fast"``: k-means++ seeded on a sample and one
        Lloyd run; ``"auto"``: full up to 64 clusters, fast above.
    n_threads : int or None, default=None
        Threads for the sparse product (None: all cores).  Does not change results (not fingerprinted).
    seed : int, default=0
        Seeds k-means, ARPACK, the AMI null, the logistic-regression splits and null, and the held-out split.

    Examples
    --------
    >>> p = LobesParams(affinities=("phi",), n_clusters=(2, 4), n_permutations=20).validate()
    >>> p.n_clusters
    (2, 4)
    """

    affinities: tuple[str, ...] = AFFINITIES
    n_clusters: tuple[int, ...] = DEFAULT_N_CLUSTERS
    n_permutations: int = 100
    logreg_null_repeats: int = 20
    logreg_max_clusters: int | None = 64
    logreg_folds: int | None = None
    logreg_test_size: float = 0.2
    logreg_max_iter: int = 200
    logreg_split_repeats: int = 10
    genre_permutations: int = 2000
    heldout_fraction: float = 0.2
    genre_table_max_clusters: int = 16
    phi_shift: bool = True
    n_init: int = 3
    row_normalize: bool = False
    solver: str = "auto"
    method: str = "auto"
    storage: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    top_k: int = DEFAULT_TOP_K
    graph: str = "auto"
    max_components: int | None = DEFAULT_MAX_COMPONENTS
    kmeans: str = "auto"
    n_threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("affinities", "n_clusters"):
            v = getattr(self, name)
            if isinstance(v, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(v.tolist() if isinstance(v, np.ndarray) else v))

    def validate(self) -> "LobesParams":
        """Check every field; a one-line InputError names the first bad one."""
        if isinstance(self.affinities, str) or not isinstance(self.affinities, tuple) or not self.affinities:
            raise InputError(f"affinities: expected a non-empty tuple of {', '.join(AFFINITIES)}. "
                             f"Got {self.affinities!r} instead.")
        for a in self.affinities:
            check_choice("affinities", a, AFFINITIES)
        if len(set(self.affinities)) != len(self.affinities):
            raise InputError(f"affinities: expected each affinity once. Got {list(self.affinities)} instead.")
        check_n_clusters(self.n_clusters)
        check_int("n_permutations", self.n_permutations, minimum=1)
        check_int("logreg_null_repeats", self.logreg_null_repeats, minimum=0)
        check_int("logreg_max_clusters", self.logreg_max_clusters, minimum=2, allow_none=True)
        check_int("logreg_folds", self.logreg_folds, minimum=2, allow_none=True)
        check_float("logreg_test_size", self.logreg_test_size, low=0, high=1, low_open=True, high_open=True)
        check_int("logreg_max_iter", self.logreg_max_iter, minimum=1)
        check_int("logreg_split_repeats", self.logreg_split_repeats, minimum=1)
        check_int("genre_permutations", self.genre_permutations, minimum=0)
        check_float("heldout_fraction", self.heldout_fraction, low=0, high=1, high_open=True)
        check_int("genre_table_max_clusters", self.genre_table_max_clusters, minimum=0)
        _check_bool("phi_shift", self.phi_shift)
        check_int("n_init", self.n_init, minimum=1)
        _check_bool("row_normalize", self.row_normalize)
        check_choice("solver", self.solver, ("auto", "dense", "arpack"))
        check_choice("method", self.method, ("auto", "sparse", "dense"))
        check_choice("storage", self.storage, ("auto", "dense", "topk"))
        check_int("memory_budget", self.memory_budget, minimum=1)
        check_int("top_k", self.top_k, minimum=1)
        check_choice("graph", self.graph, ("auto", "dense", "topk"))
        if self.graph == "dense" and self.storage == "topk":
            raise InputError("graph: a dense affinity needs dense counts; expected graph='auto' or 'topk' with "
                             "storage='topk'")
        check_int("max_components", self.max_components, minimum=1, allow_none=True)
        check_choice("kmeans", self.kmeans, ("auto", "full", "fast"))
        check_int("n_threads", self.n_threads, minimum=1, allow_none=True)
        check_int("seed", self.seed, minimum=0)
        return self

    def fingerprint(self) -> str:
        """Hash of every field that can change a result (``n_threads`` cannot)."""
        d = self.to_dict()
        d.pop("n_threads", None)
        return fingerprint(type(self).__name__, d)


@dataclass
class Exclusions:
    """Features left out of one layer's lobes, by reason.

    Attributes
    ----------
    decoder_invalid : int
        Decoder rows that are NaN/inf or zero (excluded by the FeatureCloud).
    never_fired : int
        Valid features that fired in no training block.
    always_fired : int
        Valid features that fired in every training block.
    """

    decoder_invalid: int = 0
    never_fired: int = 0
    always_fired: int = 0


@dataclass
class LobeStats:
    """The statistics of one lobe labeling (one affinity at one n_clusters) of one layer.

    Attributes
    ----------
    affinity : str
        The co-occurrence affinity clustered.
    n_clusters : int
        Lobes asked for.
    n_lobes : int
        Lobes k-means returned (can be fewer on degenerate embeddings).
    ami : float or None
        AMI between these lobes and the geometry lobes of the same n_clusters.
    ami_null_mean, ami_null_std, ami_sigma, ami_p : float or None
        The permutation null (see :func:`~featuregeo.tl.lobes.stats.ami_test`).
    logreg_bal_acc : float or None
        Held-out balanced accuracy of lobe prediction from decoder rows (None above
        ``logreg_max_clusters`` or when no stratified split is possible).
    logreg_null_mean, logreg_null_std, logreg_sigma, logreg_p : float or None
        The random-Gaussian-geometry null.
    logreg_n_used : int or None
        Features used by the logistic regression.
    logreg_not_converged : int or None
        Fits that hit ``logreg_max_iter``.
    genre_chi2, genre_p, genre_cramers_v : float or None
        Held-out genre x winning-lobe chi-square test (None without held-out genres).
    genre_majority : dict str -> int or None, or None
        Each genre's majority lobe on held-out blocks.
    logreg_bal_acc_sd : float or None
        Spread of the accuracy over ``logreg_split_repeats`` splits (``logreg_sigma`` includes it).
    logreg_sigma_null_only : float or None
        The old sigma, over the null's spread alone.
    genre_p_method : str or None
        ``"chi-square"`` or ``"permutation"`` (used when an expected count is < 5).
    genre_p_chi2, genre_min_expected : float or None
        The asymptotic chi-square p, and the smallest expected count under independence.
    """

    affinity: str
    n_clusters: int
    n_lobes: int
    ami: float | None = None
    ami_null_mean: float | None = None
    ami_null_std: float | None = None
    ami_sigma: float | None = None
    ami_p: float | None = None
    logreg_bal_acc: float | None = None
    logreg_null_mean: float | None = None
    logreg_null_std: float | None = None
    logreg_sigma: float | None = None
    logreg_p: float | None = None
    logreg_n_used: int | None = None
    logreg_not_converged: int | None = None
    genre_chi2: float | None = None
    genre_p: float | None = None
    genre_cramers_v: float | None = None
    genre_majority: dict[str, int | None] | None = None
    logreg_bal_acc_sd: float | None = None
    logreg_sigma_null_only: float | None = None
    genre_p_method: str | None = None
    genre_p_chi2: float | None = None
    genre_min_expected: float | None = None


#: the columns of a lobes table (one row per layer, affinity and n_clusters)
RECORD_KEYS = tuple(LobeStats.__dataclass_fields__)


@dataclass(eq=False)
class LobesLayer(ArrayEq, Result):
    """Lobes of one SAE layer: labels per affinity and n_clusters, their statistics, exclusions.

    Attributes
    ----------
    layer : int or None
        The SAE layer (None for a bare array).
    n_features : int
        Features of the SAE (= firing columns).
    feature_ids : ndarray of int64
        The usable features (valid decoder row; fired in some but not all training blocks), in the
        order of every label array.
    n_blocks, n_blocks_heldout : int
        Training blocks (lobes found) and held-out blocks (genre tables).
    d_model : int
    exclusions : Exclusions
    cooccurrence : CooccurrenceSummary
    affinities : list of AffinitySummary
        One per co-occurrence affinity.
    embeddings : list of EmbeddingSummary
        One per affinity, plus ``"geometry"``.
    n_clusters : list of int
        The n_clusters clustered (rows of every label array).
    skipped_n_clusters : list of int
        Asked for but not below the number of usable features.
    lobe_labels : dict str -> ndarray of int32, shape (len(n_clusters), n_usable)
        Lobe of every usable feature per affinity (``"geometry"`` included) and n_clusters, lobes
        numbered by decreasing size.  Read one row with :meth:`labels`.
    records : list of LobeStats
        One per affinity x n_clusters.
    genre_tables : list of GenreTable
        Held-out genre x lobe tables for n_clusters <= ``genre_table_max_clusters``
        (geometry included).
    map_2d : ndarray of float32, shape (n_usable, 2)
        The first two principal components of the unit decoder rows (for the lobe map).
    notes : list of str
        What was skipped or approximated, in words.
    seconds : float
        Wall time of the layer.
    """

    kind: ClassVar[str] = "lobes_layer"
    layer: int | None
    n_features: int
    feature_ids: np.ndarray
    n_blocks: int
    n_blocks_heldout: int
    d_model: int
    exclusions: Exclusions
    cooccurrence: CooccurrenceSummary
    affinities: list[AffinitySummary] = field(default_factory=list)
    embeddings: list[EmbeddingSummary] = field(default_factory=list)
    n_clusters: list[int] = field(default_factory=list)
    skipped_n_clusters: list[int] = field(default_factory=list)
    lobe_labels: dict[str, np.ndarray] = field(default_factory=dict)
    records: list[LobeStats] = field(default_factory=list)
    genre_tables: list[GenreTable] = field(default_factory=list)
    map_2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float32))
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_usable(self) -> int:
        """Usable features (labelled)."""
        return int(np.asarray(self.feature_ids).size)

    @property
    def labelings(self) -> list[str]:
        """Affinities with labels (co-occurrence ones, then ``"geometry"``)."""
        return list(self.lobe_labels)

    def labels(self, affinity: str, n_clusters: int) -> np.ndarray:
        """Lobe labels (int32) of :attr:`feature_ids` for one affinity (or ``"geometry"``) and n_clusters."""
        if affinity not in self.lobe_labels:
            raise InputError(f"affinity: no labels for {affinity!r}; expected one of {self.labelings}")
        if n_clusters not in self.n_clusters:
            raise InputError(f"n_clusters: expected one of {self.n_clusters}. Got {n_clusters!r} instead.")
        return np.asarray(self.lobe_labels[affinity][self.n_clusters.index(n_clusters)])

    def record(self, affinity: str, n_clusters: int) -> LobeStats:
        """The statistics of one affinity at one n_clusters."""
        for r in self.records:
            if r.affinity == affinity and r.n_clusters == n_clusters:
                return r
        raise InputError(f"record: none for affinity {affinity!r} and n_clusters {n_clusters!r}; expected one of "
                         f"{sorted({(r.affinity, r.n_clusters) for r in self.records})}")

    def genre_table(self, affinity: str, n_clusters: int) -> GenreTable | None:
        """The held-out genre table of one labeling, or None when none was kept."""
        return next((t for t in self.genre_tables if t.affinity == affinity and t.n_clusters == n_clusters), None)

    def rows(self) -> list[dict[str, Any]]:
        """One row per record (affinity x n_clusters), with the layer."""
        return [stats_row(self.layer, r) for r in self.records]


def stats_row(layer: int | None, r: LobeStats) -> dict[str, Any]:
    """A flat table row of one record (``genre_majority`` as ``"genre:lobe;..."``)."""
    row: dict[str, Any] = {"layer": layer}
    for k in RECORD_KEYS:
        v = getattr(r, k)
        if isinstance(v, dict):
            v = ";".join(f"{g}:{'' if lobe is None else lobe}" for g, lobe in v.items())
        row[k] = v
    return row


@dataclass
class LobesResult(Result):
    """Lobes of several layers of one SAE source on one harvest.

    Attributes
    ----------
    params : LobesParams
        The parameters that produced it.
    layers : list of LobesLayer
        One per layer, in the order analysed.
    source : str
        The suite's name (its source string).
    harvest : str
        The harvest's fingerprint (from ``harvest.json``).

    Examples
    --------
    >>> res = LobesResult.load("out/lobes")                       # doctest: +SKIP
    >>> res.layer(6).labels("phi", 8)                              # doctest: +SKIP
    """

    kind: ClassVar[str] = "lobes"
    params: LobesParams = field(default_factory=LobesParams)
    layers: list[LobesLayer] = field(default_factory=list)
    source: str = ""
    harvest: str = ""

    def layer(self, layer: int) -> LobesLayer:
        """The record of one layer."""
        for rec in self.layers:
            if rec.layer == layer:
                return rec
        raise InputError(f"layer: {layer!r} was not analysed; expected one of {[r.layer for r in self.layers]}")

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer, affinity and n_clusters."""
        return [row for rec in self.layers for row in rec.rows()]


__all__ = ["LobesParams", "Exclusions", "LobeStats", "LobesLayer", "LobesResult", "RECORD_KEYS", "GEOMETRY",
           "stats_row"]
