"""Lobes over a harvest and a suite: the checkpoint (reuse, recompute), the pipeline's files, the CLI and its bad inputs.

The harvest directory is written in the format `featuregeo harvest` writes (harvest.json + shards),
from planted firing, so no model is needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from featuregeo.cli import main
from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.io import open_suite
from featuregeo.io.harvest import Harvest, npz_bytes
from featuregeo.pipeline import lobes as pipeline
from featuregeo.tl import lobes
from featuregeo.tl.lobes import LobesParams, LobesResult

LAYERS = (3, 5)
N_GROUPS, PER, N_BLOCKS = 3, 12, 360
PARAMS = LobesParams(affinities=("phi", "jaccard"), n_clusters=(2, 3), n_permutations=10, logreg_null_repeats=2,
                     heldout_fraction=0.25)


def planted_layer(layer: int, n_features: int = N_GROUPS * PER):
    """(firing [N_BLOCKS, n], decoder rows, genres): each block's genre lights up one group of features."""
    rng = np.random.default_rng(layer)
    groups = np.arange(n_features) % N_GROUPS
    genre = np.arange(N_BLOCKS) // 4 % N_GROUPS  # 4 blocks per document, one genre per document
    firing = rng.random((N_BLOCKS, n_features)) < np.where(groups[None] == genre[:, None], 0.35, 0.02)
    cent = rng.standard_normal((N_GROUPS, 16))
    x = cent[groups] + 0.2 * rng.standard_normal((n_features, 16))
    return firing, x.astype(np.float32), np.array([f"genre{g}" for g in genre])


def write_harvest(d, widths: dict[int, int], fingerprint: str = "planted01"):
    """A harvest directory as `featuregeo harvest` writes it (two shards)."""
    (d / "shards").mkdir(parents=True)
    saes = {str(L): {"d_sae": n, "checksum": "x"} for L, n in widths.items()}
    cfg = {"layers": sorted(widths), "sae_layers": sorted(widths), "block_len": 32, "threshold": 1.0, "saes": saes}
    (d / "harvest.json").write_text(json.dumps({"format": 2, "fingerprint": fingerprint, "config": cfg,
                                                "d_model": 16, "activation_scale": {}, "complete": True,
                                                "n_blocks": N_BLOCKS, "n_shards": 2}))
    half = N_BLOCKS // 2
    for s, rows in enumerate((slice(0, half), slice(half, N_BLOCKS))):
        arrays = {}
        for L, n in widths.items():
            fb, _, genres = planted_layer(L, n)
            fb = fb[rows]
            r, c = np.nonzero(fb)
            arrays[f"fire_{L}_indptr"] = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=fb.shape[0]))))
            arrays[f"fire_{L}_indices"] = c.astype(np.int32)
            arrays[f"fire_{L}_shape"] = np.array(fb.shape, dtype=np.int64)
        ids = np.arange(N_BLOCKS)[rows]
        arrays.update(doc_id=ids // 4, genre=genres[rows], source=np.array(["planted"] * len(ids)),
                      start=np.zeros(len(ids), dtype=np.int64))
        (d / "shards" / f"shard_{s:06d}.npz").write_bytes(npz_bytes(arrays))
    return d


@pytest.fixture
def inputs(tmp_path):
    """(SAE source directory with layer_L.npy, harvest directory)."""
    saes = tmp_path / "saes"
    saes.mkdir()
    for L in LAYERS:
        np.save(saes / f"layer_{L}.npy", planted_layer(L)[1])
    hv = write_harvest(tmp_path / "harvest", {L: N_GROUPS * PER for L in LAYERS})
    return saes, hv


