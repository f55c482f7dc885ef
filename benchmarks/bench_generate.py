"""Benchmark `python -m physics.generate` (wall time, worker scaling) and a full read pass.

Each generation run is the real command line in a subprocess, into a fresh temporary directory, so
Hydra start-up, pool spawn, ED, HDF5 writing and finalizing are all counted. The 1-minute load
average is recorded before every run: the machine is shared, and a loaded machine slows both
worker counts unevenly. Usage (numbers in docs/physics.md, "Data sets"):

    python benchmarks/bench_generate.py --n 1000 --repeats 3 --workers 1 2 [-- HYDRA_OVERRIDES...]
    python benchmarks/bench_generate.py --n 5000 --repeats 1 --workers 2 --keep data/paper
    python benchmarks/bench_generate.py --read data/paper
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_generate(n: int, workers: int, out: Path, extra: list[str]) -> float:
    """Wall seconds of one complete `python -m physics.generate` run into the empty `out`."""
    hydra_dir = ROOT / "outputs" / "bench-generate" / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "physics.generate", f"n_samples={n}", f"workers={workers}",
           f"out_dir={out}", f"hydra.run.dir={hydra_dir}", *extra]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"generate failed:\n{result.stderr[-2000:]}")
    return wall


def bench_generate(n: int, workers: list[int], repeats: int, keep: Path | None, extra: list[str]) -> None:
    walls: dict[int, list[float]] = {w: [] for w in workers}
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        for r in range(repeats):
            for w in workers:  # interleaved, so slow phases of a shared machine hit both counts
                out = keep if keep is not None else Path(tmp) / f"n{n}-w{w}-r{r}"
                if out.exists() and any(out.iterdir()):
                    sys.exit(f"{out} is not empty: timing a rerun would measure nothing")
                load = os.getloadavg()[0]
                wall = time_generate(n, w, out.resolve(), extra)
                walls[w].append(wall)
                print(f"n={n} workers={w} run {r + 1}/{repeats}: {wall:7.2f} s  {n / wall:6.1f} inst/s  "
                      f"(load before {load:.2f})", flush=True)
                if keep is None:
                    shutil.rmtree(out)
    median = {w: statistics.median(v) for w, v in walls.items()}
    for w, m in median.items():
        print(f"median n={n} workers={w}: {m:.2f} s, {n / m:.1f} inst/s, "
              f"extrapolated to 5000: {m * 5000 / n:.0f} s")
    if 1 in median:
        for w in workers:
            if w > 1:
                print(f"scaling 1 -> {w} workers: speed-up {median[1] / median[w]:.2f}, "
                      f"efficiency {median[1] / median[w] / w:.0%}")


def bench_read(path: Path, repeats: int) -> None:
    """Open once, then time full passes: every field as whole arrays, and the streaming shard pass."""
    import numpy as np

    from physics.dataset import open_dataset

    t0 = time.perf_counter()
    ds = open_dataset(path)
    print(f"open_dataset({path}): {time.perf_counter() - t0:.3f} s, {len(ds)} instances")
    fields = ("potential", "n0", "n_int", "energy")
    for label, run in (
        ("whole arrays ds[f][:]", lambda: [ds[f][:] for f in fields]),
        ("ds.iter_shards()", lambda: list(ds.iter_shards(fields))),
        ("random batch of 64, ds.n_int[idx]", lambda: ds.n_int[np.random.default_rng(0).choice(len(ds), 64)]),
    ):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        print(f"{label:<36} median {statistics.median(times):.3f} s over {repeats} (page cache warm after the first)")
    t0 = time.perf_counter()
    ds.validate()
    print(f"{'validate()':<36} {time.perf_counter() - t0:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="instances per generation run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the (single) run here and keep it, e.g. data/paper")
    parser.add_argument("--read", type=Path, default=None, help="only benchmark reading this data set")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for physics.generate")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load averages {os.getloadavg()}")
    if args.read is not None:
        bench_read(args.read, max(args.repeats, 5))
        return
    if args.keep is not None and (args.repeats != 1 or len(args.workers) != 1):
        sys.exit("--keep needs --repeats 1 and a single --workers value")
    bench_generate(args.n, args.workers, args.repeats, args.keep, args.overrides)


if __name__ == "__main__":
    main()
