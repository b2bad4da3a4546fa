"""Lens analysis on planted synthetic data (fast; no model): tuned lens, metrics, probes, files, params."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from featuregeo.core.errors import InputError  # noqa: E402
from featuregeo.io.lens_hooks import Readout, find_readout  # noqa: E402
from featuregeo.io.probe_labels import PY_CATEGORIES, python_char_categories  # noqa: E402
from featuregeo.tl import lens  # noqa: E402


@contextlib.contextmanager
def one_thread():
    """Tiny tensors run much faster on one thread on a busy machine; restore the setting after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def rms_norm(x):
    return x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


@pytest.fixture(scope="module")
def planted():
    """A synthetic 'model': final states h_L, an RMS-norm read-out, and h_l = M h_L + c (known invertible M)."""
    rng = np.random.default_rng(0)
    d, V, n = 8, 48, 3000
    W = torch.as_tensor(rng.standard_normal((V, d)) * 1.5, dtype=torch.float32)
    ro = Readout(norm=rms_norm, weight=W, softcap=20.0)
    hL = torch.as_tensor(rng.standard_normal((n, d)) * 5, dtype=torch.float32)
    Q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    M = torch.as_tensor(Q1 @ np.diag(rng.uniform(0.5, 2.0, d)) @ Q2, dtype=torch.float32)
    c = torch.as_tensor(rng.standard_normal(d) * 3, dtype=torch.float32)
    hl = hL @ M.T + c
    return ro, hL, hl


