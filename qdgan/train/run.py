"""One training run (DESIGN.md "Flow of one training run"): data module → Pix2Pix → Trainer → test
metrics and figures in the run directory. `train.py` is the Hydra entry point around `run`."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from physics.files import LockError, atomic_write_bytes, dir_lock
from qdgan import gan_step
from qdgan.datamodule import EDDataModule
from qdgan.metrics import report_line
from qdgan.networks import receptive_field
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import is_density
from qdgan.train import figures, rundir
from qdgan.train.callbacks import History, RunState, TimedCheckpoints
from qdgan.train.checkpoints import AtomicCheckpointIO
from qdgan.train.evaluate import evaluate, write_metrics
from qdgan.train.logs import build_loggers, finish_wandb

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


def check_settings(cfg: DictConfig) -> None:
    """Refuse run settings no training can follow, before any work (ValueError naming the key)."""
    for key, least in (("max_steps", 1), ("val_every_n_steps", 1), ("history_every_n_steps", 1),
                       ("n_tracked", 0), ("n_panels", 0), ("timed_ckpt_every_n_steps", 0)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value!r}: expected an integer ≥ {least}"
                             + (" (generator steps to train)" if key == "max_steps" else ""))
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.accelerator={accelerator}: no CUDA GPU is visible here (torch {torch.__version__}"
                         f"{'' if torch.version.cuda else ', a CPU-only build'}); use trainer=cpu, or install a CUDA "
                         "build of torch on a GPU machine (README: the ml extra)")
    grid, size = cfg.physics.grid, cfg.generator.image_size
    if grid != size:
        raise ValueError(f"physics.grid={grid}, but generator.image_size={size}: the generator takes "
                         f"{size}×{size} maps (set generator.image_size to the grid, a multiple of 2**depth)")


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, pick the best checkpoint by validation R², evaluate on the test set; return metrics.

    A finished run of the same config in `run_dir` is returned as it is; one that left a checkpoint is
    continued (`resume: auto`, qdgan/train/rundir.py). The run dir is locked while a process works in it
    (a second one gets LockError). An error is recorded in failed.json and re-raised."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for handler in list(logging.getLogger("lightning.pytorch").handlers):  # Hydra's root handler prints them
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    try:
        check_settings(cfg)
        # DDP ranks > 0 re-run this function in the run dir that rank 0 holds
        with dir_lock(run_dir, what="run directory") if rank_zero_only.rank == 0 else _no_lock():
            attempt = rundir.plan_attempt(cfg, run_dir)
            (run_dir / "failed.json").unlink(missing_ok=True)
            if attempt.action == "skip":
                print(f"skipped: {run_dir} holds a finished run of this config (R² {attempt.metrics['r2']:.4f})",
                      flush=True)
                return attempt.metrics
            if attempt.action == "resume":
                print(f"resuming from {attempt.ckpt_path}", flush=True)
            return _train_and_test(cfg, run_dir, attempt.ckpt_path)
    except LockError:
        raise  # the run dir belongs to another process: its failed.json is not ours to write
    except Exception as err:
        rundir.record_failure(run_dir, err)
        raise


@contextlib.contextmanager
def _no_lock() -> Any:
    yield None


def _train_and_test(cfg: DictConfig, run_dir: Path, ckpt_path: str | None) -> dict[str, Any]:
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))

    dm: EDDataModule = instantiate(cfg.data, _recursive_=False)
    if rank_zero_only.rank == 0:  # before the Trainer: bad data ends in one line, not after its banner
        dm.prepare_data()  # (DDP ranks > 0 start inside trainer.fit, once rank 0 has the data)
    dm.setup("fit")
    model = build_model(cfg)
    history = History(cfg.history_every_n_steps, cfg.n_tracked, out=str(run_dir / "history.json"))
    state = RunState()
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/r2", mode="max",
                           save_top_k=1, enable_version_counter=False)
    # Lightning's save_last only saves when the monitored metric improved; resuming needs the latest state.
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                             enable_version_counter=False)
    every = cfg.get("timed_ckpt_every_n_steps", 0)
    timed = [TimedCheckpoints(every, str(run_dir / "checkpoints" / "timed"))] if every else []
    loggers = build_loggers(cfg, run_dir, instantiate)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        max_steps=gan_step.optimizer_steps(model, cfg.max_steps),  # Lightning counts D's steps too
        val_check_interval=cfg.val_every_n_steps,
        check_val_every_n_epoch=None,
        callbacks=[ckpt, latest, history, state, *timed],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,
    )
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        if not trainer.is_global_zero:
            return {}
        return _test(cfg, dm, model, ckpt, history, state.train_seconds, run_dir)
    finally:
        finish_wandb(loggers)


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
        "best_step": int(best.generator_steps),  # the generator step at which best.ckpt was saved
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
        head += (f": test set of {result['n']} (best checkpoint: validation R² {extra['best_val_r2']:.4f} at generator "
                 f"step {extra['best_step']} of {extra['generator_steps']}; {extra['train_seconds'] / 60:.1f} min)")
    print(f"{head}\n  {report_line(result)}\n  run dir: {run_dir}  (metrics.json, figures/, checkpoints/)",
          flush=True)
