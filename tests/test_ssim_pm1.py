"""SSIM in the second convention (issue 12, part 5): images scaled to [−1, 1], L = 2, beside SSIM in physical units."""

import numpy as np
import pytest
import torch

from qdgan import metrics


def blobs(n: int = 4, seed: int = 0) -> torch.Tensor:
    """Density-like maps: a Gaussian blob on a zero background, (n, 64, 64), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(64, dtype=torch.float64)
    out = []
    for _ in range(n):
        cx, cy, s = (torch.rand(3, generator=g, dtype=torch.float64) * torch.tensor([20, 20, 4]) + torch.tensor(
            [22, 22, 5]))
        out.append(0.02 * torch.exp(-((x[:, None] - cx) ** 2 + (x[None] - cy) ** 2) / (2 * s**2)))
    return torch.stack(out)


def test_identical_images_score_one_and_one_map_scales_the_set():
    ref = blobs()
    torch.testing.assert_close(metrics.ssim_pm1(ref, ref), torch.ones(4, dtype=torch.float64))
    pred = ref + 1e-3 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lo, hi = float(ref.min()), float(ref.max())  # default: the range of all reference maps

    def scale(a: torch.Tensor) -> torch.Tensor:
        return 2 * (a - lo) / (hi - lo) - 1

    torch.testing.assert_close(metrics.ssim_pm1(pred, ref), metrics.ssim(scale(pred), scale(ref), 2.0))
    # invariant under one unit change and offset of both images (SSIM in physical units is not under offsets)
    torch.testing.assert_close(metrics.ssim_pm1(3 * pred - 7, 3 * ref - 7), metrics.ssim_pm1(pred, ref))
    with pytest.raises(ValueError, match="value_range"):
        metrics.ssim_pm1(pred, ref, (1.0, 1.0))


def test_a_given_range_is_mapped_to_minus_one_and_one():
    ref = blobs()
    pred = ref.flip(-1)
    lo, hi = 0.0, 0.05
    expected = metrics.ssim(2 * (pred - lo) / (hi - lo) - 1, 2 * (ref - lo) / (hi - lo) - 1, 2.0)
    torch.testing.assert_close(metrics.ssim_pm1(pred, ref, (lo, hi)), expected)


def test_background_noise_costs_less_on_minus_one_to_one():
    """Near-zero backgrounds make the luminance term of physical-unit SSIM sensitive; at −1 it barely moves."""
    ref = blobs()
    noise = 2e-4 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pred = ref + noise.abs()
    phys, pm1 = metrics.ssim(pred, ref), metrics.ssim_pm1(pred, ref)
    assert bool((pm1 > phys).all()) and float(pm1.mean()) > 0.95 > 0.9 > float(phys.mean())


def test_reports_carry_it_beside_the_existing_keys():
    ref = blobs(6).float()
    pred = ref * 1.05
    summary = metrics.summarize(pred, ref, ref.mean(0), "nm^-2", charge=(2.0, 1.0))
    assert set(summary["mean"]) == {"l1", "l2", "linf", "ssim", "mssim", "ssim_pm1", "charge_error"}
    assert summary["units"]["ssim_pm1"] == "1" and len(summary["per_sample"]["ssim_pm1"]) == 6
    assert summary["mean"]["ssim"] == float(metrics.ssim(pred, ref).double().mean())  # unchanged convention
    assert "SSIM[±1] " in metrics.report_line(summary) and "   SSIM " in metrics.report_line(summary)
    scores = metrics.Scores(ref.mean(0).numpy(), "nm^-2", step=4, value_range=(float(ref.min()), float(ref.max())))
    scores.add(pred.numpy(), ref.numpy())
    chunked = scores.summary()
    assert np.allclose(chunked["per_sample"]["ssim_pm1"], summary["per_sample"]["ssim_pm1"], atol=1e-4)  # fp64/32
    assert "ssim_pm1" not in metrics.per_sample_errors(pred, ref)  # the validation loop's errors stay as they were
    old = dict(summary) | {"mean": {k: v for k, v in summary["mean"].items() if k != "ssim_pm1"}}
    assert "SSIM[±1]" not in metrics.report_line(old)  # reports written before it still print



def test_train_metrics_take_ssim_pm1_on_the_models_own_range():
    """metrics.json (train/evaluate.scores) scales by the training set's target range (the model's), not the test
    set's: the same predictions score as metrics.ssim_pm1 on (target_min, target_max) of the model."""
    from qdgan.train.evaluate import scores
    from tests.test_training_options import tiny_model

    model = tiny_model()  # target range (0, 0.05) nm⁻², unlike the test maps' own (0, ~0.02)
    ref = blobs(4).float()
    pred = ref + 1e-3 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    got = scores(model, pred, ref, 2.0)["mean"]["ssim_pm1"]
    want = float(metrics.ssim_pm1(pred, ref, (0.0, 0.05)).mean())
    other = float(metrics.ssim_pm1(pred, ref).mean())
    assert got == pytest.approx(want, rel=1e-6) and abs(want - other) > 1e-4
