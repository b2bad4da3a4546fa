"""Dask distributed as the engine of featuregeo's map-reduce work (harvest shards, co-occurrence, spectra).

:func:`connect` turns the two command-line options into a ``distributed.Client``:

- ``scheduler="tcp://HOST:8786"`` connects to a running cluster (``dask scheduler`` on one machine,
  ``dask worker tcp://HOST:8786 --nthreads 1`` on each machine); a scheduler that does not answer is a
  one-line :class:`~featuregeo.core.errors.InputError` within :data:`CONNECT_TIMEOUT` seconds;
- ``workers=N`` starts a ``LocalCluster`` of N worker processes with one thread each;
- neither gives ``None``: the caller's single-process path.

The work itself stays in the modules that own it; they call :func:`map_ordered` (results in input
order, a bounded number of tasks in flight, so a sum reduced by the caller has one fixed order
whatever the number of workers) and, inside tasks, :func:`worker_cached` (load a model once per
worker process) and :func:`worker_lock` (one task at a time uses it).  Dask is imported lazily.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from featuregeo.core.errors import InputError
from featuregeo.core.results import check_int

#: seconds to wait for a scheduler to answer before giving up
CONNECT_TIMEOUT = 4.0

_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()
_USE_LOCK = threading.RLock()


def check_cluster_options(scheduler: str | None, workers: int | None, *, probe: bool = False,
                          timeout: float = CONNECT_TIMEOUT) -> None:
    """``--scheduler`` / ``--workers`` checked (one-line InputError naming the option).

    With ``probe`` the scheduler is also asked who it is (within ``timeout`` seconds), so a pipeline
    can fail fast on an address that does not answer and connect later.
    """
    if scheduler is not None and workers is not None:
        raise InputError(f"--scheduler, --workers: expected one of them (a running cluster or a local one). "
                         f"Got --scheduler {scheduler} and --workers {workers}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise InputError(f"--scheduler: expected a Dask scheduler address such as tcp://HOST:8786. "
                         f"Got {scheduler!r} instead.")
    if workers is not None:
        check_int("--workers", workers, minimum=1)
    if probe and scheduler is not None:
        try:
            with quiet_dask():
                probe_scheduler(scheduler, timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise not_answering(scheduler, e) from None


def not_answering(scheduler: str, e: BaseException) -> InputError:
    """The one-line error for a scheduler address that does not answer."""
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return InputError(f"--scheduler {scheduler}: no Dask scheduler answered ({reason[:120]}); expected the "
                      "address `dask scheduler` prints, e.g. tcp://HOST:8786")


@contextlib.contextmanager
def quiet_dask(level: int = logging.CRITICAL) -> Iterator[None]:
    """Silence the ``distributed`` loggers (connection retries, worker restarts) inside the block."""
    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.client", "distributed.core",
                                               "distributed.comm", "tornado")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


async def _identity(address: str, timeout: float) -> dict:
    from distributed.comm import connect as comm_connect

    comm = await comm_connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        await comm.close()


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> dict:
    """The scheduler's identity (``{"type": "Scheduler", ...}``), asked with a hard wall-clock ``timeout``.

    ``distributed.Client`` waits forever on a socket that accepts but never answers; this asks in a
    thread of its own and gives up after ``timeout`` seconds (``TimeoutError``).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    ex = ThreadPoolExecutor(1)
    fut = ex.submit(asyncio.run, asyncio.wait_for(_identity(address, timeout), timeout))
    try:
        info = fut.result(timeout + 1.0)
    except FutureTimeout:
        raise TimeoutError(f"no answer after {timeout:g} s") from None
    except (OSError, TimeoutError, ValueError):
        raise
    except Exception as e:  # e.g. another protocol answered: its bytes are not a Dask message
        raise ValueError(f"it answered in another protocol ({type(e).__name__})") from None
    finally:
        ex.shutdown(wait=False)
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        raise ValueError(f"not a Dask scheduler (it answered {str(info)[:60]!r})")
    return info


