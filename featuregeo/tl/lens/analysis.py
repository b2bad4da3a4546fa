"""The lens analysis: data, training, evaluation, probes and the causal check, each a resumable unit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, fingerprint, say
from featuregeo.io.hooks import heldout_loss
from featuregeo.io.lens_hooks import Readout, ablate_directions, find_readout, hidden_states, model_identity
from featuregeo.io.models import LoadedModel, check_layers
from featuregeo.io.probe_labels import LabelledRows, labelled_rows
from featuregeo.tl.lens.metrics import block_bootstrap, evaluate_lenses
from featuregeo.tl.lens.params import LensParams
from featuregeo.tl.lens.probes import control_labels, fit_probe, probe_directions, random_directions
from featuregeo.tl.lens.results import (CausalCheck, Interval, LensLayer, LensResult, LensScores, ProbeScore,
                                        Trajectory)
from featuregeo.tl.lens.train import train_lenses, translator
from featuregeo.tl.lens.tuned import TunedLens, choose_subset

__all__ = ["LensData", "lens_data", "check_inputs", "read_layers", "analyze"]

TASKS = ("genre", "pycat")


@dataclass
class LensData:
    """Training and held-out token rows with labels (:func:`lens_data`)."""

    train: LabelledRows
    heldout: LabelledRows

    def fingerprint(self) -> str:
        return fingerprint(self.train.rows, self.heldout.rows, self.train.genres, self.heldout.genres,
                           self.train.categories, self.heldout.categories)


def lens_data(tokenizer, corpus, params: LensParams) -> LensData:
    """Rows of ``block_len + 1`` tokens (plus BOS) from the training and held-out splits of ``corpus``.

    Training rows take up to 4 rows per document; held-out rows one per document (the bootstrap blocks).

    Raises
    ------
    InputError
        An empty corpus, or a split without a document long enough.
    """
    if corpus is None:
        from featuregeo.io.corpus import builtin_corpus

        corpus = builtin_corpus()
    if len(corpus) == 0:
        raise InputError("corpus: empty; expected at least one document")
    train, held = corpus.split(params.held_out, seed=params.seed)
    if len(train) == 0 or len(held) == 0:
        raise InputError(f"corpus: {len(corpus)} documents give an empty {'training' if len(train) == 0 else 'held-out'} "
                         f"split (held_out={params.held_out}); expected more documents")
    L = params.block_len + 1
    tr = labelled_rows(train.interleaved(), tokenizer, L, max_rows=math.ceil(params.train_tokens / params.block_len),
                       max_per_doc=4, what="corpus (training split)")
    he = labelled_rows(held.interleaved(), tokenizer, L, max_rows=math.ceil(params.eval_tokens / params.block_len),
                       max_per_doc=1, what="corpus (held-out split)")
    return LensData(train=tr, heldout=he)


def read_layers(loaded: LoadedModel, params: LensParams) -> list[int]:
    """The blocks whose residual stream is read: the selection, the last block, the causal layers."""
    sel = list(range(loaded.n_layers)) if params.layers is None else list(params.layers)
    extra = list(params.causal_layers) if params.probes else []
    return check_layers(loaded, sel + [loaded.n_layers - 1] + extra)


def check_inputs(loaded: LoadedModel, params: LensParams, lens: TunedLens | None = None) -> Readout:
    """Validate the model-dependent inputs (layers, read-out, a given lens); returns the read-out."""
    if not isinstance(loaded, LoadedModel):
        raise InputError(f"model: expected a LoadedModel. Got {type(loaded).__name__} instead.")
    if params.layers is not None:
        check_layers(loaded, params.layers)
    if params.probes:
        bad = [L for L in params.causal_layers if not 0 <= L < loaded.n_layers]
        if bad:
            raise InputError(f"causal_layers: layer {bad[0]} is out of range for {loaded.name!r}; expected layers in "
                             f"0..{loaded.n_layers - 1}")
    readout = find_readout(loaded)
    if lens is not None:
        lens.check(model_identity(loaded))
    return readout


def _unit(ck: Checkpoint | None, key: str, fp: str, compute):
    return compute() if ck is None else ck.arrays(key, fp, compute)


def _npz_save(value: dict, d) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **value)
    atomic_write_bytes(d / "arrays.npz", buf.getvalue())


def _npz_load(d) -> dict:
    with np.load(d / "arrays.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _pick_subset(model: LoadedModel, rows: np.ndarray, readout: Readout, params: LensParams) -> dict:
    """The training vocabulary subset: the most final-distribution mass over ``subset_tokens`` tokens."""
    import torch

    T = params.block_len
    h = hidden_states(model, rows[:max(1, math.ceil(params.subset_tokens / T))], [model.n_layers - 1])[0, :, :T]
    h = torch.as_tensor(h.reshape(-1, h.shape[-1])[:params.subset_tokens])
    with torch.no_grad():
        mass = sum(torch.softmax(readout.logits(h[j:j + 64]), -1).sum(0) for j in range(0, h.shape[0], 64))
    return {"subset": choose_subset(torch.log(mass)[None], params.vocab_subset)}


def _train_stage(model: LoadedModel, data: LensData, params: LensParams, readout: Readout, layers: list[int],
                 lens: TunedLens | None, base_fp: str, ck: Checkpoint | None, progress):
    """Train the translators of ``layers`` (except the last and those ``lens`` has) in one streamed pass.

    Units: ``subset``; ``translator_<L>`` per layer; ``tuned_state`` (the optimiser state after each
    chunk of training rows, so an interrupted run resumes mid-training).
    Returns (TunedLens, losses, trained layers, subset, training tokens).
    """
    import torch

    last = model.n_layers - 1
    T = params.block_len
    rows = data.train.rows
    subset = None
    nothing_to_train = lens is not None and all(L in lens.weights for L in layers if L != last)
    if lens is not None and lens.subset is not None:
        subset = np.asarray(lens.subset)
    elif params.vocab_subset and not nothing_to_train:
        fp = fingerprint(base_fp, "subset", params.vocab_subset, params.subset_tokens)
        subset = _unit(ck, "subset", fp, lambda: _pick_subset(model, rows, readout, params))["subset"]
    cfg = {"steps": params.steps, "batch_tokens": params.batch_tokens, "lr": params.lr,
           "vocab_subset": params.vocab_subset, "vocab_sample": params.vocab_sample, "train_dtype": params.train_dtype,
           "train_tokens": int(rows.shape[0] * T), "chunk_tokens": params.chunk_tokens, "seed": params.seed,
           "objective": "subset + sampled rest bucket" if params.vocab_subset else "full vocabulary"}
    trained = TunedLens(identity=model_identity(model), subset=subset, config=cfg)
    units, todo, fps = {}, [], {}
    for L in layers:
        if L == last:
            continue
        if lens is not None and L in lens.weights:
            trained.weights[L], trained.biases[L] = lens.weights[L], lens.biases[L]
            continue
        fps[L] = fingerprint(base_fp, "translator", L, cfg, subset)
        u = None if ck is None else ck.get(f"translator_{L}", fps[L], _npz_load)
        if u is None:
            todo.append(L)
        else:
            units[L] = u
    if todo:
        R = max(1, math.ceil(params.chunk_tokens / T))
        n_chunks = math.ceil(rows.shape[0] / R)
        read = sorted(set(todo) | {last})
        fps_state = fingerprint(base_fp, "tuned_state", todo, cfg, subset)
        resume = None if ck is None else ck.get("tuned_state", fps_state, _npz_load)
        if resume is not None:
            say(progress, f"lens: resuming the tuned-lens training after chunk {int(resume['next_chunk'])}/{n_chunks}")

        def source(c):
            say(progress, f"lens: training chunk {c + 1}/{n_chunks} (rows {c * R}..{min(len(rows), (c + 1) * R) - 1})")
            st = hidden_states(model, rows[c * R:(c + 1) * R], read)[:, :, :T]
            states = {L: torch.as_tensor(st[i].reshape(-1, st.shape[-1])) for i, L in enumerate(read)}
            states["final"] = states[last]
            return states

        def snapshot(state):
            if ck is not None:
                ck.put("tuned_state", fps_state, lambda d: _npz_save(state, d))

        state = train_lenses(source, n_chunks, todo, readout, subset=subset, n_sample=params.vocab_sample,
                             steps=params.steps, batch=params.batch_tokens, lr=params.lr, seed=params.seed,
                             dtype=params.train_dtype, resume=resume, snapshot=snapshot, progress=progress)
        for L in todo:
            units[L] = _unit(ck, f"translator_{L}", fps[L], lambda L=L: translator(state, L))
    losses, trained_layers = [], []
    for L in sorted(units):
        trained.weights[L], trained.biases[L] = units[L]["A"], units[L]["b"]
        losses.append(units[L]["loss"])
        trained_layers.append(L)
        ls = units[L]["loss"]
        k = max(1, len(ls) // 10)
        say(progress, f"lens: layer {L} translator ready (training KL {float(np.mean(ls[:k])) if len(ls) else float('nan'):.4f}"
                      f" -> {float(np.mean(ls[-k:])) if len(ls) else float('nan'):.4f})")
    return trained, losses, trained_layers, subset, int(rows.shape[0] * T)


def analyze(model: LoadedModel, corpus, params: LensParams, *, data: LensData | None = None,
            lens: TunedLens | None = None, checkpoint: Checkpoint | None = None,
            progress: Callable[[str], None] | None = None) -> LensResult:
    """Logit lens, tuned lens and probes per layer of ``model`` on ``corpus``.

    Parameters
    ----------
    model : LoadedModel
    corpus : Corpus or None
        Documents with genres (None: the built-in corpus).  Ignored when ``data`` is given.
    params : LensParams
    data : LensData, optional
        Rows already built by :func:`lens_data`.
    lens : TunedLens, optional
        Pretrained translators (checked against the model); layers it lacks are trained.
    checkpoint : Checkpoint, optional
        Units: ``subset``, ``tuned_state``, ``translator_<L>``, ``evaluation``, ``probes_<L>_<task>``,
        ``causal_baseline``, ``causal_<L>_<task>``.
    progress : callable, optional

    Returns
    -------
    LensResult
    """
    params.validate()
    readout = check_inputs(model, params, lens)
    data = data if data is not None else lens_data(model.tokenizer, corpus, params)
    ident = model_identity(model)
    layers = read_layers(model, params)
    last = model.n_layers - 1
    pos = {L: i for i, L in enumerate(layers)}
    T = params.block_len
    base_fp = fingerprint(ident, data.fingerprint(), params.seed, params.block_len)
    timings: dict[str, float] = {}

    # -- tuned lens: every layer in one pass over streamed training chunks (resumable) ----------
    t0 = time.perf_counter()
    trained, losses, trained_layers, subset, n_train = _train_stage(model, data, params, readout, layers, lens, base_fp,
                                                                    checkpoint, progress)
    timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    read: list[np.ndarray] = []

    def ev_states() -> np.ndarray:  # read on first use: a resumed run with every unit done runs no forward pass
        if not read:
            say(progress, f"lens: reading {len(layers)} layers of {data.heldout.rows.shape[0]} held-out rows")
            t = time.perf_counter()
            read.append(hidden_states(model, data.heldout.rows, layers, progress=progress)[:, :, :T])
            timings["heldout_states"] = time.perf_counter() - t
        return read[0]

    timings["heldout_states"] = 0.0
    d = model.d_model

    # -- evaluation on held-out documents -----------------------------------------------------
    t0 = time.perf_counter()
    targets = data.heldout.rows[:, 2:2 + T]
    transl = {pos[L]: trained.torch_params(L) for L in layers if L in trained.weights}
    fp = fingerprint(base_fp, "evaluation v2", layers, params.eval_dtype,
                     [(L, trained.weights[L], trained.biases[L]) for L in sorted(trained.weights)],
                     None if subset is None else subset)
    ev = _unit(checkpoint, "evaluation", fp, lambda: evaluate_lenses(
        ev_states(), pos[last], targets, readout, transl, dtype=params.eval_dtype, subset=subset, progress=progress))
    timings["evaluate"] = time.perf_counter() - t0 - timings["heldout_states"]

    recs: dict[int, LensLayer] = {}
    for L in layers:
        rec = LensLayer(layer=L)
        for name in ("logit", "tuned"):
            scores = LensScores()
            for m, metric in enumerate(("ce", "kl", "entropy", "top1")):
                mean, lo, hi = block_bootstrap(ev[name][pos[L], :, :, m], n_boot=params.n_boot, seed=params.seed)
                setattr(scores, metric, Interval(mean, lo, hi))
            setattr(rec, name, scores)
        if L in trained_layers:
            ls = losses[trained_layers.index(L)]
            k = max(1, len(ls) // 10)
            if len(ls):
                rec.train_kl_start, rec.train_kl_end = float(ls[:k].mean()), float(ls[-k:].mean())
        recs[L] = rec

    # -- probes and the causal check ----------------------------------------------------------
    baseline = float("nan")
    if params.probes:
        t0 = time.perf_counter()
        baseline = _probes(model, data, params, layers, pos, ev_states, recs, base_fp, checkpoint, progress)
        timings["probes"] = time.perf_counter() - t0

    traj = _trajectory_unit(checkpoint, fingerprint(fp, "trajectory", params.sentence),
                            lambda: trajectory(model, readout, trained, params.sentence, layers))
    sel = layers if params.layers is None else sorted(set(params.layers) | {last})
    result = LensResult(params=params, model=model.name, n_layers=model.n_layers, d_model=d, vocab=ident["vocab"],
                        softcap=readout.softcap, subset_size=0 if subset is None else int(len(subset)),
                        subset_mass=float(np.nanmean(ev["subset_mass"])) if subset is not None else float("nan"),
                        n_train_tokens=n_train, n_eval_tokens=int(targets.size),
                        n_eval_docs=int(targets.shape[0]), baseline_loss=baseline,
                        layers=[recs[L] for L in sel], trajectory=traj,
                        train_loss=np.stack(losses) if losses else np.zeros((0, params.steps), dtype=np.float32),
                        trained_layers=trained_layers, timings=timings)
    result._lens = trained
    return result


def _probe_pool(data: LensData, params: LensParams) -> LabelledRows:
    """Training rows for the probes: the first ``2 * probe_tokens`` tokens of the training rows plus
    as many rows of code documents (the Python-category probe's labels)."""
    T = params.block_len
    n = max(1, math.ceil(2 * params.probe_tokens / T))
    cats = data.train.categories
    code = [i for i in range(len(data.train.rows)) if cats is not None and (cats[i, :T] >= 0).any()][:n]
    idx = sorted(set(range(min(n, len(data.train.rows)))) | set(code))
    return LabelledRows(rows=data.train.rows[idx], genres=[data.train.genres[i] for i in idx],
                        doc_ids=[data.train.doc_ids[i] for i in idx] if data.train.doc_ids else [],
                        categories=None if cats is None else cats[idx])


def _probe_sets(pool: LabelledRows, data: LensData, params: LensParams, tr_states, ev_states, i: int, task: str):
    """(Xtr, ytr, ttr, Xte, yte, tte) for one task at the read-layer index ``i``."""
    T = params.block_len
    names = sorted(set(data.train.genres) | set(data.heldout.genres))
    out = []
    for rows, states in ((pool, tr_states), (data.heldout, ev_states)):
        ids = rows.rows[:, 1:1 + T]
        if task == "genre":
            y = np.repeat(np.asarray([names.index(g) for g in rows.genres]), T).reshape(-1, T)
        else:
            y = rows.categories[:, :T].astype(np.int64)
        keep = y.reshape(-1) >= 0
        X = states[i].reshape(-1, states.shape[-1])[keep]
        out.append((X, y.reshape(-1)[keep], ids.reshape(-1)[keep]))
    (Xtr, ytr, ttr), (Xte, yte, tte) = out
    if len(ytr) > params.probe_tokens:
        rng = np.random.default_rng([params.seed, 31, TASKS.index(task)])
        pick = np.sort(rng.choice(len(ytr), params.probe_tokens, replace=False))
        Xtr, ytr, ttr = Xtr[pick], ytr[pick], ttr[pick]
    return Xtr, ytr, ttr, Xte, yte, tte


def _probes(model, data, params, layers, pos, ev_states, recs, base_fp, ck, progress) -> float:
    loss_rows = data.heldout.rows[:params.causal_rows]
    baseline = float("nan")
    if params.causal_layers:
        fpb = fingerprint(base_fp, "baseline", params.causal_rows)
        baseline = float(_unit(ck, "causal_baseline", fpb,
                               lambda: {"loss": np.asarray([heldout_loss(model, loss_rows).loss])})["loss"][0])
    pool = _probe_pool(data, params)
    tr: list[np.ndarray] = []

    def tr_states() -> np.ndarray:  # read on first use: a resumed run with every unit done runs no forward pass
        if not tr:
            say(progress, "lens: reading the probes' training rows")
            tr.append(hidden_states(model, pool.rows, layers)[:, :, :params.block_len])
        return tr[0]

    for L in layers:
        if params.layers is not None and L not in params.layers and L not in params.causal_layers:
            continue
        i = pos[L]
        for k, task in enumerate(TASKS):
            cache: list = []

            def sets(i=i, task=task, cache=cache):
                if not cache:
                    cache.append(_probe_sets(pool, data, params, tr_states(), ev_states(), i, task))
                return cache[0]

            fp = fingerprint(base_fp, "probe v2", L, task, params.probe_tokens)

            def fit(sets=sets, k=k):
                Xtr, ytr, ttr, Xte, yte, tte = sets()
                if len(ytr) < 10 or len(yte) < 10 or len(np.unique(ytr)) < 2:
                    return {"scores": np.zeros(0)}  # skipped (kept, so a resumed run skips it without states)
                real = fit_probe(Xtr, ytr, Xte, yte, seed=params.seed)
                ctl_y = control_labels(np.concatenate([ttr, tte]), np.concatenate([ytr, yte]), seed=params.seed, key=k)
                ctl = fit_probe(Xtr, ctl_y[:len(ytr)], Xte, ctl_y[len(ytr):], seed=params.seed)
                U = probe_directions(real.weights)
                mu = (Xtr @ U.T).mean(0) if len(U) else np.zeros(0)
                return {"scores": np.asarray([real.accuracy, ctl.accuracy, real.chance, real.n_classes, len(ytr),
                                              len(yte)]), "U": U, "mu": mu, "sd": Xtr.std(0)}

            u = _unit(ck, f"probes_{L}_{task}", fp, fit)
            if not len(u["scores"]):
                say(progress, f"lens: layer {L} probe {task}: too few labelled tokens or one class; skipped")
                continue
            acc, ctl, chance, ncls, ntr, nte = u["scores"]
            recs[L].probes.append(ProbeScore(task=task, accuracy=float(acc), control=float(ctl),
                                             selectivity=float(acc - ctl), chance=float(chance),
                                             n_classes=int(ncls), n_train=int(ntr), n_test=int(nte)))
            say(progress, f"lens: layer {L} probe {task}: accuracy {acc:.3f}, control {ctl:.3f}, chance {chance:.3f}")
            if L in params.causal_layers and len(u["U"]):
                recs[L].causal.append(_causal(model, L, task, k, u["U"], u["mu"], u["sd"], lambda sets=sets: sets()[0],
                                              loss_rows, baseline, params, base_fp, ck, progress))
    return baseline


def _causal(model, L, task, k, U, mu, sd, train_states, loss_rows, baseline, params, base_fp, ck,
            progress) -> CausalCheck:
    """Held-out loss with the probe directions ``U`` mean-ablated at block ``L``, against random
    directions of the same count scaled like the training states (``sd``; ``train_states()`` gives
    the states, only read when the unit is computed)."""
    fp = fingerprint(base_fp, "causal", L, task, U, mu, params.causal_rows, params.causal_random)

    def run():
        Xtr = train_states()
        with ablate_directions(model, L, U, mu):
            ablated = heldout_loss(model, loss_rows).loss
        rand = []
        for r in range(params.causal_random):
            R = random_directions(len(U), U.shape[1], seed=params.seed, key=1000 * L + 10 * k + r, scale=sd)
            with ablate_directions(model, L, R, (Xtr @ R.T).mean(0)):
                rand.append(heldout_loss(model, loss_rows).loss)
        return {"ablated": np.asarray([ablated]), "random": np.asarray(rand)}

    u = _unit(ck, f"causal_{L}_{task}", fp, run)
    ablated = float(u["ablated"][0])
    rd = [float(x) - baseline for x in u["random"]]
    rm = float(np.mean(rd))
    c = CausalCheck(task=task, n_dirs=int(len(U)), ablated=ablated, delta=ablated - baseline, random_deltas=rd,
                    random_mean=rm, random_std=float(np.std(rd, ddof=1)) if len(rd) > 1 else float("nan"),
                    ratio=(ablated - baseline) / rm if abs(rm) > 1e-9 else float("nan"))
    say(progress, f"lens: layer {L} ablate {task} ({c.n_dirs} dirs): loss +{c.delta:.4f} vs random +{rm:.4f}")
    return c


def _trajectory_unit(ck: Checkpoint | None, fp: str, compute) -> Trajectory:
    """:func:`trajectory` through the checkpoint (token strings as unicode arrays, no pickle)."""
    def arrays() -> dict:
        t = compute()
        return {"tokens": np.asarray(t.tokens, dtype=str), "layers": np.asarray(t.layers, dtype=np.int64),
                "logit_top": np.asarray(t.logit_top, dtype=str), "tuned_top": np.asarray(t.tuned_top, dtype=str),
                "logit_prob": t.logit_prob, "tuned_prob": t.tuned_prob}

    u = _unit(ck, "trajectory", fp, arrays)
    return Trajectory(tokens=[str(x) for x in u["tokens"]], layers=[int(x) for x in u["layers"]],
                      logit_top=[[str(x) for x in row] for row in u["logit_top"]],
                      tuned_top=[[str(x) for x in row] for row in u["tuned_top"]],
                      logit_prob=np.asarray(u["logit_prob"], dtype=np.float32),
                      tuned_prob=np.asarray(u["tuned_prob"], dtype=np.float32))


def trajectory(model: LoadedModel, readout: Readout, lens: TunedLens, sentence: str, layers: list[int]) -> Trajectory:
    """Top token (and its probability) per layer and position of ``sentence`` under both lenses."""
    import torch

    tok = model.tokenizer
    ids = [model.bos_token_id] + tok(sentence, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise InputError(f"sentence: {sentence!r} has no tokens; expected a non-empty text")
    states = hidden_states(model, np.asarray([ids], dtype=np.int64), layers)[:, 0]
    tr = Trajectory(tokens=[tok.decode([t]) for t in ids[1:]], layers=list(layers))
    lp, tp = [], []
    with torch.no_grad():
        for i, L in enumerate(layers):
            h = torch.as_tensor(states[i])
            for name, logits in (("logit", readout.logits(h)),
                                 ("tuned", readout.logits(h + h @ lens.torch_params(L)[0].T + lens.torch_params(L)[1]))):
                p = torch.softmax(logits, -1)
                val, idx = p.max(-1)
                (tr.logit_top if name == "logit" else tr.tuned_top).append([tok.decode([int(t)]) for t in idx])
                (lp if name == "logit" else tp).append(val.numpy())
    tr.logit_prob = np.stack(lp).astype(np.float32)
    tr.tuned_prob = np.stack(tp).astype(np.float32)
    return tr
