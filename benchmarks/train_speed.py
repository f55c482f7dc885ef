"""Training speed, side by side in one run: the reference PyTorch pix2pix training step vs ours (docs/training.md).

    python benchmarks/train_speed.py                                   # 4 cases × (reference, ours default, ours paper)
    python benchmarks/train_speed.py --cases 16,16 --ours default paper bf16 --out speed.json

Reference: a re-implementation of junyanz/pytorch-CycleGAN-and-pix2pix's `Pix2PixModel.optimize_parameters`
(written from its models/pix2pix_model.py and models/networks.py): G forward; D step with separate D passes on
(A, fake.detach()) and on (A, B), loss_D = (fake + real)·0.5; G step with D frozen (requires_grad off), one D
pass on (A, fake), GAN + λ·L1; torch.optim.Adam(lr 2e-4, betas (0.5, 0.999)), default (foreach) implementation;
`UnetGenerator` of `UnetSkipConnectionBlock`s (num_downs 6 for 64×64: 1×1 bottleneck, batch norm, in-place
ReLUs, dropout 0.5 in the 512-blocks between the 4 outer ones and the innermost), `NLayerDiscriminator`
(n_layers 3, batch norm), vanilla GAN loss (BCE with logits), normal(0, 0.02) init. No Lightning.

Ours: the real training path — Lightning Trainer around `Pix2Pix.training_step`, the model built from the composed
train.py config (`conf/`) with generator.ngf = discriminator.ndf = ngf, and a variant's overrides on top.

Both sides train on the same in-memory 1×64×64 batches. Per run: a fresh model, `--warmup` iterations, then
`--steps` timed iterations (one D step + one G step each, batch included); the run's number is the median. Each of
`--repeats` rounds runs every side once per case, in alternating order; a side's number is the median of its
runs, with their min–max as the spread, and a ratio is the median of the per-round ratios (both sides of a round
ran back to back). Only ratios of one run count.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["model=pix2pix_paper"]  # the paper's step: the speed switches off (conf/model/pix2pix_paper.yaml)
VARIANTS = {  # ours: train.py overrides on top of the config's defaults
    "default": [],
    "paper": PAPER,
    "joint": [*PAPER, "model.joint_d_pass=true"],
    "bf16": [*PAPER, "model.autocast=bf16"],
    "bf16+cl": [*PAPER, "model.autocast=bf16", "model.channels_last=true"],
    "bf16+cl+ud": [*PAPER, "model.autocast=bf16", "model.channels_last=true", "model.uniform_dropout=true"],
    "all": [*PAPER, "model.joint_d_pass=true", "model.autocast=bf16", "model.channels_last=true",
            "model.uniform_dropout=true"],
    "default-adv1": ["model.adv_every=1"],  # the default's switches with the reference's step (D every batch)
    "l1-only": ["model.adv_every=1", "model.adv_weight=0"],  # G on λ·L1 alone: adv_every's batches without D
    "default-fp32": ["model.autocast=none"],
    "default+joint": ["model.joint_d_pass=true"],
    "default-ud": ["model.uniform_dropout=false"],
    "default-cl": ["model.channels_last=false"],
    "default-flat": ["model.flat_adam=false"],
    "default-fold": ["model.fold_output=false"],
}


# --- the reference (junyanz/pytorch-CycleGAN-and-pix2pix) ------------------------------------------------


class RefUnetBlock(nn.Module):
    """UnetSkipConnectionBlock: down → submodule → up, concatenated with its input (batch norm, no biases)."""

    def __init__(self, outer: int, inner: int, input_nc: int | None = None, sub: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        down_conv = nn.Conv2d(input_nc or outer, inner, 4, 2, 1, bias=False)
        if outermost:
            layers = [down_conv, sub, nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down_conv,
                      nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.BatchNorm2d(inner), sub,
                      nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


def ref_unet(ngf: int, num_downs: int = 6) -> nn.Module:
    """UnetGenerator(1, 1, num_downs, ngf, BatchNorm2d, use_dropout=True)."""
    block = RefUnetBlock(8 * ngf, 8 * ngf, innermost=True)
    for _ in range(num_downs - 5):
        block = RefUnetBlock(8 * ngf, 8 * ngf, sub=block, dropout=True)
    for mult in (4, 2, 1):
        block = RefUnetBlock(mult * ngf, 2 * mult * ngf, sub=block)
    return RefUnetBlock(1, ngf, input_nc=1, sub=block, outermost=True)


def ref_patchgan(ndf: int, n_layers: int = 3) -> nn.Module:
    """NLayerDiscriminator(2, ndf, n_layers, BatchNorm2d): 64×64 → 6×6 logits (70×70 receptive field)."""
    layers: list[nn.Module] = [nn.Conv2d(2, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2**n, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if n < n_layers else 1, 1, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
    return nn.Sequential(*layers)


def ref_init(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """init_weights(net, 'normal', 0.02)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