def test_analyze_recovers_planted_lobes_and_resumes(inputs, tmp_path):
    saes, hv = inputs
    harvest, suite = Harvest(hv), open_suite(str(saes))
    with Checkpoint(tmp_path / "ck") as ck:
        first = lobes.analyze(harvest, suite, PARAMS, checkpoint=ck)
        assert sorted(ck.computed) == ["layer_3", "layer_5"] and ck.reused == []
    assert [r.layer for r in first.layers] == list(LAYERS) and first.source == str(saes)
    groups = np.arange(N_GROUPS * PER) % N_GROUPS
    from sklearn.metrics import adjusted_mutual_info_score

    for rec in first.layers:
        assert rec.n_blocks + rec.n_blocks_heldout == N_BLOCKS and rec.n_blocks_heldout > 0
        assert adjusted_mutual_info_score(groups[rec.feature_ids], rec.labels("phi", 3)) > 0.9
        assert rec.record("phi", 3).ami_sigma > 5 and rec.record("jaccard", 3).genre_cramers_v > 0.9
    # the same inputs: every layer reused, the result identical
    with Checkpoint(tmp_path / "ck") as ck:
        again = lobes.analyze(harvest, suite, PARAMS, checkpoint=ck)
        assert sorted(ck.reused) == ["layer_3", "layer_5"] and ck.computed == []
    assert again == first
    # another parameter: every layer recomputed
    with Checkpoint(tmp_path / "ck") as ck:
        other = lobes.analyze(harvest, suite, PARAMS.replace(n_permutations=11), checkpoint=ck)
        assert sorted(ck.computed) == ["layer_3", "layer_5"] and ck.reused == []
    assert other.layers[0].record("phi", 2).ami_null_mean != first.layers[0].record("phi", 2).ami_null_mean
    # the SAE of layer 5 changed in place (same shape): layer 5 recomputed, layer 3 reused
    np.save(saes / "layer_5.npy", np.random.default_rng(9).standard_normal((N_GROUPS * PER, 16)).astype(np.float32))
    with Checkpoint(tmp_path / "ck") as ck:
        changed = lobes.analyze(harvest, open_suite(str(saes)), PARAMS.replace(n_permutations=11), checkpoint=ck)
        assert ck.reused == ["layer_3"] and ck.computed == ["layer_5"]
    assert changed.layers[0] == other.layers[0]
    # random decoder rows: the lobes are no longer predictable from the geometry
    assert changed.layers[1].record("phi", 3).logreg_bal_acc < 0.7 < other.layers[1].record("phi", 3).logreg_bal_acc
    # another harvest (same config fingerprint, more blocks would differ too): recomputed
    hv2 = write_harvest(tmp_path / "harvest2", {L: N_GROUPS * PER for L in LAYERS}, fingerprint="planted02")
    with Checkpoint(tmp_path / "ck") as ck:
        lobes.analyze(Harvest(hv2), open_suite(str(saes)), PARAMS, layers=[3], checkpoint=ck)
        assert ck.computed == ["layer_3"]


def test_pipeline_writes_result_and_figures(inputs, tmp_path):
    saes, hv = inputs
    out = tmp_path / "out"
    lines = []
    res = pipeline.run(str(saes), hv, out, PARAMS, layers="3", progress=lines.append)
    assert LobesResult.load(out) == res and [r.layer for r in res.layers] == [3]
    assert (out / "lobes.csv").read_text().startswith("layer,affinity")
    from featuregeo.pl.lobes import FIGURES

    assert all((out / "layer_3" / name).stat().st_size > 1000 for name in FIGURES.values())
    assert not (out / "layer_3" / ".params").exists() and (out / ".checkpoint" / "layer_3").is_dir()
    assert any("wrote" in x for x in lines)
    lines.clear()
    assert pipeline.run(str(saes), hv, out, PARAMS, layers=[3], progress=lines.append, figures=False) == res
    assert any("reused" in x for x in lines)


