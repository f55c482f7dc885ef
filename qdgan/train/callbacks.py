"""Callbacks of a training run. `History`: losses (Fig. 3), validation R² (Fig. 5/A5a) and SSIM/MSSIM
of a fixed group of test instances over training (Fig. 4), for the run's figures. `RunState`: the random
states and training time a resumed run needs to be the run it continues. `TimedCheckpoints`: the weights
every n generator steps with their wall-clock time (`timed_ckpt_every_n_steps`, time-to-accuracy benchmark).

Both are callback state, so they travel in checkpoints and a resumed run continues the same curves;
the history is also written to `history.json` at the end of fitting.
"""

from __future__ import annotations

import json
import time
from typing import Any

import lightning as L
import torch

from physics.files import atomic_write_bytes
from qdgan import fast, metrics

LOSS_KEYS = ("train/loss_g", "train/loss_d", "train/loss_l1", "train/loss_g_gan")


class History(L.Callback):
    """Record losses every `every_n_steps` generator steps and evaluation curves at each validation."""

    def __init__(self, every_n_steps: int = 10, n_tracked: int = 30, out: str | None = None) -> None:
        self.every_n_steps = every_n_steps
        self.n_tracked = n_tracked
        self.out = out
        self.losses: dict[str, list[float]] = {"step": []}
        self.val: dict[str, list[float]] = {"step": []}
        self.tracked: dict[str, list[list[float]]] = {"step": [], "ssim": [], "mssim": [], "l1": [],
                                                      "l2": [], "linf": []}

    # losses ---------------------------------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = fast.host_value(pl_module, "generator_steps")  # no GPU sync per batch
        if step % self.every_n_steps or not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        self.losses["step"].append(step)
        for key in LOSS_KEYS:
            if key in logged:
                self.losses.setdefault(key, []).append(float(logged[key]))

    # validation curves ------------------------------------------------------------------------------

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        # after Lightning has moved this validation's epoch-end logs into callback_metrics (the epoch-end
        # hook runs before, so it would see the previous validation's values)
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = int(pl_module.generator_steps)
        logged = trainer.callback_metrics
        self.val["step"].append(step)
        for key, value in logged.items():
            if key.startswith("val/"):
                self.val.setdefault(key[4:], []).append(float(value))
        dm = trainer.datamodule
        if dm is None or not dm.splits:
            return
        x, y = dm.scaled("test")
        x, y = x[: self.n_tracked].to(pl_module.device), y[: self.n_tracked].to(pl_module.device)
        with torch.no_grad():
            pred = pl_module.physical_prediction(x)
        ref = pl_module.unscale_target(y).squeeze(1)
        self.tracked["step"].append(step)
        for name, values in metrics.per_sample_errors(pred, ref).items():
            self.tracked.setdefault(name, []).append(values.double().cpu().tolist())

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.out and trainer.is_global_zero:
            atomic_write_bytes(self.out, json.dumps(self.as_dict()).encode())

    # state ------------------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "val": self.val, "tracked": self.tracked}

    def state_dict(self) -> dict[str, Any]:
        return self.as_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses, self.val, self.tracked = state["losses"], state["val"], state["tracked"]


class RunState(L.Callback):
    """What a resumed run needs besides weights, optimizers and batch order to be the run it continues:
    every random state training draws from (dropout γ, jitter crops, flips: torch's CPU and CUDA generators;
    the batch order has its own, in TensorBatches; nothing draws from numpy's or Python's global ones) and
    the training seconds of earlier attempts. Saved in every checkpoint;
    restored at `on_train_start`, after the sanity check, where the interrupted run stood."""

    def __init__(self) -> None:
        self.seconds_before = 0.0  # training time of earlier attempts, as of the checkpoint resumed from
        self._started: float | None = None
        self._restore: dict[str, Any] | None = None

    @property
    def train_seconds(self) -> float:
        """Training seconds of all attempts so far."""
        now = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.seconds_before + now

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._restore is not None:
            rng = self._restore
            torch.set_rng_state(rng["torch"])
            if torch.cuda.is_available() and rng.get("cuda"):
                torch.cuda.set_rng_state_all(rng["cuda"])
            self._restore = None
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        # before the checkpoints (Lightning runs ModelCheckpoint last): the logs on disk reach the
        # state a resumed run starts from
        if not trainer.sanity_checking:
            for logger in trainer.loggers:
                logger.save()

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds_before = float(state["train_seconds"])
        self._restore = state["rng"]



class TimedCheckpoints(L.Callback):
    """Weights every `every_n_steps` generator steps in `dirpath/step<S>.ckpt` (loadable by
    `Pix2Pix.load_from_checkpoint`), listed in `dirpath/index.json` with the Unix time at which the save began,
    the seconds all earlier timed saves took (so a benchmark can leave its own cost out) and `RunState`'s
    training seconds. Nothing here steers training: the checkpoints are scored afterwards."""

    def __init__(self, every_n_steps: int, dirpath: str) -> None:
        self.every_n_steps = every_n_steps
        self.dirpath = dirpath
        self.entries: list[dict[str, Any]] = []
        self.overhead_s = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = fast.host_value(pl_module, "generator_steps")  # no GPU sync per batch
        if step % self.every_n_steps:
            return
        began = time.time()
        name = f"step{step:07d}.ckpt"
        trainer.save_checkpoint(f"{self.dirpath}/{name}", weights_only=True)  # every rank: a collective call
        state = next((c for c in trainer.callbacks if isinstance(c, RunState)), None)
        self.entries.append({"step": step, "file": name, "unix_time": began, "overhead_s": self.overhead_s,
                             "train_seconds": None if state is None else state.train_seconds})
        if trainer.is_global_zero:
            atomic_write_bytes(f"{self.dirpath}/index.json", json.dumps(self.entries, indent=1).encode())
        self.overhead_s += time.time() - began
