"""A harvest on a Dask cluster: the same shards, written by worker processes to shared storage.

The client plans the harvest exactly as :func:`~featuregeo.io.harvest.run.harvest` does (every input
checked, the fingerprint, the manifest), cuts the corpus into the same shards, and sends each
unfinished shard to a worker; the worker runs the very function the serial loop runs
(:func:`~featuregeo.io.harvest.run.write_shard`) with a model and SAEs it loaded once
(:class:`WorkerInputs`, cached per worker process) and writes the shard's files atomically into
the harvest directory, which must be mounted at the same path on every machine.  So the files are
the serial harvest's, byte for byte, whichever worker wrote them; a shard whose worker dies is
rerun by another; a client that dies loses nothing finished — the same call resumes.

With ``store_activations`` the activation scale comes from the harvest's first batch, so shard 0
runs alone first (as it does in the serial loop) and the others follow with its scale.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_json, fingerprint
from featuregeo.io.corpus import Block, Corpus, Document
from featuregeo.io.harvest.files import MANIFEST, finished_shards, shard_name
from featuregeo.io.harvest.params import HarvestError, HarvestParams
from featuregeo.io.harvest.reader import Harvest
from featuregeo.io.harvest.dashboards import write_logit_effects
from featuregeo.io.harvest.run import (HarvestPlan, first_blocks, open_harvest_dir, plan_harvest, sae_checksum,
                                       write_shard)
from featuregeo.io.models import LoadedModel, batches


@dataclass(frozen=True)
class WorkerInputs:
    """What a worker loads once to harvest shards: the model by name, the SAEs by source (or shipped).

    Attributes
    ----------
    model, device, dtype : str
        As given to :func:`featuregeo.io.models.load_model` (a path must exist on every machine).
    sae_checksums : tuple of (layer, checksum)
        The SAEs the harvest's fingerprint covers; a worker whose SAEs differ refuses to harvest.
    source : str, optional
        SAE source (:func:`featuregeo.io.open_suite`) every worker can read; without it ``saes``
        travel to the workers pickled.
    saes : mapping layer -> sae-lens SAE, optional
    """

    model: str
    device: str
    dtype: str
    sae_checksums: tuple[tuple[int, str], ...]
    source: str | None = None
    saes: Mapping[int, Any] | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """Identity of what a worker caches (model and SAE weights)."""
        return fingerprint("harvest-worker", self.model, self.device, self.dtype, self.source, self.sae_checksums)

    def load(self) -> tuple[LoadedModel, dict[int, Any]]:
        """Load the model and the SAEs in this process, checking the SAEs against the harvest's checksums."""
        from featuregeo.io.cluster import worker_threads
        from featuregeo.io.models import load_model

        layers = [L for L, _ in self.sae_checksums]
        model = load_model(self.model, device=self.device, dtype=self.dtype, threads=worker_threads())
        if self.saes is not None:
            saes = {int(L): s for L, s in self.saes.items()}
        elif self.source is not None and layers:
            from featuregeo.io import open_suite
            from featuregeo.io.saelens import load_sae

            suite = open_suite(self.source, layers)
            saes = {L: load_sae(suite.load(L)) for L in layers}
        else:
            saes = {}
        for L, want in self.sae_checksums:
            got = sae_checksum(saes[L]) if L in saes else None
            if got != want:
                raise HarvestError(f"worker on {socket.gethostname()}: the SAE of layer {L} has checksum {got}, the "
                                   f"harvest expects {want}; expected the same SAE files on every machine")
        return model, saes


@dataclass(frozen=True)
class ShardDone:
    """What a worker reports for one shard."""

    index: int
    tokens: int
    seconds: float
    pid: int
    host: str
    skipped: bool = False
    activation_scale: Mapping[str, float] = field(default_factory=dict)


def harvest_shard_task(shard: list[Block], inputs: WorkerInputs, plan: HarvestPlan, index: int) -> ShardDone:
    """Run on a worker: harvest shard ``index`` into ``plan.out`` (skipped when its file exists)."""
    from featuregeo.io.cluster import worker_cached, worker_lock

    t0 = time.perf_counter()
    host, pid = socket.gethostname(), os.getpid()
    if not (plan.out / MANIFEST).is_file():
        raise HarvestError(f"worker on {host}: {plan.out / MANIFEST} does not exist here; expected the harvest "
                           "directory on shared storage mounted at the same path on every machine")
    with worker_lock():  # torch hooks on a shared model: one shard at a time in this process
        if (plan.out / "shards" / shard_name(index)).exists():  # written by an earlier attempt of this task
            return ShardDone(index, 0, 0.0, pid, host, skipped=True)
        model, saes = worker_cached(inputs.key, inputs.load)
        local = replace(plan, saes=saes, manifest=copy.deepcopy(plan.manifest))
        n_tok = write_shard(model, local, shard, index)
    return ShardDone(index, n_tok, time.perf_counter() - t0, pid, host,
                     activation_scale=dict(local.manifest["activation_scale"]))


