"""Residual taps: the harvest's own forward pass delivers the same activations as a separate pass."""

from __future__ import annotations

import numpy as np
import pytest

from featuregeo.core.errors import InputError

PARAMS = dict(block_len=32, batch_size=4, shard_blocks=4, max_blocks=12, max_blocks_per_doc=4)


def _blocks(model, docs):
    from featuregeo.io.corpus import blocks

    return list(blocks(docs, model.tokenizer, PARAMS["block_len"], add_bos=True, max_blocks=PARAMS["max_blocks"],
                       max_blocks_per_doc=PARAMS["max_blocks_per_doc"]))


def _close(a, b):
    """Equal to 1e-5 of the activations' scale (the residual stream reaches hundreds on massive dims)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_harvest_tap_equals_separate_residual_stream(default_model, harvest_docs, harvest_saes, tmp_path):
    """Rows spread over three shards (one a partial batch), a layer the harvest does not read (1), the
    block-0 input, a cut prefix: all equal what residual_stream / read_representations give."""
    from featuregeo.io.harvest import HarvestParams, harvest
    from featuregeo.io.hooks import read_representations
    from featuregeo.io.models import residual_stream
    from featuregeo.io.taps import ResidualTap

    bl = _blocks(default_model, harvest_docs)
    want = [1, 4, 6, 11]
    full = ResidualTap({i: bl[i].input_ids for i in want}, [1, 2, 7])
    cut = ResidualTap({i: bl[i].input_ids[:17] for i in want}, range(default_model.n_layers), embeddings=True)
    h = harvest(default_model, harvest_docs, tmp_path / "h", HarvestParams(**PARAMS), saes=harvest_saes,
                taps=[full, cut])
    assert h.n_blocks == 12 and full.missing() == [] and cut.missing() == []
    rows = np.stack([bl[i].input_ids for i in want])
    ref = residual_stream(default_model, rows, [1, 2, 7], seq_len=None, add_bos=False, drop_bos=True,
                          as_numpy=True, batch_size=2)
    got = full.stack()
    assert got.shape == (3, 4, 32, 640)
    for k, L in enumerate([1, 2, 7]):
        assert _close(got[k], ref[L]) < 1e-5, L
        assert _close(full.tokens(L), ref[L].reshape(-1, 640)) < 1e-5
    reps = read_representations(default_model, rows[:, :17], batch_size=3)  # [n_layers + 1, 4, 16, 640]
    got = cut.stack()
    assert got.shape == reps.shape
    assert max(_close(got[r], reps[r]) for r in range(reps.shape[0])) < 1e-5
    # a tap is a side output: the firing is the same as without it
    plain = harvest(default_model, harvest_docs, tmp_path / "plain", HarvestParams(**PARAMS), saes=harvest_saes)
    assert all((plain.firing(L) != h.firing(L)).nnz == 0 for L in harvest_saes)


def test_resumed_harvest_leaves_rows_to_fill(default_model, harvest_docs, harvest_saes, tmp_path):
    """Finished shards are not read again: their rows are missing until fill() reads them, with the same values."""
    from featuregeo.io.harvest import HarvestParams, harvest
    from featuregeo.io.taps import ResidualTap

    bl = _blocks(default_model, harvest_docs)
    rows = {i: bl[i].input_ids for i in (0, 5, 9)}
    first = ResidualTap(rows, [3])
    harvest(default_model, harvest_docs, tmp_path / "h", HarvestParams(**PARAMS), saes=harvest_saes,
            stop_after_shards=1, taps=[first])
    assert first.missing() == [5, 9]
    again = ResidualTap(rows, [3])
    harvest(default_model, harvest_docs, tmp_path / "h", HarvestParams(**PARAMS), saes=harvest_saes, taps=[again])
    assert again.missing() == [0]  # shard 0 was finished: not read again
    assert again.fill(default_model) == 1 and again.missing() == []
    first.fill(default_model)
    assert _close(again.stack(), first.stack()) < 1e-5


def test_tap_refuses_misaligned_rows_and_bad_lengths(default_model, harvest_docs):
    from featuregeo.io.models import iter_residual_stream
    from featuregeo.io.taps import ResidualTap

    bl = _blocks(default_model, harvest_docs)
    tap = ResidualTap({0: bl[1].input_ids}, [2])  # row 0 of the pass is block 0, not block 1
    batch = next(iter_residual_stream(default_model, [bl[0].input_ids], [2], seq_len=None, add_bos=False))
    with pytest.raises(InputError, match=r"tap: row 0 of the forward pass has other tokens"):
        tap.take(batch, 0)
    with pytest.raises(InputError, match=r"length: expected 1\.\.32 tokens"):
        ResidualTap({0: bl[0].input_ids}, [2], length=40)
    with pytest.raises(InputError, match=r"rows .* were never read; expected fill"):
        ResidualTap({0: bl[0].input_ids}, [2]).stack()
