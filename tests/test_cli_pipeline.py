"""harvest -> lobes through the command line, on the real model (the session fixture), real sae-lens
folders and real text; every bad input is exit 2 with one line naming it, before the model loads."""

from __future__ import annotations

import codecs
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from featuregeo.cli import main


@pytest.fixture
def model_loads(monkeypatch, default_model):
    """`load_model` returns the session's model and counts the calls (no second load in the tests)."""
    import featuregeo.io.models as models

    calls = []

    def fake(name="default", **kw):
        calls.append(name)
        return default_model

    monkeypatch.setattr(models, "load_model", fake)
    return calls


@pytest.fixture
def text_folder(tmp_path):
    """A folder corpus: real stdlib code and real prose, labelled by subfolder, and one Latin-1 file."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for i, name in enumerate(["bisect.py", "json/decoder.py", "heapq.py"]):
        (tmp_path / "corpus" / "code").mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / "code" / f"{i}.py").write_text((stdlib / name).read_text())
    doc = (stdlib / "this.py").read_text()  # the Zen of Python, rot13: prose-like
    prose = codecs.decode(doc.split('"""')[1], "rot13")
    (tmp_path / "corpus" / "prose").mkdir()
    for i in range(3):
        (tmp_path / "corpus" / "prose" / f"{i}.txt").write_text((prose + "\n") * (4 + i))
    (tmp_path / "corpus" / "prose" / "latin1.txt").write_bytes(prose.encode("utf-8") + "caf\u00e9".encode("latin-1"))
    return tmp_path / "corpus"


@pytest.fixture
def sae_folders(make_sae_folder, tmp_path):
    for layer in (2, 5):
        w = np.random.default_rng(layer).standard_normal((96, 640)).astype(np.float32)
        make_sae_folder(name=f"saes/layer_{layer}", arch="topk", d_in=640, d_sae=96, layer=layer, w_dec=w)
    return tmp_path / "saes"


def harvest_args(saes, corpus, out, *extra):
    # random encoders fire on every token; a higher threshold keeps firing informative
    return ["harvest", str(saes), "--corpus", str(corpus), "--split", "all", "--out", str(out), "--block-len", "32",
            "--batch-size", "4", "--shard-batches", "2", "--max-blocks-per-doc", "3", "--threshold", "0.5", *extra]


def test_harvest_then_lobes(model_loads, sae_folders, text_folder, tmp_path, capsys):
    hv = tmp_path / "harvest"
    rc = main(harvest_args(sae_folders, text_folder, hv))
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "skipped 1 files that are not usable text (1 not utf8" in err and model_loads == ["default"]
    from featuregeo.io.harvest import Harvest

    h = Harvest(hv)
    assert h.complete and h.sae_layers == [2, 5] and h.firing(2).shape[1] == 96
    assert set(h.blocks["genre"]) == {"code", "prose"} and "latin1.txt" not in " ".join(h.blocks["doc_id"])
    # the same command again: every shard reused, identical manifest
    before = (hv / "harvest.json").read_bytes()
    assert main(harvest_args(sae_folders, text_folder, hv)) == 0
    assert "were already finished (resumed)" in capsys.readouterr().err and (hv / "harvest.json").read_bytes() == before
    out = tmp_path / "lobes"
    rc = main(["lobes", str(sae_folders), "--harvest", str(hv), "--out", str(out), "--layers", "2",
               "--n-clusters", "2,3", "--permutations", "5", "--logreg-null", "2", "--affinities", "phi,jaccard"])
    err = capsys.readouterr()
    assert rc == 0, err.err
    assert any(p.suffix == ".json" for p in out.rglob("*")) and any(p.suffix == ".png" for p in out.rglob("*"))
    # bad inputs: a layer without firing, a missing harvest, a damaged harvest
    assert main(["lobes", str(sae_folders), "--harvest", str(hv), "--out", str(out), "--layers", "4"]) == 2
    assert main(["lobes", str(sae_folders), "--harvest", str(tmp_path / "nope"), "--out", str(out)]) == 2


