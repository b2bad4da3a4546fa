"""Findings report: verdicts follow the numbers of real (planted) results, the html shows the saved numbers,
escapes labels, fetches nothing, and missing results are listed rather than fatal."""

from __future__ import annotations

import html as htmlmod
import json
import re

import numpy as np
import pytest
from scipy.stats import ortho_group

from featuregeo.cli import main
from featuregeo.core.data import FeatureCloud, Provenance, Suite
from featuregeo.core.errors import InputError
from featuregeo.pipeline import report as report_pipeline
from featuregeo.report import NO_RESULTS, NOT_SUPPORTED, SUPPORTED, build
from featuregeo.report.claims_galaxy import paper_slope_at
from featuregeo.report.rules import num
from featuregeo.tl import galaxy
from featuregeo.tl.galaxy import GalaxyParams, GalaxyResult

HOSTILE = '<img src=x onerror="alert(1)">&</script>'
LAYERS = (1, 4, 7)  # the suite's last layer is 7: depth 8, relative depths 1/8, 1/2, 7/8
PARAMS = GalaxyParams(entropy=False, slope_bootstrap=20, fit_ranks=(5, 60))


def power_cloud(n: int, d: int, alpha: float, seed: int) -> np.ndarray:
    """Gaussian rows whose covariance eigenvalues are rank^-alpha, randomly rotated."""
    rng = np.random.default_rng(seed)
    ev = np.arange(1, d + 1, dtype=float) ** -alpha
    q = ortho_group.rvs(d, random_state=seed + 1)
    return ((rng.standard_normal((n, d)) * np.sqrt(ev)) @ q.T).astype(np.float32)


def planted_suite(alphas: dict[int, float], name: str, n: int = 4000, d: int = 80, clusters: bool = False) -> Suite:
    def load(layer: int) -> FeatureCloud:
        x = power_cloud(n, d, alphas[layer], seed=layer)
        if clusters:  # tight clusters around 40 centres of the same power-law cloud
            x = x[np.random.default_rng(layer).integers(0, 40, n)] + 0.05 * power_cloud(n, d, alphas[layer], layer + 9)
        return FeatureCloud(x, layer, Provenance(source=name))

    return Suite(sorted(alphas), load, name=name)


def galaxy_dir(tmp_path, alphas, name="planted", params=PARAMS, **kw):
    out = tmp_path / "galaxy"
    galaxy.analyze(planted_suite(alphas, name, **kw), params).save(out)
    return tmp_path


def paper_like() -> dict[int, float]:
    """Exponents equal to the paper's slopes at the same relative depth (middle steepest)."""
    return {L: -paper_slope_at(L / 8) for L in LAYERS}


