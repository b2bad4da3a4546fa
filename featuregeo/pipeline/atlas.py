"""Atlas pipeline: source + other analyses' output directories -> the static site and tables.

The adapters here (:func:`lobes_inputs`, :func:`crystal_inputs`, :func:`galaxy_inputs`,
:func:`harvest_inputs`, :func:`dashboard_inputs`, :func:`label_inputs`) are the only code that reads other analyses' files
for the atlas; each turns what one analysis wrote into the typed records of
:mod:`featuregeo.atlas.inputs` (with the SAE identity the analysis recorded, so the atlas can
refuse inputs of another SAE).  A file that cannot be read is a one-line
:class:`~featuregeo.core.errors.InputError` naming it.

Output: see :data:`featuregeo.atlas.FILES` (``OUT/index.html`` is the site); resumable through
``OUT/.checkpoint`` (one unit per layer).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from featuregeo.atlas import (AtlasInputs, AtlasParams, AtlasResult, Crystal, CrystalsInput, DashboardInput, FiringInput,
                              GalaxyInput, LayerInputs, LobesInput, LobeSummary, SaeIdentity, build)
from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint
from featuregeo.pipeline.common import log, output_dir

CRYSTAL_COLUMNS = ("rank", "layer", "a", "b", "c", "d", "cosine", "length_ratio", "kind", "score")


def _read_json(path: Path, flag: str, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{flag}: {path} does not exist; expected {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{flag}: {path} is not readable JSON ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100]}); expected {what}") from None


def _int_or_none(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# adapters: one per analysis, against the files those analyses write today
# ----------------------------------------------------------------------------------------------
def _lobes_result(lobes_dir: str | Path):
    """The :class:`~featuregeo.tl.lobes.LobesResult` in ``DIR`` (read once per directory)."""
    from featuregeo.tl.lobes import LobesResult

    key = str(Path(lobes_dir).resolve())
    if key not in _LOBES_CACHE:
        _LOBES_CACHE.clear()
        try:
            _LOBES_CACHE[key] = LobesResult.load(lobes_dir)
        except InputError as e:
            raise InputError(f"--lobes: {e}") from None
    return _LOBES_CACHE[key]


_LOBES_CACHE: dict = {}


def _finite(v) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


def lobes_inputs(lobes_dir: str | Path, layer: int) -> LobesInput | None:
    """``DIR/lobes.json`` (+ ``.npz``; ``featuregeo lobes``) -> :class:`LobesInput` for ``layer``,
    or None when the layer has no lobes."""
    res = _lobes_result(lobes_dir)
    rec = next((x for x in res.layers if x.layer == layer), None)
    if rec is None:
        return None
    labels: dict[str, dict[int, np.ndarray]] = {}
    for aff, arr in rec.lobe_labels.items():
        labels[aff] = {int(k): np.asarray(arr[i], dtype=np.int32) for i, k in enumerate(rec.n_clusters)}
    summaries = [LobeSummary(affinity=str(r.affinity), n_clusters=int(r.n_clusters),
                             n_lobes=_int_or_none(getattr(r, "n_lobes", None)),
                             **{f: _finite(getattr(r, f, None)) for f in (
                                 "ami", "ami_null_mean", "ami_sigma", "ami_p", "logreg_bal_acc", "logreg_sigma",
                                 "logreg_p", "genre_cramers_v")})
                 for r in rec.records]
    sae = SaeIdentity(n_features=_int_or_none(rec.n_features), d_model=_int_or_none(rec.d_model))
    return LobesInput(feature_ids=np.asarray(rec.feature_ids, dtype=np.int64), labels=labels, summaries=summaries,
                      sae=sae, origin=f"--lobes {Path(lobes_dir) / 'lobes.json'}")


def _crystal_files(d: Path) -> list[Path]:
    return ([d / "crystals.csv"] if (d / "crystals.csv").is_file() else []) + sorted(d.glob("layer_*/crystals.csv"))


def crystal_inputs(atoms_dir: str | Path) -> dict[int, CrystalsInput]:
    """``DIR/crystals.csv`` and/or ``DIR/layer_L/crystals.csv`` (the atoms crystal search) ->
    ``{layer: CrystalsInput}`` (duplicates across the two layouts are kept once)."""
    d = Path(atoms_dir)
    if not d.is_dir():
        raise InputError(f"--atoms: {d} is not a directory; expected the output of the atoms crystal search")
    files = _crystal_files(d)
    if not files:
        raise InputError(f"--atoms: no crystals.csv in {d} or {d}/layer_*/; expected the atoms output")
    rows: dict[int, list[Crystal]] = {}
    seen = set()
    for f in files:
        try:
            with f.open(newline="", encoding="utf-8") as fh:
                r = csv.DictReader(fh)
                missing = [c for c in CRYSTAL_COLUMNS if c not in (r.fieldnames or [])]
                if missing:
                    raise InputError(f"--atoms: {f} misses columns {missing}; expected the header "
                                     f"{','.join(CRYSTAL_COLUMNS)}")
                for i, row in enumerate(r):
                    try:
                        lay = row["layer"]
                        if lay in ("", None) and f.parent.name.startswith("layer_"):
                            lay = f.parent.name[len("layer_"):]  # a one-layer search saved under layer_L/
                        layer = int(lay)
                        c = Crystal(rank=int(row["rank"]), **{k: int(row[k]) for k in "abcd"},
                                    cosine=row["cosine"], kind=str(row["kind"]), length_ratio=row["length_ratio"],
                                    score=row["score"])
                    except (TypeError, ValueError):
                        raise InputError(f"--atoms: {f} row {i + 2}: expected integer rank, layer and feature ids "
                                         f"a-d. Got {dict(row)} instead.") from None
                    key = (layer, c.a, c.b, c.c, c.d)
                    if key not in seen:
                        seen.add(key)
                        rows.setdefault(layer, []).append(c)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"--atoms: {f} is not a readable CSV ({type(e).__name__}); expected crystals.csv") from None
    return {L: CrystalsInput(rows=sorted(v, key=lambda c: c.rank), origin=f"--atoms {d}") for L, v in rows.items()}


def galaxy_inputs(galaxy_dir: str | Path) -> dict[int, GalaxyInput]:
    """``DIR/galaxy.json`` (+ ``.npz``; ``featuregeo galaxy``) -> ``{layer: GalaxyInput}``."""
    from featuregeo.tl.galaxy import GalaxyResult

    d = Path(galaxy_dir)
    jpath = d / "galaxy.json"
    try:
        res = GalaxyResult.load(d)
    except InputError as e:
        raise InputError(f"--galaxy: {e}") from None
    out: dict[int, GalaxyInput] = {}
    for r in res.layers:
        prov = r.provenance
        n_total = None if r.n_features is None else int(r.n_features) + int(r.n_excluded or 0)
        sae = SaeIdentity(n_features=n_total, d_model=_int_or_none(r.d_model),
                          source=getattr(prov, "source", None), path=getattr(prov, "path", None))
        out[int(r.layer)] = GalaxyInput(
            eigenvalues=np.asarray(r.eigenvalues if r.eigenvalues is not None else [], dtype=np.float64),
            slope=_finite(r.slope), slope_ci=tuple(r.slope_ci) if r.slope_ci is not None else None,
            slope_corrected=_finite(getattr(r, "slope_corrected", None)),
            fit_ranks=tuple(r.fit_ranks) if r.fit_ranks is not None else None, r2=_finite(r.r2),
            null_slope=_finite(r.null_slope), entropy_excess=None if r.entropy is None else _finite(r.entropy.excess),
            null_eigenvalues=None if r.null_eigenvalues is None else np.asarray(r.null_eigenvalues, dtype=np.float64),
            sae=sae, origin=f"--galaxy {jpath}")
    return out


def galaxy_figures(galaxy_dir: str | Path) -> list[Path]:
    """The suite-level figures of a galaxy directory (``galaxy_*.png``)."""
    return sorted(p for p in Path(galaxy_dir).glob("galaxy_*.png") if not p.name.startswith("galaxy_layer_"))


def open_harvest(harvest_dir: str | Path):
    """:class:`featuregeo.io.harvest.Harvest`, with a damaged ``harvest.json`` as a one-line error naming it."""
    from featuregeo.io.harvest import Harvest

    d = Path(harvest_dir)
    if not d.is_dir():
        raise InputError(f"--harvest: {d} is not a directory; expected the output of `featuregeo harvest`")
    try:
        h = Harvest(d)
        h.sae_layers  # noqa: B018 - the manifest's config must be complete
    except InputError as e:
        raise InputError(f"--harvest: {e}") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"--harvest: {d / 'harvest.json'} is damaged ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100] if str(e) else ''}); expected the manifest written by "
                         "`featuregeo harvest`") from None
    return h


def harvest_inputs(harvest, layer: int, cloud=None) -> FiringInput | None:
    """One layer of a :class:`~featuregeo.io.harvest.Harvest` -> :class:`FiringInput` (read lazily),
    or None when the harvest has no SAE at that layer.  ``cloud`` is not needed today; the SAE the
    harvest recorded (feature count, d_model, and a source or fingerprint when present) is what
    the atlas checks."""
    if layer not in harvest.sae_layers:
        return None
    rec = (harvest.config.get("saes") or {}).get(str(layer)) or {}
    sae = SaeIdentity(n_features=_int_or_none(rec.get("d_sae")), d_model=_int_or_none(harvest.manifest.get("d_model")),
                      source=rec.get("source"), fingerprint=rec.get("fingerprint"))
    shards = sorted((harvest.path / "shards").glob("shard_*.npz"))
    fp = fingerprint(harvest.manifest.get("fingerprint"), int(layer), bool(harvest.manifest.get("complete")),
                     [(p.name, p.stat().st_size) for p in shards])

    def load():
        try:
            return harvest.firing(layer)
        except InputError as e:
            raise InputError(f"--harvest: {e}") from None
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"--harvest: {harvest.path}/shards is damaged ({type(e).__name__}); expected finished "
                             "shards written by `featuregeo harvest`") from None

    return FiringInput(matrix=load, fingerprint=fp, sae=sae, origin=f"--harvest {harvest.path}")


def dashboard_inputs(harvest, layer: int) -> DashboardInput | None:
    """One layer's dashboards of a :class:`~featuregeo.io.harvest.Harvest` -> :class:`DashboardInput`
    (merged lazily, when the layer is written), or None when the harvest collected none there."""
    if layer not in harvest.sae_layers or not harvest.has_dashboards(layer):
        return None
    rec = (harvest.config.get("saes") or {}).get(str(layer)) or {}
    sae = SaeIdentity(n_features=_int_or_none(rec.get("d_sae")), d_model=_int_or_none(harvest.manifest.get("d_model")))
    files = sorted((harvest.path / "shards").glob("shard_*.npz")) + sorted((harvest.path / "dashboards").glob("*.npz"))
    fp = fingerprint("dashboards", harvest.manifest.get("fingerprint"), int(layer),
                     [(p.name, p.stat().st_size) for p in files])

    def load():
        try:
            return harvest.dashboards(layer)
        except InputError as e:
            raise InputError(f"--harvest: {e}") from None

    return DashboardInput(data=load, fingerprint=fp, sae=sae, origin=f"--harvest {harvest.path}")


def label_inputs(sources, layer: int, cloud) -> dict[int, str]:
    """Labels of one layer from :class:`featuregeo.io.labels.LabelSources` (matched by Neuronpedia id)."""
    return sources.for_layer(layer, cloud.provenance.neuronpedia_id)


#: layer-wise analyses whose suite-level figures the atlas panel shows (``--lens DIR`` etc.)
FIGURE_ANALYSES = ("layers", "lens", "updates", "interaction")


def analysis_figures(flag: str, directory: str | Path) -> list[Path]:
    """The figures (``*.png`` at the top of ``DIR``) of a layer-wise analysis's output directory."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{flag}: {d} is not a directory; expected the output of `featuregeo {flag[2:]}`")
    figs = sorted(d.glob("*.png"))
    if not figs:
        raise InputError(f"{flag}: no figures (*.png) in {d}; expected the output of `featuregeo {flag[2:]}`")
    return figs


