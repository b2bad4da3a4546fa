"""Harvest on the real Gemma 3 270M and real text: firing sets, resumption byte-identical, bad input."""

from __future__ import annotations

import errno
import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch

from featuregeo.io.corpus import Document
from featuregeo.core.errors import InputError
from featuregeo.io.harvest import Harvest, HarvestError, harvest
from featuregeo.io.models import residual_stream

LAYERS = (2, 7)


@pytest.fixture(scope="module")
def lm(default_model):
    return default_model


@pytest.fixture(scope="module")
def docs():
    import inspect
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [Document((stdlib / f).read_text(), "stdlib", "code", f) for f in ("json/decoder.py", "bisect.py")]
    prose = [Document(inspect.getdoc(np.linalg.svd) * 2, "numpy-doc", "prose", "svd")]
    return code + prose


@pytest.fixture(scope="module")
def saes():
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    out = {}
    for L in LAYERS:
        sae = TopKSAE(TopKSAEConfig(d_in=640, d_sae=128, k=8))
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.01)
        out[L] = sae
    return out


KW = dict(block_len=32, batch_size=4, shard_blocks=4, max_blocks=12, max_blocks_per_doc=4, progress=False)


def test_firing_matches_direct_encoding(lm, docs, saes, tmp_path):
    h = harvest(lm, docs, tmp_path / "h", saes=saes, store_activations=True, **KW)
    assert h.complete and h.n_blocks == 12
    assert list(h.blocks["genre"]).count("code") == 8 and "prose" in set(h.blocks["genre"])
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
        np.testing.assert_array_equal(np.sort(got), want)
        assert h.feature_counts(L).sum() == h.firing(L).nnz
    # stored activations: 32 tokens per block, float16 of the scaled residual; unscaled = raw residual
    x = next(h.activations(7, scaled=False))
    assert x.shape == (4 * 32, 640)
    blk0 = list(blocks(docs, lm.tokenizer, 32, add_bos=True, max_blocks_per_doc=4))[0]
    raw0 = residual_stream(lm, [blk0.input_ids], [7], add_bos=False, seq_len=None)[7].reshape(-1, 640)[-32:]
    np.testing.assert_allclose(x[:32], np.asarray(raw0), rtol=2e-3, atol=2e-3 * float(np.abs(raw0).max()))
    s = next(h.activations(7))
    assert abs(np.linalg.norm(s, axis=1).mean() / np.sqrt(640) - 1) < 0.5


def test_killed_harvest_resumes_byte_identical(lm, docs, saes, tmp_path):
    full = harvest(lm, docs, tmp_path / "full", saes=saes, store_activations=True, **KW)
    part = harvest(lm, docs, tmp_path / "part", saes=saes, store_activations=True, stop_after_shards=1, **KW)
    assert not part.complete and len(list((tmp_path / "part" / "shards").glob("*.npz"))) == 1
    # simulate a kill mid-shard: a stray temp file from an interrupted write
    (tmp_path / "part" / "shards" / ".shard_000001.npz.tmp").write_bytes(b"partial")
    harvest(lm, docs, tmp_path / "part", saes=saes, store_activations=True, **KW)
    for rel in ["harvest.json"] + [str(p.relative_to(tmp_path / "full")) for p in (tmp_path / "full").rglob("*.np*")]:
        assert filecmp.cmp(tmp_path / "full" / rel, tmp_path / "part" / rel, shallow=False), rel
    assert Harvest(tmp_path / "part").complete and full.complete


def test_disk_full_keeps_finished_shards(lm, docs, saes, tmp_path, monkeypatch):
    import featuregeo.io.harvest as hv

    real = hv.atomic_write_bytes
    calls = {"n": 0}

    def failing(path, data):
        if Path(path).name == "shard_000001.npz":
            raise OSError(errno.ENOSPC, "No space left on device")
        calls["n"] += 1
        return real(path, data)

    monkeypatch.setattr(hv, "atomic_write_bytes", failing)
    with pytest.raises(HarvestError, match="disk full.*finished shards are intact"):
        harvest(lm, docs, tmp_path / "h", saes=saes, **KW)
    h = Harvest(tmp_path / "h")
    assert not h.complete and h.n_blocks == 4 and h.firing(LAYERS[0]).shape == (4, 128)
    monkeypatch.setattr(hv, "atomic_write_bytes", real)
    assert harvest(lm, docs, tmp_path / "h", saes=saes, **KW).n_blocks == 12


def test_bad_inputs(lm, docs, saes, tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    with pytest.raises(InputError, match=r"saes\[3\].*d_model 64.*640"):
        harvest(lm, docs, tmp_path / "a", saes={3: TopKSAE(TopKSAEConfig(d_in=64, d_sae=32, k=4))}, **KW)
    with pytest.raises(InputError, match="no complete block"):
        harvest(lm, [Document("tiny text", "t", "prose", "t0")], tmp_path / "b", saes=saes, **KW)
    with pytest.raises(InputError, match="out of range"):
        harvest(lm, docs, tmp_path / "c", layers=[40], store_activations=True, **KW)
    with pytest.raises(InputError, match="shard_blocks"):
        harvest(lm, docs, tmp_path / "d", saes=saes, **{**KW, "shard_blocks": 6})
    harvest(lm, docs, tmp_path / "e", saes=saes, **{**KW, "max_blocks": 4})
    with pytest.raises(InputError, match="different harvest"):
        harvest(lm, docs, tmp_path / "e", saes=saes, **{**KW, "max_blocks": 4, "threshold": 0.0})
    with pytest.raises(InputError, match="no harvest.json"):
        Harvest(tmp_path / "nothing")
