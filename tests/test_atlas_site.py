"""The whole atlas: real sae-lens folders -> real harvest with Gemma 3 270M -> lobes -> galaxy -> crystals
and labels -> ``featuregeo atlas`` (tables, resume, refusals of mismatched or broken inputs) -> the site in
headless chromium (rendered points, search, click/panel, hostile labels, Canvas2D fallback).

One atlas is built per module (``site``) and shared by every test."""

from __future__ import annotations

import codecs
import csv
import json
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from featuregeo.atlas import AtlasResult
from test_atlas import CRYSTAL_HEADER, XSS_CLOSE, XSS_IMG, XSS_SCRIPT, planted_directions, write_neuronpedia

CHROMIUM = "/usr/bin/chromium"


LAYERS = (2, 5)
N_FEATURES = 96


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, default_model):
    """Real sae-lens folders (planted decoder geometry), a real harvest on real text, lobes, galaxy,
    crystals and labels -> everything ``featuregeo atlas`` reads."""
    from threadpoolctl import threadpool_limits

    root = tmp_path_factory.mktemp("atlas")
    with threadpool_limits(1):  # 96 x 640 problems: BLAS threads only contend
        _build_inputs(root, default_model)
    return root


def _build_inputs(root, default_model):
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from featuregeo.pipeline import galaxy as galaxy_pipeline
    from featuregeo.pipeline import lobes as lobes_pipeline
    from featuregeo.io.corpus import folder_corpus
    from featuregeo.tl.galaxy import GalaxyParams
    from featuregeo.io.harvest import HarvestParams, harvest

    saes = {}
    for layer in LAYERS:
        torch.manual_seed(layer)
        meta = SAEMetadata(model_name="tiny-model", hook_name=f"blocks.{layer}.hook_resid_post",
                           neuronpedia_id=f"tiny-model/{layer}-res-test")
        sae = TopKSAE(TopKSAEConfig(d_in=640, d_sae=N_FEATURES, k=8, metadata=meta))
        x, _ = planted_directions(4, N_FEATURES // 4, 640, 0.6, seed=layer)
        with torch.no_grad():
            sae.W_dec.copy_(torch.as_tensor(x))
            sae.W_enc.copy_(torch.as_tensor(x.T / np.linalg.norm(x, axis=1)[None, :] / 200.0))
        sae.save_model(str(root / "saes" / f"layer_{layer}"))
        saes[layer] = sae
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus_dir = root / "corpus"
    for i, name in enumerate(["bisect.py", "heapq.py", "json/decoder.py"]):
        (corpus_dir / "code").mkdir(parents=True, exist_ok=True)
        (corpus_dir / "code" / f"{i}.py").write_text((stdlib / name).read_text())
    prose = codecs.decode((stdlib / "this.py").read_text().split('"""')[1], "rot13")
    (corpus_dir / "prose").mkdir()
    for i in range(3):
        (corpus_dir / "prose" / f"{i}.txt").write_text((prose + "\n") * (3 + i))
    hv = harvest(default_model, folder_corpus(corpus_dir, genre="subfolder"), root / "harvest",
                 HarvestParams(block_len=32, threshold=0.5, batch_size=4, shard_blocks=8, max_blocks_per_doc=4),
                 saes=saes)
    firing = hv.firing(2)
    assert firing.shape[1] == N_FEATURES and 0 < firing.nnz < firing.shape[0] * N_FEATURES
    from featuregeo.tl.lobes import LobesParams

    lobes_pipeline.run(str(root / "saes"), str(root / "harvest"), root / "lobes",
                       LobesParams(affinities=("phi",), n_clusters=(2, 3), n_permutations=10, logreg_null_repeats=2),
                       layers=list(LAYERS))
    galaxy_pipeline.run(str(root / "saes"), root / "galaxy", GalaxyParams(entropy=False, fit_ranks=(2, 40)),
                        layers=list(LAYERS))
    atoms = root / "atoms"
    (atoms / "layer_5").mkdir(parents=True)
    (atoms / "crystals.csv").write_text(CRYSTAL_HEADER + "1,2,0,1,2,3,0.93,1.01,parallelogram,0.9\n"
                                        "2,2,0,4,5,6,0.81,1.7,trapezoid,0.6\n")
    (atoms / "layer_5" / "crystals.csv").write_text(CRYSTAL_HEADER + "1,5,3,4,5,6,0.88,1.0,parallelogram,0.7\n")
    labels = root / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["feature", "label", "layer"])
        w.writerows([[0, XSS_SCRIPT, 2], [1, XSS_IMG, 2], [2, XSS_CLOSE, 2], [10, "cats & dogs", ""]])
    write_neuronpedia(root / "batch-0.jsonl.gz", [
        {"modelId": "tiny-model", "layer": "5-res-test", "index": "3", "description": "planted np label"},
        {"modelId": "tiny-model", "layer": "2-res-test", "index": "3", "description": "np label at layer 2"},
        {"modelId": "other-model", "layer": "5-res-test", "index": "4", "description": "wrong model"}])


