"""The optimisation step of `Pix2Pix` (paper eqs. 9-10), one batch: G forward; D step on (α, β) vs (α, G(α))
detached, loss_D = (real + fake)/2; G step with D frozen, one D pass on (α, G(α)), adv_weight·GAN + λ·L1.

Each speed switch keeps this arithmetic (`qdgan.fast`): `joint_d_pass` gives D both pairs in one pass with per-half
batch norm (the numbers of two passes); `autocast` runs G and D in bf16 but G's output layer, the losses and the
optimizers in fp32; freezing D's weights in G's backward only skips gradients the reference skips too.

`adv_every` = k > 1 changes the step (docs/training.md, "Speed"): D's step and the adversarial term run on every
k-th batch (generator steps 0, k, 2k, …), the term weighted k·adv_weight there so that its weight per batch stays
adv_weight on average; the batches between train G on λ·L1 alone, without any D pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from qdgan import fast
from qdgan.scaling import electrons_in

GAN_MODES = ("vanilla", "lsgan")
D_LOGS = ("train/loss_d", "train/loss_g_gan", "train/d_real", "train/d_fake")  # kept in the model's `d_numbers`


def adversarial(logits: Tensor, real: bool, gan_mode: str) -> Tensor:
    """Eq. 9's terms in fp32: BCE with logits (vanilla) or the least-squares loss (lsgan) toward 1 or 0."""
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if gan_mode == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def adversarial_batch(model: Any) -> bool:
    """Whether the current batch runs D's step and G's adversarial term: a model with D, on every `adv_every`-th
    batch counted from 0 (`generator_steps` before this batch)."""
    steps = fast.host_value(model, "generator_steps")
    return model.discriminator is not None and steps % model.hparams.get("adv_every", 1) == 0


def optimizer_steps(model: Any, batches: int) -> int:
    """Lightning's `global_step` after `batches` batches: every optimizer step counts, G's on each batch and D's on
    the adversarial ones (⌈batches / adv_every⌉ of them)."""
    if model.discriminator is None:
        return batches
    return batches + -(-batches // model.hparams.get("adv_every", 1))


def d_logits(model: Any, x: Tensor, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """D's logits on (x, real) and (x, fake): two passes, or one over both with per-half batch norm."""
    disc = model._nets["d"]
    if not model.hparams.joint_d_pass:
        return disc(x, real), disc(x, fake)
    with fast.batch_groups(model.discriminator, 2):
        logits = disc(torch.cat([x, x]), torch.cat([real, fake]))
    return logits[: len(x)], logits[len(x):]


def d_backward(model: Any, x: Tensor, y: Tensor, opt_d: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """G's forward, D's passes on the real and fake pairs, and the backward of loss_D into D's gradients. G(x),
    loss_D and the real and fake logits."""
    cast, gan_mode = model.autocast_dtype, model.hparams.gan_mode
    with fast.autocast(cast, model.device):
        fake = model(x)  # fp32: G's output layer runs in fp32
        real_logits, fake_logits = d_logits(model, x, y, fake.detach())
        loss_d = 0.5 * (adversarial(real_logits, True, gan_mode) + adversarial(fake_logits, False, gan_mode))
    opt_d.zero_grad(set_to_none=True)
    model.manual_backward(loss_d)
    return fake, loss_d.detach(), real_logits, fake_logits


def l1_term(model: Any, x: Tensor, fake: Tensor, y: Tensor) -> Tensor:
    """Eq. 10's L1 term. With `l1_per_electron` on a model of several N, each instance's error is weighted by
    N̄/N_i (N̄ the mean of the model's N): on one scale of densities an N = 4 map's errors are ~4× an N = 1 map's,
    so without it the loss serves the large N first; with it every N counts per electron."""
    if not (model.hparams.get("l1_per_electron") and model.conditioned):
        return F.l1_loss(fake, y)
    ns = model.electrons
    weight = (sum(ns) / len(ns)) / electrons_in(x, max(ns)).to(fake.dtype)
    return (weight.view(-1, 1, 1, 1) * (fake - y).abs()).mean()


def optimize(model: Any, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """One D step and one G step of `model` (a Pix2Pix in manual optimization) on scaled (x, y); the losses."""
    hp = model.hparams
    if hp.channels_last:
        x, y = fast.channels_last(x), fast.channels_last(y)
    opts = model.optimizers()
    opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
    if model.autocast_dtype == "unset":
        model.autocast_dtype = fast.autocast_dtype(hp.autocast, model.device)
    cast, device = model.autocast_dtype, model.device
    logs: dict[str, Tensor] = {}
    disc = model.discriminator if adversarial_batch(model) else None
    if disc is not None:
        fake, loss_d, real_logits, fake_logits = d_backward(model, x, y, opt_d)
        opt_d.step()
        disc.requires_grad_(False)  # G's backward needs no gradients of D's weights
        with fast.autocast(cast, device):
            loss_g_adv = adversarial(model._nets["d"](x, fake), True, hp.gan_mode)
        logs |= {"train/loss_d": loss_d, "train/loss_g_gan": loss_g_adv.detach(),
                 "train/d_real": torch.sigmoid(real_logits.detach().float()).mean(),
                 "train/d_fake": torch.sigmoid(fake_logits.detach().float()).mean()}
        if hp.get("adv_every", 1) > 1:  # a buffer, so a resumed run logs what the uninterrupted one does
            model.d_numbers.copy_(torch.stack([logs[k].float() for k in D_LOGS]))
    else:
        if model.discriminator is not None:  # an L1-only batch of adv_every > 1: D's latest numbers
            logs |= dict(zip(D_LOGS, model.d_numbers.clone().unbind(), strict=True))
        with fast.autocast(cast, device):
            fake = model(x)  # fp32: G's output layer runs in fp32
        loss_g_adv = fake.new_zeros(())
    loss_l1 = l1_term(model, x, fake, y)
    loss_g = hp.adv_weight * hp.get("adv_every", 1) * loss_g_adv + hp.lambda_l1 * loss_l1  # k·adv_weight: see above
    opt_g.zero_grad(set_to_none=True)
    model.manual_backward(loss_g)
    opt_g.step()
    if disc is not None:
        disc.requires_grad_(True)
    return logs | {"train/loss_g": loss_g.detach(), "train/loss_l1": loss_l1.detach()}
