"""The command line: fast help, galaxy end to end on real sae-lens folders, one-line errors, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import ortho_group

from featuregeo.cli import main
from featuregeo.tl.galaxy import GalaxyResult

FEATUREGEO = [sys.executable, "-m", "featuregeo"]


def test_help_imports_nothing_heavy():
    """Help stays fast because parsing imports no heavy library (checked by modules, not by wall time)."""
    out = subprocess.run(FEATUREGEO + ["--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "galaxy" in out.stdout
    code = ("import sys, featuregeo.cli as c; c.build_parser().parse_args(['galaxy', 'x', '--out', 'y']); "
            "print(sorted(m for m in ('torch', 'sae_lens', 'transformers', 'umap', 'matplotlib', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _planted_decoder(n, d, alpha, seed):
    rng = np.random.default_rng(seed)
    q = ortho_group.rvs(d, random_state=seed)
    return ((rng.standard_normal((n, d)) * np.arange(1, d + 1) ** (-alpha / 2)) @ q.T).astype(np.float32)


@pytest.fixture
def suite_dir(make_sae_folder, tmp_path):
    """A directory of real sae-lens folders whose decoders carry planted power laws (alpha 0.4, 0.9)."""
    for layer, alpha in ((1, 0.4), (3, 0.9)):
        w = _planted_decoder(1024, 64, alpha, seed=layer)
        w[5] = 0.0  # a dead feature
        make_sae_folder(name=f"saes/layer_{layer}", d_in=64, d_sae=1024, layer=layer, w_dec=w)
    return tmp_path / "saes"


FAST = ["--fit-ranks", "3,40", "--entropy-subsample", "600", "--entropy-pca", "20", "--entropy-repeats", "2"]


def test_galaxy_end_to_end_on_saelens_folders(suite_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["galaxy", str(suite_dir), "--out", str(out), *FAST]) == 0
    res = GalaxyResult.load(out)
    assert [r.layer for r in res.layers] == [1, 3]
    # planted exponents recovered from decoders written and read back by sae-lens
    assert abs(res.layers[0].slope + 0.4) < 0.1 and abs(res.layers[1].slope + 0.9) < 0.1
    assert res.layers[0].n_excluded == 1 and res.layers[0].n_features == 1023
    assert res.layers[0].fit_ranks == (3, 40) and res.layers[0].provenance.hook_name == "blocks.1.hook_resid_post"
    assert res.params.entropy_pca_dim == 20 and res.layers[0].entropy.pca_dim == 20
    for name in ("galaxy.json", "galaxy.csv", "galaxy.npz", "galaxy_spectra.png", "galaxy_slopes.png",
                 "galaxy_entropy.png"):
        assert (out / name).stat().st_size > 0
    table = capsys.readouterr().out
    assert "paper" in table and "slope" in table
    # a rerun reuses every layer from the checkpoint and gives the same result
    assert main(["galaxy", str(suite_dir), "--out", str(out), *FAST]) == 0
    assert capsys.readouterr().err.count("reused") == 2
    assert GalaxyResult.load(out) == res


def test_galaxy_with_activations_spectrum(suite_dir, tmp_path):
    acts = tmp_path / "acts.npz"
    rng = np.random.default_rng(0)
    np.savez(acts, layer_1=rng.standard_normal((2000, 64)).astype(np.float32))
    out = tmp_path / "o"
    assert main(["galaxy", str(suite_dir), "--out", str(out), "--layers", "1", "--no-entropy",
                 "--fit-ranks", "3,40", "--activations", str(acts)]) == 0
    rec = GalaxyResult.load(out).layers[0]
    assert rec.activation_slope is not None and abs(rec.activation_slope) < 0.2 and rec.activation_tokens == 2000


def _errors(capsys, command="galaxy"):
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith(f"featuregeo {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["galaxy", "/nonexistent/sae.safetensors", "--out", "{tmp}"], "/nonexistent/sae.safetensors"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--layers", "7"], "layer"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--layers", "x-y"], "--layers"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--fit-ranks", "200,900"], "fit_ranks"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--activations", "{tmp}/nope.npz"], "--activations"),
        (["galaxy", "{garbage}", "--out", "{tmp}"], "garbage.safetensors"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, match, suite_dir, tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all")
    argv = [a.format(tmp=tmp_path / "o", suite=suite_dir, garbage=garbage) for a in argv]
    assert main(argv) == 2
    assert match in _errors(capsys)


def test_exit_code_2_from_the_real_command_and_debug_traceback(tmp_path):
    missing = str(tmp_path / "missing.npz")
    out = subprocess.run(FEATUREGEO + ["galaxy", missing, "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and missing in out.stderr
    out = subprocess.run(FEATUREGEO + ["--debug", "galaxy", missing, "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_info_lists_layers_without_loading(suite_dir, capsys):
    assert main(["info", str(suite_dir), "--no-load"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == [1, 3]


# ---------------------------------------------------------------------------- bare files (no sae-lens)
NPY_FAST = ["--fit-ranks", "3,30", "--entropy-subsample", "300", "--entropy-pca", "10", "--entropy-repeats", "2"]


def _npy(path, x):
    np.save(path, np.asarray(x, dtype=np.float32))
    return str(path)


def _npz_rows(path, x):
    """A decoder whose rows are the features even when there are fewer rows than dimensions
    (the decoder bias fixes d_model)."""
    x = np.asarray(x, dtype=np.float32)
    np.savez(path, W_dec=x, b_dec=np.zeros(x.shape[1], dtype=np.float32))
    return str(path)


def test_bare_decoder_file_without_layer_number_runs(tmp_path, capsys):
    """It crashed with 'expected non-negative integer' (default_rng([seed, 1, -1]))."""
    src = _npy(tmp_path / "decoder.npy", _planted_decoder(800, 48, 0.8, seed=1))
    assert main(["galaxy", src, "--out", str(tmp_path / "g"), *NPY_FAST, "--seed", "3"]) == 0
    res = GalaxyResult.load(tmp_path / "g")
    assert len(res.layers) == 1 and abs(res.layers[0].slope + 0.8) < 0.15 and res.layers[0].entropy is not None


def test_negative_seed_is_one_line_error(tmp_path, capsys):
    src = _npy(tmp_path / "decoder.npy", _planted_decoder(300, 16, 0.8, seed=1))
    assert main(["galaxy", src, "--out", str(tmp_path / "g"), "--seed", "-1"]) == 2
    assert "seed: expected an integer >= 0. Got -1 instead." in _errors(capsys)
    assert not (tmp_path / "g").exists()  # rejected before anything was written


def test_resume_never_reuses_another_source_or_an_edited_file(tmp_path, capsys):
    """`galaxy srcA.npy --out g` then `galaxy srcB.npy --out g` returned srcA's slope."""
    a = _npy(tmp_path / "srcA.npy", _planted_decoder(800, 48, 0.4, seed=1))
    b = _npy(tmp_path / "srcB.npy", _planted_decoder(800, 48, 1.2, seed=2))
    g = str(tmp_path / "g")
    args = ["--out", g, *NPY_FAST, "--no-entropy"]
    assert main(["galaxy", a, *args]) == 0
    slope_a = GalaxyResult.load(g).layers[0].slope
    assert main(["galaxy", a, *args]) == 0 and "reused" in capsys.readouterr().err
    assert main(["galaxy", b, *args]) == 0
    assert "reused" not in capsys.readouterr().err
    res_b = GalaxyResult.load(g)
    assert abs(slope_a + 0.4) < 0.15 and abs(res_b.layers[0].slope + 1.2) < 0.15 and res_b.source == b
    # srcB changed in place (same name, same size): recomputed
    _npy(tmp_path / "srcB.npy", _planted_decoder(800, 48, 0.2, seed=3))
    assert main(["galaxy", b, *args]) == 0
    assert "reused" not in capsys.readouterr().err
    assert abs(GalaxyResult.load(g).layers[0].slope + 0.2) < 0.15