def kl_to_final(ro, hL, h):
    lp = torch.log_softmax(ro.logits(hL), -1)
    lq = torch.log_softmax(ro.logits(h), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


@pytest.mark.parametrize("subset,softcap", [(None, 20.0), ("half", 20.0), (None, None), ("half", None)])
def test_tuned_lens_inverts_a_planted_affine_map(planted, subset, softcap):
    """Full vocabulary or subset + sampled rest bucket, with or without a soft-cap: the lens finds M^-1."""
    ro, hL, hl = planted
    ro = Readout(norm=ro.norm, weight=ro.weight, softcap=softcap)
    sub = None if subset is None else np.arange(0, ro.vocab, 2)
    with one_thread():
        out = lens.train_translator(hl, hL, ro, subset=sub, n_sample=8, steps=300, batch=256, lr=8e-2, seed=0)
    A, b = torch.as_tensor(out["A"]), torch.as_tensor(out["b"])
    logit_kl = kl_to_final(ro, hL, hl)
    tuned_kl = kl_to_final(ro, hL, lens.translate(hl, A, b))
    assert logit_kl > 1.0, logit_kl  # the logit lens does not see through M
    assert tuned_kl < 0.01, tuned_kl  # the tuned lens does (evaluated on the full vocabulary)
    assert out["loss"][-10:].mean() < out["loss"][:10].mean()


def test_training_is_seeded(planted):
    ro, hL, hl = planted
    with one_thread():
        a = lens.train_translator(hl, hL, ro, steps=20, batch=64, lr=1e-2, seed=3)
        b = lens.train_translator(hl, hL, ro, steps=20, batch=64, lr=1e-2, seed=3)
    assert np.array_equal(a["A"], b["A"]) and np.array_equal(a["loss"], b["loss"])


def test_joint_training_is_per_layer_and_resumes_exactly(planted):
    """Layers trained together equal layers trained alone; a run resumed after chunk 1 equals an uninterrupted one."""
    ro, hL, hl = planted
    ro = Readout(norm=ro.norm, weight=ro.weight, bias=torch.linspace(-1, 1, ro.vocab))
    h2 = hL * 0.5 + 1.0
    chunks = [slice(0, 1500), slice(1500, 3000)]

    def source(c):
        sl = chunks[c]
        return {0: hl[sl], 1: h2[sl], "final": hL[sl]}

    kw = dict(subset=np.arange(0, ro.vocab, 2), n_sample=6, steps=12, batch=64, lr=1e-2, seed=5, dtype="float32")
    snaps = []
    with one_thread():
        both = lens.train_lenses(source, 2, [0, 1], ro, snapshot=lambda st: snaps.append(
            {k: np.array(v, copy=True) for k, v in st.items()}), **kw)
        alone = lens.train_lenses(source, 2, [1], ro, **kw)
        resumed = lens.train_lenses(source, 2, [0, 1], ro, resume=snaps[0], **kw)
    assert len(snaps) == 2 and int(snaps[0]["next_chunk"]) == 1
    for key in ("A_1", "b_1", "loss_1"):
        assert np.array_equal(both[key], alone[key])
    for key in both:
        assert np.array_equal(both[key], resumed[key]), key
    assert not np.array_equal(both["A_0"], both["A_1"])


def test_evaluate_lenses_on_planted_states(planted):
    ro, hL, hl = planted
    with one_thread():
        out = lens.train_translator(hl, hL, ro, steps=300, batch=256, lr=8e-2, seed=0)
    n = 600
    states = torch.stack([hl[:n], hL[:n]]).numpy().reshape(2, 20, 30, -1)
    # next tokens drawn from the final distribution itself
    probs = torch.softmax(ro.logits(hL[:n]), -1)
    targets = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0))[:, 0].numpy().reshape(20, 30)
    tr = {0: (torch.as_tensor(out["A"]), torch.as_tensor(out["b"]))}
    ev = lens.evaluate_lenses(states, 1, targets, ro, tr, chunk=64, block=20, dtype="float32", subset=np.arange(10))
    lo, tu = ev["logit"].reshape(2, -1, 4).mean(1), ev["tuned"].reshape(2, -1, 4).mean(1)
    assert np.allclose(lo[1], tu[1]) and abs(lo[1, 1]) < 1e-5 and lo[1, 3] == 1.0  # final layer: KL 0, top-1 1
    assert tu[0, 1] < 0.01 < lo[0, 1]
    assert tu[0, 3] > 0.95 > lo[0, 3]
    assert tu[0, 0] < lo[0, 0]  # cross-entropy follows KL
    # the fused metrics equal the textbook formulas
    lq = torch.log_softmax(ro.logits(torch.as_tensor(states[0, 0])), -1)
    lp = torch.log_softmax(ro.logits(torch.as_tensor(states[1, 0])), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1).numpy()
    ent = -(lq.exp() * lq).sum(-1).numpy()
    ce = -lq.gather(1, torch.as_tensor(targets[0])[:, None])[:, 0].numpy()
    assert np.allclose(ev["logit"][0, 0, :, 1], kl, atol=1e-4)
    assert np.allclose(ev["logit"][0, 0, :, 2], ent, atol=1e-4)
    assert np.allclose(ev["logit"][0, 0, :, 0], ce, atol=1e-4)
    top1 = (lq.argmax(-1) == lp.argmax(-1)).numpy()
    assert np.array_equal(ev["logit"][0, 0, :, 3], top1)
    assert np.all((ev["subset_mass"] >= 0) & (ev["subset_mass"] <= 1 + 1e-6))
    # bfloat16 lens matmuls (the default): same means to ~1e-2 nats; the final layer stays exact
    ev16 = lens.evaluate_lenses(states, 1, targets, ro, tr, chunk=64, block=20)
    for name in ("logit", "tuned"):
        assert np.allclose(ev16[name].reshape(2, -1, 4).mean(1)[:, :3], ev[name].reshape(2, -1, 4).mean(1)[:, :3],
                           atol=2e-2, rtol=2e-3)
    assert np.array_equal(ev16["logit"][1], ev["logit"][1])


def test_block_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, size=(40, 16)) + rng.normal(0, 1, size=(40, 1))
    a = lens.block_bootstrap(x, n_boot=500, seed=1)
    assert a == lens.block_bootstrap(x, n_boot=500, seed=1)
    assert a[1] < a[0] < a[2] and a[1] < 2.0 < a[2]
    assert lens.block_bootstrap(np.ones((5, 3)), n_boot=50, seed=0) == (1.0, 1.0, 1.0)


