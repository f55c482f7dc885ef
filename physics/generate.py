"""Hydra app `python -m physics.generate`: write a data set of ED-solved random potentials as shards.

Each job refuses impossible settings before any work, creates (or checks) the manifest, locks its
shard range, verifies the shards of its range that already exist (header, the manifest's pinned
checksums, arrays re-hashed) and never overwrites them, solves the missing instances on a
spawn-context process pool (one BLAS thread per worker), writes each shard atomically as soon as it
is complete and finalizes the manifest once the whole set exists. Rerunning the same command after a
crash therefore completes exactly the missing shards, and a rerun over a replaced or corrupted shard
stops naming it. Many jobs (Hydra multirun, e.g. the submitit SLURM launcher over
`part=range(0,P) parts=P`) fill one out_dir: each locks only its own range.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from physics import families, manifest
from physics.choices import exit_on_bad_choice
from physics.config import ConfigError, PhysicsConfig
from physics.files import LockError, dir_lock, temporary_files
from physics.instances import InstanceError
from physics.manifest import Identity
from physics.pool import solve_in_order
from physics.shards import FAMILY_FIELD, DatasetError, write_shard

__all__ = ["Plan", "check_out_dir", "generate", "lock_name", "main", "plan_from_config", "select_shards"]

log = logging.getLogger("physics.generate")

LOG_EVERY_S = 10.0
"""Without a progress bar, a 'shard written' line at most this often (and always for the first and last
shard), so a million tiny shards do not flood the log."""
HEARTBEAT_S = 60.0
"""...and an 'in progress' line (instances done) when no line came for this long: a slow shard still shows."""


@dataclass(frozen=True)
class Plan:
    """One job: the data set's identity, where it goes, which shards this job owns, how many workers."""

    identity: Identity
    out_dir: Path
    shards: range
    workers: int
    config: dict[str, Any]  # resolved Hydra config, recorded in the manifest by the creating job


