"""The galaxy-scale claims of Li et al. (2025): power-law spectra, their depth trend, clustering entropy."""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path

from featuregeo.io.reference import paper_galaxy_slope_at, paper_galaxy_slopes, paper_reference
from featuregeo.report.records import INCONCLUSIVE, NO_RESULTS, NOT_SUPPORTED, SUPPORTED
from featuregeo.report.rules import (COUNT_RULE, R2_MIN, SLOPE_TOL, count_verdict, finite, interval, median, num,
                                     units)
from featuregeo.report.spec import GEOMETRY_PAPER, ClaimSpec


def _layers(result) -> list:
    return [r for r in result.layers if finite(r.slope)]


#: a layer's power-law exponent (:attr:`featuregeo.tl.galaxy.result.GalaxyLayer.exponent`), the centre of ``slope_ci``
exponent = attrgetter("exponent")


def _how(recs) -> str:
    return "bias-corrected " if any(r.slope_corrected is not None for r in recs) else ""


def depth_of(result) -> tuple[int, str]:
    """Our model's number of layers and how it was known (:func:`featuregeo.pl.galaxy.model_layers`)."""
    from featuregeo.pl.galaxy import model_layers

    return model_layers(result)


def paper_slope_at(relative_depth: float) -> float:
    """The paper's slope at a relative depth (:func:`featuregeo.io.reference.paper_galaxy_slope_at`)."""
    return paper_galaxy_slope_at(relative_depth)


def _paper_slopes() -> tuple[str, float | None]:
    ref = paper_reference()["galaxy"]
    s = paper_galaxy_slopes()
    lo, hi = min(s.values()), max(s.values())
    text = (f"{ref['model']} ({ref['n_layers']} layers), {ref['sae']}: slopes over ranks {ref['fit_ranks'][0]}-"
            f"{ref['fit_ranks'][1]} from {num(lo)} to {num(hi)} (" +
            ", ".join(f"L{k} {num(v)}" for k, v in sorted(s.items())) +
            f"); isotropic Gaussian of the same shape about {num(ref['isotropic_null_slope'], 2)}")
    return text, median(s.values())


def _paper_match() -> tuple[str, float | None]:
    text, _ = _paper_slopes()
    return text + "; compared at the same relative depth (layer / number of layers)", None


def _headline(recs) -> dict:
    return {"value": median(exponent(r) for r in recs), "low": median(r.slope_ci[0] for r in recs),
            "high": median(r.slope_ci[1] for r in recs), "value_label": f"median {_how(recs)}slope over {len(recs)} "
            "layers (median interval)"}


def _power_law(result, directory: Path) -> dict:
    recs = _layers(result)
    with_null = [r for r in recs if r.null_slope is not None]
    cols = ["layer", "slope", "interval", "raw fit", "R2", "null slope", "steeper than null", "interval method"]
    rows = [[r.layer, num(exponent(r)), interval(*r.slope_ci), num(r.slope), num(r.r2), num(r.null_slope),
             "-" if r.null_slope is None else ("yes" if r.slope_ci[1] < r.null_slope and r.r2 >= R2_MIN else "no"),
             r.slope_ci_method] for r in recs]
    out = {**_headline(recs), "columns": cols, "rows": rows, "null_value": median(r.null_slope for r in with_null),
           "null": "an isotropic Gaussian cloud of the same shape through the same code (median over layers)",
           "ours": f"{len(recs)} layers of {result.source}: {_how(recs)}slopes {num(min(exponent(r) for r in recs))} "
                   f".. {num(max(exponent(r) for r in recs))} (raw fits {num(min(r.slope for r in recs))} .. "
                   f"{num(max(r.slope for r in recs))}), median R2 {num(median(r.r2 for r in recs))}"}
    if not with_null:
        return {**out, "verdict": INCONCLUSIVE, "sentence": "Inconclusive: no null slope was computed (galaxy ran "
                "with --no-null), so steepness cannot be judged."}
    steeper = sum(1 for r in with_null if r.slope_ci[1] < r.null_slope)
    straight = sum(1 for r in with_null if r.r2 >= R2_MIN)
    k = sum(1 for r in with_null if r.slope_ci[1] < r.null_slope and r.r2 >= R2_MIN)
    v = count_verdict(k, len(with_null))
    return {**out, "verdict": v, "sentence": f"{v.capitalize()}: {units(k, len(with_null), 'layers')} pass (slope "
            f"interval below the null's slope, median {num(out['null_value'])}, in {steeper}; a straight log-log line, "
            f"R2 >= {R2_MIN}, in {straight})."}


