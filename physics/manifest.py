"""The data set's identity and its `manifest.json`: created once atomically, finalized with a shard table.

The identity (format, physics config, seed, n_samples, shard_size and, for any potential family but the
paper's, the potential spec) determines every array of the set; jobs writing into one directory must agree
on it. The manifest is created with a hard link
(atomic create-if-absent, also on NFS), so of several jobs starting at once exactly one creates it
and the others compare against it. `finalize` pins the per-shard counts and checksums once all shards
exist, after re-hashing every shard it has not seen written; a pinned table is never rewritten, so a
rerun cannot make the manifest accept a replaced or corrupted shard (`verify_shard` checks one).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import importlib.metadata
import json
import subprocess
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from physics import families
from physics.config import ConfigError, PhysicsConfig, describe, diff
from physics.files import LockError, atomic_write_bytes, dir_lock
from physics.shards import (
    ALL_FIELDS,
    FAMILY_FIELD,
    FIELDS,
    FORMAT,
    SPIN_FIELD,
    DatasetError,
    Field,
    ShardHeader,
    read_header,
    rehash,
    shard_name,
    shard_range,
)

__all__ = [
    "MANIFEST",
    "Identity",
    "canonical_json",
    "check_header",
    "code_version",
    "compare_entry",
    "create_or_check",
    "finalize",
    "identity_diff",
    "load",
    "one_line",
    "shard_table",
    "verify_shard",
]

MANIFEST = "manifest.json"
MANIFEST_LOCK = ".lock-manifest"
"""Held for the few milliseconds in which a finalizer re-reads and writes the manifest."""


@dataclass(frozen=True)
class Identity:
    """Everything the arrays of a data set depend on; instance k lives in shard k // shard_size.

    `potential` is the family spec (physics/families.py); the paper's is the default and is left out of
    `to_dict()`, so the paper's identity, its hash and the manifests written before families existed are
    unchanged, and a manifest without the entry reads as `paper`.
    """

    physics: PhysicsConfig
    seed: int
    n_samples: int
    shard_size: int
    potential: families.Spec = families.PAPER

    def __post_init__(self) -> None:
        object.__setattr__(self, "potential", families.from_mapping(self.potential))
        for name in ("n_samples", "shard_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.n_samples >= 10**9:
            raise ConfigError(f"n_samples={self.n_samples} must be below 10^9 (shard names have 9 digits)")

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Instance range [start, stop) of shard number `shard`."""
        return shard_range(shard, self.shard_size, self.n_samples)

    def shard_file(self, shard: int) -> str:
        return shard_name(*self.shard_range(shard))

    @property
    def is_paper(self) -> bool:
        return self.potential.family == "paper"

    @property
    def fields(self) -> dict[str, Field]:
        """The per-instance fields every shard of this set holds: FIELDS, plus `family` unless `paper`, plus
        `spin` unless N = 2 (so every N = 2 set, the paper's included, keeps exactly its fields)."""
        fields = dict(FIELDS)
        if not self.is_paper:
            fields[FAMILY_FIELD] = ALL_FIELDS[FAMILY_FIELD]
        if self.physics.n_electrons != 2:
            fields[SPIN_FIELD] = ALL_FIELDS[SPIN_FIELD]
        return fields

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "physics": self.physics.to_dict(), "seed": self.seed,
               "n_samples": self.n_samples, "shard_size": self.shard_size}
        if not self.is_paper:
            out["potential"] = families.to_dict(self.potential)
        return out

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of `to_dict()`."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Identity:
        """Rebuild from `to_dict()` output; DatasetError names `source` and the bad field."""
        if data.get("format") != FORMAT:
            raise DatasetError(f"{source}: field 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            return cls(PhysicsConfig.from_mapping(data["physics"]), data["seed"], data["n_samples"],
                       data["shard_size"], families.from_mapping(data.get("potential")))
        except KeyError as err:
            raise DatasetError(f"{source}: identity lacks field {err}") from err
        except (ConfigError, TypeError) as err:
            raise DatasetError(f"{source}: invalid identity: {err}") from err


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """'qdgan <version> git <commit>[+dirty]' of the checkout this module runs from."""
    try:
        version = importlib.metadata.version("qdgan")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[1]
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"qdgan {version}"
    return f"qdgan {version} git {commit}{'+dirty' if dirty else ''}"


