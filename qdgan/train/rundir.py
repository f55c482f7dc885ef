"""What a run directory holds, shared by training (skip, resume, record a failure) and study summaries.

A run dir is the unit a study reruns: `config.yaml` is written when an attempt starts,
`checkpoints/last.ckpt` at every validation, `metrics.json` (with `finished: true`) last of all, and
`failed.json` (the error) when an attempt raises. A new attempt that gets past `plan_attempt` removes a
stale `failed.json`. Runs of another config never share a dir silently: `plan_attempt` refuses one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from physics.config import diff
from physics.files import atomic_write_bytes

log = logging.getLogger(__name__)

FINISHED, FAILED, STALE, INCOMPLETE, MISSING = "finished", "failed", "stale", "incomplete", "missing"
LAST, PREVIOUS = "last.ckpt", "last.prev.ckpt"  # the latest state and the one before (train/checkpoints.py)


@dataclass(frozen=True)
class Attempt:
    """How the next attempt in a run dir proceeds: skip (finished), resume from `ckpt_path`, or fresh."""

    action: str  # "skip" | "resume" | "fresh"
    ckpt_path: str | None = None
    metrics: dict[str, Any] | None = None


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json of a finished run, else None (absent, unreadable or not marked finished)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if metrics.get("finished") else None


def read_failure(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "failed.json").read_text())
    except (OSError, ValueError):
        return None


def status(run_dir: str | Path, expected: Settings | None = None) -> tuple[str, dict[str, Any]]:
    """(state, payload): failed (failed.json) > finished (metrics.json; stale when `expected` settings
    differ from its config.yaml) > incomplete (started: killed or still running) > missing (never started).
    The payload is the failure record ({"error": ...}) or the metrics."""
    run_dir = Path(run_dir)
    if (failure := read_failure(run_dir)) is not None:
        return FAILED, failure
    if (metrics := read_metrics(run_dir)) is not None:
        diffs = expected.differences_from(run_dir) if expected else []
        return (STALE, {"error": "finished with another config: " + _shorten(diffs)}) if diffs else (FINISHED, metrics)
    if (run_dir / "config.yaml").exists() or (run_dir / "checkpoints" / LAST).exists():
        return INCOMPLETE, {}
    return MISSING, {}


def record_failure(run_dir: str | Path, err: BaseException) -> Path:
    """Write failed.json (error line, traceback, time) so summaries list the run as failed with its reason."""
    path = Path(run_dir) / "failed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "error": f"{type(err).__name__}: {err}",
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(path, json.dumps(payload, indent=1).encode())
    return path


@dataclass(frozen=True)
class Settings:
    """The resolved settings a run's result depends on: the config less hydra and its `neutral_keys`."""

    values: dict[str, Any]
    neutral: tuple[str, ...]

    @classmethod
    def of(cls, cfg: DictConfig) -> Settings:
        neutral = (*cfg.get("neutral_keys", ()), "neutral_keys", "hydra")
        tree = {k: _resolved(cfg[k]) for k in cfg if k not in neutral}  # neutral ones may hold ${hydra:...}
        return cls(tree, neutral)

    def differences(self, stored: Mapping[str, Any]) -> list[str]:
        """'key: stored → now' for every non-neutral setting that differs from a stored (resolved) config."""
        return [f"{k}: {a} → {b}" for k, a, b in diff(dict(stored), self.values)
                if not any(k == n or k.startswith(f"{n}.") for n in self.neutral)]

    def differences_from(self, run_dir: Path) -> list[str]:
        """Differences from the config.yaml a run dir holds (none when it holds none)."""
        stored = run_dir / "config.yaml"
        return self.differences(OmegaConf.to_container(OmegaConf.load(stored))) if stored.exists() else []


def _resolved(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _shorten(diffs: list[str], n: int = 5) -> str:
    return "; ".join(diffs[:n]) + (f"; … {len(diffs) - n} more" if len(diffs) > n else "")


def plan_attempt(cfg: DictConfig, run_dir: Path) -> Attempt:
    """With `resume: auto`: skip a finished run of the same config, resume one that left an intact
    checkpoint (`resume_checkpoint`), else start fresh; ValueError if the dir holds results of another
    config. An explicit `ckpt_path` and `resume: never` start from what they say."""
    resume = cfg.get("resume", "auto")
    if resume not in ("auto", "never"):
        raise ValueError(f"resume={resume!r}; expected auto or never")
    saved = any((run_dir / "checkpoints" / name).exists() for name in (LAST, PREVIOUS))
    metrics = read_metrics(run_dir)
    if resume == "never" or not (metrics or saved):
        return Attempt("fresh", cfg.ckpt_path)
    if diffs := Settings.of(cfg).differences_from(run_dir):
        raise ValueError(f"the run dir holds a {'finished' if metrics else 'checkpointed'} run of another config "
                         f"({_shorten(diffs)}); move the dir away to retrain, or choose another hydra.sweep.dir")
    if metrics:
        return Attempt("skip", metrics=metrics)
    if cfg.ckpt_path:
        return Attempt("resume", cfg.ckpt_path)
    last = resume_checkpoint(run_dir / "checkpoints")
    return Attempt("resume", str(last)) if last else Attempt("fresh")


def intact(path: Path) -> bool:
    """Whether a checkpoint file is a complete torch zip archive (every member's CRC checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def resume_checkpoint(checkpoints: Path) -> Path | None:
    """`last.ckpt` if intact, else `last.prev.ckpt` if intact (with a warning), else None (with a warning when
    a damaged one was found): the state a killed run continues from."""
    damaged = []
    for name in (LAST, PREVIOUS):
        path = checkpoints / name
        if not path.exists():
            continue
        if intact(path):
            if damaged:
                log.warning("%s is damaged (truncated or corrupted); resuming from the previous checkpoint %s",
                            damaged[0], path)
            return path
        damaged.append(path)
    if damaged:
        log.warning("no intact checkpoint to resume from (%s damaged); training starts anew",
                    ", ".join(map(str, damaged)))
        for path in damaged:
            with contextlib.suppress(OSError):
                path.rename(path.with_name(path.name + ".damaged"))
    return None
