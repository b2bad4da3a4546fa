"""Layer-update geometry on the real model: the hooks (sub-layer updates add up, resuming a forward pass
reproduces the clean output), a small pipeline run (files, figures, resume), the MLP-only control at the
fit floor (slow), and bad input through the CLI: one line, exit 2, model never loaded, nothing written."""

from __future__ import annotations

import re

import numpy as np
import pytest

from featuregeo.core.errors import InputError


@pytest.fixture(scope="module")
def tiny_rows(default_model):
    rng = np.random.default_rng(0)
    body = rng.integers(1000, 30000, (3, 12))
    return np.concatenate([np.full((3, 1), default_model.bos_token_id), body], 1)


def test_sublayer_updates_add_up_and_resume_is_exact(default_model, tiny_rows):
    from featuregeo.io.update_hooks import final_logprobs, read_updates
    from featuregeo.tl.updates import kl_divergence

    a = read_updates(default_model, tiny_rows, batch_size=2)
    n = default_model.n_layers
    assert a.resid.shape == (n + 1, 3, 13, default_model.d_model) and a.attn.shape == (n, 3, 13, default_model.d_model)
    for L in range(n):
        D = a.resid[L + 1] - a.resid[L]
        assert np.linalg.norm(D - a.attn[L] - a.mlp[L]) < 1e-5 * np.linalg.norm(a.resid[L + 1])
    clean = final_logprobs(default_model, tiny_rows[:, :9])
    for start in (0, 7, n):
        lp = final_logprobs(default_model, tiny_rows[:, :9], start_block=start, hidden=a.resid[start][:, :9])
        assert kl_divergence(clean, lp).max() < 1e-5
    # a changed position changes the output (the patch is not silently dropped)
    h = a.resid[9][:, :9].copy()
    h[:, 8] *= 0.5
    assert kl_divergence(clean, final_logprobs(default_model, tiny_rows[:, :9], start_block=9, hidden=h)).min() > 1e-4
    assert not any(getattr(b, "forward", None).__name__ == "identity" for b in default_model.model.model.layers)


@pytest.fixture(scope="module")
def small_run(default_model, tmp_path_factory):
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.pipeline import updates as pipeline
    from featuregeo.tl.updates import UpdatesParams

    # the last transition: its patched read-out runs only the final norm and the unembedding (fast)
    params = UpdatesParams(layers=(16,), n_rows=6, seq_len=16, k=8, rank=2, k_grid=(4, 8), rank_grid=(1, 2),
                           kl_positions=1, n_boot=50)
    corpus = builtin_corpus(sources=["python-stdlib"])
    out = tmp_path_factory.mktemp("upd") / "out"
    logs: list[str] = []
    res = pipeline.run(default_model, out, params, corpus=corpus, progress=logs.append)
    return out, res, params, corpus, logs


def test_pipeline_writes_result_figures_and_resumes(small_run, default_model):
    from featuregeo.core.checkpoint import Checkpoint
    from featuregeo.pl.updates import figure_names
    from featuregeo.tl import updates as tl

    out, res, params, corpus, logs = small_run
    assert [r.layer for r in res.layers] == [16] and res.layers[0].block == 17
    rec = res.layer(16)
    assert [f.cls for f in rec.fits] == ["diag", "lowrank", "global"]
    assert {(f.target, f.neighbours) for f in rec.controls} == {("attn", "knn"), ("mlp", "knn"), ("update", "shuffled")}
    assert len(rec.sensitivity) == 2 + 2 + 2 and [f.cls for f in rec.function] == ["diag", "lowrank"]
    fn = rec.func("lowrank")
    assert fn.n == 6 and fn.kl.shape == (6,) and (fn.kl >= 0).all() and np.isfinite(fn.spearman)
    for f in rec.fits:
        assert -1 <= f.cos_dt <= 1 and 0 <= f.proj_t <= 1 and f.subspace_dim >= 1
    back = tl.UpdatesResult.load(out)
    assert back.to_dict() == res.to_dict()
    for name in ["updates.json", "updates.npz", "updates.csv", *figure_names(res).values()]:
        assert (out / name).stat().st_size > 0, name
    assert set(figure_names(res).values()) == {"updates_alignment.png", "updates_spearman.png", "updates_sensitivity.png"}
    data = tl.heldout_rows(default_model.tokenizer, params, corpus=corpus)
    with Checkpoint(out / ".checkpoint") as ck:
        again = tl.analyze(default_model, params, heldout=data, checkpoint=ck)
        assert not ck.computed and set(ck.reused) == {"layer_16"}
    assert again.to_dict() | {"seconds": 0} == res.to_dict() | {"seconds": 0}
    with Checkpoint(out / ".checkpoint") as ck:  # another k is another unit
        tl.analyze(default_model, params.replace(k=6, kl_classes=()), heldout=data, checkpoint=ck)
        assert ck.computed == ["layer_16"]