def test_fit_window_is_clipped_at_the_numerical_rank_and_said(tmp_path, capsys):
    """50 rows x 640 gave slope -9.85 over 'ranks 11-150' of a rank-49 cloud."""
    src = _npz_rows(tmp_path / "small.npz", np.random.default_rng(0).standard_normal((50, 640)))
    assert main(["galaxy", src, "--out", str(tmp_path / "g"), "--entropy-repeats", "2"]) == 0
    rec = GalaxyResult.load(tmp_path / "g").layers[0]
    assert rec.numerical_rank == 49 and rec.fit_ranks == (11, 49) and "numerical rank 49" in rec.window_clipped
    assert -1.0 < rec.slope < 0 and -1.0 < rec.null_slope < 0
    out = capsys.readouterr().out
    assert "11-49!" in out and "clipped to 11..49" in out


def test_three_distinct_rows_repeated_is_refused(tmp_path, capsys):
    """3 distinct rows repeated gave slope -4.01 over round-off eigenvalues."""
    x = np.repeat(np.random.default_rng(1).standard_normal((3, 640)), 200, axis=0)
    src = _npz_rows(tmp_path / "three.npz", x)
    assert main(["galaxy", src, "--out", str(tmp_path / "g")]) == 2
    line = _errors(capsys)
    assert "fit_ranks" in line and "numerical rank 2" in line and "three.npz" in line


