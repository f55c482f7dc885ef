"""Whole ED solve per instance for N = 1..4 on one core: the string/Davidson route (physics.ci.ground_state)
against the earlier direct CI with Lanczos (physics.ci.ground_state_direct), same potentials, interleaved.

    python benchmarks/bench_manybody.py --potentials 10 --electrons 1 2 3 4

Single core: the BLAS/OpenMP thread variables are set to 1 before numpy loads (and threadpoolctl, where
installed, limits the loaded pools to one thread). For each N: random paper potentials (seed), one warm-up
solve per route (caches: basis tables, string tables), then for every potential the old and the new route
back to back (alternating which goes first), so both see the same load. Reports medians of the whole
`physics.ed.solve` (as the data generator runs it): CPU time of this single-threaded process, robust to other
jobs on the machine, and wall time; the CPU-time split of the new route (single particle, Coulomb, many body);
the old/new ratio; and the largest differences between the two routes (energy, density, spin). N = 1 and 2
have one route (N = 2 is the paper's, unchanged).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

from physics import ci  # noqa: E402
from physics import ed as ed_module  # noqa: E402
from physics.config import PhysicsConfig  # noqa: E402
from physics.ed import GroundState, solve  # noqa: E402
from physics.potentials import random_potential  # noqa: E402

NEW = ci.ground_state
CPU_CLOCK = SimpleNamespace(perf_counter=time.process_time)
"""Stands in for `time` inside physics.ed, so that GroundState.timings_s splits CPU time, not wall time."""


def one_thread() -> contextlib.AbstractContextManager:
    """threadpoolctl's limit of every loaded BLAS/OpenMP pool to one thread, where it is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def old_route(eps: np.ndarray, eri: np.ndarray, n_electrons: int) -> ci.CIResult:
    return NEW(eps, eri, 2) if n_electrons == 2 else ci.ground_state_direct(eps, eri, n_electrons)


def timed_solve(v: np.ndarray, cfg: PhysicsConfig, route) -> tuple[float, float, GroundState]:
    """(wall s, CPU s of this process, result) of `physics.ed.solve` with `route` as the many-body solver."""
    ci.ground_state, ed_module.time = route, CPU_CLOCK
    try:
        t, c = time.perf_counter(), time.process_time()
        gs = solve(v, cfg)
        return time.perf_counter() - t, time.process_time() - c, gs
    finally:
        ci.ground_state, ed_module.time = NEW, time


def bench(n_el: int, n_orbitals: int, n_potentials: int, seed: int, with_old: bool) -> dict:
    cfg = dataclasses.replace(PhysicsConfig(), n_electrons=n_el, n_orbitals=n_orbitals)
    rng = np.random.default_rng(seed)
    potentials = [random_potential(rng, cfg) for _ in range(n_potentials)]
    routes = {"new": NEW, **({"old": old_route} if with_old else {})}
    for route in routes.values():
        timed_solve(potentials[0], cfg, route)  # warm caches
    times = {name: [] for name in routes}
    cpu = {name: [] for name in routes}
    split = {k: [] for k in ("single_particle", "coulomb", "many_body")}
    diff = {"dE": 0.0, "dn": 0.0, "spin": 0}
    spins = []
    for i, v in enumerate(potentials):
        states = {}
        for name in sorted(routes, reverse=i % 2 == 1):  # alternate which route goes first
            wall, seconds, states[name] = timed_solve(v, cfg, routes[name])
            times[name].append(wall)
            cpu[name].append(seconds)
        new = states["new"]
        spins.append(new.spin)
        for key in split:
            split[key].append(new.timings_s[key])
        if with_old:
            old = states["old"]
            diff["dE"] = max(diff["dE"], abs(new.energy - old.energy))
            diff["dn"] = max(diff["dn"], float(np.abs(new.n_int - old.n_int).max() / old.n_int.max()))
            diff["spin"] += int(new.spin != old.spin)
    return {"N": n_el, "dim": new.ci_dim, "times": {k: np.median(v) for k, v in times.items()},
            "cpu": {k: np.median(v) for k, v in cpu.items()},
            "split": {k: np.median(v) for k, v in split.items()}, "diff": diff,
            "spins": {s: spins.count(s) for s in sorted(set(spins))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--potentials", type=int, default=10)
    parser.add_argument("--electrons", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--orbitals", type=int, default=16, help="n_orbitals (paper default 16)")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--no-old", action="store_true", help="time the new route only")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    rows = []
    with one_thread():
        for n_el in args.electrons:
            rows.append(bench(n_el, args.orbitals, args.potentials, args.seed, with_old=n_el >= 3 and not args.no_old))
            r = rows[-1]
            print(f"N={n_el}: wall {r['times']}, CPU {r['cpu']}, split {r['split']}, differences {r['diff']}, "
                  f"spins {r['spins']}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print(f"\n{args.potentials} random paper potentials (seed {args.seed}), 64² grid, 32² basis, {args.orbitals} "
          "orbitals, one core; medians in ms, CPU time of the process (wall time: what the load left us)\n")
    print("| N | determinants | ED solve, new: CPU (wall) | CPU split: single particle / Coulomb / many body "
          "| old route: CPU (wall) | old / new (CPU) | instances/s per core (CPU) | 5000 instances, core-minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, c, s = r["times"], r["cpu"], r["split"]
        old = f"{1e3 * c['old']:.0f} ({1e3 * t['old']:.0f})" if "old" in t else "–"
        ratio = f"{c['old'] / c['new']:.1f}×" if "old" in t else "–"
        split = " / ".join(f"{1e3 * s[k]:.0f}" for k in ("single_particle", "coulomb", "many_body"))
        print(f"| {r['N']} | {r['dim']} | {1e3 * c['new']:.0f} ({1e3 * t['new']:.0f}) | {split} | {old} | {ratio} | "
              f"{1 / c['new']:.1f} | {5000 * c['new'] / 60:.1f} |")
    for r in rows:
        if "old" in r["times"]:
            d = r["diff"]
            print(f"N={r['N']}: new vs old route: max |ΔE| = {d['dE']:.1e} eV, max |Δn_int|/max n_int = "
                  f"{d['dn']:.1e}, spins differing: {d['spin']}")


if __name__ == "__main__":
    main()