def shared_path(name: str) -> str:
    """A name as workers must see it: an existing relative path made absolute (workers have other cwds)."""
    p = Path(name)
    return str(p.resolve()) if not p.is_absolute() and p.exists() else str(name)


def remove_leftovers(out: Path) -> int:
    """Delete temporary files of writers that died mid-write (``.shard_*.tmp``); returns how many."""
    n = 0
    for p in list(out.glob("shards/.shard_*.tmp")) + list(out.glob("acts/layer_*/.shard_*.tmp")):
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def harvest_distributed(client, model: LoadedModel, corpus: Corpus | Iterable[Document], out: str | Path,
                        params: HarvestParams | None = None, *, saes: Mapping[int, Any] | None = None,
                        source: str | None = None, progress: Callable[[str], Any] | None = None,
                        on_shard: Callable[[ShardDone], Any] | None = None, window: int | None = None) -> Harvest:
    """Run (or resume) a harvest into ``out`` with the shards computed on a Dask cluster.

    The output is byte-identical to :func:`~featuregeo.io.harvest.harvest` with the same inputs.

    Parameters
    ----------
    client : distributed.Client
        From :func:`featuregeo.io.cluster.connect`.
    model : LoadedModel
        Used here for the tokenizer and the checks; workers load their own copy by ``model.name``.
    corpus, out, params, saes
        As for :func:`~featuregeo.io.harvest.harvest`; ``out`` must be on storage every worker sees at
        the same path.
    source : str, optional
        The SAE source ``saes`` were loaded from: workers load them from it (else ``saes`` are sent).
    progress : callable, optional
        One line per finished shard.
    on_shard : callable, optional
        Called with every :class:`ShardDone` (which process wrote the shard, how long it took).
    window : int, optional
        Shards in flight (default: twice the workers, at least 4).

    Returns
    -------
    Harvest
    """
    from distributed import as_completed

    from featuregeo.io.cluster import n_workers

    plan = plan_harvest(model, corpus, out, params or HarvestParams(), saes)
    plan = replace(plan, out=plan.out.resolve())
    block_iter = first_blocks(plan, model.tokenizer)
    say = progress or (lambda line: None)
    inputs = WorkerInputs(model=shared_path(model.name), device=model.device, dtype=model.dtype,
                          sae_checksums=tuple((L, sae_checksum(plan.saes[L])) for L in plan.sae_layers),
                          source=None if source is None else shared_path(source),
                          saes=None if source is not None else plan.saes)
    window = window or max(4, 2 * n_workers(client))
    with Checkpoint(plan.out / ".checkpoint"):  # the lock: one client writes a harvest directory
        open_harvest_dir(plan)
        write_logit_effects(model, plan, say)  # dashboards: once per layer, here (the workers write the shards)
        inputs_f = client.scatter(inputs, broadcast=True, hash=False)
        t0, tokens, done, resumed, n_blocks, index = time.perf_counter(), 0, 0, 0, 0, 0
        need_scale = plan.params.store_activations and any(str(L) not in plan.manifest["activation_scale"]
                                                           for L in plan.layers)
        running = as_completed(loop=client.loop)

        def report(fut) -> ShardDone:
            nonlocal tokens, done
            try:
                r: ShardDone = fut.result()
            except (InputError, HarvestError):
                raise
            except Exception as e:  # e.g. KilledWorker: the shard's workers kept dying
                raise HarvestError(f"harvest shard: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                                   "finished shards are intact — rerun the same command to resume") from None
            tokens += r.tokens
            done += 1
            if on_shard is not None:
                on_shard(r)
            say(f"harvest: shard {r.index} done on {r.host} pid {r.pid}, {done} new shards, "
                f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f} tokens/s")
            return r

        for shard in batches(block_iter, plan.params.shard_blocks):
            n_blocks += len(shard)
            if (plan.out / "shards" / shard_name(index)).exists():  # finished earlier: skip
                resumed += 1
            else:
                worker_plan = replace(plan, saes={}, corpus=Corpus([]))  # what a worker gets: no SAEs, no corpus
                fut = client.submit(harvest_shard_task, shard, inputs_f, worker_plan, index, pure=False)
                if need_scale:  # the activation scale comes from the first batch: this shard runs alone
                    plan.manifest["activation_scale"].update(report(fut).activation_scale)
                    atomic_write_json(plan.out / MANIFEST, plan.manifest)
                    need_scale = False
                else:
                    running.add(fut)
                while running.count() >= window:
                    report(next(running))
            index += 1
        for fut in running:
            report(fut)
        remove_leftovers(plan.out)
        finished_shards(plan.out, plan.manifest)  # every shard present, consecutive
        plan.manifest.update(complete=True, n_blocks=n_blocks, n_shards=index)
        atomic_write_json(plan.out / MANIFEST, plan.manifest)
    if resumed:
        say(f"harvest: {resumed} of {index} shards were already finished (resumed)")
    return Harvest(plan.out)


__all__ = ["harvest_distributed", "harvest_shard_task", "WorkerInputs", "ShardDone", "remove_leftovers"]