def atlas_inputs(*, lobes=None, atoms=None, galaxy=None, harvest=None, labels: Iterable = (),
                 extra: dict[str, str | Path] | None = None) -> AtlasInputs:
    """All adapters together: an :class:`AtlasInputs` whose provider builds each layer's inputs on demand.

    Directories are checked and small files (galaxy records, crystals, the harvest manifest) are
    read here; lobes and labels per layer; firing only when a layer is computed.
    """
    from featuregeo.io.labels import LabelSources

    for flag, d in (("--lobes", lobes), ("--galaxy", galaxy), ("--atoms", atoms)):
        if d is not None and not Path(d).is_dir():
            raise InputError(f"{flag}: {d} is not a directory; expected the output of `featuregeo {flag[2:]}`")
    label_src = LabelSources(labels)
    crystals = crystal_inputs(atoms) if atoms is not None else {}
    gal = galaxy_inputs(galaxy) if galaxy is not None else {}
    h = open_harvest(harvest) if harvest is not None else None

    def provider(layer: int, cloud) -> LayerInputs:
        return LayerInputs(firing=None if h is None else harvest_inputs(h, layer, cloud),
                           dashboards=None if h is None else dashboard_inputs(h, layer),
                           lobes=None if lobes is None else lobes_inputs(lobes, layer),
                           crystals=crystals.get(layer), galaxy=gal.get(layer),
                           labels=label_inputs(label_src, layer, cloud))

    figures = galaxy_figures(galaxy) if galaxy is not None else []
    for name, d in (extra or {}).items():
        if d is not None:
            figures += analysis_figures("--comparison" if name == "layers" else f"--{name}", d)
    return AtlasInputs(provider=provider, figures=figures)


