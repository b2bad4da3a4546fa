"""Feature dashboards on the real Gemma 3 270M and real text, with a planted feature whose answer is known.

A real sae-lens StandardSAE at layer 2 gets four features:

* feature 0 reads the direction that separates the token " zebra" from every other token of the
  corpus (its bias sits between the two), so it fires on " zebra" and nowhere else; its decoder is
  the unembedding row of " zebra";
* features 1 and 2 have decoders +/- the unembedding row of " queen";
* feature 3 is random (fires on ~5% of tokens).

The " zebra" document also carries a hostile string, so the atlas must show it literally.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from featuregeo.io.corpus import Document
from featuregeo.io.harvest import HarvestParams, export_json, feature_json, harvest

LAYER = 2
HOSTILE = "<img src=x onerror=alert(1)>"
P = HarvestParams(block_len=32, batch_size=4, shard_blocks=4, max_blocks_per_doc=4, dashboard_k=6)


def zebra_doc() -> Document:
    text = " ".join(f"Line {i}: {HOSTILE} zebra number {i} grazed by the river." for i in range(30))
    return Document(text, "planted", "prose", "zebra")


@pytest.fixture(scope="module")
def planted(default_model, harvest_docs, tmp_path_factory):
    """The corpus, the planted SAE (saved as a sae-lens folder) and the truth computed directly."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    from featuregeo.io.corpus import blocks
    from featuregeo.io.lens_hooks import find_readout
    from featuregeo.io.models import residual_stream

    lm = default_model
    docs = [zebra_doc(), *harvest_docs]
    tok = lm.tokenizer
    zebra, queen = (tok(w, add_special_tokens=False)["input_ids"] for w in (" zebra", " queen"))
    assert len(zebra) == len(queen) == 1
    zebra, queen = zebra[0], queen[0]
    rows = list(blocks(docs, tok, P.block_len, add_bos=True, max_blocks_per_doc=P.max_blocks_per_doc))
    ids = np.array([np.asarray(b.input_ids)[1:] for b in rows])
    h = residual_stream(lm, [b.input_ids for b in rows], [LAYER], add_bos=False, seq_len=None, drop_bos=True)[LAYER]
    h = h.reshape(len(rows), P.block_len, 640).numpy().astype(np.float64)
    is_z = ids == zebra
    assert 4 <= is_z.sum() and is_z[len([r for r in rows if r.doc_id == "zebra"]):].sum() == 0
    u = h[is_z].mean(0) - h[~is_z].mean(0)
    u /= np.linalg.norm(u)
    s = h @ u
    assert s[is_z].min() > s[~is_z].max()  # the token is linearly separable at layer 2: the plant is exact
    bias = (s[is_z].min() + s[~is_z].max()) / 2
    rng = np.random.default_rng(0)
    r = rng.standard_normal(640)
    r /= np.linalg.norm(r)
    readout = find_readout(lm)
    W_U = readout.weight.float().numpy()
    sae = StandardSAE(StandardSAEConfig(d_in=640, d_sae=4))
    with torch.no_grad():
        enc = np.zeros((640, 4))
        enc[:, 0], enc[:, 3] = u, r
        benc = np.array([-bias, -1e9, -1e9, -np.quantile(h.reshape(-1, 640) @ r, 0.95)])
        dec = np.stack([W_U[zebra], W_U[queen], -W_U[queen], rng.standard_normal(640)])
        sae.W_enc.copy_(torch.as_tensor(enc, dtype=torch.float32))
        sae.b_enc.copy_(torch.as_tensor(benc, dtype=torch.float32))
        sae.W_dec.copy_(torch.as_tensor(dec, dtype=torch.float32))
        sae.b_dec.zero_()
    root = tmp_path_factory.mktemp("dash")
    sae.save_model(str(root / "saes" / f"layer_{LAYER}"))
    act = np.maximum(s - bias, 0)  # the planted feature's activation on every token, [blocks, T]
    return {"docs": docs, "sae": sae, "root": root, "zebra": zebra, "queen": queen, "act0": act, "ids": ids,
            "readout": readout}


@pytest.fixture(scope="module")
def hv(default_model, planted):
    return harvest(default_model, planted["docs"], planted["root"] / "harvest", P, saes={LAYER: planted["sae"]})


