"""The brain- and atom-scale claims of Li et al. (2025): spatial lobes, lobes by document type, function
vectors and LDA, the length distractor, crystals among SAE features."""

from __future__ import annotations

import math
from pathlib import Path

from featuregeo.io.reference import paper_reference
from featuregeo.report.records import NO_RESULTS
from featuregeo.report.rules import ALPHA, COUNT_RULE, SE_FACTOR, SIGMA_MIN, count_verdict, finite, median, num, units
from featuregeo.report.spec import GEOMETRY_PAPER, ClaimSpec


def _stats(layer):
    """The record of the smallest lobe count of the phi affinity (else the first affinity) of one layer."""
    recs = [r for r in layer.records if r.affinity == "phi"] or list(layer.records)
    return min(recs, key=lambda r: r.n_clusters) if recs else None


def _middle(items):
    return items[len(items) // 2] if items else None


def _p(x) -> str:
    return "-" if not finite(x) else f"{float(x):.3g}"


def _spatial(result, directory: Path) -> dict:
    pairs = [(L, _stats(L)) for L in result.layers]
    pairs = [(L, s) for L, s in pairs if s is not None and finite(s.ami_sigma)]
    if not pairs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the lobes result has no AMI permutation test."}
    ok = lambda s: s.ami_sigma >= SIGMA_MIN and (not finite(s.logreg_sigma) or s.logreg_sigma >= SIGMA_MIN)  # noqa: E731
    k = sum(1 for _, s in pairs if ok(s))
    v = count_verdict(k, len(pairs))
    rows = []
    for L, s in pairs:
        peak = max((r for r in L.records if r.affinity == s.affinity and finite(r.ami)), key=lambda r: r.ami,
                   default=None)
        rows.append([L.layer, s.affinity, s.n_clusters, num(s.ami), f"{num(s.ami_null_mean)} ± {num(s.ami_null_std)}",
                     num(s.ami_sigma, 1), _p(s.ami_p), num(s.logreg_bal_acc), num(s.logreg_null_mean), num(s.logreg_sigma, 1),
                     "-" if peak is None else f"{num(peak.ami)} (k={peak.n_clusters})", "yes" if ok(s) else "no"])
    return {"value": median(s.ami for _, s in pairs), "value_label": "median AMI between co-occurrence and geometry "
            "lobes at the smallest lobe count", "null_value": median(s.ami_null_mean for _, s in pairs),
            "null": "AMI of label permutations; balanced accuracy of logistic regression on random Gaussian geometries",
            "ours": f"{len(pairs)} layers: AMI {num(min(s.ami for _, s in pairs))} .. {num(max(s.ami for _, s in pairs))}"
                    f", logistic-regression balanced accuracy median {num(median(s.logreg_bal_acc for _, s in pairs))}",
            "columns": ["layer", "affinity", "lobes", "AMI", "null mean ± sd", "sigma", "p", "logreg bal. acc.",
                        "logreg null", "logreg sigma", "peak AMI", "passes"],
            "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: co-occurrence lobes match geometry lobes at least {SIGMA_MIN:g} sigma "
                        f"above the permutation null (and lobes are predictable from decoder rows {SIGMA_MIN:g} sigma "
                        f"beyond random geometries, where run) in {units(k, len(pairs), 'layers')}."}


def _paper_spatial() -> tuple[str, float | None]:
    lb = paper_reference()["lobes"]
    s = lb["ami_sigma_2_clusters"]
    return (f"phi AMI {lb['phi_ami_2_clusters']} at 2 clusters ({s[0]}-{s[1]} sigma above permutations), peak "
            f"{lb['phi_ami_peak']['value']} at {lb['phi_ami_peak']['n_clusters'][0]}-{lb['phi_ami_peak']['n_clusters'][1]}"
            f" clusters; logistic regression balanced accuracy {lb['phi_balanced_accuracy_2_clusters']} "
            f"({lb['logreg_sigma']} sigma above random geometries)"), lb["phi_ami_2_clusters"]


def _genre(result, directory: Path) -> dict:
    pairs = [(L, _stats(L)) for L in result.layers]
    pairs = [(L, s) for L, s in pairs if s is not None and finite(s.genre_p)]
    if not pairs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the lobes result has no held-out genre table "
                "(lobes ran with heldout_fraction 0 or the corpus has one genre)."}
    level = ALPHA / len(pairs)
    k = sum(1 for _, s in pairs if s.genre_p < level)
    v = count_verdict(k, len(pairs))
    rows = [[L.layer, s.affinity, s.n_clusters, num(s.genre_cramers_v), _p(s.genre_p), s.genre_p_method or "-",
             "; ".join(f"{g}: {lobe}" for g, lobe in (s.genre_majority or {}).items()) or "-"] for L, s in pairs]
    return {"value": median(s.genre_cramers_v for _, s in pairs), "value_label": "median Cramer's V of held-out "
            "genre x winning lobe", "null_value": 0.0, "null": "independence of genre and winning lobe (chi-square or "
            "permutation p)", "ours": f"{len(pairs)} layers, held-out blocks", "columns": ["layer", "affinity", "lobes",
            "Cramer's V", "p", "test", "majority lobe per genre"], "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: the winning lobe of held-out blocks depends on their genre at p < "
                        f"{num(level, 4)} in {units(k, len(pairs), 'layers')}."}


