"""Scale-out on Dask, with real worker processes (a LocalCluster of 2), never mocks: co-occurrence counts
and covariance spectra from the cluster equal the single-process ones, the tasks ran in two worker
processes other than this one, and a scheduler address that does not answer is a one-line error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import sparse

from featuregeo.core.data import FeatureCloud
from featuregeo.core.errors import InputError
from featuregeo.io.cluster import check_cluster_options, connect, map_ordered, worker_pids
from featuregeo.tl.galaxy import GalaxyParams
from featuregeo.tl.galaxy.analysis import analyze_cloud
from featuregeo.tl.lobes import cooccurrence

FEATUREGEO = [sys.executable, "-m", "featuregeo"]


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes (1 thread each), shared by the module."""
    with connect(workers=2) as c:
        yield c


def planted_firing(seed: int = 0) -> sparse.csr_matrix:
    """5000 blocks x 300 features: three groups of 20 features that fire together, plus 2% noise."""
    rng = np.random.default_rng(seed)
    B = rng.random((5000, 300)) < 0.02
    for g in range(3):
        on = rng.random(5000) < 0.1
        B[np.ix_(on, np.arange(20 * g, 20 * g + 20))] |= rng.random((on.sum(), 20)) < 0.8
    return sparse.csr_matrix(B.astype(np.uint8))


def ran_on(client, fn):
    """Run ``fn()`` and return the set of process ids whose workers executed its tasks."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        fn()
    pids = worker_pids(client)
    return {pids[t["worker"]] for t in ts.data if t["worker"] in pids}


def test_cooccurrence_counts_identical_on_two_workers(client):
    B = planted_firing()
    serial = cooccurrence(B, storage="dense")
    box = {}
    pids = ran_on(client, lambda: box.setdefault("co", cooccurrence(B, storage="dense", client=client)))
    co = box["co"]
    truth = (B.T.astype(np.int64) @ B.astype(np.int64)).toarray()
    assert co.pairs.dtype == serial.pairs.dtype
    assert np.array_equal(co.pairs, serial.pairs) and np.array_equal(co.pairs, truth)
    assert np.array_equal(co.counts, serial.counts) and co.n_blocks == 5000
    assert "Dask cluster" in co.note
    # the planted groups co-fire far above the noise pairs
    within, across = co.pairs[:20, :20][~np.eye(20, dtype=bool)].mean(), co.pairs[:20, 40:60].mean()
    assert within > 5 * across
    # three chunks of 2048 blocks ran in the two worker processes, not in this one
    assert len(pids) == 2 and os.getpid() not in pids


def test_spectrum_equals_serial_and_tasks_ran_in_two_workers(client):
    rng = np.random.default_rng(1)
    d = 48
    scales = np.arange(1, d + 1, dtype=np.float64) ** -0.5  # planted power-law spectrum, slope -1
    x = (rng.standard_normal((3000, d)) * scales + 5.0).astype(np.float32)
    cloud = FeatureCloud(x, layer=4)
    p = GalaxyParams(fit_ranks=(2, 30), chunk_rows=400, entropy=False, slope_bootstrap=0)
    serial = analyze_cloud(cloud, p)
    box = {}
    pids = ran_on(client, lambda: box.setdefault("rec", analyze_cloud(cloud, p, client=client)))
    rec = box["rec"]
    np.testing.assert_allclose(rec.eigenvalues, serial.eigenvalues, rtol=1e-10, atol=0)
    np.testing.assert_allclose(rec.null_eigenvalues, serial.null_eigenvalues, rtol=1e-10, atol=0)
    assert rec.slope == pytest.approx(serial.slope, rel=1e-10)
    assert -1.15 < rec.slope < -0.85  # the planted slope is recovered
    expected = np.sort(np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False)))[::-1]
    np.testing.assert_allclose(rec.eigenvalues, expected, rtol=1e-4)
    assert len(pids) == 2 and os.getpid() not in pids


def test_map_ordered_keeps_input_order_with_a_small_window(client):
    got = list(map_ordered(client, pow, range(30), 2, window=3))
    assert got == [i ** 2 for i in range(30)]


def test_cluster_options_are_checked():
    with pytest.raises(InputError, match="--scheduler, --workers: expected one of them"):
        check_cluster_options("tcp://127.0.0.1:1", 2)
    with pytest.raises(InputError, match="--workers"):
        check_cluster_options(None, 0)
    with connect() as c:
        assert c is None


def test_silent_scheduler_is_one_line_exit_2_within_10s(tmp_path):
    """A socket that accepts but never answers (the hard case: a Client would wait forever)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    addr = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    try:
        t0 = time.perf_counter()
        out = subprocess.run(FEATUREGEO + ["harvest", "default", "--out", str(tmp_path / "h"), "--scheduler", addr],
                             capture_output=True, text=True, timeout=60)
        elapsed = time.perf_counter() - t0
    finally:
        srv.close()
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"featuregeo harvest: error: --scheduler {addr}: no Dask scheduler")
    assert elapsed < 10
    assert not (tmp_path / "h").exists()


def test_cli_parsing_imports_no_dask():
    code = ("import sys, featuregeo.cli as c; c.build_parser().parse_args(['harvest', 'x', '--out', 'y', "
            "'--workers', '2']); print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
