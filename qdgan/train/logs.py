"""The loggers of a run (conf/logger/), built so that a resumed run continues the same logs: the CSV log
in one `metrics.csv`, TensorBoard in one version folder, W&B in the same run (id kept in wandb_id.txt).
A finished run's W&B run also holds its test panels (images) and final metrics (a table and the run summary),
so a study's W&B group shows everything its summary.md does, without the network while training."""

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
from qdgan.train import rundir

# the final metrics of a run as W&B shows them: column → metrics.json key ("mean." for the per-sample means)
WANDB_TABLE = {"test_r2": "r2", "best_val_r2": "best_val_r2", "l1": "mean.l1", "l2": "mean.l2",
               "linf": "mean.linf", "unit": "units.l1", "ssim": "mean.ssim", "mssim": "mean.mssim",
               "charge_error": "mean.charge_error", "best_step": "best_step",
               "generator_steps": "generator_steps", "train_seconds": "train_seconds"}


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
    """Close this run's W&B run (otherwise the next run of a multirun in the same process logs into it), after
    logging the run's results into it when its run dir holds a finished run (`log_results`)."""
    wandb_loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    if wandb_loggers:
        import wandb

        if wandb.run is not None:
            try:
                log_results(wandb.run, Path(wandb_loggers[0].save_dir))
            except Exception as err:  # the run has finished (metrics.json): a dashboard extra must not fail it
                warnings.warn(f"W&B: could not log the run's results: {err}", stacklevel=2)
        wandb.finish()


def log_results(run: Any, run_dir: Path) -> None:
    """The test panels and the run's other figures as W&B images (`test/panels`, `figures/<name>`), its final
    metrics as a one-row W&B table (`test/metrics`; a group's tables join into the study's) and in the run's summary
    (`final/<column>`: columns of the group's runs table). L1/L2/L∞ and SSIM are on the test split."""
    import wandb

    metrics = rundir.read_metrics(run_dir)
    if metrics is None:
        return
    row = {column: _lookup(metrics, key) for column, key in WANDB_TABLE.items()}
    figures = sorted((run_dir / "figures").glob("*.png"))
    images = {("test/panels" if p.stem == "panels" else f"figures/{p.stem}"): wandb.Image(str(p)) for p in figures}
    table = wandb.Table(columns=["run", "mapping", *row], data=[[run.name, metrics.get("mapping"), *row.values()]])
    run.log({**images, "test/metrics": table})
    run.summary.update({f"final/{k}": v for k, v in row.items() if v is not None})


def _lookup(metrics: dict[str, Any], key: str) -> Any:
    value: Any = metrics
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
