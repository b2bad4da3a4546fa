"""The core contract: Params validation, Result persistence, the Checkpoint, fingerprints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import numpy as np
import pytest

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud
from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, Result, check_choice, check_float, check_int
from featuregeo.core.util import file_fingerprint, fingerprint, unit_rows


@dataclass(frozen=True)
class ToyParams(Params):
    k: int = 3
    ranks: tuple[int, int] = (11, 150)
    pca: int | None = None
    alpha: float = 0.5
    method: str = "a"

    def validate(self) -> "ToyParams":
        check_int("k", self.k, minimum=1)
        check_int("pca", self.pca, minimum=1, allow_none=True)
        check_float("alpha", self.alpha, low=0, high=1, low_open=True)
        check_choice("method", self.method, ("a", "b"))
        return self


@dataclass
class ToyEstimate(Result):
    kind = "toy_estimate"
    value: float = float("nan")
    ci: list[float] = field(default_factory=list)


@dataclass
class ToyLayer(Result):
    kind = "toy_layer"
    layer: int = 0
    spectrum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    estimate: ToyEstimate | None = None


@dataclass
class ToyResult(Result):
    kind = "toy"
    params: ToyParams = field(default_factory=ToyParams)
    layers: list[ToyLayer] = field(default_factory=list)
    labels: dict[int, np.ndarray] = field(default_factory=dict)


def _toy() -> ToyResult:
    return ToyResult(
        ToyParams(k=5, pca=100),
        [ToyLayer(3, np.linspace(1, 0, 7), ToyEstimate(1.5, [1.0, 2.0])), ToyLayer(7, np.arange(3.0), None)],
        {2: np.array([0, 1, 1, 0]), 16: np.arange(4)},
    )


def test_result_save_load_round_trip_keeps_types(tmp_path):
    r = _toy()
    path = r.save(tmp_path / "out")
    assert path.name == "toy.json" and (tmp_path / "out" / "toy.npz").exists()
    back = ToyResult.load(tmp_path / "out")
    assert back.params == r.params and isinstance(back.params.ranks, tuple)
    assert isinstance(back.layers[0], ToyLayer) and isinstance(back.layers[0].estimate, ToyEstimate)
    assert back.layers[0].estimate.value == 1.5 and back.layers[1].estimate is None
    nan = ToyResult(layers=[ToyLayer(1, np.zeros(1), ToyEstimate(float("nan")))])
    nan.save(tmp_path / "nan")
    assert np.isnan(ToyResult.load(tmp_path / "nan").layers[0].estimate.value)  # NaN survives (not None)
    np.testing.assert_array_equal(back.layers[0].spectrum, r.layers[0].spectrum)
    assert set(back.labels) == {2, 16} and back.labels[16].dtype == r.labels[16].dtype
    # the JSON holds no arrays, only references to the .npz
    doc = json.loads(path.read_text())
    assert doc["layers"][0]["spectrum"] == {"__ndarray__": "layers.0.spectrum"}
    # to_dict is plain JSON (arrays as lists) and from_dict inverts it
    d = r.to_dict()
    json.dumps(d)
    again = ToyResult.from_dict(d)
    np.testing.assert_allclose(again.layers[0].spectrum, r.layers[0].spectrum)


def test_table_has_one_row_per_layer_and_csv_is_written(tmp_path):
    r = _toy()
    t = r.table()
    assert list(t["layer"]) == [3, 7]
    assert t.loc[0, "estimate.value"] == 1.5
    r.save(tmp_path)
    lines = (tmp_path / "toy.csv").read_text().splitlines()
    assert lines[0].startswith("layer") and len(lines) == 3


def test_load_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"no toy result here"):
        ToyResult.load(tmp_path)
    (tmp_path / "toy.json").write_text("{broken")
    with pytest.raises(InputError, match=r"toy.json: not a readable toy result"):
        ToyResult.load(tmp_path)
    (tmp_path / "toy.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(InputError, match=r"expected a toy result. Got 'other' instead"):
        ToyResult.load(tmp_path)
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(InputError, match="it is a file"):
        _toy().save(f)


@pytest.mark.parametrize("kw, match", [
    ({"k": 0}, r"^k: expected an integer >= 1\. Got 0 instead\.$"),
    ({"k": 2.5}, r"^k: expected an integer >= 1\. Got 2\.5 instead\.$"),
    ({"k": True}, r"^k: expected an integer"),
    ({"pca": -5}, r"^pca: expected an integer >= 1 or None\. Got -5 instead\.$"),
    ({"alpha": 0.0}, r"^alpha: expected a finite number > 0 and <= 1\. Got 0\.0 instead\.$"),
    ({"alpha": float("nan")}, r"^alpha: expected a finite number"),
    ({"method": "c"}, r"^method: expected one of a, b\. Got 'c' instead\.$"),
])
def test_params_validation_messages(kw, match):
    with pytest.raises(InputError, match=match):
        ToyParams(**kw).validate()


def test_params_dict_round_trip_tolerates_unknown_keys_and_fingerprints_differ():
    p = ToyParams(k=4, ranks=(2, 50))
    assert ToyParams.from_dict({**p.to_dict(), "future_option": 1}) == p
    assert p.fingerprint() == ToyParams(k=4, ranks=(2, 50)).fingerprint()
    assert p.fingerprint() != p.replace(k=5).fingerprint()


def test_checkpoint_reuses_matching_units_and_recomputes_stale_ones(tmp_path):
    calls = []

    def compute(layer):
        calls.append(layer)
        return ToyLayer(layer, np.full(3, float(layer)))

    with Checkpoint(tmp_path / "ck") as ck:
        a = ck.result("layer_3", "fp-A", lambda: compute(3), ToyLayer)
        b = ck.result("layer_3", "fp-A", lambda: compute(99), ToyLayer)
        assert calls == [3] and ck.reused == ["layer_3"]
        np.testing.assert_array_equal(a.spectrum, b.spectrum)
        c = ck.result("layer_3", "fp-B", lambda: compute(4), ToyLayer)  # other inputs: never the stale unit
        assert c.layer == 4 and calls == [3, 4]
        arr = ck.arrays("acts", "x", lambda: {"a": np.arange(5)})
        assert ck.arrays("acts", "x", lambda: 1 / 0)["a"].tolist() == arr["a"].tolist()
        assert ck.json("n", "x", lambda: {"v": 1}) == {"v": 1} == ck.json("n", "x", lambda: 1 / 0)
    # a fresh object over the same directory sees the units
    with Checkpoint(tmp_path / "ck") as ck2:
        assert ck2.has("layer_3", "fp-B") and not ck2.has("layer_3", "fp-A")
        # leftovers of an interrupted write are never read as a unit
        assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_checkpoint_failed_compute_leaves_old_unit_and_no_temp(tmp_path):
    with Checkpoint(tmp_path) as ck:
        ck.result("u", "1", lambda: ToyLayer(1), ToyLayer)
        with pytest.raises(ZeroDivisionError):
            ck.put("u", "2", lambda d: 1 / 0)
        assert ck.has("u", "1")
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_checkpoint_damaged_unit_is_recomputed(tmp_path):
    with Checkpoint(tmp_path) as ck:
        ck.result("u", "1", lambda: ToyLayer(1), ToyLayer)
        (tmp_path / "u" / "toy_layer.json").write_text("{")
        assert ck.result("u", "1", lambda: ToyLayer(2), ToyLayer).layer == 2


def test_checkpoint_refuses_a_second_process(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from featuregeo.core.checkpoint import Checkpoint
        from featuregeo.core.errors import InputError
        try:
            Checkpoint({str(tmp_path / 'out' / '.checkpoint')!r})
        except InputError as e:
            print(e); sys.exit(3)
    """)
    with Checkpoint(tmp_path / "out" / ".checkpoint"):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert p.returncode == 3, p.stderr
        assert "another featuregeo run (pid" in p.stdout and f"pid {os.getpid()}" in p.stdout
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr  # released