def _paper_genre() -> tuple[str, float | None]:
    return ("2 lobes: code and math (GitHub, StackExchange, DM Mathematics) vs the rest; 3 lobes add a chat-like "
            "and a facts-like lobe (in-sample, qualitative)"), None


def _lda(result, directory: Path) -> dict:
    rows, k, n, diffs = [], 0, 0, []
    for L in result.layers:
        raw, lda = L.best("raw"), L.best("lda")
        if raw is None or lda is None or not (finite(raw.analogy_accuracy) and finite(lda.analogy_accuracy)):
            continue
        p1, n1, p2, n2 = raw.analogy_accuracy, max(raw.n_quadruples, 1), lda.analogy_accuracy, max(lda.n_quadruples, 1)
        se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        d = p2 - p1
        better = d > SE_FACTOR * se
        n += 1
        k += better
        diffs.append(d)
        rows.append([L.layer, num(p1), n1, f"{num(p2)} ({lda.n_components})", n2, num(d), num(se),
                     "better" if better else ("worse" if d < -SE_FACTOR * se else "tie")])
    if not n:
        return {"verdict": NO_RESULTS, "sentence": "No results: the atoms result has no held-out analogy scores."}
    v = count_verdict(k, n)
    return {"value": median(diffs), "value_label": "median gain in held-out analogy accuracy, LDA - raw",
            "null_value": 0.0, "null": "the raw (unprojected) residual differences, same held-out quadruples",
            "ours": f"{n} layers of {result.model}; LDA components chosen on a validation split of train pairs",
            "columns": ["layer", "raw accuracy", "quadruples", "LDA accuracy (components)", "quadruples", "gain",
                        "s.e.", "result"], "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: LDA beats the raw space on held-out analogies by more than {SE_FACTOR:g} "
                        f"standard errors in {units(k, n, 'layers')}."}


def _paper_lda() -> tuple[str, float | None]:
    return ("LDA (task as label, 8 components) removes distractor directions and separates the function vectors; "
            "scored by silhouette on the pairs it was fitted to (no held-out number)"), None


def _distractor(result, directory: Path) -> dict:
    rows, k, n = [], 0, 0
    for L in result.layers:
        d = L.distractors
        r = d.pc1_r_chars
        if not finite(r) or d.n_pairs < 4:
            continue
        bound = 2 / math.sqrt(d.n_pairs)
        n += 1
        k += abs(r) > bound
        rows.append([L.layer, d.n_pairs, num(r), num(bound), d.best_pc_chars or "-", "yes" if abs(r) > bound else "no"])
    if not n:
        return {"verdict": NO_RESULTS, "sentence": "No results: the atoms result has no length correlations."}
    v = count_verdict(k, n)
    return {"value": median(abs(float(L.distractors.pc1_r_chars)) for L in result.layers
                            if finite(L.distractors.pc1_r_chars)),
            "value_label": "median |r| of PC1 of the difference vectors with the change in characters",
            "null_value": median(2 / math.sqrt(L.distractors.n_pairs) for L in result.layers if L.distractors.n_pairs),
            "null": "2 / sqrt(pairs): the approximate 95% bound of |r| without correlation",
            "ours": f"{n} layers", "columns": ["layer", "pairs", "r(PC1, change in chars)", "bound",
                                               "PC most tied to length", "passes"],
            "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: PC1 of the difference vectors correlates with the change in word length "
                        f"beyond 2/sqrt(pairs) in {units(k, n, 'layers')}."}


def _paper_distractor() -> tuple[str, float | None]:
    return "PC1 of the difference vectors tracks the change in token length (a distractor LDA removes)", None


