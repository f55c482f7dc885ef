"""Solve instances in order on a process pool whose workers each use exactly one BLAS thread.

Workers start through the 'spawn' context with the BLAS thread variables set to 1, so every
instance is computed by the same single-threaded code path whatever the worker count: results are
bit-identical for workers=1 and workers=N. Workers ignore Ctrl-C and exit when their parent dies
(SIGKILL included), so a killed job leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from physics.config import PhysicsConfig
from physics.families import PAPER, Spec
from physics.instances import InstanceError, compute_instance

__all__ = ["ONE_BLAS_THREAD", "job", "solve_in_order", "worker_pool"]

ONE_BLAS_THREAD = {name: "1" for name in (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
"""Environment of worker processes: one BLAS thread each (more would only fight over the cores)."""

WINDOW_PER_WORKER = 8
"""Instances in flight per worker: enough to keep workers busy, bounded to keep memory flat."""

job: dict[str, Any] = {}
"""In a worker process: the keyword arguments `worker_pool` was opened with (config, seed, ...)."""


@contextlib.contextmanager
def worker_pool(workers: int, **state: Any) -> Iterator[ProcessPoolExecutor]:
    """A 'spawn' process pool whose workers use one BLAS thread, ignore Ctrl-C, exit when orphaned,
    and find `state` in `physics.pool.job`. Shut down (pending work cancelled) on exit."""
    if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
        # In a loky worker (Hydra's joblib launcher) the default method is 'loky', which stdlib
        # spawn children are told to adopt and cannot: make this process's default a stdlib one.
        mp.set_start_method("spawn", force=True)
    saved = {k: os.environ.get(k) for k in ONE_BLAS_THREAD}
    os.environ.update(ONE_BLAS_THREAD)  # kept while the pool may start workers
    pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(state, os.getpid()))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def solve_in_order(instances: Iterable[int], cfg: PhysicsConfig, seed: int,
                   workers: int, spec: Spec = PAPER) -> Iterator[dict[str, Any]]:
    """`compute_instance(k, seed, cfg, spec)` for each k of `instances`, in order, on `workers` processes.

    A generator: the pool lives while it is iterated and is shut down when it is exhausted or
    closed. A worker that dies (killed, out of memory) raises InstanceError instead of hanging.
    """
    with worker_pool(workers, cfg=cfg, seed=seed, spec=spec) as pool:
        try:
            pending: deque[Future[dict[str, Any]]] = deque()
            todo = iter(instances)
            for k in todo:
                pending.append(pool.submit(_solve, k))
                if len(pending) >= workers * WINDOW_PER_WORKER:
                    break
            while pending:
                result = pending.popleft().result()
                k = next(todo, None)
                if k is not None:
                    pending.append(pool.submit(_solve, k))
                yield result
        except BrokenProcessPool as err:
            raise InstanceError(f"a worker process died (killed, or out of memory?): {err}") from err


def _init_worker(state: dict[str, Any], parent_pid: int) -> None:
    """Remember the job, leave Ctrl-C to the parent, and exit once orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job.update(state)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _solve(k: int) -> dict[str, Any]:
    return compute_instance(k, job["seed"], job["cfg"], job["spec"])
