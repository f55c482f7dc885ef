"""Tests for the data-set generator `physics.generate`: determinism, resume after SIGKILL, manifest
agreement between jobs, the Hydra multirun path and one-line errors. Tiny physics configs keep it fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from physics import manifest
from physics.config import ConfigError, PhysicsConfig
from physics.dataset import open_dataset
from physics.generate import Plan, generate, plan_from_config, select_shards
from physics.instances import instance_seed
from physics.manifest import Identity
from physics.potentials import random_potential
from physics.shards import FIELDS, DatasetError, shard_name

ROOT = Path(__file__).resolve().parents[1]
TINY = {"grid": 16, "n_basis": 8, "n_orbitals": 6, "n_wells": 5}
TINY_OVERRIDES = [f"physics.{k}={v}" for k, v in TINY.items()]


def _plan(out: Path, n: int, shard_size: int, workers: int = 1, seed: int = 0, **physics: object) -> Plan:
    identity = Identity(PhysicsConfig(**{**TINY, **physics}), seed, n, shard_size)
    return Plan(identity, out, range(identity.n_shards), workers, {"test": True})


def _arrays(path: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(path)
    ds.validate()
    return {name: np.asarray(ds[name]) for name in FIELDS}


def _assert_identical(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    for name in FIELDS:
        assert left[name].dtype == right[name].dtype, name
        assert np.array_equal(left[name], right[name]), f"field {name} differs between {a} and {b}"


def _cli(*overrides: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "physics.generate", *overrides, f"hydra.run.dir={tmp / 'hydra'}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_select_shards_splits_ranges_into_contiguous_parts() -> None:
    assert select_shards(10, None, 0, 1) == range(10)
    parts = [select_shards(10, None, p, 3) for p in range(3)]
    assert [list(r) for r in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert select_shards(10, "2:6", 1, 2) == range(4, 6)
    assert select_shards(10, "7:", 0, 1) == range(7, 10)
    for bad in ("3:3", "0:11", "x", "1:2:3"):
        with pytest.raises(ConfigError, match="shards"):
            select_shards(10, bad, 0, 1)
    with pytest.raises(ConfigError, match="part"):
        select_shards(10, None, 3, 3)


def test_integer_overrides_of_float_fields_give_the_same_identity() -> None:
    a = Identity(PhysicsConfig.from_mapping({"length_nm": 30}), 0, 10, 5)
    b = Identity(PhysicsConfig.from_mapping({"length_nm": 30.0}), 0, 10, 5)
    assert a.hash == b.hash and isinstance(a.physics.length_nm, float)


def test_default_config_is_the_papers_data_set() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("generate")
    plan = plan_from_config(cfg)
    assert plan.identity.n_samples == 5000 and plan.identity.n_shards == 50
    assert plan.identity.physics.grid == 64 and plan.workers >= 1
    assert plan.shards == range(50) and plan.out_dir.is_absolute()


def test_instances_are_identical_across_worker_counts_and_shard_sizes(tmp_path: Path) -> None:
    assert generate(_plan(tmp_path / "a", 41, 7, workers=1), progress=False)
    assert generate(_plan(tmp_path / "b", 41, 5, workers=2), progress=False)
    _assert_identical(tmp_path / "a", tmp_path / "b")
    ds = open_dataset(tmp_path / "a")
    cfg = ds.config
    for k in (0, 17, 40):  # the stored seed alone regenerates the potential
        assert int(ds.instance_seeds[k]) == instance_seed(0, k)
        v = random_potential(np.random.default_rng(int(ds.instance_seeds[k])), cfg)
        assert np.array_equal(ds.potential[k], v.astype(np.float32))


def test_paper_size_instances_are_identical_across_worker_counts(tmp_path: Path) -> None:
    """The paper's 64² grid takes the Davidson and FFT paths the tiny config does not."""
    identity = Identity(PhysicsConfig(), 7, 6, 4)
    generate(Plan(identity, tmp_path / "a", range(2), 1, {}), progress=False)
    generate(Plan(Identity(PhysicsConfig(), 7, 6, 3), tmp_path / "b", range(2), 2, {}), progress=False)
    _assert_identical(tmp_path / "a", tmp_path / "b")