def _activations(result, directory: Path) -> dict:
    recs = [r for r in _layers(result) if r.activation_slope is not None]
    if not recs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the galaxy result has no raw-activation spectra "
                "(run galaxy with --activations)."}
    passed = {id(r) for r in recs if r.slope_ci[1] < (r.activation_slope_ci or (r.activation_slope,) * 2)[0]}
    v = count_verdict(len(passed), len(recs))
    cols = ["layer", "SAE slope", "interval", "activation slope", "interval", "SAE steeper"]
    rows = [[r.layer, num(exponent(r)), interval(*r.slope_ci), num(r.activation_slope),
             interval(*(r.activation_slope_ci or (None, None))), "yes" if id(r) in passed else "no"] for r in recs]
    return {**_headline(recs), "columns": cols, "rows": rows, "null_value": median(r.activation_slope for r in recs),
            "null": "the spectrum of the model's raw residual activations at the same layer, same code (median)",
            "ours": f"{len(recs)} layers: SAE {_how(recs)}slopes median {num(median(exponent(r) for r in recs))}, activations "
                    f"median {num(median(r.activation_slope for r in recs))}",
            "verdict": v, "sentence": f"{v.capitalize()}: the SAE slope's interval lies below the activations' "
            f"(steeper) in {units(len(passed), len(recs), 'layers')}."}


def _matches_paper(result, directory: Path) -> dict:
    recs = _layers(result)
    n, how = depth_of(result)
    rows, k, diffs = [], 0, []
    for r in recs:
        rel = (r.layer or 0) / n
        paper = paper_slope_at(rel)
        ok = r.slope_ci[0] - SLOPE_TOL <= paper <= r.slope_ci[1] + SLOPE_TOL
        k += ok
        diffs.append(exponent(r) - paper)
        rows.append([r.layer, num(rel, 2), num(exponent(r)), interval(*r.slope_ci), num(paper), num(exponent(r) - paper),
                     "yes" if ok else "no"])
    v = count_verdict(k, len(recs))
    return {"value": median(diffs), "value_label": "median of (our slope - the paper's at the same relative depth)",
            "columns": ["layer", "relative depth", "slope", "interval", "paper (interpolated)", "difference", "match"],
            "rows": rows, "null": "-", "ours": f"{len(recs)} layers; our model has {n} layers ({how}); layers compared "
            "at relative depth layer / number of layers",
            "verdict": v, "sentence": f"{v.capitalize()}: the paper's slope at the same relative depth lies within our "
            f"interval widened by {SLOPE_TOL} in {units(k, len(recs), 'layers')} (median difference "
            f"{num(median(diffs))})."}


def _trend(result, directory: Path) -> dict:
    recs = _layers(result)
    n, how = depth_of(result)
    rel = {id(r): (r.layer or 0) / n for r in recs}
    middle = [r for r in recs if 1 / 3 <= rel[id(r)] <= 2 / 3]
    outer = [r for r in recs if not 1 / 3 <= rel[id(r)] <= 2 / 3]
    steep = min(recs, key=exponent)
    cols = ["layer", "relative depth", "slope", "interval", "third"]
    rows = [[r.layer, num(rel[id(r)], 2), num(exponent(r)), interval(*r.slope_ci), "middle" if 1 / 3 <= rel[id(r)] <= 2 / 3 else "outer"]
            for r in recs]
    out = {"value": rel[id(steep)], "value_label": f"relative depth of the steepest layer (layer {steep.layer} of {n})",
           "low": None, "high": None, "columns": cols, "rows": rows, "null": "the steepest layer outside the middle "
           "third of the depth", "ours": f"steepest {_how(recs)}slope {num(exponent(steep))} at layer {steep.layer} ({how})"}
    if len(recs) < 3 or not middle or not outer:
        return {**out, "verdict": INCONCLUSIVE, "sentence": f"Inconclusive: {len(recs)} layers, {len(middle)} in the "
                "middle third of the depth; a trend needs layers inside and outside it."}
    m, o = min(middle, key=exponent), min(outer, key=exponent)
    out["null_value"] = exponent(o)
    if m.slope_ci[1] < o.slope_ci[0]:
        v = SUPPORTED
    elif o.slope_ci[1] < m.slope_ci[0]:
        v = NOT_SUPPORTED
    else:
        v = INCONCLUSIVE
    word = {SUPPORTED: "steeper than", NOT_SUPPORTED: "shallower than", INCONCLUSIVE: "not separable from"}[v]
    return {**out, "verdict": v, "sentence": f"{v.capitalize()}: the steepest middle-third layer ({m.layer}, "
            f"{num(exponent(m))} {interval(*m.slope_ci)}) is {word} the steepest outer layer ({o.layer}, {num(exponent(o))} "
            f"{interval(*o.slope_ci)})."}


def _paper_trend() -> tuple[str, float | None]:
    ref = paper_reference()["galaxy"]
    st = ref["steepest"]
    return (f"steepest |slope| {num(st['abs_slope'])} at layer {st['layer']} of {ref['n_layers']} (relative depth "
            f"{num(st['layer'] / ref['n_layers'], 2)}); shallower towards both ends"), st["layer"] / ref["n_layers"]


