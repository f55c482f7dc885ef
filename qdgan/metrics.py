"""Error and accuracy measures for generated grid quantities (paper §III.3), in physical units.

Images are (B, H, W) or (B, 1, H, W) tensors; per-image measures return a (B,) tensor.
`pred` is the generated β, `ref` the reference β_ref.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_bhw(x: Tensor, name: str) -> Tensor:
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 3:
        return x
    raise ValueError(f"{name} has shape {tuple(x.shape)}: expected (B, H, W) or (B, 1, H, W)")


def _pair(pred: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    pred, ref = _as_bhw(pred, "pred"), _as_bhw(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and ref {tuple(ref.shape)}: expected equal shapes")
    return pred, ref


def l1_error(pred: Tensor, ref: Tensor) -> Tensor:
    """Eq. 11: L1 = ‖β − β_ref‖₁ / (Nx·Ny), the mean displaced density per pixel."""
    pred, ref = _pair(pred, ref)
    return (pred - ref).abs().mean(dim=(-2, -1))


def l2_error(pred: Tensor, ref: Tensor) -> Tensor:
    """Eq. 12: L2 = ‖β − β_ref‖₂ / √(Nx·Ny), the root-mean-square error."""
    pred, ref = _pair(pred, ref)
    return (pred - ref).square().mean(dim=(-2, -1)).sqrt()


def linf_error(pred: Tensor, ref: Tensor) -> Tensor:
    """Eq. 13: L∞ = max |β − β_ref|, the largest local error."""
    pred, ref = _pair(pred, ref)
    return (pred - ref).abs().amax(dim=(-2, -1))


def reference_range(ref: Tensor) -> Tensor:
    """SSIM's data range L per image: max − min of β_ref; for a constant image max |β_ref|, or 1 if zero."""
    ref = _as_bhw(ref, "ref")
    span = ref.amax(dim=(-2, -1)) - ref.amin(dim=(-2, -1))
    size = ref.abs().amax(dim=(-2, -1))
    return torch.where(span > 0, span, torch.where(size > 0, size, torch.ones_like(size)))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised size×size Gaussian window of Wang et al. (2004)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def uniform_window(size: int = 8) -> Tensor:
    """Uniformly weighted size×size window (the paper's MSSIM uses 8×8)."""
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)


def ssim_with_window(pred: Tensor, ref: Tensor, window: Tensor, data_range: Tensor | float | None = None,
                     k1: float = SSIM_K1, k2: float = SSIM_K2) -> Tensor:
    """Mean over all window positions inside the image ('valid', as in Wang et al.'s reference code) of

        SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),  C_i = (K_i·L)²,

    with μ, σ the window-weighted (weights summing to 1) local statistics. L = `data_range` per image,
    by default `reference_range(ref)`. SSIM is invariant under β, β_ref, L → a·β, a·β_ref, a·L, so both
    images are divided by L and evaluated with L = 1, which keeps small physical values well conditioned.
    """
    pred, ref = _pair(pred, ref)
    kh, kw = window.shape
    if pred.shape[-2] < kh or pred.shape[-1] < kw:
        raise ValueError(f"images of {tuple(pred.shape[-2:])} pixels are smaller than the {kh}×{kw} "
                         "SSIM window")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred, ref = pred.to(dtype), ref.to(dtype)
    scale = reference_range(ref) if data_range is None else torch.as_tensor(data_range, dtype=dtype,
                                                                            device=ref.device)
    scale = scale.to(dtype).reshape(-1, 1, 1)
    x, y = pred / scale, ref / scale

    b = x.shape[0]
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y]).unsqueeze(1),  # (5B, 1, H, W)
                     window.to(dtype=dtype, device=x.device)[None, None])
    mu_x, mu_y, xx, yy, xy = stats.split(b)
    var_x = (xx - mu_x**2).clamp_min(0)
    var_y = (yy - mu_y**2).clamp_min(0)
    cov = xy - mu_x * mu_y
    c1, c2 = k1**2, k2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1))


def ssim(pred: Tensor, ref: Tensor, data_range: Tensor | float | None = None) -> Tensor:
    """SSIM with Wang et al.'s typical parameters: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03.

    L defaults to each reference image's own dynamic range (see `reference_range`): the images are in
    physical units with no fixed scale, and this makes SSIM independent of the unit.
    """
    return ssim_with_window(pred, ref, gaussian_window(11, 1.5), data_range)


def ssim_pm1(pred: Tensor, ref: Tensor, value_range: tuple[float, float] | None = None) -> Tensor:
    """SSIM of images scaled to [−1, 1] as the pix2pix pipeline feeds and outputs them: one affine map for all
    images sends `value_range` = (lo, hi) ↦ (−1, 1) — the training set's range of the quantity, the network's own
    scaling (`Pix2Pix.scale`); by default the range of all the reference maps given — then `ssim` with L = 2.
    With a set-wide range most pixels lie far from 0, where the luminance term is sensitive (near-zero backgrounds
    sit at −1), so this reads higher than SSIM in physical units (docs/results.md, "Model comparison (issue 12)")."""
    pred, ref = _pair(pred, ref)
    dtype = torch.promote_types(ref.dtype, torch.float32)
    lo, hi = (float(ref.amin()), float(ref.amax())) if value_range is None else map(float, value_range)
    if not hi > lo:
        raise ValueError(f"value_range=({lo}, {hi}): expected lo < hi")
    return ssim(2 * (pred.to(dtype) - lo) / (hi - lo) - 1, 2 * (ref.to(dtype) - lo) / (hi - lo) - 1, 2.0)


