"""Machine-readable tables of an atlas, written from an :class:`~featuregeo.atlas.result.AtlasResult`.

* ``features.parquet`` — one row per feature: ``layer, id, x, y, lobe_<k>..., norm,
  firing_frequency, n_fired, label, auto_label, token_density, cofiring`` (nulls where an input is missing);
* ``crystals.csv`` — ``rank, layer, a, b, c, d, cosine, length_ratio, kind, score``;
* ``lobes.csv`` — one row per layer and lobe partition (:class:`~featuregeo.atlas.inputs.LobeSummary`);
* ``galaxy.csv`` — one row per layer: slope, its interval, fit ranks, r², null slope, entropy excess.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featuregeo.atlas.inputs import LobeSummary
from featuregeo.atlas.result import AtlasLayer, AtlasResult
from featuregeo.core.util import atomic_write_bytes, atomic_write_text

CRYSTAL_COLUMNS = ("rank", "layer", "a", "b", "c", "d", "cosine", "length_ratio", "kind", "score")
LOBE_COLUMNS = ("layer", *(f.name for f in dataclasses.fields(LobeSummary)))
GALAXY_COLUMNS = ("layer", "n_features", "d_model", "slope", "slope_corrected", "slope_ci_lo", "slope_ci_hi",
                  "fit_rank_lo", "fit_rank_hi", "r2", "null_slope", "entropy_excess")


def layer_table(la: AtlasLayer):
    """One layer's rows of ``features.parquet`` (a pyarrow Table)."""
    import pyarrow as pa

    n = la.ids.size
    cols: dict[str, Any] = {
        "layer": pa.array(np.full(n, la.layer, dtype=np.int32)),
        "id": pa.array(la.ids.astype(np.int64)),
        "x": pa.array(la.xy[:, 0]), "y": pa.array(la.xy[:, 1]),
    }
    for k in sorted(la.lobes):
        v = la.lobes[k]
        cols[f"lobe_{k}"] = pa.array(v, mask=v < 0, type=pa.int32())
    cols["norm"] = pa.array(la.norm.astype(np.float32))
    cols["firing_frequency"] = (pa.array(la.freq.astype(np.float64)) if la.freq is not None
                                else pa.nulls(n, pa.float64()))
    cols["n_fired"] = pa.array(la.n_fired.astype(np.int64)) if la.n_fired is not None else pa.nulls(n, pa.int64())
    cols["label"] = pa.array([la.labels.get(int(i)) for i in la.ids], type=pa.string())
    cols["auto_label"] = pa.array([la.auto_labels.get(int(i)) for i in la.ids], type=pa.string())
    cols["token_density"] = (pa.array(la.density.astype(np.float64)) if la.density is not None
                             else pa.nulls(n, pa.float64()))
    if la.cofire is not None:
        cols["cofiring"] = pa.array([[int(x) for x in row if x >= 0] for row in la.cofire], type=pa.list_(pa.int32()))
    else:
        cols["cofiring"] = pa.nulls(n, pa.list_(pa.int32()))
    return pa.table(cols)


def write_features(path: Path, result: AtlasResult) -> Path:
    """``features.parquet`` of every layer (``lobe_<k>`` columns in k order after x, y)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    combined = pa.concat_tables([layer_table(la) for la in result.layers], promote_options="default")
    lobe_cols = sorted((c for c in combined.column_names if c.startswith("lobe_")), key=lambda c: int(c[5:]))
    rest = [c for c in combined.column_names if not c.startswith("lobe_")]
    buf = pa.BufferOutputStream()
    pq.write_table(combined.select(rest[:4] + lobe_cols + rest[4:]), buf)
    return atomic_write_bytes(path, buf.getvalue().to_pybytes())


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    """A CSV with fixed columns; floats with 6 significant digits, None as empty."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k)))
                    for k in columns})
    return atomic_write_text(path, buf.getvalue())


def crystal_rows(result: AtlasResult) -> list[dict]:
    return [{"layer": la.layer, **dataclasses.asdict(c)} for la in result.layers for c in la.crystals]


def lobe_rows(result: AtlasResult) -> list[dict]:
    return [{"layer": la.layer, **dataclasses.asdict(s)} for la in result.layers for s in la.lobe_summaries]


def galaxy_rows(result: AtlasResult) -> list[dict]:
    rows = []
    for la in result.layers:
        g = la.galaxy
        if g is None:
            continue
        ci = g.slope_ci or (None, None)
        fr = g.fit_ranks or (None, None)
        rows.append({"layer": la.layer, "n_features": la.n_features, "d_model": la.d_model, "slope": g.slope,
                     "slope_corrected": g.slope_corrected,
                     "slope_ci_lo": ci[0], "slope_ci_hi": ci[1], "fit_rank_lo": fr[0], "fit_rank_hi": fr[1],
                     "r2": g.r2, "null_slope": g.null_slope, "entropy_excess": g.entropy_excess})
    return rows


def write_tables(out: Path, result: AtlasResult) -> dict[str, Path]:
    """Every table into ``out``; ``lobes.csv`` / ``galaxy.csv`` only when some layer has lobes / a galaxy."""
    paths = {"features": write_features(out / "features.parquet", result),
             "crystals": write_csv(out / "crystals.csv", crystal_rows(result), CRYSTAL_COLUMNS)}
    if any(la.lobes for la in result.layers):
        paths["lobes"] = write_csv(out / "lobes.csv", lobe_rows(result), LOBE_COLUMNS)
    if any(la.galaxy is not None for la in result.layers):
        paths["galaxy"] = write_csv(out / "galaxy.csv", galaxy_rows(result), GALAXY_COLUMNS)
    return paths


__all__ = ["layer_table", "write_features", "write_tables", "write_csv", "CRYSTAL_COLUMNS", "LOBE_COLUMNS",
           "GALAXY_COLUMNS"]
