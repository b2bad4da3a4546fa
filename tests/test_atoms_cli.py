"""`featuregeo atoms` refuses bad input with exit 2 and one line naming the option or file, before any
model is loaded (the loader is replaced by one that fails the test)."""

from __future__ import annotations

import re

import pytest

from featuregeo.cli import main


@pytest.fixture
def no_model(monkeypatch):
    from featuregeo.io import models

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the options were validated")

    monkeypatch.setattr(models, "load_model", refuse)


@pytest.fixture
def files(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("input,output\ncaf\xe9,caf\xe9s\nna\xefve,na\xefves\n".encode("latin-1"))
    (tmp_path / "afile").write_text("x")
    return tmp_path


CASES = [
    (["--layer", "3", "--max-pairs", "-1"], r"max_pairs: expected an integer >= 3 or None. Got -1 instead"),
    (["--layer", "3", "--max-pairs", "0"], r"max_pairs: expected an integer >= 3 or None. Got 0 instead"),
    (["--layer", "3", "--test-fraction", "1.5"], r"test_fraction: expected a finite number > 0.0 and < 1.0. Got 1.5"),
    (["--layer", "3", "--crystal-min-cosine", "0"], r"crystal min_cosine: expected a finite number > 0.0 and <= 1.0"),
    (["--layer", "3", "--crystal-min-cosine", "nan"], r"crystal min_cosine: expected a finite number"),
    (["--layer", "3", "--crystal-remove-pcs", "-2"], r"crystal remove_pcs: expected an integer >= 0. Got -2"),
    (["--layer", "3", "--crystal-k", "0"], r"crystal k: expected an integer >= 1. Got 0"),
    (["--layer", "3", "--crystal-max-results", "-5"], r"crystal max_results: expected an integer >= 1. Got -5"),
    (["--layer", "3", "--seed", "-3"], r"seed: expected an integer >= 0. Got -3"),
    (["--layer", "-1"], r"--layers: layers must be non-negative integers. Got -1 instead"),
    (["--layers", "3,x"], r"--layers: expected a list like"),
    (["--layer", "40"], r"layer\(s\) \[40\] not in default"),
    (["--layer", "3", "--template", "no placeholder"], r"template: expected a string containing '\{word\}'"),
    (["--layer", "3", "--template", "{word} {other}"], r"template: expected a string containing '\{word\}'"),
    (["--layer", "3", "--tasks", "colour"], r"tasks: unknown task\(s\) \['colour'\]; valid names are"),
    (["--layer", "3", "--tasks", ""], r"tasks: no tasks selected"),
    (["--layer", "3", "--pairs", "{d}/latin1.csv"], r"--pairs .*latin1.csv: not UTF-8 text \(byte 0xe9"),
    (["--layer", "3", "--pairs", "{d}/missing.csv"], r"--pairs .*missing.csv: no such file"),
    (["--layer", "3", "--sae", "none", "--sae-space"], r"--sae-space: needs an SAE source"),
    (["--layer", "3", "--sae", "{d}/no-such-sae.npy"], r"no-such-sae"),
    (["--layer", "3", "--out", "{d}/afile/sub"], r"expected a directory; .*afile is a file"),
    (["--out", "{d}/o"], r"--layer/--layers: expected exactly one"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_options_exit_2_before_the_model_loads(argv, message, files, no_model, capsys):
    argv = [a.replace("{d}", str(files)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(files / "out")]
    assert main(["atoms", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featuregeo atoms: error: "), err
    assert re.search(message, err[0]), err[0]
