"""Torch hooks on the real model (featuregeo.io.hooks): every representation, skipped blocks, held-out
loss equal to transformers' own, and the model restored afterwards (also on error)."""

from __future__ import annotations

import numpy as np
import pytest

from featuregeo.core.errors import InputError


@pytest.fixture(scope="module")
def real_rows(default_model):
    from featuregeo.io.corpus import builtin_corpus

    corpus = builtin_corpus(sources=["python-stdlib"])
    _, held = corpus.split(0.1)
    tok = default_model.tokenizer
    ids = tok(held[0].text + "\n" + held[1].text, add_special_tokens=False)["input_ids"]
    body = np.asarray(ids[:64], dtype=np.int64).reshape(2, 32)
    return np.hstack([np.full((2, 1), tok.bos_token_id), body])


def _hooks(model):
    from featuregeo.io.models import decoder_layers

    return sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in decoder_layers(model))


def test_representations_match_residual_stream(default_model, real_rows):
    from featuregeo.io.hooks import read_representations
    from featuregeo.io.models import residual_stream

    reps = read_representations(default_model, real_rows)
    assert reps.shape == (default_model.n_layers + 1, 2, 32, default_model.d_model)
    ref = residual_stream(default_model, real_rows, [0, 9, 17], add_bos=False, drop_bos=True, as_numpy=True)
    for L in (0, 9, 17):
        np.testing.assert_allclose(reps[L + 1], ref[L], rtol=1e-5, atol=1e-3)
    assert _hooks(default_model.model) == 0
    with pytest.raises(InputError, match="rows"):
        read_representations(default_model, real_rows[:, :1])


def test_pruning_loss_real_model_and_restoration(default_model, real_rows):
    import torch

    from featuregeo.io.hooks import HeldoutLoss, heldout_loss, skip_blocks

    base = heldout_loss(default_model, real_rows, chunk=24)  # chunks that do not divide the positions
    assert isinstance(base, HeldoutLoss) and base.dropped == []
    ids = torch.as_tensor(real_rows)
    with torch.inference_mode():
        ref = default_model.model(input_ids=ids, labels=ids, use_cache=False).loss
    assert base.loss == pytest.approx(float(ref), abs=1e-4)  # the unpruned loss, computed by transformers
    assert base.n_tokens == 64
    dropped = heldout_loss(default_model, real_rows, drop=[6])
    assert dropped.loss > base.loss + 0.01 and dropped.dropped == [6]
    with pytest.raises(RuntimeError, match="boom"):
        with skip_blocks(default_model, [3, 4]) as d:
            assert d == [3, 4] and _hooks(default_model.model) == 2
            raise RuntimeError("boom")
    assert _hooks(default_model.model) == 0
    again = heldout_loss(default_model, real_rows, chunk=24)
    assert again.loss == base.loss  # restored exactly
    with pytest.raises(InputError, match="out of range"):
        heldout_loss(default_model, real_rows, drop=[default_model.n_layers])
    assert _hooks(default_model.model) == 0


def test_check_hookable_refuses_other_model_kinds(default_model):
    import dataclasses

    from featuregeo.io.hooks import check_hookable

    check_hookable(default_model)
    with pytest.raises(InputError, match="expected a transformers model"):
        check_hookable(dataclasses.replace(default_model, kind="tl"))