class Reference:
    """Pix2PixModel (is_train, gan_mode vanilla, pool_size 0, lambda_L1 100) on the CPU."""

    def __init__(self, ngf: int, lambda_l1: float = 100.0) -> None:
        self.net_g, self.net_d = ref_init(ref_unet(ngf)), ref_init(ref_patchgan(ngf))
        self.lambda_l1, self.bce, self.l1 = lambda_l1, nn.BCEWithLogitsLoss(), nn.L1Loss()
        self.opt_g = torch.optim.Adam(self.net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def gan_loss(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        return self.bce(pred, torch.tensor(1.0 if real else 0.0, device=pred.device).expand_as(pred))

    def set_requires_grad(self, net: nn.Module, flag: bool) -> None:
        for p in net.parameters():
            p.requires_grad = flag

    def optimize_parameters(self, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        fake_b = self.net_g(real_a)
        self.set_requires_grad(self.net_d, True)
        self.opt_d.zero_grad()
        loss_d_fake = self.gan_loss(self.net_d(torch.cat((real_a, fake_b), 1).detach()), False)
        loss_d_real = self.gan_loss(self.net_d(torch.cat((real_a, real_b), 1)), True)
        ((loss_d_fake + loss_d_real) * 0.5).backward()
        self.opt_d.step()
        self.set_requires_grad(self.net_d, False)
        self.opt_g.zero_grad()
        loss_g_gan = self.gan_loss(self.net_d(torch.cat((real_a, fake_b), 1)), True)
        (loss_g_gan + self.l1(fake_b, real_b) * self.lambda_l1).backward()
        self.opt_g.step()


DEVICE = torch.device("cpu")  # --device: where both sides run


def clock() -> tuple[float, float]:
    """(wall, CPU time of this process) in seconds, after the GPU's queued work when the sides run on one."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter(), time.process_time()


def medians(stamps: list[tuple[float, float]], warmup: int, block: int = 1) -> tuple[float, float]:
    """Median ms per iteration after `warmup` iterations, wall and CPU time: over single iterations, or with
    `block` = k over runs of k consecutive ones (a step whose iterations differ in a cycle of k, `model.adv_every`:
    each run holds one whole cycle, so its mean is the step's average cost, not one kind's)."""
    ends = stamps[warmup::block]
    return tuple(1e3 * statistics.median((b[i] - a[i]) / block for a, b in itertools.pairwise(ends))  # type: ignore[return-value]
                 for i in (0, 1))


def time_reference(ngf: int, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int,
                   warmup: int) -> tuple[float, float]:
    """Median ms per `optimize_parameters` (batch slicing included) over `steps` after `warmup`: wall, CPU."""
    torch.manual_seed(0)
    ref = Reference(ngf)
    if DEVICE.type != "cpu":  # Module.to keeps the Parameter objects: the optimizers stay valid
        ref.net_g.to(DEVICE)
        ref.net_d.to(DEVICE)
        x, y = x.to(DEVICE), y.to(DEVICE)
    stamps = [clock()]
    for i in range(warmup + steps):
        j = (i * batch) % (len(x) - batch + 1)
        ref.optimize_parameters(x[j : j + batch], y[j : j + batch])
        stamps.append(clock())
    return medians(stamps, warmup)


# --- ours ----------------------------------------------------------------------------------------------------


class BatchClock(L.Callback):
    """Timestamps at each batch start: per-iteration times include batch gathering and the Lightning loop."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.stamps.append(clock())


def our_config(ngf: int, overrides: list[str]) -> Any:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"generator.ngf={ngf}", f"discriminator.ndf={ngf}", *overrides])


def time_ours(ngf: int, overrides: list[str], x: torch.Tensor, y: torch.Tensor, batch: int, steps: int,
              warmup: int) -> tuple[float, float]:
    """Median ms per training iteration of the Lightning path over `steps` after `warmup`: wall, CPU."""
    from omegaconf import OmegaConf

    from qdgan.datamodule import TensorBatches
    from qdgan.gan_step import optimizer_steps
    from qdgan.scaling import DataStats
    from qdgan.train.run import build_model

    cfg = our_config(ngf, [*(["trainer=gpu"] if DEVICE.type == "cuda" else []), *overrides])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.set_data_stats(DataStats(0.0, 1.0, 0.0, 1.0, torch.zeros(64, 64), pixel_area=1.0, n_electrons=2,
                                   input_code=(0.0, 0.0, 1.0)))
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True) | {
        "accelerator": "gpu" if DEVICE.type == "cuda" else "cpu", "devices": 1, "enable_progress_bar": False,
        "enable_model_summary": False}
    stamps = BatchClock()
    trainer = L.Trainer(**trainer_cfg, max_steps=optimizer_steps(model, warmup + steps + 1),
                        logger=False, enable_checkpointing=False, callbacks=[stamps], limit_val_batches=0)
    n = batch * (warmup + steps + 1)
    trainer.fit(model, train_dataloaders=TensorBatches(x[:n], y[:n], batch, shuffle=True))
    return medians(stamps.stamps, warmup, model.hparams.get("adv_every", 1) if model.discriminator else 1)