def open_client(scheduler: str, timeout: float = CONNECT_TIMEOUT):
    """A ``distributed.Client`` connected to ``scheduler``; one-line InputError when it does not answer."""
    import asyncio

    from distributed import Client

    try:
        with quiet_dask():
            probe_scheduler(scheduler, timeout)
            return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, asyncio.TimeoutError) as e:
        raise not_answering(scheduler, e) from None


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, *, timeout: float = CONNECT_TIMEOUT,
            progress: Callable[[str], Any] | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` (or None: run in this process), closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://HOST:8786``).
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes, one thread each (closed on exit).
    timeout : float, default=CONNECT_TIMEOUT
        Seconds a scheduler has to answer.
    progress : callable, optional
        Receives one line describing the cluster.

    Examples
    --------
    >>> with connect() as client:
    ...     client is None
    True
    """
    check_cluster_options(scheduler, workers)
    if scheduler is None and workers is None:
        yield None
        return
    say = progress or (lambda line: None)
    cluster = None
    if scheduler is not None:
        client = open_client(scheduler, timeout)
    else:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster, set_as_default=False)
    try:
        say(f"cluster: {client.scheduler.address}, {n_workers(client)} worker(s)")
        yield client
    finally:
        with quiet_dask():
            client.close()
            if cluster is not None:
                cluster.close()


def n_workers(client) -> int:
    """Workers connected to the client's scheduler now."""
    return len(client.scheduler_info().get("workers", {}))


def worker_pids(client) -> dict[str, int]:
    """``{worker address: process id}`` of every connected worker."""
    return dict(client.run(os.getpid))


def map_ordered(client, fn: Callable, items: Iterable, *args: Any, window: int | None = None) -> Iterator[Any]:
    """``fn(item, *args)`` for every item on the cluster; results yielded in the order of ``items``.

    At most ``window`` tasks are in flight (default: twice the workers, at least 2), so items may be
    a stream larger than memory; every item is sent to the cluster with ``scatter``.  Reducing the
    results as they come gives one fixed reduction order, independent of the number of workers.
    """
    window = window or max(2, 2 * n_workers(client))
    pending: deque = deque()
    try:
        for item in items:
            data = client.scatter([item], hash=False)[0]  # one future for the item (a tuple is not split)
            pending.append(client.submit(fn, data, *args, pure=False))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.release()


def worker_cached(key: str, factory: Callable[[], Any]) -> Any:
    """The value ``factory()`` made for ``key`` in this process (made once; a new key replaces the old value)."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one model per worker: the previous one is dropped before loading the next
            _CACHE[key] = factory()
        return _CACHE[key]


def worker_lock() -> threading.RLock:
    """A process-wide lock: tasks that share a cached model (torch hooks) hold it while they use it."""
    return _USE_LOCK


def worker_threads() -> int | None:
    """torch threads for a task in this process: ``FEATUREGEO_WORKER_THREADS``, else ``OMP_NUM_THREADS``
    (dask workers set 1), else None (every CPU).

    One worker process per core (``dask worker ADDR --nworkers N --nthreads 1``) suits models that fit
    N times in memory; for a large model run one process per machine with
    ``FEATUREGEO_WORKER_THREADS=<cores> dask worker ADDR --nworkers 1 --nthreads 1``.
    """
    for var in ("FEATUREGEO_WORKER_THREADS", "OMP_NUM_THREADS"):
        try:
            n = int(os.environ.get(var, "0"))
        except ValueError:
            n = 0
        if n >= 1:
            return n
    return None


__all__ = ["connect", "open_client", "check_cluster_options", "map_ordered", "worker_cached", "worker_lock",
           "worker_threads", "worker_pids", "n_workers", "quiet_dask", "probe_scheduler", "not_answering",
           "CONNECT_TIMEOUT"]