def test_checkpoint_directory_blocked_by_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="a file is in the way"):
        Checkpoint(tmp_path / "f" / ".checkpoint")


def test_unit_rows_zero_rows_stay_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=np.float32)
    u = unit_rows(x)
    np.testing.assert_allclose(u[0], [0.6, 0.8], rtol=1e-6)
    assert np.all(u[1] == 0) and np.all(np.isfinite(u))


def test_fingerprints_cover_content_identity_and_in_place_edits(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert fingerprint(a) == fingerprint(a.copy()) != fingerprint(a.astype(np.float64))
    assert fingerprint({"x": 1, "y": [1, 2]}) == fingerprint({"y": [1, 2], "x": 1})
    f = tmp_path / "w.npy"
    np.save(f, a)
    fp1 = file_fingerprint(f)
    b = a.copy()
    b[2, 3] = -1
    np.save(f, b)  # same size, edited in place
    assert file_fingerprint(f) != fp1
    c1 = FeatureCloud.from_array(a, layer=1)
    c2 = FeatureCloud.from_array(b, layer=1)
    assert c1.fingerprint() != c2.fingerprint()
    assert c1.fingerprint() == FeatureCloud.from_array(a.copy(), layer=1).fingerprint()
    assert c1.fingerprint() != FeatureCloud.from_array(a, layer=2).fingerprint()
