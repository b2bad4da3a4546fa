"""The interaction basis (Bushnaq et al. 2024): degeneracy-invariant features of a section of
residual-stream node layers and their interaction graph, compared with PCA.

::

    from featuregeo.tl import interaction
    params = interaction.InteractionParams(layers=(5, 8))
    result = interaction.analyze(model, params, suite=suite, checkpoint=None, progress=print)
    result.layer(5).basis.C          # [d + 1, n] reads features: C^T [f, 1]
    result.edges[0].edges            # [n_out, n_in] squared integrated-gradient edges

Stages: :mod:`~featuregeo.tl.interaction.basis` (Gram matrices with the bias folded in, M' from
random +-1 vector-Jacobian products or exactly, the basis computed from the last node layer
backwards), :mod:`~featuregeo.tl.interaction.edges` (integrated-gradient edges from forward-mode
Jacobian-vector products, their convergence in the number of steps),
:mod:`~featuregeo.tl.interaction.compare` (held-out loss keeping the top n directions, SAE decoder
cosines).  The model code (a decoder block as a differentiable step, the ablation hook) lives in
:mod:`featuregeo.io.interaction_hooks`.

Resumable units (with a :class:`~featuregeo.core.checkpoint.Checkpoint`): ``activations``,
``basis_<L>`` (fingerprinted by the model, the token rows, the basis parameters and the next layer's
basis), ``edges_<a>_<b>_<method>``, ``ablation_<L>`` and ``baseline``.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import Suite
from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint, say
from featuregeo.io.hooks import check_hookable, heldout_loss
from featuregeo.io.interaction_hooks import block_step, project_residual, section_activations
from featuregeo.io.models import LoadedModel
from featuregeo.tl.interaction.basis import (LayerBasis, basis_from_m, build_bases, eig_desc, extend,
                                             extended_step, gram_matrix, m_prime, pca_basis)
from featuregeo.tl.interaction.compare import AblationCurve, SaeMatch, best_cosines, clip_ns, sae_match
from featuregeo.tl.interaction.data import token_rows
from featuregeo.tl.interaction.edges import Convergence, EdgeSet, convergence, edge_matrix, quadrature, top_fraction
from featuregeo.tl.interaction.params import (DTYPES, EDGE_BASELINES, EDGE_RULES, JACOBIAN_MODES, InteractionParams,
                                              parse_section)
from featuregeo.tl.interaction.result import InteractionLayer, InteractionResult

__all__ = [
    "InteractionParams", "InteractionResult", "InteractionLayer", "LayerBasis", "EdgeSet", "Convergence",
    "AblationCurve", "SaeMatch", "analyze", "check_inputs", "parse_section", "JACOBIAN_MODES", "DTYPES",
    "build_bases", "basis_from_m", "pca_basis", "gram_matrix", "m_prime", "extended_step", "eig_desc", "extend",
    "edge_matrix", "convergence", "quadrature", "EDGE_RULES", "EDGE_BASELINES", "top_fraction", "best_cosines",
    "sae_match", "token_rows", "model_fingerprint",
]

LOSS_BATCH = 4
#: rows and directions per vmapped pass of the edges (with 3 nodes and 128 tokens: 24,576 token-tangents)
EDGE_BATCH, EDGE_CHUNK = 2, 32


def model_fingerprint(loaded: LoadedModel) -> str:
    """Identity of a loaded model for checkpoints: name, what was read, dtype, kind and shape."""
    return fingerprint("model", str(loaded.name), str(getattr(loaded, "source", "")), str(loaded.dtype),
                       str(getattr(loaded, "kind", "")), int(loaded.n_layers), int(loaded.d_model))


def check_inputs(model: LoadedModel, params: InteractionParams) -> None:
    """Every check that needs the model but no computation: hookable, the section inside its blocks."""
    params.validate()
    check_hookable(model, "--model")
    a, b = parse_section(params.layers)
    if b > model.n_layers - 1:
        raise InputError(f"layers: section {a}-{b} is out of range for {model.name!r} ({model.n_layers} blocks); "
                         f"expected A < B in 0..{model.n_layers - 1}")


def _unit(checkpoint, key, fp, compute, cls):
    return compute() if checkpoint is None else checkpoint.result(key, fp, compute, cls)


def analyze(model: LoadedModel, params: InteractionParams | None = None, *, suite: Suite | None = None,
            rows: np.ndarray | None = None, loss_rows: np.ndarray | None = None,
            checkpoint: Checkpoint | None = None, progress: Callable[[str], None] | None = None) -> InteractionResult:
    """The interaction basis of one section of ``model``, its edges, and the comparison with PCA.

    Parameters
    ----------
    model : LoadedModel
        A transformers causal LM (blocks are called directly; hooks are removed afterwards).
    params : InteractionParams, optional
        Validated first (default ``InteractionParams()``).
    suite : Suite, optional
        SAEs for the decoder-cosine comparison (layers of the section that the suite lacks are skipped).
    rows, loss_rows : ndarray [n, 1 + T] of int, optional
        Token rows (BOS first) for the basis and for the held-out loss (default: :func:`token_rows`
        from the train / held-out split of the built-in corpus).
    checkpoint : Checkpoint, optional
        Stores and reuses the units listed in the module docstring.
    progress : callable, optional
        One line of text per step.

    Returns
    -------
    InteractionResult
    """
    t_all = time.perf_counter()
    params = (params or InteractionParams()).validate()
    check_inputs(model, params)
    layers = params.node_layers
    timings: dict[str, float] = {}
    mfp = model_fingerprint(model)
    if rows is None:
        rows = token_rows(model.tokenizer, params.n_rows, params.row_len, split="train", seed=params.seed)
    rows = np.asarray(rows, dtype=np.int64)
    T = rows.shape[1] - 1
    rows_fp = fingerprint(rows)
    say(progress, f"interaction: {model.name}, node layers {layers[0]}..{layers[-1]}, {rows.shape[0]} rows x {T} "
                  f"tokens, M' {params.jacobian}" + (f" ({params.n_sources} sources)" if params.jacobian == "stochastic"
                                                     else ""))
    t = time.perf_counter()

    def read() -> dict[str, np.ndarray]:
        acts, bos = section_activations(model, rows, layers, batch_size=8)
        return {**{f"acts_{L}": acts[L] for L in layers}, **{f"bos_{L}": bos[L] for L in layers}}

    fp_acts = fingerprint("interaction.activations", mfp, rows_fp, layers)
    arr = read() if checkpoint is None else checkpoint.arrays("activations", fp_acts, read)
    acts = [arr[f"acts_{L}"] for L in layers]
    timings["activations"] = time.perf_counter() - t
    steps = [block_step(model, L + 1, arr[f"bos_{L}"], T, dtype=params.dtype) for L in layers[:-1]]

    # -- the bases, last node layer first -----------------------------------------------------------
    t = time.perf_counter()
    bparts = {k: getattr(params, k) for k in ("gram_threshold", "m_threshold", "jacobian", "n_sources", "dtype",
                                              "seed", "batch_size")}
    fps: dict[int, str] = {}

    def unit(i, compute):
        nxt = fps.get(i + 1, "")
        fps[i] = fingerprint("interaction.basis", mfp, rows_fp, layers[i], i == len(layers) - 1, bparts, nxt)
        return _unit(checkpoint, f"basis_{layers[i]}", fps[i], compute, LayerBasis)

    bases = build_bases(layers, acts, steps, gram_threshold=params.gram_threshold, m_threshold=params.m_threshold,
                        mode=params.jacobian, n_sources=params.n_sources, batch_size=params.batch_size,
                        dtype=params.dtype, seed=params.seed, unit=unit, progress=progress)
    pcas = [pca_basis(L, a, params.gram_threshold) for L, a in zip(layers, acts)]
    timings["basis"] = time.perf_counter() - t

    # -- edges -------------------------------------------------------------------------------------
    t = time.perf_counter()
    edges: list[EdgeSet] = []
    pca_edges: list[EdgeSet] = []
    k = params.edge_directions
    if params.edge_rows > 0:
        sub = [a[: params.edge_rows] for a in acts]
        means = [a.reshape(-1, a.shape[-1]).mean(axis=0, dtype=np.float64) if params.edge_baseline == "mean"
                 else None for a in acts]
        ekw = dict(rule=params.edge_rule, dtype=params.dtype)
        for i in range(len(layers) - 1):
            for method, bs, store in (("interaction", bases, edges), ("pca", pcas, pca_edges)):
                def compute(i=i, bs=bs, method=method) -> EdgeSet:
                    E = edge_matrix(sub[i], steps[i], bs[i], bs[i + 1], n_in=k, n_out=k, steps=params.edge_steps,
                                    baseline=means[i], batch_size=EDGE_BATCH, chunk=min(k, EDGE_CHUNK),
                                    compiled=params.edge_compile, progress=progress, **ekw)
                    conv = None
                    if method == "interaction" and params.convergence_rows > 0:
                        kc = min(8, k)
                        conv = convergence(acts[i][: params.convergence_rows], steps[i], bs[i], bs[i + 1], n_in=kc,
                                           n_out=kc, step_counts=params.convergence_steps, baseline=means[i],
                                           batch_size=EDGE_BATCH, **ekw)
                    say(progress, f"interaction: edges {layers[i]}->{layers[i + 1]} ({method}): top-1% mass "
                                  f"{top_fraction(E):.3f}")
                    return EdgeSet(layer_in=layers[i], layer_out=layers[i + 1], method=method, edges=E,
                                   steps=params.edge_steps, n_rows=int(sub[i].shape[0]),
                                   n_tokens=int(sub[i].shape[0] * T), top1_mass=top_fraction(E), convergence=conv,
                                   rule=params.edge_rule, baseline=params.edge_baseline)

                fp = fingerprint("interaction.edges", method, fps.get(i, ""), fps.get(i + 1, ""), mfp, rows_fp, k,
                                 params.edge_steps, params.edge_rule, params.edge_baseline, params.edge_rows,
                                 params.convergence_steps,
                                 params.convergence_rows, params.dtype,
                                 fingerprint(bs[i].C) if method == "pca" else "")
                store.append(_unit(checkpoint, f"edges_{layers[i]}_{layers[i + 1]}_{method}", fp, compute, EdgeSet))
    timings["edges"] = time.perf_counter() - t

    # -- held-out loss keeping the top n directions ---------------------------------------------------
    t = time.perf_counter()
    ablations: dict[int, AblationCurve] = {}
    baseline = float("nan")
    if params.loss_rows > 0:
        if loss_rows is None:
            loss_rows = token_rows(model.tokenizer, params.loss_rows, params.loss_row_len, split="heldout",
                                   seed=params.seed)
        loss_rows = np.asarray(loss_rows, dtype=np.int64)
        lfp = fingerprint(loss_rows)
        bl = (lambda: {"loss": heldout_loss(model, loss_rows, batch_size=LOSS_BATCH).loss})
        baseline = float((bl() if checkpoint is None else checkpoint.json("baseline", fingerprint(
            "interaction.baseline", mfp, lfp), bl))["loss"])
        for i, L in enumerate(layers[:-1]):  # the last layer's interaction basis is its PCA
            def curve(i=i, L=L) -> AblationCurve:
                ns = clip_ns(params.ablation_n, bases[i].n_kept, pcas[i].n_kept)
                li, lp = [], []
                for n in ns:
                    for b, out in ((bases[i], li), (pcas[i], lp)):
                        with project_residual(model, L, b.keep_top(n)):
                            out.append(heldout_loss(model, loss_rows, batch_size=LOSS_BATCH).loss)
                say(progress, f"interaction: layer {L} keep-top-n loss " + ", ".join(
                    f"n={n}: {a:.3f} vs PCA {b:.3f}" for n, a, b in zip(ns, li, lp)) + f" (baseline {baseline:.3f})")
                return AblationCurve(layer=L, n=ns, loss_interaction=li, loss_pca=lp, baseline=baseline,
                                     n_tokens=int(loss_rows.shape[0] * (loss_rows.shape[1] - 1)))

            fp = fingerprint("interaction.ablation", fps[i], mfp, lfp, params.ablation_n, fingerprint(pcas[i].C))
            ablations[L] = _unit(checkpoint, f"ablation_{L}", fp, curve, AblationCurve)
    timings["ablation"] = time.perf_counter() - t

    # -- SAE decoder cosines ------------------------------------------------------------------------
    t = time.perf_counter()
    saes: dict[int, SaeMatch] = {}
    if suite is not None:
        for i, L in enumerate(layers):
            if L in suite:
                cloud = suite.load(L)
                saes[L] = sae_match(L, bases[i], pcas[i], cloud.vectors, params.sae_directions, seed=params.seed)
                say(progress, f"interaction: layer {L} best |cos| to SAE decoder rows (median of top "
                              f"{len(saes[L].interaction)}): interaction {saes[L].median_interaction:.3f}, PCA "
                              f"{saes[L].median_pca:.3f}, random {saes[L].median_random:.3f}")
    timings["sae"] = time.perf_counter() - t

    recs = [InteractionLayer(layer=L, basis=b, pca=p, n_gram=b.n_gram, n_interaction=b.n_kept, n_pca=p.n_kept,
                             m_rel_se=b.m_rel_se, ablation=ablations.get(L), sae=saes.get(L))
            for L, b, p in zip(layers, bases, pcas)]
    return InteractionResult(params=params, model=str(model.name), n_tokens=int(rows.shape[0] * T), layers=recs,
                             edges=edges, pca_edges=pca_edges, baseline_loss=baseline, timings=timings,
                             seconds=time.perf_counter() - t_all)