def test_planted_feature_top_contexts_histogram_and_label(hv, planted):
    d = hv.dashboards(LAYER)
    z, act = planted["zebra"], planted["act0"]
    # truth: the blocks holding " zebra", by their strongest occurrence; the top token is always " zebra"
    bmax = act.max(1)
    want = [int(b) for b in np.lexsort((np.arange(bmax.size), -bmax)) if bmax[b] > 0][:P.dashboard_k]
    got = [int(b) for b in d.block[0] if b >= 0]
    assert got == want and len(got) >= 2
    np.testing.assert_allclose(d.value[0, :len(got)], bmax[want], rtol=2e-3)
    assert d.top_token_ids(0) == [z] * len(got)
    ctx = d.contexts(0)[0]
    assert ctx["tokens"][ctx["maxValueTokenIndex"]] == " zebra" and max(ctx["values"]) == pytest.approx(ctx["maxValue"], abs=1e-3)
    # per-token activations: zero except on " zebra" (quantised to 1/255 of the context's maximum)
    for c in range(len(got)):
        on = d.tokens[0, c] == z
        assert (d.acts[0, c][~on] == 0).all() and (d.acts[0, c][on] > 0).all()
    # density and histogram: exactly the " zebra" tokens; the histogram's mass sits where the values are
    assert d.n_tokens == act.size and d.hist[0].sum() == (act > 0).sum()
    assert d.density[0] == pytest.approx((planted["ids"] == z).mean())
    centre = np.sqrt(d.edges[:-1] * d.edges[1:])
    assert d.edges[np.argmax(d.hist[0])] <= np.median(act[act > 0]) * 1.0001 <= d.edges[np.argmax(d.hist[0]) + 1] \
        or d.hist[0][np.argmax(d.hist[0])] < (act > 0).sum()  # median in the fullest bin, unless spread evenly
    assert centre.size == d.hist.shape[1]
    # null: features that never fire have no contexts and no label
    assert d.value[1].max() == 0 and d.hist[1].sum() == 0 and d.contexts(1) == []
    # random feature 3 fires on roughly 5% of tokens
    assert 0.01 < d.density[3] < 0.15
    from featuregeo.io.harvest import auto_labels

    labels = auto_labels(d)
    assert labels[0].startswith('auto: fires on " zebra"; promotes " zebra"') and 1 not in labels and 2 not in labels


def test_logit_effects_of_unembedding_rows(hv, planted):
    import torch

    d = hv.dashboards(LAYER)
    q, z, ro = planted["queen"], planted["zebra"], planted["readout"]
    assert d.logit_ids[0, 0] == z and d.logit_ids[1, 0] == q and d.neg_ids[2, 0] == q
    W = ro.weight.float()
    with torch.no_grad():
        want = (ro.norm(W[q][None]) @ W.T)[0].numpy()
    np.testing.assert_allclose(d.logit_values[1], np.sort(want)[::-1][:P.dashboard_logits], rtol=1e-4)
    # RMSNorm is odd, so the opposite direction suppresses exactly what the first promotes
    np.testing.assert_array_equal(d.neg_ids[2], d.logit_ids[1])
    np.testing.assert_allclose(d.neg_values[2], -d.logit_values[1], rtol=1e-5)
    assert (np.diff(d.logit_values[3]) <= 0).all() and (np.diff(d.neg_values[3]) >= 0).all()
    assert d.strings[q] == " queen"


def test_one_shard_and_many_shards_give_identical_dashboards(default_model, hv, planted, tmp_path):
    lines = []
    one = harvest(default_model, planted["docs"], tmp_path / "one", P.replace(shard_blocks=16),
                  saes={LAYER: planted["sae"]}, progress=lines.append)
    assert one.n_shards == 1 < hv.n_shards
    # the logit effects depend only on model and SAE: the second harvest takes them from the cache, same bytes
    assert any("logit effects of layer 2 from the cache" in x for x in lines)
    name = f"dashboards/logits_{LAYER}.npz"
    assert (one.path / name).read_bytes() == (hv.path / name).read_bytes()
    a, b = one.dashboards(LAYER), hv.dashboards(LAYER)
    assert a == b and a.n_blocks == hv.n_blocks
    # an interrupted harvest resumes to the same dashboards
    part = tmp_path / "part"
    harvest(default_model, planted["docs"], part, P, saes={LAYER: planted["sae"]}, stop_after_shards=2)
    assert harvest(default_model, planted["docs"], part, P, saes={LAYER: planted["sae"]}).dashboards(LAYER) == b