def _entropy(result, directory: Path) -> dict:
    recs = [r for r in result.layers if r.entropy is not None and r.entropy.excess_ci is not None]
    if not recs:
        return {"verdict": NO_RESULTS, "sentence": "No results: the galaxy result has no clustering entropy with "
                "an interval (galaxy ran with --no-entropy or without the entropy nulls)."}
    k = sum(1 for r in recs if r.entropy.excess_ci[0] > 0)
    v = count_verdict(k, len(recs))
    cols = ["layer", "Gaussian - kNN (nats)", "strongest null", "null's difference", "excess", "excess interval"]
    rows = [[r.layer, num(r.entropy.difference, 2), r.entropy.strongest_null or "-",
             num(r.entropy.difference - r.entropy.excess if finite(r.entropy.excess) else None, 2),
             num(r.entropy.excess, 2), interval(*r.entropy.excess_ci, digits=2)] for r in recs]
    return {"value": median(r.entropy.excess for r in recs), "low": median(r.entropy.excess_ci[0] for r in recs),
            "high": median(r.entropy.excess_ci[1] for r in recs),
            "value_label": "median excess over the strongest unclustered null, nats (median interval)",
            "null_value": 0.0, "null": "unclustered clouds with the same spectrum (Gaussian, own radii, own "
            "marginals) through the same estimator; excess 0 = no clustering",
            "columns": cols, "rows": rows, "ours": f"{len(recs)} layers: excess {num(min(r.entropy.excess for r in recs), 1)}"
            f" .. {num(max(r.entropy.excess for r in recs), 1)} nats",
            "verdict": v, "sentence": f"{v.capitalize()}: the entropy excess over the strongest unclustered null has "
            f"its interval above 0 in {units(k, len(recs), 'layers')}."}


def _paper_entropy() -> tuple[str, float | None]:
    e = paper_reference()["galaxy"]["clustering_entropy"]
    vals = e["values"]
    return ("clustering entropy " + ", ".join(f"L{k} {v}" for k, v in vals.items()) +
            f" nats; not comparable: {e['note']}"), None


def _draw(name: str):
    def draw(result, path: Path) -> Path:
        from featuregeo.pl import galaxy as plot

        if name == "slopes":
            return plot.galaxy_slopes(result, path, reference=paper_galaxy_slopes())
        return getattr(plot, f"galaxy_{name}")(result, path)
    return draw


def _paper_activations() -> tuple[str, float | None]:
    return "decoder spectra are steeper than those of raw residual activations (qualitative)", None


CLAIMS = [
    ClaimSpec("galaxy.power_law", "galaxy", "The decoder-direction spectrum is a power law, much steeper than an "
              "isotropic cloud of the same shape.", GEOMETRY_PAPER,
              f"A layer passes when its slope interval lies below the null's slope and R2 >= {R2_MIN}; {COUNT_RULE}.",
              _paper_slopes, _power_law, ("galaxy_spectra", _draw("spectra"))),
    ClaimSpec("galaxy.activations", "galaxy", "SAE feature spectra are steeper than the spectra of the raw "
              "residual activations.", GEOMETRY_PAPER,
              f"A layer passes when the SAE slope's interval lies below the activation slope's interval; {COUNT_RULE}.",
              _paper_activations, _activations, ("galaxy_slopes", _draw("slopes"))),
    ClaimSpec("galaxy.slope_matches_paper", "galaxy", "Our slopes have the paper's magnitude at the same relative "
              "depth.", GEOMETRY_PAPER,
              f"A layer passes when the paper's slope, interpolated at the same relative depth (layer / number of "
              f"layers), lies within our interval widened by {SLOPE_TOL}; {COUNT_RULE}.",
              _paper_match, _matches_paper, ("galaxy_slopes", _draw("slopes"))),
    ClaimSpec("galaxy.layer_trend", "galaxy", "The spectrum is steepest in the middle layers.", GEOMETRY_PAPER,
              "Supported when the steepest layer of the middle third of the depth has its slope interval entirely "
              "below (steeper than) that of the steepest outer layer; not supported when the reverse holds; "
              "inconclusive when the intervals overlap or the layers do not cover both.",
              _paper_trend, _trend, ("galaxy_slopes", _draw("slopes"))),
    ClaimSpec("galaxy.clustering_entropy", "galaxy", "The feature cloud is clustered: its clustering entropy "
              "exceeds that of unclustered clouds with the same spectrum.", GEOMETRY_PAPER,
              f"A layer passes when the interval of the excess over the strongest null lies above 0; {COUNT_RULE}.",
              _paper_entropy, _entropy, ("galaxy_entropy", _draw("entropy"))),
]

__all__ = ["CLAIMS", "paper_slope_at", "depth_of"]
