"""`Pix2Pix`: the conditional GAN of paper §III.2 as a LightningModule (manual optimization).

Per batch: D on real (α, β) vs fake (α, G(α)) — eq. 9 — then G on the adversarial term plus
λ·L1 — eq. 10. `adv_weight = 0` gives the pure L1 U-Net baseline (D is then never stepped).
With two optimizers Lightning's `global_step` counts both steps; `generator_steps` counts batches,
and train.py turns the config's `max_steps` (generator steps) into Lightning's count.
Scaling statistics and the training-set mean image live in buffers, so a checkpoint alone maps
physical inputs to physical outputs. Trained on data of several N (issue 11), G and D take N as a second
input channel (`scaling.with_electrons`) and the hyperparameter `electrons` records those N.
Speed switches that keep the step's arithmetic (`qdgan.fast`): one D pass over real and fake pairs with
per-half batch norm (`joint_d_pass`), bf16 autocast with G's output layer in fp32 (`autocast`), that layer as
matmul + col2im (`fold_output`), NHWC (`channels_last`), Adam on one flat buffer (`flat_adam`); D is frozen during
G's backward, as in the reference. Options: an EMA of G's weights for
evaluation (`ema_decay`, `qdgan.ema`), a density output layer with n ≥ 0 and ∫n = N (`density_output`,
`qdgan.density`), a linear or cosine learning-rate decay (`qdgan.optim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from qdgan import density, ema, fast, gan_step, metrics, optim
from qdgan.scaling import DataStats, electrons_in, encode_input, from_unit_range, with_electrons


class Pix2Pix(L.LightningModule):
    """cGAN + λ·L1 for one mapping (eq. 10); networks built from their Hydra configs."""

    def __init__(
        self,
        generator_cfg: dict[str, Any],
        discriminator_cfg: dict[str, Any],
        lambda_l1: float = 100.0,
        adv_weight: float = 1.0,
        adv_every: int = 1,
        gan_mode: str = "vanilla",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_decay_start: float = 1.0,
        lr_schedule: str = "linear",
        max_steps: int = 0,
        eval_dropout: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        fused_adam: bool = True,
        flat_adam: bool = False,
        fold_output: bool = False,
        joint_d_pass: bool = False,
        autocast: str = "none",
        uniform_dropout: bool = False,
        ema_decay: float = 0.0,
        density_output: str | None = None,
        l1_per_electron: bool = False,
        log_every_n_steps: int = 10,
        mapping: str = "",
        input_name: str = "",
        target_name: str = "",
        is_density: bool = True,
        electrons: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if gan_mode not in gan_step.GAN_MODES:
            raise ValueError(f"model.gan_mode={gan_mode!r}: expected one of {gan_step.GAN_MODES}")
        if adv_weight < 0 or lambda_l1 < 0:
            raise ValueError(f"model.adv_weight={adv_weight}, model.lambda_l1={lambda_l1}: expected ≥ 0")
        if isinstance(adv_every, bool) or not isinstance(adv_every, int) or adv_every < 1:
            raise ValueError(f"model.adv_every={adv_every!r}: expected an integer ≥ 1 (1: D and the adversarial term "
                             "on every batch, as in the paper)")
        optim.check(lr_schedule, lr_decay_start)
        fast.autocast_dtype(autocast, torch.device("cpu"))  # ValueError for an unknown setting
        ema.check(ema_decay)
        density.check(density_output, target_name, is_density)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._build_networks()
        size = self.generator.image_size
        # Data statistics (physical units), filled from the data module in setup(); saved in checkpoints.
        self.register_buffer("scale", torch.zeros(4, dtype=torch.float64))  # in_min, in_max, tg_min, tg_max
        self.register_buffer("target_mean", torch.zeros(size, size))
        self.register_buffer("physics", torch.zeros(2, dtype=torch.float64))  # pixel area nm², N
        self.register_buffer("input_code", torch.zeros(3, dtype=torch.float64))  # encode_input: log offset, lo, hi
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("d_numbers", torch.zeros(len(gan_step.D_LOGS)))  # D's latest logs (adv_every > 1)
        self._val: dict[str, Any] = {}  # per-epoch accumulators (plain dict: not submodules)
        self.autocast_dtype: torch.dtype | str | None = "unset"  # the training step's, set at its first call

    def _build_networks(self) -> None:
        """G (and its EMA) and D from their configs, with one more input channel, N, for a model of several N
        (`electrons`); G's output layer in fp32, without tanh under a density output; D's batch norms split."""
        hp = self.hparams
        more = {"in_channels": hp.generator_cfg.get("in_channels", 1) + 1} if self.conditioned else {}
        self.generator = self._generator(more)
        if hp.ema_decay > 0:
            self.generator_ema = ema.start(self._generator(more), self.generator)
        more = {"in_channels": hp.discriminator_cfg.get("in_channels", 2) + 1} if self.conditioned else {}
        self.discriminator = instantiate(hp.discriminator_cfg, **more) if hp.adv_weight > 0 else None
        if self.discriminator is not None and hp.joint_d_pass:
            fast.split_batch_norms(self.discriminator)
        if hp.channels_last:
            self.to(memory_format=torch.channels_last)
            for net in (self.generator, getattr(self, "generator_ema", None)):
                if net is not None:
                    fast.dense_grad_relus(net)
        # torch.compile'd callables live outside the module tree, so state_dict keys stay unchanged.
        self._nets: dict[str, Any] = {"g": self.generator, "d": self.discriminator}
        if hp.compile:
            self._nets = {k: torch.compile(v) if v is not None else None for k, v in self._nets.items()}

    def _generator(self, more: dict[str, Any]) -> nn.Module:
        net = instantiate(self.hparams.generator_cfg, **more)
        if self.hparams.density_output:
            density.drop_tanh(net)
        if self.hparams.uniform_dropout:
            fast.uniform_dropout(net)
        if self.hparams.fold_output:
            fast.fold_output(net)
        return fast.fp32_output(net)

    @property
    def eval_generator(self) -> nn.Module:
        """The generator that evaluates and predicts: the EMA of the weights when `ema_decay` > 0, else G."""
        return self.generator_ema if self.hparams.ema_decay > 0 else self.generator

    @property
    def conditioned(self) -> bool:
        """Whether N is an input (the model was trained on several N)."""
        return bool(self.hparams.get("electrons"))

    @property
    def electrons(self) -> tuple[int, ...]:
        """The N the model was trained on: those of its `electrons` hyperparameter, else the one of its data."""
        return tuple(self.hparams.get("electrons") or (round(float(self.physics[1])),))

    def condition_on(self, electrons: Sequence[int]) -> None:
        """Data of several N: take N as an input channel (G and D built anew, before any training step, with one
        more input channel) and record those N in the hyperparameters, so checkpoints load as such a model."""
        electrons = [int(n) for n in electrons]
        if len(electrons) < 2 or list(self.electrons) == electrons:
            return
        if self.conditioned:
            raise ValueError(f"data of N = {', '.join(map(str, electrons))}, but the model was trained on N = "
                             f"{', '.join(map(str, self.electrons))}; train a new model")
        self.hparams.electrons = electrons
        self._build_networks()

    def check_electrons(self, n_electrons: Any, name: str = "N") -> None:
        """ValueError (one line, both values) when an N is not one the model was trained on."""
        wrong = sorted({int(n) for n in np.atleast_1d(np.asarray(n_electrons))} - set(self.electrons))
        if wrong:
            raise ValueError(f"{name}={', '.join(map(str, wrong))}: the model was trained on N = "
                             f"{', '.join(map(str, self.electrons))} {'only' if self.conditioned else '(one N)'}")

    # --- data statistics -------------------------------------------------------------------------

    def set_data_stats(self, stats: DataStats) -> None:
        self.scale.copy_(torch.tensor([stats.input_min, stats.input_max, stats.target_min, stats.target_max],
                                      dtype=torch.float64))
        self.target_mean.copy_(stats.target_mean)
        self.physics.copy_(torch.tensor([stats.pixel_area, stats.n_electrons], dtype=torch.float64))
        self.input_code.copy_(torch.tensor(stats.input_code, dtype=torch.float64))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the input code existed used the linear input scaling."""
        state = checkpoint["state_dict"]
        state.setdefault("d_numbers", torch.zeros(len(gan_step.D_LOGS)))  # checkpoints from before adv_every
        if "input_code" not in state:
            state["input_code"] = torch.tensor([0.0, *state["scale"][:2].tolist()], dtype=torch.float64)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "stats", None) is not None:
            self.condition_on(getattr(dm, "electrons", ()))
            self.set_data_stats(dm.stats)

    @property
    def has_stats(self) -> bool:
        return bool(self.scale[1] > self.scale[0])

    def scale_input(self, x: Tensor) -> Tensor:
        """Physical inputs → network inputs, exactly as the data module encoded the training inputs."""
        return encode_input(x, *fast.host_value(self, "input_code"))

    def unscale_target(self, y: Tensor) -> Tensor:
        lo, hi = fast.host_value(self, "scale")[2:]
        return from_unit_range(y.float(), lo, hi)

    # --- forward ---------------------------------------------------------------------------------

    def network_input(self, x: Tensor, n_electrons: Tensor | float | None = None) -> Tensor:
        """Physical inputs (B, H, W) → network inputs (B, C, H, W): the scaled map, and for a model of several N
        its N (one for all, or each instance's) as a second channel (ValueError when none is given)."""
        x = self.scale_input(x).unsqueeze(1)
        if not self.conditioned:
            return x
        if n_electrons is None:
            raise ValueError(f"the model takes N as an input (trained on N = {', '.join(map(str, self.electrons))}): "
                             "give the inputs' N")
        return with_electrons(x, n_electrons, max(self.electrons))

    def forward(self, x: Tensor) -> Tensor:
        """G(α) on scaled inputs (B, C, H, W) → scaled outputs (in [−1, 1] but for a density output's peaks):
        the trained G in training mode, `eval_generator` in eval mode; a density output layer makes them
        densities ≥ 0 of ∫n = N (each instance's N)."""
        if self.hparams.channels_last:
            x = fast.channels_last(x)
        out = self._nets["g"](x) if self.training else self.eval_generator(x)
        kind = self.hparams.density_output
        if not kind:
            return out
        n_electrons, area = self.charge_of(x)
        return density.scaled_density(out, kind, n_electrons, area, *fast.host_value(self, "scale")[2:])

    def physical_prediction(self, x: Tensor) -> Tensor:
        """Scaled inputs (B, C, H, W) → predictions (B, H, W) in physical units, as evaluated: dropout
        (the noise γ) stays on only with `eval_dropout`, as the TF pix2pix does at test time."""
        if self.hparams.eval_dropout:
            for m in self.eval_generator.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        return self.unscale_target(self(x)).squeeze(1)

    @torch.no_grad()
    def predict_maps(self, inputs: Tensor, batch_size: int = 100, n_electrons: Tensor | float | None = None) -> Tensor:
        """Physical inputs (n, H, W) → physical predictions (n, H, W) on the CPU, in eval mode, in batches
        on the model's device: the one path from a map to a prediction (test, predict, invert). A model of
        several N takes `n_electrons`, one N or each input's (n,)."""
        self.eval()
        outs, n = [], None if n_electrons is None else torch.as_tensor(n_electrons, dtype=torch.float32)
        for i in range(0, len(inputs), batch_size):
            part = n if n is None or n.dim() == 0 else n[i : i + batch_size].to(self.device)
            x = self.network_input(inputs[i : i + batch_size].to(self.device), part)
            outs.append(self.physical_prediction(x).cpu())
        return torch.cat(outs) if outs else inputs.new_zeros((0, *inputs.shape[1:]))

    @property
    def charge(self) -> tuple[float, float] | None:
        """(N, h²) for the charge error of density mappings of a one-N model; None for potentials."""
        area, n_electrons = fast.host_value(self, "physics")  # no GPU sync per step
        return (n_electrons, area) if self.hparams.is_density else None

    def charge_of(self, x: Tensor) -> tuple[Tensor | float, float] | None:
        """`charge` for a batch of network inputs (B, C, H, W): a model of several N reads each one's N from x."""
        if not (self.conditioned and self.hparams.is_density):
            return self.charge
        return electrons_in(x, max(self.electrons)), fast.host_value(self, "physics")[0]

    # --- training --------------------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """One D step and one G step (`gan_step.optimize`), then the EMA, the schedules and the loss logs."""
        hp = self.hparams
        logs = gan_step.optimize(self, *batch)
        fast.host_add_(self, "generator_steps")  # += 1, and its Python copy: no GPU sync per step
        steps = fast.host_value(self, "generator_steps")
        if hp.ema_decay > 0:
            ema.update(self.generator_ema, self.generator, ema.decay_at(hp.ema_decay, steps))
        for sched in self._schedulers():
            sched.step()
        if steps % hp.log_every_n_steps == 0:  # self.log costs ~0.1 ms per value
            logs["g_step"] = self.generator_steps.float()
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch[0].shape[0])

    def _schedulers(self) -> list[Any]:
        scheds = self.lr_schedulers()
        return [] if scheds is None else scheds if isinstance(scheds, list) else [scheds]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opts = [optim.adam(self.generator, hp.lr_g, hp.betas, hp.fused_adam, hp.flat_adam)]
        if self.discriminator is not None:
            opts.append(optim.adam(self.discriminator, hp.lr_d, hp.betas, hp.fused_adam, hp.flat_adam))
        scheds = optim.schedulers(opts, hp.get("lr_schedule", "linear"), hp.lr_decay_start, hp.max_steps)
        return (opts, scheds) if scheds else opts

    # --- evaluation ------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val = {"r2": metrics.R2Score(self.target_mean).to(self.device), "sums": {}}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        pred, ref = self.physical_prediction(x), self.unscale_target(y).squeeze(1)
        self._val["r2"].update(pred, ref)
        for k, v in metrics.per_sample_errors(pred, ref, self.charge_of(x)).items():
            self._val["sums"].setdefault(k, []).append(v)

    def on_validation_epoch_end(self) -> None:
        self.log("val/r2", self._val["r2"].compute(), prog_bar=True)  # R2Score syncs DDP ranks itself
        for k, vals in self._val["sums"].items():
            self.log(f"val/{k}", torch.cat(vals).mean(), sync_dist=True)