def test_planted_linear_feature_probe_and_control():
    rng = np.random.default_rng(0)
    n, d = 1200, 16
    y = rng.integers(0, 2, n)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    X = rng.standard_normal((n, d)) + 4.0 * np.outer(2 * y - 1, u)
    X[:, 3] *= 100.0  # a massive dimension does not matter
    types = rng.integers(0, 300, n)  # token types carry no information in X
    real = lens.fit_probe(X[:800], y[:800], X[800:], y[800:])
    assert real.accuracy > 0.97
    cy = lens.control_labels(types, y, seed=0)
    assert all(len(set(cy[types == t])) == 1 for t in np.unique(types)[:50])  # one label per type
    ctl = lens.fit_probe(X[:800], cy[:800], X[800:], cy[800:])
    assert abs(ctl.accuracy - 0.5) < 0.1
    assert real.accuracy - ctl.accuracy > 0.35
    # mean-ablating the probe directions makes the probe's logit constant (it reads nothing else)
    U = lens.probe_directions(real.weights)
    assert U.shape == (1, d) and np.isclose(np.linalg.norm(U[0]), 1.0)
    mu = (X @ U.T).mean(0)
    Xa = X - (X @ U.T - mu) @ U
    logit = Xa @ real.weights.T
    assert np.ptp(logit) < 1e-6 * np.ptp(X @ real.weights.T)
    R = lens.random_directions(3, d, seed=0, scale=X.std(0))
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-8)


def test_python_token_categories():
    src = "def f(x):\n    return x + 1  # add\ns = 'hi'\n"
    cats = python_char_categories(src)
    name = {c: i for i, c in enumerate(PY_CATEGORIES)}
    assert cats[src.index("def")] == name["keyword"]
    assert cats[src.index("f(")] == name["name"]
    assert cats[src.index("+")] == name["op"]
    assert cats[src.index("1")] == name["number"]
    assert cats[src.index("# add")] == name["comment"]
    assert cats[src.index("'hi'")] == name["string"]
    assert cats[src.index("    return")] == name["space"]
    broken = python_char_categories("x = (1,\n")
    assert broken[0] == name["name"] and (broken == -1).any()


def test_tuned_lens_files_round_trip_and_model_check(tmp_path):
    ident = {"model": "tiny", "n_layers": 3, "d_model": 4, "vocab": 10}
    tl = lens.TunedLens(identity=ident, weights={0: np.eye(4, dtype=np.float32), 1: np.zeros((4, 4), np.float32)},
                        biases={0: np.ones(4, np.float32), 1: np.zeros(4, np.float32)}, subset=np.arange(5),
                        config={"steps": 3})
    tl.save(tmp_path / "l")
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["config.json", "params.safetensors"]
    back = lens.TunedLens.load(tmp_path / "l", ident)
    assert back.layers == [0, 1] and np.array_equal(back.weights[0], tl.weights[0])
    assert np.array_equal(back.subset, np.arange(5)) and back.config == {"steps": 3}
    with pytest.raises(InputError, match=r"trained for model 'tiny' \(d_model 4.*expected a lens for 'other'"):
        lens.TunedLens.load(tmp_path / "l", {**ident, "model": "other"})
    with pytest.raises(InputError, match="d_model 8"):
        lens.TunedLens.load(tmp_path / "l", {**ident, "d_model": 8})
    with pytest.raises(InputError, match="no config.json"):
        lens.TunedLens.load(tmp_path / "missing")
    (tmp_path / "l" / "params.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="missing or damaged"):
        lens.TunedLens.load(tmp_path / "l")


def test_int8_lens_files_are_a_quarter_and_within_half_a_step(tmp_path):
    """``weight_dtype="int8"`` (what ships): per-row scales, every entry within half a quantisation step
    of the float32 matrix, a zero row stays zero, and a file without its scales is refused."""
    ident = {"model": "tiny", "n_layers": 3, "d_model": 64, "vocab": 10}
    rng = np.random.default_rng(0)
    A = (rng.standard_normal((64, 64)) * np.geomspace(1e-3, 1.0, 64)[:, None]).astype(np.float32)  # rows of very
    A[5] = 0.0                                                                                       # different sizes
    tl = lens.TunedLens(identity=ident, weights={0: A}, biases={0: rng.standard_normal(64).astype(np.float32)})
    tl.save(tmp_path / "f32")
    tl.save(tmp_path / "i8", weight_dtype="int8")
    size = lambda d: (tmp_path / d / "params.safetensors").stat().st_size  # noqa: E731
    assert size("i8") < 0.3 * size("f32")
    back = lens.TunedLens.load(tmp_path / "i8", ident)
    step = np.abs(A).max(axis=1, keepdims=True) / 127
    assert back.weights[0].dtype == np.float32 and np.all(np.abs(back.weights[0] - A) <= step / 2 + 1e-9)
    assert np.all(back.weights[0][5] == 0) and np.array_equal(back.biases[0], tl.biases[0])
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(tmp_path / "i8" / "params.safetensors"))
    del arrays["layer_0.weight_scale"]
    save_file(arrays, str(tmp_path / "i8" / "params.safetensors"))
    with pytest.raises(InputError, match="int8 without a \\[64\\] weight_scale"):
        lens.TunedLens.load(tmp_path / "i8")


