"""The command that reproduces each result, rebuilt from the parameters stored in the result.

Each analysis gets its ``featuregeo`` command line: the inputs (source or model, layers, output
directory) and one flag for every stored parameter that differs from what the command uses without
it (``--fast`` when the parameters are the command's fast preset).  When a stored parameter has no
command-line flag, a second line gives the exact Python call, which reruns the pipeline with the
parameters read back from the result file.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

from featuregeo.core.results import Params

#: analysis -> the flags of its command whose name is the parameter's with dashes (value formatted by type)
PLAIN_FLAGS = {
    "layers": ("measures", "n_blocks", "block_len", "loss_blocks", "loss_block_len", "prune_max", "random_drops",
               "seed"),
    "lens": ("layers", "block_len", "train_tokens", "eval_tokens", "vocab_subset", "vocab_sample", "steps",
             "batch_tokens", "lr", "train_dtype", "eval_dtype", "n_boot", "probe_tokens", "causal_layers",
             "causal_rows", "causal_random", "seed"),
    "updates": ("layers", "n_rows", "seq_len", "k", "rank", "ridge", "metric", "classes", "primary", "kl_classes",
                "k_grid", "rank_grid", "kl_positions", "n_boot", "seed"),
    "interaction": ("n_rows", "row_len", "batch_size", "jacobian", "n_sources", "gram_threshold", "m_threshold",
                    "dtype", "edge_directions", "edge_steps", "edge_rows", "convergence_steps", "convergence_rows",
                    "ablation_n", "loss_rows", "loss_row_len", "sae_directions", "seed"),
}


def value_text(v: Any) -> str:
    """A parameter value as a flag argument (tuples comma-joined)."""
    if isinstance(v, (tuple, list)):
        return ",".join(value_text(x) for x in v)
    return str(v)


def plain_flags(params: Params, baseline: Params, names) -> tuple[list[str], list[str]]:
    """Flags for the parameters ``names`` that differ from ``baseline``, and the differing fields without one."""
    new, base = params.to_dict(), baseline.to_dict()
    flags, missing = [], []
    for k in new:
        if new[k] == base.get(k):
            continue
        if k in names and new[k] is not None:
            flags += [f"--{k.replace('_', '-')}", value_text(new[k])]
        else:
            missing.append(k)
    return flags, missing


def python_line(name: str, cls: str, directory: Path, call: str) -> str:
    """``python -c`` rerunning pipeline ``name`` with the parameters stored in ``directory``."""
    code = (f"from featuregeo.pipeline import {name} as p; from featuregeo.tl.{name} import {cls} as R; "
            f"r = R.load({str(directory)!r}); {call}")
    return "python -c " + shlex.quote(code)


def line(*parts: Any) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def layer_list(layers) -> str:
    return ",".join(str(x) for x in layers if x is not None)


def galaxy_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.galaxy import GalaxyParams

    p, d = result.params, GalaxyParams()
    flags: list[str] = []
    if tuple(p.fit_ranks) != tuple(d.fit_ranks):
        flags += ["--fit-ranks", value_text(p.fit_ranks)]
    for field, flag, on in (("normalize", "--normalize", True), ("center", "--uncentered", False),
                            ("null", "--no-null", False), ("entropy", "--no-entropy", False),
                            ("entropy_zscore", "--no-zscore", False)):
        if getattr(p, field) == on and getattr(d, field) != on:
            flags.append(flag)
    for field in ("entropy_subsample", "entropy_k", "entropy_repeats", "slope_bootstrap", "seed"):
        if getattr(p, field) != getattr(d, field):
            flags += [f"--{field.replace('_', '-')}", str(getattr(p, field))]
    if p.entropy_pca_dim != d.entropy_pca_dim:
        flags += ["--entropy-pca", str(p.entropy_pca_dim or 0)]
    if any(r.activation_slope is not None for r in result.layers):
        acts = next((str(q) for q in (root / "heldout_activations.npz", directory.parent / "heldout_activations.npz")
                     if q.is_file()), "ACTIVATIONS.npz")
        flags += ["--activations", acts]
    layers = layer_list(r.layer for r in result.layers)
    out = [line("featuregeo", "galaxy", result.source, "--out", directory, "--layers", layers, *flags)]
    extra = [k for k in ("windows", "confidence", "rank_rtol", "entropy_null") if getattr(p, k) != getattr(d, k)]
    if extra:
        out.append(python_line("galaxy", "GalaxyResult", directory,
                               f"p.run(r.source, {str(directory)!r}, r.params, layers=[{layers}])"))
    return "\n".join(out)


def lobes_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.lobes import LobesParams

    p, d = result.params, LobesParams()
    harvest = next((str(q) for q in (root / "harvest", directory.parent / "harvest") if (q / "harvest.json").is_file()),
                   "HARVEST_DIR")
    mapping = {"affinities": "--affinities", "n_clusters": "--n-clusters", "n_permutations": "--permutations",
               "logreg_null_repeats": "--logreg-null", "heldout_fraction": "--heldout-fraction", "seed": "--seed"}
    flags, missing = [], []
    for k, v in p.to_dict().items():
        if v == d.to_dict()[k] or k == "n_threads":
            continue
        if k in mapping:
            flags += [mapping[k], value_text(v)]
        elif k == "logreg_max_clusters":
            flags += ["--logreg-max-clusters", str(v or 0)]
        else:
            missing.append(k)
    layers = layer_list(r.layer for r in result.layers)
    out = [line("featuregeo", "lobes", result.source, "--harvest", harvest, "--out", directory, "--layers", layers,
                *flags)]
    if missing:
        out.append(python_line("lobes", "LobesResult", directory,
                               f"p.run(r.source, {harvest!r}, {str(directory)!r}, r.params, layers=[{layers}])"))
    return "\n".join(out)


def atoms_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.atoms import AtomsParams

    p, base = result.params, AtomsParams()
    flags: list[str] = []
    missing: list[str] = []
    names = {"tasks", "max_pairs", "test_fraction", "template", "seed"}
    new, old = p.to_dict(), base.to_dict()
    crystal_flags = (("mode", "--crystal-mode"), ("min_cosine", "--crystal-min-cosine"),
                     ("remove_pcs", "--crystal-remove-pcs"), ("k", "--crystal-k"), ("max_results", "--crystal-max-results"))
    for k, v in new.items():
        if v == old[k]:
            continue
        if k == "sae_space" and v:
            flags.append("--sae-space")
        elif k == "crystal":
            flags += [x for ck, flag in crystal_flags if v[ck] != old[k][ck] for x in (flag, value_text(v[ck]))]
            missing += [f"crystal.{ck}" for ck in v if v[ck] != old[k][ck]
                        and ck not in {c for c, _ in crystal_flags} | {"seed"}]
        elif k in names and v is not None:
            flags += [f"--{k.replace('_', '-')}", value_text(v)]
        else:
            missing.append(k)
    layers = layer_list(r.layer for r in result.layers)
    out = [line("featuregeo", "atoms", "--model", result.model, "--layers", layers, "--sae", result.sae or "none",
                "--out", directory, *flags)]
    if missing:
        out.append(python_line("atoms", "AtomsResult", directory,
                               f"p.run(r.model, [{layers}], {str(directory)!r}, r.params, sae=r.sae)"))
    return "\n".join(out)


def _model_command(name: str, cls: str, params_cls, result, directory: Path, pre: list, call: str) -> str:
    p = result.params
    fast = hasattr(params_cls, "fast") and p == params_cls.fast()
    base = params_cls.fast() if fast else params_cls()
    flags, missing = plain_flags(p, base, PLAIN_FLAGS[name])
    out = [line("featuregeo", name, "--model", result.model, *pre, "--out", directory, *(["--fast"] if fast else []),
                *flags)]
    if missing:
        out.append(python_line(name, cls, directory, call))
    return "\n".join(out)


def layers_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.layers import LayersParams

    sae = result.sae.source if result.sae is not None else "none"
    galaxy = root / "galaxy" / "galaxy.json"
    pre = ["--sae", sae] + (["--galaxy", str(galaxy)] if galaxy.is_file() and result.sae is not None else [])
    return _model_command("layers", "LayersResult", LayersParams, result, directory, pre,
                          f"p.run(r.model, {str(directory)!r}, r.params, sae={sae!r})")


def lens_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.lens import LensParams

    return _model_command("lens", "LensResult", LensParams, result, directory, [],
                          f"p.run(r.model, {str(directory)!r}, r.params)")


def updates_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.updates import UpdatesParams

    return _model_command("updates", "UpdatesResult", UpdatesParams, result, directory, [],
                          f"p.run(r.model, {str(directory)!r}, r.params)")


def interaction_command(result, directory: Path, root: Path) -> str:
    from featuregeo.tl.interaction import InteractionParams

    layers = [r.layer for r in result.layers]
    section = f"{min(layers)}-{max(layers)}" if layers else "5-8"
    sae = "default" if any(r.sae is not None for r in result.layers) else "none"
    return _model_command("interaction", "InteractionResult", InteractionParams, result, directory,
                          ["--layers", section, "--sae", sae],
                          f"p.run(r.model, {section!r}, {str(directory)!r}, r.params, sae={sae!r})")


COMMANDS: dict[str, Callable[[Any, Path, Path], str]] = {
    "galaxy": galaxy_command, "lobes": lobes_command, "atoms": atoms_command, "layers": layers_command,
    "lens": lens_command, "updates": updates_command, "interaction": interaction_command,
}

#: what to run when an analysis has no result yet (the defaults)
FRESH = {
    "galaxy": "featuregeo galaxy default --out {root}/galaxy",
    "lobes": "featuregeo harvest default --out {root}/harvest && featuregeo lobes default --harvest {root}/harvest "
             "--out {root}/lobes --layers 3,9,15",
    "atoms": "featuregeo atoms --layers 3,9,15 --out {root}/atoms",
    "layers": "featuregeo layers --out {root}/layers",
    "lens": "featuregeo lens --out {root}/lens",
    "updates": "featuregeo updates --out {root}/updates",
    "interaction": "featuregeo interaction --out {root}/interaction",
}


def command(name: str, result, directory: Path, root: Path) -> str:
    """The reproducing command of ``result`` (analysis ``name``), or the default command when it is None."""
    if result is None:
        return FRESH[name].format(root=shlex.quote(str(root)))
    return COMMANDS[name](result, Path(directory), Path(root))


__all__ = ["command", "COMMANDS", "FRESH", "PLAIN_FLAGS", "plain_flags", "python_line"]
