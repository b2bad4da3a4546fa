"""Harvest on the real Gemma 3 270M and real text: firing sets, resumption byte-identical, the
fingerprint, and bad input (nothing written; a damaged directory is a one-line error)."""

from __future__ import annotations

import errno
import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from featuregeo.core.errors import InputError
from featuregeo.io.corpus import Corpus, Document
from featuregeo.io.harvest import Harvest, HarvestError, HarvestParams, harvest
from featuregeo.io.models import residual_stream

LAYERS = (2, 7)
P = HarvestParams(block_len=32, batch_size=4, shard_blocks=4, max_blocks=12, max_blocks_per_doc=4)


# the shared real-model fixtures live in conftest.py: default_model (as lm), harvest_docs, harvest_saes and
# small_harvest (12 blocks x 32 tokens at layers 2 and 7, activations stored; copy it before damaging it)
@pytest.fixture(scope="module")
def lm(default_model):
    return default_model


@pytest.fixture(scope="module")
def docs(harvest_docs):
    return harvest_docs


@pytest.fixture(scope="module")
def saes(harvest_saes):
    return harvest_saes


def make_saes(seed: int = 0) -> dict:
    from conftest import make_topk_saes

    return make_topk_saes(LAYERS, seed)


def test_firing_matches_direct_encoding(lm, docs, saes, small_harvest):
    h = small_harvest
    assert h.complete and h.n_blocks == 12 and h.n_shards == 3
    assert list(h.blocks["genre"]).count("code") == 8 and "prose" in set(h.blocks()["genre"])
    assert h.params == P.replace(store_activations=True) and h.n_features(2) == 128
    # recompute block 5 directly: residual stream, SAE encode, any token above threshold 1.0
    from featuregeo.io.corpus import blocks

    blk = list(blocks(docs, lm.tokenizer, 32, add_bos=True, max_blocks_per_doc=4))[5]
    assert h.blocks["doc_id"][5] == blk.doc_id and h.blocks["start"][5] == blk.start
    acts = residual_stream(lm, [blk.input_ids], list(LAYERS), add_bos=False, seq_len=None, drop_bos=True)
    for L in LAYERS:
        a = acts[L].reshape(-1, 640)[-32:]  # the 32 text tokens (BOS dropped)
        with torch.inference_mode():
            want = np.flatnonzero((saes[L].encode(torch.as_tensor(a)) > 1.0).any(0).numpy())
        got = h.firing(L)[5].indices
        assert 0 < len(want) < 128  # the test can fail: some, not all, features fire
        np.testing.assert_array_equal(np.sort(got), want)
        assert h.feature_counts(L).sum() == h.firing(L).nnz
    # stored activations: 32 tokens per block, float16 of the scaled residual; unscaled = raw residual
    x = next(h.activations(7, scaled=False))
    assert x.shape == (4 * 32, 640)
    blk0 = list(blocks(docs, lm.tokenizer, 32, add_bos=True, max_blocks_per_doc=4))[0]
    raw0 = residual_stream(lm, [blk0.input_ids], [7], add_bos=False, seq_len=None)[7].reshape(-1, 640)[-32:]
    np.testing.assert_allclose(x[:32], raw0.numpy(), rtol=2e-3, atol=2e-3 * float(raw0.abs().max()))
    s = next(h.activations(7))
    assert abs(np.linalg.norm(s, axis=1).mean() / np.sqrt(640) - 1) < 0.5


def test_killed_harvest_resumes_byte_identical(lm, docs, saes, small_harvest, tmp_path):
    params = P.replace(store_activations=True)
    part = harvest(lm, docs, tmp_path / "part", params, saes=saes, stop_after_shards=1)
    assert not part.complete and len(list((tmp_path / "part" / "shards").glob("*.npz"))) == 1
    # simulate a kill mid-shard: a stray temp file from an interrupted write
    (tmp_path / "part" / "shards" / ".shard_000001.npz.tmp").write_bytes(b"partial")
    lines = []
    harvest(lm, docs, tmp_path / "part", params, saes=saes, progress=lines.append)
    assert lines[-1] == "harvest: 1 of 3 shards were already finished (resumed)"
    full = small_harvest.path
    files = ["harvest.json"] + [str(p.relative_to(full)) for p in full.rglob("*.np*")]
    assert len(files) == 1 + 3 + 2 * 3 + 2  # manifest, shards, activations, logit effects per layer
    for rel in files:
        assert filecmp.cmp(full / rel, tmp_path / "part" / rel, shallow=False), rel
    assert Harvest(tmp_path / "part").fingerprint == small_harvest.fingerprint


def test_fingerprint_covers_saes_corpus_and_params(lm, docs, saes, small_harvest, tmp_path):
    out = tmp_path / "h"
    shutil.copytree(small_harvest.path, out)
    again = harvest(lm, docs, out, P.replace(store_activations=True), saes=saes)  # same inputs: reused
    assert again.fingerprint == small_harvest.fingerprint and again.complete
    other_saes = make_saes(seed=1)  # same shapes, other weights
    with pytest.raises(InputError, match="holds a different harvest"):
        harvest(lm, docs, out, P.replace(store_activations=True), saes=other_saes)
    edited = docs[:2] + [Document(docs[2].text + " Amen.", docs[2].source, docs[2].genre, docs[2].doc_id)]
    assert Corpus(edited).fingerprint() != Corpus(docs).fingerprint()
    with pytest.raises(InputError, match="holds a different harvest"):
        harvest(lm, edited, out, P.replace(store_activations=True), saes=saes)
    with pytest.raises(InputError, match="holds a different harvest"):
        harvest(lm, docs, out, P.replace(store_activations=True, threshold=0.0), saes=saes)
    assert filecmp.cmp(out / "harvest.json", small_harvest.path / "harvest.json", shallow=False)


