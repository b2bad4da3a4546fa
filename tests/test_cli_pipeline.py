"""harvest -> lobes through the command line, on the real model, real sae-lens folders and real text."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from featuregeo.cli import main


@pytest.fixture
def text_folder(tmp_path):
    """A folder corpus: real stdlib code and real prose, labelled by subfolder."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for i, name in enumerate(["bisect.py", "json/decoder.py", "heapq.py"]):
        (tmp_path / "corpus" / "code").mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / "code" / f"{i}.py").write_text((stdlib / name).read_text())
    doc = (stdlib / "this.py").read_text()  # the Zen of Python, rot13: prose-like
    import codecs

    prose = codecs.decode(doc.split('"""')[1], "rot13")
    (tmp_path / "corpus" / "prose").mkdir()
    for i in range(3):
        (tmp_path / "corpus" / "prose" / f"{i}.txt").write_text((prose + "\n") * (4 + i))
    return tmp_path / "corpus"


def test_harvest_then_lobes(make_sae_folder, text_folder, tmp_path, capsys):
    for layer in (2, 5):
        w = np.random.default_rng(layer).standard_normal((96, 640)).astype(np.float32)
        make_sae_folder(name=f"saes/layer_{layer}", arch="topk", d_in=640, d_sae=96, layer=layer, w_dec=w)
    # random encoders fire on every token; a higher threshold keeps firing informative
    saes = tmp_path / "saes"
    hv = tmp_path / "harvest"
    rc = main(["harvest", str(saes), "--corpus", str(text_folder), "--split", "all", "--out", str(hv),
               "--block-len", "32", "--batch-size", "4", "--shard-batches", "2", "--max-blocks-per-doc", "3",
               "--threshold", "0.5"])
    assert rc == 0, capsys.readouterr().err
    from featuregeo.io.harvest import Harvest

    h = Harvest(hv)
    assert h.complete and h.sae_layers == [2, 5] and h.firing(2).shape[1] == 96
    out = tmp_path / "lobes"
    rc = main(["lobes", str(saes), "--harvest", str(hv), "--out", str(out), "--layers", "2",
               "--n-clusters", "2,3", "--permutations", "20", "--logreg-null", "3", "--affinities", "phi,jaccard"])
    err = capsys.readouterr()
    assert rc == 0, err.err
    recs = json.loads((out / "layer_2" / "lobes.json").read_text())["records"]
    assert {(r["affinity"], r["n_clusters"]) for r in recs} == {("phi", 2), ("phi", 3), ("jaccard", 2), ("jaccard", 3)}
    for r in recs:
        assert 0 <= r["ami_p"] <= 1 and r["ami_null_std"] >= 0
    for fig in ("lobes_ami.png", "lobes_map.png"):
        assert (out / "layer_2" / fig).stat().st_size > 0
    assert "AMI" in err.out
    # bad inputs: a layer without firing, a missing harvest
    assert main(["lobes", str(saes), "--harvest", str(hv), "--out", str(out), "--layers", "4"]) == 2
    assert main(["lobes", str(saes), "--harvest", str(tmp_path / "nope"), "--out", str(out)]) == 2
