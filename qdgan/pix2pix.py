"""`Pix2Pix`: the conditional GAN of paper §III.2 as a LightningModule (manual optimization).

Per batch: D on real (α, β) vs fake (α, G(α)) — eq. 9 — then G on the adversarial term plus
λ·L1 — eq. 10. `adv_weight = 0` gives the pure L1 U-Net baseline (D is then never stepped).
With two optimizers Lightning's `global_step` counts both steps; `generator_steps` counts batches,
and train.py turns the config's `max_steps` (generator steps) into Lightning's count.
Scaling statistics and the training-set mean image live in buffers, so a checkpoint alone maps
physical inputs to physical outputs. Trained on data of several N (issue 11), G and D take N as a second
input channel (`scaling.with_electrons`) and the hyperparameter `electrons` records those N.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from qdgan import metrics
from qdgan.scaling import DataStats, electrons_in, encode_input, from_unit_range, with_electrons

GAN_MODES = ("vanilla", "lsgan")


def _adam(net: nn.Module, lr: float, betas: Any, fused: bool) -> torch.optim.Adam:
    """Adam; the fused kernel (torch ≥ 2.4 on CPU, any CUDA) saves ~25 % per step at small widths."""
    params = list(net.parameters())
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass  # older torch or unsupported device: the default (foreach) implementation
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas))


class Pix2Pix(L.LightningModule):
    """cGAN + λ·L1 for one mapping (eq. 10); networks built from their Hydra configs."""

    def __init__(
        self,
        generator_cfg: dict[str, Any],
        discriminator_cfg: dict[str, Any],
        lambda_l1: float = 100.0,
        adv_weight: float = 1.0,
        gan_mode: str = "vanilla",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_decay_start: float = 1.0,
        max_steps: int = 0,
        eval_dropout: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        fused_adam: bool = True,
        log_every_n_steps: int = 10,
        mapping: str = "",
        input_name: str = "",
        target_name: str = "",
        is_density: bool = True,
        electrons: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"model.gan_mode={gan_mode!r}: expected one of {GAN_MODES}")
        if adv_weight < 0 or lambda_l1 < 0:
            raise ValueError(f"model.adv_weight={adv_weight}, model.lambda_l1={lambda_l1}: expected ≥ 0")
        if not 0.0 <= lr_decay_start <= 1.0:
            raise ValueError(f"model.lr_decay_start={lr_decay_start}: expected a fraction of max_steps in [0, 1]")
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
        self._val: dict[str, Any] = {}  # per-epoch accumulators (plain dict: not submodules)

    def _build_networks(self) -> None:
        """G and D from their configs, with one more input channel, N, for a model of several N (`electrons`)."""
        hp = self.hparams
        more = {"in_channels": hp.generator_cfg.get("in_channels", 1) + 1} if self.conditioned else {}
        self.generator = instantiate(hp.generator_cfg, **more)
        more = {"in_channels": hp.discriminator_cfg.get("in_channels", 2) + 1} if self.conditioned else {}
        self.discriminator = instantiate(hp.discriminator_cfg, **more) if hp.adv_weight > 0 else None
        if hp.channels_last:
            self.to(memory_format=torch.channels_last)
        # torch.compile'd callables live outside the module tree, so state_dict keys stay unchanged.
        self._nets: dict[str, Any] = {"g": self.generator, "d": self.discriminator}
        if hp.compile:
            self._nets = {k: torch.compile(v) if v is not None else None for k, v in self._nets.items()}

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
        return encode_input(x, *self.input_code.tolist())

    def unscale_target(self, y: Tensor) -> Tensor:
        lo, hi = self.scale[2].item(), self.scale[3].item()
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
        """G(α) on scaled inputs (B, C, H, W) → scaled outputs in [−1, 1]."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._nets["g"](x)

    def physical_prediction(self, x: Tensor) -> Tensor:
        """Scaled inputs (B, C, H, W) → predictions (B, H, W) in physical units, as evaluated: dropout
        (the noise γ) stays on only with `eval_dropout`, as the TF pix2pix does at test time."""
        if self.hparams.eval_dropout:
            for m in self.generator.modules():
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
        return (float(self.physics[1]), float(self.physics[0])) if self.hparams.is_density else None

    def charge_of(self, x: Tensor) -> tuple[Tensor | float, float] | None:
        """`charge` for a batch of network inputs (B, C, H, W): a model of several N reads each one's N from x."""
        if not (self.conditioned and self.hparams.is_density):
            return self.charge
        return electrons_in(x, max(self.electrons)), float(self.physics[0])

    # --- training --------------------------------------------------------------------------------

    def _adversarial(self, logits: Tensor, real: bool) -> Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        if self.hparams.gan_mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        if self.hparams.channels_last:
            x, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
        hp = self.hparams
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        fake = self(x)
        logs: dict[str, Tensor] = {}
        if self.discriminator is not None:
            disc = self._nets["d"]
            d_real = disc(x, y)
            d_fake = disc(x, fake.detach())
            loss_d = 0.5 * (self._adversarial(d_real, True) + self._adversarial(d_fake, False))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
            loss_g_adv = self._adversarial(disc(x, fake), True)
            logs |= {"train/loss_d": loss_d.detach(), "train/loss_g_gan": loss_g_adv.detach(),
                     "train/d_real": torch.sigmoid(d_real).mean().detach(),
                     "train/d_fake": torch.sigmoid(d_fake).mean().detach()}
        else:
            loss_g_adv = fake.new_zeros(())
        loss_l1 = F.l1_loss(fake, y)
        loss_g = hp.adv_weight * loss_g_adv + hp.lambda_l1 * loss_l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.generator_steps += 1
        for sched in self._schedulers():
            sched.step()
        if int(self.generator_steps) % hp.log_every_n_steps == 0:  # self.log costs ~0.1 ms per value
            logs |= {"train/loss_g": loss_g.detach(), "train/loss_l1": loss_l1.detach(),
                     "g_step": self.generator_steps.float()}
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=x.shape[0])

    def _schedulers(self) -> list[Any]:
        scheds = self.lr_schedulers()
        if scheds is None:
            return []
        return scheds if isinstance(scheds, list) else [scheds]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opts = [_adam(self.generator, hp.lr_g, hp.betas, hp.fused_adam)]
        if self.discriminator is not None:
            opts.append(_adam(self.discriminator, hp.lr_d, hp.betas, hp.fused_adam))
        if hp.lr_decay_start >= 1.0 or hp.max_steps <= 0:
            return opts
        # pix2pix schedule: constant, then linear decay to 0 over the last (1 − start) of training.
        start = int(hp.lr_decay_start * hp.max_steps)
        span = max(1, hp.max_steps - start)

        def factor(step: int) -> float:
            return 1.0 - max(0, step - start) / span

        scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]
        return opts, scheds

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
