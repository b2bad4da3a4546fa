"""``featuregeo demo``: the main analyses on the embedded default — the SAE suite shipped with
featuregeo (trained on Gemma 3 270M), the real model and the built-in offline corpus.

Stages (:data:`STAGES`), each through its pipeline, so each resumes: load the model; a harvest of
held-out blocks whose one forward pass also keeps the residuals the galaxy and the layer comparison
need (:mod:`featuregeo.demo.shared`); galaxy on every shipped layer against the spectrum of those
raw activations; lobes at an early, a middle and a late layer; atoms there; the layer comparison
with its pruning check; the logit lens and the shipped tuned lens on held-out text; the atlas (UMAP
layout) with every figure; the findings report.  ``DIR/summary.json`` is rewritten after every
stage, with the seconds each took (``seconds``) and the settings (``settings``; which of them are
smaller than ``--full``).

Sizes (:mod:`featuregeo.demo.settings`): the default fits about three minutes on two cores;
``full=True`` keeps the larger statistics; ``fast=True`` is for smoke tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_json
from featuregeo.demo.settings import PRESETS, DemoSettings, settings_for
from featuregeo.demo.summary import (atoms_summary, galaxy_summary, layers_summary, lens_summary,
                                     lobes_summary, print_summary)
from featuregeo.io.sources import DEFAULT_SUITE_DIR
from featuregeo.pipeline.common import log, output_dir

__all__ = ["run_demo", "prepare", "heldout_activations", "LOBE_LAYERS", "STAGES", "Demo", "DemoSettings", "PRESETS",
           "settings_for"]

LOBE_LAYERS = (3, 9, 15)  # early, middle, late
#: the default suite's robustness table (analyses/robustness_study.py): the report's spread across SAEs
SUITE_ROBUSTNESS = DEFAULT_SUITE_DIR / "robustness"


def heldout_activations(model, layers, *, n_blocks: int = 24, block_len: int = 256, seed: int = 0) -> dict[int, np.ndarray]:
    """Raw residual activations (float32) of ``model`` on held-out built-in text, genres balanced
    (a forward pass of its own; the demo takes them from its harvest instead)."""
    from featuregeo.io.corpus import blocks, builtin_corpus
    from featuregeo.io.models import residual_stream

    _, held = builtin_corpus().split(0.1, seed=seed)
    by = {g: list(held.by_genre(g)) for g in held.genres}
    per = max(1, n_blocks // max(1, len(by)))
    rows = []
    for g in sorted(by):
        rows += [b.input_ids for b in blocks(by[g], model.tokenizer, block_len, add_bos=True, max_blocks=per,
                                             max_blocks_per_doc=2)]
    acts = residual_stream(model, rows, list(layers), batch_size=8, seq_len=None, add_bos=False, drop_bos=True)
    return {L: np.asarray(a.reshape(-1, a.shape[-1]), dtype=np.float32) for L, a in acts.items()}


@dataclass
class Demo:
    """What the stages share: the output directory, the suite, the settings, the model, results so far."""

    out: Path
    source: str
    suite: Any
    settings: DemoSettings
    model: Any = None
    summary: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    representations: Any = None  # the layer comparison's representations, when the harvest's pass read them
    chosen_layers: bool = False  # the caller chose the layers (the lens then reads only those and the last)

    @property
    def layers(self) -> list[int]:
        return list(self.suite.layers)

    @property
    def focus(self) -> list[int]:
        return [L for L in LOBE_LAYERS if L in self.layers] or self.layers[-1:]

    def layers_params(self):
        from featuregeo.tl.layers import LayersParams

        return LayersParams.fast(**self.settings.layers)


def stage_model(d: Demo) -> None:
    from featuregeo.io.models import load_model

    log(f"demo: {len(d.layers)} layers of the shipped SAE suite ({d.settings.name} settings); loading the model")
    d.model = d.model or load_model("default")
    d.summary["model"] = str(d.model.name)


def stage_harvest(d: Demo) -> None:
    """The harvest of held-out blocks; its forward pass also keeps the galaxy's and the layer comparison's
    residuals (:mod:`featuregeo.demo.shared`)."""
    from featuregeo.demo import shared
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.io.harvest import HarvestParams
    from featuregeo.pipeline import harvest as harvest_pipeline

    s, model = d.settings, d.model
    _, held = builtin_corpus().split(0.1, seed=0)
    corpus = held.interleaved()
    hp = HarvestParams(block_len=s.block_len, batch_size=16, shard_blocks=64, max_blocks=s.harvest_blocks,
                       max_blocks_per_doc=2)
    lp = d.layers_params()
    prefix = shared.harvest_prefix(corpus, model.tokenizer, block_len=s.block_len, max_blocks=s.harvest_blocks,
                                   max_blocks_per_doc=2, need_blocks=s.galaxy_blocks, need_docs=lp.n_blocks)
    gtap = shared.galaxy_tap(prefix, d.layers, s.galaxy_blocks)
    rows, ltap = shared.layer_rows(prefix, corpus, model.tokenizer, lp, model.n_layers)
    acts_path = d.out / "heldout_activations.npz"
    have_acts = shared.activations_ready(acts_path, gtap, model.name)
    log(f"demo: harvesting which features fire in {s.harvest_blocks} held-out blocks; the same forward pass keeps "
        f"the galaxy's activations ({s.galaxy_blocks} blocks) and the layer comparison's rows ({lp.n_blocks})")
    hv = harvest_pipeline.run(d.source, d.out / "harvest", hp, model=model, corpus=corpus, split="all",
                              order="corpus", layers=d.layers, taps=[ltap] + ([] if have_acts else [gtap]))
    shared_rows = {"galaxy": 0 if have_acts else len(gtap.order) - len(gtap.missing()),
                   "layers": len(ltap.order) - len(ltap.missing())}
    if not have_acts:
        if gtap.missing():  # a resumed harvest skips finished shards: read those rows on their own
            log(f"demo: reading {len(gtap.missing())} blocks the resumed harvest did not run again")
            gtap.fill(model)
        shared.save_activations(acts_path, gtap, model.name)
    d.representations = None if ltap.missing() else ltap.stack()  # else the layer stage resumes or reads them
    d.results["layer_rows"] = rows
    d.summary["harvest"] = {"dir": str(d.out / "harvest"), "blocks": hv.n_blocks, "layers": hv.sae_layers,
                            "block_len": s.block_len}
    d.summary["shared_forward_pass"] = {
        "activations": str(acts_path), "galaxy_blocks": s.galaxy_blocks,
        "galaxy_tokens_per_layer": s.galaxy_blocks * s.block_len, "layer_rows": lp.n_blocks,
        "layer_row_len": lp.block_len, "rows_from_this_runs_harvest_pass": shared_rows,
        "separate_forward_passes": "atoms (word pairs), the pruning check (blocks dropped, other documents) and "
                                   "the lens (its own 8 held-out documents x 16 tokens at every layer: a "
                                   "fraction of a second beside the full-vocabulary evaluation)"}


def stage_galaxy(d: Demo) -> None:
    from featuregeo.pipeline import galaxy as galaxy_pipeline
    from featuregeo.tl.galaxy import GalaxyParams

    s = d.settings
    gal = galaxy_pipeline.run(d.source, d.out / "galaxy", GalaxyParams(entropy_repeats=s.entropy_repeats,
                                                                      slope_bootstrap=s.slope_bootstrap),
                              layers=d.layers, activations=d.out / "heldout_activations.npz")
    d.results["galaxy"] = gal
    d.summary["galaxy"] = galaxy_summary(gal, d.out / "galaxy")


def stage_lobes(d: Demo) -> None:
    from featuregeo.pipeline import lobes as lobes_pipeline
    from featuregeo.tl.lobes import LobesParams

    log(f"demo: lobes at layers {d.focus}")
    lob = lobes_pipeline.run(d.source, d.out / "harvest", d.out / "lobes",
                             LobesParams(heldout_fraction=0.25, **d.settings.lobes), layers=d.focus)
    d.summary["lobes"] = {"dir": str(d.out / "lobes"), "layers": lobes_summary(lob)}


def stage_atoms(d: Demo) -> None:
    from featuregeo.pipeline import atoms as atoms_pipeline

    log(f"demo: atoms at layers {d.focus} (word pairs: forward passes of their own)")
    atoms = atoms_pipeline.run(d.model, d.focus, d.out / "atoms", sae=d.source, fast=True)
    d.summary["atoms"] = {"dir": str(d.out / "atoms"), "layers": {x.layer: atoms_summary(x) for x in atoms.layers}}


def stage_layers(d: Demo) -> None:
    from featuregeo.pipeline import layers as layers_pipeline

    log("demo: comparing layers (representations from the harvest's forward pass; the pruning check runs "
        "the model with blocks dropped)")
    lay = layers_pipeline.run(d.model, d.out / "layers", d.layers_params(), sae=d.suite,
                              galaxy=str(d.out / "galaxy" / "galaxy.json"), heldout=d.results.get("layer_rows"),
                              representations=d.representations)
    d.representations = None
    d.summary["layers_comparison"] = {"dir": str(d.out / "layers"), **layers_summary(lay)}


def stage_lens(d: Demo) -> None:
    """The logit lens and the tuned lens shipped with the default suite, evaluated on held-out text
    (no training: :meth:`LensParams.demo <featuregeo.tl.lens.LensParams.demo>`)."""
    from featuregeo.pipeline import lens as lens_pipeline
    from featuregeo.tl.lens import LensParams

    log("demo: logit lens and the shipped tuned lens on held-out text")
    sel = {"layers": tuple(L for L in d.layers if L < d.model.n_layers - 1) or None} if d.chosen_layers else {}
    res = lens_pipeline.run(d.model, d.out / "lens", LensParams.demo(**{**d.settings.lens, **sel}), pretrained=True)
    d.summary["lens"] = {"dir": str(d.out / "lens"), **lens_summary(res)}


def stage_atlas(d: Demo) -> None:
    from featuregeo.atlas import AtlasParams
    from featuregeo.pipeline import atlas as atlas_pipeline

    log(f"demo: writing the feature atlas ({d.settings.atlas_layout} layout)")
    atlas_pipeline.run(d.source, d.out / "atlas", layers=d.layers, params=AtlasParams(layout=d.settings.atlas_layout,
                                                                          umap_epochs=d.settings.umap_epochs),
                       lobes=d.out / "lobes", atoms=d.out / "atoms", galaxy=d.out / "galaxy",
                       harvest=d.out / "harvest", figures={"layers": d.out / "layers", "lens": d.out / "lens"})
    d.summary["atlas"] = str(d.out / "atlas" / "index.html")


def stage_report(d: Demo) -> None:
    from featuregeo.pipeline import report as report_pipeline

    log("demo: writing the findings report (each claim of the paper beside what was measured above)")
    dirs = [d.out]
    if d.source == "default" and (SUITE_ROBUSTNESS / "robustness.csv").is_file():
        dirs.append(SUITE_ROBUSTNESS)  # each claim's spread across SAEs of other widths / seeds and the lobes study
    rep = report_pipeline.run(dirs, d.out / "report.html", progress=None)
    d.summary["report"] = str(rep.html)


#: the demo's stages in order: ``(name, function(Demo))``; each fills ``Demo.summary`` and is timed
#: under its name in ``summary.json["seconds"]``.
STAGES: tuple[tuple[str, Callable[[Demo], None]], ...] = (
    ("model", stage_model),
    ("harvest", stage_harvest),
    ("galaxy", stage_galaxy),
    ("lobes", stage_lobes),
    ("atoms", stage_atoms),
    ("layers", stage_layers),
    ("lens", stage_lens),
    ("atlas", stage_atlas),
    ("report", stage_report),
)


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, GB (``ru_maxrss``; 0 where unavailable)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


#: stages after which freed memory goes back to the system: after every stage the demo's peak RSS is
#: 3.0 GB instead of 3.9 GB but it runs ~14 s longer (pages are faulted in again); these two free the most
TRIM_AFTER = ("harvest", "layers")


def release_memory() -> None:
    """Give memory freed by a finished stage back to the system (glibc's ``malloc_trim``), so the next
    stage's peak starts from what is still in use; a no-op where glibc is absent."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def prepare(source: str = "default") -> int:
    """Set-up's one-off work for the demo: the logit effects of every shipped SAE on the default model
    (the dashboards' logit tables) go to the user cache, so the demo's harvest reads them instead of
    computing them (about 5 s per layer).  Returns the number of layers computed."""
    from featuregeo.io import open_suite
    from featuregeo.io.harvest.dashboards import cache_logit_effects
    from featuregeo.io.models import load_model
    from featuregeo.pipeline.harvest import load_saes

    return cache_logit_effects(load_model("default"), load_saes(open_suite(source)))


def run_demo(out: str | Path, *, fast: bool = False, full: bool = False, source: str = "default",
             layers: Sequence[int] | None = None, model=None) -> int:
    """Every stage of :data:`STAGES` on the shipped default; writes ``out/summary.json`` and prints a summary.

    ``fast`` (smoke tests) and ``full`` (the larger statistics) choose the sizes
    (:mod:`featuregeo.demo.settings`); ``model`` (a LoadedModel) skips loading the default model
    (tests pass their session model).  A rerun in the same ``out`` resumes every finished stage.
    """
    from featuregeo.io import open_suite

    if fast and full:
        raise InputError("--fast, --full: expected at most one of them")
    t0 = time.perf_counter()
    suite = open_suite(source, list(layers) if layers is not None else None)  # bad layers fail here, first
    out = output_dir(out)
    settings = settings_for(fast=fast, full=full)
    d = Demo(out=out, source=source, suite=suite, settings=settings, model=model, chosen_layers=layers is not None)
    timings: dict[str, float] = {}
    rss: dict[str, float] = {}
    d.summary.update(source=source, layers=d.layers, seconds=timings, peak_rss_gb=rss,
                     settings={"name": settings.name, **settings.to_dict(), "reduced": settings.reduced()})
    for name, stage in STAGES:
        t = time.perf_counter()
        stage(d)
        timings.pop("total", None)
        timings[name] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        rss[name] = peak_rss_gb()  # the process's peak so far: the stage that raised it is the first at it
        if name in TRIM_AFTER:
            release_memory()
        atomic_write_json(out / "summary.json", d.summary)
    print_summary(d.summary, d.results["galaxy"], out)
    return 0