def run(source, out: str | Path, *, layers: Sequence[int] | None = None, params: AtlasParams | None = None,
        lobes: str | Path | None = None, atoms: str | Path | None = None, galaxy: str | Path | None = None,
        harvest: str | Path | None = None, labels: Iterable[str | Path] = (),
        figures: dict[str, str | Path] | None = None, export_json: str | Path | None = None,
        progress: Callable[[str], None] | None = log) -> AtlasResult:
    """The atlas of a source in ``out`` (static site + tables + ``atlas.json``); resumes finished layers.

    Parameters
    ----------
    source : str or Suite
        A source string (:func:`featuregeo.io.open_suite`) or an open suite.
    out : path
        Output directory; open ``out/index.html``.
    layers : sequence of int, optional
        Default: every layer of the source.
    params : AtlasParams, optional
    lobes, atoms, galaxy, harvest : path, optional
        Output directories of ``featuregeo lobes`` (``DIR/layer_L``), the atoms crystal search
        (``crystals.csv``), ``featuregeo galaxy`` and ``featuregeo harvest``.  Each must have been
        computed on the same SAEs; a mismatch is refused.
    labels : iterable of path
        Label tables and Neuronpedia exports (:class:`featuregeo.io.labels.LabelSources`).
    figures : dict, optional
        ``{analysis: output directory}`` of layer-wise analyses (one of :data:`FIGURE_ANALYSES`:
        ``layers``, ``lens``, ``updates``, ``interaction``) whose figures the side panel shows.
    export_json : path, optional
        Also write every feature's dashboard (from ``harvest``) as ``DIR/layer_L/<id>.json``
        (:func:`featuregeo.io.harvest.export_json`; user and Neuronpedia labels win over automatic ones).
    progress : callable, optional

    Returns
    -------
    AtlasResult

    Examples
    --------
    >>> run("default", "out/atlas", layers=[2], params=AtlasParams(layout="pca"))   # doctest: +SKIP
    """
    from featuregeo.core.checkpoint import Checkpoint
    from featuregeo.io import open_suite

    params = (params or AtlasParams()).validate()
    if export_json is not None and harvest is None:
        raise InputError("--export-json: needs --harvest DIR (a harvest with dashboards)")
    out = output_dir(out)
    if lobes is not None:
        _lobes_result(lobes)  # readable, before any work
    unknown = sorted(set(figures or {}) - set(FIGURE_ANALYSES))
    if unknown:
        raise InputError(f"figures: expected analyses among {list(FIGURE_ANALYSES)}. Got {unknown} instead.")
    inputs = atlas_inputs(lobes=lobes, atoms=atoms, galaxy=galaxy, harvest=harvest, labels=labels, extra=figures)
    if isinstance(source, (str, Path)):
        suite = open_suite(str(source), list(layers) if layers is not None else None)
    else:
        suite = source.select(list(layers)) if layers is not None else source
    if lobes is not None and not any(x.layer in suite.layers for x in _lobes_result(lobes).layers):
        raise InputError(f"--lobes: {lobes} has no lobes for layers {suite.layers}; expected the output "
                         "of `featuregeo lobes` for some of them")
    export = None if export_json is None else output_dir(export_json, "--export-json")
    with Checkpoint(out / ".checkpoint") as ck:
        res = build(suite, params, out, inputs=inputs, checkpoint=ck, progress=progress)
    if export is not None:
        write_exports(suite, inputs, export, progress)
    return res


def write_exports(suite, inputs: AtlasInputs, out: Path, progress=None) -> int:
    """Every layer's dashboards as per-feature JSON files under ``out`` (user labels win); files written."""
    from featuregeo.io.harvest import export_json

    n = 0
    for layer in suite.layers:
        cloud = suite.load(layer)
        li = inputs.for_layer(layer, cloud)
        if li.dashboards is None:
            continue
        paths = export_json(li.dashboards.load(), out, labels=li.labels, source=cloud.provenance.neuronpedia_id
                            or cloud.provenance.source)
        n += len(paths)
        if progress is not None:
            progress(f"atlas: layer {layer} dashboards -> {len(paths)} JSON files in {out}/layer_{layer}")
    return n


__all__ = ["run", "atlas_inputs", "analysis_figures", "FIGURE_ANALYSES", "lobes_inputs", "crystal_inputs", "galaxy_inputs", "galaxy_figures",
           "harvest_inputs", "dashboard_inputs", "label_inputs", "open_harvest"]
