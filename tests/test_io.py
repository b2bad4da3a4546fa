"""featuregeo.io: one source syntax over sae-lens folders, pretrained releases, bare files and suites.

Everything here uses real files and real sae-lens objects; the Hugging Face hub is replaced by a
pre-filled cache (offline), never by mocks of the loaders.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from featuregeo.core.data import FeatureCloud, Suite
from featuregeo.core.errors import InputError
from featuregeo.io import load_cloud, open_suite, layer_from_name
from featuregeo.io import saelens as sl
from featuregeo.io import sources
from featuregeo.io.files import SafetensorsRows, open_decoder

D_IN, D_SAE = 16, 64


def save_st(path: Path, tensors: dict) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


def with_bad_rows(w: np.ndarray, nan_row: int = 5, zero_row: int = 9) -> np.ndarray:
    w = w.copy()
    w[nan_row, 3] = np.nan
    w[zero_row] = 0
    return w


def check_bad_rows(cloud: FeatureCloud, w: np.ndarray, nan_row: int = 5, zero_row: int = 9) -> None:
    assert cloud.exclusions == {"nonfinite": 1, "dead": 1}
    keep = np.setdiff1d(np.arange(w.shape[0]), [nan_row, zero_row])
    np.testing.assert_array_equal(cloud.feature_ids, keep)
    np.testing.assert_array_equal(cloud.vectors, w[keep].astype(np.float32))


# ------------------------------------------------------------------------------------------------
# import cost
# ------------------------------------------------------------------------------------------------
def test_import_is_light():
    code = ("import sys, featuregeo, featuregeo.io, featuregeo.io.files, featuregeo.io.saelens; "
            "print(sorted(m for m in ('torch', 'sae_lens', 'huggingface_hub', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, strict, layer", [
    ("layer_12/width_16k/average_l0_41", True, 12), ("layer12.npy", True, 12), ("L7.pt", True, 7),
    ("blocks.3.hook_resid_pre", True, 3), ("resid_5.safetensors", True, 5), ("layers.9", True, 9),
    ("sae_07.npy", False, 7), ("sae_07.npy", True, None), ("W_dec.npy", False, None),
])
def test_parse_layer(name, strict, layer):
    assert layer_from_name(name, strict=strict) == layer


# ------------------------------------------------------------------------------------------------
# sae-lens folders
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_saelens_folder_roundtrip(make_sae_folder, arch):
    folder, sae = make_sae_folder(name=f"my_{arch}_sae", arch=arch, layer=4)
    cloud = load_cloud(str(folder))
    np.testing.assert_array_equal(cloud.vectors, sae.W_dec.detach().numpy())
    p = cloud.provenance
    assert cloud.layer == 4  # from the hook name in cfg.json
    assert (p.model_name, p.hook_name, p.neuronpedia_id) == ("tiny-model", "blocks.4.hook_resid_post",
                                                             "tiny-model/4-res-test")
    assert (p.width, p.architecture, p.transposed, p.decoder_key) == (D_SAE, arch, False, "W_dec")
    assert open_suite(folder).layers == [4]


def test_saelens_folder_exclusions_and_weights_file(make_sae_folder, rng):
    w = with_bad_rows(rng.standard_normal((D_SAE, D_IN)).astype(np.float32))
    folder, _ = make_sae_folder(name="layer_2", w_dec=w, layer=2)
    check_bad_rows(load_cloud(folder), w)
    # the weights file alone: a bare safetensors with the sibling cfg.json informing the provenance
    cloud = load_cloud(folder / "sae_weights.safetensors")
    assert cloud.layer == 2 and cloud.provenance.hook_name == "blocks.2.hook_resid_post"
    check_bad_rows(cloud, w)


def test_saelens_folder_suite_is_lazy(make_sae_folder, tmp_path):
    for layer in (2, 7):
        make_sae_folder(name=f"suite/layer_{layer}", layer=layer)
    (tmp_path / "suite" / "manifest.json").write_text("{}")
    (tmp_path / "suite" / "layer_7" / "sae_weights.safetensors").write_bytes(b"\x00garbage" * 10)
    suite = open_suite(tmp_path / "suite")  # reads no weights: the corrupt layer is not noticed yet
    assert isinstance(suite, Suite) and suite.layers == [2, 7]
    assert suite.load(2).layer == 2
    with pytest.raises(InputError, match=r"layer_7: could not load the sae-lens folder .*expected cfg.json"):
        suite.load(7)


def test_saelens_folder_bad_cfg(make_sae_folder):
    folder, _ = make_sae_folder(name="layer_1", layer=1)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(InputError, match=r"layer_1: could not load the sae-lens folder"):
        load_cloud(folder)


# ------------------------------------------------------------------------------------------------
# the default suite
# ------------------------------------------------------------------------------------------------
def test_default_suite(make_sae_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEFAULT_SUITE_DIR", tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"^default: the shipped default SAE suite is not installed; "
                                         r"expected featuregeo/data/default_suite/"):
        open_suite("default")
    for layer in (0, 3):
        make_sae_folder(name=f"default_suite/layer_{layer}", layer=layer)
    (tmp_path / "default_suite" / "manifest.json").write_text(json.dumps({"layers": [0, 3]}))
    monkeypatch.setattr(sources, "DEFAULT_SUITE_DIR", tmp_path / "default_suite")
    assert open_suite("default").layers == [0, 3]
    assert open_suite("default:{layer}", layers=[3]).layers == [3]
    cloud = load_cloud("default:3")
    assert cloud.layer == 3 and cloud.provenance.source == "default:3"
    with pytest.raises(InputError, match=r"layer\(s\) \[5\] not in default; expected some of the available layers \[0, 3\]"):
        open_suite("default:5")
    with pytest.raises(InputError, match=r"expected default or default:LAYER"):
        open_suite("default:x")


# ------------------------------------------------------------------------------------------------
# pretrained releases through a pre-filled Hugging Face cache
# ------------------------------------------------------------------------------------------------
GPT2_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"  # gpt2-small-res-jb: sae-lens native format


def gpt2_jb_cfg(layer: int, d_in: int, d_sae: int) -> dict:
    """The keys of the real ``blocks.L.hook_resid_pre/cfg.json`` (pre-6.0 sae-lens), with tiny shapes."""
    return {
        "model_name": "gpt2-small", "hook_point": f"blocks.{layer}.hook_resid_pre", "hook_point_layer": layer,
        "hook_point_head_index": None, "dataset_path": "Skylion007/openwebtext", "is_dataset_tokenized": False,
        "context_size": 128, "use_cached_activations": False,
        "cached_activations_path": f"activations/Skylion007_openwebtext/gpt2-small/blocks.{layer}.hook_resid_pre",
        "d_in": d_in, "n_batches_in_buffer": 128, "total_training_tokens": 300000000, "store_batch_size": 32,
        "device": "mps", "seed": 42, "dtype": "torch.float32", "b_dec_init_method": "geometric_median",
        "expansion_factor": d_sae // d_in, "from_pretrained_path": None, "l1_coefficient": 8e-05, "lr": 0.0004,
        "lr_scheduler_name": None, "lr_warm_up_steps": 5000, "train_batch_size": 4096, "use_ghost_grads": False,
        "feature_sampling_window": 1000, "feature_sampling_method": None, "resample_batches": 1028,
        "feature_reinit_scale": 0.2, "dead_feature_window": 5000, "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08, "log_to_wandb": True, "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
        "wandb_entity": None, "wandb_log_frequency": 100, "n_checkpoints": 10, "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": d_sae, "tokens_per_buffer": 67108864, "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline; returns a function that caches gpt2-small-res-jb layers."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(name, str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    sl.pretrained_directory()  # parse sae-lens' directory up front so timings measure loading only
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + GPT2_REPO.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    written = {}

    def add(layer: int, d_in: int = 8, d_sae: int = 32, sparsity: bool = False) -> np.ndarray:
        folder = repo_dir / "snapshots" / commit / f"blocks.{layer}.hook_resid_pre"
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text(json.dumps(gpt2_jb_cfg(layer, d_in, d_sae)))
        r = np.random.default_rng(layer)
        w_dec = r.standard_normal((d_sae, d_in)).astype(np.float32)
        save_st(folder / "sae_weights.safetensors", {
            "W_enc": r.standard_normal((d_in, d_sae)).astype(np.float32), "W_dec": w_dec,
            "b_enc": np.zeros(d_sae, np.float32), "b_dec": np.zeros(d_in, np.float32)})
        if sparsity:
            save_st(folder / "sparsity.safetensors", {"sparsity": np.full(d_sae, -3.0, np.float32)})
        written[layer] = w_dec
        return w_dec

    add.cache = cache
    add.written = written
    return add


def test_pretrained_from_cache(hf_cache):
    w0 = hf_cache(0, sparsity=True)
    w1 = hf_cache(1)
    cloud = load_cloud("saelens:gpt2-small-res-jb:blocks.1.hook_resid_pre")
    np.testing.assert_array_equal(cloud.vectors, w1)
    p = cloud.provenance
    assert cloud.layer == 1
    assert (p.release, p.sae_id, p.model_name, p.hook_name) == (
        "gpt2-small-res-jb", "blocks.1.hook_resid_pre", "gpt2-small", "blocks.1.hook_resid_pre")
    assert (p.neuronpedia_id, p.width, p.architecture, p.l0) == ("gpt2-small/1-res-jb", 32, "standard", 10.0)
    # a {layer} template makes a suite over the matching ids of the directory
    suite = open_suite("saelens:gpt2-small-res-jb:blocks.{layer}.hook_resid_pre")
    assert suite.layers == list(range(12))
    sub = open_suite("saelens:gpt2-small-res-jb:blocks.{layer}.hook_resid_pre", layers=[0, 1])
    clouds = dict(iter(sub))
    np.testing.assert_array_equal(clouds[0].vectors, w0)
    assert clouds[1].provenance.sae_id == "blocks.1.hook_resid_pre"
    with pytest.raises(InputError, match=r"layers: layer\(s\) \[40\] not in .*available layers \[0, 1, 2"):
        open_suite("saelens:gpt2-small-res-jb:blocks.{layer}.hook_resid_pre", layers=[40])


def test_pretrained_not_cached_offline_fails_fast(hf_cache):
    hf_cache(0)
    t0 = time.monotonic()
    with pytest.raises(InputError, match=(
            r"^saelens:gpt2-small-res-jb:blocks\.5\.hook_resid_pre: the SAE is not in the Hugging Face cache .*"
            r"HF_HUB_OFFLINE is set; missing repo 'jbloom/GPT2-Small-SAEs-Reformatted' file\(s\) "
            r"\['blocks\.5\.hook_resid_pre/cfg\.json', 'blocks\.5\.hook_resid_pre/sae_weights\.safetensors'\]; "
            r"expected a cached copy: run once with internet access.*HF_HOME")):
        load_cloud("saelens:gpt2-small-res-jb:blocks.5.hook_resid_pre")
    assert time.monotonic() - t0 < 5


def test_pretrained_not_cached_fails_fast_in_a_fresh_process(tmp_path):
    # what a user sees offline: the error comes before sae-lens is even imported (its import alone
    # takes 5-15 s), so the whole process takes a few seconds
    code = (
        "import sys, time; t = time.monotonic()\n"
        "from featuregeo.io import load_cloud\n"
        "from featuregeo.core.errors import InputError\n"
        "try:\n"
        "    load_cloud('saelens:gemma-scope-2b-pt-res-canonical:layer_12/width_16k/canonical')\n"
        "except InputError as e:\n"
        "    print(time.monotonic() - t, 'sae_lens' in sys.modules, e)\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    elapsed, imported, message = out.stdout.split(" ", 2)
    assert float(elapsed) < 5 and imported == "False"
    assert "missing repo 'google/gemma-scope-2b-pt-res' file(s) ['layer_12/width_16k/average_l0_82/params.npz']" in message


def test_pretrained_not_cached_unreachable_hub_fails_fast(hf_cache, monkeypatch):
    import huggingface_hub.constants as hub_constants

    # not offline by configuration, but the endpoint refuses connections: featuregeo must notice
    # in well under a second and force offline mode instead of letting the hub retry for ~20 s
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sl, "_probe_cache", {})
    hf_cache(2)
    t0 = time.monotonic()
    cloud = load_cloud("saelens:gpt2-small-res-jb:blocks.2.hook_resid_pre")  # cached: loads offline
    np.testing.assert_array_equal(cloud.vectors, hf_cache.written[2])
    with pytest.raises(InputError, match=r"hub \(http://127\.0\.0\.1:9\) is not reachable; missing repo "
                                         r"'jbloom/GPT2-Small-SAEs-Reformatted'.*blocks\.3\.hook_resid_pre/cfg\.json"):
        load_cloud("saelens:gpt2-small-res-jb:blocks.3.hook_resid_pre")
    assert time.monotonic() - t0 < 5
    assert hub_constants.HF_HUB_OFFLINE is False  # restored after the call


def test_pretrained_unknown_release_and_id(hf_cache):
    with pytest.raises(InputError, match=r"unknown sae-lens release 'gpt2-small-res-jbb'; expected one of the "
                                         r"\d+ releases .*e\.g\. \['gpt2-small-res-jb'"):
        open_suite("saelens:gpt2-small-res-jbb:blocks.0.hook_resid_pre")
    with pytest.raises(InputError, match=r"unknown SAE id 'blocks.0.hook_resid_mid' in release 'gpt2-small-res-jb'; "
                                         r"expected one of its \d+ ids, e\.g\. \['blocks.0.hook_resid_pre'"):
        open_suite("saelens:gpt2-small-res-jb:blocks.0.hook_resid_mid")
    with pytest.raises(InputError, match=r"no SAE id of release 'gpt2-small-res-jb' matches the template"):
        open_suite("saelens:gpt2-small-res-jb:blocks.{layer}.hook_mlp_out")
    with pytest.raises(InputError, match=r"^saelens:gpt2-small-res-jb: expected saelens:RELEASE:SAE_ID"):
        open_suite("saelens:gpt2-small-res-jb")


# ------------------------------------------------------------------------------------------------
# bare files
# ------------------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def write_format(tmp_path: Path, fmt: str, w: np.ndarray) -> tuple[Path, np.ndarray]:
    """Write decoder ``w`` [n, d] in one of several layouts; return the path and the expected rows."""
    n, d = w.shape
    if fmt == "safetensors":
        return save_st(tmp_path / "sae.safetensors", {"W_dec": w, "W_enc": w.T, "b_dec": np.zeros(d, np.float32)}), w
    if fmt == "safetensors-f16":
        w16 = w.astype(np.float16)
        return save_st(tmp_path / "sae.safetensors", {"sae.W_dec": w16}), w16.astype(np.float32)
    if fmt == "safetensors-bf16":
        torch = _torch()
        from safetensors.torch import save_file

        t = torch.from_numpy(w).bfloat16()
        save_file({"decoder.weight": t.T.contiguous(), "encoder.weight": t.contiguous()}, str(tmp_path / "sae.safetensors"))
        return tmp_path / "sae.safetensors", t.float().numpy()
    if fmt == "npy":
        np.save(tmp_path / "W_dec.npy", w)
        return tmp_path / "W_dec.npy", w
    if fmt == "npy-f16":
        np.save(tmp_path / "W_dec.npy", w.astype(np.float16))
        return tmp_path / "W_dec.npy", w.astype(np.float16).astype(np.float32)
    if fmt == "npz":
        np.savez(tmp_path / "params.npz", W_dec=w, W_enc=w.T, b_enc=np.zeros(n, np.float32), threshold=np.ones(n))
        return tmp_path / "params.npz", w
    if fmt == "npz-compressed":
        np.savez_compressed(tmp_path / "params.npz", decoder=w)
        return tmp_path / "params.npz", w
    torch = _torch()
    t = torch.from_numpy(w.copy())
    if fmt == "pt-state-dict":
        torch.save({"state_dict": {"sae.W_dec": t, "sae.b_dec": torch.zeros(d)}, "cfg": {"d_in": d}, "step": 7},
                   tmp_path / "ckpt.pt")
        return tmp_path / "ckpt.pt", w
    if fmt == "pt-tensor":
        torch.save(t, tmp_path / "dec.pth")
        return tmp_path / "dec.pth", w
    if fmt == "pt-bf16-linear":
        tb = t.bfloat16()
        torch.save({"decoder.weight": tb.T.contiguous(), "decoder.bias": torch.zeros(d)}, tmp_path / "sae.pt")
        return tmp_path / "sae.pt", tb.float().numpy()
    if fmt == "pt-legacy":
        torch.save({"W_dec": t}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
        return tmp_path / "old.pt", w
    raise ValueError(fmt)


FORMATS = ["safetensors", "safetensors-f16", "safetensors-bf16", "npy", "npy-f16", "npz", "npz-compressed",
           "pt-state-dict", "pt-tensor", "pt-bf16-linear", "pt-legacy"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_formats(tmp_path, rng, fmt):
    w = with_bad_rows(rng.standard_normal((D_SAE, D_IN)).astype(np.float32))
    path, expected = write_format(tmp_path, fmt, w)
    transposed = fmt in ("safetensors-bf16", "pt-bf16-linear")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cloud = load_cloud(str(path))
    assert cloud.provenance.transposed is transposed
    assert any("using its columns as features" in str(c.message) for c in caught) is transposed
    assert cloud.layer is None and open_suite(path).layers == [0]
    assert (cloud.n_total, cloud.d_model, cloud.provenance.width) == (D_SAE, D_IN, D_SAE)
    assert cloud.provenance.stored_dtype == ("bfloat16" if "bf16" in fmt else "float16" if "f16" in fmt else "float32")
    check_bad_rows(cloud, expected)
    # a layer given for an SAE of unknown layer labels it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert load_cloud(str(path), layer=6).layer == 6


def test_orientation(tmp_path, rng):
    w = rng.standard_normal((D_SAE, D_IN)).astype(np.float32)
    np.save(tmp_path / "layer_1.npy", w.T)  # [d_model, n_features], no other evidence: longer axis = features
    with pytest.warns(UserWarning, match=r"stored as \[16, 64\] = \[d_model, n_features\] \(the longer axis"):
        cloud = load_cloud(tmp_path / "layer_1.npy")
    assert cloud.provenance.transposed and cloud.layer == 1
    np.testing.assert_array_equal(cloud.vectors, w)
    forced = load_cloud(tmp_path / "layer_1.npy", orientation="rows")
    assert forced.d_model == D_SAE and not forced.provenance.transposed
    assert load_cloud(tmp_path / "layer_1.npy", orientation="columns").d_model == D_IN
    # a narrow SAE (fewer features than dimensions): the decoder bias decides, not the longer axis
    narrow = rng.standard_normal((8, 32)).astype(np.float32)
    save_st(tmp_path / "narrow.safetensors", {"W_dec": narrow, "b_dec": np.zeros(32, np.float32)})
    cloud = load_cloud(tmp_path / "narrow.safetensors")
    assert (cloud.n_total, cloud.d_model, cloud.provenance.transposed) == (8, 32, False)
    # a config d_in that fits neither axis
    torch = _torch()
    torch.save({"W_dec": torch.zeros(8, 4), "cfg": {"d_in": 5}}, tmp_path / "cfg_mismatch.pt")
    with pytest.raises(InputError, match=r"cfg_mismatch.pt: config d_in=5 does not match decoder 'W_dec' of shape \[8, 4\]"):
        load_cloud(tmp_path / "cfg_mismatch.pt")
    with pytest.raises(InputError, match=r"^orientation: expected one of \['auto', 'rows', 'columns'\]. Got 'cols'"):
        open_suite(tmp_path / "layer_1.npy", orientation="cols")


def test_safetensors_streaming(tmp_path, rng):
    n, d = 5000, 48
    w = rng.standard_normal((n, d)).astype(np.float16)
    w[17] = 0
    path = save_st(tmp_path / "big.safetensors", {"W_dec": w})
    save_st(tmp_path / "big_t.safetensors", {"decoder.weight": w.T.copy(), "encoder.weight": w})
    for p, transposed in ((path, False), (tmp_path / "big_t.safetensors", True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cloud = load_cloud(p)
        reader = cloud._reader
        assert isinstance(reader, SafetensorsRows) and cloud.provenance.transposed is transposed
        sizes = []
        read = reader.read
        reader.read = lambda a, b: sizes.append(b - a) or read(a, b)
        ids, rows = zip(*cloud.iter_chunks(chunk_rows=333))
        assert max(sizes) == 333 and sum(sizes) == n and not cloud.is_materialised
        np.testing.assert_array_equal(np.concatenate(rows), np.delete(w, 17, axis=0).astype(np.float32))
        np.testing.assert_array_equal(np.concatenate(ids), np.delete(np.arange(n), 17))
        assert cloud.exclusions == {"nonfinite": 0, "dead": 1}
        np.testing.assert_array_equal(cloud.vectors, np.delete(w, 17, axis=0).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# suites of files: directory, glob, template
# ------------------------------------------------------------------------------------------------
def test_directory_glob_template_suites(tmp_path, rng, make_sae_folder):
    ws = {L: rng.standard_normal((D_SAE, D_IN)).astype(np.float32) for L in range(4)}
    d = tmp_path / "mixed"
    d.mkdir()
    save_st(d / "layer_0.safetensors", {"W_dec": ws[0]})
    np.save(d / "layer1.npy", ws[1])
    _torch().save({"W_dec": _torch().from_numpy(ws[2])}, d / "L2.pt")
    make_sae_folder(name="mixed/blocks.3.hook_resid_post", w_dec=ws[3], layer=3)
    (d / "README.md").write_text("ignored")
    (d / "lenses").mkdir()  # a companion folder holding one weights file is not an SAE beside sae-lens folders
    save_st(d / "lenses" / "params.safetensors", {"W_dec": ws[0]})
    suite = open_suite(d)
    assert suite.layers == [0, 1, 2, 3]
    for layer, cloud in suite:
        assert cloud.layer == layer
        np.testing.assert_array_equal(cloud.vectors, ws[layer])
    assert open_suite(d, layers="1-2").layers == [1, 2]
    with pytest.raises(InputError, match=r"^layers: layer\(s\) \[9\] not in .*mixed; expected some of the available layers \[0, 1, 2, 3\]"):
        open_suite(d, layers=[9])
    with pytest.raises(InputError, match=r"^layer: .*mixed holds layers \[0, 1, 2, 3\]; expected layer=<one of them>"):
        load_cloud(d)

    g = tmp_path / "globbed"
    g.mkdir()
    for L in (4, 8):
        save_st(g / f"sae_{L:02d}.safetensors", {"W_dec": ws[L % 4]})
    np.save(g / "sae_12.npy", ws[0])
    suite = open_suite(str(g / "sae_*.safetensors"))
    assert suite.layers == [4, 8] and suite.load(8).layer == 8
    assert open_suite(g).layers == [4, 8, 12]

    for L in (1, 5):
        (tmp_path / "runs" / f"L{L}").mkdir(parents=True)
        np.save(tmp_path / "runs" / f"L{L}" / f"dec_{L}.npy", ws[L % 4])
    (tmp_path / "runs" / "L3").mkdir()  # not matching: the file inside names another layer
    np.save(tmp_path / "runs" / "L3" / "dec_4.npy", ws[0])
    suite = open_suite(str(tmp_path / "runs" / "L{layer}" / "dec_{layer}.npy"))
    assert suite.layers == [1, 5]
    np.testing.assert_array_equal(suite.load(5).vectors, ws[1])
    assert open_suite(str(tmp_path / "runs" / "L{layer}")).layers == [1, 3, 5]  # folders holding one file


def test_default_suite_folder_by_path_is_the_default_suite():
    """The shipped folder opened by path (it carries lenses/ and robustness/ beside the layers) = ``default``."""
    by_path, default = open_suite(str(sources.DEFAULT_SUITE_DIR)), open_suite("default")
    assert by_path.layers == default.layers and 1 not in by_path.layers and 17 in by_path.layers
    np.testing.assert_array_equal(by_path.load(9).vectors, default.load(9).vectors)


def test_suite_errors(tmp_path, rng):
    w = rng.standard_normal((D_SAE, D_IN)).astype(np.float32)
    dup = tmp_path / "dup"
    dup.mkdir()
    np.save(dup / "layer_3.npy", w)
    save_st(dup / "layer_03.safetensors", {"W_dec": w})
    with pytest.raises(InputError, match=r"dup: layer 3 is given twice \('layer_03.safetensors' and 'layer_3.npy'\); expected one SAE per layer"):
        open_suite(dup)
    noname = tmp_path / "noname"
    noname.mkdir()
    np.save(noname / "alpha.npy", w)
    np.save(noname / "beta.npy", w)
    with pytest.raises(InputError, match=r"noname: cannot tell the layer of 'alpha.npy'; expected names carrying the layer"):
        open_suite(noname)
    mism = tmp_path / "mism"
    mism.mkdir()
    np.save(mism / "layer_0.npy", w)
    np.save(mism / "layer_1.npy", rng.standard_normal((D_SAE, D_IN + 1)).astype(np.float32))
    suite = open_suite(mism)
    with pytest.raises(InputError, match=r"layer 1 has d_model 17 but layer 0 has 16; expected one d_model across the suite"):
        list(suite)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"empty: the directory holds no SAE; expected per-layer"):
        open_suite(empty)
    with pytest.raises(InputError, match=r"the pattern matches no SAE file or folder"):
        open_suite(str(tmp_path / "nothing_*.npy"))
    with pytest.raises(InputError, match=r"the \{layer\} template matches no SAE file or folder; expected paths such as '.*layer_0.npy'"):
        open_suite(str(tmp_path / "missing" / "layer_{layer}.npy"))
    with pytest.raises(InputError, match=r"^layers: .*alpha.npy holds one SAE of unknown layer; expected at most one layer"):
        open_suite(noname / "alpha.npy", layers=[1, 2])


# ------------------------------------------------------------------------------------------------
# bad input: one-line InputErrors naming the file and what was expected
# ------------------------------------------------------------------------------------------------
def _write_bad(tmp_path: Path, case: str) -> Path:
    torch = _torch() if case.endswith("-pt") else None
    if case == "garbage-safetensors":
        (p := tmp_path / "g.safetensors").write_bytes(b"this is not a tensor file at all" * 4)
    elif case == "truncated-safetensors":
        p = save_st(tmp_path / "t.safetensors", {"W_dec": np.ones((64, 16), np.float32)})
        p.write_bytes(p.read_bytes()[:-200])
    elif case == "garbage-npz":
        (p := tmp_path / "g.npz").write_bytes(b"PK\x03\x04 not really a zip archive" * 3)
    elif case == "garbage-npy":
        (p := tmp_path / "g.npy").write_bytes(b"\x00\x01 random bytes" * 5)
    elif case == "truncated-npy":
        np.save(p := tmp_path / "t.npy", np.ones((64, 16), np.float32))
        p.write_bytes(p.read_bytes()[:-100])
    elif case == "garbage-pt":
        (p := tmp_path / "g.pt").write_bytes(b"\x80\x02 garbage pickle-ish bytes")
    elif case == "truncated-pt":
        torch.save({"W_dec": torch.ones(64, 16)}, p := tmp_path / "t.pt")
        p.write_bytes(p.read_bytes()[:300])
    elif case == "pickle-pt":
        torch.save({"W_dec": torch.ones(64, 16), "meta": Path("not/a/tensor")}, p := tmp_path / "pickle.pt")
    elif case == "pickle-npz":
        np.savez(p := tmp_path / "pickle.npz", W_dec=np.array([{"a": 1}, None], dtype=object))
    elif case == "pickle-npy":
        np.save(p := tmp_path / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "no-decoder":
        p = save_st(tmp_path / "nodec.safetensors", {"W_enc": np.ones((16, 64), np.float32), "b": np.ones(4, np.float32),
                                                     "x": np.ones((3, 3), np.float32), "y": np.ones((5, 3), np.float32)})
    elif case == "encoder-only":
        p = save_st(tmp_path / "enc.safetensors", {"W_enc": np.ones((16, 64), np.float32), "b_enc": np.ones(64, np.float32)})
    elif case == "1d-decoder":
        p = save_st(tmp_path / "d1.safetensors", {"W_dec": np.ones(16, np.float32)})
    elif case == "3d-decoder":
        np.savez(p := tmp_path / "d3.npz", W_dec=np.ones((2, 4, 8), np.float32))
    elif case == "int-decoder":
        np.save(p := tmp_path / "int.npy", np.ones((64, 16), np.int64))
    elif case == "two-decoders":
        p = save_st(tmp_path / "two.safetensors", {"a.W_dec": np.ones((8, 4), np.float32), "b.W_dec": np.ones((8, 4), np.float32)})
    elif case == "unknown-ext":
        (p := tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    elif case == "all-excluded":
        np.save(p := tmp_path / "zeros.npy", np.zeros((4, 3), np.float32))
    else:
        raise ValueError(case)
    return p


BAD_CASES = {
    "garbage-safetensors": r"g.safetensors: not a readable safetensors file \(.*\); expected a complete .safetensors file",
    "truncated-safetensors": r"t.safetensors: not a readable safetensors file \(.*\); expected a complete",
    "garbage-npz": r"g.npz: corrupt or truncated .npz archive \(.*\); expected a complete numpy.savez file",
    "garbage-npy": r"g.npy: not a .npy file \(bad magic bytes\); expected a file written by numpy.save",
    "truncated-npy": r"t.npy: corrupt or truncated .npy file \(.*\); expected a complete numpy.save file",
    "garbage-pt": r"g.pt: corrupt or truncated PyTorch file \(.*\); expected a file written by torch.save",
    "truncated-pt": r"t.pt: corrupt or truncated PyTorch file \(.*\); expected a file written by torch.save",
    "pickle-pt": r"pickle.pt: the file needs arbitrary Python objects unpickled \(.*PosixPath.*\); expected tensors or a "
                 r"state dict loadable with torch.load\(weights_only=True\) - featuregeo never unpickles",
    "pickle-npz": r"pickle.npz\[W_dec\]: holds Python objects that would have to be unpickled; expected a plain numeric array",
    "pickle-npy": r"pickle.npy: holds Python objects that would have to be unpickled",
    "no-decoder": r"nodec.safetensors: no decoder found; expected a 2-D decoder array named W_dec, .*Got "
                  r"\[W_enc \[16, 64\], b \[4\], x \[3, 3\], y \[5, 3\]\] instead",
    "encoder-only": r"enc.safetensors: no decoder found; .*Got \[W_enc \[16, 64\], b_enc \[64\]\] instead",
    "1d-decoder": r"d1.safetensors: decoder 'W_dec' has shape \[16\]; expected a 2-D \[n_features, d_model\] matrix. Got 1-D",
    "3d-decoder": r"d3.npz: decoder 'W_dec' has shape \[2, 4, 8\]; expected a 2-D .* Got 3-D instead",
    "int-decoder": r"int.npy: decoder 'int' has dtype int64; expected a float array",
    "two-decoders": r"two.safetensors: several decoders found \['a.W_dec', 'b.W_dec'\]; expected exactly one",
    "unknown-ext": r"weights.h5: unknown file type '.h5'; expected one of \['.safetensors', '.npy', '.npz', '.pt', '.pth'\]",
    "all-excluded": r"zeros.npy: every decoder row was excluded \(nonfinite=0, dead=4\)",
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_files(tmp_path, case):
    path = _write_bad(tmp_path, case)
    with pytest.raises(InputError, match=BAD_CASES[case]) as info:
        load_cloud(path).vectors
    assert "\n" not in str(info.value)


def test_bad_sources(tmp_path):
    with pytest.raises(InputError, match=r"nope.safetensors: no such file or directory; expected a sae-lens folder"):
        open_suite(tmp_path / "nope.safetensors")
    with pytest.raises(InputError, match=r"no such file or directory \(for a sae-lens release write "
                                         r"saelens:gpt2-small-res-jb:blocks.0.hook_resid_pre\)"):
        open_suite("gpt2-small-res-jb:blocks.0.hook_resid_pre")
    with pytest.raises(InputError, match=r"^source: expected a source string .*Got int instead"):
        open_suite(3)
    with pytest.raises(InputError, match=r"^source: expected .*Got an empty string instead"):
        open_suite("  ")
    with pytest.raises(InputError, match=r"^layer: expected a non-negative integer. Got -1 instead"):
        load_cloud(tmp_path, layer=-1)
    with pytest.raises(InputError, match=r"^--layers: expected a list like"):
        open_suite(tmp_path, layers="a-b")
    with pytest.raises(InputError, match=r"^exclude_dead: expected True or False"):
        open_suite(tmp_path, exclude_dead="yes")
    with pytest.raises(InputError, match=r"missing.npy: no such file; expected an existing .npy file"):
        open_decoder(tmp_path / "missing.npy")