def test_activations_without_an_array_for_a_layer_is_an_error(tmp_path, capsys):
    d = tmp_path / "saes"
    d.mkdir()
    for layer in (1, 3):
        _npy(d / f"layer_{layer}.npy", _planted_decoder(400, 32, 0.5, seed=layer))
    acts = tmp_path / "acts.npz"
    np.savez(acts, layer_1=np.random.default_rng(0).standard_normal((500, 32)).astype(np.float32))
    assert main(["galaxy", str(d), "--out", str(tmp_path / "g"), "--no-entropy", "--activations", str(acts)]) == 2
    line = _errors(capsys)
    assert str(acts) in line and "no array for layer 3" in line
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("flags, match", [
    (["--entropy-pca", "-5"], r"entropy_pca_dim: expected an integer >= 1 or None. Got -5 instead."),
    (["--entropy-subsample", "0"], "entropy_subsample"),
    (["--entropy-repeats", "0"], "entropy_repeats"),
    (["--entropy-k", "0"], "entropy_k"),
    (["--fit-ranks", "5,6"], "fit_ranks"),
])
def test_nonsense_numbers_are_refused(flags, match, tmp_path, capsys):
    src = _npy(tmp_path / "decoder.npy", _planted_decoder(300, 16, 0.8, seed=1))
    assert main(["galaxy", src, "--out", str(tmp_path / "g"), *flags]) == 2
    assert match in _errors(capsys)


@pytest.mark.parametrize("scale", ["1e20", "1e30"])
def test_huge_values_give_the_slope_of_the_unscaled_cloud(scale, tmp_path, capsys):
    """Values of 1e20/1e30 in float32 overflowed the covariance (LinAlgError)."""
    x = _planted_decoder(800, 48, 0.8, seed=1)
    plain = _npy(tmp_path / "plain.npy", x)
    big = _npy(tmp_path / "big.npy", x.astype(np.float64) * float(scale))
    assert main(["galaxy", plain, "--out", str(tmp_path / "p"), *NPY_FAST]) == 0
    assert main(["galaxy", big, "--out", str(tmp_path / "b"), *NPY_FAST]) == 0
    p, b = GalaxyResult.load(tmp_path / "p").layers[0], GalaxyResult.load(tmp_path / "b").layers[0]
    assert b.slope == pytest.approx(p.slope, abs=1e-4) and abs(p.slope + 0.8) < 0.15
    # the entropy is z-scored: the same clustering at any scale
    assert b.entropy.excess == pytest.approx(p.entropy.excess, abs=0.05)


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_that_is_a_file_is_one_line_error(where, tmp_path, capsys):
    src = _npy(tmp_path / "decoder.npy", _planted_decoder(300, 16, 0.8, seed=1))
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    assert main(["galaxy", src, "--out", str(out), "--no-entropy", "--fit-ranks", "2,10"]) == 2
    assert "--out" in _errors(capsys) and blocker.read_text() == "x"
