"""ED ground states of a batch of given potentials (paper §III.1), in order, on a process pool.

The verification loops (predict `verify=true`, invert's n_int^(r) of Ṽ) call `physics.ed.solve` on
every map. As in `physics.pool`, workers start through 'spawn' with one BLAS thread each, so every
instance runs the same single-threaded code whatever the worker count (also workers=1: in this
process torch's and BLAS's thread pools would compete and distort the ED time we report).
Kept free of torch: spawned workers import only this module, numpy and physics. The pool itself
is `physics.pool.worker_pool`.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from physics.config import PhysicsConfig
from physics.ed import solve
from physics.pool import job, worker_pool


class EDError(RuntimeError):
    """ED failed on one instance of the batch; the message names it."""


@dataclass(frozen=True)
class EDBatch:
    """Ground states of n potentials: densities (nm⁻²), energies (eV) and the time they took."""

    n0: np.ndarray  # (n, grid, grid) float32
    n_int: np.ndarray  # (n, grid, grid) float32
    energy: np.ndarray  # (n,) float64, many-body ground-state energy
    solve_seconds: np.ndarray  # (n,) time of each `solve` call inside its process
    wall_seconds: float  # the whole batch, pool start-up included
    workers: int

    @property
    def per_second(self) -> float:
        """Instances per second of wall-clock time."""
        return len(self.energy) / max(self.wall_seconds, 1e-12)


def resolve_workers(workers: int | None, n: int) -> int:
    """`workers`, or the cores this process may use when None; never more than the n instances."""
    if workers is None:
        workers = len(os.sched_getaffinity(0))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"ed.workers={workers!r}: expected a positive integer or null (all cores)")
    return max(1, min(workers, n))


def solve_all(potentials: np.ndarray, cfg: PhysicsConfig, workers: int | None = None,
              progress: bool | None = None, labels: list[str] | None = None) -> EDBatch:
    """`solve(V_i, cfg)` for each (grid, grid) map V_i (eV) of `potentials`, in order.

    `progress`: tqdm bar (None: on a terminal). Raises EDError naming the instance that failed.
    """
    with Solver(cfg, workers, len(potentials), progress) as solver:
        batch = solver.solve(potentials, labels)
    return EDBatch(batch.n0, batch.n_int, batch.energy, batch.solve_seconds, solver.wall_seconds, solver.workers)


class Solver:
    """One worker pool for the chunks of a run (`with Solver(...) as s: s.solve(chunk)`), so the pool
    starts once, at the first non-empty chunk; `wall_seconds` sums pool start, every `solve` and the shutdown
    (known after the block)."""

    def __init__(self, cfg: PhysicsConfig, workers: int | None, n: int, progress: bool | None = None) -> None:
        self.cfg, self.workers, self.wall_seconds, self.solved = cfg, resolve_workers(workers, n), 0.0, 0
        self.solve_total = 0.0  # seconds inside `solve` calls of the workers, summed
        self._bar = tqdm(total=n, unit="ED", desc="ED", dynamic_ncols=True, file=sys.stderr,
                         disable=(not sys.stderr.isatty()) if progress is None else not progress)
        self._pool: Any = None

    def __enter__(self) -> Solver:
        return self  # the pool starts at the first `solve` (or `prestart`)

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._context = worker_pool(self.workers, cfg=self.cfg)
        self._pool = self._context.__enter__()
        self.wall_seconds += time.perf_counter() - t0

    def __exit__(self, *exc: Any) -> None:
        t0 = time.perf_counter()
        try:
            if self._pool is not None:
                self._context.__exit__(*exc)
        finally:
            self._bar.close()
            self.wall_seconds += time.perf_counter() - t0

    def prestart(self, *cfgs: PhysicsConfig) -> None:
        """Start the workers now and let them build their caches for the pool's configuration and `cfgs` (a
        recheck's) in the background, while this process runs the network: the first chunk to solve finds them
        ready (verify=auto and the trust recheck; the pool's start then overlaps the prediction)."""
        if self._pool is None:
            self._start()
        for _ in range(self.workers):
            self._pool.submit(_warm, [self.cfg, *cfgs])

    @property
    def seconds_per_solve(self) -> float:
        """Mean time of one `solve` on one core."""
        return self.solve_total / max(self.solved, 1)

    def solve(self, potentials: np.ndarray, labels: list[str] | None = None,
              cfg: PhysicsConfig | None = None) -> EDBatch:
        """Ground states of one chunk of potentials, in order; its wall time is that of this call. `cfg`: another
        configuration than the pool's for this chunk (the reduced basis of a trust recheck), on the same workers."""
        n = len(potentials)
        if n and self._pool is None:
            self._start()
        labels = labels or [f"instance {self.solved + i}" for i in range(n)]
        out = {"n0": np.empty(potentials.shape, np.float32), "n_int": np.empty(potentials.shape, np.float32),
               "energy": np.empty(n), "seconds": np.empty(n)}
        t0 = time.perf_counter()
        for i, row in enumerate(_results(self._pool, potentials, self.workers, labels, cfg) if n else ()):
            for key in out:
                out[key][i] = row[key]
            self._bar.update(1)
        seconds = time.perf_counter() - t0
        self.wall_seconds += seconds
        self.solved += n
        self.solve_total += float(out["seconds"].sum())
        return EDBatch(out["n0"], out["n_int"], out["energy"], out["seconds"], seconds, self.workers)


def _results(pool: Any, potentials: np.ndarray, workers: int, labels: list[str], cfg: PhysicsConfig | None = None):
    jobs = ((v, label, cfg) for v, label in zip(potentials, labels, strict=True))
    try:
        chunk = max(1, min(8, len(potentials) // (4 * workers)))
        yield from pool.map(_solve_job, jobs, chunksize=chunk)
    except BrokenProcessPool as err:
        raise EDError(f"an ED worker process died (killed, or out of memory?): {err}") from err


def _warm(cfgs: list[PhysicsConfig]) -> None:
    """Build a worker's caches (basis, Coulomb kernel) for each configuration: one solve of a flat potential."""
    for cfg in cfgs:
        solve(np.zeros((cfg.grid, cfg.grid)), cfg)


def _solve_job(item: tuple[np.ndarray, str, PhysicsConfig | None]) -> dict[str, Any]:
    potential, label, cfg = item
    t0 = time.perf_counter()
    try:
        gs = solve(potential, cfg or job["cfg"])
    except Exception as err:
        raise EDError(f"ED failed on {label}: {type(err).__name__}: {err}") from None
    return {"n0": gs.n0, "n_int": gs.n_int, "energy": gs.energy, "seconds": time.perf_counter() - t0}
