"""Feature atlas without a model: layout and co-firing maths, label readers, safe embedding, the typed
inputs and their checks, params, the result's round trip and the per-layer checkpoint.

The whole site (real sae-lens folders -> real harvest -> lobes -> galaxy -> atlas, in headless chromium)
is tested in test_atlas_site.py."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from scipy import sparse

from featuregeo.atlas import (AtlasInputs, AtlasLayer, AtlasParams, AtlasResult, Crystal, CrystalsInput, FiringInput,
                              GalaxyInput, LayerInputs, LobesInput, LobeSummary, SaeIdentity, build, cofiring,
                              layout_2d, lobe_columns, script_json)
from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud, Suite
from featuregeo.pipeline.atlas import crystal_inputs
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
    with pytest.raises(InputError, match="layout: expected one of"):
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
    lob = LobesInput(feature_ids=np.array([9, 2, 5]),
                     labels={"phi": {2: np.array([1, 0, 1]), 3: np.array([2, 0, 1])}})
    cols = lobe_columns(lob, np.array([2, 3, 5, 9]), "phi")
    np.testing.assert_array_equal(cols[2], [0, -1, 1, 1])
    np.testing.assert_array_equal(cols[3], [0, -1, 1, 2])
    with pytest.raises(InputError, match="--affinity: lobes has no lobes for 'jaccard'; expected one of \\['phi'\\]"):
        lobe_columns(lob, np.array([2]), "jaccard")


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


def test_crystal_inputs_both_layouts_and_bad_header(tmp_path):
    (tmp_path / "crystals.csv").write_text(CRYSTAL_HEADER + "1,2,0,1,2,3,0.9,1.0,parallelogram,0.8\n"
                                           "2,5,4,5,6,7,0.7,2.0,trapezoid,0.5\n")
    (tmp_path / "layer_5").mkdir()
    (tmp_path / "layer_5" / "crystals.csv").write_text(CRYSTAL_HEADER + "1,5,4,5,6,7,0.7,2.0,trapezoid,0.5\n"
                                                       "2,5,8,9,10,11,nan,,parallelogram,0.4\n")
    got = crystal_inputs(tmp_path)
    assert sorted(got) == [2, 5]
    assert [(c.a, c.kind) for c in got[2].rows] == [(0, "parallelogram")]
    assert [(c.rank, c.a) for c in got[5].rows] == [(2, 4), (2, 8)]  # the duplicate row is kept once (first seen)
    assert got[5].rows[1].cosine is None and got[5].rows[1].length_ratio is None  # NaN / empty -> None
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "crystals.csv").write_text("rank,a,b\n1,2,3\n")
    with pytest.raises(InputError, match="misses columns \\['layer', 'c', 'd'"):
        crystal_inputs(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="--atoms: no crystals.csv"):
        crystal_inputs(tmp_path / "empty")
    (bad / "crystals.csv").write_text(CRYSTAL_HEADER + "1,2,x,1,2,3,0.9,1.0,parallelogram,0.8\n")
    with pytest.raises(InputError, match="crystals.csv row 2: expected integer"):
        crystal_inputs(bad)


# ----------------------------------------------------------------------------------------------
# the typed inputs, params, result and checkpoint (synthetic suite, no model)
# ----------------------------------------------------------------------------------------------
N_SYN, D_SYN = 60, 24


def synthetic_suite(shift=0.0, name="synthetic"):
    """Two layers of planted clusters; row 7 is dead (excluded) in every layer."""
    def load(layer):
        x, _ = planted_directions(3, N_SYN // 3, D_SYN, 0.3, seed=layer)
        x = x + shift
        x[7] = 0
        return FeatureCloud.from_array(x, layer, source=name)

    return Suite([0, 3], load, name=name)


def synthetic_inputs(labels_at_3="three"):
    rng = np.random.default_rng(5)
    firing = rng.random((300, N_SYN)) < 0.1
    firing[:, 11] = firing[:, 10]  # 11 fires exactly when 10 does
    lobes = LobesInput(feature_ids=np.arange(0, N_SYN, 2),
                       labels={"phi": {2: (np.arange(0, N_SYN, 2) // 30).astype(np.int32),
                                       3: (np.arange(0, N_SYN, 2) // 20).astype(np.int32)}},
                       summaries=[LobeSummary("phi", 2, n_lobes=2, ami=0.5), LobeSummary("jaccard", 2)],
                       sae=SaeIdentity(n_features=N_SYN, d_model=D_SYN))
    galaxy = GalaxyInput(eigenvalues=np.linspace(2, 0.1, D_SYN), slope=-0.8, slope_ci=(-0.9, -0.7), slope_corrected=-0.78,
                         fit_ranks=(2, 20),
                         r2=0.99, null_slope=float("nan"), sae=SaeIdentity(N_SYN, D_SYN, source="synthetic"))
    crystals = CrystalsInput([Crystal(2, 4, 5, 6, 8, 0.8, "trapezoid", 0.5, 0.4),
                              Crystal(1, 0, 1, 2, 3, 0.95, "parallelogram", 0.99, 0.9)])
    return AtlasInputs({
        0: LayerInputs(firing=FiringInput(firing.astype(np.uint8), fingerprint="h0", sae=SaeIdentity(N_SYN, D_SYN)),
                       lobes=lobes, crystals=crystals, galaxy=galaxy,
                       labels={0: "<b>zero</b>", 7: "dead feature", 1000: "not in the SAE"}),
        3: LayerInputs(labels={1: labels_at_3}),
    })


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "atlas"
    return out, build(synthetic_suite(), AtlasParams(layout="pca", n_clusters=3), out, inputs=synthetic_inputs())


def test_build_carries_every_input(built):
    out, res = built
    la = res.layer(0)
    assert [x.layer for x in res.layers] == [0, 3] and res.n_features == 2 * (N_SYN - 1)
    assert la.n_total == N_SYN and la.n_excluded == 1 and 7 not in la.ids.tolist()
    # firing frequency and co-firing partners come from the firing matrix; the planted twin is found
    firing = synthetic_inputs().layers[0].firing.matrix
    np.testing.assert_array_equal(la.n_fired, firing.sum(0)[la.ids])
    np.testing.assert_allclose(la.freq, firing.sum(0)[la.ids] / 300, rtol=1e-6)
    i10, i11 = (int(np.flatnonzero(la.ids == k)[0]) for k in (10, 11))
    assert la.cofire[i10, 0] == 11 and la.cofire[i11, 0] == 10 and la.cofire_n11[i10, 0] == firing[:, 10].sum()
    # lobes aligned by id, -1 for features without a lobe; only the chosen affinity's summaries
    np.testing.assert_array_equal(la.lobes[3], np.where(la.ids % 2 == 0, la.ids // 20, -1))
    assert [s.affinity for s in la.lobe_summaries] == ["phi"]
    assert la.labels == {0: "<b>zero</b>"}  # labels of excluded or unknown features dropped
    assert [c.rank for c in la.crystals] == [1, 2] and la.galaxy.null_slope is None
    assert res.layer(3).labels == {1: "three"} and res.layer(3).freq is None
    meta = json.loads((out / "index.html").read_text().split("window.ATLAS_META = ")[1].split(";</script>")[0])
    assert meta["params"]["n_clusters"] == 3 and [x["layer"] for x in meta["layers"]] == [0, 3]
    assert "<" not in (out / "data" / "layer_0.js").read_text()
    assert (out / "figures" / "galaxy_layer_0.png").stat().st_size > 1000
    with (out / "lobes.csv").open() as fh:
        assert [(r["layer"], r["affinity"], r["ami"]) for r in csv.DictReader(fh)] == [("0", "phi", "0.5")]


def test_result_round_trip(built, tmp_path):
    out, res = built
    back = AtlasResult.load(out)
    assert back == res and back.params == res.params and isinstance(back.layers[0].crystals[0], Crystal)
    assert back.layer(0).cofire.dtype == np.int32 and back.layer(0).labels[0] == "<b>zero</b>"
    back.layers[0].labels[0] = "changed"
    assert back != res
    res.save(tmp_path)
    assert AtlasResult.load(tmp_path) == res
    t = res.table()
    assert list(t.layer) == [0, 3] and list(t.n_labels) == [1, 1] and t.galaxy_slope[0] == -0.8
    assert t.galaxy_slope_corrected[0] == -0.78 and back.layers[0].galaxy.slope_corrected == -0.78
    la = res.layers[0]
    la.save(tmp_path / "one")
    assert AtlasLayer.load(tmp_path / "one") == la


@pytest.mark.parametrize("change,match", [
    (dict(layout="mds"), "layout: expected one of umap, tsne, pca. Got 'mds' instead."),
    (dict(seed=-1), "seed: expected an integer >= 0. Got -1 instead."),
    (dict(top_cofiring=0), "top_cofiring: expected an integer >= 1"),
    (dict(n_clusters=1), "n_clusters: expected an integer >= 2 or None. Got 1 instead."),
    (dict(n_neighbors=1.5), "n_neighbors: expected an integer >= 2"),
    (dict(affinity=""), "affinity: expected the name of a lobe affinity"),
])
def test_params_validate(change, match, tmp_path):
    with pytest.raises(InputError, match=match):
        build(synthetic_suite(), AtlasParams(**change), tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_checkpoint_reuses_and_recomputes_exactly_what_changed(built, tmp_path):
    _, fresh = built
    params = AtlasParams(layout="pca", n_clusters=3)
    with Checkpoint(tmp_path / "ck") as ck:
        first = build(synthetic_suite(), params, tmp_path / "a", inputs=synthetic_inputs(), checkpoint=ck)
        assert ck.computed == ["layer_0", "layer_3"] and ck.reused == []
    with Checkpoint(tmp_path / "ck") as ck:
        again = build(synthetic_suite(), params, tmp_path / "b", inputs=synthetic_inputs(), checkpoint=ck)
        assert ck.reused == ["layer_0", "layer_3"] and ck.computed == []
    assert first == fresh and again == fresh
    assert (tmp_path / "a" / "features.parquet").read_bytes() == (tmp_path / "b" / "features.parquet").read_bytes()
    with Checkpoint(tmp_path / "ck") as ck:  # another label at layer 3: only layer 3 recomputed
        other = build(synthetic_suite(), params, tmp_path / "c", inputs=synthetic_inputs("new"), checkpoint=ck)
        assert ck.reused == ["layer_0"] and ck.computed == ["layer_3"]
    assert other.layer(3).labels == {1: "new"}
    with Checkpoint(tmp_path / "ck") as ck:  # another source: both recomputed
        build(synthetic_suite(shift=0.01), params, tmp_path / "d", inputs=synthetic_inputs("new"), checkpoint=ck)
        assert ck.computed == ["layer_0", "layer_3"]
    with Checkpoint(tmp_path / "ck") as ck:  # another parameter: both recomputed, layout changes
        fewer = build(synthetic_suite(), params.replace(top_cofiring=2), tmp_path / "e", inputs=synthetic_inputs(),
                       checkpoint=ck)
        assert ck.computed == ["layer_0", "layer_3"]
    assert fewer.layer(0).cofire.shape == (N_SYN - 1, 2)
    np.testing.assert_array_equal(fewer.layer(0).cofire, fresh.layer(0).cofire[:, :2])


def with_layer0(**changes):
    inputs = synthetic_inputs()
    li = inputs.layers[0]
    for k, v in changes.items():
        setattr(li, k, v)
    return inputs


@pytest.mark.parametrize("inputs,match", [
    (with_layer0(firing=FiringInput(np.ones((5, 2048), np.uint8), "h", sae=SaeIdentity(n_features=2048), origin="--harvest H")),
     "--harvest H: layer 0 was computed on an SAE with 2048 features but the SAE has 60"),
    (with_layer0(firing=FiringInput(lambda: np.ones((5, 2048), np.uint8), "h", origin="--harvest H")),
     "--harvest H: layer 0 firing has 2048 feature columns but the SAE \\(synthetic\\) has 60 features"),
    (with_layer0(galaxy=GalaxyInput(np.ones(3), slope=-1.0, sae=SaeIdentity(N_SYN, D_SYN, source="other"), origin="--galaxy G")),
     "--galaxy G: layer 0 was computed on an SAE with source 'other' but the SAE is 'synthetic'"),
    (with_layer0(galaxy=GalaxyInput(np.ones(3), sae=SaeIdentity(N_SYN, 640))),
     "galaxy: layer 0 was computed on an SAE with d_model 640 but the SAE has d_model 24"),
    (with_layer0(lobes=LobesInput(np.array([1, 99]), {"phi": {2: np.array([0, 1])}}, origin="--lobes L")),
     "--lobes L: layer 0 has feature id 99 but the SAE \\(synthetic\\) has 60 features"),
    (with_layer0(lobes=LobesInput(np.array([1, 2]), {"phi": {2: np.array([0, 1, 1])}})),
     "lobes: layer 0 labels for 'phi', k=2 have shape \\(3,\\) but there are 2 feature ids"),
    (with_layer0(lobes=LobesInput(np.array([1, 2]), {"dice": {2: np.array([0, 1])}})),
     "--affinity: lobes has no lobes for 'phi' at layer 0; expected one of \\['dice'\\]"),
    (with_layer0(crystals=CrystalsInput([Crystal(1, 0, 1, 2, 300, 0.9, "parallelogram")], origin="--atoms A")),
     "--atoms A: layer 0 has a crystal with feature id 300 but the SAE \\(synthetic\\) has 60 features"),
])
def test_mismatched_inputs_are_refused_before_any_layer_is_computed(inputs, match, tmp_path):
    with Checkpoint(tmp_path / "ck") as ck:
        with pytest.raises(InputError, match=match):
            build(synthetic_suite(), AtlasParams(layout="pca"), tmp_path / "o", inputs=inputs, checkpoint=ck)
        if "firing has" not in match:  # the column count of an unrecorded harvest is known only once read
            assert ck.computed == []


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="out: .*f is a file; expected a directory"):
        build(synthetic_suite(), AtlasParams(layout="pca"), tmp_path / "f")
    with pytest.raises(InputError, match="lies under a file"):
        build(synthetic_suite(), AtlasParams(layout="pca"), tmp_path / "f" / "sub")


def test_cosine_knn_is_exact_with_ties_by_index():
    """The UMAP layout's neighbours: brute force order (similarity desc, index asc), self first at 0."""
    from featuregeo.atlas.layout import cosine_knn

    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate: tied neighbours
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, dist = cosine_knn(x, 6, max_chunk_entries=300 * 64)  # several chunks
    s = (x @ x.T).astype(np.float64)
    np.fill_diagonal(s, np.inf)
    ref = np.array([sorted(range(300), key=lambda j: (-s[i, j], j))[:6] for i in range(300)])
    np.testing.assert_array_equal(idx, ref)
    assert (dist[:, 0] == 0).all() and (np.diff(dist, axis=1) >= 0).all()
    assert idx[3, 1] == 7 and idx[7, 1] == 3 and dist[3, 1] < 1e-6