def run_cli(root, out, *extra):
    from featuregeo.cli import main

    return main(["atlas", str(root / "saes"), "--out", str(out), "--lobes", str(root / "lobes"), "--atoms",
                 str(root / "atoms"), "--galaxy", str(root / "galaxy"), "--harvest", str(root / "harvest"),
                 "--labels", str(root / "labels.csv"), str(root / "batch-0.jsonl.gz"), "--layout", "pca", *extra])


@pytest.fixture(scope="module")
def site(pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "atlas"
    assert run_cli(pipeline, out) == 0
    return out


def test_tables_hold_the_inputs(pipeline, site, capsys):
    import pyarrow.parquet as pq

    from featuregeo.io.harvest import Harvest
    from featuregeo.io import open_suite
    from featuregeo.tl.lobes import LobesResult

    res = AtlasResult.load(site)
    assert [la.layer for la in res.layers] == list(LAYERS) and res.params.layout == "pca"
    assert res.layer(2).labels[0] == XSS_SCRIPT and res.layer(2).n_blocks == Harvest(pipeline / "harvest").n_blocks
    t = pq.read_table(site / "features.parquet").to_pandas()
    assert list(t.columns[:6]) == ["layer", "id", "x", "y", "lobe_2", "lobe_3"]
    assert {"norm", "firing_frequency", "n_fired", "label", "cofiring"} <= set(t.columns)
    h = Harvest(pipeline / "harvest")
    suite = open_suite(str(pipeline / "saes"))
    for layer in LAYERS:
        rows = t[t.layer == layer].sort_values("id")
        cloud = suite.load(layer)
        np.testing.assert_array_equal(rows.id, cloud.feature_ids)
        np.testing.assert_allclose(rows.norm, np.linalg.norm(cloud.vectors, axis=1), rtol=1e-5)
        np.testing.assert_allclose(rows.firing_frequency, h.feature_counts(layer)[rows.id] / h.n_blocks, rtol=1e-6)
        lob = LobesResult.load(pipeline / "lobes").layer(layer)
        fids = lob.feature_ids
        got = rows.set_index("id").loc[fids, "lobe_3"].to_numpy()
        np.testing.assert_array_equal(got, lob.labels("phi", 3))
    lab = t[(t.layer == 2)].set_index("id").label
    assert lab[0] == XSS_SCRIPT and lab[1] == XSS_IMG and lab[10] == "cats & dogs" and lab[3] == "np label at layer 2"
    assert t[(t.layer == 5)].set_index("id").label[3] == "planted np label"
    assert t[(t.layer == 5)].set_index("id").label.isna().sum() == N_FEATURES - 2  # 'wrong model' not matched
    with (site / "crystals.csv").open() as fh:
        assert [r["kind"] for r in csv.DictReader(fh)] == ["parallelogram", "trapezoid", "parallelogram"]
    assert "phi" in (site / "lobes.csv").read_text() and "slope" in (site / "galaxy.csv").read_text()
    assert (site / "figures" / "galaxy_layer_2.png").stat().st_size > 1000
    # the galaxy table carries the bias-corrected exponent next to the raw fit, as galaxy.json has it
    from featuregeo.tl.galaxy import GalaxyResult

    gal = {r.layer: r for r in GalaxyResult.load(pipeline / "galaxy").layers}
    with (site / "galaxy.csv").open() as fh:
        grows = {int(r["layer"]): r for r in csv.DictReader(fh)}
    assert set(grows) == set(gal) and all(gal[L].slope_corrected is not None for L in gal)
    for L, r in grows.items():
        assert float(r["slope_corrected"]) == pytest.approx(gal[L].slope_corrected, rel=1e-5)  # csv: 6 digits
        assert float(r["slope_ci_lo"]) <= float(r["slope_corrected"]) <= float(r["slope_ci_hi"])
    html_text = (site / "index.html").read_text()
    assert "<script>alert" not in html_text and "\n" not in html_text.split("window.ATLAS_META = ")[1].split(";</script>")[0]
    assert "<" not in (site / "data" / "layer_2.js").read_text()  # labels embedded inert
    # resume: a second run reuses every layer and writes identical tables
    before = (site / "features.parquet").read_bytes()
    capsys.readouterr()
    assert run_cli(pipeline, site) == 0
    assert capsys.readouterr().err.count("reused") == len(LAYERS)
    assert (site / "features.parquet").read_bytes() == before
    # an interrupted export (layer 5 never committed) redoes only that layer, with the same result
    import shutil

    shutil.rmtree(site / ".checkpoint" / "layer_5")
    assert run_cli(pipeline, site) == 0
    err = capsys.readouterr().err
    assert err.count("reused") == 1 and "atlas layer 5: 96 features" in err
    assert (site / "features.parquet").read_bytes() == before
    assert AtlasResult.load(site) == res


def test_export_is_deterministic(pipeline, site, tmp_path):
    assert run_cli(pipeline, tmp_path / "again") == 0
    assert (tmp_path / "again" / "features.parquet").read_bytes() == (site / "features.parquet").read_bytes()
    for layer in LAYERS:
        name = f"data/layer_{layer}.js"
        assert (tmp_path / "again" / name).read_bytes() == (site / name).read_bytes()


def fails(capsys, argv, match):
    """``featuregeo atlas ...`` exits 2 with one line on stderr matching ``match``."""
    from featuregeo.cli import main

    capsys.readouterr()
    assert main(["atlas", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(match, err), err


@pytest.fixture(scope="module")
def other_saes(pipeline, tmp_path_factory):
    """SAEs that are not the harvested ones: 300 features; the same shape with other weights; another d_model."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    root = tmp_path_factory.mktemp("other")
    for name, shape in (("wide", (300, 64)), ("narrow", (N_FEATURES, 32))):
        (root / name).mkdir()
        np.save(root / name / "layer_2.npy", np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    torch.manual_seed(99)
    TopKSAE(TopKSAEConfig(d_in=640, d_sae=N_FEATURES, k=8)).save_model(str(root / "same_shape" / "layer_2"))
    return root


def test_mismatched_inputs_exit_2(pipeline, other_saes, tmp_path, capsys):
    out = tmp_path / "o"
    wide, same, narrow = (other_saes / n for n in ("wide", "same_shape", "narrow"))
    # the bug: firing and co-firing of a 96-feature harvest were attached to a 300-feature SAE
    fails(capsys, [wide, "--out", out, "--layout", "pca", "--harvest", pipeline / "harvest"],
          r"--harvest .*harvest: layer 2 was computed on an SAE with 96 features but the SAE has 300")
    fails(capsys, [narrow, "--out", out, "--layout", "pca", "--harvest", pipeline / "harvest"],
          r"--harvest .*: layer 2 was computed on an SAE with d_model 640 but the SAE has d_model 32")
    fails(capsys, [wide, "--out", out, "--layout", "pca", "--lobes", pipeline / "lobes"],
          r"--lobes .*lobes.json: layer 2 was computed on an SAE with 96 features but the SAE has 300")
    # ... and another source's galaxy slope was shown
    fails(capsys, [same, "--out", out, "--layout", "pca", "--galaxy", pipeline / "galaxy"],
          r"--galaxy .*galaxy.json: layer 2 was computed on an SAE with SAE file .* but the SAE is .*same_shape")
    fails(capsys, [wide, "--out", out, "--layout", "pca", "--galaxy", pipeline / "galaxy"],
          r"--galaxy .*: layer 2 was computed on an SAE with 96 features but the SAE has 300")
    atoms = tmp_path / "atoms"
    atoms.mkdir()
    (atoms / "crystals.csv").write_text(CRYSTAL_HEADER + "1,2,0,1,2,500,0.9,1.0,parallelogram,0.8\n")
    fails(capsys, [pipeline / "saes", "--out", out, "--layout", "pca", "--atoms", atoms],
          r"--atoms .*: layer 2 has a crystal with feature id 500 but the SAE .* has 96 features")
    assert not (out / "atlas.json").exists()


def test_broken_or_missing_inputs_exit_2(pipeline, tmp_path, capsys):
    saes, out = pipeline / "saes", tmp_path / "o"
    broken = tmp_path / "broken"
    (broken / "layer_2").mkdir(parents=True)
    (broken / "harvest.json").write_text("{not json")
    fails(capsys, [saes, "--out", out, "--harvest", broken], r"--harvest: .*broken/harvest.json: (not valid JSON|.*damaged)")
    (broken / "harvest.json").write_text("{}")
    fails(capsys, [saes, "--out", out, "--harvest", broken], r"--harvest: .*broken/harvest.json: (not valid JSON|.*damaged)")
    (broken / "lobes.json").write_text("[1, 2")
    fails(capsys, [saes, "--out", out, "--lobes", broken], r"--lobes: .*broken/lobes.json: not a readable lobes result")
    (broken / "galaxy.json").write_text("\x00garbage")
    fails(capsys, [saes, "--out", out, "--galaxy", broken], r"--galaxy: .*broken/galaxy.json: not a readable galaxy result")
    (broken / "galaxy.json").write_text('[{"layer": "two"}]')
    fails(capsys, [saes, "--out", out, "--galaxy", broken], r"--galaxy: .*galaxy.json: (expected a galaxy result|a damaged)")
    fails(capsys, [saes, "--out", out, "--lobes", tmp_path], r"--lobes: .*lobes.json: no lobes result here")
    fails(capsys, [saes, "--out", out, "--labels", tmp_path / "x.csv"], r"--labels: .*x.csv does not exist")
    fails(capsys, [saes, "--out", out, "--harvest", tmp_path / "none"], r"--harvest: .*none is not a directory")
    fails(capsys, [saes, "--out", out, "--layout", "pca", "--lobes", pipeline / "lobes", "--affinity", "dice"],
          r"--affinity: .* has no lobes for 'dice' at layer 2; expected one of \['geometry', 'phi'\]")
    fails(capsys, [saes, "--out", out, "--top-cofiring", "0"], r"top_cofiring: expected an integer >= 1.*Got 0")
    (tmp_path / "file").write_text("x")
    fails(capsys, [saes, "--out", tmp_path / "file"], r"--out .*file: expected a directory; .*file is a file")


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium for the browser test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
    yield b
    b.close()


def open_page(browser, site, query=""):
    # bypass_csp: the page's Content-Security-Policy must not be what keeps hostile labels inert (and
    # Playwright's polling evaluates strings, which that policy forbids)
    page = browser.new_page(viewport={"width": 1100, "height": 760}, bypass_csp=True)
    events = {"dialogs": [], "errors": [], "requests": []}
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.on("request", lambda r: events["requests"].append(r.url))
    page.goto((site / "index.html").as_uri() + query)
    page.wait_for_function("window.atlas && window.atlas.ready", timeout=30_000)
    return page, events


def test_site_in_headless_chromium(site, browser, tmp_path):
    import pyarrow.parquet as pq

    t = pq.read_table(site / "features.parquet").to_pandas()
    l2 = t[t.layer == 2].reset_index(drop=True)
    page, ev = open_page(browser, site)
    assert page.evaluate("atlas.renderer") == "webgl"
    assert page.evaluate("atlas.layer") == 2 and page.evaluate("atlas.renderedCount") == len(l2)
    assert page.get_attribute("#gl", "data-rendered-count") == str(len(l2))

    # search by label: the hostile labels are listed and shown literally, nothing runs
    page.fill("#search", "alert")
    item = page.locator("#results button").first
    assert item.text_content() == f"0 — {XSS_SCRIPT}"
    item.click()
    assert page.locator("#panel h2").text_content() == "Feature 0"
    assert page.locator("#panel .label").text_content() == XSS_SCRIPT
    page.fill("#search", "onerror")
    page.locator("#results button").first.click()
    assert page.locator("#panel .label").text_content() == XSS_IMG
    page.fill("#search", "window.__xss2")
    page.locator("#results button").first.click()
    assert page.locator("#panel .label").text_content() == XSS_CLOSE
    assert page.locator("#panel img, #results img, #tip img").count() == 0
    assert page.evaluate("[window.__xss, window.__xss2]") == [None, None]
    assert ev["dialogs"] == [] and ev["errors"] == []

    # the firing-frequency legend speaks in frequencies (shares of blocks), not in log10 values
    page.select_option("#colour", "freq")
    legend = page.locator("#legend").text_content()
    freq = l2.firing_frequency.to_numpy()
    m = re.search(r"firing frequency \(share of blocks, log colour scale\): (\S+) … (\S+?)(;|$)", legend)
    assert m, legend
    hi = float(m.group(2).rstrip("%")) / (100 if m.group(2).endswith("%") else 1)
    assert abs(hi - freq.max()) <= 0.005 * freq.max() and m.group(1) == ("0" if freq.min() == 0 else m.group(1))
    assert ("never fired" in legend) == bool((freq == 0).any())
    page.select_option("#colour", page.evaluate("document.querySelector('#colour option').value"))

    # find an isolated feature by id, then click it on the map
    xy = l2[["x", "y"]].to_numpy()
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    target = int(l2.id[int(np.argmax(d.min(1)))])
    page.fill("#search", str(target))
    page.press("#search", "Enter")
    assert page.evaluate("atlas.selectedId") == target
    page.keyboard.press("Escape")  # clear the selection; the view stays centred on the target
    assert page.evaluate("atlas.selectedId") is None and "Click a point" in page.locator("#panel").text_content()
    pos = page.evaluate(f"atlas.screenPosition({target})")
    page.mouse.click(pos["x"], pos["y"])
    assert page.evaluate("atlas.selectedId") == target
    panel = page.locator("#panel").text_content()
    row = l2[l2.id == target].iloc[0]
    norm_text = page.evaluate(f"Number({float(row.norm)!r}).toPrecision(4)")
    lobe_text = "–" if row.lobe_3 != row.lobe_3 else str(int(row.lobe_3))
    assert f"Feature {target}" in panel and f"norm{norm_text}" in panel and f"lobe (k=3){lobe_text}" in panel
    assert "firing frequency" in panel and "top co-firing" in panel
    href = page.locator("#panel a").get_attribute("href")
    assert href == f"https://www.neuronpedia.org/tiny-model/2-res-test/{target}"

    # crystals: feature 0 is in two; drawing them on demand; galaxy figure shown
    page.evaluate("atlas.selectId(0, true)")
    assert "parallelogram #1" in page.locator("#panel").text_content()
    page.check("#crystals")
    assert page.locator("#galaxy img").first.evaluate("im => im.complete && im.naturalWidth > 0")
    gtext = page.locator("#galaxy").text_content()  # the exponent to quote is the bias-corrected one
    assert "bias-corrected" in gtext and "raw fit" in gtext
    shot = tmp_path / "atlas.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # layer selector and Neuronpedia-export labels of layer 5
    page.select_option("#layer", "5")
    page.wait_for_function("atlas.layer === 5")
    assert page.evaluate("atlas.renderedCount") == int((t.layer == 5).sum())
    page.fill("#search", "planted np")
    assert page.locator("#results button").first.text_content() == "3 — planted np label"
    assert all(u.startswith("file://") for u in ev["requests"]), ev["requests"]
    assert ev["dialogs"] == [] and ev["errors"] == []
    page.close()


def test_canvas2d_fallback_when_webgl_is_missing(site, playwright):
    """A browser without WebGL draws the same points with Canvas2D."""
    n = int(json.loads((site / "atlas.json").read_text())["layers"][0]["n_features"])
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=["--no-sandbox", "--disable-webgl", "--disable-3d-apis"])
    try:
        page, ev = open_page(b, site)
        assert page.evaluate("[atlas.renderer, atlas.renderedCount, atlas.errors]") == ["canvas2d", n, []]
        page.fill("#search", "alert")
        page.press("#search", "Enter")
        assert page.locator("#panel .label").text_content() == XSS_SCRIPT and ev["dialogs"] == []
    finally:
        b.close()


def test_layerwise_analysis_figures_join_the_panel(pipeline, tmp_path, capsys):
    """`--lens DIR` (any layer-wise analysis output) puts its figures in the site; bad dirs are one-line errors."""
    from featuregeo.cli import main
    from featuregeo.pl.base import pyplot, save_figure

    lay = tmp_path / "layers_out"
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, lay / "layers_cka.png")
    out = tmp_path / "a"
    assert main(["atlas", str(pipeline / "saes"), "--out", str(out), "--layout", "pca", "--lens", str(lay)]) == 0
    assert (out / "figures" / "layers_cka.png").is_file()
    assert "figures/layers_cka.png" in AtlasResult.load(out).figures
    capsys.readouterr()
    fails(capsys, [pipeline / "saes", "--out", tmp_path / "b", "--updates", tmp_path / "nope"],
          r"--updates: .*nope is not a directory")
    (tmp_path / "empty").mkdir()
    fails(capsys, [pipeline / "saes", "--out", tmp_path / "b", "--interaction", tmp_path / "empty"],
          r"--interaction: no figures \(\*\.png\) in .*empty")
