"""The demo's three sizes: ``fast`` (smoke tests), the default (about three minutes on two cores) and
``full`` (the larger statistics the demo used before it was made to fit three minutes).

Every number a stage uses is here, so ``summary.json`` can say which of them the run reduced
against ``full`` (:meth:`DemoSettings.reduced`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DemoSettings", "PRESETS", "settings_for"]


@dataclass(frozen=True)
class DemoSettings:
    """The sizes of one demo run.

    Attributes
    ----------
    name : str
        ``fast``, ``default`` or ``full``.
    harvest_blocks : int
        Held-out blocks of ``block_len`` tokens read by the harvest (the one shared forward pass).
    block_len : int
        Tokens per harvest block.
    galaxy_blocks : int
        The first harvest blocks whose residuals (every SAE layer) give the galaxy's raw-activation
        spectrum (``galaxy_blocks * block_len`` tokens per layer).
    entropy_repeats, slope_bootstrap : int
        Galaxy: subsamples of the clustering-entropy estimate, row-bootstrap replicates of each slope
        interval (SAE and activations).
    lobes : dict
        :class:`~featuregeo.tl.lobes.LobesParams` fields (permutations, null repeats, ...).
    layers : dict
        :meth:`LayersParams.fast <featuregeo.tl.layers.LayersParams.fast>` overrides (blocks, pruning).
    lens : dict
        :meth:`LensParams.demo <featuregeo.tl.lens.LensParams.demo>` overrides (held-out tokens,
        bootstrap replicates) for the shipped tuned lens's evaluation.
    atlas_layout : str
        The atlas's 2-D layout (``umap`` or ``pca``).
    umap_epochs : int or None
        UMAP optimisation epochs of the atlas layout (None: umap-learn's 500 below 10,000 points).
    """

    name: str
    harvest_blocks: int
    galaxy_blocks: int
    entropy_repeats: int
    slope_bootstrap: int
    lobes: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    lens: dict = field(default_factory=dict)
    atlas_layout: str = "umap"
    umap_epochs: int | None = None
    block_len: int = 128

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reduced(self) -> dict[str, dict[str, Any]]:
        """``{setting: {"this": value, "full": value}}`` for every setting smaller than in ``full``."""
        full = PRESETS["full"].to_dict()
        mine = self.to_dict()
        out: dict[str, dict[str, Any]] = {}
        for key, value in mine.items():
            if key == "name":
                continue
            if isinstance(value, dict):
                for k in sorted(set(value) | set(full[key])):
                    if value.get(k) != full[key].get(k):
                        out[f"{key}.{k}"] = {"this": value.get(k), "full": full[key].get(k)}
            elif value != full[key]:
                out[key] = {"this": value, "full": full[key]}
        return out


_LOBES_FULL = {"n_clusters": (2, 3, 4, 8, 16, 32, 64), "n_permutations": 100, "logreg_null_repeats": 10,
               "logreg_split_repeats": 3, "genre_permutations": 1000,
               "affinities": ("phi", "jaccard", "dice", "overlap", "simple_matching")}

PRESETS: dict[str, DemoSettings] = {
    # today's larger statistics (the demo's settings before it was fitted to three minutes)
    "full": DemoSettings(name="full", harvest_blocks=384, galaxy_blocks=48, entropy_repeats=10, slope_bootstrap=50,
                         lobes=_LOBES_FULL, layers={"loss_blocks": 8, "loss_block_len": 128, "random_drops": 3},
                         lens={"eval_tokens": 1024, "block_len": 32}),
    # about three minutes on two cores: every stage, smaller samples and fewer resamples (see reduced())
    "default": DemoSettings(name="default", harvest_blocks=128, galaxy_blocks=24, entropy_repeats=2,
                            slope_bootstrap=20,
                            lobes={"n_clusters": (2, 3, 4, 8, 16, 32), "n_permutations": 40, "logreg_null_repeats": 4,
                                   "logreg_split_repeats": 2, "genre_permutations": 500,
                                   "affinities": ("phi", "jaccard")},
                            layers={"loss_blocks": 3, "loss_block_len": 96, "random_drops": 2}, umap_epochs=200,
                            lens={"eval_tokens": 128, "block_len": 16}),
    # smoke tests: a minute at most; PCA layout (no numba compilation in a fresh test environment)
    "fast": DemoSettings(name="fast", harvest_blocks=64, galaxy_blocks=24, entropy_repeats=3, slope_bootstrap=20,
                         lobes={"n_clusters": (2, 3, 4, 8, 16), "n_permutations": 20, "logreg_null_repeats": 3,
                                "logreg_split_repeats": 2, "genre_permutations": 200, "affinities": ("phi", "jaccard")},
                         layers={"loss_blocks": 2, "random_drops": 1}, atlas_layout="pca",
                         lens={"eval_tokens": 128, "block_len": 16}),
}


def settings_for(*, fast: bool = False, full: bool = False) -> DemoSettings:
    """The preset for the CLI flags (``--fast`` and ``--full`` together are refused by the caller)."""
    return PRESETS["fast" if fast else "full" if full else "default"]
