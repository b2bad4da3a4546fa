"""What the demo writes into ``summary.json`` for each stage, and the short summary it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fmt", "galaxy_summary", "lobes_summary", "atoms_summary", "layers_summary", "lens_summary",
           "print_summary"]


def fmt(x: Any, p: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{p}f}"


def galaxy_summary(result, out: Path) -> dict:
    recs = result.layers
    steep = min(recs, key=lambda r: r.exponent)
    steeper = sum(1 for r in recs if r.activation_slope is not None and r.slope < r.activation_slope)
    nulls = [r.null_slope for r in recs if r.null_slope is not None]
    return {
        "dir": str(out),
        "records": [{"layer": r.layer, "n_features": r.n_features, "slope": r.slope, "slope_corrected": r.slope_corrected,
                     "slope_ci": list(r.slope_ci),
                     "null_slope": r.null_slope, "activation_slope": r.activation_slope,
                     "entropy_excess": None if r.entropy is None else r.entropy.excess} for r in recs],
        "steepest_layer": steep.layer, "steepest_slope": steep.exponent,
        "layers_steeper_than_activations": steeper,
        "mean_null_slope": float(np.mean(nulls)) if nulls else None,
        "figures": sorted(str(p) for p in out.glob("galaxy_*.png")),
    }


def lobes_summary(result) -> dict:
    out = {}
    for layer in result.layers:
        row = {}
        for k in (2, 3):
            x = next((r for r in layer.records if r.affinity == "phi" and r.n_clusters == k), None)
            if x is not None:
                row[f"phi_{k}"] = {key: getattr(x, key, None) for key in (
                    "ami", "ami_sigma", "ami_p", "logreg_bal_acc", "logreg_null_mean", "genre_cramers_v",
                    "genre_majority")}
        out[layer.layer] = row
    return out


def atoms_summary(layer) -> dict:
    raw = layer.best("raw")
    lda = layer.best("lda")  # the component count chosen on the validation split, scored on held-out pairs
    pcr = layer.best("pc_removed")
    r_chars = np.asarray(layer.distractors.r_chars, dtype=float)
    n_cr = 0 if layer.crystals is None else int(layer.crystals.n_matches)
    row = {
        "analogy": {"raw": getattr(raw, "analogy_accuracy", None), "lda": getattr(lda, "analogy_accuracy", None),
                    "pc_removed": getattr(pcr, "analogy_accuracy", None)},
        "silhouette": {"raw": getattr(raw, "silhouette", None), "lda": getattr(lda, "silhouette", None)},
        "lda_components": getattr(lda, "n_components", None),
        "pc1_r_chars": float(r_chars[0]) if r_chars.size and np.isfinite(r_chars[0]) else None,
        "crystals": n_cr,
    }
    row["line"] = (f"held-out analogy raw {fmt(row['analogy']['raw'], 2)}, LDA({row['lda_components']}) "
                   f"{fmt(row['analogy']['lda'], 2)}, top PCs removed {fmt(row['analogy']['pc_removed'], 2)}; "
                   f"silhouette {fmt(row['silhouette']['raw'], 2)} -> {fmt(row['silhouette']['lda'], 2)}; PC1 vs length r "
                   f"{fmt(row['pc1_r_chars'], 2)}; {n_cr} crystals")
    return row


def layers_summary(result) -> dict:
    pr = result.pruning
    one = [r for r in (pr.table if pr else []) if r.n_drop == 1]
    rand = [r.loss for r in (pr.random if pr else []) if r.n_drop == 1]
    return {
        "most_redundant": {m: (v[0].block if v else None) for m, v in result.redundancy.items()},
        "baseline_loss": pr.baseline if pr else None,
        "loss_after_one_drop": {r.method: r.loss for r in one},
        "random_one_drop_median": float(np.median(rand)) if rand else None,
    }


def lens_summary(result) -> dict:
    """Per layer the KL to the final distribution of both lenses (mean and 95 % interval), and the layers
    where the tuned lens is below the logit lens with intervals that do not overlap."""
    last = result.n_layers - 1
    per = {}
    better = []
    for rec in result.layers:
        lo, tu = rec.logit.kl, rec.tuned.kl if rec.tuned is not None else None
        per[rec.layer] = {"kl_logit": [lo.mean, lo.low, lo.high],
                          "kl_tuned": None if tu is None else [tu.mean, tu.low, tu.high]}
        if tu is not None and rec.layer < last and tu.high < lo.low:
            better.append(rec.layer)
    judged = [rec.layer for rec in result.layers if rec.layer < last and rec.tuned is not None]
    return {"eval_tokens": result.n_eval_tokens, "layers": per, "tuned_below_logit_kl": better,
            "judged_layers": judged}


def print_summary(summary: dict, gal, out: Path) -> None:
    recs = gal.layers
    g = summary["galaxy"]
    print()
    print(f"featuregeo demo — {len(recs)} layers, {recs[0].n_features} features x d_model {recs[0].d_model} per layer")
    corr = "bias-corrected " if any(r.slope_corrected is not None for r in recs) else ""
    print(f"  galaxy: decoder spectra are power laws with {corr}slopes {min(r.exponent for r in recs):.3f} .. "
          f"{max(r.exponent for r in recs):.3f} (raw fits {min(r.slope for r in recs):.3f} .. "
          f"{max(r.slope for r in recs):.3f}; steepest at layer {g['steepest_layer']}); isotropic null "
          f"{fmt(g['mean_null_slope'])}; steeper than raw activations in {g['layers_steeper_than_activations']}/{len(recs)} layers")
    ex = [r.entropy.excess for r in recs if r.entropy is not None and r.entropy.excess is not None]
    if ex:
        print(f"  clustering entropy beyond the strongest unclustered null: {min(ex):.1f} .. {max(ex):.1f} nats")
    for layer, row in summary["lobes"]["layers"].items():
        x = row.get("phi_2") or {}
        if x:
            print(f"  lobes layer {layer}: 2 phi lobes vs geometry AMI {fmt(x['ami'])} (sigma {fmt(x['ami_sigma'], 1)}); "
                  f"lobe -> genre Cramer's V {fmt(x['genre_cramers_v'], 2)}, majority {x['genre_majority']}")
    for layer, row in summary["atoms"]["layers"].items():
        print(f"  atoms layer {layer}: {row['line']}")
    lc = summary["layers_comparison"]
    rand = lc["random_one_drop_median"]
    print(f"  layers: most redundant block by measure {lc['most_redundant']}; held-out loss {fmt(lc['baseline_loss'])} "
          f"-> after dropping it {', '.join(f'{k} {v:.3f}' for k, v in lc['loss_after_one_drop'].items())}"
          + (f" (random drop median {rand:.3f})" if rand else ""))
    ln = summary.get("lens")
    if ln:
        kl = {int(k): v for k, v in ln["layers"].items()}
        mid = sorted(kl)[len(kl) // 2]
        print(f"  lens: tuned lens below the logit lens in KL (intervals apart) at {len(ln['tuned_below_logit_kl'])}/"
              f"{len(ln['judged_layers'])} layers on {ln['eval_tokens']} held-out tokens; layer {mid}: KL "
              f"{fmt(kl[mid]['kl_logit'][0])} -> {fmt((kl[mid]['kl_tuned'] or [None])[0])} nats")
    for fig in g["figures"]:
        print(f"  figure: {fig}")
    print(f"  atlas: {summary['atlas']}  (open it in a browser)")
    if summary.get("report"):
        print(f"  findings report: {summary['report']}")
    st = summary.get("settings") or {}
    if st.get("reduced"):
        print(f"  settings '{st['name']}': smaller than --full in {', '.join(sorted(st['reduced']))} "
              "(summary.json lists both values)")
    secs = summary["seconds"]
    print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items() if k != "total"))
    print(f"  summary: {out / 'summary.json'}  ({secs['total']:.0f}s)")
