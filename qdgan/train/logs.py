"""The loggers of a run (conf/logger/), built so that a resumed run continues the same logs: the CSV log
in one `metrics.csv`, TensorBoard in one version folder, W&B in the same run (id kept in wandb_id.txt)."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, continued in place: the rows of an earlier attempt in the same `metrics.csv`
    are kept up to the first step this attempt logs (a resumed run logs again what came after its
    checkpoint; a run started anew logs from step 0 and so replaces them all)."""

    _carried: list[dict[str, Any]] | None = None

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        if path.is_file():
            with path.open(newline="") as f:
                self._carried = list(csv.DictReader(f))
        with warnings.catch_warnings():  # "previous log files will be deleted": save() carries them over
            warnings.simplefilter("ignore")
            return super().experiment

    def save(self) -> None:
        writer = self._experiment
        if self._carried is not None and writer is not None and writer.metrics:
            first = min(float(row["step"]) for row in writer.metrics)
            writer.metrics[:0] = [{k: v for k, v in row.items() if v != ""} for row in self._carried
                                  if row.get("step") and float(row["step"]) < first]
            self._carried = None
        super().save()

    def finalize(self, status: str) -> None:
        writer = self._experiment
        if self._carried is not None and writer is not None and not writer.metrics:  # resumed at its last step
            writer.metrics = [{k: v for k, v in row.items() if v != ""} for row in self._carried]
            self._carried = None
        super().finalize(status)


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
