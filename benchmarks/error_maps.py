"""Error maps of trained runs on the same test instances, and their period-2 (grid-scale) error share (issue 12).

Each run's best checkpoint predicts its test split (the rows metrics.json lists); the figure has one row per run
with the error ñ − n of `--n` test instances on one colour scale per column, and prints per run the test R², the
share of the error power in period-2 Fourier components (`qdgan.metrics.period2_share`: checkerboards), the share
at wavelengths under 4 pixels (graininess) and the largest |error|.

    python benchmarks/error_maps.py --run "old default=outputs/…/ablation=default" --run "new=outputs/…" \
        --out docs/figures/error_maps_issue12.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def predictions(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(prediction, reference) on the run's test rows in physical units, and the test R² of metrics.json."""
    from omegaconf import OmegaConf

    from physics.dataset import open_dataset
    from qdgan.pix2pix import Pix2Pix

    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = Pix2Pix.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location="cpu")
    ds, rows = open_dataset(OmegaConf.load(run_dir / "config.yaml").data.path), np.asarray(metrics["indices"])
    x, y = (torch.from_numpy(np.asarray(ds[q][:], dtype=np.float32)[rows])
            for q in (model.hparams.input_name, model.hparams.target_name))
    return model.predict_maps(x).double(), y.double(), float(metrics["r2"])


def fine_share(error: torch.Tensor) -> float:
    """Share of the error power (B, H, W) at wavelengths under 4 pixels along either axis (|k| > half Nyquist):
    graininess that is not exactly period 2."""
    power = torch.fft.fft2(error - error.mean(dim=(-2, -1), keepdim=True)).abs().square()
    k = torch.fft.fftfreq(error.shape[-1]).abs()
    fine = (k[:, None] > 0.25) | (k[None, :] > 0.25)
    return float(power[:, fine].sum() / power.sum())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="label=run_dir (repeat; one figure row each)")
    p.add_argument("--n", type=int, default=4, help="test instances shown (the first n of the test split)")
    p.add_argument("--out", type=Path, required=True, help="figure file (.png)")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qdgan.metrics import period2_share

    runs = [(label, predictions(Path(d))) for label, _, d in (r.partition("=") for r in args.run)]
    errors = [(pred - ref)[: args.n] for _, (pred, ref, _) in runs]
    limits = torch.stack([e.abs().amax(dim=(-2, -1)) for e in errors]).amax(dim=0)
    fig, axes = plt.subplots(len(runs) + 1, args.n, figsize=(2.4 * args.n, 2.4 * (len(runs) + 1)), squeeze=False)
    for k in range(args.n):
        axes[0, k].imshow(runs[0][1][1][k], cmap="viridis")
        axes[0, k].set_title(f"n_int, test #{k}", fontsize=8)
    print("| run | test R² | period-2 error share | wavelength < 4 px share | max \\|ñ − n\\| (nm⁻²) |\n"
          "|---|---|---|---|---|")
    for row, ((label, (pred, ref, r2)), err) in enumerate(zip(runs, errors, strict=True), 1):
        share = period2_share(pred - ref)
        print(f"| {label} | {r2:.4f} | {100 * share:.3f} % | {100 * fine_share(pred - ref):.2f} % | "
              f"{float((pred - ref).abs().max()):.3g} |")
        for k in range(args.n):
            axes[row, k].imshow(err[k], cmap="RdBu_r", vmin=-limits[k], vmax=limits[k])
        axes[row, 0].set_ylabel(f"{label}\nperiod-2 {100 * share:.2f} %\n< 4 px {100 * fine_share(pred - ref):.1f} %",
                                fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("error ñ − n of the same test instances (one colour scale per column)", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
