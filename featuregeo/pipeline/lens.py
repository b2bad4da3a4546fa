"""Lens pipeline: validate everything, load the model, train/evaluate the lenses and probes (resumable), save, plot.

``run(model, out, params, corpus=..., lens=...)`` writes into ``out``:

* ``lens.json`` / ``lens.npz`` / ``lens.csv`` — the :class:`~featuregeo.tl.lens.LensResult`
  (one table row per layer and lens);
* ``tuned_lens/`` — the translators (``config.json`` + ``params.safetensors``), reloadable with
  ``--lens out/tuned_lens`` without retraining;
* ``lens_curves.png``, ``lens_trajectory.png``, ``lens_probes.png`` (:func:`featuregeo.pl.lens.figure_names`);
* ``.checkpoint/`` — the vocabulary subset, one translator per layer, the evaluation, each probe and
  causal check; a rerun with the same inputs reuses them.

Options, the corpus and the lens file are checked before the model is loaded; the layers, the
model's read-out and the lens's model before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.pipeline.common import log, output_dir
from featuregeo.tl.lens import LensParams, LensResult, TunedLens

__all__ = ["run", "LENS_DIR", "pretrained_lens_dir"]

LENS_DIR = "tuned_lens"


def pretrained_lens_dir() -> Path:
    """Where the tuned lens of the default model ships (``featuregeo/data/default_suite/lenses``)."""
    from featuregeo.io.sources import DEFAULT_SUITE_DIR

    return DEFAULT_SUITE_DIR / "lenses"


def _check_out(out) -> Path:
    out = Path(out)
    for p in [out, *out.parents]:
        if p.exists():
            if not p.is_dir():
                raise InputError(f"--out {out}: expected a directory; {p} is a file")
            break
    return out


def run(model: Any, out: str | os.PathLike, params: LensParams | None = None, *, corpus=None,
        lens: str | os.PathLike | TunedLens | None = None, pretrained: bool = False,
        progress: Callable[[str], None] | None = log) -> LensResult:
    """Lenses and probes of ``model``; writes the result, the tuned lens, figures and checkpoint into ``out``.

    Parameters
    ----------
    model : str or LoadedModel
        A name/path for :func:`featuregeo.io.models.load_model` (``"default"``: Gemma 3 270M).
    out : path
    params : LensParams, optional
    corpus : str, Corpus or None
        ``"builtin"`` (default), a file, a folder or ``hf:NAME`` (:func:`featuregeo.io.corpus.load_corpus`).
    lens : path or TunedLens, optional
        A tuned lens saved by an earlier run (``OUT/tuned_lens``): its layers are not retrained.
    pretrained : bool, default=False
        Use the tuned lens shipped with the default suite (:func:`pretrained_lens_dir`; Gemma 3 270M
        only): nothing is trained.  With :meth:`LensParams.demo` this takes seconds.
    progress : callable or None

    Returns
    -------
    LensResult

    Examples
    --------
    >>> res = run("default", "out/lens", LensParams.fast())      # doctest: +SKIP
    >>> res = run("default", "out/lens", LensParams.demo(), pretrained=True)   # doctest: +SKIP
    """
    from featuregeo.io.corpus import Corpus, load_corpus
    from featuregeo.io.models import LoadedModel, load_model
    from featuregeo.pl import lens as plot
    from featuregeo.tl import lens as tl

    params = params if params is not None else LensParams()
    if not isinstance(params, LensParams):
        raise InputError(f"params: expected LensParams. Got {type(params).__name__} instead.")
    params.validate()
    out = _check_out(out)
    if corpus is None or isinstance(corpus, (str, os.PathLike)):
        corpus = load_corpus("builtin" if corpus is None else corpus)
    elif not isinstance(corpus, Corpus):
        raise InputError(f"--corpus: expected a corpus name or path. Got {type(corpus).__name__} instead.")
    if len(corpus) == 0:
        raise InputError(f"--corpus {getattr(corpus, 'name', '')}: empty; expected at least one document")
    if pretrained:
        if lens is not None:
            raise InputError("--pretrained: expected either --pretrained or --lens, not both")
        if not (pretrained_lens_dir() / "config.json").is_file():
            raise InputError(f"--pretrained: no shipped tuned lens in {pretrained_lens_dir()}; expected "
                             "featuregeo/data/default_suite/lenses (config.json + params.safetensors)")
        lens = pretrained_lens_dir()
    if lens is not None and not isinstance(lens, TunedLens):
        lens = TunedLens.load(lens)
    if lens is not None and isinstance(model, (str, os.PathLike)) and str(lens.identity.get("model")) != str(model):
        raise InputError(f"--lens: trained for model {lens.identity.get('model')!r}; expected a lens for {str(model)!r}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    tl.check_inputs(loaded, params, lens)
    data = tl.lens_data(loaded.tokenizer, corpus, params)
    out = output_dir(out)
    if progress:
        progress(f"lens: {loaded.name} ({loaded.n_layers} blocks) on {len(corpus)} documents -> {out}")
    with Checkpoint(out / ".checkpoint") as ck:
        result = tl.analyze(loaded, corpus, params, data=data, lens=lens, checkpoint=ck, progress=progress)
        result.save(out)
        result.tuned_lens.save(out / LENS_DIR)
        plot.plot_all(result, out)
    return result
