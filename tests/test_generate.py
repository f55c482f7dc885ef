"""Tests for the data-set generator `physics.generate`: determinism, resume after SIGKILL, manifest
agreement between jobs, reruns over replaced or corrupted shards, range locks, refusal of impossible
settings, the Hydra multirun path, one-line errors and sets of other potential families. Tiny physics
configs keep it fast."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from physics import families, manifest, potentials
from physics import generate as generate_module
from physics.config import ConfigError, PhysicsConfig
from physics.dataset import open_dataset
from physics.files import LockError, dir_lock
from physics.generate import Plan, check_out_dir, generate, lock_name, plan_from_config, select_shards
from physics.instances import instance_seed
from physics.manifest import Identity
from physics.potentials import check_feasible, max_wells, random_potential, well_mask
from physics.shards import FIELDS, DatasetError, read_header, shard_name, write_shard

ROOT = Path(__file__).resolve().parents[1]
TINY = {"grid": 16, "n_basis": 8, "n_orbitals": 6, "n_wells": 5}
TINY_OVERRIDES = [f"physics.{k}={v}" for k, v in TINY.items()]


def _plan(out: Path, n: int, shard_size: int, workers: int = 1, seed: int = 0, **physics: object) -> Plan:
    identity = Identity(PhysicsConfig(**{**TINY, **physics}), seed, n, shard_size)
    return Plan(identity, out, range(identity.n_shards), workers, {"test": True})


def _arrays(path: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(path)
    ds.validate()
    return {name: np.asarray(ds[name]) for name in (*FIELDS, "family")}


def _assert_identical(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    for name in (*FIELDS, "family"):
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


# --- reruns over replaced or corrupted shards (the manifest keeps its protection) ---------------------


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("generate", overrides=list(overrides))


def _replace_with_self_consistent(directory: Path, start: int, stop: int) -> None:
    """Swap a shard for one that is consistent in itself (same identity, own checksums), as one made on
    another machine would be, but whose energies differ from the shard the manifest pinned."""
    path = directory / shard_name(start, stop)
    header = read_header(path)
    with h5py.File(path, "r") as f:
        arrays = {name: f[name][...] for name in FIELDS}
    arrays["energy"] = arrays["energy"] + 1e-3
    path.unlink()
    write_shard(directory, start, stop, arrays, {"identity": manifest.canonical_json(header.identity),
                                                 "code_version": header.code_version})


def _flip_byte(path: Path, field: str = "n_int") -> None:
    with h5py.File(path, "r") as f:
        offset = f[field].id.get_offset() + 101
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_rerun_refuses_a_replaced_shard_and_keeps_the_manifest(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 10, 5)
    generate(plan, progress=False)
    pinned = (tmp_path / manifest.MANIFEST).read_bytes()
    _replace_with_self_consistent(tmp_path, 5, 10)
    with pytest.raises(DatasetError, match=r"shard-000000005-000000010\.h5: checksum mismatch with manifest\.json "
                                           r"in \['sha256'\] \(field\(s\) \['energy'\]\).*nothing was changed"):
        generate(plan, progress=False)
    assert (tmp_path / manifest.MANIFEST).read_bytes() == pinned
    with pytest.raises(DatasetError, match="checksum mismatch with manifest"):
        open_dataset(tmp_path)


def test_rerun_refuses_flipped_bytes_inside_a_shard(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 10, 5)
    generate(plan, progress=False)
    pinned = (tmp_path / manifest.MANIFEST).read_bytes()
    _flip_byte(tmp_path / shard_name(0, 5))
    with pytest.raises(DatasetError, match=r"shard-000000000-000000005\.h5: checksum mismatch in field 'n_int'"):
        generate(plan, progress=False)
    assert (tmp_path / manifest.MANIFEST).read_bytes() == pinned


def test_rerun_refuses_a_shard_of_another_set(tmp_path: Path) -> None:
    generate(_plan(tmp_path / "a", 10, 5), progress=False)
    generate(_plan(tmp_path / "b", 10, 5, seed=1), progress=False)
    shutil.copy(tmp_path / "b" / shard_name(5, 10), tmp_path / "a" / shard_name(5, 10))
    with pytest.raises(DatasetError, match=r"shard-000000005-000000010\.h5: mixed configs.*seed: manifest 0, shard 1"):
        generate(_plan(tmp_path / "a", 10, 5), progress=False)


def test_shards_of_other_parts_are_pinned_only_after_their_arrays_are_rehashed(tmp_path: Path) -> None:
    identity = Identity(PhysicsConfig(**TINY), 0, 20, 5)
    part = [Plan(identity, tmp_path, select_shards(4, None, p, 2), 1, {}) for p in range(2)]
    assert not generate(part[0], progress=False)
    _flip_byte(tmp_path / shard_name(5, 10))  # part 0's shard, corrupted before any manifest table exists
    with pytest.raises(DatasetError, match=r"shard-000000005-000000010\.h5: checksum mismatch in field 'n_int'"):
        generate(part[1], progress=False)
    assert manifest.load(tmp_path)["shards"] is None  # nothing pinned
    (tmp_path / shard_name(5, 10)).unlink()
    assert generate(part[0], progress=False)  # regenerates the deleted shard, accepts part 1's after re-hashing
    assert generate(part[1], progress=False)  # and part 1's rerun checks its shards against the pinned table
    assert [e["file"] for e in manifest.load(tmp_path)["shards"]] == [identity.shard_file(s) for s in range(4)]
    _assert_identical(tmp_path, _generate_reference(tmp_path, 20, 5))


def test_concurrent_finalizers_agree_and_leave_no_lock(tmp_path: Path) -> None:
    generate(_plan(tmp_path, 12, 4), progress=False)
    data = json.loads((tmp_path / manifest.MANIFEST).read_text())
    table, data["shards"] = data["shards"], None
    (tmp_path / manifest.MANIFEST).write_text(json.dumps(data))
    outcomes: list[object] = [None] * 6
    barrier = threading.Barrier(len(outcomes))

    def job(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = manifest.finalize(tmp_path)["shards"]
        except Exception as err:  # any failure is the finding
            outcomes[i] = err

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(outcomes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [table] * len(outcomes)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("shard-")) == [manifest.MANIFEST]


# --- a lock per shard range ----------------------------------------------------------------------------


def test_an_identical_job_is_refused_by_the_range_lock(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 10, 5)
    with dir_lock(tmp_path, name=lock_name(plan.shards)):
        with pytest.raises(LockError, match=rf"data set {tmp_path} is in use by pid {os.getpid()} on host "
                                            rf".*lock file {tmp_path}/\.lock-shards-0-1\)"):
            generate(plan, progress=False)
    assert not list(tmp_path.glob("shard-*"))


def test_jobs_of_other_shard_ranges_do_not_collide(tmp_path: Path) -> None:
    identity = Identity(PhysicsConfig(**TINY), 0, 20, 5)
    part = [Plan(identity, tmp_path, select_shards(4, None, p, 2), 1, {}) for p in range(2)]
    with dir_lock(tmp_path, name=lock_name(part[0].shards)):
        assert not generate(part[1], progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [shard_name(10, 15), shard_name(15, 20)]
    assert generate(part[0], progress=False)
    assert not list(tmp_path.glob(".lock*"))


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    plan = _plan(tmp_path, 10, 5)
    holder = {"pid": dead.pid, "start": "1", "host": socket.gethostname(), "since": "earlier", "argv": ["killed"]}
    (tmp_path / lock_name(plan.shards)).write_text(json.dumps(holder))
    with caplog.at_level(logging.WARNING):
        assert generate(plan, progress=False)
    assert f"took over the lock left by pid {dead.pid}" in caplog.text
    assert not (tmp_path / lock_name(plan.shards)).exists()


# --- out_dir, impossible physics, progress ------------------------------------------------------------


def test_out_dir_that_is_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=rf"out_dir={afile} is a file, expected a directory"):
        plan_from_config(_compose(f"out_dir={afile}", *TINY_OVERRIDES))
    with pytest.raises(ConfigError, match=rf"out_dir={afile}/sub cannot be created: {afile} is a file"):
        check_out_dir(afile / "sub")
    assert afile.read_text() == "x"


def test_impossible_n_wells_is_refused_before_any_work(tmp_path: Path) -> None:
    limit = max_wells(PhysicsConfig())
    assert limit is not None and 400 < limit < 100_000  # acceptance is already ~0 at 400 wells (docstring)
    check_feasible(PhysicsConfig(n_wells=limit))
    for n in (25, 1, 300):
        check_feasible(PhysicsConfig(n_wells=n))
    with pytest.raises(ConfigError, match=rf"PhysicsConfig\.n_wells={limit + 1} exceeds {limit}"):
        check_feasible(PhysicsConfig(n_wells=limit + 1))
    out = tmp_path / "data"
    with pytest.raises(ConfigError, match=rf"PhysicsConfig\.n_wells=100000 exceeds {limit}, the most wells"):
        plan_from_config(_compose("physics.n_wells=100000", f"out_dir={out}"))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="n_wells=100000"):
        generate(_plan(out, 10, 5, n_wells=100_000), progress=False)
    assert time.perf_counter() - t0 < 1.0 and not out.exists()
    assert max_wells(PhysicsConfig(max_overlap=1.0)) is None  # nested wells: the area can stay small


def _mask_all_at_once(centres: np.ndarray, radii: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """`well_mask` as it was before blocks: every well against every pixel in one array."""
    x = (np.arange(cfg.grid) + 0.5) * cfg.h_nm
    dx2 = (x[None, :] - centres[:, 0:1]) ** 2
    dy2 = (x[None, :] - centres[:, 1:2]) ** 2
    return (dx2[:, :, None] + dy2[:, None, :] <= (radii**2)[:, None, None]).any(axis=0)


def test_well_mask_memory_is_flat_in_n_wells_and_blocks_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PhysicsConfig(n_wells=3000)
    rng = np.random.default_rng(3)
    centres, radii = rng.uniform(0, cfg.length_nm, (3000, 2)), rng.uniform(0.1, 0.4, 3000)
    tracemalloc.start()
    mask = well_mask(centres, radii, cfg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 48 * 2**20, f"well_mask peaked at {peak / 2**20:.0f} MiB for 3000 wells (all at once: 105 MiB)"
    assert np.array_equal(mask, _mask_all_at_once(centres, radii, cfg)) and not mask.all()
    monkeypatch.setattr(potentials, "_MASK_ELEMENTS", 3 * cfg.grid**2)  # the paper's 25 wells in 9 blocks
    few = well_mask(centres[:25], radii[:25], cfg)
    assert few.any() and np.array_equal(few, _mask_all_at_once(centres[:25], radii[:25], cfg))


def test_progress_lines_are_throttled_for_tiny_shards(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate_module, "LOG_EVERY_S", 1e9)  # as if all shards took no time
    with caplog.at_level(logging.INFO, logger="physics.generate"):
        generate(_plan(tmp_path / "a", 12, 1), progress=False)
    written = [r.getMessage() for r in caplog.records if "written" in r.getMessage()]
    assert len(written) == 2 and written[0].startswith("shard 1/12") and written[1].startswith("shard 12/12")
    assert not any("in progress" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(generate_module, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(generate_module, "HEARTBEAT_S", 0.0)
    with caplog.at_level(logging.INFO, logger="physics.generate"):
        generate(_plan(tmp_path / "b", 12, 6), progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("written" in m for m in messages) == 2
    assert any(m.startswith("shard 1/2 in progress: 3/12 instances") for m in messages)


# --- the command line: one line, exit status 2 ---------------------------------------------------------


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("physics.generate: error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.slow
def test_cli_rerun_over_a_replaced_shard_fails_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["n_samples=10", "shard_size=5", "workers=1", f"out_dir={out}", *TINY_OVERRIDES]
    assert _cli(*args, tmp=tmp_path).returncode == 0
    pinned = (out / manifest.MANIFEST).read_bytes()
    _replace_with_self_consistent(out, 0, 5)
    _one_line_error(_cli(*args, tmp=tmp_path), f"{out / shard_name(0, 5)}: checksum mismatch with manifest.json")
    _flip_byte(out / shard_name(5, 10))
    _one_line_error(_cli(*args, tmp=tmp_path), "more problem(s)", "checksum mismatch in field 'n_int'")
    assert (out / manifest.MANIFEST).read_bytes() == pinned


@pytest.mark.slow
def test_cli_refuses_a_file_and_a_held_lock_and_impossible_wells(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(_cli(f"out_dir={afile}", tmp=tmp_path), f"out_dir={afile} is a file, expected a directory")
    _one_line_error(_cli("physics.n_wells=100000", f"out_dir={tmp_path / 'w'}", tmp=tmp_path),
                    "PhysicsConfig.n_wells=100000 exceeds")
    out = tmp_path / "locked"
    out.mkdir()
    with dir_lock(out, name=lock_name(range(2)), what="test"):
        result = _cli("n_samples=10", "shard_size=5", "workers=1", f"out_dir={out}", *TINY_OVERRIDES, tmp=tmp_path)
    _one_line_error(result, f"is in use by pid {os.getpid()}", str(out / ".lock-shards-0-1"))
    assert not list(out.glob("shard-*"))


@pytest.mark.slow
def test_cli_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    """Root may write anywhere: as root the command runs without CAP_DAC_OVERRIDE (util-linux setpriv)."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: no folder is unwritable")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    for out in (readonly, readonly / "new"):
        cmd = [*prefix, sys.executable, "-m", "physics.generate", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'h'}"]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        _one_line_error(result, f"out_dir={out}", f"{readonly} is not writable by this user")
    assert not list(readonly.iterdir())


