"""One training run (DESIGN.md "Flow of one training run"): data module → Pix2Pix → Trainer → test
metrics and figures in the run directory. `train.py` is the Hydra entry point around `run`."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from physics.files import atomic_write_bytes
from qdgan.datamodule import EDDataModule
from qdgan.metrics import report_line
from qdgan.networks import receptive_field
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import is_density
from qdgan.train import figures, rundir
from qdgan.train.callbacks import History
from qdgan.train.evaluate import evaluate, write_metrics

log = logging.getLogger(__name__)


def instantiate(spec: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, re-raising our own validation errors unwrapped (one-line messages)."""
    try:
        return hydra_instantiate(spec, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, TypeError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def build_model(cfg: DictConfig) -> Pix2Pix:
    return instantiate(
        cfg.model,
        generator_cfg=OmegaConf.to_container(cfg.generator, resolve=True),
        discriminator_cfg=OmegaConf.to_container(cfg.discriminator, resolve=True),
        max_steps=cfg.max_steps,
        mapping=cfg.mapping.name,
        input_name=cfg.mapping.input,
        target_name=cfg.mapping.target,
        is_density=is_density(cfg.mapping.target),
        _convert_="all",
        _recursive_=False,
    )


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
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
            loggers.append(logger)
        else:
            loggers.append(instantiate(spec))
    return loggers


def optimizer_steps_per_batch(model: Pix2Pix) -> int:
    """Lightning counts every optimizer step in global_step: 2 per batch with a discriminator."""
    return 2 if model.discriminator is not None else 1


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, pick the best checkpoint by validation R², evaluate on the test set; return metrics.

    A finished run of the same config in `run_dir` is returned as it is; one that left a checkpoint is
    continued (`resume: auto`, qdgan/train/rundir.py). An error is recorded in failed.json and re-raised."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for handler in list(logging.getLogger("lightning.pytorch").handlers):  # Hydra's root handler prints them
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    try:
        attempt = rundir.plan_attempt(cfg, run_dir)
        (run_dir / "failed.json").unlink(missing_ok=True)
        if attempt.action == "skip":
            print(f"skipped: {run_dir} holds a finished run of this config (R² {attempt.metrics['r2']:.4f})",
                  flush=True)
            return attempt.metrics
        if attempt.action == "resume":
            print(f"resuming from {attempt.ckpt_path}", flush=True)
        return _train_and_test(cfg, run_dir, attempt.ckpt_path)
    except Exception as err:
        rundir.record_failure(run_dir, err)
        raise


def _train_and_test(cfg: DictConfig, run_dir: Path, ckpt_path: str | None) -> dict[str, Any]:
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))

    dm: EDDataModule = instantiate(cfg.data, _recursive_=False)
    model = build_model(cfg)
    history = History(cfg.history_every_n_steps, cfg.n_tracked, out=str(run_dir / "history.json"))
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/r2", mode="max",
                           save_top_k=1, enable_version_counter=False)
    # Lightning's save_last only saves when the monitored metric improved; resuming needs the latest state.
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                             enable_version_counter=False)
    per_batch = optimizer_steps_per_batch(model)
    loggers = build_loggers(cfg, run_dir)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        max_steps=cfg.max_steps * per_batch,
        val_check_interval=cfg.val_every_n_steps,
        check_val_every_n_epoch=None,
        callbacks=[ckpt, latest, history],
        logger=loggers,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,
    )
    try:
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        train_seconds = time.perf_counter() - start
        if not trainer.is_global_zero:
            return {}
        return _test(cfg, dm, model, ckpt, history, train_seconds, run_dir)
    finally:
        _finish_wandb(loggers)


def _test(cfg: DictConfig, dm: EDDataModule, model: Pix2Pix, ckpt: ModelCheckpoint, history: History,
          train_seconds: float, run_dir: Path) -> dict[str, Any]:
    """Evaluate the best checkpoint on the test set; history.json and figures, then metrics.json (the
    "finished" mark, so a run that dies before it is redone)."""
    best_path = ckpt.best_model_path
    best = Pix2Pix.load_from_checkpoint(best_path, map_location="cpu") if best_path else model.cpu()
    dm.setup("test")
    x_test, y_test = dm.physical("test")
    result, pred = evaluate(best, x_test, y_test, dm.splits["test"], cfg.data.eval_batch_size)
    d = cfg.discriminator
    extra = {
        "best_checkpoint": str(best_path),
        "best_val_r2": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
        "generator_steps": int(model.generator_steps),
        "train_seconds": train_seconds,
        "patch_size": receptive_field(d.n_strided, d.n_plain, d.kernel_size),
        "n_train": cfg.data.n_train,
        "run_dir": str(run_dir),
        "finished": True,
    }
    hist = history.as_dict()
    atomic_write_bytes(run_dir / "history.json", json.dumps(hist).encode())
    _figures(cfg, dm, best, x_test, y_test, pred, hist, run_dir)
    write_metrics(result, run_dir / "metrics.json", extra)
    _report(result, extra, run_dir)
    return result | extra


def _finish_wandb(loggers: list[Any]) -> None:
    """Close this run's W&B run: otherwise the next run of a multirun in the same process logs into it."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


def _figures(cfg: DictConfig, dm: EDDataModule, model: Pix2Pix, x: torch.Tensor, y: torch.Tensor,
             pred: torch.Tensor, hist: dict[str, Any], run_dir: Path) -> None:
    fig_dir = run_dir / "figures"
    n = min(cfg.n_panels, len(x))
    idx = dm.splits["test"][:n]
    figures.panels(x[:n].numpy(), y[:n].numpy(), pred[:n].numpy(), cfg.mapping.input, cfg.mapping.target,
                   dm.physics.length_nm, fig_dir / "panels.png", labels=[f"#{i}" for i in idx])
    figures.loss_curves(hist, fig_dir / "losses.png")
    figures.r2_curve(hist, fig_dir / "val_r2.png")
    figures.ssim_evolution(hist, fig_dir / "ssim_evolution.png")


def _report(result: dict[str, Any], extra: dict[str, Any], run_dir: Path) -> None:
    head = result["mapping"]
    if extra["best_val_r2"] is not None:
        head += (f": test set of {result['n']} (best checkpoint, validation R² {extra['best_val_r2']:.4f} at "
                 f"{extra['generator_steps']} generator steps, {extra['train_seconds'] / 60:.1f} min)")
    print(f"{head}\n  {report_line(result)}\n  run dir: {run_dir}  (metrics.json, figures/, checkpoints/)",
          flush=True)