# --- the table -----------------------------------------------------------------------------------------------


def summary(runs: list[float], ref: list[float] | None) -> dict[str, Any]:
    """Median and min–max of a side's runs; with the reference's runs of the same rounds, the speed-up
    (median of the per-round ratios reference / ours) and its min–max."""
    out = {"median_ms": statistics.median(runs), "min_ms": min(runs), "max_ms": max(runs), "runs_ms": runs}
    if ref is not None:
        ratios = [a / b for a, b in zip(ref, runs, strict=True)]
        out |= {"speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios)}
    return out


def table(rows: list[dict[str, Any]], ours: list[str], clock: str) -> str:
    """A markdown table of one clock (wall | cpu): each side's median (min–max), ours with the speed-up."""
    lines = ["| ngf, batch | reference | " + " | ".join(f"ours {s}" for s in ours) + " |",
             "|---|---|" + "---|" * len(ours)]
    for row in rows:
        cells = []
        for side in ["reference", *ours]:
            r = row[clock][side]
            cell = f"{r['median_ms']:.1f} ({r['min_ms']:.1f}–{r['max_ms']:.1f})"
            if "speedup" in r:
                cell += f" **×{r['speedup']:.2f}** ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})"
            cells.append(cell)
        lines.append(f"| {row['ngf']}, {row['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["16,1", "16,16", "64,1", "64,16"],
                        help="ngf,batch pairs (ngf = ndf)")
    parser.add_argument("--ours", nargs="+", default=["default", "paper"], choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where both sides run; cuda: the reference in fp32 (its default), ours with trainer=gpu "
                             "(bf16-mixed), data moved to the GPU by each side as in training")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 25 or args.warmup < 5 or args.repeats < 3:
        print("note: fewer than 25 steps, 5 warm-ups or 3 repeats: a quick look, not the protocol")
    cases = [tuple(int(v) for v in c.split(",")) for c in args.cases]
    sides = ["reference", *args.ours]
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "load_before": os.getloadavg(),
           "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"}
    print(f"torch {env['torch']}, {env['threads']} threads, {env['cpus']} CPUs, load {env['load_before']}, "
          f"device {env['device']}", flush=True)
    runs: dict[tuple[int, int], dict[str, list[tuple[float, float]]]] = {c: {s: [] for s in sides} for c in cases}
    for r in range(args.repeats):
        for ngf, batch in cases:
            g = torch.Generator().manual_seed(r)
            n = batch * (args.warmup + args.steps + 1)
            x, y = (torch.rand(n, 1, 64, 64, generator=g) * 2 - 1 for _ in range(2))
            for side in sides if r % 2 == 0 else sides[::-1]:  # alternate who runs first
                wall, cpu = (time_reference(ngf, x, y, batch, args.steps, args.warmup) if side == "reference" else
                             time_ours(ngf, VARIANTS[side], x, y, batch, args.steps, args.warmup))
                runs[(ngf, batch)][side].append((wall, cpu))
                print(f"round {r + 1}: ngf {ngf:2d}, batch {batch:2d}, {side:14s} {wall:7.1f} ms wall, "
                      f"{cpu:7.1f} ms CPU", flush=True)
    rows = []
    for (ngf, batch), by_side in runs.items():
        row: dict[str, Any] = {"ngf": ngf, "batch": batch}
        for i, clock_name in enumerate(("wall", "cpu")):
            ref = [t[i] for t in by_side["reference"]]
            row[clock_name] = {s: summary([t[i] for t in v], None if s == "reference" else ref)
                               for s, v in by_side.items()}
        rows.append(row)
    env["load_after"] = os.getloadavg()
    head = (f"median of {args.repeats} runs, each the median of {args.steps} iterations after {args.warmup} warm-ups "
            "(min–max of the runs); speed-up = reference / ours, median of the rounds (min–max)")
    print(f"\nWall time, ms per iteration; {head}\n\n{table(rows, args.ours, 'wall')}")
    print(f"\nCPU time of the process, ms per iteration (with one thread: what a quiet machine's wall time would be); "
          f"{head}\n\n{table(rows, args.ours, 'cpu')}")
    print(f"\nload after: {env['load_after']}")
    if args.out:
        args.out.write_text(json.dumps({"env": env, "args": {k: str(v) if isinstance(v, Path) else v
                                                             for k, v in vars(args).items()},
                                        "variants": {s: VARIANTS[s] for s in args.ours}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
