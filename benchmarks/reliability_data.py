"""Reproduce the data-set reliability cases of the issue on a tiny set and print what happens now.

    python benchmarks/reliability_data.py [--keep DIR]

Each case runs the real command line (`python -m physics.generate`, tiny physics: grid=16 n_basis=8
n_orbitals=6 n_wells=5) in a scratch folder and prints its exit status, wall time and the last line of
its stderr. Expected: bad data, a held lock, an unusable out_dir and impossible physics are refused in one
line with exit status 2; normal resuming, parts of a multirun and a dead job's lock still work (exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from physics import manifest  # noqa: E402
from physics.dataset import open_dataset  # noqa: E402
from physics.shards import FIELDS, read_header, shard_name, write_shard  # noqa: E402

TINY = ["physics.grid=16", "physics.n_basis=8", "physics.n_orbitals=6", "physics.n_wells=5", "workers=1"]


def cli(scratch: Path, *overrides: str, prefix: tuple[str, ...] = ()) -> tuple[int, float, str]:
    """Run the generator (its log: scratch/hydra/generate.log, fresh per run); (exit status, seconds, last
    stderr line)."""
    shutil.rmtree(scratch / "hydra", ignore_errors=True)
    cmd = [*prefix, sys.executable, "-m", "physics.generate", *overrides, f"hydra.run.dir={scratch / 'hydra'}"]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, time.perf_counter() - t0, lines[-1] if lines else ""


def show(case: str, outcome: tuple[int, float, str], note: str = "") -> None:
    rc, seconds, line = outcome
    print(f"\n[{case}]\n  exit {rc}, {seconds:.1f} s{f', {note}' if note else ''}\n  {line}")


def tiny_set(scratch: Path, name: str, n: int = 20, size: int = 5, *extra: str) -> tuple[Path, list[str]]:
    out = scratch / name
    args = [f"n_samples={n}", f"shard_size={size}", f"out_dir={out}", *TINY, *extra]
    rc, _, line = cli(scratch, *args)
    assert rc == 0, line
    return out, args


def replace_self_consistent(out: Path, start: int, stop: int) -> None:
    """A shard consistent in itself (same identity, own checksums), as another machine could write it."""
    path = out / shard_name(start, stop)
    header = read_header(path)
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][...] for k in FIELDS}
    arrays["energy"] = arrays["energy"] + 1e-3
    path.unlink()
    write_shard(out, start, stop, arrays, {"identity": manifest.canonical_json(header.identity),
                                           "code_version": header.code_version})


def flip_byte(path: Path) -> None:
    with h5py.File(path, "r") as f:
        offset = f["n_int"].id.get_offset() + 101
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1
    path.write_bytes(bytes(raw))


def pinned(out: Path) -> bytes:
    return (out / manifest.MANIFEST).read_bytes()


def case_rerun(scratch: Path) -> None:
    out, args = tiny_set(scratch, "replaced")
    before = pinned(out)
    replace_self_consistent(out, 5, 10)
    show("1a rerun after a shard was replaced by a self-consistent one (another machine)", cli(scratch, *args),
         f"manifest unchanged: {pinned(out) == before}")
    out, args = tiny_set(scratch, "flipped")
    before = pinned(out)
    flip_byte(out / shard_name(10, 15))
    show("1b rerun after one byte flipped inside a shard", cli(scratch, *args),
         f"manifest unchanged: {pinned(out) == before}")
    out, args = tiny_set(scratch, "mixed")
    other, _ = tiny_set(scratch, "other", 20, 5, "seed=1")
    shutil.copy(other / shard_name(0, 5), out / shard_name(0, 5))
    show("1c rerun after a shard was replaced by one of another set (seed 1)", cli(scratch, *args))
    out = scratch / "parts"
    base = ["n_samples=20", "shard_size=5", f"out_dir={out}", "parts=2", *TINY]
    cli(scratch, *base, "part=0")
    outcome = cli(scratch, *base, "part=1")
    show("1d shards of another part, not yet in the manifest (resumable generation)", outcome,
         f"finalized: {manifest.load(out)['shards'] is not None}, validate: "
         f"{open_dataset(out).validate().n_instances} instances ok")
    out = scratch / "parts-bad"
    cli(scratch, *[a.replace("/parts", "/parts-bad") for a in base], "part=0")
    flip_byte(out / shard_name(0, 5))
    outcome = cli(scratch, *[a.replace("/parts", "/parts-bad") for a in base], "part=1")
    show("1e a corrupted shard of another part, before finalizing", outcome,
         f"manifest table still empty: {manifest.load(out)['shards'] is None}")


def start_job(scratch: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "physics.generate", "n_samples=4000", "shard_size=20", f"out_dir={out}", *TINY,
           *extra, f"hydra.run.dir={scratch / 'hydra-bg'}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the background job did not get going")
        time.sleep(0.02)


def case_locks(scratch: Path) -> None:
    out = scratch / "locked"
    job = start_job(scratch, out)
    try:
        wait_for(lambda: (out / ".lock-shards-0-199").exists())
        show("2a a second, identical job while the first is writing", cli(
            scratch, "n_samples=4000", "shard_size=20", f"out_dir={out}", *TINY))
        job.send_signal(signal.SIGKILL)  # leaves its lock file behind
        job.wait()
    finally:
        if job.poll() is None:
            job.kill()
    left = json.loads((out / ".lock-shards-0-199").read_text())
    rc, seconds, _ = outcome = cli(scratch, "n_samples=4000", "shard_size=20", f"out_dir={out}", *TINY)
    log = (scratch / "hydra" / "generate.log").read_text()
    took = [line for line in log.splitlines() if "took over" in line]
    show("2b rerun after that job was SIGKILLed (lock of a dead pid left)", (rc, seconds, took[-1][:200]
                                                                              if took else outcome[2]),
         f"dead holder pid {left['pid']}, lock gone afterwards: {not (out / '.lock-shards-0-199').exists()}")
    out = scratch / "two-parts"
    jobs = [start_job(scratch, out, "parts=2", f"part={p}") for p in range(2)]
    t0 = time.perf_counter()
    codes = [j.wait(timeout=600) for j in jobs]
    show("2c two parts of one multirun writing one directory at once",
         (max(codes), time.perf_counter() - t0, f"exit statuses {codes}"),
         f"finalized: {manifest.load(out)['shards'] is not None}, "
         f"validate: {open_dataset(out).validate().n_instances} instances ok, "
         f"lock files left: {sorted(p.name for p in out.glob('.lock*'))}")


def case_out_dir(scratch: Path) -> None:
    afile = scratch / "afile"
    afile.write_text("not a folder")
    show("3a out_dir=<a file>", cli(scratch, f"out_dir={afile}", *TINY))
    readonly = scratch / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    root = os.geteuid() == 0  # root may write anywhere: drop CAP_DAC_OVERRIDE for these runs
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search") if root else ()
    note = "as root without CAP_DAC_OVERRIDE (setpriv)" if root else ""
    show("3b out_dir=<an unwritable folder>", cli(scratch, f"out_dir={readonly}", *TINY, prefix=prefix), note)
    show("3c out_dir=<a new folder inside an unwritable one>",
         cli(scratch, f"out_dir={readonly / 'new'}", *TINY, prefix=prefix), note)
    readonly.chmod(0o755)


def case_physics(scratch: Path) -> None:
    show("4a physics.n_wells=100000", cli(scratch, f"out_dir={scratch / 'wells'}", "physics.n_wells=100000"),
         f"out_dir created: {(scratch / 'wells').exists()}")
    tiny_set(scratch, "progress", 300, 1)
    lines = [line for line in (scratch / "hydra" / "generate.log").read_text().splitlines() if "written" in line]
    print(f"\n[4b progress with 300 shards of 1 instance]\n  {len(lines)} 'written' line(s) for 300 shards (at "
          "most one per 10 s, plus the first and last):\n  " + "\n  ".join(line[:160] for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temporary one)")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="qdgan-reliability-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for case in (case_rerun, case_locks, case_out_dir, case_physics):
            case(scratch)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
