"""Parameters of the lens analysis."""

from __future__ import annotations

from dataclasses import dataclass

from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, check_choice, check_float, check_int

__all__ = ["LensParams", "DEFAULT_SENTENCE"]

DEFAULT_SENTENCE = "The Eiffel Tower is in the city of Paris, and the Colosseum is in the city of Rome."


@dataclass(frozen=True)
class LensParams(Params):
    """Tuning parameters of :func:`featuregeo.tl.lens.analyze`.

    Parameters
    ----------
    layers : tuple of int or None, default=None
        Blocks to read (None: all).  The last block is always read too (it defines the final distribution).
    block_len : int, default=128
        Predicted positions per row (rows hold BOS + ``block_len + 1`` tokens).
    train_tokens : int, default=32768
        Training-split tokens whose hidden states train the tuned lens (up to 4 rows per document).
    chunk_tokens : int, default=8192
        Training tokens read (hidden states of every layer, final-distribution targets) and trained
        on at a time; the steps are spread evenly over the chunks, and the training resumes after
        the last finished chunk.
    eval_tokens : int, default=8192
        Held-out tokens for evaluation (one row per document; documents are the bootstrap blocks).
    held_out : float, default=0.1
        Fraction of documents in the held-out split.
    vocab_subset : int, default=8192
        Train on this fixed vocabulary subset (the tokens with the most final-distribution mass on
        ``subset_tokens`` training tokens) plus one "rest" bucket, in both distributions; 0 = full
        vocabulary (exact, ~30x slower).  Evaluation always uses the full vocabulary.
    vocab_sample : int, default=1024
        Complement tokens drawn uniformly per step to estimate the rest bucket's mass (each stands
        for ``|complement| / vocab_sample`` tokens; 0 = plain renormalisation on the subset).
    subset_tokens : int, default=2048
    steps : int, default=256
        Optimiser steps (every layer's translator is updated at every step).
    batch_tokens : int, default=512
    lr : float, default=2e-3
        Adam learning rate of the bias (``A``: ``lr / sqrt(d_model)``), linear decay to 0, gradient
        clipping at 1.0.
    train_dtype : {"float32", "bfloat16"}, default="bfloat16"
        Precision of the training unembedding matmuls (softmax, loss and parameters stay float32).
    eval_dtype : {"float32", "bfloat16"}, default="bfloat16"
        Precision of the evaluation unembedding matmul for the lens predictions (the final
        distribution and the next-token logit are always float32; bfloat16 moves the mean
        metrics by ~1e-3 nats, see the benchmark).
    n_boot : int, default=1000
        Bootstrap resamples of the held-out documents for the 95 % intervals.
    probes : bool, default=True
        Fit genre and Python-token-category probes per layer.
    probe_tokens : int, default=4096
        Training tokens per probe (test: the held-out tokens).
    causal_layers : tuple of int, default=(3, 8, 13)
        Layers of the causal check (mean-ablate the probe directions); ``()`` skips it.
    causal_rows : int, default=4
        Held-out rows for the ablated loss.
    causal_random : int, default=3
        Random direction sets (same count, unit norm) per check.
    sentence : str
        The sentence of the prediction-trajectory figure.
    seed : int, default=0
    """

    layers: tuple[int, ...] | None = None
    block_len: int = 128
    train_tokens: int = 32768
    chunk_tokens: int = 8192
    eval_tokens: int = 8192
    held_out: float = 0.1
    vocab_subset: int = 8192
    vocab_sample: int = 1024
    subset_tokens: int = 2048
    steps: int = 256
    batch_tokens: int = 512
    lr: float = 2e-3
    train_dtype: str = "bfloat16"
    eval_dtype: str = "bfloat16"
    n_boot: int = 1000
    probes: bool = True
    probe_tokens: int = 4096
    causal_layers: tuple[int, ...] = (3, 8, 13)
    causal_rows: int = 4
    causal_random: int = 3
    sentence: str = DEFAULT_SENTENCE
    seed: int = 0

    @classmethod
    def demo(cls, **changes) -> "LensParams":
        """Evaluation only, on 256 held-out tokens (8 documents x 32), for pretrained lenses (seconds)."""
        base = dict(block_len=32, train_tokens=32, eval_tokens=256, steps=0, n_boot=200, probes=False)
        base.update(changes)
        return cls(**base)

    @classmethod
    def fast(cls, **changes) -> "LensParams":
        """Small settings for a quick look (minutes on 2 cores)."""
        base = dict(block_len=64, train_tokens=4096, eval_tokens=1024, vocab_subset=4096, subset_tokens=512,
                    steps=60, batch_tokens=256, n_boot=200, probe_tokens=1024, causal_layers=(6,),
                    causal_rows=2, causal_random=2)
        base.update(changes)
        return cls(**base)

    def validate(self) -> "LensParams":
        if self.layers is not None:
            if not isinstance(self.layers, (tuple, list)) or not self.layers:
                raise InputError(f"layers: expected a non-empty tuple of layer numbers or None. Got {self.layers!r} instead.")
            for x in self.layers:
                check_int("layers", x, minimum=0)
        check_int("block_len", self.block_len, minimum=2)
        check_int("train_tokens", self.train_tokens, minimum=1)
        check_int("chunk_tokens", self.chunk_tokens, minimum=1)
        check_int("eval_tokens", self.eval_tokens, minimum=1)
        check_float("held_out", self.held_out, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("vocab_subset", self.vocab_subset, minimum=0)
        if 0 < self.vocab_subset < 2:
            raise InputError(f"vocab_subset: expected 0 (full vocabulary) or an integer >= 2. Got {self.vocab_subset!r} instead.")
        check_int("vocab_sample", self.vocab_sample, minimum=0)
        check_int("subset_tokens", self.subset_tokens, minimum=1)
        check_int("steps", self.steps, minimum=0)
        check_int("batch_tokens", self.batch_tokens, minimum=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_choice("train_dtype", self.train_dtype, ("float32", "bfloat16"))
        check_choice("eval_dtype", self.eval_dtype, ("float32", "bfloat16"))
        check_int("n_boot", self.n_boot, minimum=10)
        if not isinstance(self.probes, bool):
            raise InputError(f"probes: expected True or False. Got {self.probes!r} instead.")
        check_int("probe_tokens", self.probe_tokens, minimum=10)
        if not isinstance(self.causal_layers, (tuple, list)):
            raise InputError(f"causal_layers: expected a tuple of layer numbers. Got {self.causal_layers!r} instead.")
        for x in self.causal_layers:
            check_int("causal_layers", x, minimum=0)
        check_int("causal_rows", self.causal_rows, minimum=1)
        check_int("causal_random", self.causal_random, minimum=1)
        if not isinstance(self.sentence, str) or not self.sentence.strip():
            raise InputError(f"sentence: expected a non-empty text. Got {self.sentence!r} instead.")
        check_int("seed", self.seed, minimum=0)
        return self
