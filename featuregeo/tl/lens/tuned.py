"""The tuned lens: one affine translator per layer, trained to match the final distribution.

``lens_l(h) = readout(h + A_l h + b_l)`` with ``A_l`` and ``b_l`` initialised at zero, so training
starts at the logit lens (Belrose et al. 2023, arXiv 2303.08112).  Loss: KL(p_final || q_l) at the
same position.  Training choices (ours, not the reference's):

* **vocabulary subset** — with a 262k vocabulary one unembedding costs ~0.34 GFLOP per token, so
  training uses a fixed subset of ``k`` tokens (those with the most final-distribution mass on a
  sample of training tokens) plus one "rest" bucket whose mass is estimated, in both distributions
  alike, from ``n_sample`` complement tokens drawn uniformly per step (a sampled softmax).  Without
  the bucket a lens is never told to lower the logits of tokens outside the subset.  Evaluation
  always uses the full vocabulary.  All layers train in the same pass
  (:func:`featuregeo.tl.lens.train.train_lenses`).
* **optimiser** — Adam, linear decay to zero, gradient clipping at 1.0, ``b`` parametrised in units
  of the layer's residual RMS (the residual norms of Gemma grow by 10x with depth; this makes one
  learning rate fit every layer), ``A`` at ``lr / sqrt(d)``.  Seeded minibatches.

Saved form (:meth:`TunedLens.save`): a folder with ``config.json`` (format, model identity, layers,
training settings) and ``params.safetensors`` (``layer_<L>.weight`` = A, ``layer_<L>.bias`` = b,
``subset``) — no pickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, atomic_write_json
from featuregeo.io.lens_hooks import Readout

__all__ = ["LENS_FORMAT", "TunedLens", "translate", "train_translator", "choose_subset", "subset_readout"]

LENS_FORMAT = "featuregeo-tuned-lens"
LENS_VERSION = 1


def translate(h, A, b):
    """``h + h @ A.T + b`` (torch tensors)."""
    return h + h @ A.T + b


def subset_readout(readout: Readout, subset) -> Readout:
    """A :class:`Readout` restricted to vocabulary rows ``subset`` (None: the readout itself)."""
    if subset is None:
        return readout
    import torch

    idx = torch.as_tensor(np.asarray(subset), dtype=torch.long)
    return Readout(norm=readout.norm, weight=readout.weight[idx].clone(),
                   bias=None if readout.bias is None else readout.bias[idx].clone(), softcap=readout.softcap)


def choose_subset(final_logits, k: int) -> np.ndarray:
    """The ``k`` vocabulary entries with the most total probability under the final distributions.

    Parameters
    ----------
    final_logits : torch.Tensor [n, vocab]
    k : int

    Returns
    -------
    ndarray [k] of int64, sorted.
    """
    import torch

    mass = torch.softmax(final_logits.float(), dim=-1).sum(0)
    k = min(int(k), int(mass.shape[0]))
    top = torch.topk(mass, k).indices.numpy().astype(np.int64)
    return np.sort(top)


def train_translator(h, h_final, readout: Readout, *, subset=None, n_sample: int = 1024, steps: int, batch: int,
                     lr: float, seed: int, dtype: str = "float32", progress: Callable[[str], None] | None = None
                     ) -> dict[str, np.ndarray]:
    """Train one affine translator by minimising KL(p_final || q) on in-memory states.

    A one-layer, one-chunk call of :func:`featuregeo.tl.lens.train.train_lenses` (see there for the
    objective: KL on ``subset`` plus a "rest" bucket estimated from ``n_sample`` sampled complement
    tokens; ``subset=None``: the exact full-vocabulary KL).

    Parameters
    ----------
    h : torch.Tensor [n, d], float32
        Hidden states of one layer (training tokens).
    h_final : torch.Tensor [n, d]
        Hidden states of the last block at the same tokens: ``readout.logits(h_final)`` is the target.
    readout : Readout
    subset : array of int, optional
        Training vocabulary subset (None: the full vocabulary, exact).
    n_sample : int, default=1024
    steps, batch : int
        Adam steps and tokens per step.
    lr : float
    seed : int
    dtype : {"float32", "bfloat16"}, default="float32"
        Precision of the unembedding matmuls.

    Returns
    -------
    dict
        ``A`` [d, d], ``b`` [d] (float32, original units) and ``loss`` [steps] (nats, the training KL
        estimate of each step's batch).
    """
    from featuregeo.tl.lens.train import train_lenses, translator

    st = train_lenses(lambda c: {0: h, "final": h_final}, 1, [0], readout, subset=subset, n_sample=n_sample,
                      steps=steps, batch=batch, lr=lr, seed=seed, dtype=dtype, progress=progress)
    return translator(st, 0)


@dataclass
class TunedLens:
    """Trained translators of one model, with the identity of the model they belong to.

    Attributes
    ----------
    identity : dict
        ``model``, ``n_layers``, ``d_model``, ``vocab`` (:func:`featuregeo.io.lens_hooks.model_identity`).
    weights : dict layer -> ndarray [d, d]
        The ``A`` of each translated layer.
    biases : dict layer -> ndarray [d]
    subset : ndarray of int64 or None
        The training vocabulary subset (None: full vocabulary).
    config : dict
        Training settings (for the record).
    """

    identity: dict
    weights: dict = field(default_factory=dict)
    biases: dict = field(default_factory=dict)
    subset: np.ndarray | None = None
    config: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.weights)

    def torch_params(self, layer: int):
        """``(A, b)`` of ``layer`` as torch tensors (zeros for an untranslated layer, e.g. the last)."""
        import torch

        d = int(self.identity["d_model"])
        if layer not in self.weights:
            return torch.zeros(d, d), torch.zeros(d)
        return torch.as_tensor(self.weights[layer]), torch.as_tensor(self.biases[layer])

    def check(self, identity: dict, where: str = "lens") -> "TunedLens":
        """Raise a one-line InputError unless this lens was trained for the model ``identity``."""
        mine = {k: self.identity.get(k) for k in ("model", "d_model", "vocab", "n_layers")}
        theirs = {k: identity.get(k) for k in mine}
        if mine != theirs:
            raise InputError(f"{where}: trained for model {mine['model']!r} (d_model {mine['d_model']}, vocab "
                             f"{mine['vocab']}, {mine['n_layers']} layers); expected a lens for {theirs['model']!r} "
                             f"(d_model {theirs['d_model']}, vocab {theirs['vocab']}, {theirs['n_layers']} layers)")
        return self

    def save(self, directory: str | os.PathLike, *, weight_dtype: str = "float32") -> Path:
        """Write ``config.json`` + ``params.safetensors`` into ``directory``; returns the directory.

        ``weight_dtype="float16"`` halves the file (the ``A`` matrices; biases stay float32, since
        residual coordinates exceed the float16 range); ``"int8"`` quarters it: each row of ``A`` is
        stored as int8 with a float32 scale (``layer_<L>.weight_scale``, the row's max |a| / 127, so an
        entry is off by at most half a step).  :meth:`load` returns float32 in every case.
        """
        from safetensors.numpy import save

        if weight_dtype not in ("float32", "float16", "int8"):
            raise InputError(f"weight_dtype: expected 'float32', 'float16' or 'int8'. Got {weight_dtype!r} instead.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for L in self.layers:
            A = np.asarray(self.weights[L], dtype=np.float32)
            if weight_dtype == "int8":
                scale = np.abs(A).max(axis=1) / 127.0
                scale[scale == 0] = 1.0
                tensors[f"layer_{L}.weight"] = np.ascontiguousarray(np.rint(A / scale[:, None]).astype(np.int8))
                tensors[f"layer_{L}.weight_scale"] = scale.astype(np.float32)
            else:
                tensors[f"layer_{L}.weight"] = np.ascontiguousarray(A, dtype=weight_dtype)
            tensors[f"layer_{L}.bias"] = np.ascontiguousarray(self.biases[L], dtype=np.float32)
        if self.subset is not None:
            tensors["subset"] = np.ascontiguousarray(self.subset, dtype=np.int64)
        atomic_write_bytes(directory / "params.safetensors", save(tensors))
        atomic_write_json(directory / "config.json", {"format": LENS_FORMAT, "version": LENS_VERSION,
                                                     **self.identity, "layers": self.layers,
                                                     "training": self.config})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, identity: dict | None = None) -> "TunedLens":
        """Read a lens folder; with ``identity``, check it belongs to that model (one-line InputError)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        directory = Path(directory)
        cfg_path = directory / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"--lens {directory}: no config.json; expected a folder written by featuregeo lens "
                             "(config.json + params.safetensors)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"--lens {cfg_path}: not readable JSON ({type(e).__name__}); expected a tuned-lens "
                             "config written by featuregeo") from None
        if not isinstance(cfg, dict) or cfg.get("format") != LENS_FORMAT:
            got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
            raise InputError(f"--lens {cfg_path}: expected format {LENS_FORMAT!r}. Got {got!r} instead.")
        try:
            arrays = load_file(str(directory / "params.safetensors"))
        except (FileNotFoundError, SafetensorError, OSError) as e:
            raise InputError(f"--lens {directory}: params.safetensors missing or damaged ({type(e).__name__}); "
                             "expected the file written with config.json") from None
        ident = {k: cfg.get(k) for k in ("model", "n_layers", "d_model", "vocab")}
        lens = cls(identity=ident, subset=arrays.get("subset"), config=cfg.get("training", {}))
        d = ident["d_model"]
        for L in cfg.get("layers", []):
            A, b = arrays.get(f"layer_{L}.weight"), arrays.get(f"layer_{L}.bias")
            if A is None or b is None or A.shape != (d, d) or b.shape != (d,):
                raise InputError(f"--lens {directory}: layer {L} is missing or not [{d}, {d}] / [{d}]; expected a "
                                 "complete lens file")
            scale = arrays.get(f"layer_{L}.weight_scale")
            if A.dtype == np.int8 and (scale is None or scale.shape != (d,)):
                raise InputError(f"--lens {directory}: layer {L} is int8 without a [{d}] weight_scale; expected "
                                 "a complete lens file")
            lens.weights[int(L)] = (A.astype(np.float32) * scale[:, None].astype(np.float32) if A.dtype == np.int8
                                    else np.asarray(A, dtype=np.float32))
            lens.biases[int(L)] = np.asarray(b, dtype=np.float32)
        if identity is not None:
            lens.check(identity, where=f"--lens {directory}")
        return lens