# --- potential families ---------------------------------------------------------------------------------


def test_the_potential_group_picks_the_family_and_its_absence_means_paper(tmp_path: Path) -> None:
    plan = plan_from_config(_compose("potential=gates", "potential.margin_nm=6", f"out_dir={tmp_path}"))
    assert plan.identity.potential == families.from_mapping({"family": "gates", "margin_nm": 6.0})
    assert plan.identity.fields.keys() == {*FIELDS, "family"}
    old_style = _compose(f"out_dir={tmp_path}")  # as composed by qdgan's data module and tests/tiny.py
    with open_dict(old_style):
        del old_style["potential"]
    assert plan_from_config(old_style).identity == plan_from_config(_compose(f"out_dir={tmp_path}")).identity
    assert plan_from_config(old_style).identity.hash == Identity(PhysicsConfig(), 0, 5000, 100).hash
    with pytest.raises(ConfigError, match=r"potential: GatesSpec\.margin_nm=15\.0 must be < L/2"):
        plan_from_config(_compose("potential=gates", "potential.margin_nm=15", f"out_dir={tmp_path}"))


def test_a_family_set_is_identical_across_worker_counts_and_shard_sizes(tmp_path: Path) -> None:
    spec = families.from_mapping({"family": "mix"})
    for name, size, workers in (("a", 7, 1), ("b", 5, 2)):
        identity = Identity(PhysicsConfig(**TINY), 3, 24, size, spec)
        assert generate(Plan(identity, tmp_path / name, range(identity.n_shards), workers, {}), progress=False)
    _assert_identical(tmp_path / "a", tmp_path / "b")
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    assert np.array_equal(a.family, b.family) and len(a.family_counts) >= 3
    assert a.manifest["families"] == b.manifest["families"]


