"""Where the time of one training iteration goes, phase by phase: ours (a bare loop of `gan_step.optimize`'s
operations, no Lightning) and the reference's `optimize_parameters` (benchmarks/train_speed.py), docs/training.md.
Ours is always the full step, D on the batch (`model.adv_every`'s adversarial batches); an L1-only batch of
`adv_every` > 1 is its G forward, G's backward and Adam, and the EMA.

    python benchmarks/train_phases.py                      # ngf 16, batch 16, torch's threads; ours default, paper
    python benchmarks/train_phases.py --threads 1 --ours default model=pix2pix_paper,model.autocast=bf16

Each phase is timed with wall time (process CPU time with --threads 1, robust to other load); a phase's number is
its median over `--steps` iterations after `--warmup`.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from train_speed import Reference, our_config

PHASES = ("G forward", "D's real and fake passes", "D's backward", "D's Adam", "G step: D pass, losses",
          "G step: backward through D and G", "G's Adam", "EMA of G")


def ours(overrides: list[str], ngf: int) -> Callable[[torch.Tensor, torch.Tensor, Callable[[], None]], None]:
    """One iteration of our default step's operations, `mark()` after each phase (as `gan_step.optimize`)."""
    from qdgan import ema, fast
    from qdgan.gan_step import adversarial
    from qdgan.scaling import DataStats
    from qdgan.train.run import build_model

    model = build_model(our_config(ngf, overrides))
    model.set_data_stats(DataStats(0.0, 1.0, 0.0, 1.0, torch.zeros(64, 64), pixel_area=1.0, n_electrons=2,
                                   input_code=(0.0, 0.0, 1.0)))
    out = model.configure_optimizers()
    opt_g, opt_d = out[0] if isinstance(out, tuple) else out
    model.train()
    hp, cast, dev = model.hparams, fast.autocast_dtype(model.hparams.autocast, torch.device("cpu")), model.device
    disc = model.discriminator

    def step(x: torch.Tensor, y: torch.Tensor, mark: Callable[[], None]) -> None:
        if hp.channels_last:
            x, y = fast.channels_last(x), fast.channels_last(y)
        with fast.autocast(cast, dev):
            fake = model(x)
            mark()
            loss_d = 0.5 * (adversarial(disc(x, y), True, hp.gan_mode)
                            + adversarial(disc(x, fake.detach()), False, hp.gan_mode))
        mark()
        opt_d.zero_grad()
        loss_d.backward()
        mark()
        opt_d.step()
        mark()
        disc.requires_grad_(False)
        with fast.autocast(cast, dev):
            loss_g = hp.adv_weight * adversarial(disc(x, fake), True, hp.gan_mode) + hp.lambda_l1 * F.l1_loss(fake, y)
        mark()
        opt_g.zero_grad()
        loss_g.backward()
        mark()
        opt_g.step()
        disc.requires_grad_(True)
        mark()
        if hp.ema_decay > 0:
            ema.update(model.generator_ema, model.generator, hp.ema_decay)
        mark()

    return step


def reference(ngf: int) -> Callable[[torch.Tensor, torch.Tensor, Callable[[], None]], None]:
    """One `Reference.optimize_parameters`, `mark()` after each phase."""
    ref = Reference(ngf)

    def step(a: torch.Tensor, b: torch.Tensor, mark: Callable[[], None]) -> None:
        fake_b = ref.net_g(a)
        mark()
        ref.set_requires_grad(ref.net_d, True)
        ref.opt_d.zero_grad()
        loss_d = (ref.gan_loss(ref.net_d(torch.cat((a, fake_b), 1).detach()), False)
                  + ref.gan_loss(ref.net_d(torch.cat((a, b), 1)), True)) * 0.5
        mark()
        loss_d.backward()
        mark()
        ref.opt_d.step()
        mark()
        ref.set_requires_grad(ref.net_d, False)
        ref.opt_g.zero_grad()
        loss_g = ref.gan_loss(ref.net_d(torch.cat((a, fake_b), 1)), True) + ref.l1(fake_b, b) * ref.lambda_l1
        mark()
        loss_g.backward()
        mark()
        ref.opt_g.step()
        mark()
        mark()  # no EMA

    return step


def phases(step: Callable, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, warmup: int,
           clock: Callable[[], float]) -> dict[str, float]:
    """Median ms per phase (and in total) of `step` over `steps` iterations after `warmup`."""
    times: dict[str, list[float]] = defaultdict(list)
    stamps: list[float] = []

    def mark() -> None:
        stamps.append(clock())

    for i in range(warmup + steps):
        stamps.clear()
        mark()
        step(x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch], mark)
        if i >= warmup:
            for name, (a, b) in zip(PHASES, itertools.pairwise(stamps), strict=True):
                times[name].append(1e3 * (b - a))
            times["total"].append(1e3 * (stamps[-1] - stamps[0]))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ours", nargs="+", default=["default", "model=pix2pix_paper"],
                        help="our variants: 'default' or comma-separated train.py overrides")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(args.batch * (args.steps + args.warmup), 1, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    torch.manual_seed(0)
    sides = {"reference": reference(args.ngf)}
    for v in args.ours:
        sides[f"ours {v}"] = ours([] if v == "default" else v.split(","), args.ngf)
    cols = {name: phases(step, x, y, args.batch, args.steps, args.warmup, clock) for name, step in sides.items()}
    unit = "CPU" if clock is time.process_time else "wall"
    print(f"ms per phase ({unit}), ngf {args.ngf}, batch {args.batch}, {torch.get_num_threads()} threads\n")
    print("| phase | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name in (*PHASES, "total"):
        print(f"| {name} | " + " | ".join(f"{c[name]:.2f}" for c in cols.values()) + " |")


if __name__ == "__main__":
    main()