def test_json_export_uses_neuronpedia_names(hv, planted, tmp_path):
    d = hv.dashboards(LAYER)
    paths = export_json(d, tmp_path / "json", labels={3: "user label"}, model="gemma-3-270m", source="test")
    assert sorted(p.name for p in paths) == ["0.json", "3.json"]  # only features that fired
    f0 = json.loads((tmp_path / "json" / f"layer_{LAYER}" / "0.json").read_text())
    assert f0["index"] == 0 and f0["labelIsAutomatic"] and f0["label"] is None
    assert f0["autoLabel"].startswith("auto: ") and f0["pos_str"][0] == " zebra"
    top = f0["activations"][0]
    assert {"tokens", "values", "maxValue", "maxValueTokenIndex"} <= set(top) and len(top["tokens"]) == len(top["values"])
    assert HOSTILE in "".join(top["tokens"]) or any(HOSTILE in "".join(a["tokens"]) for a in f0["activations"])
    assert sum(f0["freq_hist_data_bar_heights"]) == int(d.hist[0].sum())
    f3 = feature_json(d, 3, label="user label")
    assert f3["label"] == "user label" and not f3["labelIsAutomatic"]


@pytest.fixture(scope="module")
def site(hv, planted):
    from featuregeo.atlas import AtlasParams
    from featuregeo.pipeline import atlas as atlas_pipeline

    labels = planted["root"] / "labels.csv"
    labels.write_text("feature,label\n3,user label wins\n")
    out = planted["root"] / "atlas"
    res = atlas_pipeline.run(str(planted["root"] / "saes"), out, params=AtlasParams(layout="pca", contexts=4),
                             harvest=hv.path, labels=[labels], progress=None)
    la = res.layer(LAYER)
    assert la.label(3) == "user label wins" and la.label(0).startswith('auto: fires on " zebra"')
    assert la.has_dashboards and la.density[0] > 0
    return out


def test_atlas_panel_in_chromium(site, planted):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                              args=["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
        try:
            page = b.new_page(viewport={"width": 1100, "height": 760}, bypass_csp=True)
            ev = {"dialogs": [], "errors": []}
            page.on("dialog", lambda dlg: (ev["dialogs"].append(dlg.message), dlg.dismiss()))
            page.on("pageerror", lambda e: ev["errors"].append(str(e)))
            page.goto((site / "index.html").as_uri())
            page.wait_for_function("window.atlas && window.atlas.ready", timeout=30_000)
            # dashboards are not loaded for the first paint
            assert page.evaluate("Object.keys(atlas.timings).filter(k => k.startsWith('dashboards_')).length") == 0
            pos = page.evaluate("atlas.screenPosition(0)")
            page.mouse.click(pos["x"], pos["y"])
            if page.evaluate("atlas.selectedId") != 0:  # another point drawn on top: select by id
                page.evaluate("atlas.selectId(0, true)")
            page.wait_for_selector("#contexts .ctx")
            ctxs = page.locator("#contexts .ctx")
            assert ctxs.count() == 4
            assert page.locator("#contexts .ctx").first.locator(".tok.top").text_content() == " zebra"
            assert any(HOSTILE in ctxs.nth(i).text_content() for i in range(4))  # shown literally
            assert page.locator("#panel img").count() == 0 and ev["dialogs"] == []
            assert page.locator("#panel .label.auto").text_content().startswith('automatic auto: fires on " zebra"')
            assert page.locator("#hist .bar").count() >= 1 and "active on" in page.locator("#hist").text_content()
            rows = page.locator("#logits tr")
            assert rows.count() == 1 + 5 and rows.nth(1).locator("td").first.text_content() == " zebra"
            # search by context text and by automatic label
            page.fill("#search", "onerror")
            page.wait_for_function("document.querySelector('#results button') !== null")
            assert page.locator("#results button").first.text_content().startswith("0 — auto: fires on")
            page.fill("#search", "user label")
            assert page.locator("#results button").first.text_content() == "3 — user label wins"
            assert ev["dialogs"] == [] and ev["errors"] == []
        finally:
            b.close()
