"""What `qdgan.predict` does with requests that used to lose data or go silently wrong, and its peak memory.

    python benchmarks/reliability_predict.py                           # tiny set + 2-step model in --work
    python benchmarks/reliability_predict.py --code /tmp/predict_before  # the same cases with an older checkout

Each case runs the real command line (`python -m qdgan.predict …`) and prints its exit status, its last
line and what happened to the files: an output inside a data-set folder, an existing output file, a
density given to a V ↦ n model, an empty .npy, a corrupted data-set input; then the peak resident
memory (VmHWM of the process) of predicting `--n` maps made by tiling and perturbing the
data set's potentials. `--code DIR` runs every case with the code of DIR instead (e.g. a
`git worktree add DIR <commit>`), from DIR, for comparison. Needs no GPU (device=cpu).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from physics.dataset import open_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ["physics.n_basis=10", "physics.n_orbitals=4"]


PEAK = """import atexit, runpy, sys
def peak():
    line = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM'))
    print('peak-rss-kB', line.split()[1], file=sys.stderr)
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""
"""`python -c PEAK <module> <args>` runs the module and prints its VmHWM (peak resident memory of this
process since its exec). wait4's ru_maxrss would not do: Linux counts the parent's size at fork/exec in it."""


def run(args: list[str], cwd: Path = ROOT) -> tuple[int, str, float, float]:
    """(exit status, output, peak RSS in MB, wall seconds) of `python -c PEAK <module> <args>` in `cwd`,
    with `cwd` on the Python path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True, cwd=cwd, env=env)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    peaks = [int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("peak-rss-kB")]
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("peak-rss-kB"))
    return proc.returncode, text, (peaks[-1] / 1024 if peaks else float("nan")), wall


def predict(code: Path, ckpt: Path, *extra: str) -> tuple[int, str, float, float]:
    return run(["qdgan.predict", f"checkpoint={ckpt}", "device=cpu", *TINY, *extra], cwd=code)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def tiny_model(work: Path) -> tuple[Path, Path]:
    """The tiny data set and a 2-step v_to_nint checkpoint (train.py, a few seconds)."""
    data, run_dir = work / "tinyset", work / "tinyrun"
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.exists():
        rc, text, _, _ = run(["train", "mapping=v_to_nint", "max_steps=2", "val_every_n_steps=2", "logger=csv",
                              *TINY, f"data.path={data}", "data.n_train=40", "data.n_val=10", "data.n_test=10",
                              "data.generate.n_samples=60", "data.generate.shard_size=30", "generator.ngf=4",
                              "discriminator.ndf=4", f"hydra.run.dir={run_dir}"])
        if not ckpt.exists():
            sys.exit(f"training the tiny model failed (exit {rc}):\n{text[-2000:]}")
    return data, ckpt


def many_maps(data: Path, n: int, path: Path) -> Path:
    """n potentials: the data set's, tiled and perturbed (σ = 5 meV, clipped to [0, 0.5] eV), written in blocks."""
    if path.exists() and np.load(path, mmap_mode="r").shape[0] == n:
        return path
    v = open_dataset(data).potential[:]
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *v.shape[1:]))
    for a in range(0, n, 1000):
        k = np.arange(a, min(a + 1000, n)) % len(v)
        out[a:a + len(k)] = np.clip(v[k] + rng.normal(0, 0.005, (len(k), *v.shape[1:])), 0, 0.5)
    out.flush()
    del out
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reliability_predict")
    parser.add_argument("--n", type=int, default=20000, help="maps in the memory case")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose qdgan.predict runs (default: this)")
    args = parser.parse_args()
    work, code = args.work.absolute(), args.code.absolute()
    print(f"qdgan.predict of {code}")
    work.mkdir(parents=True, exist_ok=True)
    data, ckpt = tiny_model(work)
    v = work / "v.npy"
    np.save(v, open_dataset(data).potential[:5])

    def case(title: str, result: tuple[int, str, float, float], note: str = "") -> None:
        print(f"\n## {title}\n   exit {result[0]}: {last_line(result[1])}" + (f"\n   {note}" if note else ""))

    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    listing = sorted(p.name for p in data.iterdir())
    r = predict(code, ckpt, f"input={v}", f"output={data / 'predictions.h5'}", f"hydra.run.dir={out / 'a'}")
    after = sorted(p.name for p in data.iterdir())
    try:
        opens = f"the data set still opens ({len(open_dataset(data))} instances)"
    except Exception as err:  # the failure this case is about
        opens = f"the data set no longer opens: {type(err).__name__}: {err}"
    case("output=<data set>/predictions.h5", r, f"data-set folder {'unchanged' if after == listing else 'CHANGED'}; "
         + opens)
    (data / "predictions.h5").unlink(missing_ok=True)  # the old code leaves it there

    target = out / "p.npy"
    first = predict(code, ckpt, f"input={v}", f"output={target}", f"hydra.run.dir={out / 'b'}")
    stamp = target.stat().st_mtime_ns if target.exists() else None
    again = predict(code, ckpt, f"input={v}", f"output={target}", f"hydra.run.dir={out / 'c'}")
    kept = target.exists() and target.stat().st_mtime_ns == stamp
    case("the same output=p.npy twice", again, f"first run exit {first[0]}; p.npy {'kept' if kept else 'REPLACED'}")
    case("... and with overwrite=true",
         predict(code, ckpt, f"input={v}", f"output={target}", f"hydra.run.dir={out / 'd'}", "overwrite=true"))

    n_maps = work / "n_int.npy"
    np.save(n_maps, open_dataset(data).n_int[:5])
    r = predict(code, ckpt, f"input={n_maps}", f"hydra.run.dir={out / 'e'}")
    warned = [ln for ln in r[1].splitlines() if "WARNING" in ln]
    case("densities given to the V ↦ n_int model", r, f"{len(warned)} warning(s)"
         + "".join(f"\n   {ln[ln.find('input'):][:220]}" for ln in warned))

    empty = work / "empty.npy"
    np.save(empty, np.zeros((0, 64, 64), np.float32))
    case("an empty .npy", predict(code, ckpt, f"input={empty}", f"hydra.run.dir={out / 'f'}"))

    bad = work / "corrupted"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(data, bad)
    shard = sorted(bad.glob("*.h5"))[1]
    with h5py.File(shard, "r+") as f:
        f["potential"][3, 10, 10] += 0.25
    r = predict(code, ckpt, f"input={bad}", "indices=0:5", f"hydra.run.dir={out / 'g'}")
    case(f"a data-set input with one changed value in {shard.name}", r,
         f"output files: {sorted(p.name for p in (out / 'g').glob('*') if p.suffix in ('.h5', '.json', '.png'))}")

    big = many_maps(data, args.n, work / f"v{args.n}.npy")
    print(f"\n## peak memory: {args.n} maps ({big.stat().st_size / 2**20:.0f} MB .npy), output .npy and .h5")
    dest = out / "big"
    r = predict(code, ckpt, f"input={big}", f"output=[{dest / 'p.npy'},{dest / 'p.h5'}]", f"hydra.run.dir={dest}")
    model = next((ln.strip() for ln in r[1].splitlines() if ln.strip().startswith("model")), last_line(r[1]))
    print(f"   exit {r[0]}, peak RSS {r[2]:.0f} MB, wall {r[3]:.1f} s; {model}")
    shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    main()