def _crystals(result, directory: Path) -> dict:
    recs = [L for L in result.layers if L.crystals is not None and L.crystal_null is not None]
    if not recs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the atoms result has no crystal search with its null "
                "(atoms ran without an SAE)."}
    ok = lambda L: L.crystals.n_matches >= 2 * (L.crystal_null.n_matches + 1)  # noqa: E731
    k = sum(1 for L in recs if ok(L))
    v = count_verdict(k, len(recs))
    top = lambda L: float(L.crystals.quadruples.cosine[0]) if len(L.crystals) else None  # noqa: E731
    rows = [[L.layer, L.crystals.n_features, L.crystals.n_matches, L.crystal_null.n_matches, num(top(L)),
             num(L.crystal_null.top_cosine), "yes" if ok(L) else "no"] for L in recs]
    return {"value": float(sum(L.crystals.n_matches for L in recs)), "value_label": "crystals found (all layers)",
            "null_value": float(sum(L.crystal_null.n_matches for L in recs)), "null": recs[0].crystal_null.description,
            "ours": f"{len(recs)} layers of {result.sae}", "columns": ["layer", "features", "crystals", "null crystals",
                                                                      "top cosine", "null top cosine", "passes"],
            "rows": rows, "verdict": v,
            "sentence": f"{v.capitalize()}: the SAE's decoder rows hold at least twice as many crystals as the null "
                        f"(+1) in {units(k, len(recs), 'layers')}."}


def _paper_crystals() -> tuple[str, float | None]:
    return ("parallelograms and trapezoids (man:woman::king:queen) among SAE features, shown by examples; no count "
            "or search procedure published"), None


def _figure(kind: str):
    def draw(result, path: Path) -> Path:
        if kind in ("ami", "genre"):
            from featuregeo.pl import lobes as plot

            layer = _middle(result.layers)
            return plot.ami_vs_clusters(layer, path) if kind == "ami" else plot.genre_heatmap(layer, path)
        from featuregeo.pl import atoms as plot

        layer = _middle(result.layers)
        if kind == "crystals":
            layer = _middle([L for L in result.layers if L.crystals is not None]) or layer
            return plot.crystal_examples(layer.crystals, path)
        return plot.scores_by_components(layer, path) if kind == "scores" else plot.differences_2d(layer, path)
    return draw


CLAIMS = [
    ClaimSpec("lobes.spatial", "lobes", "Functional lobes are spatial: features that fire together sit together "
              "in the decoder geometry.", GEOMETRY_PAPER,
              f"A layer passes when the AMI is at least {SIGMA_MIN:g} null standard deviations above its permutation "
              f"null (and, when run, the logistic regression's balanced accuracy {SIGMA_MIN:g} sigma above random "
              "geometries); sigma, not p, because a permutation p cannot go below 1 / (permutations + 1); "
              f"{COUNT_RULE}.", _paper_spatial, _spatial, ("lobes_ami", _figure("ami"))),
    ClaimSpec("lobes.genre", "lobes", "Lobes specialise by document type (code and math vs prose).", GEOMETRY_PAPER,
              f"A layer passes when the held-out genre x lobe test has p below {ALPHA} / number of layers; {COUNT_RULE}.",
              _paper_genre, _genre, ("lobes_genre", _figure("genre"))),
    ClaimSpec("atoms.lda", "atoms", "Function vectors: an LDA projection removes distractors and makes word-pair "
              "differences consistent (analogies work).", GEOMETRY_PAPER,
              f"A layer passes when LDA's held-out analogy accuracy exceeds the raw space's by more than {SE_FACTOR:g} "
              f"binomial standard errors; {COUNT_RULE}.", _paper_lda, _lda, ("atoms_scores", _figure("scores"))),
    ClaimSpec("atoms.length_distractor", "atoms", "The first principal component of the difference vectors is a "
              "distractor: it tracks word length.", GEOMETRY_PAPER,
              f"A layer passes when |r(PC1, change in characters)| > 2 / sqrt(pairs); {COUNT_RULE}.",
              _paper_distractor, _distractor, ("atoms_differences", _figure("differences"))),
    ClaimSpec("atoms.crystals", "atoms", "Crystals (parallelograms and trapezoids) exist among SAE features.",
              GEOMETRY_PAPER, f"A layer passes when the search finds at least 2 x (null + 1) crystals; {COUNT_RULE}.",
              _paper_crystals, _crystals, ("atoms_crystals", _figure("crystals"))),
]

__all__ = ["CLAIMS"]
