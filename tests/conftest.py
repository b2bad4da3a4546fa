"""Shared test fixtures (keep this file small; module-specific fixtures live in their test files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def default_model():
    """The default model (Gemma 3 270M, float32, CPU), loaded once per test session. Do not modify it."""
    from featuregeo.io.models import load_model

    return load_model("default", threads=2)


HARVEST_LAYERS = (2, 7)


def make_topk_saes(layers=HARVEST_LAYERS, seed: int = 0, d_sae: int = 128) -> dict:
    """Real sae-lens TopK SAEs (d_in 640, k 8) with small random encoders, one per layer."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    out = {}
    for L in layers:
        sae = TopKSAE(TopKSAEConfig(d_in=640, d_sae=d_sae, k=8))
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.01)
        out[L] = sae
    return out


@pytest.fixture(scope="session")
def harvest_docs():
    """Three real documents: two stdlib modules (code) and a numpy docstring (prose)."""
    import inspect
    import sysconfig

    from featuregeo.io.corpus import Document

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [Document((stdlib / f).read_text(), "stdlib", "code", f) for f in ("json/decoder.py", "bisect.py")]
    prose = [Document(inspect.getdoc(np.linalg.svd) * 2, "numpy-doc", "prose", "svd")]
    return code + prose


@pytest.fixture(scope="session")
def harvest_saes():
    return make_topk_saes()


@pytest.fixture(scope="session")
def small_harvest(default_model, harvest_docs, harvest_saes, tmp_path_factory):
    """A finished harvest on the real model: 12 blocks x 32 tokens, layers 2 and 7, activations stored,
    3 shards.  Shared by the session: read it, or copy it before changing it."""
    from featuregeo.io.harvest import HarvestParams, harvest

    params = HarvestParams(block_len=32, batch_size=4, shard_blocks=4, max_blocks=12, max_blocks_per_doc=4,
                           store_activations=True)
    return harvest(default_model, harvest_docs, tmp_path_factory.mktemp("hv") / "h", params, saes=harvest_saes)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded Generator."""
    return np.random.default_rng(0)


@pytest.fixture
def make_sae_folder(tmp_path: Path):
    """Factory: write a real sae-lens SAE with ``save_model`` and return ``(folder, sae)``.

    ``make_sae_folder(name="layer_3", arch="standard"|"topk"|"jumprelu", d_in=16, d_sae=64, layer=3,
    w_dec=None)``; ``w_dec`` (``[d_sae, d_in]`` array) replaces the random decoder.
    """
    import torch
    from sae_lens import (JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE,
                          TopKSAEConfig)
    from sae_lens.saes.sae import SAEMetadata

    def make(name: str = "sae", arch: str = "standard", d_in: int = 16, d_sae: int = 64, layer: int = 3,
             w_dec: np.ndarray | None = None, model_name: str = "tiny-model"):
        torch.manual_seed(layer)
        meta = SAEMetadata(model_name=model_name, hook_name=f"blocks.{layer}.hook_resid_post",
                           neuronpedia_id=f"{model_name}/{layer}-res-test")
        if arch == "standard":
            sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta))
        elif arch == "topk":
            sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=4, metadata=meta))
        elif arch == "jumprelu":
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta))
        else:
            raise ValueError(arch)
        with torch.no_grad():
            if w_dec is not None:
                sae.W_dec.copy_(torch.as_tensor(w_dec, dtype=torch.float32))
            else:
                sae.W_dec.normal_()
        folder = tmp_path / name
        sae.save_model(str(folder))
        return folder, sae

    return make
