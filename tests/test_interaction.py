"""The interaction analysis on the contract: params, CLI errors, pipeline files, and the real model."""

from __future__ import annotations

import numpy as np
import pytest

from featuregeo.cli import main
from featuregeo.core.errors import InputError
from featuregeo.tl.interaction import InteractionParams, InteractionResult, parse_section


def test_parse_section():
    assert parse_section("5-8") == (5, 8) == parse_section([5, 6, 7, 8]) == parse_section((5, 8))
    for bad in ("8-5", "5", "5-5", "a-b", [5, 7, 9], "-1-3"):
        with pytest.raises(InputError, match="layers: expected a range"):
            parse_section(bad)


@pytest.mark.parametrize("change, match", [
    ({"n_sources": 1}, "n_sources: expected an integer >= 2"),
    ({"gram_threshold": 1.5}, "gram_threshold: expected a finite number >= 0.0 and < 1.0"),
    ({"m_threshold": -1e-3}, "m_threshold: expected a finite number"),
    ({"jacobian": "exactly"}, "jacobian: expected one of stochastic, exact"),
    ({"dtype": "float16"}, "dtype: expected one of float32, float64"),
    ({"edge_rows": 100}, "edge_rows: expected an integer >= 0 and <= 64"),
    ({"edge_rule": "simpson"}, "edge_rule: expected one of gauss, midpoint"),
    ({"edge_baseline": "median"}, "edge_baseline: expected one of mean, zero"),
    ({"edge_compile": "yes"}, "edge_compile: expected True or False"),
    ({"convergence_steps": (4, 2)}, "convergence_steps: expected increasing positive integers"),
    ({"ablation_n": "4,x"}, "ablation_n: expected increasing integers"),
])
def test_params_are_validated(change, match):
    with pytest.raises(InputError, match=match):
        InteractionParams(**change).validate()


