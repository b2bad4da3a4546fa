"""Distributed harvest on the real Gemma 3 270M with a LocalCluster of 2 real worker processes (slow):
byte-identical to the serial harvest, shards written by two worker processes other than this one, and
a worker SIGKILLed mid-harvest changes nothing.  The CLI checks are in test_cluster_cli.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from featuregeo.io.cluster import connect, worker_pids
from featuregeo.io.harvest import HarvestParams, harvest
from featuregeo.io.harvest.distributed import harvest_distributed

pytestmark = pytest.mark.slow

#: 8 shards of 2 blocks x 32 tokens, activations stored (so shard 0 fixes the activation scale first)
P = HarvestParams(block_len=32, batch_size=2, shard_blocks=2, max_blocks=16, max_blocks_per_doc=6,
                  store_activations=True)


def tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (relative path -> bytes) except the lock."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def client():
    with connect(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def serial(default_model, harvest_docs, harvest_saes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "h"
    harvest(default_model, harvest_docs, out, P, saes=harvest_saes)
    return out


def test_distributed_harvest_byte_identical_in_two_worker_processes(client, default_model, harvest_docs,
                                                                    harvest_saes, serial, tmp_path):
    done = []
    h = harvest_distributed(client, default_model, harvest_docs, tmp_path / "h", P, saes=harvest_saes,
                            on_shard=done.append)
    assert h.complete and h.n_shards == 8 and h.n_blocks == 16
    ref = tree(serial)
    # manifest, shards, activations of 2 layers, and the dashboards' logit effects of the 2 SAE layers
    assert len(ref) == 1 + 8 + 2 * 8 + 2, sorted(ref)
    assert sum(k.startswith("dashboards/logits_") for k in ref) == 2
    assert tree(tmp_path / "h") == ref
    pids = {r.pid for r in done}
    assert sorted(r.index for r in done) == list(range(8))
    assert len(pids) == 2 and os.getpid() not in pids and pids <= set(worker_pids(client).values())
    # a rerun finds every shard finished and computes nothing
    again = []
    harvest_distributed(client, default_model, harvest_docs, tmp_path / "h", P, saes=harvest_saes,
                        on_shard=again.append)
    assert again == [] and tree(tmp_path / "h") == ref


def test_worker_sigkilled_mid_harvest_changes_nothing(client, default_model, harvest_docs, harvest_saes, serial,
                                                      tmp_path):
    killed = []

    def kill_a_busy_worker(r) -> None:
        if killed:
            return
        busy = [addr for addr, keys in client.processing().items() if keys]
        if not busy:  # shard 0 runs alone first (it fixes the activation scale): kill at a later shard
            return
        pid = worker_pids(client)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    done = []
    h = harvest_distributed(client, default_model, harvest_docs, tmp_path / "h", P, saes=harvest_saes,
                            on_shard=lambda r: (done.append(r), kill_a_busy_worker(r)))
    assert killed, "no worker was running a shard when any shard finished"
    assert killed[0] not in set(worker_pids(client).values())  # that process is gone (restarted anew)
    assert h.complete and tree(tmp_path / "h") == tree(serial)
    assert sorted({r.index for r in done}) == list(range(8))
    assert not list((tmp_path / "h").rglob("*.tmp"))
