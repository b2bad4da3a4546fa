"""Feature dashboards: what a feature fires on, how strongly, how often, and what it writes to the logits.

Collected by the harvest in the same forward pass (:mod:`featuregeo.io.harvest.dashcollect`, one set
of arrays per shard, merged here when read) plus, once per layer, the logit effects of the decoder
directions (:func:`logit_effects`, ``DIR/dashboards/logits_L.npz``).  :meth:`Harvest.dashboards
<featuregeo.io.harvest.Harvest.dashboards>` returns a :class:`FeatureDashboards`; :func:`auto_labels`
names features from it; :func:`feature_json` / :func:`export_json` write one JSON file per feature
(layout: ``docs/dashboards.md``).

Logit effects: decoder row ``d`` of feature ``i`` goes through the model's own final norm and
unembedding (:func:`featuregeo.io.lens_hooks.find_readout`): ``effect = norm(d) @ W_U.T (+ bias)``.
The final logit soft-cap is not applied (it is monotone and acts on a whole logit vector, not on one
feature's contribution).  The vocabulary is screened in bfloat16 and the best ``4 k + 32``
candidates of each side are rescored in float32, so the values reported are float32-exact (SAEs of
at most 512 features are screened in float32).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featuregeo.core.util import atomic_write_bytes, atomic_write_text
from featuregeo.io.harvest.dashcollect import (HIST_EDGES, context_tokens, merge_top, read_strings, token_strings,
                                              window_offsets)

AUTO_PREFIX = "auto: "


@dataclass(eq=False)
class FeatureDashboards:
    """One layer's dashboards, merged over a harvest's shards; arrays indexed by feature id.

    Attributes
    ----------
    layer, k, window, before, after : int
        Contexts per feature; tokens per context (``before`` + the top token + ``after``).
    n_tokens, n_blocks : int
        Tokens and blocks harvested.
    value : ndarray [d_sae, k] float32
        Maximum activation of each context (descending; 0 = no context).
    block : ndarray [d_sae, k] int64
        Harvest block of each context (-1 = none); ``pos`` the top token's position in the block.
    tokens : ndarray [d_sae, k, window] int32
        Token ids of each context (-1 outside the block).
    acts : ndarray [d_sae, k, window] uint8
        Per-token activations, ``round(255 * a / value)``.
    hist : ndarray [d_sae, n_bins] int64
        Counts of positive token activations in the bins :data:`edges`.
    block_ids, block_tokens : ndarray [b], [b, block_len] int32
        The whole blocks the contexts come from (for longer contexts).
    logit_ids, logit_values : ndarray [d_sae, m] or None
        Most promoted output tokens (descending effect); ``neg_ids``/``neg_values`` the most
        suppressed (ascending).  None when the harvest has no logit effects (a non-transformers model).
    strings : dict
        ``{token id: text}`` of every token above.
    """

    layer: int
    k: int
    window: int
    n_tokens: int
    n_blocks: int
    value: np.ndarray
    block: np.ndarray
    pos: np.ndarray
    tokens: np.ndarray
    acts: np.ndarray
    hist: np.ndarray
    block_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    block_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    edges: np.ndarray = field(default_factory=lambda: HIST_EDGES.copy())
    logit_ids: np.ndarray | None = None
    logit_values: np.ndarray | None = None
    neg_ids: np.ndarray | None = None
    neg_values: np.ndarray | None = None
    strings: dict[int, str] = field(default_factory=dict)

    @property
    def before(self) -> int:
        return window_offsets(self.window)[0]

    @property
    def after(self) -> int:
        return window_offsets(self.window)[1]

    @property
    def n_features(self) -> int:
        return int(self.value.shape[0])

    @property
    def n_active(self) -> np.ndarray:
        """Tokens on which each feature is positive."""
        return self.hist.sum(axis=1)

    @property
    def density(self) -> np.ndarray:
        """Firing density: share of harvested tokens on which each feature is positive."""
        return (self.n_active / max(1, self.n_tokens)).astype(np.float64)

    def text(self, token_id: int) -> str:
        return self.strings.get(int(token_id), f"<{int(token_id)}>")

    def contexts(self, feature: int) -> list[dict]:
        """The feature's contexts, best first: ``{"tokens", "values", "maxValue", "maxValueTokenIndex", "block"}``."""
        out = []
        for c in range(self.k):
            v = float(self.value[feature, c])
            if v <= 0:
                break
            ids = self.tokens[feature, c]
            keep = ids >= 0
            vals = self.acts[feature, c].astype(np.float64) / 255.0 * v
            toks = [self.text(t) for t in ids[keep]]
            out.append({"tokens": toks, "token_ids": [int(t) for t in ids[keep]],
                        "values": [round(float(x), 4) for x in vals[keep]], "maxValue": v,
                        "maxValueTokenIndex": int(self.before - np.count_nonzero(~keep[:self.before])),
                        "block": int(self.block[feature, c])})
        return out

    def top_token_ids(self, feature: int) -> list[int]:
        """The top token of each context (best first)."""
        return [int(self.tokens[feature, c, self.before]) for c in range(self.k) if self.value[feature, c] > 0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureDashboards):
            return NotImplemented
        from featuregeo.core.util import deep_equal

        return all(deep_equal(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)


# ----------------------------------------------------------------------------------------------
# merging shards
# ----------------------------------------------------------------------------------------------
def merge_shards(layer: int, read: Callable[[int, tuple[str, ...]], dict[str, np.ndarray]], n_shards: int, k: int,
                 window: int) -> FeatureDashboards:
    """:class:`FeatureDashboards` of ``layer`` from ``n_shards`` consecutive shards.

    ``read(i, keys)`` returns the named arrays of shard ``i``.  A first pass merges the contexts and
    histograms; a second reads the tokens of the blocks the merged contexts come from."""
    before, after = window_offsets(window)
    offset = n_tokens = 0
    best = None
    hist = None
    strings: dict[int, str] = {}
    pre = f"dash_{layer}_"
    keys = ("tokens", "vocab_ids", "vocab_utf8", "vocab_offsets",
            *(pre + x for x in ("value", "block", "pos", "acts", "hist")))
    sizes = []
    for i in range(n_shards):  # a running top-k: the order is total, so this equals one merge of everything
        z = read(i, keys)
        n_blk, T = z["tokens"].shape
        sizes.append(n_blk)
        b = z[pre + "block"].astype(np.int64)
        p = z[pre + "pos"].astype(np.int64)
        part = (z[pre + "value"], np.where(b >= 0, b + offset, -1), p, z[pre + "acts"],
                context_tokens(z["tokens"], b, p, before, after))
        best = part if best is None else tuple(np.concatenate([x, y], axis=1) for x, y in zip(best, part))
        v, bl, ps, (ac, tk) = merge_top(best[0], best[1], best[2], k, (best[3], 0), (best[4], -1))
        best = (v, bl, ps, ac, tk)
        hist = z[pre + "hist"].astype(np.int64) if hist is None else hist + z[pre + "hist"]
        strings.update(read_strings(z["vocab_ids"], z["vocab_utf8"], z["vocab_offsets"]))
        offset += n_blk
        n_tokens += n_blk * T
    value, block, pos, acts, toks = best
    used_blocks = np.unique(block[block >= 0])
    block_tokens = np.zeros((used_blocks.size, T), np.int32)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    for i in range(n_shards):
        inside = (used_blocks >= starts[i]) & (used_blocks < starts[i + 1])
        if inside.any():
            block_tokens[inside] = read(i, ("tokens",))["tokens"][used_blocks[inside] - starts[i]]
    used = set(np.unique(block_tokens).tolist())
    return FeatureDashboards(layer=int(layer), k=int(k), window=int(window), n_tokens=int(n_tokens),
                             n_blocks=int(offset), value=value, block=block, pos=pos, tokens=toks.astype(np.int32),
                             acts=acts, hist=hist, block_ids=used_blocks.astype(np.int64), block_tokens=block_tokens,
                             strings={i: s for i, s in strings.items() if i in used})


# ----------------------------------------------------------------------------------------------
# logit effects
# ----------------------------------------------------------------------------------------------
def logit_effects(readout, w_dec: np.ndarray, m: int = 10, *, chunk: int = 256
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top promoted and suppressed output tokens of each decoder direction.

    Parameters
    ----------
    readout : featuregeo.io.lens_hooks.Readout
        The model's final norm and unembedding.
    w_dec : ndarray [d_sae, d_model]
    m : int
        Tokens per side.
    chunk : int
        Decoder rows per matmul (memory: ``chunk x vocab`` floats).

    Returns
    -------
    pos_ids, pos_values, neg_ids, neg_values : ndarray [d_sae, m]
        Promoted tokens by effect descending (ties: lower token id first); suppressed ascending.
    """
    import torch

    W = readout.weight.float()
    Wb = W.to(torch.bfloat16) if w_dec.shape[0] > 512 else None  # few rows: float32 throughout
    bias = None if readout.bias is None else readout.bias.float()
    n, V = w_dec.shape[0], W.shape[0]
    m = min(m, V)
    c = min(V, 4 * m + 32)
    out = [np.zeros((n, m), np.int64), np.zeros((n, m), np.float32), np.zeros((n, m), np.int64),
           np.zeros((n, m), np.float32)]
    with torch.inference_mode():
        for s in range(0, n, chunk):
            x = readout.norm(torch.as_tensor(np.asarray(w_dec[s:s + chunk], dtype=np.float32))).float()
            rough = (x.to(torch.bfloat16) @ Wb.T).float() if Wb is not None else x @ W.T
            if bias is not None:
                rough += bias
            for side, sign in ((0, 1.0), (2, -1.0)):
                cand = torch.topk(sign * rough, c, dim=1).indices  # [r, c]
                exact = torch.einsum("rd,rcd->rc", x, W[cand])
                if bias is not None:
                    exact = exact + bias[cand]
                e, ids = (sign * exact).numpy(), cand.numpy()
                order = np.lexsort((ids, -e), axis=-1)[:, :m]
                out[side][s:s + chunk] = np.take_along_axis(ids, order, axis=1)
                out[side + 1][s:s + chunk] = sign * np.take_along_axis(e, order, axis=1)
    return out[0], out[1], out[2], out[3]


def logits_path(directory: Path, layer: int) -> Path:
    return Path(directory) / "dashboards" / f"logits_{layer}.npz"


def logits_cache_path(model, sae_checksum: str, m: int) -> Path:
    """Where the logit effects of one SAE on one model are cached across harvests (they depend on
    nothing else): ``$FEATUREGEO_CACHE/logit_effects/<hash>.npz``."""
    from featuregeo.core.util import fingerprint
    from featuregeo.io.lens_hooks import model_identity
    from featuregeo.io.models.cache import featuregeo_cache_root

    key = fingerprint("logit-effects", 1, model_identity(model), getattr(model, "dtype", None), sae_checksum, int(m))
    return featuregeo_cache_root() / "logit_effects" / f"{key}.npz"


def write_logit_effects(model, plan, progress: Callable[[str], Any] | None = None, *, cache: bool = True) -> list[int]:
    """``DIR/dashboards/logits_L.npz`` for every SAE layer of a harvest plan that lacks one (resumable).

    With ``cache`` the result is also kept in (and taken from) the user cache
    (:func:`logits_cache_path`, keyed by the model and the SAE's weight checksum), so a second
    harvest of the same SAEs skips the computation.  Returns the layers written; none for a model
    without a final norm / unembedding (no logit effects).
    """
    import time

    from featuregeo.core.errors import InputError
    from featuregeo.io.harvest.files import write_file
    from featuregeo.io.lens_hooks import find_readout

    todo = [L for L in plan.sae_layers if not logits_path(plan.out, L).exists()]
    if not todo or not plan.params.dashboards:
        return []
    try:
        readout = find_readout(model)
    except InputError as e:
        if progress is not None:
            progress(f"harvest: no logit effects ({e})")
        return []
    m = plan.params.dashboard_logits
    for L in todo:
        t0 = time.perf_counter()
        data, hit = logit_effects_bytes(model, readout, plan.saes[L], plan.manifest["config"]["saes"][str(L)]["checksum"],
                                        m, cache=cache)
        write_file(logits_path(plan.out, L), data)
        if progress is not None:
            progress(f"harvest: logit effects of layer {L} from the cache" if hit else
                     f"harvest: logit effects of layer {L} ({int(plan.saes[L].cfg.d_sae)} features) in "
                     f"{time.perf_counter() - t0:.1f}s")
    return todo


def logit_effects_bytes(model, readout, sae, checksum: str, m: int, *, cache: bool = True) -> tuple[bytes, bool]:
    """The ``logits_L.npz`` bytes of one SAE (from the user cache when it holds them) and whether they
    came from the cache; computed ones are stored there when ``cache``."""
    from featuregeo.io.harvest.files import npz_bytes

    cached = logits_cache_path(model, checksum, m) if cache else None
    if cached is not None and cached.is_file():
        try:
            data = cached.read_bytes()
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if z["pos_ids"].shape == (int(sae.cfg.d_sae), m):
                    return data, True
        except (OSError, ValueError, KeyError):
            pass
    w = sae.W_dec.detach().float().cpu().numpy()
    pi, pv, ni, nv = logit_effects(readout, w, m)
    arrays = {"pos_ids": pi.astype(np.int32), "pos_values": pv, "neg_ids": ni.astype(np.int32), "neg_values": nv,
              **token_strings(model.tokenizer, np.concatenate([pi.ravel(), ni.ravel()]))}
    data = npz_bytes(arrays)
    if cached is not None:
        try:
            atomic_write_bytes(cached, data)
        except OSError:
            pass  # a read-only cache only costs the next harvest this computation
    return data, False


def cache_logit_effects(model, saes, m: int | None = None) -> int:
    """Fill the user cache with the logit effects of ``saes`` (``{layer: sae-lens SAE}``) on ``model``,
    so the next harvest with dashboards takes them from there (set-up does this for the shipped suite).
    Returns the number of SAEs computed (not already cached)."""
    from featuregeo.io.harvest.params import HarvestParams
    from featuregeo.io.harvest.run import sae_checksum
    from featuregeo.io.lens_hooks import find_readout

    m = HarvestParams().dashboard_logits if m is None else int(m)
    readout = find_readout(model)
    return sum(not logit_effects_bytes(model, readout, sae, sae_checksum(sae), m)[1] for sae in saes.values())


def read_logits(path: Path, dash: FeatureDashboards) -> FeatureDashboards:
    """Attach ``logits_L.npz`` to ``dash`` (ids, values and their strings)."""
    with np.load(path, allow_pickle=False) as z:
        dash.logit_ids, dash.logit_values = z["pos_ids"].astype(np.int64), z["pos_values"]
        dash.neg_ids, dash.neg_values = z["neg_ids"].astype(np.int64), z["neg_values"]
        dash.strings.update(read_strings(z["vocab_ids"], z["vocab_utf8"], z["vocab_offsets"]))
    return dash


# ----------------------------------------------------------------------------------------------
# automatic labels and the JSON export
# ----------------------------------------------------------------------------------------------
def quoted(s: str) -> str:
    """A token as a JSON string literal (whitespace visible: ``" the"``, ``"\\n"``)."""
    return json.dumps(s, ensure_ascii=False)


def auto_label(dash: FeatureDashboards, feature: int, n: int = 3) -> str | None:
    """``auto: fires on "def", " class"; promotes "(", " self"`` — or None when the feature never fired.

    The tokens it fires on are the top tokens of its contexts, most frequent first (ties: the
    stronger context first); the tokens it promotes are its top logit effects.
    """
    tops = dash.top_token_ids(feature)
    if not tops:
        return None
    counts: dict[int, int] = {}
    for t in tops:
        counts[t] = counts.get(t, 0) + 1
    fires = sorted(counts, key=lambda t: (-counts[t], tops.index(t)))[:n]
    label = AUTO_PREFIX + "fires on " + ", ".join(quoted(dash.text(t)) for t in fires)
    if dash.logit_ids is not None:
        label += "; promotes " + ", ".join(quoted(dash.text(t)) for t in dash.logit_ids[feature, :n])
    return label


def auto_labels(dash: FeatureDashboards, features=None) -> dict[int, str]:
    """:func:`auto_label` of every feature (or of ``features``) that fired."""
    ids = range(dash.n_features) if features is None else features
    out = {}
    for i in ids:
        lab = auto_label(dash, int(i))
        if lab is not None:
            out[int(i)] = lab
    return out


def feature_json(dash: FeatureDashboards, feature: int, *, label: str | None = None, model: str | None = None,
                 source: str | None = None) -> dict:
    """One feature's dashboard as a plain dict (layout in ``docs/dashboards.md``; Neuronpedia names where
    its activation export has the same thing: ``activations[].tokens``, ``values``, ``maxValue``,
    ``maxValueTokenIndex``, ``pos_str``/``pos_values``, ``neg_str``/``neg_values``, ``frac_nonzero``,
    ``freq_hist_data_bar_heights``/``freq_hist_data_bar_values``)."""
    i = int(feature)
    counts = dash.hist[i]
    centres = np.sqrt(dash.edges[:-1] * dash.edges[1:])
    d: dict[str, Any] = {
        "modelId": model, "layer": dash.layer, "source": source, "index": i,
        "label": label, "autoLabel": auto_label(dash, i), "labelIsAutomatic": label is None,
        "frac_nonzero": float(dash.density[i]), "n_tokens": dash.n_tokens,
        "maxActApprox": float(dash.value[i, 0]),
        "freq_hist_data_bar_heights": [int(x) for x in counts],
        "freq_hist_data_bar_values": [round(float(x), 6) for x in centres],
        "freq_hist_bin_edges": [round(float(x), 6) for x in dash.edges],
        "activations": dash.contexts(i),
    }
    if dash.logit_ids is not None:
        d.update(pos_str=[dash.text(t) for t in dash.logit_ids[i]], pos_token_ids=[int(t) for t in dash.logit_ids[i]],
                 pos_values=[round(float(v), 4) for v in dash.logit_values[i]],
                 neg_str=[dash.text(t) for t in dash.neg_ids[i]], neg_token_ids=[int(t) for t in dash.neg_ids[i]],
                 neg_values=[round(float(v), 4) for v in dash.neg_values[i]])
    return d


def export_json(dash: FeatureDashboards, out: str | Path, *, labels: dict[int, str] | None = None,
                features=None, model: str | None = None, source: str | None = None) -> list[Path]:
    """Write ``OUT/layer_L/<index>.json`` per feature (``features``: all that fired); user ``labels`` win
    over the automatic label.  Returns the paths written."""
    labels = labels or {}
    ids = [i for i in range(dash.n_features) if dash.value[i, 0] > 0] if features is None else [int(i) for i in features]
    paths = []
    for i in ids:
        d = feature_json(dash, i, label=labels.get(i), model=model, source=source)
        p = Path(out) / f"layer_{dash.layer}" / f"{i}.json"
        atomic_write_text(p, json.dumps(d, ensure_ascii=False, allow_nan=False, indent=1) + "\n")
        paths.append(p)
    return paths


__all__ = ["FeatureDashboards", "merge_shards", "logit_effects", "write_logit_effects", "read_logits",
           "logits_path", "logits_cache_path", "auto_label", "auto_labels", "feature_json", "export_json", "AUTO_PREFIX"]