def test_params_round_trip():
    p = InteractionParams(layers="3-5", convergence_steps="1,3", ablation_n=[2, 8])
    assert p.layers == (3, 5) and p.node_layers == [3, 4, 5]
    assert InteractionParams.from_dict(p.to_dict()) == p and p.fingerprint() == InteractionParams.from_dict(
        p.to_dict()).fingerprint()


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if anything tries to load a model."""
    import featuregeo.io.models as models

    def boom(*a, **k):
        raise AssertionError("the model must not load on bad input")

    monkeypatch.setattr(models, "load_model", boom)


@pytest.mark.parametrize("argv, match", [
    (["--layers", "8-5"], "featuregeo interaction: error: layers: expected a range of at least two consecutive"),
    (["--layers", "5-30"], "featuregeo interaction: error: layers: section 5-30 is out of range for 'default' "
                           r"\(18 blocks\)"),
    (["--gram-threshold", "2"], "featuregeo interaction: error: gram_threshold: expected a finite number"),
    (["--m-threshold", "-1"], "featuregeo interaction: error: m_threshold: expected a finite number"),
    (["--n-sources", "1"], "featuregeo interaction: error: n_sources: expected an integer >= 2"),
    (["--jacobian", "full"], "featuregeo interaction: error: jacobian: expected one of stochastic, exact"),
    (["--convergence-steps", "8,2"], "featuregeo interaction: error: convergence_steps: expected increasing"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(argv, match, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    assert main(["interaction", "--model", "default", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and __import__("re").match(match, err[0]), err
    assert not out.exists()


def test_cli_out_is_a_file(tmp_path, capsys, no_model, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    import featuregeo.pipeline.interaction as pipe

    # the check on --out comes before the (default) model would load: make loading a no-op failure
    assert main(["interaction", "--model", "default", "--out", str(f / "sub"), "--layers", "5-40"]) == 2
    assert "layers: section 5-40" in capsys.readouterr().err
    assert pipe.DEFAULT_N_LAYERS == 18


# ------------------------------------------------------------------------------------------------
# the real model (session fixture), tiny sizes
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_rows(default_model):
    from featuregeo.tl.interaction import token_rows

    return token_rows(default_model.tokenizer, 2, 12, split="train"), token_rows(default_model.tokenizer, 1, 12,
                                                                                  split="heldout")


def test_block_step_reproduces_the_residual_stream(default_model, tiny_rows):
    from featuregeo.io.interaction_hooks import block_step, section_activations

    acts, bos = section_activations(default_model, tiny_rows[0], [5, 6])
    import torch

    step = block_step(default_model, 6, bos[5], acts[5].shape[1])
    y = step(torch.as_tensor(acts[5]), None).detach().numpy()
    scale = np.abs(acts[6]).max()
    assert np.max(np.abs(y - acts[6])) < 1e-4 * scale


def test_gemma_edges_converge_from_the_mean_not_from_zero(default_model, tiny_rows):
    """Block 6 of Gemma 3 270M (RMSNorm before attention and MLP), float64, PCA bases, 1 row x 12 tokens: from
    the zero baseline the edges keep growing with the nodes (the 1/a integrand of a scale-invariant branch);
    from the mean activation they converge (Gauss-Legendre, monotone, < 1e-3 relative change at 4 nodes against 8)."""
    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.tl.interaction import convergence, pca_basis

    acts, bos = section_activations(default_model, tiny_rows[0], [5, 6])
    step = block_step(default_model, 6, bos[5], acts[5].shape[1], dtype="float64")
    b5, b6 = pca_basis(5, acts[5], 1e-9), pca_basis(6, acts[6], 1e-9)
    kw = dict(n_in=4, n_out=4, step_counts=(1, 2, 4, 8), dtype="float64")
    x = acts[5][:1]
    zero = convergence(x, step, b5, b6, baseline=None, **kw)
    mean = convergence(x, step, b5, b6, baseline=acts[5].reshape(-1, 640).mean(0, dtype=np.float64), **kw)
    assert zero.total[3] > 1.1 * zero.total[2] > 1.2 * zero.total[1] and zero.rel_change[2] > 0.1
    rc = mean.rel_change
    assert all(b <= a for a, b in zip(rc, rc[1:])) and rc[2] < 1e-3, rc


@pytest.mark.slow
def test_compiled_edges_equal_eager(default_model, tiny_rows):
    """torch.compile of the vmapped JVPs (float32, Gemma block 6) gives the eager edges, and is reused."""
    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.tl.interaction import edge_matrix, pca_basis

    acts, bos = section_activations(default_model, tiny_rows[0], [5, 6])
    step = block_step(default_model, 6, bos[5], acts[5].shape[1])
    b5, b6 = pca_basis(5, acts[5], 1e-9), pca_basis(6, acts[6], 1e-9)
    kw = dict(n_in=4, n_out=4, steps=2, baseline=acts[5].reshape(-1, 640).mean(0), batch_size=1, chunk=4,
              dtype="float32")
    eager = edge_matrix(acts[5], step, b5, b6, compiled=False, **kw)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="edges: torch.compile failed")  # no silent eager fallback
        comp = edge_matrix(acts[5], step, b5, b6, compiled=True, **kw)
    assert np.allclose(comp, eager, rtol=1e-4, atol=1e-6 * eager.max())


def test_project_residual_identity_keeps_the_loss(default_model, tiny_rows):
    from featuregeo.io.hooks import heldout_loss
    from featuregeo.io.interaction_hooks import project_residual

    d = default_model.d_model
    base = heldout_loss(default_model, tiny_rows[1]).loss
    with project_residual(default_model, 5, np.hstack([np.eye(d), np.zeros((d, 1))])):
        same = heldout_loss(default_model, tiny_rows[1]).loss
    assert abs(same - base) < 1e-4
    with pytest.raises(InputError, match=r"affine: expected shape \(640, 641\)"):
        with project_residual(default_model, 5, np.eye(d)):
            pass


def test_analyze_on_the_real_model(default_model, tmp_path):
    """The fast path: given token rows, one transition, a 3 x 3 edge set; result and basis files round-trip."""
    from featuregeo.pipeline.interaction import write_bases
    from featuregeo.tl import interaction

    rows = np.full((2, 9), 1000, dtype=np.int64)
    rows[:, 0] = default_model.bos_token_id
    rows[1, 1:] = np.arange(2000, 2008)
    params = InteractionParams(layers=(5, 6), n_rows=2, row_len=8, edge_directions=3, edge_steps=1, edge_rows=1,
                               convergence_rows=0, loss_rows=0, edge_compile=False)
    res = interaction.analyze(default_model, params, rows=rows)
    b5, b6 = res.layers[0].basis, res.layers[1].basis
    assert b5.method == "interaction" and b6.method == "pca" and 0 < b5.n_kept <= b5.n_gram <= 16
    assert np.isfinite(res.layers[0].m_rel_se) and res.edges[0].edges.shape == (3, 3)
    assert res.edges[0].convergence is None and res.layers[0].ablation is None
    res.save(tmp_path)
    write_bases(res, tmp_path)
    assert interaction.InteractionResult.load(tmp_path).to_dict() == res.to_dict()
    with np.load(tmp_path / "basis_L5.npz", allow_pickle=False) as z:
        assert z["C"].dtype == np.float64 and np.allclose(z["C"].T @ z["P"], np.eye(b5.n_kept), atol=1e-6)


@pytest.mark.slow
def test_pipeline_on_the_real_model(default_model, tmp_path):
    """Bases, edges, files, figures and resuming on a tiny section (no loss curve, no SAE: see below)."""
    from featuregeo.pipeline import interaction as pipe
    from featuregeo.pl.interaction import FIGURES

    params = InteractionParams(layers=(5, 6), n_rows=2, row_len=12, edge_directions=4, edge_steps=2, edge_rows=1,
                               convergence_steps=(1, 2), convergence_rows=1, loss_rows=0, edge_compile=False)
    res = pipe.run(default_model, "5-6", tmp_path, params, sae="none", progress=None)
    assert [r.layer for r in res.layers] == [5, 6] and res.n_tokens == 24
    assert res.layers[-1].basis.method == "pca" and res.layers[0].basis.method == "interaction"
    for r in res.layers:
        assert 0 < r.n_interaction <= r.n_gram == r.n_pca <= 25
        with np.load(tmp_path / f"basis_L{r.layer}.npz", allow_pickle=False) as z:
            C, P = z["C"], z["P"]
            assert C.dtype == np.float64 and C.shape == (641, r.n_interaction)
            assert np.allclose(C.T @ P, np.eye(r.n_interaction), atol=1e-6)
    assert np.isfinite(res.layers[0].m_rel_se) and res.layers[0].m_rel_se > 0
    assert len(res.edges) == len(res.pca_edges) == 1 and res.edges[0].edges.shape == (4, 4)
    assert res.edges[0].convergence.steps == [1, 2] and res.edges[0].convergence.rel_change[-1] == 0
    assert res.layers[0].ablation is None and res.layers[0].sae is None
    back = InteractionResult.load(tmp_path)
    assert back.to_dict() == res.to_dict()
    for name in FIGURES.values():
        assert (tmp_path / name).stat().st_size > 1000
    again = pipe.run(default_model, "5-6", tmp_path, params, sae="none", plots=False, progress=None)
    same = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("timings", "seconds")}
    assert same(again) == same(res)  # every unit reused


@pytest.mark.slow
def test_loss_curve_and_sae_cosines_on_the_real_model(default_model, tiny_rows):
    from featuregeo.io import open_suite
    from featuregeo.io.hooks import heldout_loss
    from featuregeo.tl import interaction

    rows = tiny_rows[0]
    params = InteractionParams(layers=(5, 6), n_rows=2, row_len=12, edge_rows=0, loss_rows=2, loss_row_len=12,
                               ablation_n=(2, 1000), sae_directions=8)
    # the loss rows are the basis rows: keeping every direction must keep the activations, hence the loss
    res = interaction.analyze(default_model, params, suite=open_suite("default", [5, 6]), rows=rows, loss_rows=rows)
    a = res.layers[0].ablation
    b = res.layers[0]
    assert a.n == [2, b.n_interaction] and all(x > a.baseline + 0.5 for x in a.loss_interaction[:1] + a.loss_pca[:1])
    assert a.loss_pca[-1] == pytest.approx(a.baseline, abs=1e-3)
    if b.n_interaction == b.n_gram:
        assert a.loss_interaction[-1] == pytest.approx(a.baseline, abs=1e-3)
    assert heldout_loss(default_model, rows).loss == pytest.approx(a.baseline, abs=1e-6)  # hooks removed
    for r in res.layers:
        assert r.sae is not None and r.sae.median_random < 0.5 and len(r.sae.interaction) == 8


@pytest.mark.slow
def test_stochastic_m_prime_matches_exact_on_gemma(default_model):
    """A tiny Gemma case: the mean of many +-1 sources approaches the exact M' within its reported error."""
    import torch

    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.tl.interaction import token_rows
    from featuregeo.tl.interaction.basis import extended_step, m_prime, pca_basis

    rows = token_rows(default_model.tokenizer, 1, 4, split="train")
    acts, bos = section_activations(default_model, rows, [5, 6])
    nxt = pca_basis(6, acts[6], 1e-9)
    g = extended_step(block_step(default_model, 6, bos[5], 4, dtype="float64"), nxt.C, torch.float64)
    exact, _, _ = m_prime(acts[5], g, mode="exact", dtype="float64")
    est, se, _ = m_prime(acts[5], g, mode="stochastic", n_sources=256, dtype="float64", seed=1)
    err = np.linalg.norm(est - exact) / np.linalg.norm(exact)
    assert err < 4 * se and se < 0.2