def test_another_family_or_parameter_in_the_same_directory_is_refused_naming_it(tmp_path: Path) -> None:
    generate(_plan(tmp_path, 4, 2), progress=False)  # a paper set: its manifest has no potential entry
    assert "potential" not in manifest.load(tmp_path)["identity"]
    gates = families.from_mapping({"family": "gates"})
    with pytest.raises(DatasetError, match=r"differing field\(s\): potential\.family: existing 'paper', requested "
                                           r"'gates'\. Use another out_dir"):
        generate(Plan(Identity(PhysicsConfig(**TINY), 0, 4, 2, gates), tmp_path, range(2), 1, {}), progress=False)
    other = tmp_path / "gates"
    generate(Plan(Identity(PhysicsConfig(**TINY), 0, 4, 2, gates), other, range(2), 1, {}), progress=False)
    wider = families.from_mapping({"family": "gates", "n_dips": [1, 4]})
    with pytest.raises(DatasetError, match=r"differing field\(s\): potential\.n_dips: existing \[1, 3\], requested "
                                           r"\[1, 4\]\. Use"):
        generate(Plan(Identity(PhysicsConfig(**TINY), 0, 4, 2, wider), other, range(2), 1, {}), progress=False)
    assert generate(Plan(Identity(PhysicsConfig(**TINY), 0, 4, 2, gates), other, range(2), 1, {}), progress=False)


@pytest.mark.slow
def test_cli_writes_a_gates_set_that_inspect_summarizes(tmp_path: Path) -> None:
    out = tmp_path / "gates"
    args = ["potential=gates", f"out_dir={out}", "n_samples=6", "shard_size=3", "workers=1", *TINY_OVERRIDES]
    assert _cli(*args, tmp=tmp_path).returncode == 0
    ds = open_dataset(out)
    assert ds.family_counts == {"gates": 6} and ds.manifest["identity"]["potential"]["family"] == "gates"
    shown = subprocess.run([sys.executable, "-m", "physics.inspect", str(out), "--out", str(tmp_path / "fig")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "families     gates 6" in shown.stdout, shown.stderr
    _one_line_error(_cli(*[a.replace("gates", "parabolic") if a.startswith("potential=") else a for a in args],
                         tmp=tmp_path), "potential.family: existing 'gates', requested 'parabolic'")
    _one_line_error(_cli("potential=double_dot", "potential.detuning_ev=[-1,1]", f"out_dir={tmp_path / 'x'}",
                         tmp=tmp_path), "potential: DoubleDotSpec.detuning_ev=[-1.0, 1.0]: expected |detuning| < 4/3")
