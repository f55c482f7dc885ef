"""The loggers of a run (conf/logger/), built so that a resumed run continues the same logs: the CSV log
in one `metrics.csv`, TensorBoard in one version folder, W&B in the same run (id kept in wandb_id.txt)."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from physics.files import atomic_write_bytes


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, written so that a kill loses nothing and a resumed run continues the same file.

    Every save rewrites `metrics.csv` whole through `physics.files` (atomic: never a torn last line), and
    `RunState` saves the loggers before each checkpoint, so the file holds every row up to the checkpoint a
    run resumes from. The rows of an earlier attempt are kept up to the first step this attempt logs: a
    resumed run logs again what came after its checkpoint; a run started anew logs from step 0 and so
    replaces them all."""

    _rows: list[dict[str, Any]] | None = None  # rows in the file: kept ones and this attempt's
    _carried: list[dict[str, Any]] | None = None  # an earlier attempt's, until this attempt's first step is known

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            path = Path(self.log_dir) / "metrics.csv"
            if path.is_file():
                with path.open(newline="") as f:
                    self._carried = [{k: v for k, v in row.items() if v not in ("", None)}
                                     for row in csv.DictReader(f)]
            with warnings.catch_warnings():  # "previous log files will be deleted": they are carried over
                warnings.simplefilter("ignore")
                super().experiment  # noqa: B018  (creates the writer)
        return self._experiment

    @rank_zero_only
    def save(self) -> None:
        self._write(final=False)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._write(final=True)

    def _write(self, final: bool) -> None:
        writer = self.experiment
        new, writer.metrics = writer.metrics, []
        writer.save()  # hparams.yaml (no metrics left for it to write)
        if self._carried is not None and (new or final):
            first = min((float(row["step"]) for row in new), default=float("inf"))
            self._rows = [row for row in self._carried if "step" in row and float(row["step"]) < first]
            self._carried = None
        if self._carried is not None:  # nothing logged yet: the file stays as the earlier attempt left it
            return
        self._rows = (self._rows or []) + new
        if not new and not final:
            return
        keys = sorted(set().union(*self._rows)) if self._rows else []
        text = io.StringIO()
        table = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
        table.writeheader()
        table.writerows(self._rows)
        atomic_write_bytes(Path(self.log_dir) / "metrics.csv", text.getvalue().encode())


def build_loggers(cfg: DictConfig, run_dir: Path, instantiate: Any) -> list[Any]:
    """The loggers of `cfg.logger`, each continuing its log when the run dir holds one."""
    loggers = []
    for name, spec in (cfg.logger or {}).items():
        if spec is None:
            continue
        if name == "wandb":
            if spec.get("offline", True):
                os.environ.setdefault("WANDB_MODE", "offline")  # never needs the network; `wandb sync` later
            id_file = run_dir / "wandb_id.txt"  # resuming in the same run dir continues the same W&B run
            run_id = id_file.read_text().strip() if id_file.exists() else None
            logger = instantiate(spec, id=run_id, resume="allow" if run_id else None)
            if not run_id:
                id_file.write_text(logger.experiment.id if logger.experiment else "")
        else:
            logger = instantiate(spec)
        loggers.append(logger)
    return loggers


def finish_wandb(loggers: list[Any]) -> None:
    """Close this run's W&B run: otherwise the next run of a multirun in the same process logs into it."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
