"""Command-line interface: parse arguments, call the library, save results.  No maths here.

Bad input exits with code 2 and a one-line message (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXIT_BAD_INPUT = 2


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fit_ranks(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.replace("..", ",").replace("-", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two ranks like '11,150'. Got {text!r} instead.") from None
    if not 1 <= a < b:
        raise argparse.ArgumentTypeError(f"expected ranks 1 <= a < b. Got {text!r} instead.")
    return a, b


def _add_galaxy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("galaxy")
    g.add_argument("--fit-ranks", type=_fit_ranks, default=(11, 150), metavar="A,B",
                   help="rank window of the power-law fit (1-based, inclusive; default 11,150 as the paper)")
    g.add_argument("--normalize", action="store_true", help="scale decoder rows to unit norm first")
    g.add_argument("--uncentered", action="store_true", help="second-moment matrix instead of the covariance")
    g.add_argument("--no-null", action="store_true", help="skip the isotropic Gaussian null")
    g.add_argument("--no-entropy", action="store_true", help="skip the clustering entropy")
    g.add_argument("--entropy-subsample", type=int, default=5000, metavar="N")
    g.add_argument("--entropy-pca", type=int, default=100, metavar="P", help="PCA dims (0 = no PCA)")
    g.add_argument("--entropy-repeats", type=int, default=10, metavar="R")
    g.add_argument("--entropy-k", type=int, default=1, metavar="K")
    g.add_argument("--no-zscore", action="store_true", help="do not z-score before the entropy PCA")
    g.add_argument("--activations", metavar="FILE",
                   help="raw residual activations (.npy for one layer, or .npz / .safetensors with arrays "
                        "named 'layer_L') for the SAE-vs-activations spectrum comparison")


def _galaxy_params(args):
    from .galaxy import GalaxyParams

    for name in ("entropy_subsample", "entropy_repeats", "entropy_k"):
        if getattr(args, name) < 1:
            raise _bad(f"--{name.replace('_', '-')}: expected a positive integer. Got {getattr(args, name)} instead.")
    return GalaxyParams(
        fit_ranks=tuple(args.fit_ranks), normalize=args.normalize, center=not args.uncentered,
        null=not args.no_null, entropy=not args.no_entropy, entropy_subsample=args.entropy_subsample,
        entropy_pca_dim=args.entropy_pca or None, entropy_zscore=not args.no_zscore, entropy_k=args.entropy_k,
        entropy_repeats=args.entropy_repeats, seed=args.seed,
    )


def _bad(msg: str):
    from .errors import InputError

    return InputError(msg)


def _activation_provider(path: str | None):
    if not path:
        return None
    from .io.activations import activation_provider

    return activation_provider(path)


def run_galaxy_command(source: str, layers, out: Path, params, activations: str | None = None,
                       reference: bool = True) -> dict:
    """Galaxy analysis of a source; writes tables and figures to ``out``.  Returns the written paths."""
    from . import plot
    from .galaxy import run_galaxy
    from .io import open_suite
    from .reference import paper_reference

    suite = open_suite(source, layers)
    _log(f"galaxy: {suite.name}, layers {suite.layers} -> {out}")
    result = run_galaxy(suite, out, params, activations=_activation_provider(activations), progress=_log)
    paths = result.write(out)
    ref = paper_reference()["galaxy"]["slopes"] if reference else None
    paths["fig_spectra"] = plot.galaxy_spectra(result, out / "galaxy_spectra.png")
    paths["fig_slopes"] = plot.galaxy_slopes(result, out / "galaxy_slopes.png", reference=ref)
    if params.entropy:
        paths["fig_entropy"] = plot.galaxy_entropy(result, out / "galaxy_entropy.png")
    _print_galaxy_table(result, ref)
    return {"result": result, "paths": paths}


def _print_galaxy_table(result, ref) -> None:
    print(f"{'layer':>5} {'features':>9} {'excl':>5} {'slope':>7} {'95% CI':>17} {'R2':>5} {'null':>7} "
          f"{'paper*':>7} {'H_gauss-H_knn':>13} {'null':>8} {'excess':>8}")
    for r in result.layers:
        e = r.entropy or {}
        paper = (ref or {}).get(str(r.layer))
        f = lambda v, w=7, p=3: f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{w}}"  # noqa: E731
        print(f"{r.layer:>5} {r.n_features:>9} {r.n_excluded:>5} {f(r.slope)} "
              f"[{r.slope_ci[0]:>7.3f},{r.slope_ci[1]:>7.3f}] {f(r.r2, 5, 2)} {f(r.null_slope)} {f(paper)} "
              f"{f(e.get('difference'), 13, 1)} {f(e.get('null_difference'), 8, 1)} {f(e.get('excess'), 8, 1)}")
    if ref:
        print("* paper: gemma-2-2b, Gemma Scope 65k residual SAEs (Li et al. 2025), for comparison only")


def cmd_galaxy(args) -> int:
    from ._util import parse_layers

    params = _galaxy_params(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    res = run_galaxy_command(args.source, parse_layers(args.layers), out, params, args.activations)
    _log(f"galaxy: wrote {', '.join(str(p) for p in res['paths'].values())} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_info(args) -> int:
    import json

    from .io import open_suite
    from ._util import parse_layers, to_jsonable

    suite = open_suite(args.source, parse_layers(args.layers))
    out = {"source": suite.name, "layers": suite.layers}
    if not args.no_load:
        out["clouds"] = [cloud.describe() for _, cloud in suite]
    print(json.dumps(to_jsonable(out), indent=2))
    return 0


def cmd_harvest(args) -> int:
    from ._util import parse_layers
    from .corpus import load_corpus
    from .harvest import harvest
    from .io import open_suite
    from .io.saelens import load_sae
    from .models import load_model

    layers = parse_layers(args.layers)
    suite = open_suite(args.source, layers) if args.source != "none" else None
    if suite is None and not args.store_activations:
        raise _bad("SOURCE: 'none' harvests no firing; expected an SAE source or --store-activations")
    model = load_model(args.model, device=args.device)
    saes = {}
    if suite is not None:
        for layer in suite.layers:
            saes[layer] = load_sae(suite.load(layer))
    genre_kw = {"genre": args.genre} if Path(args.corpus).is_dir() else {}
    corpus = load_corpus(args.corpus, **genre_kw)
    if args.split != "all":
        train, held = corpus.split(args.held_out, seed=args.seed)
        corpus = train if args.split == "train" else held
    if args.order == "interleave":
        corpus = corpus.interleaved()
    t0 = time.perf_counter()
    h = harvest(model, corpus, args.out, saes=saes, layers=layers if suite is None else None,
                block_len=args.block_len, threshold=args.threshold, batch_size=args.batch_size,
                shard_blocks=args.batch_size * args.shard_batches, max_blocks=args.max_blocks,
                max_blocks_per_doc=args.max_blocks_per_doc, store_activations=args.store_activations,
                corpus_name=f"{args.corpus}:{args.split}:{args.held_out}:{args.seed}:{args.order}")
    _log(f"harvest: {h.n_blocks} blocks of {args.block_len} tokens, layers {h.layers} -> {args.out} "
         f"in {time.perf_counter() - t0:.0f}s")
    return 0


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise _bad(f"{name}: expected comma-separated integers like '2,3,4,8'. Got {text!r} instead.") from None


def run_lobes_command(source: str, harvest_dir: str, out: Path, layers=None, *, affinities=None, n_clusters=None,
                      n_permutations: int = 100, logreg_null_repeats: int = 20, heldout_fraction: float = 0.2,
                      seed: int = 0) -> dict:
    """Lobes for every SAE layer of a harvest (or ``layers``); one sub-directory per layer. Resumes."""
    import json

    from . import plot_lobes
    from .harvest import Harvest
    from .io import open_suite
    from .lobes import AFFINITIES, DEFAULT_N_CLUSTERS, LobeResult, lobes_from_harvest

    h = Harvest(harvest_dir)
    layers = layers or h.sae_layers
    missing = [L for L in layers if L not in h.sae_layers]
    if missing:
        raise _bad(f"--layers: {missing} have no firing in {harvest_dir}; expected some of {h.sae_layers}")
    suite = open_suite(source, layers)
    kw = dict(affinities=tuple(affinities or AFFINITIES), n_clusters=tuple(n_clusters or DEFAULT_N_CLUSTERS),
              n_permutations=n_permutations, logreg_null_repeats=logreg_null_repeats)
    results = {}
    for layer in layers:
        d = out / f"layer_{layer}"
        stamp = json.dumps({**kw, "heldout_fraction": heldout_fraction, "seed": seed, "source": source,
                            "harvest": h.manifest.get("fingerprint")}, sort_keys=True, default=str)
        if (d / "lobes.json").exists() and (d / ".params").exists() and (d / ".params").read_text() == stamp:
            _log(f"lobes layer {layer}: reused {d}")
            results[layer] = LobeResult.read(d)
            continue
        cloud = suite.load(layer)
        t0 = time.perf_counter()
        res = lobes_from_harvest(h, layer, cloud, heldout_fraction=heldout_fraction, seed=seed, **kw)
        res.write(d)
        plot_lobes.plot_all(res, d)
        (d / ".params").write_text(stamp)
        _log(f"lobes layer {layer}: {time.perf_counter() - t0:.0f}s -> {d}")
        results[layer] = res
    return results


def cmd_lobes(args) -> int:
    from ._util import parse_layers

    affs = [a.strip() for a in args.affinities.split(",")] if args.affinities else None
    ks = _int_list(args.n_clusters, "--n-clusters") if args.n_clusters else None
    res = run_lobes_command(args.source, args.harvest, Path(args.out), parse_layers(args.layers), affinities=affs,
                            n_clusters=ks, n_permutations=args.permutations, logreg_null_repeats=args.logreg_null,
                            heldout_fraction=args.heldout_fraction, seed=args.seed)
    for layer, r in res.items():
        print(f"layer {layer}:")
        for rec in r.records:
            if rec["n_clusters"] in (2, 3) or rec["n_clusters"] == max(x["n_clusters"] for x in r.records):
                acc = rec.get("logreg_bal_acc")
                print(f"  {rec['affinity']:>9} k={rec['n_clusters']:<4} AMI {rec['ami']:.3f} (sigma {rec['ami_sigma']:.1f}, "
                      f"p {rec['ami_p']:.3g})  logreg {'-' if acc is None else f'{acc:.3f}'}  "
                      f"genre V {rec.get('genre_cramers_v') if rec.get('genre_cramers_v') is None else round(rec['genre_cramers_v'], 3)}"
                      f"  majority {rec.get('genre_majority')}")
    _log(f"lobes: wrote {args.out}")
    return 0


def run_atlas_command(source, out, *, layers=None, lobes=None, atoms=None, galaxy=None, harvest=None, labels=(),
                      layout: str = "umap", affinity: str = "phi", seed: int = 0) -> dict:
    """Feature atlas of a source (static site + tables) in ``out``; resumes finished layers.

    Returns ``{"result": AtlasResult, "index": Path, "paths": {name: Path}}``.
    """
    from .atlas import run_atlas

    out = Path(out)
    res = run_atlas(source, out, layers=layers, lobes=lobes, atoms=atoms, galaxy=galaxy, harvest=harvest,
                    labels=labels, layout=layout, affinity=affinity, seed=seed, progress=_log)
    return {"result": res, "index": out / "index.html", "paths": {k: out / v for k, v in res.files.items()}}


def cmd_atlas(args) -> int:
    from ._util import parse_layers

    t0 = time.perf_counter()
    res = run_atlas_command(args.source, Path(args.out), layers=parse_layers(args.layers), lobes=args.lobes,
                            atoms=args.atoms, galaxy=args.galaxy, harvest=args.harvest, labels=args.labels or (),
                            layout=args.layout, affinity=args.affinity, seed=args.seed)
    r = res["result"]
    print(f"atlas: {len(r.layers)} layers, {r.n_features} features -> {res['index']}")
    _log(f"atlas: wrote {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


LAYERS_FAST = {"n_blocks": 12, "block_len": 48, "loss_blocks": 4, "loss_block_len": 64, "prune_max": 2,
               "random_drops": 2, "null_assignment": False}


def run_layers_command(model, out, *, sae: str | None = "default", fast: bool = False, seed: int = 0,
                       measures=None, galaxy: str | None = None, **kw) -> dict:
    """Layer comparison of ``model`` (a name or a LoadedModel); writes ``layers.json`` and figures to
    ``out``.  ``fast`` uses fewer blocks, prune-max 2, 2 random drops and no assignment null.  Extra
    keywords (n_blocks, block_len, loss_blocks, loss_block_len, prune_max, random_drops) override.
    Returns ``{"result": LayerResult, "paths": {...}}``; reruns reuse ``out/.layers_cache``."""
    from . import plot_layers
    from .layers import MEASURES, check_measures, run_layers
    from .models import LoadedModel, load_model

    out = Path(out)
    measures = check_measures(measures or MEASURES)  # cheap checks before the model loads
    for name in ("prune_max", "random_drops", "n_blocks", "block_len", "loss_blocks", "loss_block_len"):
        v = kw.get(name)
        if v is not None and (not isinstance(v, int) or v < (0 if name in ("prune_max", "random_drops") else 1)):
            raise _bad(f"--{name.replace('_', '-')}: expected a {'non-negative' if name in ('prune_max', 'random_drops') else 'positive'} "
                       f"integer. Got {v!r} instead.")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    suite = None
    if sae and sae != "none":
        from .io import open_suite

        suite = open_suite(sae)
    opts = {**(LAYERS_FAST if fast else {}), **{k: v for k, v in kw.items() if v is not None}}
    _log(f"layers: {loaded.name} ({loaded.n_layers} blocks), SAE {sae} -> {out}")
    res = run_layers(loaded, out, sae=suite, measures=measures, galaxy=galaxy, seed=seed,
                     progress=_log, **opts)
    paths = {"json": out / "layers.json", **plot_layers.plot_all(res, out)}
    return {"result": res, "paths": paths}


def cmd_layers(args) -> int:
    res = run_layers_command(args.model, args.out, sae=args.sae, fast=args.fast, seed=args.seed,
                             measures=args.measures, galaxy=args.galaxy, n_blocks=args.n_blocks,
                             block_len=args.block_len, loss_blocks=args.loss_blocks,
                             loss_block_len=args.loss_block_len, prune_max=args.prune_max,
                             random_drops=args.random_drops)
    r = res["result"]
    for m, red in r.redundancy.items():
        print(f"{m:>7}: most redundant blocks {[x['block'] for x in red[:3]]}")
    if r.pruning:
        p = r.pruning
        print(f"pruning: baseline loss {p['baseline']:.4f} nats/token over {p['n_tokens']} tokens")
        for row in p["table"]:
            print(f"  {row['method']:>7} drop {row['n_drop']} {row['dropped']}: {row['loss']:.4f}")
        for s in p["random_summary"]:
            sd = "-" if s["std"] is None else f"{s['std']:.4f}"
            print(f"   random drop {s['n_drop']}: {s['mean']:.4f} ± {sd} (n={s['n']})")
    _log(f"layers: wrote {', '.join(str(p) for p in res['paths'].values())}")
    return 0


def run_atoms_command(model, layers, out, *, sae: str = "default", fast: bool = False, seed: int = 0,
                      tasks=None, pair_files=(), template: str = " {word}", sae_space: bool = False,
                      max_pairs: int | None = None, crystal_mode: str = "ann", crystal_kw: dict | None = None,
                      plots: bool = True) -> dict:
    """Atom scale for ``layers`` of ``model`` (name or LoadedModel): pairs, LDA on held-out pairs, crystals.

    ``fast`` caps every task at 24 pairs and 100 analogy quadruples per task (the demo).  Writes
    ``out/atoms.json`` + ``out/crystals.csv`` (one layer) or ``out/layer_L/...`` + a combined
    ``out/crystals.csv`` (several), and figures.  Returns ``{layer: {...}}`` as :func:`featuregeo.atoms.run_atoms`.
    """
    from . import plot_atoms
    from .atoms import run_atoms

    out = Path(out)
    res = run_atoms(model, layers, out, sae=sae, tasks=tasks, pair_files=pair_files, template=template,
                    max_pairs=24 if fast and max_pairs is None else max_pairs, sae_space=sae_space,
                    max_quadruples=100 if fast else 500, crystal_kw={"mode": crystal_mode, **(crystal_kw or {})},
                    seed=seed, progress=_log)
    if plots:
        for L, r in res.items():
            r["figures"] = plot_atoms.plot_all(r["atoms"], r["crystals"], r["dir"])
    return res


def cmd_atoms(args) -> int:
    from ._util import parse_layers

    if (args.layer is None) == (args.layers is None):
        raise _bad("--layer/--layers: expected exactly one of --layer L or --layers 3,9,15")
    layers = [args.layer] if args.layer is not None else parse_layers(args.layers)
    if not layers:
        raise _bad("--layers: expected explicit layers like '3,9,15'")
    t0 = time.perf_counter()
    res = run_atoms_command(args.model, layers, Path(args.out), sae=args.sae, seed=args.seed, fast=args.fast,
                            tasks=args.tasks, pair_files=args.pairs or (), template=args.template,
                            sae_space=args.sae_space, max_pairs=args.max_pairs, crystal_mode=args.crystal_mode,
                            crystal_kw={"remove_pcs": args.crystal_remove_pcs, "min_cosine": args.crystal_min_cosine})
    for L, r in res.items():
        a = r["atoms"]
        raw = a.best("raw")
        lda = a.best("lda")
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"layer {L}: {a.n_pairs} pairs ({a.n_test} held out), {len(a.task_names)} tasks, "
              f"{len(a.skipped)} skipped; PC1 r(d_chars) {f(a.distractors.get('pc1_r_chars'))}, "
              f"r(d_tokens) {f(a.distractors.get('pc1_r_tokens'))}")
        if raw and lda:
            print(f"  held-out analogy {f(raw['analogy_accuracy'])} -> {f(lda['analogy_accuracy'])} (LDA "
                  f"{lda['n_components']}); silhouette {f(raw['silhouette'])} -> {f(lda['silhouette'])}; "
                  f"task acc {f(raw['task_accuracy'])} -> {f(lda['task_accuracy'])}")
        if r["crystals"] is not None:
            c = r["crystals"]
            print(f"  crystals: {c.n_matches} matches among {c.n_candidate_pairs} candidate pairs of {c.n_features} "
                  f"features; top cosine {f(c.crystals[0]['cosine'] if c.crystals else None)}")
    _log(f"atoms: wrote {args.out} in {time.perf_counter() - t0:.0f}s")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    from ._util import parse_layers

    return run_demo(Path(args.out), fast=args.fast, layers=parse_layers(args.layers))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="featuregeo",
        description="Geometry of sparse-autoencoder features: galaxy spectra, lobes, crystals, layers, atlas.",
        epilog="SOURCE: 'saelens:RELEASE:SAE_ID' (SAE_ID may contain {layer}), a sae-lens folder, a "
               ".safetensors/.npz/.pt/.npy file, a directory, glob or {layer} path template of per-layer "
               "files, or 'default' / 'default:LAYER' for the suite shipped with featuregeo.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("galaxy", help="covariance spectrum, power-law slope and clustering entropy per layer")
    g.add_argument("source", metavar="SOURCE")
    g.add_argument("--layers", help="e.g. '0,4,8', '0-25', '0-25:2' or 'all' (default: all)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    _add_galaxy_options(g)
    g.set_defaults(func=cmd_galaxy)

    i = sub.add_parser("info", help="describe a source: layers, shapes, exclusions, provenance")
    i.add_argument("source", metavar="SOURCE")
    i.add_argument("--layers")
    i.add_argument("--no-load", action="store_true", help="list layers without reading weights")
    i.set_defaults(func=cmd_info)

    h = sub.add_parser("harvest", help="which SAE features fire in each block of text (resumable)")
    h.add_argument("source", metavar="SOURCE", help="SAE source (sae-lens folders/releases or 'default'), or "
                   "'none' with --store-activations")
    h.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    h.add_argument("--corpus", default="builtin", help="'builtin', a .jsonl/.json/.parquet/.txt file, a folder, "
                   "or hf:NAME (online)")
    h.add_argument("--genre", default="subfolder", help="for a folder corpus: a genre label for every file, or "
                   "'subfolder' to label each file by its first-level subfolder (default)")
    h.add_argument("--split", choices=["train", "heldout", "all"], default="heldout")
    h.add_argument("--held-out", type=float, default=0.1, help="held-out fraction of documents")
    h.add_argument("--order", choices=["interleave", "corpus"], default="interleave",
                   help="document order: round-robin over genres and sources, so any --max-blocks prefix is "
                   "balanced (default), or the corpus's own order")
    h.add_argument("--layers")
    h.add_argument("--out", required=True)
    h.add_argument("--block-len", type=int, default=256)
    h.add_argument("--threshold", type=float, default=1.0, help="a feature fires when its activation exceeds this")
    h.add_argument("--batch-size", type=int, default=16)
    h.add_argument("--shard-batches", type=int, default=4, help="batches per shard (the unit of resumption)")
    h.add_argument("--max-blocks", type=int)
    h.add_argument("--max-blocks-per-doc", type=int)
    h.add_argument("--store-activations", action="store_true")
    h.add_argument("--device", default="cpu")
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=cmd_harvest)

    lb = sub.add_parser("lobes", help="functional lobes from co-occurrence, and whether they are spatial")
    lb.add_argument("source", metavar="SOURCE", help="the SAE source whose features the harvest recorded")
    lb.add_argument("--harvest", required=True, help="a directory written by `featuregeo harvest`")
    lb.add_argument("--out", required=True)
    lb.add_argument("--layers", help="default: every SAE layer of the harvest")
    lb.add_argument("--affinities", help="comma list of phi,jaccard,dice,overlap,simple_matching (default: all)")
    lb.add_argument("--n-clusters", help="comma list (default 2,3,4,8,16,...,1024, capped by usable features)")
    lb.add_argument("--permutations", type=int, default=100, help="AMI permutation null size")
    lb.add_argument("--logreg-null", type=int, default=20, help="random-geometry null repeats for the logistic regression")
    lb.add_argument("--heldout-fraction", type=float, default=0.2,
                    help="fraction of documents held out for the lobe -> genre table")
    lb.add_argument("--seed", type=int, default=0)
    lb.set_defaults(func=cmd_lobes)

    at = sub.add_parser("atlas", help="static offline web atlas of the features of every layer, plus tables")
    at.add_argument("source", metavar="SOURCE")
    at.add_argument("--out", required=True, help="output directory (open OUT/index.html)")
    at.add_argument("--layers", help="default: every layer of SOURCE")
    at.add_argument("--lobes", metavar="DIR", help="output of `featuregeo lobes` (DIR/layer_L/)")
    at.add_argument("--atoms", metavar="DIR", help="atoms output with crystals.csv (DIR/ or DIR/layer_L/)")
    at.add_argument("--galaxy", metavar="DIR", help="output of `featuregeo galaxy`")
    at.add_argument("--harvest", metavar="DIR", help="output of `featuregeo harvest` (firing frequency, co-firing)")
    at.add_argument("--labels", metavar="FILE", nargs="+", action="extend",
                    help="label CSV/JSON files or Neuronpedia explanation exports (batch-N.jsonl.gz or a folder)")
    at.add_argument("--layout", choices=["umap", "tsne", "pca"], default="umap")
    at.add_argument("--affinity", default="phi", help="lobe affinity that colours the map (default phi)")
    at.add_argument("--seed", type=int, default=0)
    at.set_defaults(func=cmd_atlas)

    ly = sub.add_parser("layers", help="cross-layer similarity (cosine, CKA, StructLens trees), SAE matching, "
                        "pruning check")
    ly.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    ly.add_argument("--sae", default="default", help="SAE suite for slopes and feature matching ('none' to skip)")
    ly.add_argument("--out", required=True)
    ly.add_argument("--measures", help="comma list of cosine,cka,uas,ted (default: all)")
    ly.add_argument("--n-blocks", type=int, help="held-out blocks for the similarity measures (default 32)")
    ly.add_argument("--block-len", type=int, help="tokens per similarity block (default 64)")
    ly.add_argument("--loss-blocks", type=int, help="held-out blocks for the pruning loss (default 32)")
    ly.add_argument("--loss-block-len", type=int, help="tokens per loss block (default 128)")
    ly.add_argument("--prune-max", type=int, help="drop up to this many blocks (default 3; 0 = no pruning)")
    ly.add_argument("--random-drops", type=int, help="random drop orders to compare with (default 5)")
    ly.add_argument("--galaxy", help="a galaxy.json (or its folder) to take slopes from instead of refitting")
    ly.add_argument("--fast", action="store_true", help="small settings (12 blocks, prune-max 2, 2 random drops)")
    ly.add_argument("--seed", type=int, default=0)
    ly.set_defaults(func=cmd_layers)

    at = sub.add_parser("atoms", help="function vectors of word pairs, LDA on held-out pairs, crystals among SAE features")
    at.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    at.add_argument("--layer", type=int, help="one layer: files go straight into --out")
    at.add_argument("--layers", help="several layers, e.g. '3,9,15': one sub-directory each (resumable)")
    at.add_argument("--out", required=True)
    at.add_argument("--sae", default="default", help="SAE source for the crystal search ('none' to skip; default: "
                    "the shipped suite)")
    at.add_argument("--sae-space", action="store_true", help="also analyse word vectors passed through the SAE")
    at.add_argument("--tasks", help="comma list of built-in tasks (default: all; '' for none, with --pairs)")
    at.add_argument("--pairs", action="append", metavar="FILE",
                    help="extra tasks: CSV input,output[,task] or JSON [{'input':..,'output':..}] (repeatable)")
    at.add_argument("--template", default=" {word}", help="prompt template; the vector is its last token")
    at.add_argument("--max-pairs", type=int, help="cap pairs per task (chosen by hash)")
    at.add_argument("--crystal-mode", choices=["ann", "exhaustive"], default="ann")
    at.add_argument("--crystal-min-cosine", type=float, default=0.4, help="keep quadruples with cos(b-a, d-c) >= this")
    at.add_argument("--crystal-remove-pcs", type=int, default=0, help="search with the top PCs of the rows projected out")
    at.add_argument("--fast", action="store_true", help="at most 24 pairs per task, fewer quadruples (the demo)")
    at.add_argument("--seed", type=int, default=0)
    at.set_defaults(func=cmd_atoms)

    d = sub.add_parser("demo", help="run the main analyses on the shipped default (real model, SAEs, text)")
    d.add_argument("--out", default="featuregeo-demo", help="output directory (default: featuregeo-demo)")
    d.add_argument("--fast", action="store_true", help="fewer entropy repeats and activations (smoke tests)")
    d.add_argument("--layers", help="a subset of the shipped layers (default: all)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from .errors import FeaturegeoError, InputError

    try:
        return int(args.func(args) or 0)
    except InputError as e:
        if args.debug:
            raise
        print(f"featuregeo {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FeaturegeoError as e:  # e.g. disk full during a harvest: finished work is kept
        if args.debug:
            raise
        print(f"featuregeo {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"featuregeo {args.command}: interrupted; finished layers are saved and a rerun resumes",
              file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print(f"featuregeo {args.command}: error: out of memory; try fewer layers or a smaller "
              "--entropy-subsample", file=sys.stderr)
        return 1
    except Exception as e:  # unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"featuregeo {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug "
              "for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
