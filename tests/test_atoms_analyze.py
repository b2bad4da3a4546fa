"""Atom scale on the real default model: word vectors, the analysis contract (typed per-layer results,
save/load round trip), resume through one checkpoint unit per layer, and the pipeline's files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud, Suite
from featuregeo.core.errors import InputError
from featuregeo.tl import atoms
from featuregeo.tl.atoms import (
    CRYSTAL_COLUMNS,
    AtomsLayer,
    AtomsParams,
    AtomsResult,
    CrystalParams,
    CrystalResult,
    MethodScore,
    TaskSummary,
    crystal_recall,
    planted_crystals,
    word_vectors,
)

TASKS = ("male-female", "comparative", "superlative")
PARAMS = AtomsParams(tasks=TASKS, max_pairs=12, max_quadruples=50,
                     crystal=CrystalParams(backend="brute", max_results=500))


def _suite(d_model: int, shift_layer: int | None = None):
    """Two layers of planted-crystal decoders (different per layer); ``shift_layer`` edits one row of it."""
    clouds, planted = {}, {}
    for L in (3, 5):
        X, quads = planted_crystals(n=400, d=d_model, n_crystals=12, seed=L)
        if L == shift_layer:
            X = X.copy()
            X[-1] += 0.5
        clouds[L], planted[L] = FeatureCloud.from_array(X, layer=L, source=f"planted-{L}"), quads
    return Suite([3, 5], lambda L: clouds[L], name="planted"), planted


def test_word_vectors_read_the_last_token(default_model):
    from featuregeo.io.models import residual_stream

    words = ["king", "queen", "Zyxqwvbtla"]
    vecs, ntok = word_vectors(default_model, words, [3, 5])
    assert vecs[3].shape == (3, default_model.d_model) and np.isfinite(vecs[3]).all()
    assert ntok[0] == 1 and ntok[2] > 1  # a multi-token word: the vector is its last token's
    ref = residual_stream(default_model, [" Zyxqwvbtla"], [5], as_numpy=True)[5]
    np.testing.assert_allclose(vecs[5][2], ref[-1], rtol=1e-4, atol=1e-2)


def test_analyze_resume_roundtrip(default_model, tmp_path):
    suite, planted = _suite(default_model.d_model)
    with Checkpoint(tmp_path / "ck") as ck:
        res = atoms.analyze(default_model, suite, PARAMS, layers=[5, 3], checkpoint=ck)
        assert ck.computed == ["layer_3", "layer_5"] and ck.reused == []
    assert isinstance(res, AtomsResult) and [r.layer for r in res.layers] == [3, 5] and res.sae == "planted"
    for rec in res.layers:
        assert isinstance(rec, AtomsLayer) and isinstance(rec.crystals, CrystalResult)
        assert rec.task_names == list(TASKS) and rec.n_pairs == 36
        assert all(isinstance(t, TaskSummary) and t.n_train + t.n_test == 12 for t in rec.tasks)
        assert {m.method for m in rec.methods} == {"raw", "lda", "pc_removed"}
        assert all(isinstance(m, MethodScore) for m in rec.methods)
        # the planted crystals of this layer's decoder are found, the Gaussian null finds far fewer
        assert crystal_recall(rec.crystals, planted[rec.layer]) >= 0.9 and rec.crystals.layer == rec.layer
        assert rec.crystal_null is not None and rec.crystal_null.n_matches < rec.crystals.n_matches / 4
    # save / load: an equal object, typed
    res.save(tmp_path / "out")
    back = AtomsResult.load(tmp_path / "out")
    assert back.to_dict() == res.to_dict() and back.params == PARAMS
    assert isinstance(back.layers[1].crystals.quadruples.a, np.ndarray) and isinstance(back.layers[0].methods[0], MethodScore)
    # resume: both layers reused, identical to the computed result
    with Checkpoint(tmp_path / "ck") as ck:
        again = atoms.analyze(default_model, suite, PARAMS, layers=[3, 5], checkpoint=ck)
        assert ck.reused == ["layer_3", "layer_5"] and ck.computed == []
    assert again.to_dict() == res.to_dict()
    # a changed source (one decoder row of layer 5) recomputes that layer only
    edited, _ = _suite(default_model.d_model, shift_layer=5)
    with Checkpoint(tmp_path / "ck") as ck:
        atoms.analyze(default_model, edited, PARAMS, layers=[3, 5], checkpoint=ck)
        assert ck.reused == ["layer_3"] and ck.computed == ["layer_5"]
    # a changed parameter recomputes
    with Checkpoint(tmp_path / "ck") as ck:
        other = atoms.analyze(default_model, edited, PARAMS.replace(seed=1, crystal_null=False), layers=[3],
                              checkpoint=ck)
        assert ck.reused == [] and ck.computed == ["layer_3"]
    assert other.params.seed == 1 and other.layers[0].crystal_null is None


def test_analyze_bad_inputs(default_model):
    with pytest.raises(InputError, match=r"layer 40 is out of range .* 0\.\.17"):
        atoms.analyze(default_model, None, PARAMS, layers=[40])
    with pytest.raises(InputError, match="sae_space: needs an SAE suite"):
        atoms.analyze(default_model, None, PARAMS.replace(sae_space=True), layers=[3])
    with pytest.raises(InputError, match="template: expected a string containing"):
        atoms.analyze(default_model, None, PARAMS.replace(template="no placeholder"), layers=[3])
    with pytest.raises(InputError, match=r"layers: \[7\] are not in the SAE suite"):
        atoms.analyze(default_model, _suite(default_model.d_model)[0], PARAMS, layers=[7])
    cloud = FeatureCloud.from_array(np.eye(8, default_model.d_model, dtype=np.float32), layer=3)
    with pytest.raises(InputError, match="one FeatureCloud .* serves one layer"):
        atoms.analyze(default_model, cloud, PARAMS, layers=[3, 5])
    with pytest.raises(InputError, match="model: expected a LoadedModel"):
        atoms.analyze("default", None, PARAMS, layers=[3])


def test_pipeline_default_suite_files_and_resume(default_model, tmp_path):
    from featuregeo.pipeline import atoms as pipeline

    out = tmp_path / "atoms"
    params = PARAMS.replace(sae_space=True, crystal=CrystalParams(k=4, max_results=40), crystal_null=False)
    lines: list[str] = []
    res = pipeline.run(default_model, [3], out, params, sae="default", progress=lines.append)
    rec = res.layer(3)
    assert rec.sae_space is not None and rec.sae_space.space == "sae" and rec.sae_space.best("raw") is not None
    with open(out / "crystals.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CRYSTAL_COLUMNS) and len(rows) == len(rec.crystals) == 40
    assert [int(r["a"]) for r in rows] == rec.crystals.quadruples.a.tolist() and {r["layer"] for r in rows} == {"3"}
    for name in ("atoms_differences", "atoms_scores", "atoms_crystals", "atoms_sae_differences", "atoms_sae_scores"):
        assert (out / "layer_3" / f"{name}.png").stat().st_size > 1000
    assert AtomsResult.load(out).to_dict() == res.to_dict()
    lines.clear()
    again = pipeline.run(default_model, [3], out, params, sae="default", plots=False, progress=lines.append)
    assert any("reused finished layers ['layer_3']" in x for x in lines) and again.to_dict() == res.to_dict()
    # no SAE: no crystals, a header-only crystals.csv
    none = pipeline.run(default_model, [3], tmp_path / "nosae", PARAMS, sae="none", plots=False, progress=None)
    assert none.layers[0].crystals is None and none.sae is None
    assert (tmp_path / "nosae" / "crystals.csv").read_text().strip() == ",".join(CRYSTAL_COLUMNS)
