"""The command line: fast help, galaxy end to end on real sae-lens folders, one-line errors, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.stats import ortho_group

from featuregeo.cli import main

FEATUREGEO = [sys.executable, "-m", "featuregeo"]


def test_help_is_fast_and_imports_nothing_heavy():
    t0 = time.monotonic()
    out = subprocess.run(FEATUREGEO + ["--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "galaxy" in out.stdout
    assert time.monotonic() - t0 < 1.0
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


def test_galaxy_end_to_end_on_saelens_folders(suite_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["galaxy", str(suite_dir), "--out", str(out), "--fit-ranks", "3,40", "--entropy-subsample", "600",
               "--entropy-pca", "20", "--entropy-repeats", "2"])
    assert rc == 0
    recs = json.loads((out / "galaxy.json").read_text())
    assert [r["layer"] for r in recs] == [1, 3]
    # planted exponents recovered from decoders written and read back by sae-lens
    assert abs(recs[0]["slope"] + 0.4) < 0.1 and abs(recs[1]["slope"] + 0.9) < 0.1
    assert recs[0]["n_excluded"] == 1 and recs[0]["n_features"] == 1023
    assert recs[0]["fit_ranks"] == [3, 40] and recs[0]["provenance"]["hook_name"] == "blocks.1.hook_resid_post"
    for name in ("galaxy.csv", "spectra.npz", "galaxy_spectra.png", "galaxy_slopes.png", "galaxy_entropy.png"):
        assert (out / name).stat().st_size > 0
    table = capsys.readouterr().out
    assert "paper" in table and "slope" in table
    # rerun resumes from the saved layers
    rc = main(["galaxy", str(suite_dir), "--out", str(out), "--fit-ranks", "3,40", "--entropy-subsample", "600",
               "--entropy-pca", "20", "--entropy-repeats", "2"])
    assert rc == 0 and "reused" in capsys.readouterr().err
    assert json.loads((out / "galaxy.json").read_text()) == recs


def test_galaxy_with_activations_spectrum(suite_dir, tmp_path):
    acts = tmp_path / "acts.npz"
    rng = np.random.default_rng(0)
    np.savez(acts, layer_1=rng.standard_normal((2000, 64)).astype(np.float32))
    out = tmp_path / "o"
    assert main(["galaxy", str(suite_dir), "--out", str(out), "--layers", "1", "--no-entropy",
                 "--fit-ranks", "3,40", "--activations", str(acts)]) == 0
    rec = json.loads((out / "galaxy.json").read_text())[0]
    assert rec["activation_slope"] is not None and abs(rec["activation_slope"]) < 0.2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["galaxy", "/nonexistent/sae.safetensors", "--out", "{tmp}"], "/nonexistent/sae.safetensors"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--layers", "7"], "layer"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--layers", "x-y"], "--layers"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--fit-ranks", "200,900"], "fit_ranks"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--entropy-repeats", "0"], "--entropy-repeats"),
        (["galaxy", "{suite}", "--out", "{tmp}", "--activations", "{tmp}/nope.npz"], "--activations"),
        (["galaxy", "{garbage}", "--out", "{tmp}"], "garbage.safetensors"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, match, suite_dir, tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all")
    argv = [a.format(tmp=tmp_path / "o", suite=suite_dir, garbage=garbage) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("featuregeo galaxy: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert match in errors[0], err


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