def create_or_check(directory: Path, identity: Identity, generate_config: dict[str, Any]) -> dict[str, Any]:
    """Create `directory/manifest.json` for `identity`, or check that the existing one matches it.

    Concurrent creators cannot overwrite each other (an exclusive atomic write, physics.files); exactly
    one wins and the others compare. A mismatch raises DatasetError naming every differing field.
    """
    path = directory / MANIFEST
    manifest = {
        "format": FORMAT,
        "identity": identity.to_dict(),
        "config_hash": identity.hash,
        "code_version": code_version(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "generate_config": generate_config,
        "fields": {name: {"dtype": f.dtype, "unit": f.unit,
                          "shape": [identity.physics.grid] * 2 if f.is_map else []}
                   for name, f in identity.fields.items()},
        "shards": None,
    }
    if not identity.is_paper:  # the code table of the `family` field; counts are filled in by `finalize`
        manifest["families"] = {"names": list(families.FAMILIES), "counts": None}
    if not path.exists() and atomic_write_bytes(path, (json.dumps(manifest, indent=1) + "\n").encode(), exclusive=True):
        return manifest
    existing = _load_settled(directory)
    differences = identity_diff(existing["identity"], identity.to_dict())
    if differences:
        raise DatasetError(
            f"{path} was written for a different data set; differing field(s): "
            f"{describe(differences, 'existing', 'requested')}. Use another out_dir or the same config.")
    return existing


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """`config.diff` of two identity dicts, where an absent `potential` reads as the paper's family and a
    change of family is named alone (`potential.family: existing 'paper', requested 'gates'`)."""
    old, new = dict(old), dict(new)
    a, b = (d.pop("potential", None) or {"family": "paper"} for d in (old, new))
    if not (isinstance(a, dict) and isinstance(b, dict)) or a.get("family") == b.get("family"):
        return diff(old, new) + diff({"potential": a}, {"potential": b})
    return [*diff(old, new), ("potential.family", a.get("family"), b.get("family"))]


def _load_settled(directory: Path, wait_s: float = 10.0) -> dict[str, Any]:
    """`load`, retried for a few seconds while a concurrent O_EXCL creator may still be writing."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return load(directory)
        except DatasetError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def load(directory: Path) -> dict[str, Any]:
    """The parsed manifest of `directory`; DatasetError if the directory or manifest is missing or bad."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"data set directory {directory} does not exist or is not a directory")
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DatasetError(f"{path} is missing: {directory} is not a data set written by "
                           "physics.generate (or its first job never started)") from err
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path} is unreadable or not valid JSON: {err}") from err
    for key in ("format", "identity", "config_hash", "shards"):
        if key not in manifest:
            raise DatasetError(f"{path}: manifest lacks field {key!r}")
    Identity.from_dict(manifest["identity"], str(path))
    return manifest


def check_header(header: ShardHeader, identity: Identity, shard: int) -> list[str]:
    """Problems (each naming the file and field) of a shard header against the set's identity."""
    name = header.path
    start, stop = identity.shard_range(shard)
    problems = []
    differences = identity_diff(identity.to_dict(), header.identity)
    if differences:
        problems.append(f"{name}: mixed configs, shard differs from {MANIFEST} in "
                        f"{describe(differences, 'manifest', 'shard')}")
    if (header.start, header.stop) != (start, stop):
        problems.append(f"{name}: attributes start/stop = {header.start}/{header.stop}, expected "
                        f"{start}/{stop}")
    grid = identity.physics.grid
    expected = identity.fields
    absent = {FAMILY_FIELD: "a set of potential family 'paper' has none (absent = every instance is paper)",
              SPIN_FIELD: "a set of N = 2 electrons has none (absent = every ground state is a singlet)"}
    problems += [f"{name}: shard has field {field!r}, but {absent[field]}" for field in header.shapes
                 if field not in expected]
    for field, spec in expected.items():
        shape = (stop - start, grid, grid) if spec.is_map else (stop - start,)
        if field not in header.shapes:  # required fields were checked by read_header
            kind = (f"potential family {identity.potential.family!r}" if field == FAMILY_FIELD
                    else f"N = {identity.physics.n_electrons} electrons")
            problems.append(f"{name}: shard lacks field {field!r}, expected in a set of {kind}")
            continue
        if header.shapes[field] != shape:
            problems.append(f"{name}: field {field!r} has shape {header.shapes[field]}, "
                            f"expected {shape}")
        if header.dtypes[field] != spec.dtype:
            problems.append(f"{name}: field {field!r} has dtype {header.dtypes[field]}, "
                            f"expected {spec.dtype}")
        if field not in header.sha256:
            problems.append(f"{name}: no checksum for field {field!r}")
    return problems


def shard_entry(header: ShardHeader) -> dict[str, Any]:
    """The manifest's record of one shard (with its instances per family where the shard records them)."""
    entry = {"file": header.path.name, "start": header.start, "stop": header.stop,
             "count": header.stop - header.start, "sha256": header.sha256,
             "code_version": header.code_version}
    if header.family_counts is not None:
        entry["family_counts"] = header.family_counts
    return entry