def select_shards(n_shards: int, shards: str | None, part: int, parts: int) -> range:
    """Shards of this job: the range `shards` ("start:stop", None = all), cut into `parts`
    contiguous blocks, block number `part`."""
    for name, value in (("part", part), ("parts", parts)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if parts < 1 or not 0 <= part < parts:
        raise ConfigError(f"need parts >= 1 and 0 <= part < parts, got part={part}, parts={parts}")
    selected = range(n_shards)
    if shards is not None:
        try:
            start, stop = (int(x) if x.strip() else None for x in str(shards).split(":"))
        except ValueError as err:
            raise ConfigError(f"shards must look like 'start:stop' (shard numbers), got {shards!r}") from err
        selected = range(n_shards)[slice(start, stop)]
        if not selected or (stop is not None and stop > n_shards):
            raise ConfigError(f"shards={shards!r} is not a non-empty range within the {n_shards} shards "
                              "of this data set (n_samples / shard_size, rounded up)")
    n = len(selected)
    return selected[part * n // parts:(part + 1) * n // parts]


def resolve_workers(workers: int | None) -> int:
    """Worker processes: `workers`, or the CPUs this job may use (SLURM allocation or affinity)."""
    if workers is None:
        slurm = os.environ.get("SLURM_CPUS_PER_TASK")
        return int(slurm) if slurm else len(os.sched_getaffinity(0))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer or null (all cores), got {workers!r}")
    return workers


def check_out_dir(out: Path) -> None:
    """Refuse an `out_dir` that is a file or lies in a folder this user cannot write (ConfigError)."""
    try:
        _check_out_dir(out)
    except OSError as err:  # e.g. a parent folder this user may not even look into
        raise ConfigError(f"out_dir={out} cannot be checked: {err.strerror} ({err.filename}), expected a "
                          "reachable, writable directory") from err


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir={out} is a file, expected a directory (existing or to be created) "
                          "for the data set's shards and manifest")
    home = out
    while not home.exists():  # the nearest existing folder decides whether `out` can be created
        home = home.parent
    if not home.is_dir():
        raise ConfigError(f"out_dir={out} cannot be created: {home} is a file, expected a directory")
    if not os.access(home, os.W_OK | os.X_OK):
        where = "is" if home == out else f"cannot be created: folder {home} is"
        raise ConfigError(f"out_dir={out} {where} not writable by this user, expected a writable directory")


def lock_name(shards: range) -> str:
    """Lock file of a job's shard range: identical jobs collide, jobs of other ranges (parts) do not."""
    return f".lock-shards-{shards.start}-{shards[-1]}"


def plan_from_config(cfg: DictConfig) -> Plan:
    """Validate the composed `conf/generate.yaml` and turn it into a Plan (ConfigError names the field).

    The `potential` group picks the family (absent, as in configs composed before families: `paper`). Also
    refuses potentials that cannot produce maps (`families.check`) and an unusable out_dir.
    """
    potential = cfg.get("potential")
    spec = families.from_mapping(None if potential is None else OmegaConf.to_container(potential, resolve=True))
    identity = Identity(PhysicsConfig.from_mapping(cfg.physics), cfg.seed, cfg.n_samples, cfg.shard_size, spec)
    families.check(identity.potential, identity.physics)
    shards = select_shards(identity.n_shards, cfg.shards, cfg.part, cfg.parts)
    out = Path(to_absolute_path(str(cfg.out_dir)))
    check_out_dir(out)
    return Plan(identity, out, shards, resolve_workers(cfg.workers), OmegaConf.to_container(cfg, resolve=True))


def generate(plan: Plan, progress: bool | None = None) -> bool:
    """Write the missing shards of `plan`; finalize the manifest if the set is complete; return that.

    `progress`: tqdm bar (True) or log lines (False); None picks the bar on a TTY. Raises ConfigError
    (impossible physics, unusable out_dir), LockError (an identical job runs) or DatasetError (an
    existing shard is bad: nothing is overwritten and the manifest is not changed).
    """
    identity, out = plan.identity, plan.out_dir
    families.check(identity.potential, identity.physics)
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out_dir={out} cannot be created: {err.strerror}, expected a writable directory") from err
    made = manifest.create_or_check(out, identity, plan.config)
    if made["code_version"] != manifest.code_version():
        log.warning("%s was created by %s, this job runs %s", out / manifest.MANIFEST,
                    made["code_version"], manifest.code_version())
    mine = f"shards {plan.shards.start}..{plan.shards.stop - 1}" if plan.shards else "no shards"
    lock = (dir_lock(out, name=lock_name(plan.shards), what=f"{mine} of data set") if plan.shards
            else contextlib.nullcontext())
    with lock:
        existing = _verify_existing(out, identity, plan.shards, manifest.shard_table(made, identity, out))
        todo = [s for s in plan.shards if s not in existing]
        n_todo = sum(len(range(*identity.shard_range(s))) for s in todo)
        log.info("%s: %d instances in %d shards, this job: %s, %d to do (%d instances) on %d worker(s)",
                 out, identity.n_samples, identity.n_shards, mine, len(todo), n_todo, plan.workers)
        if todo:
            for s in todo:
                for tmp in temporary_files(out, identity.shard_file(s)):
                    tmp.unlink(missing_ok=True)
            _run(plan, todo, n_todo, sys.stderr.isatty() if progress is None else progress)
        present = sum((out / identity.shard_file(s)).exists() for s in range(identity.n_shards))
        if present < identity.n_shards:
            log.info("%d of %d shards present; the other jobs (parts) complete the set", present,
                     identity.n_shards)
            return False
        # this job's shards were re-hashed above or hashed in memory when written: finalize re-hashes the others
        manifest.finalize(out, verified={identity.shard_file(s) for s in plan.shards})
    log.info("data set complete: %d instances, manifest finalized: %s", identity.n_samples,
             out / manifest.MANIFEST)
    return True


def _verify_existing(out: Path, identity: Identity, shards: range, table: list[dict[str, Any]] | None) -> set[int]:
    """The shards of `shards` that exist, each verified (`manifest.verify_shard`: header, pinned table
    entry, arrays re-hashed). Any bad one raises one DatasetError line naming it, before any work."""
    t0 = time.perf_counter()
    present, problems = set(), []
    for s in shards:
        path = out / identity.shard_file(s)
        if path.exists():
            present.add(s)
            try:
                problems += manifest.verify_shard(path, identity, s, table)
            except DatasetError as err:
                problems.append(str(err))
    if problems:
        raise DatasetError(f"{manifest.one_line(problems)}; nothing was changed: restore the shard, or delete it "
                           "to have it regenerated")
    if present:
        log.info("%d existing shard(s) of this job verified (%s, arrays re-hashed) in %.1f s", len(present),
                 "header and manifest checksums" if table is not None else "header", time.perf_counter() - t0)
    return present


def _run(plan: Plan, todo: list[int], n_todo: int, bar: bool) -> None:
    """Solve the instances of the `todo` shards on the pool and write each shard as it completes."""
    identity, cfg = plan.identity, plan.identity.physics
    ranges = [identity.shard_range(s) for s in todo]
    instances = (k for start, stop in ranges for k in range(start, stop))
    meter = _Meter(n_todo, len(todo), bar)
    fields = identity.fields  # paper sets: exactly the fields they always had (no `family`)
    results = solve_in_order(instances, cfg, identity.seed, plan.workers, identity.potential)
    with meter, contextlib.closing(results):
        for start, stop in ranges:
            arrays = {name: np.empty((stop - start, cfg.grid, cfg.grid) if f.is_map else (stop - start,),
                                     dtype=f.dtype) for name, f in fields.items()}
            for i in range(stop - start):
                row = next(results)
                for name in fields:
                    arrays[name][i] = row[name]
                meter.instance()
            attrs = {"identity": manifest.canonical_json(identity.to_dict()), "code_version": manifest.code_version()}
            if FAMILY_FIELD in fields:
                codes = np.bincount(arrays[FAMILY_FIELD], minlength=len(families.FAMILIES))
                attrs["family_counts"] = manifest.canonical_json(
                    {name: int(c) for name, c in zip(families.FAMILIES, codes, strict=True) if c})
            path = write_shard(plan.out_dir, start, stop, arrays, attrs)
            meter.shard(path.name, stop - start)


class _Meter:
    """Progress: a tqdm bar (instances/s, ETA) on a TTY, else log lines (LOG_EVERY_S, HEARTBEAT_S)."""

    def __init__(self, total: int, n_shards: int, bar: bool) -> None:
        self.total, self.n_shards, self.done, self.shards = total, n_shards, 0, 0
        self.t0 = self.last = time.perf_counter()
        self.bar = tqdm(total=total, unit="inst", dynamic_ncols=True, file=sys.stderr) if bar else None

    def instance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif time.perf_counter() - self.last >= HEARTBEAT_S:
            self._line("shard %d/%d in progress", self.shards + 1, self.n_shards)

    def shard(self, name: str, count: int) -> None:
        self.shards += 1
        due = self.shards in (1, self.n_shards) or time.perf_counter() - self.last >= LOG_EVERY_S
        if self.bar is None and due:
            self._line("shard %d/%d %s (%d instances) written", self.shards, self.n_shards, name, count)

    def _line(self, what: str, *args: object) -> None:
        self.last = now = time.perf_counter()
        rate = self.done / max(now - self.t0, 1e-9)
        eta = timedelta(seconds=round((self.total - self.done) / rate)) if rate > 0 else "?"
        log.info(f"{what}: %d/%d instances, %.1f inst/s, ETA %s", *args, self.done, self.total, rate, eta)

    def __enter__(self) -> _Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        elapsed = time.perf_counter() - self.t0
        log.info("%d instances in %.1f s (%.1f inst/s)", self.done, elapsed, self.done / max(elapsed, 1e-9))


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    """Entry point: compose, plan, generate; configuration, lock, data-set and file errors end in one line."""
    try:
        generate(plan_from_config(cfg))
    except (ConfigError, DatasetError, InstanceError, LockError, OSError) as err:
        print(f"physics.generate: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    exit_on_bad_choice(Path(__file__).resolve().parents[1] / "conf", "physics.generate")
    main()
