"""Feature atlas: layout and co-firing maths, label readers, safe embedding, and the whole site
(real sae-lens folders -> real harvest with Gemma 3 270M -> lobes -> galaxy -> atlas) in headless chromium."""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from featuregeo.atlas.build import cofiring, layout_2d, lobe_columns, read_crystals, script_json
from featuregeo.core.errors import InputError
from featuregeo.io.labels import LabelSources, neuronpedia_url, read_label_table, read_neuronpedia

CHROMIUM = "/usr/bin/chromium"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror="window.__xss=1">'
XSS_CLOSE = "</script><script>window.__xss2=1</script>\u2028end"


# ----------------------------------------------------------------------------------------------
# maths
# ----------------------------------------------------------------------------------------------
def planted_directions(n_clusters, per, d, noise, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    x = np.repeat(centres, per, axis=0) + noise * rng.standard_normal((n_clusters * per, d))
    x *= rng.uniform(0.5, 3.0, (x.shape[0], 1))  # norms must not matter: the layout is cosine
    return x.astype(np.float32), np.repeat(np.arange(n_clusters), per)


def knn_agreement(y, labels, k=5):
    d = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


@pytest.mark.parametrize("method,n_clusters", [("pca", 3), ("tsne", 5)])
def test_layout_recovers_planted_clusters_and_is_seeded(method, n_clusters):
    from threadpoolctl import threadpool_limits

    x, lab = planted_directions(n_clusters, 40, 64, 0.35, seed=1)
    with threadpool_limits(1):  # tiny problem: OpenMP threads only contend on a shared 2-core machine
        y = layout_2d(x, method, seed=3)
    assert y.shape == (x.shape[0], 2) and y.dtype == np.float32
    assert knn_agreement(y, lab) > 0.95
    # null: shuffled labels agree at chance
    assert knn_agreement(y, np.random.default_rng(0).permutation(lab)) < 1.5 / n_clusters
    with threadpool_limits(1):
        np.testing.assert_array_equal(y, layout_2d(x, method, seed=3))


@pytest.mark.slow
def test_umap_layout_recovers_planted_clusters_and_is_seeded():
    x, lab = planted_directions(4, 50, 64, 0.35, seed=2)
    y = layout_2d(x, "umap", seed=0)
    assert knn_agreement(y, lab) > 0.95
    np.testing.assert_array_equal(y, layout_2d(x, "umap", seed=0))


def test_layout_bad_inputs():
    with pytest.raises(InputError, match="--layout: expected one of"):
        layout_2d(np.ones((5, 3)), "mds")
    with pytest.raises(InputError, match="at least 3 features"):
        layout_2d(np.ones((2, 3)), "pca")
    with pytest.raises(InputError, match="finite"):
        layout_2d(np.array([[1.0, np.nan]] * 4), "pca")


def test_cofiring_equals_brute_force_and_finds_planted_partners():
    rng = np.random.default_rng(0)
    n_blocks, n = 400, 60
    b = rng.random((n_blocks, n)) < 0.05
    b[:, 1] = b[:, 0] ^ (rng.random(n_blocks) < 0.02)  # 1 is 0's twin
    b[:, 7] = b[:, 3] & (rng.random(n_blocks) < 0.7)  # 7 fires only with 3
    b[:, 59] = False  # never fires: no partners
    counts, partners, n11 = cofiring(sparse.csr_matrix(b.astype(np.uint8)), top=5, max_chunk_entries=7 * n)
    bi = b.astype(np.int64)
    c = bi.T @ bi
    np.testing.assert_array_equal(counts, bi.sum(0))
    ci = counts.astype(float)
    jac = c / np.maximum(ci[:, None] + ci[None, :] - c, 1)
    np.fill_diagonal(jac, -1)
    for i in range(n - 1):
        got = partners[i][partners[i] >= 0]
        np.testing.assert_array_equal(n11[i][: got.size], c[i, got])
        assert np.all(np.diff(jac[i, got]) <= 1e-12)  # ranked by Jaccard
        others = np.setdiff1d(np.arange(n), np.r_[got, i])
        if got.size == 5:
            assert jac[i, others].max() <= jac[i, got].min() + 1e-12
        assert i not in got
    assert partners[0, 0] == 1 and partners[1, 0] == 0 and partners[7, 0] == 3
    assert np.all(partners[59] == -1) and np.all(n11[59] == 0)
    # dense input gives the same answer; explicitly stored zeros are not firing
    c2, p2, _ = cofiring(b, top=5)
    np.testing.assert_array_equal(p2, partners)
    m = sparse.csr_matrix(b.astype(np.uint8))
    m.data[: m.nnz // 2] = 0
    c3, p3, _ = cofiring(m, top=5)
    np.testing.assert_array_equal(c3, m.toarray().astype(bool).sum(0))
    assert m.nnz == sparse.csr_matrix(b.astype(np.uint8)).nnz  # the caller's matrix is left alone


def test_lobe_columns_align_by_feature_id():
    class Lobes:  # what LobeResult.read gives: arrays keyed as in lobes_labels.npz
        arrays = {"feature_ids": np.array([9, 2, 5]), "n_clusters": np.array([2, 3]),
                  "labels_phi": np.array([[1, 0, 1], [2, 0, 1]], dtype=np.int32)}

    cols = lobe_columns(Lobes(), np.array([2, 3, 5, 9]), "phi")
    np.testing.assert_array_equal(cols[2], [0, -1, 1, 1])
    np.testing.assert_array_equal(cols[3], [0, -1, 1, 2])
    with pytest.raises(InputError, match="no labels for 'jaccard'; expected one of \\['phi'\\]"):
        lobe_columns(Lobes(), np.array([2]), "jaccard")


def test_script_json_is_inert_inside_script():
    s = script_json({"label": XSS_CLOSE + XSS_IMG + "&amp;"})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s
    assert json.loads(s)["label"] == XSS_CLOSE + XSS_IMG + "&amp;"


# ----------------------------------------------------------------------------------------------
# labels and crystals
# ----------------------------------------------------------------------------------------------
def write_neuronpedia(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def test_label_readers(tmp_path):
    (tmp_path / "l.csv").write_text("feature,label,layer\n3,three,\n4,four at 2,2\n4,four at 5,5\n")
    t = read_label_table(tmp_path / "l.csv")
    assert t == {None: {3: "three"}, 2: {4: "four at 2"}, 5: {4: "four at 5"}}
    (tmp_path / "l.json").write_text(json.dumps({"3": "json three", "8": "eight"}))
    np_dir = tmp_path / "np"
    np_dir.mkdir()
    write_neuronpedia(np_dir / "batch-0.jsonl.gz", [
        {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": "8", "description": "np eight",
         "explanationModelName": "gpt-4o-mini", "typeName": "oai_token-act-pair"},
        {"modelId": "gemma-2-2b", "layer": "13-gemmascope-res-16k", "index": "8", "description": "other layer"},
        {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": 9, "description": "np nine"},
    ])
    write_neuronpedia(np_dir / "batch-1.jsonl.gz", [
        {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": "9", "description": "second for 9"}])
    assert read_neuronpedia(np_dir, ["gemma-2-2b/12-gemmascope-res-16k"]) == {
        "gemma-2-2b/12-gemmascope-res-16k": {8: "np eight", 9: "np nine"}}
    src = LabelSources([tmp_path / "l.csv", tmp_path / "l.json", np_dir / "batch-0.jsonl.gz"])
    assert src.for_layer(2, "gemma-2-2b/12-gemmascope-res-16k") == {3: "three", 4: "four at 2", 8: "eight",
                                                                    9: "np nine"}
    assert src.for_layer(7, None) == {3: "three", 8: "eight"}  # no neuronpedia id: export not matched
    assert (neuronpedia_url("gemma-2-2b/12-gemmascope-res-16k", 8)
            == "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/8")
    assert neuronpedia_url(None, 8) is None


def test_each_export_file_is_read_about_once_per_suite(tmp_path, monkeypatch):
    from featuregeo.io import labels

    for layer in (3, 4):
        write_neuronpedia(tmp_path / f"batch-{layer}.jsonl.gz", [
            {"modelId": "m", "layer": f"{layer}-res", "index": i, "description": f"L{layer} f{i}"} for i in range(3)])
    reads = []
    real = labels._read_export
    monkeypatch.setattr(labels, "_read_export", lambda f, wanted: (reads.append(f.name), real(f, wanted))[1])
    src = LabelSources([tmp_path])
    assert src.for_layer(3, "m/3-res") == {0: "L3 f0", 1: "L3 f1", 2: "L3 f2"}
    assert src.for_layer(4, "m/4-res")[2] == "L4 f2"
    assert src.for_layer(3, "m/3-res")[1] == "L3 f1"
    assert sorted(reads) == ["batch-3.jsonl.gz", "batch-4.jsonl.gz", "batch-4.jsonl.gz"]


def test_label_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="--labels: .*nope.csv does not exist"):
        LabelSources([tmp_path / "nope.csv"])
    (tmp_path / "a.csv").write_text("name,label\nx,y\n")
    with pytest.raises(InputError, match="no feature id column; expected one of"):
        read_label_table(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("id,label\nseven,y\n")
    with pytest.raises(InputError, match="b.csv row 1: expected an integer feature id. Got 'seven'"):
        read_label_table(tmp_path / "b.csv")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        read_label_table(tmp_path / "c.json")
    (tmp_path / "d.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="d.jsonl.gz: cannot read"):
        read_neuronpedia(tmp_path / "d.jsonl.gz")
    write_neuronpedia(tmp_path / "e.jsonl.gz", [{"modelId": "m"}])
    with pytest.raises(InputError, match="e.jsonl.gz line 1: expected a JSON object with modelId"):
        read_neuronpedia(tmp_path / "e.jsonl.gz")


CRYSTAL_HEADER = "rank,layer,a,b,c,d,cosine,length_ratio,kind,score\n"


def test_read_crystals_both_layouts_and_bad_header(tmp_path):
    (tmp_path / "crystals.csv").write_text(CRYSTAL_HEADER + "1,2,0,1,2,3,0.9,1.0,parallelogram,0.8\n")
    (tmp_path / "layer_5").mkdir()
    (tmp_path / "layer_5" / "crystals.csv").write_text(CRYSTAL_HEADER + "1,5,4,5,6,7,0.7,2.0,trapezoid,0.5\n")
    rows = read_crystals(tmp_path)
    assert [(r["layer"], r["a"], r["kind"]) for r in rows] == [(2, 0, "parallelogram"), (5, 4, "trapezoid")]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "crystals.csv").write_text("rank,a,b\n1,2,3\n")
    with pytest.raises(InputError, match="missing columns \\['layer', 'c', 'd'"):
        read_crystals(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="--atoms: no crystals.csv"):
        read_crystals(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------
# the whole pipeline and the site in a real browser
# ----------------------------------------------------------------------------------------------
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
    from featuregeo.io.harvest import harvest

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
    hv = harvest(default_model, folder_corpus(corpus_dir, genre="subfolder"), root / "harvest", saes=saes,
                 block_len=32, threshold=0.5, batch_size=4, shard_blocks=8, max_blocks_per_doc=4, progress=False)
    firing = hv.firing(2)
    assert firing.shape[1] == N_FEATURES and 0 < firing.nnz < firing.shape[0] * N_FEATURES
    lobes_pipeline.run(str(root / "saes"), str(root / "harvest"), root / "lobes", list(LAYERS), affinities=["phi"],
                      n_clusters=[2, 3], n_permutations=10, logreg_null_repeats=2)
    galaxy_pipeline.run(str(root / "saes"), list(LAYERS), root / "galaxy", GalaxyParams(entropy=False, fit_ranks=(2, 40)))
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
    from featuregeo.tl.lobes import LobeResult

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
        lob = LobeResult.read(pipeline / "lobes" / f"layer_{layer}")
        fids = lob.arrays["feature_ids"]
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
    (site / ".atlas_layers" / "layer_5.json").unlink()
    assert run_cli(pipeline, site) == 0
    err = capsys.readouterr().err
    assert err.count("reused") == 1 and "atlas layer 5: 96 features" in err
    assert (site / "features.parquet").read_bytes() == before


def test_export_is_deterministic(pipeline, site, tmp_path):
    assert run_cli(pipeline, tmp_path / "again") == 0
    assert (tmp_path / "again" / "features.parquet").read_bytes() == (site / "features.parquet").read_bytes()
    for layer in LAYERS:
        name = f"data/layer_{layer}.js"
        assert (tmp_path / "again" / name).read_bytes() == (site / name).read_bytes()


def test_bad_inputs_exit_2(pipeline, tmp_path, capsys):
    from featuregeo.atlas.build import run_atlas

    from featuregeo.cli import main

    assert main(["atlas", str(pipeline / "saes"), "--out", str(tmp_path / "o"), "--lobes", str(tmp_path)]) == 2
    assert "--lobes: no" in capsys.readouterr().err
    assert main(["atlas", str(pipeline / "saes"), "--out", str(tmp_path / "o"), "--labels", str(tmp_path / "x.csv")]) == 2
    with pytest.raises(InputError, match="--layout: expected one of"):
        run_atlas(str(pipeline / "saes"), tmp_path / "o", layout="spiral")
    with pytest.raises(InputError, match="--harvest: .* is not a directory"):
        run_atlas(str(pipeline / "saes"), tmp_path / "o", harvest=tmp_path / "none")
    with pytest.raises(InputError, match="--affinity: the lobes have no labels for 'dice'"):
        run_atlas(str(pipeline / "saes"), tmp_path / "o", lobes=pipeline / "lobes", affinity="dice", layout="pca")


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