def compare_entry(recorded: dict[str, Any], actual: dict[str, Any], directory: Path) -> list[str]:
    """Problem (naming the file and the fields) when a shard differs from its entry in the shard table."""
    keys = ("file", "start", "stop", "count", "sha256", "family_counts")
    differences = [k for k in keys if recorded.get(k) != actual.get(k)]
    if not differences:
        return []
    fields = [f for f in ALL_FIELDS if recorded.get("sha256", {}).get(f) != actual["sha256"].get(f)]
    return [f"{directory / actual['file']}: checksum mismatch with {MANIFEST} in {differences}"
            + (f" (field(s) {fields})" if fields else "") + ": shard replaced or corrupted"]


def shard_table(manifest: dict[str, Any], identity: Identity, directory: Path) -> list[dict[str, Any]] | None:
    """The manifest's pinned shard table (None before finalizing); DatasetError if its length is wrong."""
    table = manifest["shards"]
    if table is not None and (not isinstance(table, list) or len(table) != identity.n_shards):
        raise DatasetError(f"{directory / MANIFEST}: field 'shards' lists "
                           f"{len(table) if isinstance(table, list) else table!r} shards, expected {identity.n_shards}")
    return table


def verify_shard(path: Path, identity: Identity, shard: int, table: list[dict[str, Any]] | None) -> list[str]:
    """Problems of an existing shard: header against the identity, against the pinned `table` entry (if
    finalized), then its arrays re-hashed against its own header checksums (skipped if already wrong)."""
    header = read_header(path)
    problems = check_header(header, identity, shard)  # a shard of another set: its checksums differ anyway
    if not problems and table is not None:
        problems = compare_entry(table[shard], shard_entry(header), path.parent)
    return problems or rehash(header)


def finalize(directory: Path, verified: Collection[str] = ()) -> dict[str, Any]:
    """Check every shard against the manifest and pin the shard table (atomic replace, idempotent).

    All shards must exist and agree with the identity. A table that is already pinned is never rewritten:
    each shard must equal its entry, else DatasetError. Before pinning a new table, every shard whose
    file name is not in `verified` (shards the caller has just written or re-hashed) is re-hashed, so
    only content matching its own header checksums gets pinned. Concurrent finalizers (the last parts of
    a multirun) serialize on `MANIFEST_LOCK`, re-read the manifest under it and write identical bytes.
    """
    directory = Path(directory)
    manifest = load(directory)
    identity = Identity.from_dict(manifest["identity"], str(directory / MANIFEST))
    missing = [identity.shard_file(s) for s in range(identity.n_shards)
               if not (directory / identity.shard_file(s)).exists()]
    if missing:
        raise DatasetError(f"{directory}: cannot finalize, {len(missing)} shard(s) missing, e.g. "
                           f"{missing[:3]}; rerun physics.generate with the same config")
    pinned = shard_table(manifest, identity, directory)
    table, problems = [], []
    for s in range(identity.n_shards):
        header = read_header(directory / identity.shard_file(s))
        found = check_header(header, identity, s)
        if not found and pinned is not None:
            found = compare_entry(pinned[s], shard_entry(header), directory)
        elif not found and header.path.name not in verified:
            found += rehash(header)
        problems += found
        table.append(shard_entry(header))
    if problems:
        raise DatasetError(f"{one_line(problems)}; {MANIFEST} was not changed")
    if pinned is not None:
        return manifest
    with _manifest_lock(directory):
        current = load(directory)
        if current["shards"] is None:
            current["shards"] = table
            if "families" in current:
                current["families"]["counts"] = family_totals(table, current["families"]["names"])
            atomic_write_bytes(directory / MANIFEST, (json.dumps(current, indent=1) + "\n").encode())
        else:
            pinned = shard_table(current, identity, directory) or []
            problems = [p for old, new in zip(pinned, table, strict=True) for p in compare_entry(old, new, directory)]
            if problems:
                raise DatasetError(one_line(problems))
    return current


@contextlib.contextmanager
def _manifest_lock(directory: Path, wait_s: float = 60.0) -> Iterator[None]:
    """Hold `MANIFEST_LOCK`, waiting up to `wait_s` for another finalizer (it holds it for milliseconds)."""
    deadline = time.monotonic() + wait_s
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(dir_lock(directory, name=MANIFEST_LOCK, what=f"{MANIFEST} of data set"))
                break
            except LockError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield


def family_totals(table: list[dict[str, Any]], names: list[str]) -> dict[str, int]:
    """Instances per family (table order, every family listed) summed over a shard table's `family_counts`."""
    totals = dict.fromkeys(names, 0)
    for entry in table:
        for name, count in (entry.get("family_counts") or {}).items():
            totals[name] = totals.get(name, 0) + int(count)
    return totals


def one_line(problems: list[str], shown: int = 3) -> str:
    """`problems` as one line: the first in full, then up to `shown` more, then how many are left."""
    if len(problems) == 1:
        return problems[0]
    more = problems[1:1 + shown]
    rest = len(problems) - 1 - len(more)
    return (f"{problems[0]} (and {len(problems) - 1} more problem(s): {'; '.join(more)}"
            f"{f'; ... {rest} more' if rest else ''})")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