def addresses(text: str) -> list[str]:
    """Every address an element of the page points at (src, href, action, poster, srcset, ...)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v or "" for k, v in attrs if k in ("src", "href", "action", "poster", "srcset", "data"))

    Tags().feed(text)
    return found


def embedded(text: str) -> dict:
    m = re.search(r'<pre id="featuregeo-report-json" hidden>(.*?)</pre>', text, re.S)
    return json.loads(htmlmod.unescape(m.group(1)))


@pytest.fixture(scope="module")
def close_and_far(tmp_path_factory):
    close = galaxy_dir(tmp_path_factory.mktemp("close"), paper_like(), name=HOSTILE)
    far = galaxy_dir(tmp_path_factory.mktemp("far"), {1: 1.3, 4: 0.9, 7: 1.4})
    return close, far


def test_verdicts_flip_with_the_numbers(close_and_far):
    close, far = close_and_far
    a, _, _ = build([close], figures=False)
    b, _, _ = build([far], figures=False)
    # paper-like exponents: power law, same magnitude at the same relative depth, steepest in the middle
    assert a.claim("galaxy.power_law").verdict == SUPPORTED
    assert a.claim("galaxy.slope_matches_paper").verdict == SUPPORTED
    assert a.claim("galaxy.layer_trend").verdict == SUPPORTED
    # far steeper, steepest at the ends: still a power law, but neither the paper's magnitude nor its trend
    assert b.claim("galaxy.power_law").verdict == SUPPORTED
    assert b.claim("galaxy.slope_matches_paper").verdict == NOT_SUPPORTED
    assert b.claim("galaxy.layer_trend").verdict == NOT_SUPPORTED
    assert b.claim("galaxy.slope_matches_paper").value < -0.3  # ours minus the paper's: much steeper


def test_isotropic_cloud_is_not_a_power_law(tmp_path):
    r, _, _ = build([galaxy_dir(tmp_path, {1: 0.0, 4: 0.0, 7: 0.0})], figures=False)
    c = r.claim("galaxy.power_law")
    assert c.verdict == NOT_SUPPORTED, c.sentence
    assert abs(c.value - c.null_value) < 0.1  # the planted cloud and its null are alike


def test_clustered_cloud_has_entropy_excess_and_gaussian_has_none(tmp_path):
    p = GalaxyParams(slope_bootstrap=0, entropy_subsample=600, entropy_pca_dim=10, entropy_repeats=3,
                     fit_ranks=(2, 20))
    flat = {1: 0.3, 4: 0.3}
    gauss, _, _ = build([galaxy_dir(tmp_path / "g", flat, params=p, n=1000, d=24)], figures=False)
    clus, _, _ = build([galaxy_dir(tmp_path / "c", flat, params=p, n=1000, d=24, clusters=True)], figures=False)
    assert clus.claim("galaxy.clustering_entropy").verdict == SUPPORTED
    assert gauss.claim("galaxy.clustering_entropy").verdict == NOT_SUPPORTED
    assert clus.claim("galaxy.clustering_entropy").value > 5 > abs(gauss.claim("galaxy.clustering_entropy").value)


def test_html_numbers_equal_the_result_files_escapes_labels_and_fetches_nothing(close_and_far):
    close, _ = close_and_far
    res = report_pipeline.run(close, progress=None)
    text = (close / "report.html").read_text()
    saved = GalaxyResult.load(close / "galaxy")
    # the numbers: the per-layer table and the headline are the saved (bias-corrected) slopes and raw fits
    doc = embedded(text)
    claim = next(c for c in doc["claims"] if c["id"] == "galaxy.power_law")
    assert [row[1] for row in claim["rows"]] == [num(r.slope_corrected) for r in saved.layers]
    assert claim["value"] == float(np.median([r.slope_corrected for r in saved.layers]))
    for r in saved.layers:
        assert f"<td>{num(r.slope_corrected)}</td>" in text and f"<td>{num(r.null_slope)}</td>" in text
        assert f"<td>{num(r.slope)}</td>" in text
    assert res.claim("galaxy.power_law").value == claim["value"]
    # a hostile source name is text, never markup
    assert HOSTILE not in text and "<img src=x" not in text
    assert htmlmod.escape(HOSTILE, quote=True) in text
    # self-contained: figures inline, no scripts, no external address anywhere
    assert "data:image/png;base64," in text
    assert [u for u in addresses(text) if not u.startswith(("data:image/png;base64,", "#"))] == []
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower() and "url(" not in text
    assert (close / "report.json").is_file() and (close / "report.csv").is_file()


def test_missing_results_are_listed_not_fatal(close_and_far):
    close, _ = close_and_far
    r, figures, failed = build([close], figures=True)
    for cid in ("lobes.spatial", "atoms.lda", "layers.structure_vs_cosine", "lens.tuned_beats_logit",
                "updates.alignment", "interaction.ablation", "galaxy.activations"):
        assert r.claim(cid).verdict == NO_RESULTS, cid
    assert r.claim("lobes.spatial").command.startswith("featuregeo harvest")
    assert not failed and {"galaxy_spectra", "galaxy_slopes"} <= set(figures)
    text = report_pipeline.run(close, progress=None, figures=False) and (close / "report.html").read_text()
    assert 'id="no-results"' in text and "No results: no lobes result in" in text


def test_spread_across_result_sets_and_a_robustness_table(close_and_far):
    close, far = close_and_far
    (close / "robustness.csv").write_text("claim,source,value,low,high\ngalaxy.power_law,sae-16k,-0.41,-0.45,-0.37\n")
    try:
        r, _, _ = build([close, far], figures=False)
    finally:
        (close / "robustness.csv").unlink()
    s = r.claim("galaxy.slope_matches_paper").spread
    assert s.labels == [str(close), str(far)] and s.verdicts == [SUPPORTED, NOT_SUPPORTED]
    p = r.claim("galaxy.power_law").spread
    assert p.labels[-1] == "sae-16k" and p.values[-1] == -0.41 and p.verdicts[-1] == ""


def test_a_table_only_directory_adds_rows_not_an_empty_result_set(close_and_far, tmp_path):
    close, _ = close_and_far
    table = tmp_path / "robustness"
    table.mkdir()
    (table / "robustness.csv").write_text("claim,source,value,low,high\ngalaxy.power_law,sae-16k,-0.41,-0.45,-0.37\n")
    r, _, _ = build([close, table], figures=False)
    p = r.claim("galaxy.power_law").spread
    assert p.labels == [str(close), "sae-16k"] and p.verdicts[0] == r.claim("galaxy.power_law").verdict
    assert r.claim("galaxy.slope_matches_paper").spread is None  # no row for it, no second result set


def test_headline_slope_is_the_centre_of_its_interval(close_and_far):
    """The interval is the bias-corrected exponent's, so the value shown beside it is that exponent (the raw
    least-squares fit, biased by the finite sample, can lie outside it and is shown as its own column)."""
    close, _ = close_and_far
    saved = GalaxyResult.load(close / "galaxy")
    assert all(r.slope_corrected is not None for r in saved.layers)
    c = build([close], figures=False)[0].claim("galaxy.power_law")
    assert c.low < c.value < c.high
    assert c.value == pytest.approx(float(np.median([r.slope_corrected for r in saved.layers])))
    for row, r in zip(c.rows, saved.layers):
        assert row[1] == num(r.slope_corrected) and row[3] == num(r.slope)
    # the corrected exponent is closer to the planted one than the raw fit (mean error over the layers)
    truth = paper_like()
    err = {k: np.mean([abs(getattr(r, k) + truth[r.layer]) for r in saved.layers]) for k in ("slope", "slope_corrected")}
    assert err["slope_corrected"] < 0.5 * err["slope"], err


def test_command_rebuilds_the_stored_parameters(close_and_far):
    close, _ = close_and_far
    cmd = build([close], figures=False)[0].claim("galaxy.power_law").command
    assert cmd.startswith("featuregeo galaxy ") and "--layers 1,4,7" in cmd
    assert "--no-entropy" in cmd and "--slope-bootstrap 20" in cmd and str(close / "galaxy") in cmd


def test_slope_figure_compares_models_at_relative_depth(close_and_far):
    from featuregeo.io.reference import paper_galaxy_depth, paper_galaxy_slopes
    from featuregeo.pl.base import pyplot
    from featuregeo.pl.galaxy import slopes_figure

    saved = GalaxyResult.load(close_and_far[0] / "galaxy")
    fig = slopes_figure(saved, paper_galaxy_slopes())
    try:
        ax = fig.axes[0]
        paper = next(line for line in ax.get_lines() if line.get_label().startswith("paper"))
        n_ref = paper_galaxy_depth()
        assert sorted(paper.get_xdata()) == sorted(k / n_ref for k in paper_galaxy_slopes())
        assert max(paper.get_xdata()) < 1 and "relative depth" in ax.get_xlabel()
        ours = ax.containers[0].lines[0].get_xdata()  # the errorbar line: our layers / our depth (8)
        assert list(ours) == [L / 8 for L in LAYERS]
    finally:
        pyplot().close(fig)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for arg, expect in ((tmp_path / "missing", "does not exist"), (tmp_path / "file.txt", "not a directory"),
                        (tmp_path / "empty", "no featuregeo results found")):
        assert main(["report", str(arg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expect in err, err
    with pytest.raises(InputError, match="RESULTS_DIR"):
        build([], figures=False)


def test_unreadable_result_is_reported(tmp_path):
    (tmp_path / "galaxy").mkdir()
    (tmp_path / "galaxy" / "galaxy.json").write_text("{not json")
    r, _, _ = build([tmp_path], figures=False)
    assert "galaxy" in r.unreadable and r.claim("galaxy.power_law").verdict == NO_RESULTS
    assert "could not be read" in r.claim("galaxy.power_law").sentence


# ---------------------------------------------------------------------------- lobes: planted lobes vs none
def lobes_dir(tmp_path, spatial: bool):
    """Two groups of features, each firing on one genre; decoder rows grouped (spatial) or isotropic."""
    from featuregeo.tl.lobes import LobesParams, LobesResult, analyze_firing

    p = LobesParams(affinities=("phi",), n_clusters=(2, 3), n_permutations=50, logreg_null_repeats=5,
                    logreg_split_repeats=2, heldout_fraction=0.25, genre_permutations=200)
    layers = []
    for layer in (2, 5, 8):
        rng = np.random.default_rng(layer)
        groups = np.repeat([0, 1], 30)
        genre_id = np.arange(400) % 2
        firing = rng.random((400, 60)) < np.where(groups[None] == genre_id[:, None], 0.5, 0.03)
        x = (np.eye(16)[groups] * 3 if spatial else 0) + rng.standard_normal((60, 16))
        layers.append(analyze_firing(firing, x, p, doc_ids=np.arange(400), layer=layer,
                                     genres=np.array(["code", "prose"])[genre_id]))
    LobesResult(params=p, layers=layers, source="planted").save(tmp_path / "lobes")
    return tmp_path


def test_lobes_verdicts_follow_planted_geometry(tmp_path):
    from featuregeo.tl.lobes import LobesResult

    yes, _, _ = build([lobes_dir(tmp_path / "a", spatial=True)], figures=False)
    no, _, _ = build([lobes_dir(tmp_path / "b", spatial=False)], figures=False)
    assert yes.claim("lobes.spatial").verdict == SUPPORTED
    assert no.claim("lobes.spatial").verdict == NOT_SUPPORTED
    # the firing (and so the genre specialisation) is the same in both
    assert yes.claim("lobes.genre").verdict == SUPPORTED == no.claim("lobes.genre").verdict
    saved = LobesResult.load(tmp_path / "a" / "lobes")
    assert yes.claim("lobes.spatial").value == float(np.median([L.record("phi", 2).ami for L in saved.layers]))
    assert yes.claim("galaxy.power_law").verdict == NO_RESULTS  # only lobes here


def test_cli_galaxy_table_shows_the_paper_at_the_same_relative_depth(close_and_far, capsys):
    from featuregeo.cli.galaxy import print_galaxy_table
    from featuregeo.io.reference import paper_galaxy_slopes

    print_galaxy_table(GalaxyResult.load(close_and_far[0] / "galaxy"), paper_galaxy_slopes())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["1"], ["4"], ["7"])]
    # after the interval "[lo, hi]": R2, null slope, the paper's slope, ...
    assert [float(line.split("]")[1].split()[2]) for line in lines] == [round(paper_slope_at(L / 8), 3) for L in LAYERS]
