"""Claims of the layer-wise methods: similarity-guided pruning (StructLens), the tuned lens, layer-update
geometry and the interaction basis.  Each is judged only when its result is present."""

from __future__ import annotations

from pathlib import Path

from featuregeo.report.records import INCONCLUSIVE, NO_RESULTS, NOT_SUPPORTED, SUPPORTED
from featuregeo.report.rules import (ALIGN_COS, COUNT_RULE, MAJORITY, MINORITY, PRUNE_TOL, SPEARMAN_PAPER,
                                     count_verdict, finite, interval, median, num, units)
from featuregeo.report.spec import ClaimSpec

STRUCTLENS = "StructLens (arXiv 2603.03328)"
TUNED_LENS = "Belrose et al. 2023, tuned lens (arXiv 2303.08112)"
UPDATES = "Geometric structure of layer updates (arXiv 2604.02459)"
RIB = "Bushnaq et al. 2024, interaction basis (arXiv 2405.10927)"
STRUCTURAL = ("uas", "ted")


def _pruning_rows(result):
    p = result.pruning
    if p is None or not p.table:
        return None
    return p


def _vs_random(result, directory: Path) -> dict:
    p = _pruning_rows(result)
    if p is None:
        return {"verdict": NO_RESULTS, "sentence": "No results: the layers result has no pruning check (prune_max 0)."}
    rows, k, n = [], 0, 0
    for r in p.table:
        s = p.summary(r.n_drop)
        if s is None or not finite(s.mean):
            continue
        bar = s.mean - (s.std if finite(s.std) else 0.0)
        ok = r.loss < bar
        n += 1
        k += ok
        rows.append([r.method, r.n_drop, ", ".join(map(str, r.dropped)), num(r.loss, 4), num(s.mean, 4),
                     num(s.std, 4), s.n, "yes" if ok else "no"])
    if not n:
        return {"verdict": NO_RESULTS, "sentence": "No results: the pruning check has no random drops to compare with."}
    v = count_verdict(k, n)
    return {"value": median(r.loss for r in p.table), "value_label": "median held-out loss after similarity-guided "
            "drops, nats/token", "null_value": median(s.mean for s in p.random_summary),
            "null": "dropping as many random blocks (mean over orders)",
            "ours": f"{result.model}: baseline loss {num(p.baseline, 4)} nats/token over {p.n_tokens} tokens",
            "columns": ["measure", "blocks dropped", "which", "loss", "random mean", "random sd", "random orders",
                        "below random mean - sd"], "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: dropping the most redundant blocks by similarity loses less than random "
                        f"drops (by more than their spread) in {units(k, n, '(measure, drop count) cases')}."}


def _structure(result, directory: Path) -> dict:
    p = _pruning_rows(result)
    if p is None:
        return {"verdict": NO_RESULTS, "sentence": "No results: the layers result has no pruning check (prune_max 0)."}
    loss = {(r.method, r.n_drop): r.loss for r in p.table}
    drops = sorted({r.n_drop for r in p.table})
    rows, diffs, k, worse, n = [], [], 0, 0, 0
    for d in drops:
        cos = loss.get(("cosine", d))
        struct = [(m, loss[(m, d)]) for m in STRUCTURAL if (m, d) in loss]
        if cos is None or not struct:
            continue
        m, best = min(struct, key=lambda t: t[1])
        n += 1
        k += cos - best > PRUNE_TOL
        worse += best - cos > PRUNE_TOL
        diffs.append(cos - best)
        rows.append([d, num(cos, 4), m, num(best, 4), num(cos - best, 4),
                     "structure" if cos - best > PRUNE_TOL else ("cosine" if best - cos > PRUNE_TOL else "tie")])
    if not n:
        return {"verdict": NO_RESULTS, "sentence": "No results: the pruning check lacks the cosine or a structural "
                "(uas, ted) measure."}
    v = count_verdict(k, n)
    return {"value": median(diffs),
            "value_label": "median loss advantage of structural over cosine pruning, nats/token",
            "null_value": 0.0, "null": "cosine similarity of activations choosing the blocks",
            "ours": f"{result.model}: drops of 1..{max(drops)} blocks", "columns": ["blocks dropped", "cosine loss",
            "best structural measure", "its loss", "cosine - structural", "better"], "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: structural similarity picks blocks whose removal costs at least "
                        f"{PRUNE_TOL} nats/token less than cosine's in {units(k, n, 'drop counts')} (cosine better "
                        f"in {worse})."}