def mssim(pred: Tensor, ref: Tensor, data_range: Tensor | float | None = None) -> Tensor:
    """MSSIM of the paper (§III.3): mean SSIM over a uniformly weighted 8×8 window, K1 = 0.01, K2 = 0.03,
    L as in `ssim`."""
    return ssim_with_window(pred, ref, uniform_window(8), data_range)


def _mean_image(mean_image: Tensor) -> Tensor:
    if not 2 <= mean_image.dim() <= 4 or mean_image.numel() != mean_image.shape[-2] * mean_image.shape[-1]:
        raise ValueError(f"mean_image has shape {tuple(mean_image.shape)}: expected (H, W), (1, H, W) "
                         "or (1, 1, H, W)")
    return mean_image.reshape(mean_image.shape[-2:])


def _sums_of_squares(pred: Tensor, ref: Tensor, mean_image: Tensor) -> tuple[Tensor, Tensor]:
    """Eqs. 15–16: SS_res = Σ_i ‖β_ref,i − β_i‖², SS_tot = Σ_i ‖β_ref,i − β̄‖²."""
    pred, ref = _pair(pred, ref)
    mean = _mean_image(mean_image)
    if mean.shape != ref.shape[-2:]:
        raise ValueError(f"mean_image {tuple(mean_image.shape)}: expected one {tuple(ref.shape[-2:])} image")
    return (ref - pred).square().sum(), (ref - mean.to(ref)).square().sum()


def r2_score(pred: Tensor, ref: Tensor, mean_image: Tensor) -> Tensor:
    """Eq. 14: R² = 1 − SS_res/SS_tot over the whole batch, with β̄ the TRAINING-set mean image
    `mean_image` ((H, W) or (1, [1,] H, W)) as in the paper's Fig. A3, not the mean of this batch."""
    ss_res, ss_tot = _sums_of_squares(pred, ref, mean_image)
    return 1 - ss_res / ss_tot


def seen_r2(pred: Tensor, ref: Tensor, density: Tensor, mean_image: Tensor, fraction: float = 0.01) -> Tensor:
    """Per-sample R²_i (eq. 14, β̄ = the training mean) of potentials where a density determines them: over the
    pixels with n > `fraction` of that map's peak, after removing the mean difference there. A density fixes V
    up to a constant, and says nothing about V where it vanishes (docs/inverse.md, "What a density determines")."""
    pred, ref = _pair(pred, ref)
    n = _as_bhw(density, "density").to(ref)
    seen = (n > fraction * n.amax(dim=(-2, -1), keepdim=True)).to(ref)
    diff = pred - ref
    diff = diff - (diff * seen).sum((-2, -1), keepdim=True) / seen.sum((-2, -1), keepdim=True).clamp_min(1)
    ss_tot = ((ref - _mean_image(mean_image).to(ref)).square() * seen).sum((-2, -1))
    return 1 - (diff.square() * seen).sum((-2, -1)) / ss_tot


class R2Score(Metric):
    """Eq. 14 accumulated over batches (and DDP ranks): sums SS_res and SS_tot, then 1 − SS_res/SS_tot.

    Unlike torchmetrics.R2Score, β̄ is the fixed training-set mean image given at construction; it is a
    non-persistent buffer (moves with the module, not saved in checkpoints).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, mean_image: Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("mean_image", _mean_image(torch.as_tensor(mean_image)).clone(), persistent=False)
        self.add_state("ss_res", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("ss_tot", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, ref: Tensor) -> None:
        ss_res, ss_tot = _sums_of_squares(pred.detach(), ref.detach(), self.mean_image)
        self.ss_res += ss_res.to(self.ss_res)
        self.ss_tot += ss_tot.to(self.ss_tot)

    def compute(self) -> Tensor:
        return 1 - self.ss_res / self.ss_tot


def per_sample_errors(pred: Tensor, ref: Tensor,
                      charge: tuple[Tensor | float, float] | None = None) -> dict[str, Tensor]:
    """L1, L2, L∞ (eqs. 11–13), SSIM and MSSIM of each sample; with `charge` = (N, h²) also |h²Σñ − N|, N one
    number or each sample's (B,). The reports (`summarize`, `Scores`) add `ssim_pm1`."""
    out = {"l1": l1_error(pred, ref), "l2": l2_error(pred, ref), "linf": linf_error(pred, ref),
           "ssim": ssim(pred, ref), "mssim": mssim(pred, ref)}
    if charge is not None:
        out["charge_error"] = charge_error(pred, *charge)
    return out


