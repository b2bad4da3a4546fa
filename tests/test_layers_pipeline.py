"""The layer comparison on the real model through the pipeline and the CLI: what it writes, that a
rerun reuses every checkpoint unit and gives the same result, that changed inputs recompute exactly
the units they determine, and that bad input is refused before the model loads, with nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from featuregeo.core.errors import InputError


def _suite(arrays: dict, name: str = "planted"):
    from featuregeo.core.data import FeatureCloud, Suite

    return Suite(sorted(arrays), lambda L: FeatureCloud.from_array(arrays[L], layer=L), name=name)


@pytest.fixture(scope="module")
def small(default_model):
    """Small settings, text from one corpus source, a planted 2-layer SAE suite (layer 4 = layer 3 + noise)."""
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.tl.layers import LayersParams

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, default_model.d_model)).astype(np.float32)
    arrays = {3: a, 4: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32)}
    params = LayersParams(n_blocks=3, block_len=12, loss_blocks=1, loss_block_len=12, prune_max=1, random_drops=1,
                          null_assignment=False)
    return {"params": params, "arrays": arrays, "corpus": builtin_corpus(sources=["python-stdlib"])}


@pytest.fixture(scope="module")
def first_run(default_model, small, tmp_path_factory):
    from featuregeo.pipeline import layers as pipeline

    out = tmp_path_factory.mktemp("layers") / "out"
    logs: list[str] = []
    res = pipeline.run(default_model, out, small["params"], sae=_suite(small["arrays"]), corpus=small["corpus"],
                       progress=logs.append)
    return out, res, logs


def test_pipeline_writes_result_and_figures(first_run, default_model):
    from featuregeo.pl.layers import figure_names
    from featuregeo.tl.layers import MEASURES, LayersResult

    out, res, logs = first_run
    assert set(res.matrices) == {"cosine", "cka", "cka_debiased", "uas", "ted", "ted_distance"}
    # debiased CKA: independent Gaussians of this shape score ~0, adjacent blocks of a residual stream far above
    assert abs(res.cka_debiased_baseline) < 0.1 and res.cka_baseline > 0.9  # 33 tokens x 640 dims
    deb = res.matrix("cka_debiased")
    adjacent = np.array([deb[L, L + 1] for L in range(default_model.n_layers)])  # 0.17..0.97 on 33 tokens
    assert adjacent.min() > res.cka_debiased_baseline + 0.1 and adjacent.mean() > 0.5
    R = default_model.n_layers + 1
    for m in MEASURES:
        M = res.matrix(m)
        assert M.shape == (R, R) and np.allclose(M, M.T)  # (the diagonal is set by the code: not a check)
        assert len(res.redundancy[m]) == R - 1
    # a residual stream changes slowly: every block's input and output are more alike than embed vs last
    assert all(res.matrix("cosine")[L, L + 1] > res.matrix("cosine")[0, -1] for L in range(1, R - 1))
    assert [(p.layer_a, p.layer_b) for p in res.sae.pairs] == [(3, 4)]
    assert res.sae.pairs[0].real.frac_persist[1] > 0.99 and res.sae.pairs[0].null.frac_persist[1] < 0.05
    p = res.pruning
    # far below the loss of a uniform guess over the 262,144-token vocabulary (12.5 nats)
    assert p.baseline < np.log(262144) - 4 and len(p.random) == 1 and {r.method for r in p.table} == set(MEASURES)
    assert all(r.delta == pytest.approx(r.loss - p.baseline) for r in p.table + p.random)
    assert res.data.rows.shape == (3, 13) and res.data.loss_rows.shape == (1, 13)
    loaded = LayersResult.load(out)
    assert loaded.to_dict() == res.to_dict()
    for name in ["layers.json", "layers.npz", "layers.csv", *figure_names(res).values()]:
        assert (out / name).stat().st_size > 0, name
    assert {"fig_pruning", "fig_matching", "fig_ted"} <= set(figure_names(res))
    assert not list(out.glob(".layers_cache*"))  # the old resume mechanism is gone


def test_rerun_reuses_every_unit_and_gives_the_same_result(first_run, default_model, small):
    from featuregeo.core.checkpoint import Checkpoint
    from featuregeo.tl import layers as tl

    out, res, _ = first_run
    data = tl.heldout_rows(default_model.tokenizer, small["params"], corpus=small["corpus"])
    with Checkpoint(out / ".checkpoint") as ck:
        again = tl.analyze(default_model, _suite(small["arrays"]), small["params"], heldout=data, checkpoint=ck)
        assert not ck.computed
        assert {"matrix_cosine", "matrix_cka", "matrix_uas", "matrix_ted", "sae_match_3_4", "loss_none"} <= set(ck.reused)
        assert "activations" not in ck.reused  # every matrix was stored: no activations needed at all
    assert again.to_dict() | {"seconds": 0} == res.to_dict() | {"seconds": 0}


def test_changed_inputs_recompute_what_they_determine(first_run, default_model, small):
    from featuregeo.core.checkpoint import Checkpoint
    from featuregeo.tl import layers as tl

    out, res, _ = first_run
    params = small["params"].replace(random_drops=2, measures=("cka",))
    data = tl.heldout_rows(default_model.tokenizer, params, corpus=small["corpus"])
    arrays = dict(small["arrays"])
    arrays[4] = arrays[4].copy()
    arrays[4][0] *= -1  # same shape and name, other content
    with Checkpoint(out / ".checkpoint") as ck:
        r2 = tl.analyze(default_model, _suite(arrays), params, heldout=data, checkpoint=ck)
        # a second random order adds loss evaluations; the other SAE content redoes its units only
        assert "sae_match_3_4" in ck.computed and "sae_slope_4" in ck.computed and "sae_slope_3" in ck.reused
        assert "matrix_cka" in ck.reused and "loss_none" in ck.reused
        assert all(k.startswith(("loss_", "sae_")) for k in ck.computed)
    assert len(r2.pruning.random) == 2 and r2.pruning.random[0] == res.pruning.random[0]
    assert np.array_equal(r2.matrix("cka"), res.matrix("cka"))
    # other token rows (another split seed) are other units: recomputed, never reused
    p3 = params.replace(seed=1)
    d3 = tl.heldout_rows(default_model.tokenizer, p3, corpus=small["corpus"])
    assert not np.array_equal(d3.rows, data.rows)
    with Checkpoint(out / ".checkpoint") as ck:
        tl.analyze(default_model, None, p3.replace(prune_max=0), heldout=d3, checkpoint=ck)
        assert ck.computed == ["activations", "matrix_cka"] and not ck.reused


def test_model_dependent_bad_input_writes_nothing(default_model, small, tmp_path):
    from featuregeo.pipeline import layers as pipeline
    from featuregeo.tl.layers import LayersParams

    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"prune_max: expected an integer in 0\.\.17"):
        pipeline.run(default_model, out, small["params"].replace(prune_max=18), sae=None, corpus=small["corpus"])
    with pytest.raises(InputError, match="n_blocks: the held-out split"):
        pipeline.run(default_model, out, LayersParams(n_blocks=5000, prune_max=0), sae=None, corpus=small["corpus"])
    with pytest.raises(InputError, match="at least 2 layers"):
        pipeline.run(default_model, out, small["params"], sae=_suite({3: small["arrays"][3]}))
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# the CLI refuses bad input before loading the model, and writes nothing


@pytest.fixture
def no_model(monkeypatch):
    import featuregeo.io.models as models

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(models, "load_model", boom)


@pytest.mark.parametrize("args, match", [
    (["--measures", "cosine,svcca"], r"--measures: expected one or more of"),
    (["--measures", ","], r"--measures:"),
    (["--prune-max", "-1"], r"--prune-max: expected an integer >= 0"),
    (["--random-drops", "-3"], r"--random-drops: expected an integer >= 0"),
    (["--n-blocks", "1"], r"--n-blocks: expected an integer >= 2"),
    (["--block-len", "2"], r"--block-len: expected an integer >= 4"),
    (["--loss-blocks", "0"], r"--loss-blocks:"),
    (["--loss-block-len", "0"], r"--loss-block-len:"),
    (["--seed", "-1"], r"--seed: expected an integer >= 0"),
    (["--fast", "--prune-max", "-2"], r"--prune-max:"),
    (["--galaxy", "{tmp}/missing.json"], r"--galaxy .*missing\.json: no such file"),
    (["--galaxy", "{tmp}/bad.json"], r"--galaxy .*bad\.json: not readable JSON"),
    (["--sae", "{tmp}/nothing.npy"], r"nothing\.npy"),
    (["--out", "{tmp}/afile/sub"], r"--out .*: expected a directory"),
])
def test_cli_bad_input_exit_2_one_line_nothing_written(args, match, tmp_path, capsys, no_model):
    from featuregeo.cli import main

    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    argv = ["layers", "--out", str(out)] + [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("featuregeo layers: error: ")
    import re

    assert re.search(match, err), err
    assert not out.exists()