def _tuned(result, directory: Path) -> dict:
    last = max((r.layer for r in result.layers), default=None)
    recs = [r for r in result.layers if r.layer != last and finite(r.tuned.kl.mean) and finite(r.logit.kl.mean)]
    if not recs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the lens result has no layers before the last."}
    ok = lambda r: r.tuned.kl.high < r.logit.kl.low  # noqa: E731
    k = sum(1 for r in recs if ok(r))
    v = count_verdict(k, len(recs))
    rows = [[r.layer, num(r.logit.kl.mean), interval(r.logit.kl.low, r.logit.kl.high), num(r.tuned.kl.mean),
             interval(r.tuned.kl.low, r.tuned.kl.high), "yes" if ok(r) else "no"] for r in recs]
    return {"value": median(r.tuned.kl.mean for r in recs), "value_label": "median KL(final || tuned lens), nats",
            "null_value": median(r.logit.kl.mean for r in recs), "null": "the logit lens (median KL, nats)",
            "ours": f"{result.model}, {result.n_eval_tokens} held-out tokens",
            "columns": ["layer", "logit-lens KL", "interval", "tuned-lens KL", "interval", "tuned lower"],
            "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: the tuned lens's KL interval lies below the logit lens's in "
                        f"{units(k, len(recs), 'layers')}."}


def _alignment(result, directory: Path) -> dict:
    primary = result.params.primary
    fits = [(rec, next((f for f in rec.fits if f.cls == primary and f.target == "update"), None)) for rec in result.layers]
    fits = [(rec, f) for rec, f in fits if f is not None and finite(f.cos_dt)]
    if not fits:
        return {"verdict": NO_RESULTS, "sentence": f"No results: no {primary} fits in the updates result."}
    shuffled = {rec.layer: next((c for c in rec.controls if c.neighbours == "shuffled"), None) for rec, _ in fits}
    k = sum(1 for _, f in fits if f.cos_dt >= ALIGN_COS)
    v = count_verdict(k, len(fits))
    rows = [[f"{rec.layer}->{rec.block}", num(f.cos_dt), num(f.explained), num(f.cos_dr),
             num(shuffled[rec.layer].cos_dt if shuffled[rec.layer] else None), "yes" if f.cos_dt >= ALIGN_COS else "no"]
            for rec, f in fits]
    return {"value": median(f.cos_dt for _, f in fits), "value_label": f"median cos(D, T), class {primary}",
            "null_value": median(s.cos_dt for s in shuffled.values() if s is not None),
            "null": "the same fit with shuffled (random) neighbours", "ours": f"{result.model}, {len(fits)} transitions",
            "columns": ["transition", "cos(D,T)", "explained", "cos(D,R)", "shuffled cos(D,T)", f">= {ALIGN_COS}"],
            "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: the mean cosine between the update and its tokenwise part is at least "
                        f"{ALIGN_COS} in {units(k, len(fits), 'transitions')}."}


def _error(result, directory: Path) -> dict:
    primary = result.params.primary
    fns = [(rec, rec.func(primary) or (rec.function[0] if rec.function else None)) for rec in result.layers]
    fns = [(rec, f) for rec, f in fns if f is not None and finite(f.spearman) and len(f.spearman_ci) == 2]
    if not fns:
        return {"verdict": NO_RESULTS, "sentence": "No results: the updates result has no perturbation measurements."}
    pos = sum(1 for _, f in fns if f.spearman_ci[0] > 0)
    med = median(f.spearman for _, f in fns)
    frac = pos / len(fns)
    if frac >= MAJORITY and med >= SPEARMAN_PAPER:
        v = SUPPORTED
    elif frac <= MINORITY:
        v = NOT_SUPPORTED
    else:
        v = INCONCLUSIVE
    rows = [[f"{rec.layer}->{rec.block}", f.cls, num(f.spearman, 2), interval(*f.spearman_ci, digits=2),
             num(f.spearman_norm, 2), f.n] for rec, f in fns]
    return {"value": med, "value_label": "median Spearman(|R|, KL)", "null_value": median(f.spearman_norm for _, f in fns),
            "null": "Spearman of the update size |D| with the KL (median)", "ours": f"{result.model}, {len(fns)} transitions",
            "columns": ["transition", "class", "Spearman", "interval", "|D| control", "samples"], "rows": rows,
            "verdict": v, "sentence": f"{v.capitalize()}: the correlation's interval lies above 0 in "
            f"{units(pos, len(fns), 'transitions')}, median {num(med, 2)} against the paper's > {SPEARMAN_PAPER}."}


def _ablation(result, directory: Path) -> dict:
    rows, gains, k, n = [], [], 0, 0
    for L in result.layers:
        a = L.ablation
        if a is None:
            continue
        for m, li, lp in zip(a.n, a.loss_interaction, a.loss_pca):
            if not (finite(li) and finite(lp)):
                continue
            n += 1
            k += li < lp - PRUNE_TOL
            gains.append(lp - li)
            rows.append([L.layer, m, num(li, 4), num(lp, 4), num(lp - li, 4), "yes" if li < lp - PRUNE_TOL else "no"])
    if not n:
        return {"verdict": NO_RESULTS, "sentence": "No results: the interaction result has no ablation curve."}
    v = count_verdict(k, n)
    return {"value": median(gains), "value_label": "median loss advantage of the "
            "interaction basis over PCA (same number of directions), nats/token", "null_value": 0.0,
            "null": "the same number of PCA directions", "ours": f"{result.model}, baseline loss "
            f"{num(result.baseline_loss, 4)}", "columns": ["layer", "directions kept", "interaction loss", "PCA loss",
            "PCA - interaction", "interaction better"], "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: keeping the top interaction directions costs at least {PRUNE_TOL} "
                        f"nats/token less than as many PCA directions in {units(k, n, '(layer, n) cases')}."}