def bad_cases(tmp_path, saes, corpus):
    """(argv, stderr pattern) pairs; each must exit 2 before the model loads and write nothing."""
    (tmp_path / "a_file").write_text("x")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9"}\n')
    latin_txt = tmp_path / "latin.txt"
    latin_txt.write_bytes(b"caf\xe9 au lait")
    out = tmp_path / "out"
    return [
        (harvest_args(saes, corpus, out, "--max-blocks", "0"), r"max_blocks: expected an integer >= 1 or None. Got 0"),
        (harvest_args(saes, corpus, out, "--block-len", "0"), r"block_len: expected an integer >= 1"),
        (harvest_args(saes, corpus, out, "--shard-batches", "0"), r"--shard-batches: expected an integer >= 1"),
        (harvest_args(saes, corpus, out, "--threshold", "nan"), r"threshold: expected a finite number"),
        (harvest_args(saes, corpus, out, "--split", "heldout", "--held-out", "1.5"), r"--held-out: expected"),
        (harvest_args(saes, corpus, out, "--seed", "-1"), r"--seed: expected an integer >= 0"),
        (harvest_args(saes, tmp_path / "missing.jsonl", out), r"missing.jsonl.*no such file or folder"),
        (harvest_args(saes, latin, out), r"latin.jsonl: not UTF-8 text \(line 1, byte 0xe9"),
        (harvest_args(saes, latin_txt, out), r"latin.txt: not UTF-8 text \(byte 0xe9 at offset 3\)"),
        (harvest_args(tmp_path / "no-saes", corpus, out), r"no-saes"),
        (harvest_args("none", corpus, out), r"SOURCE: 'none' harvests no firing"),
        (harvest_args("none", corpus, out, "--store-activations"), r"--layers: SOURCE 'none' stores activations"),
        (harvest_args(saes, corpus, tmp_path / "a_file"), r"--out .*a_file: expected a directory .*a_file is a file"),
        (harvest_args(saes, corpus, tmp_path / "a_file" / "sub"), r"--out .*sub: expected a directory .*a_file is a file"),
    ]


def test_bad_input_exits_2_before_loading_the_model(model_loads, sae_folders, text_folder, tmp_path, capsys):
    for argv, pattern in bad_cases(tmp_path, sae_folders, text_folder):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after any 'skipped files' notice
        assert err.startswith("featuregeo harvest: error: "), err
        import re

        assert re.search(pattern, err), (pattern, err)
    assert model_loads == [] and not (tmp_path / "out").exists()


def test_rejected_options_leave_nothing_behind(model_loads, sae_folders, text_folder, tmp_path, capsys):
    """--max-blocks 0 used to write harvest.json first, so the corrected command was 'a different harvest'."""
    hv = tmp_path / "h"
    assert main(harvest_args(sae_folders, text_folder, hv, "--max-blocks", "0")) == 2
    assert not hv.exists() and model_loads == []
    assert main(harvest_args(sae_folders, text_folder, hv, "--max-blocks", "4")) == 0, capsys.readouterr().err
    from featuregeo.io.harvest import Harvest

    assert Harvest(hv).n_blocks == 4 and model_loads == ["default"]
    # a damaged manifest in --out: one line naming it, before the model loads
    (hv / "harvest.json").write_text((hv / "harvest.json").read_text()[:50])
    capsys.readouterr()
    assert main(harvest_args(sae_folders, text_folder, hv, "--max-blocks", "4")) == 2
    err = capsys.readouterr().err.strip()
    assert "harvest.json: not valid JSON" in err and err.count("\n") == 0 and model_loads == ["default"]
    m = tmp_path / "h2"
    m.mkdir()
    (m / "harvest.json").write_text(json.dumps({"format": 2, "fingerprint": "x", "config": {"layers": "all"}}))
    assert main(harvest_args(sae_folders, text_folder, m)) == 2
    assert "'config.layers' should be a list of layer numbers" in capsys.readouterr().err