def summarize(pred: Tensor, ref: Tensor, mean_image: Tensor, unit: str,
              charge: tuple[Tensor | float, float] | None = None,
              value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """The metrics report of a set of predictions, one dict for every consumer (metrics.json, predict,
    invert): `summary_of` the per-sample errors (and `ssim_pm1` on `value_range`, by default the set's) and the
    sums of squares of R² (eq. 14, β̄ = `mean_image`). Computed in the dtype of the inputs."""
    ss_res, ss_tot = _sums_of_squares(pred, ref, torch.as_tensor(mean_image).to(ref))
    per = per_sample_errors(pred, ref, charge) | {"ssim_pm1": ssim_pm1(pred, ref, value_range)}
    return summary_of(per, ss_res, ss_tot, unit)


def summary_of(per: dict[str, Tensor], ss_res: Tensor | float, ss_tot: Tensor | float, unit: str) -> dict[str, Any]:
    """n, R² = 1 − SS_res/SS_tot over the set (None when SS_tot = 0, e.g. one instance against its own mean),
    mean, std and per-sample values of each error, and units: the layout of every metrics report, also
    when the parts were accumulated chunk by chunk."""
    units = {"l1": unit, "l2": unit, "linf": unit, "ssim": "1", "mssim": "1"}
    if "ssim_pm1" in per:
        units["ssim_pm1"] = "1"
    if "charge_error" in per:
        units["charge_error"] = "electrons"
    return {
        "n": len(per["l1"]),
        "r2": float(1 - ss_res / ss_tot) if ss_tot > 0 else None,
        "mean": {k: float(v.double().mean()) for k, v in per.items()},
        "std": {k: float(v.double().std()) if len(v) > 1 else 0.0 for k, v in per.items()},
        "per_sample": {k: v.double().tolist() for k, v in per.items()},
        "units": units,
    }


class Scores:
    """`summarize` of maps given chunk by chunk (numpy, float64, `step` maps at a time): per-sample errors are
    concatenated and SS_res, SS_tot summed, so R² is that of the whole set and memory stays bounded. `ssim_pm1`
    scales by `value_range` (give the model's: without it, each chunk's own range)."""

    def __init__(self, mean_image: Any, unit: str, step: int = 100,
                 value_range: tuple[float, float] | None = None) -> None:
        self.r2 = R2Score(torch.from_numpy(np.asarray(mean_image, dtype=np.float64)))
        self.r2.set_dtype(torch.float64)
        self.unit, self.step, self.per, self.value_range = unit, step, {}, value_range

    def add(self, pred: Any, ref: Any) -> None:
        for a in range(0, len(ref), self.step):
            p, r = (torch.from_numpy(np.asarray(x[a:a + self.step], dtype=np.float64)) for x in (pred, ref))
            self.r2.update(p, r)
            for key, value in (per_sample_errors(p, r) | {"ssim_pm1": ssim_pm1(p, r, self.value_range)}).items():
                self.per.setdefault(key, []).append(value)

    def summary(self) -> dict[str, Any]:
        """The dict of `summarize` (n, r2, mean, std, per_sample, units)."""
        per = {k: torch.cat(v).double() for k, v in self.per.items()}
        return summary_of(per, self.r2.ss_res, self.r2.ss_tot, self.unit)


def report_line(summary: dict[str, Any]) -> str:
    """`summarize`'s numbers on one line: R², L1/L2/L∞ with their unit, SSIM, MSSIM, SSIM on [−1, 1] when
    present (and |∫ñ − N|)."""
    m, unit = summary["mean"], summary["units"]["l1"]
    r2 = "n/a" if summary["r2"] is None else f"{summary['r2']:.4f}"
    line = (f"R² {r2}   L1 {m['l1']:.4g} {unit}   L2 {m['l2']:.4g} {unit}   L∞ {m['linf']:.4g} {unit}   "
            f"SSIM {m['ssim']:.4f}   MSSIM {m['mssim']:.4f}")
    if "ssim_pm1" in m:
        line += f"   SSIM[±1] {m['ssim_pm1']:.4f}"
    if "charge_error" in m:
        line += f"   |∫ñ − N| {m['charge_error']:.3g} electrons"
    return line


def period2_share(error: Tensor) -> float:
    """Share of the error maps' power (B, H, W) in the period-2 Fourier components (π, π), (π, 0), (0, π):
    checkerboard and stripe artifacts at grid scale; white noise gives 3/(H·W), smooth errors ~0."""
    power = torch.fft.fft2(error - error.mean(dim=(-2, -1), keepdim=True)).abs().square()
    h, w = error.shape[-2:]
    nyquist = power[:, h // 2, w // 2] + power[:, h // 2, 0] + power[:, 0, w // 2]
    return float(nyquist.sum() / power.sum())


def charge_error(density: Tensor, n_electrons: Tensor | float, pixel_area: float) -> Tensor:
    """|h²·Σ ñ − N| per image: the deviation of the generated density's integral from the electron
    count N (one number, or each image's (B,)), with `pixel_area` = h² in nm² and `density` in nm⁻²."""
    density = _as_bhw(density, "density")
    if isinstance(n_electrons, Tensor):
        n_electrons = n_electrons.to(density.device, density.dtype)
    return (pixel_area * density.sum(dim=(-2, -1)) - n_electrons).abs()
