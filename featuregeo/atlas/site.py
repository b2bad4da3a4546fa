"""Writing the static site from an :class:`~featuregeo.atlas.result.AtlasResult`.

``index.html`` + ``assets/atlas.js`` + ``assets/atlas.css`` open from ``file://`` with no network.
Per-layer data are ``data/layer_L.js`` files loaded by ``<script>`` (``fetch`` of local files is
blocked on ``file://``), numeric columns as base64 little-endian typed arrays.  Every string (labels
included) is embedded through :func:`script_json`, so it stays text: ``<``, ``>``, ``&``, U+2028 and
U+2029 are escaped, and the page inserts labels with ``textContent`` only.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featuregeo.atlas.result import AtlasLayer, AtlasResult
from featuregeo.core.util import atomic_write_bytes, atomic_write_text, to_jsonable

ASSETS_DIR = Path(__file__).with_name("assets")
NEURONPEDIA_URL = "https://www.neuronpedia.org"


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script>`` and JS files: ``<``, ``>``, ``&``, U+2028 and U+2029 escaped.

    Examples
    --------
    >>> script_json({"label": "</script>"})
    '{"label":"\\\\u003c/script\\\\u003e"}'
    """
    s = json.dumps(to_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def b64(a: np.ndarray, dtype: str) -> str:
    """Base64 of ``a`` as little-endian ``dtype`` (how the page receives numeric columns)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode("ascii")


def readable(path: Path) -> Path:
    """World-readable (atomic writes create 0600 files; a web server must be able to serve the site)."""
    os.chmod(path, 0o644)
    return path


def galaxy_summary(la: AtlasLayer) -> dict | None:
    g = la.galaxy
    if g is None:
        return None
    return {"slope": g.slope, "slope_corrected": g.slope_corrected,
            "slope_ci": None if g.slope_ci is None else list(g.slope_ci), "r2": g.r2,
            "fit_ranks": None if g.fit_ranks is None else list(g.fit_ranks), "null_slope": g.null_slope,
            "entropy_excess": g.entropy_excess, "figure": f"figures/galaxy_layer_{la.layer}.png"}


def payload(la: AtlasLayer) -> dict:
    """The layer's data for the browser (typed arrays as base64)."""
    def lobe_dtype(v: np.ndarray) -> str:
        return "i2" if v.max(initial=0) < 32767 else "i4"

    d: dict[str, Any] = {
        "layer": la.layer, "n": int(la.ids.size), "ids": b64(la.ids, "i4"), "xy": b64(la.xy, "f4"),
        "norm": b64(la.norm, "f4"), "neuronpedia_id": la.neuronpedia_id, "galaxy": galaxy_summary(la),
        "lobes": {str(k): b64(v, lobe_dtype(v)) for k, v in sorted(la.lobes.items())},
        "lobe_dtype": {str(k): lobe_dtype(v) for k, v in sorted(la.lobes.items())},
        "labels": [[int(k), v] for k, v in sorted(la.labels.items())],
        "auto_labels": [[int(k), v] for k, v in sorted(la.auto_labels.items()) if int(k) not in la.labels],
        "crystals": [[c.rank, c.a, c.b, c.c, c.d, c.cosine, c.length_ratio, c.kind, c.score] for c in la.crystals],
        "n_blocks": la.n_blocks,
    }
    if la.freq is not None:
        d["freq"] = b64(la.freq, "f4")
        d["n_fired"] = b64(la.n_fired, "i4")
    if la.cofire is not None:
        d["top"] = int(la.cofire.shape[1])
        d["cofire"] = b64(la.cofire, "i4")
        d["cofire_n11"] = b64(la.cofire_n11, "i4")
    return d


def spectrum_figure(la: AtlasLayer, path: Path) -> Path:
    """A small log-log spectrum of one layer with its power-law fit and null."""
    from featuregeo.pl.base import pyplot

    plt = pyplot()
    g = la.galaxy
    ev = np.asarray(g.eigenvalues, dtype=float)
    ev = ev[ev > 0]
    fig = plt.figure(figsize=(3.6, 2.6))
    ax = fig.add_axes((0.2, 0.17, 0.76, 0.73))  # fixed layout: no tight-bbox second render
    if ev.size:
        ax.loglog(np.arange(1, ev.size + 1), ev, lw=1.2, color="#3565a8", label="decoder rows")
        if g.null_eigenvalues is not None:
            nev = np.asarray(g.null_eigenvalues, dtype=float)
            nev = nev[nev > 0]
            ax.loglog(np.arange(1, nev.size + 1), nev, lw=1, ls="--", color="grey", label="Gaussian null")
        a, b = g.fit_ranks or (11, 150)
        if g.slope is not None and a <= ev.size:
            b = min(b, ev.size)
            rr = np.arange(a, b + 1)
            c = np.log10(ev[a - 1:b]).mean() - g.slope * np.log10(rr).mean()
            ax.loglog(rr, 10 ** (c + g.slope * np.log10(rr)), color="#d9541e", lw=1.6, label=f"slope {g.slope:.3f}")
        ax.legend(fontsize=6)
    ax.set_title(f"layer {la.layer} spectrum", fontsize=8)
    ax.set_xlabel("rank", fontsize=7)
    ax.set_ylabel("eigenvalue", fontsize=7)
    ax.tick_params(labelsize=6)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return readable(atomic_write_bytes(path, buf.getvalue()))


def layer_meta(la: AtlasLayer) -> dict:
    return {"layer": la.layer, "n_features": la.n_features, "data": f"data/layer_{la.layer}.js",
            "neuronpedia_id": la.neuronpedia_id, "n_labels": len(la.labels), "n_crystals": len(la.crystals),
            "lobe_n_clusters": sorted(la.lobes), "has_firing": la.has_firing, "galaxy": galaxy_summary(la),
            "dashboards": f"data/dash_{la.layer}.js" if la.has_dashboards else None}


def write_layer(out: Path, la: AtlasLayer) -> Path:
    """``data/layer_L.js`` (and the layer's spectrum figure when it has a galaxy record)."""
    if la.galaxy is not None:
        spectrum_figure(la, out / "figures" / f"galaxy_layer_{la.layer}.png")
    return readable(atomic_write_text(out / "data" / f"layer_{la.layer}.js",
                                      f"window.ATLAS_ADD_LAYER({script_json(payload(la))});\n"))


def copy_figures(out: Path, figures: Sequence[Path]) -> list[str]:
    """Copy suite-level figures into ``figures/``; their site-relative paths."""
    names = []
    for f in figures:
        f = Path(f)
        dst = out / "figures" / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        readable(dst)
        names.append(f"figures/{f.name}")
    return sorted(names)


def write_site(out: Path, result: AtlasResult) -> Path:
    """``index.html`` (metadata inline) and ``assets/``; the layer files are written by :func:`write_layer`."""
    for name in ("atlas.js", "atlas.css"):
        readable(atomic_write_bytes(out / "assets" / name, (ASSETS_DIR / name).read_bytes()))
    title = f"featuregeo atlas: {result.source}"
    meta = {"title": title, "source": result.source, "params": result.params.to_dict(),
            "layers": [layer_meta(la) for la in result.layers], "figures": list(result.figures),
            "neuronpedia_url": NEURONPEDIA_URL,
            "tokens": "data/dashboards.js" if any(la.has_dashboards for la in result.layers) else None}
    template = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")
    page = template.replace("__ATLAS_TITLE__", html.escape(title)).replace("__ATLAS_META__", script_json(meta))
    return readable(atomic_write_text(out / "index.html", page))


__all__ = ["script_json", "payload", "write_layer", "write_site", "copy_figures", "spectrum_figure", "b64"]
