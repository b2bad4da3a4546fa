"""Parameters of the interaction basis (:class:`InteractionParams`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, check_choice, check_float, check_int

__all__ = ["InteractionParams", "JACOBIAN_MODES", "DTYPES", "EDGE_RULES", "EDGE_BASELINES", "parse_section"]

JACOBIAN_MODES = ("stochastic", "exact")
DTYPES = ("float32", "float64")
EDGE_RULES = ("gauss", "midpoint")
EDGE_BASELINES = ("mean", "zero")


def parse_section(spec: Any) -> tuple[int, int]:
    """``"5-8"``, ``"5..8"``, ``(5, 8)`` or ``[5, 6, 7, 8]`` -> ``(5, 8)``; one-line InputError otherwise.

    A section is at least two consecutive node layers ``A < B``.

    Examples
    --------
    >>> parse_section("5-8")
    (5, 8)
    """
    what = f"layers: expected a range of at least two consecutive layers like '5-8'. Got {spec!r} instead."
    if isinstance(spec, str):
        parts = spec.replace("..", "-").replace(":", "-").split("-")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise InputError(what) from None
        if len(vals) != 2:
            raise InputError(what)
        a, b = vals
    else:
        try:
            vals = [int(x) for x in spec]
        except (TypeError, ValueError):
            raise InputError(what) from None
        if len(vals) == 2:
            a, b = vals
        elif len(vals) > 2 and vals == list(range(vals[0], vals[0] + len(vals))):
            a, b = vals[0], vals[-1]
        else:
            raise InputError(what)
    if a < 0 or b <= a:
        raise InputError(what)
    return a, b


@dataclass(frozen=True)
class InteractionParams(Params):
    """Every tuning parameter of the interaction basis (stored in :class:`InteractionResult`).

    Parameters
    ----------
    layers : tuple of int, default=(5, 8)
        The section: node layers ``A..B`` are the residual stream after blocks ``A, A+1, ..., B``
        (at least two).  A string ``"5-8"`` is accepted.
    n_rows : int, default=64
        Token rows (blocks of text from the training split) for the Gram matrices and M'.
    row_len : int, default=128
        Tokens per row (BOS not counted); ``n_rows * row_len`` tokens in all.
    batch_size : int, default=4
        Rows per forward / vector-Jacobian pass.
    jacobian : {"stochastic", "exact"}, default="stochastic"
        M' = E[J^T J] from ``n_sources`` random +-1 vector-Jacobian products per row, or exactly
        (one product per output coordinate and position: small cases only).
    n_sources : int, default=4
        Random +-1 sources per row (stochastic mode; >= 2 so the estimator's variance can be reported).
    gram_threshold : float, default=1e-9
        Drop Gram eigenvalues below ``gram_threshold * largest`` (relative, in [0, 1)).
    m_threshold : float, default=1e-9
        Drop eigenvalues of M below ``m_threshold * largest``.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the model's forward and backward passes.  Gram matrices, M', the eigenproblems and
        the basis are always float64.
    edge_directions : int, default=32
        Edges are computed between the top ``edge_directions`` directions of adjacent layers.
    edge_steps : int, default=3
        Quadrature nodes of the integrated gradients on [0, 1].
    edge_rule : {"gauss", "midpoint"}, default="gauss"
        Gauss-Legendre or midpoint quadrature.
    edge_baseline : {"mean", "zero"}, default="mean"
        Start of the integration path: the mean activation of the node layer (the folded constant
        held at 1), or the origin (METHODS.md's formula as written; diverges behind RMSNorm, see
        :mod:`~featuregeo.tl.interaction.edges`).
    edge_rows : int, default=16
        Rows (the first of the ``n_rows``) used for the edges.
    edge_compile : bool, default=True
        Run the edges' Jacobian-vector products through ``torch.compile`` (falls back to eager mode).
    convergence_steps : tuple of int, default=(1, 2, 3, 4, 8)
        Node counts compared to show the integral's convergence (increasing).
    convergence_rows : int, default=2
        Rows used for the convergence check.
    ablation_n : tuple of int, default=(4, 16, 64, 256)
        Keep-top-n values of the ablation curve (increasing; values above a layer's retained
        dimension are clipped to it).
    loss_rows : int, default=16
        Held-out rows for the ablation loss (0 skips the ablation curve).
    loss_row_len : int, default=128
        Tokens per held-out row.
    sae_directions : int, default=64
        Top directions compared to the SAE decoder rows.
    seed : int, default=0
        Seeds the corpus split, the random sources and the random-direction null.
    """

    layers: tuple[int, int] = (5, 8)
    n_rows: int = 64
    row_len: int = 128
    batch_size: int = 4
    jacobian: str = "stochastic"
    n_sources: int = 4
    gram_threshold: float = 1e-9
    m_threshold: float = 1e-9
    dtype: str = "float32"
    edge_directions: int = 32
    edge_steps: int = 3
    edge_rule: str = "gauss"
    edge_baseline: str = "mean"
    edge_rows: int = 16
    edge_compile: bool = True
    convergence_steps: tuple[int, ...] = (1, 2, 3, 4, 8)
    convergence_rows: int = 2
    ablation_n: tuple[int, ...] = (4, 16, 64, 256)
    loss_rows: int = 16
    loss_row_len: int = 128
    sae_directions: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.layers, (str, list)):
            object.__setattr__(self, "layers", parse_section(self.layers))
        for name in ("convergence_steps", "ablation_n"):
            v = getattr(self, name)
            if isinstance(v, str):
                try:
                    v = tuple(int(x) for x in v.split(",") if x.strip())
                except ValueError:
                    raise InputError(f"{name}: expected increasing integers like '1,2,4'. Got {v!r} instead.") from None
            elif isinstance(v, list):
                v = tuple(v)
            object.__setattr__(self, name, v)

    @property
    def node_layers(self) -> list[int]:
        """The node layers of the section, ``A..B``."""
        a, b = self.layers
        return list(range(a, b + 1))

    def validate(self) -> "InteractionParams":
        """Check every field; one-line InputError naming the parameter. Returns ``self``."""
        parse_section(self.layers)
        check_int("n_rows", self.n_rows, minimum=1)
        check_int("row_len", self.row_len, minimum=2)
        check_int("batch_size", self.batch_size, minimum=1)
        check_choice("jacobian", self.jacobian, JACOBIAN_MODES)
        check_int("n_sources", self.n_sources, minimum=2)
        check_float("gram_threshold", self.gram_threshold, low=0.0, high=1.0, high_open=True)
        check_float("m_threshold", self.m_threshold, low=0.0, high=1.0, high_open=True)
        check_choice("dtype", self.dtype, DTYPES)
        check_int("edge_directions", self.edge_directions, minimum=1)
        check_int("edge_steps", self.edge_steps, minimum=1)
        check_choice("edge_rule", self.edge_rule, EDGE_RULES)
        check_choice("edge_baseline", self.edge_baseline, EDGE_BASELINES)
        check_int("edge_rows", self.edge_rows, minimum=0, maximum=self.n_rows)
        if not isinstance(self.edge_compile, bool):
            raise InputError(f"edge_compile: expected True or False. Got {self.edge_compile!r} instead.")
        for name in ("convergence_steps", "ablation_n"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in v) \
                    or any(b <= a for a, b in zip(v, v[1:])):
                raise InputError(f"{name}: expected increasing positive integers like '1,2,4'. Got {v!r} instead.")
        check_int("convergence_rows", self.convergence_rows, minimum=0, maximum=self.n_rows)
        check_int("loss_rows", self.loss_rows, minimum=0)
        check_int("loss_row_len", self.loss_row_len, minimum=2)
        check_int("sae_directions", self.sae_directions, minimum=1)
        check_int("seed", self.seed, minimum=0)
        return self
