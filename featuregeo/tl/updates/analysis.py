"""One transition end to end: neighbours, tokenwise fits, geometry, controls, sensitivity, function."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from featuregeo.core.util import say
from featuregeo.io.update_hooks import UpdateActivations, final_logprobs
from featuregeo.tl.updates.fits import fit_global, local_fits, tokenwise
from featuregeo.tl.updates.function import kl_divergence, spearman_boot
from featuregeo.tl.updates.geometry import geometry
from featuregeo.tl.updates.neighbours import knn_other_rows, prepare, shuffled_neighbours
from featuregeo.tl.updates.params import LOCAL_CLASSES, UpdatesParams
from featuregeo.tl.updates.result import UpdateFit, UpdateFunction, UpdatesLayer

__all__ = ["split_record", "analyze_arrays", "transition"]


def split_record(D: np.ndarray, T: np.ndarray, groups: np.ndarray, *, target: str, cls: str, neighbours: str,
                 k: int, rank: int, energy: float, subspace: bool = True) -> UpdateFit:
    """An :class:`UpdateFit` from an update and its tokenwise part (``subspace=False``: no projections)."""
    return UpdateFit(target=target, cls=cls, neighbours=neighbours, k=k, rank=rank,
                     **geometry(D, T, groups, energy=energy, subspace=subspace))


def analyze_arrays(h: np.ndarray, D: np.ndarray, groups: np.ndarray, params: UpdatesParams, *,
                   cls: str | None = None, nbr: np.ndarray | None = None) -> tuple[np.ndarray, UpdateFit]:
    """Tokenwise part and geometry of ``D`` given ``h`` (any arrays: the planted check uses this).

    Returns ``(T, UpdateFit)`` for class ``cls`` (default ``params.primary``) with ``params.k``
    nearest neighbours from other groups (or the given ``nbr``).
    """
    cls = cls or params.primary
    if nbr is None and cls in LOCAL_CLASSES:
        nbr = knn_other_rows(prepare(h, params.metric), groups, params.k, metric=params.metric)
    T = tokenwise(cls, h, D, nbr=nbr, groups=groups, rank=params.rank, ridge=params.ridge)
    rec = split_record(D, T, groups, target="update", cls=cls, neighbours="knn" if cls in LOCAL_CLASSES else "none",
                       k=params.k if cls in LOCAL_CLASSES else 0, rank=params.rank if cls == "lowrank" else 0,
                       energy=params.energy)
    return T, rec


def transition(model, acts: UpdateActivations, rows: np.ndarray, layer: int, params: UpdatesParams,
               positions: list[int], clean: Callable[[int], object], *,
               progress: Callable[[str], None] | None = None) -> UpdatesLayer:
    """Everything for transition ``layer -> layer + 1`` (the update of block ``layer + 1``).

    ``acts`` holds every position (BOS first); the analysis uses positions ``1 ..``.  ``clean(p)``
    returns the clean final log-probabilities at position ``p`` (cached by the caller).
    """
    t0 = time.perf_counter()
    p = params
    R_, T1, d = acts.resid.shape[1], acts.resid.shape[2], acts.resid.shape[3]
    S = T1 - 1
    groups = np.repeat(np.arange(R_), S)
    h = acts.resid[layer + 1][:, 1:].reshape(-1, d)
    D = acts.resid[layer + 2][:, 1:].reshape(-1, d) - h
    local = [c for c in p.classes if c in LOCAL_CLASSES]
    kmax = max((p.k,) + tuple(p.k_grid))
    nbr_all = knn_other_rows(prepare(h, p.metric), groups, kmax, metric=p.metric)
    nbr = nbr_all[:, :p.k]

    def record(cls, target, y, T, k=p.k, rank=p.rank, neighbours="knn", subspace=True):
        is_local = cls in LOCAL_CLASSES
        return split_record(y, T, groups, target=target, cls=cls, neighbours=neighbours if is_local else "none",
                            k=k if is_local else 0, rank=rank if cls == "lowrank" else 0, energy=p.energy,
                            subspace=subspace)

    # every local fit of the whole update shares one gather of the neighbours
    specs = [(c, p.k, p.rank) for c in local]
    specs += [(c, k, p.rank) for c in local for k in p.k_grid]
    specs += [("lowrank", p.k, r) for r in p.rank_grid if "lowrank" in local]
    specs = list(dict.fromkeys((c, k, r if c == "lowrank" else 0) for c, k, r in specs))
    parts = dict(zip(specs, local_fits(h, D, nbr_all, specs, ridge=p.ridge)))
    if "global" in p.classes:
        parts[("global", 0, 0)] = fit_global(h, D, groups, ridge=p.ridge)
    key = {c: ((c, p.k, p.rank if c == "lowrank" else 0) if c in LOCAL_CLASSES else (c, 0, 0)) for c in p.classes}
    fits = [record(c, "update", D, parts[key[c]]) for c in p.classes]
    # controls with the primary class
    A = acts.attn[layer + 1][:, 1:].reshape(-1, d)
    M = acts.mlp[layer + 1][:, 1:].reshape(-1, d)
    mid = h + A
    nbr_mid = knn_other_rows(prepare(mid, p.metric), groups, p.k, metric=p.metric)
    rng = np.random.default_rng([p.seed, 14, layer])
    spec = [key[p.primary]]
    controls = [record(p.primary, "attn", A, local_fits(h, A, nbr, spec, ridge=p.ridge)[0]),
                record(p.primary, "mlp", M, local_fits(mid, M, nbr_mid, spec, ridge=p.ridge)[0]),
                record(p.primary, "update", D, local_fits(h, D, shuffled_neighbours(groups, p.k, rng), spec,
                                                          ridge=p.ridge)[0], neighbours="shuffled")]
    sens = []
    for c in local:
        for k in p.k_grid:
            sens.append(record(c, "update", D, parts[(c, k, p.rank if c == "lowrank" else 0)], k=k,
                               subspace=False))
        if c == "lowrank":
            for r in p.rank_grid:
                sens.append(record(c, "update", D, parts[(c, p.k, r)], rank=r, subspace=False))
    parts = {c: parts[key[c]] for c in p.classes}
    t_geo = time.perf_counter() - t0
    function = []
    resid_in = acts.resid[layer + 1]
    resid_out = acts.resid[layer + 2]
    for cls in p.kl_classes:
        Tc = parts[cls].reshape(R_, S, d)
        kl, rn, dn, rr, pp = [], [], [], [], []
        for pos in positions:
            hidden = resid_out[:, :pos + 1].copy()
            hidden[:, pos] = resid_in[:, pos] + Tc[:, pos - 1]
            lp = final_logprobs(model, rows[:, :pos + 1], start_block=layer + 2, hidden=hidden)
            kl.append(kl_divergence(clean(pos), lp))
            Dp = resid_out[:, pos] - resid_in[:, pos]
            rn.append(np.linalg.norm(Dp - Tc[:, pos - 1], axis=1))
            dn.append(np.linalg.norm(Dp, axis=1))
            rr.append(np.arange(R_))
            pp.append(np.full(R_, pos))
        kl_, rn_, dn_, rr_ = (np.concatenate(x) for x in (kl, rn, dn, rr))
        brng = np.random.default_rng([p.seed, 14, layer, 1])
        s, sci = spearman_boot(rn_, kl_, rr_, n_boot=p.n_boot, rng=brng)
        srel, srel_ci = spearman_boot(rn_ / np.maximum(dn_, 1e-30), kl_, rr_, n_boot=p.n_boot, rng=brng)
        sn, sn_ci = spearman_boot(dn_, kl_, rr_, n_boot=p.n_boot, rng=brng)
        function.append(UpdateFunction(cls=cls, n=int(kl_.size), kl_mean=float(kl_.mean()),
                                       kl_median=float(np.median(kl_)), spearman=s, spearman_ci=sci,
                                       spearman_rel=srel, spearman_rel_ci=srel_ci, spearman_norm=sn,
                                       spearman_norm_ci=sn_ci, kl=kl_, r_norm=rn_, d_norm=dn_,
                                       rows=rr_.astype(np.int64), positions=np.concatenate(pp).astype(np.int64)))
    rec = UpdatesLayer(layer=layer, block=layer + 1, n_tokens=int(h.shape[0]),
                       d_norm=float(np.linalg.norm(D, axis=1).mean()), h_norm=float(np.linalg.norm(h, axis=1).mean()),
                       fits=fits, controls=controls, sensitivity=sens, function=function,
                       seconds=time.perf_counter() - t0)
    main = next(f for f in fits if f.cls == p.primary)
    say(progress, f"updates: {layer}->{layer + 1}: {p.primary} explained {main.explained:.3f}, cos(D,T) "
                  f"{main.cos_dt:.3f}, mlp control {controls[1].explained:.3f}, attn {controls[0].explained:.3f}"
                  + (f", spearman {function[0].spearman:.2f}" if function else "")
                  + f" ({t_geo:.1f}s geometry, {rec.seconds:.1f}s total)")
    return rec