def test_params_validation():
    assert lens.LensParams().validate() is not None
    lens.LensParams.fast().validate()
    for kw, msg in [({"steps": -1}, "steps: expected an integer >= 0"), ({"eval_dtype": "half"}, "eval_dtype"),
                    ({"layers": ()}, "layers: expected a non-empty"), ({"vocab_subset": 1}, "vocab_subset"),
                    ({"lr": 0.0}, "lr:"), ({"sentence": " "}, "sentence")]:
        with pytest.raises(InputError, match=msg):
            lens.LensParams(**kw).validate()


def test_result_round_trip(tmp_path):
    rec = lens.LensLayer(layer=2, logit=lens.LensScores(kl=lens.Interval(3.0, 2.5, 3.5)),
                         probes=[lens.ProbeScore(task="genre", accuracy=0.9, control=0.5, selectivity=0.4)],
                         causal=[lens.CausalCheck(task="genre", n_dirs=2, random_deltas=[0.1, 0.2])])
    r = lens.LensResult(model="m", n_layers=3, layers=[rec], train_loss=np.ones((1, 4), np.float32),
                        trajectory=lens.Trajectory(tokens=["a"], layers=[2], logit_top=[["b"]], tuned_top=[["c"]],
                                                   logit_prob=np.ones((1, 1)), tuned_prob=np.zeros((1, 1))))
    r.save(tmp_path)
    back = lens.LensResult.load(tmp_path)
    assert back == r
    assert back.layers[0].logit.kl.low == 2.5 and back.trajectory.tuned_top == [["c"]]
    rows = r.rows()
    assert [x["lens"] for x in rows] == ["logit", "tuned"] and rows[0]["kl_high"] == 3.5
    assert r.probe_rows()[0]["selectivity"] == 0.4


class _NoNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
        self.head = torch.nn.Linear(4, 10, bias=False)

    def get_output_embeddings(self):
        return self.head


def test_model_without_final_norm_is_refused():
    from featuregeo.io.models import LoadedModel

    lm = LoadedModel(model=_NoNorm(), tokenizer=None, name="nonorm", n_layers=1, d_model=4, device="cpu",
                     dtype="float32")
    with pytest.raises(InputError, match="cannot find its final norm.*silently wrong"):
        find_readout(lm)
    lm.model.model.norm = torch.nn.LayerNorm(4)
    lm.model.head = torch.nn.Linear(4, 10)
    lm.model.head.weight = torch.nn.Parameter(torch.zeros(10, 3))
    with pytest.raises(InputError, match="cannot find its unembedding"):
        find_readout(lm)


def test_empty_corpus_is_refused():
    from featuregeo.io.corpus import Corpus

    with pytest.raises(InputError, match="corpus: empty; expected at least one document"):
        lens.lens_data(None, Corpus([]), lens.LensParams())
