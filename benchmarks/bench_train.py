"""Training variants and inference speed on this machine (docs/training.md). The reference pix2pix side by side
with our default step is benchmarks/train_speed.py; this script compares variants of our own step.

    python benchmarks/bench_train.py --steps 30 --repeats 3
    python benchmarks/bench_train.py --variants fp32 bf16 --widths 64 --batches 1   # a subset

Training: ms per iteration (one D step + one G step) of the real training path — Lightning
Trainer, Pix2Pix module, in-memory batches — for U-Net (6 down/up, batch norm) + 70×70 PatchGAN at
ngf = ndf ∈ widths and batch ∈ batches, in each speed variant (fp32; channels_last; bf16 autocast;
torch.compile; combinations). Per-iteration times come from batch-start timestamps after a warm-up;
reported: the median over repeats of each run's median. Inference: densities per second of the
generator (eval mode, batch 100) vs ED solves per second for the same potentials, in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf

from qdgan.datamodule import TensorBatches
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import DataStats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_ed's worker function
VARIANTS = {
    "fp32": {"precision": "32-true", "channels_last": False, "compile": False},
    "channels_last": {"precision": "32-true", "channels_last": True, "compile": False},
    "bf16": {"precision": "bf16-mixed", "channels_last": False, "compile": False},
    "bf16+channels_last": {"precision": "bf16-mixed", "channels_last": True, "compile": False},
    "compile": {"precision": "32-true", "channels_last": False, "compile": True},
    "bf16+compile": {"precision": "bf16-mixed", "channels_last": False, "compile": True},
}


class BatchClock(L.Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.stamps.append(time.perf_counter())


def model(width: int, variant: dict) -> Pix2Pix:
    gen = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/generator/unet64.yaml"), resolve=True)
    disc = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/discriminator/imagegan70.yaml"), resolve=True)
    gen["ngf"], disc["ndf"] = width, width
    return Pix2Pix(gen, disc, channels_last=variant["channels_last"], compile=variant["compile"])


def time_training(width: int, batch: int, variant: dict, steps: int, warmup: int) -> float:
    """Median ms per training iteration over `steps` iterations after `warmup`."""
    n = max(batch * (steps + warmup + 1), 64)
    x = torch.rand(n, 1, 64, 64) * 2 - 1
    y = torch.rand(n, 1, 64, 64) * 2 - 1
    clock = BatchClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=variant["precision"],
                        max_steps=2 * (steps + warmup + 1), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
                        limit_val_batches=0)
    trainer.fit(model(width, variant), train_dataloaders=TensorBatches(x, y, batch, shuffle=True))
    dt = np.diff(clock.stamps)[warmup:]
    return 1e3 * float(np.median(dt))


def time_bare_baseline(width: int, batch: int, steps: int, warmup: int) -> float:
    """Same-run baseline: a bare PyTorch loop of our networks with the losses of pix2pix (default Adam, fp32,
    no Lightning, no logging). Median ms per iteration."""
    import torch.nn.functional as F

    net = model(width, VARIANTS["fp32"])
    g, d = net.generator, net.discriminator
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    x = torch.rand(batch, 1, 64, 64) * 2 - 1
    y = torch.rand(batch, 1, 64, 64) * 2 - 1
    bce = F.binary_cross_entropy_with_logits
    times = []
    for i in range(steps + warmup):
        t = time.perf_counter()
        fake = g(x)
        real_logits, fake_logits = d(x, y), d(x, fake.detach())
        loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                        + bce(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        logits = d(x, fake)
        loss_g = bce(logits, torch.ones_like(logits)) + 100 * F.l1_loss(fake, y)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def time_inference(n: int, repeats: int, width: int = 64) -> dict[str, float]:
    """Generator densities/s (eval, batch 100, fp32, all torch threads) vs ED solves/s of the same
    potentials on all cores (one single-threaded process per core, as physics.generate runs)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from bench_ed import _solve_chunk

    from physics.config import PhysicsConfig
    from physics.potentials import random_potential

    cfg = PhysicsConfig()
    rng = np.random.default_rng(0)
    pots = [random_potential(rng, cfg) for _ in range(n)]
    net = model(width, VARIANTS["fp32"]).eval()
    net.set_data_stats(DataStats(input_min=0.0, input_max=0.5, target_min=0.0, target_max=0.05,
                                 target_mean=torch.zeros(64, 64), pixel_area=cfg.h_nm**2,
                                 n_electrons=cfg.n_electrons, input_code=(0.0, 0.0, 0.5)))
    x = torch.from_numpy(np.stack(pots).astype(np.float32))
    workers = os.cpu_count() or 1
    t_gan, t_ed = [], []
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")  # inherited by the spawned ED workers
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_solve_chunk, [(pots[:2], cfg)] * workers))
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, n, 100):
                net.predict_maps(x[i : i + 100])
            t_gan.append(time.perf_counter() - t)
            t = time.perf_counter()
            list(pool.map(_solve_chunk, [(pots[i::workers], cfg) for i in range(workers)]))
            t_ed.append(time.perf_counter() - t)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    gan, ed = n / np.median(t_gan), n / np.median(t_ed)
    return {"width": width, "gan_per_s": gan, "ed_per_s": ed, "speedup": gan / ed,
            "torch_threads": torch.get_num_threads(), "ed_workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--inference", type=int, default=200, help="instances for inference vs ED (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    results = []
    for width in args.widths:
        for batch in args.batches:
            base = [time_bare_baseline(width, batch, args.steps, args.warmup) for _ in range(args.repeats)]
            base_ms = float(np.median(base))
            results.append({"width": width, "batch": batch, "variant": "bare-loop baseline", "ms_per_iter": base_ms,
                            "runs": base})
            print(f"ngf=ndf={width:3d} batch={batch:2d} {'bare-loop baseline':20s} {base_ms:8.1f} ms/iter", flush=True)
            for name in args.variants:
                runs = [time_training(width, batch, VARIANTS[name], args.steps, args.warmup)
                        for _ in range(args.repeats)]
                ms = float(np.median(runs))
                results.append({"width": width, "batch": batch, "variant": name, "ms_per_iter": ms, "runs": runs,
                                "speedup_vs_baseline": base_ms / ms})
                print(f"ngf=ndf={width:3d} batch={batch:2d} {name:20s} {ms:8.1f} ms/iter  ×{base_ms / ms:.2f} vs "
                      f"baseline  (runs {', '.join(f'{r:.1f}' for r in runs)})", flush=True)
    out = {"training": results}
    if args.inference:
        out["inference"] = []
        for width in args.widths:
            inf = time_inference(args.inference, args.repeats, width)
            out["inference"].append(inf)
            print(f"inference: {inf['gan_per_s']:.0f} densities/s (generator ngf {width}, batch 100, "
                  f"{inf['torch_threads']} threads) vs {inf['ed_per_s']:.1f} ED solves/s ({inf['ed_workers']} "
                  f"processes): {inf['speedup']:.1f}× faster", flush=True)
    print(f"load after: {os.getloadavg()}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