def test_rerun_of_a_complete_set_changes_nothing(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 12, 5)
    generate(plan, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert generate(plan, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_a_different_config_in_the_same_directory_fails_naming_the_fields(tmp_path: Path) -> None:
    generate(_plan(tmp_path, 6, 3), progress=False)
    with pytest.raises(DatasetError, match=r"physics\.m_eff: existing 0\.067, requested 0\.1.*seed"):
        generate(_plan(tmp_path, 6, 3, seed=1, m_eff=0.1), progress=False)


def test_concurrent_manifest_creation_has_one_winner(tmp_path: Path) -> None:
    identities = [Identity(PhysicsConfig(**TINY), seed, 10, 5) for seed in (0, 0, 1, 0, 1, 1, 0, 1)]
    outcomes: list[object] = [None] * len(identities)
    barrier = threading.Barrier(len(identities))

    def job(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = manifest.create_or_check(tmp_path, identities[i], {"job": i})["identity"]["seed"]
        except DatasetError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(identities))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = manifest.load(tmp_path)["identity"]["seed"]
    for ident, outcome in zip(identities, outcomes, strict=True):
        if ident.seed == winner:
            assert outcome == winner
        else:
            assert isinstance(outcome, DatasetError) and "seed" in str(outcome)
    assert [p.name for p in tmp_path.iterdir()] == [manifest.MANIFEST]


@pytest.mark.slow
def test_bad_override_is_one_line_naming_the_field(tmp_path: Path) -> None:
    result = _cli("physics.m_eff=-1", f"out_dir={tmp_path / 'data'}", tmp=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "m_eff" in result.stderr
    assert not (tmp_path / "data").exists()


def _children(pid: int) -> list[int]:
    """Live (non-zombie) child processes of `pid`, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_mid_run(overrides: list[str], out: Path, tmp: Path, min_shards: int = 1) -> int:
    """Start the CLI, SIGKILL it once `min_shards` shards exist, return how many existed then."""
    cmd = [sys.executable, "-m", "physics.generate", *overrides, f"hydra.run.dir={tmp / 'hydra-killed'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while len(list(out.glob("shard-*.h5"))) < min_shards:
            assert proc.poll() is None, "generator exited before it could be killed"
            assert time.monotonic() < deadline, "no shard appeared within 60 s"
            time.sleep(0.005)
        workers = _children(proc.pid) if Path("/proc").is_dir() else []
        assert workers or not Path("/proc").is_dir(), "no worker processes found"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = len(list(out.glob("shard-*.h5")))
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "worker processes outlived their killed parent"
    return done


@pytest.mark.slow
def test_sigkill_then_rerun_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    n, size = 2000, 40
    args = [f"n_samples={n}", f"shard_size={size}", "workers=1", *TINY_OVERRIDES]
    killed = tmp_path / "killed"
    done = _kill_mid_run([*args, f"out_dir={killed}"], killed, tmp_path)
    assert 1 <= done < n // size, f"kill came too late ({done} shards done)"
    assert manifest.load(killed)["shards"] is None  # not finalized: the set is incomplete
    with pytest.raises(DatasetError, match="missing"):
        open_dataset(killed)
    result = _cli(*args, f"out_dir={killed}", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{n // size - done} to do" in result.stdout + result.stderr
    generate(_plan(tmp_path / "reference", n, size, workers=2), progress=False)
    _assert_identical(killed, tmp_path / "reference")


def test_stale_temporary_shards_are_ignored_and_replaced(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 10, 5)
    generate(plan, progress=False)
    good = (tmp_path / shard_name(5, 10)).read_bytes()
    (tmp_path / shard_name(5, 10)).unlink()
    stale = tmp_path / f".{shard_name(5, 10)}.deadbeef.tmp"
    stale.write_bytes(good[: len(good) // 2])  # a writer died mid-file
    with pytest.warns(UserWarning, match="ignoring 1 temporary file"), \
            pytest.raises(DatasetError, match=r"missing: shard-000000005-000000010\.h5"):
        open_dataset(tmp_path)
    assert generate(plan, progress=False)
    assert not stale.exists()
    assert (tmp_path / shard_name(5, 10)).read_bytes() == good
    open_dataset(tmp_path).validate()


def test_a_corrupted_existing_shard_is_reported_not_overwritten(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 10, 5)
    generate(plan, progress=False)
    path = tmp_path / shard_name(0, 5)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"shard-000000000-000000005\.h5.*truncated"):
        generate(plan, progress=False)


@pytest.mark.slow
def test_hydra_multirun_with_joblib_fills_one_directory(tmp_path: Path) -> None:
    out = tmp_path / "multi"
    cmd = [sys.executable, "-m", "physics.generate", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
           f"out_dir={out}", "n_samples=45", "shard_size=4", "workers=1", "parts=3", "part=range(0,3)",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY_OVERRIDES]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["job0-part0", "job1-part1", "job2-part2"]
    assert manifest.load(out)["shards"] is not None
    generate(_plan(tmp_path / "reference", 45, 4), progress=False)
    _assert_identical(out, tmp_path / "reference")


@pytest.mark.slow
def test_multirun_through_submitit_local_executor(tmp_path: Path) -> None:
    """The submitit launcher's local executor: the same pickling and job path as on SLURM."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "submitit"
    cmd = [sys.executable, "-m", "physics.generate", "-m", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=5", f"out_dir={out}", "n_samples=20", "shard_size=4", "workers=1",
           "parts=2", "part=range(0,2)", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY_OVERRIDES]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _assert_identical(out, _generate_reference(tmp_path, 20, 4))


@pytest.mark.slow
def test_shard_range_jobs_with_the_basic_launcher(tmp_path: Path) -> None:
    out = tmp_path / "ranges"
    result = _cli("-m", "shards=0:2,2:3", f"out_dir={out}", "n_samples=14", "shard_size=5", "workers=1",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY_OVERRIDES, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_identical(out, _generate_reference(tmp_path, 14, 5))


def _generate_reference(tmp_path: Path, n: int, size: int) -> Path:
    generate(_plan(tmp_path / "reference", n, size, workers=2), progress=False)
    return tmp_path / "reference"


@pytest.mark.slow
@pytest.mark.slow
def test_repeated_sigkills_with_two_workers(tmp_path: Path) -> None:
    """Kill the run three times at increasing progress, then finish it; compare with one clean run."""
    n, size = 6000, 50
    args = [f"n_samples={n}", f"shard_size={size}", "workers=2", *TINY_OVERRIDES]
    out = tmp_path / "killed"
    for shards in (1, 20, 60):
        assert _kill_mid_run([*args, f"out_dir={out}"], out, tmp_path, min_shards=shards) < n // size
    assert _cli(*args, f"out_dir={out}", tmp=tmp_path, timeout=300).returncode == 0
    _assert_identical(out, _generate_reference(tmp_path, n, size))


def test_environment_has_no_blas_override_leak() -> None:
    """The pool sets one-thread BLAS variables only while it runs."""
    before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    from physics.pool import solve_in_order

    results = list(solve_in_order(range(3), PhysicsConfig(**TINY), 0, 1))
    assert [r["index"] for r in results] == [0, 1, 2]
    assert {k: os.environ.get(k) for k in before} == before
