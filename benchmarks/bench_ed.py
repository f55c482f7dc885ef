"""ED throughput on the paper configuration: instances/s on one core and on all cores.

    python benchmarks/bench_ed.py --instances 200 --repeats 5

Each worker process uses one BLAS thread (set before numpy loads). Reports the median over
`repeats` of the wall time for `instances` solves, and the split of one core's time between the
single-particle solve, the Coulomb integrals and the many-body diagonalization.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

from physics.config import PhysicsConfig  # noqa: E402
from physics.ed import solve  # noqa: E402
from physics.potentials import random_potential  # noqa: E402


def _potentials(n: int, seed: int, cfg: PhysicsConfig) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_potential(rng, cfg) for _ in range(n)]


def _solve_chunk(args: tuple[list[np.ndarray], PhysicsConfig]) -> dict[str, float]:
    pots, cfg = args
    split = {"single_particle": 0.0, "coulomb": 0.0, "many_body": 0.0}
    for v in pots:
        for key, value in solve(v, cfg).timings_s.items():
            split[key] += value
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    cfg = PhysicsConfig()
    pots = _potentials(args.instances, 0, cfg)
    _solve_chunk((pots[:5], cfg))  # warm caches (kernel spectrum, basis tables)

    serial, splits = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        splits.append(_solve_chunk((pots, cfg)))
        serial.append(time.perf_counter() - t)
    parallel = []
    chunks = [(pots[i :: args.workers], cfg) for i in range(args.workers)]
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_solve_chunk, [(pots[:3], cfg)] * args.workers))  # start and warm workers
        for _ in range(args.repeats):
            t = time.perf_counter()
            list(pool.map(_solve_chunk, chunks))
            parallel.append(time.perf_counter() - t)

    t1, tp = np.median(serial), np.median(parallel)
    split = {k: np.median([s[k] for s in splits]) / args.instances * 1e3 for k in splits[0]}
    print(f"load average before/after: {os.getloadavg()}")
    print(f"config: grid={cfg.grid} n_basis={cfg.n_basis} n_orbitals={cfg.n_orbitals} "
          f"N={cfg.n_electrons}; {args.instances} instances, median of {args.repeats}")
    print(f"1 core : {args.instances / t1:6.1f} instances/s ({1e3 * t1 / args.instances:.1f} ms each)")
    print(f"{args.workers} cores: {args.instances / tp:6.1f} instances/s "
          f"(speed-up {t1 / tp:.2f}, efficiency {t1 / tp / args.workers:.0%})")
    print("time split per instance (1 core, ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in split.items()))
    print(f"paper data set (5000) at this rate: {5000 / (args.instances / tp):.0f} s on {args.workers} cores")


if __name__ == "__main__":
    main()