def _sparsity(result, directory: Path) -> dict:
    pca = {e.layer_in: e for e in result.pca_edges}
    pairs = [(e, pca.get(e.layer_in)) for e in result.edges]
    pairs = [(e, p) for e, p in pairs if p is not None and finite(e.top1_mass) and finite(p.top1_mass)]
    if not pairs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the interaction result has no edges."}
    k = sum(1 for e, p in pairs if e.top1_mass > p.top1_mass)
    v = count_verdict(k, len(pairs))
    rows = [[f"{e.layer_in}->{e.layer_out}", num(e.top1_mass), num(p.top1_mass), "yes" if e.top1_mass > p.top1_mass
             else "no"] for e, p in pairs]
    return {"value": median(e.top1_mass for e, _ in pairs), "value_label": "median top-1% edge mass, interaction basis",
            "null_value": median(p.top1_mass for _, p in pairs), "null": "the same edges in PCA bases",
            "ours": f"{result.model}, {len(pairs)} layer pairs", "columns": ["layers", "interaction top-1% mass",
            "PCA top-1% mass", "sparser"], "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: interaction-basis edges are more concentrated than PCA's in "
                        f"{units(k, len(pairs), 'layer pairs')}."}


def _paper(text: str):
    return lambda: (text, None)


def _figure(module: str, name: str):
    def draw(result, path: Path) -> Path:
        import importlib

        return getattr(importlib.import_module(f"featuregeo.pl.{module}"), name)(result, path)
    return draw


CLAIMS = [
    ClaimSpec("layers.pruning_vs_random", "layers", "Layer similarity guides pruning: dropping the most redundant "
              "blocks costs less than dropping random ones.", STRUCTLENS,
              f"A (measure, drop count) case passes when its loss is below the random drops' mean minus their sd; "
              f"{COUNT_RULE}.", _paper("the most similar layers can be pruned with the least damage"), _vs_random,
              ("layers_pruning", _figure("layers", "pruning"))),
    ClaimSpec("layers.structure_vs_cosine", "layers", "Structural similarity (StructLens trees) guides pruning "
              "better than cosine similarity of activations.", STRUCTLENS,
              f"A drop count passes when the best structural measure's loss is more than {PRUNE_TOL} nats/token below "
              f"cosine's; {COUNT_RULE}.", _paper("structural similarity differs from cosine and guides layer pruning "
              "better (no number comparable to ours)"), _structure, ("layers_pruning", _figure("layers", "pruning"))),
    ClaimSpec("lens.tuned_beats_logit", "lens", "The tuned lens predicts the final distribution better than the "
              "logit lens at every layer but the last.", TUNED_LENS,
              f"A layer passes when the tuned lens's KL interval lies below the logit lens's; {COUNT_RULE}.",
              _paper("tuned-lens KL below logit-lens KL at every layer of every model studied"), _tuned,
              ("lens_curves", _figure("lens", "plot_curves"))),
    ClaimSpec("updates.alignment", "updates", "Each layer's update is almost perfectly aligned with its tokenwise "
              "part.", UPDATES, f"A transition passes when mean cos(D, T) >= {ALIGN_COS}; {COUNT_RULE}.",
              _paper("update almost perfectly aligned with a tokenwise (per-token linear) approximation"), _alignment,
              ("updates_alignment", _figure("updates", "alignment"))),
    ClaimSpec("updates.error_predicts_perturbation", "updates", "The tokenwise approximation error predicts the "
              "output perturbation.", UPDATES,
              f"Supported when the Spearman interval lies above 0 in at least {MAJORITY:.0%} of transitions and the "
              f"median is >= {SPEARMAN_PAPER}; not supported when at most {MINORITY:.0%} are above 0; inconclusive "
              "otherwise.", _paper("Spearman(error, output perturbation) 0.7-0.95"), _error,
              ("updates_spearman", _figure("updates", "spearman"))),
    ClaimSpec("interaction.ablation", "interaction", "The interaction basis keeps more of what later layers use than "
              "PCA with the same number of directions.", RIB,
              f"A (layer, n) case passes when the interaction basis's loss is more than {PRUNE_TOL} nats/token below "
              f"PCA's; {COUNT_RULE}.", _paper("interaction-basis directions are the ones downstream computation uses"),
              _ablation, ("interaction_ablation", _figure("interaction", "ablation"))),
    ClaimSpec("interaction.sparsity", "interaction", "Interactions between layers are sparser in the interaction "
              "basis than in PCA.", RIB,
              f"A layer pair passes when its top-1% edge mass exceeds PCA's; {COUNT_RULE}.",
              _paper("sparser interaction graphs than PCA (modest gains on language models)"), _sparsity,
              ("interaction_edges", _figure("interaction", "edge_matrices"))),
]

__all__ = ["CLAIMS"]
