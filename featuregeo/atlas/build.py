"""Feature atlas: a static, offline web map of every layer's SAE features, plus machine-readable tables.

:func:`run_atlas` reads a source (decoder rows) and, optionally, what ``featuregeo lobes``,
``galaxy``, ``harvest`` and the atoms crystal search wrote, and per-feature labels
(:mod:`featuregeo.io.labels`); it writes

* ``index.html`` + ``assets/atlas.js`` + ``assets/atlas.css`` — a site that opens from ``file://``
  with no network: a WebGL scatter (Canvas2D fallback) of a 2-D layout of each layer's decoder
  directions, coloured by lobe; search by id or label; a feature panel; a layer selector; per-layer
  galaxy figures; crystals drawn on demand.  Per-layer data are ``data/layer_L.js`` files loaded by
  ``<script>`` (``fetch`` of local files is blocked on ``file://``), with coordinates and other
  numeric columns as base64 little-endian typed arrays;
* ``features.parquet`` (layer, id, x, y, lobe_<k>..., norm, firing_frequency, n_fired, label,
  cofiring), ``crystals.csv``, ``lobes.csv``, ``galaxy.csv`` and ``atlas.json`` (an :class:`AtlasResult`).

Each finished layer is kept in ``.atlas_layers/`` with a fingerprint of its inputs and parameters,
so an interrupted export resumes and a repeated one reuses finished layers.

The maths here is presentation only: a 2-D layout (:func:`layout_2d`) and co-firing partners
(:func:`cofiring`, one chunked sparse product ``B^T B``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from featuregeo.core.util import atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable
from featuregeo.core.errors import InputError
from featuregeo.core.results import LegacyResult as Result, register

LAYOUTS = ("umap", "tsne", "pca")
ASSETS_DIR = Path(__file__).with_name("assets")
CRYSTAL_COLUMNS = ("rank", "layer", "a", "b", "c", "d", "cosine", "length_ratio", "kind", "score")
TOP_COFIRING = 5
_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# presentation maths
# ----------------------------------------------------------------------------------------------
def layout_2d(vectors: np.ndarray, method: str = "umap", *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D coordinates of decoder directions (cosine geometry: rows are scaled to unit norm first).

    Parameters
    ----------
    vectors : ndarray of shape (n_features, d_model)
    method : {"umap", "tsne", "pca"}, default="umap"
        UMAP (umap-learn, cosine metric), t-SNE (scikit-learn, cosine metric, PCA init) or the first
        two principal components (randomised solver; fast).
    seed : int, default=0
        Random state of the layout; same inputs and seed give identical coordinates.
    n_neighbors : int, default=15
        UMAP neighbourhood size (capped at n_features - 1).

    Returns
    -------
    ndarray of shape (n_features, 2), float32
    """
    if method not in LAYOUTS:
        raise InputError(f"--layout: expected one of {list(LAYOUTS)}. Got {method!r} instead.")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 2:
        raise InputError(f"vectors: expected at least 3 features of at least 2 dimensions. "
                         f"Got shape {x.shape} instead.")
    if not np.isfinite(x).all():
        raise InputError("vectors: expected finite values. Got NaN or inf instead.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1)
    if method == "pca":
        from sklearn.decomposition import PCA

        y = PCA(n_components=2, svd_solver="randomized", random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
        y = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                 random_state=seed).fit_transform(x)
    else:
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state" etc.
            y = umap.UMAP(n_components=2, metric="cosine", n_neighbors=int(min(n_neighbors, x.shape[0] - 1)),
                          random_state=seed, init="spectral" if x.shape[0] > 3 else "random").fit_transform(x)
    return np.ascontiguousarray(y, dtype=np.float32)


def cofiring(firing: Any, top: int = TOP_COFIRING, *,
             max_chunk_entries: int = 2**23) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature firing counts and top co-firing partners from one chunked sparse product ``B^T B``.

    Partners are ranked by Jaccard similarity ``n11 / (n_i + n_j - n11)`` (raw ``n11`` would rank
    the most frequent features first for everyone), ties by ``n11`` then by id; a feature is never
    its own partner and pairs that never co-fire are not listed.

    Parameters
    ----------
    firing : scipy sparse matrix or ndarray (n_blocks, n_features)
        1 where a feature fired in a block.
    top : int, default=5
    max_chunk_entries : int
        Bound on the dense ``chunk x n_features`` slab of counts held at once.

    Returns
    -------
    counts : ndarray (n_features,) int64
    partners : ndarray (n_features, top) int32, -1 where fewer partners exist
    n11 : ndarray (n_features, top) int32, blocks shared with each partner
    """
    from scipy import sparse

    if top < 1:
        raise InputError(f"top: expected a positive integer. Got {top!r} instead.")
    b = sparse.csr_matrix(firing, copy=True)
    b.eliminate_zeros()
    if b.ndim != 2 or b.shape[0] < 1:
        raise InputError(f"firing: expected a 2-D blocks x features matrix with at least one block. "
                         f"Got shape {b.shape} instead.")
    b = sparse.csr_matrix((np.ones(b.nnz, dtype=np.float32), b.indices, b.indptr), shape=b.shape)
    b.sum_duplicates()
    b.data[:] = 1.0
    n = b.shape[1]
    counts = np.asarray(b.sum(axis=0)).ravel().astype(np.int64)
    bt = b.T.tocsr()
    partners = np.full((n, top), -1, dtype=np.int32)
    shared = np.zeros((n, top), dtype=np.int32)
    chunk = int(max(1, min(n, max_chunk_entries // max(1, n))))
    kk = min(top, n - 1)
    if kk < 1:
        return counts, partners, shared
    cf = counts.astype(np.float64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        c = (bt[s:e] @ b).toarray().astype(np.float64)  # exact integers (float64)
        rows = np.arange(e - s)
        c[rows, np.arange(s, e)] = 0.0
        denom = cf[s:e, None] + cf[None, :] - c
        score = np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)
        # the kk-th largest score per row; candidates are the pairs at or above it that co-fire at all,
        # ordered exactly by (Jaccard desc, n11 desc, id asc)
        kth = np.partition(score, n - kk, axis=1)[:, n - kk]
        for r in range(e - s):
            cand = np.flatnonzero((score[r] >= kth[r]) & (c[r] > 0))
            if cand.size:
                sel = cand[np.lexsort((cand, -c[r, cand], -score[r, cand]))[:kk]]
                partners[s + r, :sel.size] = sel
                shared[s + r, :sel.size] = c[r, sel]
    return counts, partners, shared


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def read_crystals(atoms_dir: str | Path) -> list[dict]:
    """Crystal rows from ``DIR/crystals.csv`` and/or ``DIR/layer_L/crystals.csv`` (columns
    ``rank,layer,a,b,c,d,cosine,length_ratio,kind,score``; a, b, c, d are feature ids)."""
    d = Path(atoms_dir)
    if not d.is_dir():
        raise InputError(f"--atoms: {d} is not a directory; expected the output of the atoms crystal search")
    files = ([d / "crystals.csv"] if (d / "crystals.csv").is_file() else []) + sorted(d.glob("layer_*/crystals.csv"))
    if not files:
        raise InputError(f"--atoms: no crystals.csv in {d} or {d}/layer_*/; expected the atoms output")
    rows: list[dict] = []
    seen = set()
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            r = csv.DictReader(fh)
            missing = [c for c in CRYSTAL_COLUMNS if c not in (r.fieldnames or [])]
            if missing:
                raise InputError(f"{f}: missing columns {missing}; expected the header {','.join(CRYSTAL_COLUMNS)}")
            for i, row in enumerate(r):
                try:
                    rec = {"rank": int(row["rank"]), "layer": int(row["layer"]),
                           **{k: int(row[k]) for k in "abcd"},
                           "cosine": _float(row["cosine"]), "length_ratio": _float(row["length_ratio"]),
                           "kind": str(row["kind"]), "score": _float(row["score"])}
                except (TypeError, ValueError):
                    raise InputError(f"{f} row {i + 2}: expected integer rank, layer and feature ids a-d and "
                                     f"numeric cosine, length_ratio, score. Got {dict(row)} instead.") from None
                key = (rec["layer"], rec["a"], rec["b"], rec["c"], rec["d"])
                if key not in seen:
                    seen.add(key)
                    rows.append(rec)
    rows.sort(key=lambda r: (r["layer"], r["rank"]))
    return rows


def _float(v) -> float:
    return float("nan") if v in (None, "") else float(v)


def lobe_columns(lobes, feature_ids: np.ndarray, affinity: str = "phi") -> dict[int, np.ndarray]:
    """``{n_clusters: int32 labels aligned with feature_ids}`` (-1 for features the lobes left out)."""
    arrays = getattr(lobes, "arrays", {}) or {}
    key = f"labels_{affinity}"
    if key not in arrays:
        raise InputError(f"--affinity: the lobes have no labels for {affinity!r}; expected one of "
                         f"{sorted(k[7:] for k in arrays if k.startswith('labels_'))}")
    ks = [int(k) for k in np.asarray(arrays["n_clusters"]).tolist()]
    fids = np.asarray(arrays["feature_ids"], dtype=np.int64)
    lab = np.asarray(arrays[key])
    order = np.argsort(fids)
    pos = np.searchsorted(fids[order], feature_ids)
    pos = np.clip(pos, 0, max(0, fids.size - 1))
    hit = fids.size > 0
    found = (fids[order][pos] == feature_ids) if hit else np.zeros(feature_ids.shape, bool)
    out = {}
    for i, k in enumerate(ks):
        col = np.full(feature_ids.shape, -1, dtype=np.int32)
        if hit:
            col[found] = lab[i][order][pos[found]]
        out[k] = col
    return out


# ----------------------------------------------------------------------------------------------
# safe embedding
# ----------------------------------------------------------------------------------------------
def script_json(obj: Any) -> str:
    """JSON safe inside ``<script>`` and JS files: ``<``, ``>``, ``&``, U+2028 and U+2029 escaped."""
    s = json.dumps(to_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode("ascii")


# ----------------------------------------------------------------------------------------------
# one layer
# ----------------------------------------------------------------------------------------------
@dataclass
class LayerAtlas:
    """Everything the atlas shows for one layer (rows in the order of ``ids``)."""

    layer: int
    ids: np.ndarray
    xy: np.ndarray
    norm: np.ndarray
    freq: np.ndarray | None = None
    n_fired: np.ndarray | None = None
    n_blocks: int | None = None
    lobes: dict = field(default_factory=dict)  # n_clusters -> int32 labels
    labels: dict = field(default_factory=dict)  # id -> str
    cofire: np.ndarray | None = None  # [n, top] ids
    cofire_n11: np.ndarray | None = None
    crystals: list = field(default_factory=list)
    neuronpedia_id: str | None = None
    galaxy: dict | None = None

    def payload(self) -> dict:
        """The layer's data for the browser (typed arrays as base64)."""
        d: dict[str, Any] = {
            "layer": self.layer, "n": int(self.ids.size), "ids": _b64(self.ids, "i4"), "xy": _b64(self.xy, "f4"),
            "norm": _b64(self.norm, "f4"), "neuronpedia_id": self.neuronpedia_id, "galaxy": self.galaxy,
            "lobes": {str(k): _b64(v, "i2" if v.max(initial=0) < 32767 else "i4") for k, v in self.lobes.items()},
            "lobe_dtype": {str(k): ("i2" if v.max(initial=0) < 32767 else "i4") for k, v in self.lobes.items()},
            "labels": [[int(k), v] for k, v in sorted(self.labels.items())],
            "crystals": [[c["rank"], c["a"], c["b"], c["c"], c["d"], c["cosine"], c["length_ratio"], c["kind"],
                          c["score"]] for c in self.crystals],
            "n_blocks": self.n_blocks,
        }
        if self.freq is not None:
            d["freq"] = _b64(self.freq, "f4")
            d["n_fired"] = _b64(self.n_fired, "i4")
        if self.cofire is not None:
            d["top"] = int(self.cofire.shape[1])
            d["cofire"] = _b64(self.cofire, "i4")
            d["cofire_n11"] = _b64(self.cofire_n11, "i4")
        return d

    def table(self):
        """This layer's rows of ``features.parquet`` (a pyarrow Table)."""
        import pyarrow as pa

        n = self.ids.size
        cols: dict[str, Any] = {
            "layer": pa.array(np.full(n, self.layer, dtype=np.int32)),
            "id": pa.array(self.ids.astype(np.int64)),
            "x": pa.array(self.xy[:, 0]), "y": pa.array(self.xy[:, 1]),
        }
        for k in sorted(self.lobes):
            v = self.lobes[k]
            cols[f"lobe_{k}"] = pa.array(v, mask=v < 0, type=pa.int32())
        cols["norm"] = pa.array(self.norm.astype(np.float32))
        cols["firing_frequency"] = (pa.array(self.freq.astype(np.float64)) if self.freq is not None
                                    else pa.nulls(n, pa.float64()))
        cols["n_fired"] = (pa.array(self.n_fired.astype(np.int64)) if self.n_fired is not None
                           else pa.nulls(n, pa.int64()))
        cols["label"] = pa.array([self.labels.get(int(i)) for i in self.ids], type=pa.string())
        if self.cofire is not None:
            cols["cofiring"] = pa.array([[int(x) for x in row if x >= 0] for row in self.cofire],
                                        type=pa.list_(pa.int32()))
        else:
            cols["cofiring"] = pa.nulls(n, pa.list_(pa.int32()))
        return pa.table(cols)


def build_layer(cloud, *, layer: int | None = None, layout: str = "umap", seed: int = 0, lobes=None,
                affinity: str = "phi",
                firing: Any = None, labels: dict | None = None, crystals: Sequence[dict] = (),
                galaxy: dict | None = None) -> LayerAtlas:
    """Assemble one layer's atlas data from a :class:`~featuregeo.core.data.FeatureCloud` and optional results.

    ``firing`` is the harvest's blocks x features matrix over ALL of the SAE's feature columns;
    ``labels`` maps feature id -> text; ``crystals`` are rows of :func:`read_crystals` (those of other
    layers are ignored).  ``layer`` defaults to ``cloud.layer`` (0 when unknown).
    """
    x = cloud.vectors
    ids = np.asarray(cloud.feature_ids, dtype=np.int64)
    if layer is None:
        layer = cloud.layer if cloud.layer is not None else 0
    la = LayerAtlas(layer=int(layer), ids=ids,
                    xy=layout_2d(x, layout, seed=seed), norm=np.linalg.norm(x, axis=1).astype(np.float32),
                    neuronpedia_id=cloud.provenance.neuronpedia_id, galaxy=galaxy)
    if lobes is not None:
        la.lobes = lobe_columns(lobes, ids, affinity)
    if firing is not None:
        if firing.shape[1] < int(ids.max()) + 1:
            raise InputError(f"--harvest: layer {la.layer} firing has {firing.shape[1]} feature columns but the SAE "
                             f"has feature id {int(ids.max())}; expected a harvest of the same SAE")
        counts, partners, n11 = cofiring(firing)
        la.n_blocks = int(firing.shape[0])
        la.n_fired = counts[ids]
        la.freq = (la.n_fired / max(1, la.n_blocks)).astype(np.float32)
        la.cofire, la.cofire_n11 = partners[ids], n11[ids]
    if labels:
        keep = set(ids.tolist())
        la.labels = {int(k): v for k, v in labels.items() if int(k) in keep}
    la.crystals = [c for c in crystals if c["layer"] == la.layer]
    return la


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------
@register
@dataclass
class AtlasResult(Result):
    """What an atlas export wrote: parameters, one summary per layer, and the output files."""

    kind = "atlas"
    source: str = ""
    params: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_features(self) -> int:
        return int(sum(x["n_features"] for x in self.layers))


def _fingerprint(paths: Iterable[Path]) -> list:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.append([str(p), "dir", sorted(str(q.relative_to(p)) for q in p.rglob("*") if q.is_file())[:200]])
            for q in sorted(x for x in p.rglob("*") if x.is_file())[:200]:
                st = q.stat()
                out.append([str(q), st.st_size, st.st_mtime_ns])
        elif p.exists():
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _spectrum_figure(rec, path: Path) -> Path:
    """A small log-log spectrum of one layer with its power-law fit and null."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ev = np.asarray(rec.eigenvalues, dtype=float)
    ev = ev[ev > 0]
    fig = plt.figure(figsize=(3.6, 2.6))
    ax = fig.add_axes((0.2, 0.17, 0.76, 0.73))  # fixed layout: no tight-bbox second render
    if ev.size:
        r = np.arange(1, ev.size + 1)
        ax.loglog(r, ev, lw=1.2, color="#3565a8", label="decoder rows")
        if rec.null_eigenvalues:
            nev = np.asarray(rec.null_eigenvalues, dtype=float)
            nev = nev[nev > 0]
            ax.loglog(np.arange(1, nev.size + 1), nev, lw=1, ls="--", color="grey", label="Gaussian null")
        a, b = (rec.fit_ranks or [11, 150])[:2]
        if rec.slope == rec.slope and a <= ev.size:
            b = min(b, ev.size)
            rr = np.arange(a, b + 1)
            c = np.log10(ev[a - 1:b]).mean() - rec.slope * np.log10(rr).mean()
            ax.loglog(rr, 10 ** (c + rec.slope * np.log10(rr)), color="#d9541e", lw=1.6,
                      label=f"slope {rec.slope:.3f}")
        ax.legend(fontsize=6)
    ax.set_title(f"layer {rec.layer} spectrum", fontsize=8)
    ax.set_xlabel("rank", fontsize=7)
    ax.set_ylabel("eigenvalue", fontsize=7)
    ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return _readable(atomic_write_bytes(path, buf.getvalue()))


def _galaxy_summary(rec) -> dict:
    e = rec.entropy or {}
    return to_jsonable({"slope": rec.slope, "slope_ci": rec.slope_ci, "r2": rec.r2, "fit_ranks": rec.fit_ranks,
                        "null_slope": rec.null_slope, "entropy_excess": e.get("excess"),
                        "figure": f"figures/galaxy_layer_{rec.layer}.png"})


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k)))
                    for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _readable(path: Path) -> Path:
    """World-readable (atomic writes create 0600 files; a web server must be able to serve the site)."""
    os.chmod(path, 0o644)
    return path


def _write_site(out: Path, meta: dict, title: str) -> dict[str, Path]:
    paths = {}
    for name in ("atlas.js", "atlas.css"):
        paths[name] = _readable(atomic_write_bytes(out / "assets" / name, (ASSETS_DIR / name).read_bytes()))
    template = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")
    page = template.replace("__ATLAS_TITLE__", html.escape(title)).replace("__ATLAS_META__", script_json(meta))
    paths["index"] = _readable(atomic_write_text(out / "index.html", page))
    return paths


# ----------------------------------------------------------------------------------------------
# the export
# ----------------------------------------------------------------------------------------------
def run_atlas(source, out: str | Path, *, layers: Sequence[int] | None = None, lobes: str | Path | None = None,
              atoms: str | Path | None = None, galaxy: str | Path | None = None, harvest: str | Path | None = None,
              labels: Iterable[str | Path] = (), layout: str = "umap", affinity: str = "phi", seed: int = 0,
              progress: Callable[[str], None] | None = None) -> AtlasResult:
    """Write the atlas of a source to ``out`` (see the module docstring).  Resumes finished layers.

    Parameters
    ----------
    source : str or Suite
        A source string (:func:`featuregeo.io.open_suite`) or an open suite.
    out : path
    layers : sequence of int, optional
        Default: every layer of the source.
    lobes, atoms, galaxy, harvest : path, optional
        Output directories of ``featuregeo lobes`` (``DIR/layer_L``), the atoms crystal search
        (``crystals.csv``), ``featuregeo galaxy`` and ``featuregeo harvest``.
    labels : iterable of path
        Label tables and Neuronpedia exports (:class:`featuregeo.io.labels.LabelSources`).
    layout : {"umap", "tsne", "pca"}, default="umap"
    affinity : str, default="phi"
        Which lobe labels colour the map and fill the ``lobe_<k>`` columns.
    seed : int, default=0

    Returns
    -------
    AtlasResult
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featuregeo.io.labels import LabelSources

    log = progress or (lambda msg: None)
    t_start = time.perf_counter()
    if layout not in LAYOUTS:
        raise InputError(f"--layout: expected one of {list(LAYOUTS)}. Got {layout!r} instead.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--seed: expected a non-negative integer. Got {seed!r} instead.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; expected a directory")
    if isinstance(source, str) or isinstance(source, Path):
        from featuregeo.io import open_suite

        suite = open_suite(str(source), list(layers) if layers is not None else None)
        source_name = str(source)
    else:
        suite = source.select(list(layers)) if layers is not None else source
        source_name = suite.name
    for name, d in (("--lobes", lobes), ("--galaxy", galaxy), ("--harvest", harvest)):
        if d is not None and not Path(d).is_dir():
            raise InputError(f"{name}: {d} is not a directory; expected the output of `featuregeo {name[2:]}`")
    label_src = LabelSources(labels)
    crystals = read_crystals(atoms) if atoms else []
    gal = None
    if galaxy:
        from featuregeo.tl.galaxy import GalaxyResult

        gal = {r.layer: r for r in GalaxyResult.read(galaxy).layers}
    h = None
    if harvest:
        from featuregeo.io.harvest import Harvest

        h = Harvest(harvest)
    if lobes:
        lobe_dirs = {L: Path(lobes) / f"layer_{L}" for L in suite.layers}
        if not any((d / "lobes.json").exists() for d in lobe_dirs.values()):
            raise InputError(f"--lobes: no {lobes}/layer_L/lobes.json for layers {suite.layers}; expected the output "
                             "of `featuregeo lobes`")
    params = {"layout": layout, "affinity": affinity, "seed": int(seed), "top_cofiring": TOP_COFIRING,
              "lobes": str(lobes) if lobes else None, "atoms": str(atoms) if atoms else None,
              "galaxy": str(galaxy) if galaxy else None, "harvest": str(harvest) if harvest else None,
              "labels": [str(p) for p in label_src.paths], "format": _FORMAT_VERSION}
    cache = out / ".atlas_layers"
    summaries, tables = [], []
    for layer in suite.layers:
        t0 = time.perf_counter()
        inputs = [p for p in label_src.paths]
        if Path(source_name).exists():  # a local source: rebuilt decoders invalidate the layer
            inputs.append(Path(source_name))
        if lobes:
            inputs += [Path(lobes) / f"layer_{layer}" / name for name in ("lobes.json", "lobes_labels.npz")]
        if galaxy:
            inputs += [Path(galaxy) / "galaxy.json", Path(galaxy) / "spectra.npz"]
        if harvest:
            inputs += [Path(harvest) / "harvest.json"]
        layer_crystals = [c for c in crystals if c["layer"] == layer]
        stamp = hashlib.sha256(json.dumps(
            {"source": source_name, "layer": layer, "params": params, "inputs": _fingerprint(inputs),
             "crystals": layer_crystals}, sort_keys=True, default=str).encode()).hexdigest()
        summary_path = cache / f"layer_{layer}.json"
        table_path = cache / f"layer_{layer}.parquet"
        data_path = out / "data" / f"layer_{layer}.js"
        if summary_path.exists() and table_path.exists() and data_path.exists():
            prev = json.loads(summary_path.read_text())
            if prev.get("stamp") == stamp:
                summaries.append(prev)
                tables.append(pq.read_table(table_path))
                log(f"atlas layer {layer}: reused")
                continue
        cloud = suite.load(layer)
        lobe_res = None
        if lobes and (Path(lobes) / f"layer_{layer}" / "lobes.json").exists():
            from featuregeo.tl.lobes import LobeResult

            lobe_res = LobeResult.read(Path(lobes) / f"layer_{layer}")
        firing = None
        if h is not None and layer in h.sae_layers:
            firing = h.firing(layer)
        gsum = None
        if gal is not None and layer in gal:
            _spectrum_figure(gal[layer], out / "figures" / f"galaxy_layer_{layer}.png")
            gsum = _galaxy_summary(gal[layer])
        la = build_layer(cloud, layer=layer, layout=layout, seed=seed, lobes=lobe_res, affinity=affinity, firing=firing,
                         labels=label_src.for_layer(layer, cloud.provenance.neuronpedia_id), crystals=layer_crystals,
                         galaxy=gsum)
        table = la.table()
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        atomic_write_bytes(table_path, buf.getvalue().to_pybytes())
        _readable(atomic_write_text(data_path, f"window.ATLAS_ADD_LAYER({script_json(la.payload())});\n"))
        summary = {"layer": layer, "n_features": int(la.ids.size), "n_total": cloud.n_total,
                   "n_excluded": cloud.n_excluded, "d_model": cloud.d_model,
                   "neuronpedia_id": la.neuronpedia_id, "n_labels": len(la.labels), "n_crystals": len(la.crystals),
                   "lobe_n_clusters": sorted(la.lobes), "has_firing": la.freq is not None, "galaxy": gsum,
                   "data": f"data/layer_{layer}.js", "bytes": data_path.stat().st_size,
                   "seconds": time.perf_counter() - t0, "stamp": stamp}
        atomic_write_json(summary_path, summary)  # written last: the layer's commit marker
        summaries.append(summary)
        tables.append(pq.read_table(table_path))  # as a resumed run reads it: identical output either way
        log(f"atlas layer {layer}: {la.ids.size} features, {summary['seconds']:.1f}s")
        del cloud, la

    files = {}
    combined = pa.concat_tables(tables, promote_options="default")
    lobe_cols = sorted((c for c in combined.column_names if c.startswith("lobe_")), key=lambda c: int(c[5:]))
    rest = [c for c in combined.column_names if not c.startswith("lobe_")]
    order = rest[:4] + lobe_cols + rest[4:]
    buf = pa.BufferOutputStream()
    pq.write_table(combined.select(order), buf)
    files["features"] = atomic_write_bytes(out / "features.parquet", buf.getvalue().to_pybytes())
    files["crystals"] = _write_csv(out / "crystals.csv", [c for c in crystals if c["layer"] in suite.layers],
                                   CRYSTAL_COLUMNS)
    if lobes:
        from featuregeo.tl.lobes import RECORD_KEYS, LobeResult

        rows = []
        for L in suite.layers:
            if (Path(lobes) / f"layer_{L}" / "lobes.json").exists():
                for r in LobeResult.read(Path(lobes) / f"layer_{L}").records:
                    rows.append({"layer": L, **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                                for k, v in r.items()}})
        files["lobes"] = _write_csv(out / "lobes.csv", rows, ("layer", *RECORD_KEYS))
    if gal is not None:
        from featuregeo.tl.galaxy import GalaxyResult

        gres = GalaxyResult(layers=[gal[L] for L in suite.layers if L in gal])
        files["galaxy"] = _write_csv(out / "galaxy.csv", gres.table(), GalaxyResult.CSV_COLUMNS)
        for fig in sorted(Path(galaxy).glob("galaxy_*.png")):
            shutil.copyfile(fig, out / "figures" / fig.name)
    meta = {
        "title": f"featuregeo atlas: {source_name}", "source": source_name, "params": params,
        "layers": [{k: s[k] for k in ("layer", "n_features", "data", "neuronpedia_id", "n_labels", "n_crystals",
                                      "lobe_n_clusters", "has_firing", "galaxy")} for s in summaries],
        "figures": sorted(f"figures/{p.name}" for p in (out / "figures").glob("galaxy_*.png")
                          if not p.name.startswith("galaxy_layer_")) if (out / "figures").is_dir() else [],
        "neuronpedia_url": "https://www.neuronpedia.org",
    }
    files.update(_write_site(out, meta, meta["title"]))
    result = AtlasResult(source=source_name, params=params, layers=summaries,
                         files={k: str(Path(v).relative_to(out)) for k, v in files.items()},
                         seconds=time.perf_counter() - t_start)
    result.save(out / "atlas.json")
    return result


__all__ = ["run_atlas", "AtlasResult", "LayerAtlas", "build_layer", "layout_2d", "cofiring", "read_crystals",
           "lobe_columns", "script_json", "LAYOUTS"]
