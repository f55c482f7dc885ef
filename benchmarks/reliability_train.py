"""Reproduce issue 14's training cases with the real command line, as a hostile-but-realistic user would,
and print what happens now (each line: case, expected behaviour, observed, OK/FAIL).

    python benchmarks/reliability_train.py [--kills 8] [--workdir /tmp/qdgan_reliability]

Tiny data (60 instances, cheap ED) and a tiny network; about 5 minutes on 2 cores. $TMPDIR is put on
/dev/shm (another file system than the run dir), where Lightning's own checkpoint writer copied files into
place and a kill tore `last.ckpt`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
TINY = ["physics.n_basis=10", "physics.n_orbitals=4", "data.n_train=40", "data.n_val=10", "data.n_test=10",
        "data.batch_size=4", "data.eval_batch_size=10", "generator.ngf=4", "discriminator.ndf=4", "logger=csv",
        "n_tracked=4", "trainer.enable_progress_bar=false", "data.generate.n_samples=60",
        "data.generate.shard_size=30", "data.generate.workers=1", "data.resize=72", "data.flip=true"]
VOLATILE = ("train_seconds", "run_dir", "best_checkpoint")
results: list[bool] = []


def train(run_dir: Path, data: Path, *extra: str, env: dict | None = None, wait: bool = True):
    args = [sys.executable, "train.py", *TINY, f"data.path={data}", f"hydra.run.dir={run_dir}", *extra]
    if not wait:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def report(case: str, expected: str, ok: bool, observed: str) -> None:
    results.append(ok)
    print(f"[{'OK' if ok else 'FAIL'}] {case}: {expected}\n       observed: {observed}", flush=True)


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> tuple[bool, str]:
    lines = proc.stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    ok = proc.returncode != 0 and "Traceback" not in proc.stderr and all(n in last for n in needles)
    return ok, f"exit {proc.returncode}, {len(lines)} stderr line(s): {last[:220]}"


def metrics(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in VOLATILE}


def intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qdgan_reliability"))
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "tiny"
    steps = ["max_steps=90", "val_every_n_steps=6"]
    assert train(work / "reference", data, *steps).returncode == 0, "the uninterrupted run failed"

    # 1 + 5: SIGKILL at random moments with $TMPDIR on another file system; rerun the same command each time
    tmpdir = Path("/dev/shm") / f"qdgan_tmp_{os.getpid()}"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    run, rng, kills, torn = work / "killed", random.Random(0), 0, 0
    t0 = time.perf_counter()
    while True:
        proc = train(run, data, *steps, env=env, wait=False)
        if kills < args.kills:
            time.sleep(rng.uniform(2.0, 9.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            last = run / "checkpoints" / "last.ckpt"
            torn += last.exists() and not intact(last)
            continue
        proc.wait()
        break
    orphans = [p for p in tmpdir.rglob("*") if p.is_file()]  # torch makes an empty torchinductor_<user>/ there
    orphan_mb = sum(p.stat().st_size for p in orphans) / 1e6
    shutil.rmtree(tmpdir)
    same = metrics(run) == metrics(work / "reference")
    logs = list((run / "csv").rglob("metrics.csv"))
    seconds = json.loads((run / "metrics.json").read_text())["train_seconds"]
    report("1 checkpoints", "never torn, nothing left in $TMPDIR", torn == 0 and not orphans,
           f"{kills} SIGKILLs, torn last.ckpt after {torn} of them, {len(orphans)} file(s) left in $TMPDIR "
           f"({orphan_mb:.1f} MB)")
    report("5 exact resume", "metrics.json equal to the uninterrupted run's; one CSV log; time of all attempts",
           same and len(logs) == 1, f"metrics equal: {same}; CSV logs: {[str(p.relative_to(run)) for p in logs]}; "
           f"train_seconds {seconds:.1f} over {kills + 1} attempts ({time.perf_counter() - t0:.0f} s wall)")

    # 1b: a damaged last.ckpt (left by an older version, a disk fault) falls back to the previous one
    run = work / "damaged"
    proc = train(run, data, *steps, wait=False)
    while not (run / "checkpoints" / "last.prev.ckpt").exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 4])
    proc = train(run, data, *steps)
    warned = "damaged" in proc.stderr + proc.stdout
    report("1 damaged last.ckpt", "warning, resume from last.prev.ckpt, same metrics",
           proc.returncode == 0 and warned and metrics(run) == metrics(work / "reference"),
           f"exit {proc.returncode}; warned: {warned}")

    # 3: bytes flipped inside a shard
    bad = work / "bad"
    shutil.copytree(data, bad)
    shard = sorted(bad.glob("shard-*.h5"))[1]
    with h5py.File(shard, "r+") as f:
        f["potential"][5, 20, 20] += 0.1
    ok, seen = one_line(train(work / "on_bad", bad, "max_steps=4"), shard.name)
    report("3 corrupted data", "refused before training, one line naming the shard", ok, seen)

    # 4: a run shorter than history_every_n_steps
    proc = train(work / "short", data, "max_steps=3", "history_every_n_steps=10")
    done = proc.returncode == 0 and (work / "short" / "metrics.json").exists()
    report("4 short run", "finishes with metrics.json", done, f"exit {proc.returncode}")
    ok, seen = one_line(train(work / "zero", data, "max_steps=0"), "max_steps=0")
    report("4 max_steps=0", "one-line refusal", ok, seen)

    # 6: two runs in one run dir
    first = train(work / "shared", data, "max_steps=200", "val_every_n_steps=50", wait=False)
    while not (work / "shared" / ".lock").exists() and first.poll() is None:
        time.sleep(0.1)
    ok, seen = one_line(train(work / "shared", data, "max_steps=200", "val_every_n_steps=50"), "is in use by pid")
    first.wait()
    report("6 shared run dir", "the second run is refused in one line; the first finishes",
           ok and first.returncode == 0, seen + f"; first run exit {first.returncode}")

    # 7: one-line errors
    for case, extra, needle in (("max_steps=-1", ["max_steps=-1"], "max_steps=-1"),
                                ("physics.grid=63", ["physics.grid=63"], "physics.grid=63"),):
        ok, seen = one_line(train(work / "bad_setting", work / "never", *extra), needle)
        report(f"7 {case}", "one line, before any work", ok and not (work / "never").exists(), seen)
    other = work / "other_config"
    gen = subprocess.run([sys.executable, "-m", "physics.generate", "physics.n_basis=10", "physics.n_orbitals=4",
                          "physics.n_wells=7", "n_samples=60", "shard_size=30", "shards=0:1", "workers=1",
                          f"out_dir={other}", f"hydra.run.dir={work / 'gen_hydra'}"], cwd=ROOT, capture_output=True)
    assert gen.returncode == 0, gen.stderr
    proc = train(work / "on_other", other, "max_steps=4")
    ok, seen = one_line(proc, "interrupted data set of another config")
    report("7 interrupted set of another config", "one line naming the differences, nothing generated",
           ok and "generating" not in proc.stdout, seen)
    print(f"{sum(results)} of {len(results)} cases OK")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
