"""The CLI on real Dask processes with the real Gemma 3 270M (slow):

- ``featuregeo harvest --workers 2``: a client SIGKILLed mid-run (with its LocalCluster) is resumed
  from its finished shards, which are not rewritten, and the result is byte-identical to serial;
- ``dask scheduler`` + ``dask worker`` started as separate processes on localhost: ``harvest
  --scheduler`` is byte-identical to serial, ``lobes --scheduler`` and ``galaxy --scheduler`` equal
  the serial runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_cluster_harvest import tree

pytestmark = pytest.mark.slow

FEATUREGEO = [sys.executable, "-m", "featuregeo"]
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
    os.pathsep) if p])}
#: one layer of the shipped default suite, 16 shards of 4 blocks x 64 tokens
CLI_HARVEST = ["harvest", "default", "--layers", "9", "--block-len", "64", "--batch-size", "4", "--shard-batches", "1",
               "--max-blocks", "64", "--max-blocks-per-doc", "2"]
N_SHARDS = 16


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(FEATUREGEO + [str(a) for a in args], capture_output=True, text=True, env=ENV, **kw)


@pytest.fixture(scope="module")
def cli_serial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "serial"
    r = run(CLI_HARVEST + ["--out", out], timeout=900)
    assert r.returncode == 0, r.stderr
    return out


def test_killed_client_resumes_from_finished_shards(cli_serial, tmp_path):
    out = tmp_path / "h"
    p = subprocess.Popen(FEATUREGEO + CLI_HARVEST + ["--out", str(out), "--workers", "2"], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while len(list((out / "shards").glob("shard_*.npz"))) < 3:
            assert p.poll() is None, "the harvest ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)  # the client and its LocalCluster
        p.wait(60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    finished = {q.name: q.stat().st_ino for q in (out / "shards").glob("shard_*.npz")}
    assert 3 <= len(finished) < N_SHARDS and not json.loads((out / "harvest.json").read_text())["complete"]
    r = run(CLI_HARVEST + ["--out", out, "--workers", "2"], timeout=900)
    assert r.returncode == 0, r.stderr
    assert f"{len(finished)} of {N_SHARDS} shards were already finished (resumed)" in r.stderr
    assert all((out / "shards" / name).stat().st_ino == ino for name, ino in finished.items())  # not rewritten
    assert tree(out) == tree(cli_serial)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """``dask scheduler`` and ``dask worker`` (2 processes, 1 thread each) as separate processes on localhost."""
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    dask_bin = Path(sys.executable).with_name("dask")
    procs = [subprocess.Popen([str(dask_bin), "scheduler", "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(sched_file)], env=ENV, cwd=d, stdout=subprocess.DEVNULL,
                              stderr=open(d / "scheduler.log", "w"), start_new_session=True)]
    try:
        deadline = time.monotonic() + 120
        while not sched_file.exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, (d / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.5)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([str(dask_bin), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard"], env=ENV, cwd=d, stdout=subprocess.DEVNULL,
                                      stderr=open(d / "worker.log", "w"), start_new_session=True))
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=120)
            pids = set(c.run(os.getpid).values())
        yield address, pids
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_cli_on_dask_scheduler_and_workers(dask_cluster, cli_serial, tmp_path):
    address, pids = dask_cluster
    assert len(pids) == 2
    # harvest: byte-identical to the serial CLI harvest, shards written by the dask worker processes
    r = run(CLI_HARVEST + ["--out", tmp_path / "h", "--scheduler", address], timeout=900)
    assert r.returncode == 0, r.stderr
    assert tree(tmp_path / "h") == tree(cli_serial)
    wrote = {int(w.split(",")[0]) for w in r.stderr.split(" pid ")[1:]}
    assert wrote == pids
    # lobes: co-occurrence counted on the workers; every labeling and statistic equals the serial run
    lobes = ["lobes", "default", "--harvest", cli_serial, "--n-clusters", "2,3,4", "--permutations", "20",
             "--logreg-null", "2", "--heldout-fraction", "0"]
    rs, rd = run(lobes + ["--out", tmp_path / "ls"], timeout=900), run(lobes + ["--out", tmp_path / "ld", "--scheduler",
                                                                               address], timeout=900)
    assert rs.returncode == 0 and rd.returncode == 0, rs.stderr + rd.stderr
    from featuregeo.tl.lobes import LobesResult

    a, b = LobesResult.load(tmp_path / "ls").layers[0], LobesResult.load(tmp_path / "ld").layers[0]
    assert "Dask cluster" in b.cooccurrence.note and a.cooccurrence.n_blocks == b.cooccurrence.n_blocks == 64
    assert a.lobe_labels.keys() == b.lobe_labels.keys()
    assert all(np.array_equal(a.lobe_labels[k], b.lobe_labels[k]) for k in a.lobe_labels)
    assert [r.ami for r in a.records] == [r.ami for r in b.records]
    # galaxy: the spectrum from the workers equals the serial one
    galaxy = ["galaxy", "default", "--layers", "3,9", "--no-entropy", "--slope-bootstrap", "0"]
    rs, rd = run(galaxy + ["--out", tmp_path / "gs"], timeout=900), run(galaxy + ["--out", tmp_path / "gd",
                                                                                  "--scheduler", address], timeout=900)
    assert rs.returncode == 0 and rd.returncode == 0, rs.stderr + rd.stderr
    from featuregeo.tl.galaxy import GalaxyResult

    for x, y in zip(GalaxyResult.load(tmp_path / "gs").layers, GalaxyResult.load(tmp_path / "gd").layers):
        np.testing.assert_allclose(y.eigenvalues, x.eigenvalues, rtol=1e-10, atol=0)
        np.testing.assert_allclose(y.null_eigenvalues, x.null_eigenvalues, rtol=1e-10, atol=0)
        assert y.slope == pytest.approx(x.slope, rel=1e-10)
    shutil.rmtree(tmp_path, ignore_errors=True)