@pytest.mark.slow  # tokenises the built-in corpus for its held-out rows (~10 s)
def test_cli_runs_and_prints_the_table(default_model, monkeypatch, tmp_path, capsys):
    import featuregeo.io.models as models
    from featuregeo.cli import main

    monkeypatch.setattr(models, "load_model", lambda *a, **k: default_model)  # the session's model
    out = tmp_path / "u"
    argv = ["updates", "--out", str(out), "--layers", "16", "--n-rows", "6", "--seq-len", "16", "--k", "8",
            "--rank", "2", "--k-grid", "8", "--rank-grid", "2", "--kl-classes", "lowrank", "--kl-positions", "1",
            "--n-boot", "20"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "16->17" in text and "spearman" in text
    assert (out / "updates.json").exists() and (out / "updates_alignment.png").exists()


@pytest.mark.slow
def test_same_inputs_same_numbers(small_run, default_model):
    from featuregeo.tl import updates as tl

    out, res, params, corpus, _ = small_run
    data = tl.heldout_rows(default_model.tokenizer, params, corpus=corpus)
    again = tl.analyze(default_model, params.replace(layers=(3, 16), kl_classes=("lowrank",)), heldout=data)
    assert again.layer(3).func("lowrank").n == 6
    a, b = again.layer(16), res.layer(16)
    assert a.fits == b.fits and a.controls == b.controls
    assert np.array_equal(a.func("lowrank").kl, b.func("lowrank").kl)


def test_model_dependent_bad_input_writes_nothing(default_model, tmp_path):
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.pipeline import updates as pipeline
    from featuregeo.tl.updates import UpdatesParams

    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"layers: transitions \[17\] are out of range .* 0\.\.16"):
        pipeline.run(default_model, out, UpdatesParams(layers=(17,)))
    with pytest.raises(InputError, match=r"n_rows: the held-out split"):
        pipeline.run(default_model, out, UpdatesParams(n_rows=5000, seq_len=8, k=4, k_grid=()),
                     corpus=builtin_corpus(sources=["python-stdlib"]))
    assert not out.exists()


@pytest.mark.slow
def test_mlp_only_control_sits_at_the_fit_floor(default_model):
    """The MLP update is a function of its own input (tokenwise by construction): fitted from that input
    with nearest neighbours it is well aligned with its tokenwise part, and clearly better than with
    shuffled neighbours; what it leaves is the neighbour-fit floor of this class, k and token budget."""
    from featuregeo.io.update_hooks import read_updates
    from featuregeo.tl import updates as tl

    params = tl.UpdatesParams(n_rows=24, seq_len=64, k=32, rank=8)
    rows = tl.heldout_rows(default_model.tokenizer, params).rows
    a = read_updates(default_model, rows)
    groups = np.repeat(np.arange(24), 64)
    for L in (5, 11):
        mid = (a.resid[L] + a.attn[L])[:, 1:].reshape(-1, default_model.d_model)   # input of block L's MLP
        M = a.mlp[L][:, 1:].reshape(-1, default_model.d_model)
        nbr = tl.knn_other_rows(tl.prepare(mid), groups, 32)
        sh = tl.shuffled_neighbours(groups, 32, np.random.default_rng(0))
        knn, shuf = (tl.geometry(M, tl.fit_lowrank(mid, M, nb, rank=8), groups) for nb in (nbr, sh))
        assert knn["cos_dt"] > 0.7 and knn["explained"] > 0.5, (L, knn)  # floor at 1,536 tokens (study, 8,192: median 0.85, min 0.74)
        assert knn["explained"] > shuf["explained"] + 0.05, (L, knn, shuf)


# ---------------------------------------------------------------------------------------------
# the CLI refuses bad input before loading the model, and writes nothing


@pytest.fixture
def no_model(monkeypatch):
    import featuregeo.io.models as models

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(models, "load_model", boom)


@pytest.mark.parametrize("args, match", [
    (["--k", "1"], r"--k: expected an integer >= 2"),
    (["--rank", "0"], r"--rank: expected an integer >= 1"),
    (["--ridge", "-1"], r"--ridge: expected a finite number > 0"),
    (["--metric", "l1"], r"--metric: expected one of cosine, euclidean"),
    (["--classes", "diag,full"], r"--classes: expected one or more of"),
    (["--primary", "global"], r"--primary: expected a local class"),
    (["--layers", "3,x"], r"--layers: expected comma-separated integers"),
    (["--layers", "-2"], r"--layers: expected"),
    (["--n-rows", "1"], r"--n-rows: expected an integer >= 4"),
    (["--seq-len", "2"], r"--seq-len: expected an integer >= 4"),
    (["--kl-positions", "-1"], r"--kl-positions: expected an integer >= 0"),
    (["--k-grid", "8,1"], r"--k-grid: expected an integer >= 2"),
    (["--n-boot", "-5"], r"--n-boot: expected an integer >= 0"),
    (["--seed", "-1"], r"--seed: expected an integer >= 0"),
    (["--fast", "--k", "1"], r"--k:"),
    (["--out", "{tmp}/afile/sub"], r"--out .*: expected a directory"),
])
def test_cli_bad_input_exit_2_one_line_nothing_written(args, match, tmp_path, capsys, no_model):
    from featuregeo.cli import main

    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    argv = ["updates", "--out", str(out)] + [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("featuregeo updates: error: ")
    assert re.search(match, err), err
    assert not out.exists()
