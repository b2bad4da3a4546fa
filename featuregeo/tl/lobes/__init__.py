"""Brain scale: functional lobes from feature co-occurrence, and the test that function is spatial.

The analysis runs in four stages, one module each:

1. :mod:`~featuregeo.tl.lobes.cooccurrence` — exact pair counts of which features fire together in
   blocks of text (:func:`cooccurrence`);
2. :mod:`~featuregeo.tl.lobes.affinity` — five co-occurrence affinities (:func:`affinity`) and the
   angular affinity of decoder rows (:func:`angular_affinity`);
3. :mod:`~featuregeo.tl.lobes.spectral` — one spectral embedding per affinity and k-means for every
   n_clusters (:class:`SpectralSweep`);
4. :mod:`~featuregeo.tl.lobes.stats` — AMI between co-occurrence and geometry lobes against a
   permutation null (:func:`ami_test`), logistic regression from decoder rows against random
   geometries (:func:`logreg_test`), and held-out genre x lobe tables (:func:`lobe_genre_table`).

:func:`analyze` runs all of it for every layer of a :class:`~featuregeo.io.harvest.Harvest`
against a :class:`~featuregeo.core.data.Suite` (one checkpoint unit per layer) and returns a
:class:`LobesResult`; :func:`analyze_firing` is the one-layer core on arrays.

Examples
--------
>>> from featuregeo.tl import lobes
>>> params = lobes.LobesParams(affinities=("phi",), n_clusters=(2, 4, 8))     # doctest: +SKIP
>>> res = lobes.analyze(Harvest("hv"), open_suite("default"), params)          # doctest: +SKIP
>>> res.layer(6).record("phi", 8).ami_sigma                                    # doctest: +SKIP

References
----------
Li et al., "The Geometry of Concepts: Sparse Autoencoder Feature Structure", Entropy 27(4):344 (2025).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud, Suite
from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint, say
from featuregeo.io.harvest import Harvest
from featuregeo.tl.lobes.affinity import Affinity, AffinitySummary, affinity, angular_affinity, unit_decoder_rows
from featuregeo.tl.lobes.common import AFFINITIES, DEFAULT_N_CLUSTERS, DEFAULT_TOP_K, GRAPH_DENSE_MAX, Firing, seed_int
from featuregeo.tl.lobes.cooccurrence import Cooccurrence, CooccurrenceSummary, cooccurrence
from featuregeo.tl.lobes.results import (GEOMETRY, RECORD_KEYS, Exclusions, LobesLayer, LobesParams, LobesResult,
                                         LobeStats)
from featuregeo.tl.lobes.spectral import Embedding, EmbeddingSummary, SpectralSweep, spectral_embedding, spectral_sweep
from featuregeo.tl.lobes.stats import (AmiTest, GenreTable, LogregTest, ami_test, lobe_genre_table, logreg_test,
                                       split_by_document)

Progress = Callable[[str], Any] | None


# ----------------------------------------------------------------------------------------------
# one layer
# ----------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """Validated inputs of one layer."""

    train: Firing
    held: Firing | None
    genres_held: np.ndarray | None
    ids: np.ndarray
    x: np.ndarray
    n_features: int
    exclusions: Exclusions
    ks: list[int]
    skipped: list[int]
    notes: list[str]


def _as_cloud(cloud: Any) -> FeatureCloud:
    if isinstance(cloud, FeatureCloud):
        return cloud
    x = np.asarray(cloud)
    if x.ndim != 2:
        raise InputError(f"cloud: expected a FeatureCloud or a 2-D array [n_features, d_model]. "
                         f"Got shape {x.shape} instead.")
    return FeatureCloud.from_array(x.astype(np.float32, copy=False))


def _split(f: Firing, doc_ids: Any, genres: Any, params: LobesParams, notes: list[str]):
    """(train, held-out firing or None, held-out genres or None)."""
    if (doc_ids is None) != (genres is None):
        raise InputError("doc_ids, genres: expected both (each block's document and genre) or neither")
    if doc_ids is None:
        return f, None, None
    d, g = np.asarray(doc_ids), np.asarray(genres).astype(str)
    for name, a in (("doc_ids", d), ("genres", g)):
        if a.shape != (f.n_blocks,):
            raise InputError(f"{name}: expected one entry per block ({f.n_blocks}). Got shape {a.shape} instead.")
    if params.heldout_fraction == 0:
        notes.append("heldout_fraction=0: no held-out blocks, no genre x lobe table")
        return f, None, None
    tr, he = split_by_document(d, params.heldout_fraction, seed=params.seed)
    if len(set(g[he].tolist())) < 2:
        notes.append(f"a single genre in the held-out blocks ({g[he][0]!r}): genre x lobe table skipped")
        return f.rows(tr), f.rows(he), None
    return f.rows(tr), f.rows(he), g[he]


def _prepare(firing: Any, cloud: Any, params: LobesParams, doc_ids: Any, genres: Any) -> _Prepared:
    f = Firing(firing, "firing")
    cloud = _as_cloud(cloud)
    if cloud.n_total != f.n_features:
        raise InputError(f"firing: the harvest has {f.n_features} features (columns) but the SAE has "
                         f"{cloud.n_total}; expected the harvest of this SAE")
    ids_all = np.asarray(cloud.feature_ids, dtype=np.int64)
    notes: list[str] = []
    train, held, genres_held = _split(f, doc_ids, genres, params, notes)
    counts = train.column_counts()[ids_all]
    use = (counts > 0) & (counts < train.n_blocks)
    exclusions = Exclusions(decoder_invalid=int(cloud.n_excluded), never_fired=int((counts == 0).sum()),
                            always_fired=int((counts >= train.n_blocks).sum()))
    ids = ids_all[use]
    if ids.size < 3:
        raise InputError(f"firing: only {ids.size} usable feature(s) ({exclusions}); expected at least 3 features "
                         "that fire in some but not all training blocks")
    ks_all = sorted(set(params.n_clusters))
    ks, skipped = [k for k in ks_all if k < ids.size], [k for k in ks_all if k >= ids.size]
    if not ks:
        raise InputError(f"n_clusters: every value is >= the {ids.size} usable features; expected values below "
                         f"{ids.size}. Got {ks_all} instead.")
    if skipped:
        notes.append(f"n_clusters {skipped} skipped: not below the {ids.size} usable features")
    cap = params.logreg_max_clusters
    if cap is not None and any(k > cap for k in ks):
        notes.append(f"logistic regression skipped above logreg_max_clusters={cap}")
    x = cloud.vectors[use]
    return _Prepared(train=train.columns(ids), held=None if held is None else held.columns(ids),
                     genres_held=genres_held, ids=ids, x=x, n_features=f.n_features, exclusions=exclusions, ks=ks,
                     skipped=skipped, notes=notes)


def _sweep(aff: Affinity, ks: list[int], params: LobesParams) -> SpectralSweep:
    return SpectralSweep(ks, n_init=params.n_init, row_normalize=params.row_normalize, solver=params.solver,
                         seed=params.seed, max_components=params.max_components,
                         kmeans=params.kmeans).fit(aff, overwrite=True)


def graph_kind(params: LobesParams, storage: str, n_usable: int) -> str:
    """``"dense"`` or ``"topk"``: the affinity matrices ``params.graph`` asks for (see :class:`LobesParams`)."""
    if params.graph != "auto":
        return params.graph
    return "topk" if storage == "topk" or n_usable > GRAPH_DENSE_MAX else "dense"


def _genre(p: _Prepared, name: str, k: int, labels: np.ndarray, params: LobesParams,
           tables: list[GenreTable]) -> GenreTable | None:
    if p.genres_held is None:
        return None
    gt = replace(lobe_genre_table(p.held, p.genres_held, labels, n_permutations=params.genre_permutations,
                                  seed=seed_int(params.seed, 41, k)), affinity=name, n_clusters=k)
    if k <= params.genre_table_max_clusters:
        tables.append(gt)
    return gt


def _stats(p: _Prepared, kind: str, ai: int, k: int, lab: np.ndarray, geo: np.ndarray, params: LobesParams,
           tables: list[GenreTable]) -> LobeStats:
    """The AMI, logistic-regression and genre statistics of one labeling."""
    am = ami_test(lab, geo, n_permutations=params.n_permutations, seed=seed_int(params.seed, 21, ai, k))
    rec = LobeStats(affinity=kind, n_clusters=k, n_lobes=int(lab.max()) + 1, ami=am.ami,
                    ami_null_mean=am.null_mean, ami_null_std=am.null_std, ami_sigma=am.sigma, ami_p=am.p)
    if params.logreg_max_clusters is None or k <= params.logreg_max_clusters:
        lr = logreg_test(p.x, lab, test_size=params.logreg_test_size, folds=params.logreg_folds,
                         null_repeats=params.logreg_null_repeats, seed=seed_int(params.seed, 31, k),
                         max_iter=params.logreg_max_iter, split_repeats=params.logreg_split_repeats)
        rec.logreg_bal_acc, rec.logreg_null_mean, rec.logreg_null_std = lr.bal_acc, lr.null_mean, lr.null_std
        rec.logreg_sigma, rec.logreg_p, rec.logreg_n_used = lr.sigma, lr.p, lr.n_used
        rec.logreg_not_converged = lr.n_not_converged
        rec.logreg_bal_acc_sd, rec.logreg_sigma_null_only = lr.bal_acc_sd, lr.sigma_null_only
        if lr.note:
            p.notes.append(f"{kind}, {k} lobes: logistic regression {lr.note}")
    gt = _genre(p, kind, k, lab, params, tables)
    if gt is not None:
        rec.genre_chi2, rec.genre_p, rec.genre_cramers_v = gt.chi2, gt.p, gt.cramers_v
        rec.genre_majority = dict(gt.majority)
        rec.genre_p_method, rec.genre_p_chi2, rec.genre_min_expected = gt.p_method, gt.p_chi2, gt.min_expected
    return rec


def _map_2d(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    u = unit_decoder_rows(x)
    if u.shape[0] < 3 or u.shape[1] < 2:
        return np.zeros((u.shape[0], 2), dtype=np.float32)
    return PCA(2, random_state=seed).fit_transform(u).astype(np.float32)


def analyze_firing(firing: Any, cloud: FeatureCloud | np.ndarray, params: LobesParams | None = None, *,
                   doc_ids: Sequence | np.ndarray | None = None, genres: Sequence[str] | np.ndarray | None = None,
                   layer: int | None = None, progress: Progress = None, client: Any = None) -> LobesLayer:
    """Functional lobes of one SAE from its firing matrix, and the tests that they are spatial.

    Parameters
    ----------
    firing : scipy sparse or ndarray of shape (n_blocks, n_features), 0/1
        Which features fired in which block (``Harvest.firing(layer)``).
    cloud : FeatureCloud or ndarray of shape (n_features, d_model)
        The SAE's decoder rows; its feature count must equal the firing matrix's columns.  Invalid
        rows (NaN/inf, zero) are excluded and counted.
    params : LobesParams, optional
        Default ``LobesParams()``; validated first.
    doc_ids, genres : array-like of length n_blocks, optional
        Each block's document and genre.  With both, ``params.heldout_fraction`` of the documents
        are held out (whole documents, seeded), the lobes are found on the rest, and every labeling
        gets a held-out genre x lobe table.  Without them all blocks are used and there is no table.
    layer : int, optional
        Recorded in the result.
    progress : callable, optional
        Receives one line of text per stage.
    client : distributed.Client, optional
        Count co-occurrences on a Dask cluster (:func:`cooccurrence`); the counts are the same.

    Returns
    -------
    LobesLayer

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> groups = np.repeat([0, 1], 10)
    >>> genre = rng.integers(0, 2, 300)
    >>> firing = rng.random((300, 20)) < np.where(groups[None] == genre[:, None], 0.4, 0.02)
    >>> x = np.eye(2)[groups] + 0.1 * rng.standard_normal((20, 2))
    >>> p = LobesParams(affinities=("jaccard",), n_clusters=(2,), n_permutations=20, logreg_null_repeats=0)
    >>> rec = analyze_firing(firing, x, p).record("jaccard", 2)
    >>> round(rec.ami, 2)
    1.0
    """
    t0 = time.perf_counter()
    params = (params if params is not None else LobesParams()).validate()
    p = _prepare(firing, cloud, params, doc_ids, genres)
    tag = "lobes" if layer is None else f"lobes layer {layer}"
    say(progress, f"{tag}: {p.ids.size} usable features, {p.train.n_blocks} training blocks, n_clusters {p.ks}")
    co = cooccurrence(p.train, method=params.method, storage=params.storage, memory_budget=params.memory_budget,
                      top_k=params.top_k, rank_by=params.affinities, n_threads=params.n_threads, client=client)
    if co.storage == "topk":
        p.notes.append(co.note)
    graph = graph_kind(params, co.storage, p.ids.size)
    if graph == "topk" and co.storage == "dense":
        p.notes.append(f"affinities as top-{params.top_k} graphs per feature ({p.ids.size} features)")
    tables: list[GenreTable] = []
    gs = _sweep(angular_affinity(p.x, storage=graph, top_k=params.top_k), p.ks, params)
    embeddings = [gs.embedding_.summary(GEOMETRY)]
    labels = {GEOMETRY: np.stack([gs.labels_[k] for k in p.ks]).astype(np.int32)}
    for k in p.ks:
        _genre(p, GEOMETRY, k, gs.labels_[k], params, tables)
    aff_info: list[AffinitySummary] = []
    records: list[LobeStats] = []
    for ai, kind in enumerate(params.affinities):
        say(progress, f"{tag}: {kind} affinity, embedding and statistics")
        aff = affinity(co, kind, phi_shift=params.phi_shift, top_k=params.top_k, graph=graph)
        aff_info.append(aff.summary())
        sw = _sweep(aff, p.ks, params)
        del aff
        embeddings.append(sw.embedding_.summary(kind))
        labels[kind] = np.stack([sw.labels_[k] for k in p.ks]).astype(np.int32)
        records += [_stats(p, kind, ai, k, sw.labels_[k], gs.labels_[k], params, tables) for k in p.ks]
    labels = {**{a: labels[a] for a in params.affinities}, GEOMETRY: labels[GEOMETRY]}
    return LobesLayer(
        layer=layer, n_features=p.n_features, feature_ids=p.ids, n_blocks=p.train.n_blocks,
        n_blocks_heldout=0 if p.held is None else p.held.n_blocks, d_model=int(p.x.shape[1]),
        exclusions=p.exclusions, cooccurrence=co.summary(), affinities=aff_info, embeddings=embeddings,
        n_clusters=list(p.ks), skipped_n_clusters=list(p.skipped), lobe_labels=labels, records=records,
        genre_tables=tables, map_2d=_map_2d(p.x, params.seed), notes=list(dict.fromkeys(p.notes)),
        seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# every layer of a harvest
# ----------------------------------------------------------------------------------------------
def harvest_width(harvest: Harvest, layer: int) -> int:
    """Features (firing columns) the harvest recorded for ``layer`` (from ``harvest.json``, else the shards)."""
    saes = harvest.config.get("saes") if isinstance(harvest.config, dict) else None
    entry = saes.get(str(layer)) if isinstance(saes, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("d_sae"), int):
        return int(entry["d_sae"])
    return int(harvest.firing(layer).shape[1])


def harvest_fingerprint(harvest: Harvest) -> str:
    """Identity of a harvest for checkpoints: its configuration fingerprint and its number of blocks."""
    fp = harvest.manifest.get("fingerprint") if isinstance(harvest.manifest, dict) else None
    if not isinstance(fp, str) or not fp:
        raise InputError(f"{harvest.path / 'harvest.json'}: no fingerprint; expected a harvest.json written by "
                         "`featuregeo harvest`")
    return fingerprint(fp, harvest.n_blocks)


def check_inputs(harvest: Harvest, suite: Suite, layers: Sequence[int] | None = None) -> list[int]:
    """The layers to analyse, after checking them against the harvest and the suite.

    Every layer must have firing in the harvest and an SAE in the suite, and the SAE's feature count
    must equal the harvest's (one-line InputError otherwise).  Loads each layer's decoder header.

    Parameters
    ----------
    harvest : Harvest
    suite : Suite
    layers : sequence of int, optional
        Default: every SAE layer of the harvest.

    Returns
    -------
    list of int
    """
    have = list(harvest.sae_layers)
    layers = have if layers is None else [int(x) for x in layers]
    if not layers:
        raise InputError(f"--layers: {harvest.path} records firing for no layer; expected a harvest with SAEs")
    missing = [x for x in layers if x not in have]
    if missing:
        raise InputError(f"--layers: {missing} have no firing in {harvest.path}; expected some of {have}")
    not_in_suite = [x for x in layers if x not in suite]
    if not_in_suite:
        raise InputError(f"--layers: {not_in_suite} are not in {suite.name}; expected some of {suite.layers}")
    for layer in layers:
        n_sae, n_fire = suite.load(layer).n_total, harvest_width(harvest, layer)
        if n_sae != n_fire:
            raise InputError(f"{harvest.path}: layer {layer} of the harvest has {n_fire} features but the SAE "
                             f"{suite.name} has {n_sae}; expected the harvest of this SAE")
    return layers


def analyze(harvest: Harvest, suite: Suite, params: LobesParams | None = None, *,
            layers: Sequence[int] | None = None, checkpoint: Checkpoint | None = None,
            progress: Progress = None, client: Any = None) -> LobesResult:
    """Lobes for every SAE layer of a harvest.

    Each layer is one checkpoint unit (``layer_L``) whose fingerprint covers the parameters, the
    harvest (configuration fingerprint and number of blocks), the SAE (``cloud.fingerprint()``) and
    the layer, so a rerun reuses finished layers and recomputes any whose inputs changed.

    Parameters
    ----------
    harvest : Harvest
        Firing of each block, with each block's document and genre (for the held-out split).
    suite : Suite
        The SAEs whose features the harvest recorded.
    params : LobesParams, optional
        Default ``LobesParams()``; validated before anything is loaded.
    layers : sequence of int, optional
        Default: every SAE layer of the harvest.  See :func:`check_inputs`.
    checkpoint : Checkpoint, optional
    progress : callable, optional
    client : distributed.Client, optional
        Count co-occurrences on a Dask cluster (same counts; see :func:`cooccurrence`).

    Returns
    -------
    LobesResult
    """
    params = (params if params is not None else LobesParams()).validate()
    layers = check_inputs(harvest, suite, layers)
    hfp = harvest_fingerprint(harvest)
    out: list[LobesLayer] = []
    for layer in layers:
        cloud = suite.load(layer)
        fp = fingerprint("lobes", params.fingerprint(), hfp, cloud.fingerprint(), layer)

        def compute(layer: int = layer, cloud: FeatureCloud = cloud) -> LobesLayer:
            blocks = harvest.blocks
            return analyze_firing(harvest.firing(layer), cloud, params, doc_ids=blocks["doc_id"],
                                  genres=blocks["genre"], layer=layer, progress=progress, client=client)

        if checkpoint is None:
            rec = compute()
        else:
            n_reused = len(checkpoint.reused)
            rec = checkpoint.result(f"layer_{layer}", fp, compute, LobesLayer)
            if len(checkpoint.reused) > n_reused:
                say(progress, f"lobes layer {layer}: reused from {checkpoint.directory}")
        say(progress, f"lobes layer {layer}: {rec.n_usable} features, {rec.seconds:.1f} s")
        out.append(rec)
    return LobesResult(params=params, layers=out, source=suite.name, harvest=str(harvest.manifest.get("fingerprint")))


__all__ = [
    "AFFINITIES", "DEFAULT_N_CLUSTERS", "DEFAULT_TOP_K", "GEOMETRY", "RECORD_KEYS",
    "LobesParams", "LobesLayer", "LobesResult", "LobeStats", "Exclusions",
    "analyze", "analyze_firing", "check_inputs", "graph_kind", "harvest_width", "harvest_fingerprint",
    "Cooccurrence", "CooccurrenceSummary", "cooccurrence",
    "Affinity", "AffinitySummary", "affinity", "angular_affinity",
    "Embedding", "EmbeddingSummary", "spectral_embedding", "SpectralSweep", "spectral_sweep",
    "AmiTest", "LogregTest", "GenreTable", "ami_test", "logreg_test", "lobe_genre_table", "split_by_document",
]