def test_disk_full_keeps_finished_shards(lm, docs, saes, tmp_path, monkeypatch):
    import featuregeo.io.harvest.files as hv_files

    real = hv_files.atomic_write_bytes

    def failing(path, data):
        if Path(path).name == "shard_000001.npz":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(hv_files, "atomic_write_bytes", failing)
    with pytest.raises(HarvestError, match="disk full.*finished shards are intact"):
        harvest(lm, docs, tmp_path / "h", P, saes=saes)
    h = Harvest(tmp_path / "h")
    assert not h.complete and h.n_blocks == 4 and h.firing(LAYERS[0]).shape == (4, 128)
    monkeypatch.setattr(hv_files, "atomic_write_bytes", real)
    assert harvest(lm, docs, tmp_path / "h", P, saes=saes).n_blocks == 12


def test_bad_inputs_write_nothing(lm, docs, saes, tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    cases = [
        (dict(saes={3: TopKSAE(TopKSAEConfig(d_in=64, d_sae=32, k=4))}), r"saes\[3\].*d_model 64.*640"),
        (dict(corpus=[Document("tiny text", "t", "prose", "t0")]), "no complete block"),
        (dict(saes=None, params=P.replace(layers=(40,), store_activations=True)), "out of range"),
        (dict(params=P.replace(shard_blocks=6)), "shard_blocks"),
        (dict(params=P.replace(max_blocks=0)), r"max_blocks: expected an integer >= 1 or None. Got 0 instead"),
        (dict(params=P.replace(threshold=float("nan"))), "threshold: expected a finite number"),
        (dict(saes=None), "nothing to harvest"),
        (dict(saes={2: "not an sae"}), r"saes\[2\]: expected a sae-lens SAE"),
    ]
    for i, (change, match) in enumerate(cases):
        kw = {"corpus": docs, "params": P, "saes": saes, **change}
        with pytest.raises(InputError, match=match):
            harvest(lm, kw["corpus"], tmp_path / f"o{i}", kw["params"], saes=kw["saes"])
        assert not (tmp_path / f"o{i}").exists(), change
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        harvest(lm, docs, tmp_path / "file" / "sub", P, saes=saes)
    assert (tmp_path / "file").read_text() == "x"


def test_unfinished_start_is_restarted(lm, docs, saes, small_harvest, tmp_path):
    """A harvest that never finished a shard (e.g. rejected options in an older version) does not block
    the corrected command; one with finished shards is never overwritten."""
    out = tmp_path / "h"
    out.mkdir()
    shutil.copy(small_harvest.path / "harvest.json", out / "harvest.json")
    h = harvest(lm, docs, out, P.replace(max_blocks=4), saes=saes)
    assert h.complete and h.n_blocks == 4 and h.params.max_blocks == 4
    with pytest.raises(InputError, match="different harvest"):
        harvest(lm, docs, out, P, saes=saes)


def damaged(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def test_damaged_harvest_is_a_one_line_error(small_harvest, tmp_path):
    src = small_harvest.path
    text = (src / "harvest.json").read_text()

    def manifest(change):
        def edit(d):
            m = json.loads(text)
            change(m)
            (d / "harvest.json").write_text(json.dumps(m))
        return edit

    cases = {
        "truncated": (lambda d: (d / "harvest.json").write_text(text[: len(text) // 2]), r"harvest.json: not valid JSON"),
        "latin1": (lambda d: (d / "harvest.json").write_bytes(b"\xff\xfe{"), r"harvest.json: not valid JSON"),
        "list": (lambda d: (d / "harvest.json").write_text("[1, 2]"), r"the file should be a JSON object"),
        "layers": (manifest(lambda m: m["config"].update(layers="2,7")), r"'config.layers' should be a list"),
        "sae_layers": (manifest(lambda m: m["config"].update(sae_layers=[2, 9])), r"'config.sae_layers' should be a subset"),
        "complete": (manifest(lambda m: m.update(complete="yes")), r"'complete' should be true or false"),
        "n_shards": (manifest(lambda m: m.pop("n_shards")), r"'n_shards' should be an integer"),
        "format": (manifest(lambda m: m.update(format=99)), r"'format' should be one of \[1, 2, 3\]"),
        "gap": (lambda d: (d / "shards" / "shard_000001.npz").unlink(), r"shard_000001.npz is missing"),
        "last": (lambda d: (d / "shards" / "shard_000002.npz").unlink(), r"records 3 finished shards but 2"),
        "no manifest": (lambda d: (d / "harvest.json").unlink(), r"no harvest.json"),
    }
    for name, (edit, match) in cases.items():
        d = damaged(src, tmp_path / name.replace(" ", "_"), edit)
        with pytest.raises(InputError, match=match) as e:
            Harvest(d)
        assert "\n" not in str(e.value) and str(d) in str(e.value), name
    # a damaged shard is named when it is read
    d = damaged(src, tmp_path / "shard", lambda d: (d / "shards" / "shard_000001.npz").write_bytes(b"PK\x03\x04junk"))
    h = Harvest(d)
    with pytest.raises(InputError, match=r"shard_000001.npz: damaged shard"):
        h.firing(2)
    with pytest.raises(InputError, match="layer: 3 has no SAE"):
        h.firing(3)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(InputError, match="plain: expected a harvest directory; it is a file"):
        Harvest(tmp_path / "plain")