def test_cli_runs_and_prints(inputs, tmp_path, capsys):
    saes, hv = inputs
    out = tmp_path / "cli"
    rc = main(["lobes", str(saes), "--harvest", str(hv), "--out", str(out), "--layers", "5", "--n-clusters", "2,3",
               "--permutations", "10", "--logreg-null", "0", "--affinities", "phi,jaccard", "--heldout-fraction",
               "0.25", "--logreg-max-clusters", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "AMI" in cap.out and "layer 5" in cap.out
    res = LobesResult.load(out)
    assert res.params.logreg_max_clusters is None and res.params.n_permutations == 10
    assert {(r.affinity, r.n_clusters) for r in res.layers[0].records} == {(a, k) for a in ("phi", "jaccard")
                                                                           for k in (2, 3)}


def _bad(argv, capsys, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err, err
    assert match in err, err
    return err


def test_cli_bad_inputs(inputs, tmp_path, capsys):
    saes, hv = inputs
    out = tmp_path / "o"
    base = ["lobes", str(saes), "--harvest", str(hv), "--out", str(out), "--layers", "3"]
    _bad(base + ["--n-clusters", "2,x"], capsys, "--n-clusters: expected comma-separated integers")
    _bad(base + ["--n-clusters", "1,4"], capsys, "n_clusters: expected a non-empty sequence of integers >= 2")
    _bad(base + ["--affinities", "phi,cosine"], capsys, "affinities: expected one of phi, jaccard")
    _bad(base + ["--affinities", ","], capsys, "--affinities: expected a comma list")
    _bad(base + ["--permutations", "-5"], capsys, "n_permutations: expected an integer >= 1. Got -5 instead.")
    _bad(base + ["--logreg-null", "-1"], capsys, "logreg_null_repeats: expected an integer >= 0")
    _bad(base + ["--heldout-fraction", "1.5"], capsys, "heldout_fraction: expected a finite number >= 0 and < 1")
    _bad(base + ["--seed", "-3"], capsys, "seed: expected an integer >= 0")
    _bad(base[:-1] + ["4"], capsys, "--layers: [4] have no firing in")
    _bad(["lobes", str(saes), "--harvest", str(tmp_path / "nope"), "--out", str(out)], capsys, "no harvest.json")
    (tmp_path / "file").write_text("x")
    _bad(["lobes", str(saes), "--harvest", str(hv), "--out", str(tmp_path / "file" / "sub")], capsys,
         "expected a directory")
    assert not out.exists()  # every refusal came before anything was written


@pytest.mark.parametrize("content, match", [
    ("{\"fingerprint\": \"x\", \"config\": {\"sae_la", "harvest.json: not valid JSON"),
    ("[1, 2, 3]", "harvest.json: the file should be a JSON object"),
    ("{\"fingerprint\": \"x\"}", "harvest.json: 'format' should be one of"),
    ("{\"format\": 2, \"fingerprint\": \"x\", \"config\": {\"sae_layers\": [\"three\"]}}",
     "harvest.json: 'config.layers' should be a list of layer numbers"),
    (b"\xff\xfe\x00garbage", "harvest.json: not valid JSON"),
])
def test_cli_broken_harvest_json(inputs, capsys, content, match):
    saes, hv = inputs
    p = hv / "harvest.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = _bad(["lobes", str(saes), "--harvest", str(hv), "--out", str(hv.parent / "o")], capsys, match)
    assert str(p) in err


def test_cli_damaged_shard_and_missing_fingerprint(inputs, capsys):
    saes, hv = inputs
    doc = json.loads((hv / "harvest.json").read_text())
    (hv / "harvest.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "fingerprint"}))
    _bad(["lobes", str(saes), "--harvest", str(hv), "--out", str(hv.parent / "o")], capsys, "'fingerprint' should be a string")
    (hv / "harvest.json").write_text(json.dumps(doc))
    (hv / "shards" / "shard_000001.npz").write_bytes(b"not a zip file")
    _bad(["lobes", str(saes), "--harvest", str(hv), "--out", str(hv.parent / "o")], capsys, "a damaged shard")


def test_harvest_and_sae_feature_counts_must_match(tmp_path, capsys):
    saes = tmp_path / "saes"
    saes.mkdir()
    np.save(saes / "layer_3.npy", planted_layer(3, 30)[1])  # a 30-feature SAE ...
    hv = write_harvest(tmp_path / "harvest", {3: 48})  # ... and a 48-feature harvest
    _bad(["lobes", str(saes), "--harvest", str(hv), "--out", str(tmp_path / "o")], capsys,
         "layer 3 of the harvest has 48 features but the SAE")
    with pytest.raises(InputError, match="has 48 features but the SAE"):
        lobes.analyze(Harvest(hv), open_suite(str(saes)), PARAMS)
    _bad(["lobes", str(saes), "--harvest", str(hv), "--out", str(tmp_path / "o"), "--layers", "7"], capsys,
         "--layers: [7] have no firing")
