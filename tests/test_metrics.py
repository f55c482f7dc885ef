"""Metrics: hand-computed cases, independent numpy loops, and the identities each measure must obey."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from qdgan import metrics
from qdgan.metrics import (
    R2Score,
    charge_error,
    gaussian_window,
    l1_error,
    l2_error,
    linf_error,
    mssim,
    r2_score,
    reference_range,
    ssim,
    uniform_window,
)


def _density(b: int = 3, n: int = 32, seed: int = 0) -> torch.Tensor:
    """Positive blob-shaped images of physical size ~1e-2 nm⁻², like the data set's densities."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.arange(n, dtype=torch.float64)
    x, y = torch.meshgrid(xs, xs, indexing="ij")
    centres = torch.rand(b, 2, 2, generator=g, dtype=torch.float64) * n
    widths = 2 + 4 * torch.rand(b, 2, generator=g, dtype=torch.float64)
    img = sum(torch.exp(-((x - centres[:, k, 0, None, None]) ** 2 + (y - centres[:, k, 1, None, None]) ** 2)
                        / (2 * widths[:, k, None, None] ** 2)) for k in range(2))
    return 1e-2 * img


def _numpy_ssim(x: np.ndarray, y: np.ndarray, w: np.ndarray, data_range: float) -> float:
    """Straightforward double loop over every window position fully inside the image."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    kh, kw = w.shape
    values = []
    for i in range(x.shape[0] - kh + 1):
        for j in range(x.shape[1] - kw + 1):
            px, py = x[i:i + kh, j:j + kw], y[i:i + kh, j:j + kw]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_norms_by_hand():
    ref = torch.tensor([[[1.0, -2.0], [0.0, 3.0]], [[0.5, 0.5], [0.5, 0.5]]])
    pred = torch.zeros_like(ref)
    torch.testing.assert_close(l1_error(pred, ref), torch.tensor([6 / 4, 0.5]))
    torch.testing.assert_close(l2_error(pred, ref), torch.tensor([(14 / 4) ** 0.5, 0.5]))
    torch.testing.assert_close(linf_error(pred, ref), torch.tensor([3.0, 0.5]))


def test_norms_accept_channel_dim_and_obey_linf_ge_l2_ge_l1():
    pred, ref = _density(4), _density(4, seed=1)
    for f in (l1_error, l2_error, linf_error):
        torch.testing.assert_close(f(pred[:, None], ref[:, None]), f(pred, ref))
    l1, l2, linf = l1_error(pred, ref), l2_error(pred, ref), linf_error(pred, ref)
    assert l1.shape == (4,)
    assert torch.all(linf >= l2) and torch.all(l2 >= l1) and torch.all(l1 > 0)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="pred has shape"):
        l1_error(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="expected equal shapes"):
        l1_error(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match="smaller than the 11×11 SSIM window"):
        ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))


@pytest.mark.parametrize("measure", [ssim, mssim])
def test_ssim_of_an_image_with_itself_is_one(measure):
    ref = _density(3)
    torch.testing.assert_close(measure(ref, ref), torch.ones(3, dtype=ref.dtype))
    torch.testing.assert_close(measure(ref.float(), ref.float()), torch.ones(3))


@pytest.mark.parametrize("measure", [ssim, mssim])
def test_ssim_decreases_with_noise(measure):
    ref = _density(2)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(ref.shape, generator=g, dtype=ref.dtype) * 1e-2
    values = torch.stack([measure(ref + a * noise, ref) for a in (0.0, 0.01, 0.05, 0.2, 1.0)])
    assert torch.all(values[1:] < values[:-1])
    assert torch.all(values[-1] < 0.5)


@pytest.mark.parametrize("measure", [ssim, mssim])
def test_ssim_is_independent_of_the_unit(measure):
    pred, ref = _density(2, seed=4), _density(2, seed=5)
    torch.testing.assert_close(measure(1e3 * pred, 1e3 * ref), measure(pred, ref))


@pytest.mark.parametrize(("measure", "window"),
                         [(mssim, uniform_window(8)), (ssim, gaussian_window(11, 1.5))])
def test_ssim_against_a_numpy_double_loop(measure, window):
    pred, ref = _density(2, n=16, seed=6), _density(2, n=16, seed=7)
    got = measure(pred, ref)
    for b in range(2):
        r = ref[b].numpy()
        expected = _numpy_ssim(pred[b].numpy(), r, window.numpy(), float(r.max() - r.min()))
        assert got[b].item() == pytest.approx(expected, rel=1e-10)


def test_numpy_loop_windows_are_the_standard_ones():
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(gaussian_window().numpy(), np.outer(g, g) / np.outer(g, g).sum())
    np.testing.assert_allclose(uniform_window().numpy(), np.full((8, 8), 1 / 64))


def test_gaussian_ssim_matches_torchmetrics_map_inside_the_image():
    # torchmetrics pads by reflection; its map restricted to windows inside the image is ours.
    pred, ref = _density(2, seed=8), _density(2, seed=9)
    got = ssim(pred, ref)
    for b in range(2):
        data_range = float(ref[b].max() - ref[b].min())
        _, full = structural_similarity_index_measure(pred[b, None, None], ref[b, None, None],
                                                      data_range=data_range, return_full_image=True)
        assert got[b].item() == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), rel=1e-10)


def test_data_range_default_and_override():
    ref = torch.stack([torch.full((12, 12), 2.0), torch.zeros(12, 12), torch.arange(144.0).reshape(12, 12)])
    torch.testing.assert_close(reference_range(ref), torch.tensor([2.0, 1.0, 143.0]))
    pred = ref + 0.1
    assert torch.isfinite(mssim(pred, ref)).all()
    torch.testing.assert_close(mssim(pred, ref), mssim(pred, ref, data_range=torch.tensor([2.0, 1.0, 143.0])))
    assert mssim(pred, ref, data_range=1e6)[2] > mssim(pred, ref)[2]


def _numpy_r2(pred: np.ndarray, ref: np.ndarray, mean: np.ndarray) -> float:
    ss_res = sum(((ref[i] - pred[i]) ** 2).sum() for i in range(len(ref)))
    ss_tot = sum(((ref[i] - mean) ** 2).sum() for i in range(len(ref)))
    return 1 - ss_res / ss_tot


def test_r2_by_hand():
    ref = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]])
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    mean = torch.ones(2, 2)
    # SS_res = 1 + 4 = 5; SS_tot = (0 + 1 + 1 + 1) + (1 + 1 + 1 + 4) = 10
    assert r2_score(pred, ref, mean).item() == pytest.approx(0.5)


def test_r2_perfect_is_one_and_mean_prediction_is_zero():
    ref, train_mean = _density(5, seed=10), _density(1, seed=11)[0]
    assert r2_score(ref, ref, train_mean).item() == 1.0
    assert r2_score(train_mean.expand_as(ref), ref, train_mean).item() == pytest.approx(0.0, abs=1e-12)
    pred = _density(5, seed=12)
    expected = _numpy_r2(pred.numpy(), ref.numpy(), train_mean.numpy())
    assert r2_score(pred[:, None], ref[:, None], train_mean[None, None]).item() == pytest.approx(expected)


def test_r2_metric_accumulates_over_batches():
    pred, ref, train_mean = _density(6, seed=13), _density(6, seed=14), _density(1, seed=15)[0]
    metric = R2Score(train_mean)
    for i in range(0, 6, 2):
        metric.update(pred[i:i + 2].float(), ref[i:i + 2].float())
    expected = _numpy_r2(pred.numpy(), ref.numpy(), train_mean.numpy())
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)
    metric.reset()
    metric.update(ref.float(), ref.float())
    assert metric.compute().item() == 1.0
    assert "mean_image" not in metric.state_dict()


def test_r2_metric_sums_states_across_ranks():
    pred, ref = _density(4, seed=16).float(), _density(4, seed=17).float()
    train_mean = _density(1, seed=18)[0]
    rank0, rank1 = R2Score(train_mean), R2Score(train_mean)
    rank0.update(pred[:2], ref[:2])
    rank1.update(pred[2:], ref[2:])
    other = {id(rank0.ss_res): rank1.ss_res, id(rank0.ss_tot): rank1.ss_tot}

    def gather(t, group=None):
        return [t, other[id(t)]]

    rank0.sync(dist_sync_fn=gather, distributed_available=lambda: True)
    synced = (1 - rank0.ss_res / rank0.ss_tot).item()
    rank0.unsync()
    assert synced == pytest.approx(r2_score(pred, ref, train_mean).item(), rel=1e-5)


def test_r2_rejects_a_mean_of_the_wrong_shape():
    with pytest.raises(ValueError, match="mean_image"):
        r2_score(torch.zeros(2, 4, 4), torch.ones(2, 4, 4), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="mean_image"):
        R2Score(torch.zeros(2, 4, 4))


def test_charge_error_by_hand():
    density = torch.tensor([[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.5], [0.25, 0.25]]])
    torch.testing.assert_close(charge_error(density, n_electrons=2, pixel_area=2.0), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(charge_error(density[:, None], 2, 2.0), torch.tensor([0.0, 1.0]))


def test_charge_error_of_a_normalised_density_is_zero():
    n, length = 64, 30.0
    h2 = (length / n) ** 2
    density = _density(2, n=n)
    density = 2 * density / (h2 * density.sum(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(charge_error(density, 2, h2), torch.zeros(2, dtype=density.dtype))


def test_period2_share_sees_checkerboards_and_not_smooth_errors():
    from qdgan.metrics import period2_share

    i, j = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = ((-1.0) ** (i + j)).double()[None]
    smooth = torch.sin(2 * torch.pi * i / 64).double()[None]
    assert period2_share(checker) == pytest.approx(1.0)
    assert period2_share(smooth) < 1e-12
    assert period2_share(smooth + 0.1 * checker) == pytest.approx(0.01 / (0.01 + 0.5), rel=1e-6)
    noise = torch.randn(200, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert period2_share(noise) == pytest.approx(3 / 64**2, rel=0.2)


def test_seen_r2_ignores_a_constant_and_errors_where_the_density_vanishes():
    """A density fixes V up to a constant and only where it is nonzero: such errors leave seen_r2 at 1."""
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 8, 8, generator=g, dtype=torch.float64)
    mean = torch.rand(8, 8, generator=g, dtype=torch.float64)
    n = torch.zeros(3, 8, 8, dtype=torch.float64)
    n[:, :, :4] = 1.0  # electrons in the left half only
    pred = ref + 0.3 + torch.where(n > 0, 0.0, torch.randn(3, 8, 8, generator=g, dtype=torch.float64))
    torch.testing.assert_close(metrics.seen_r2(pred, ref, n, mean), torch.ones(3, dtype=torch.float64))
    assert (metrics.r2_score(pred[:1], ref[:1], mean) < 0.5).item()


def test_seen_r2_by_hand():
    ref, mean = torch.zeros(1, 2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)
    n = torch.tensor([[[1.0, 0.5], [0.0, 0.001]]], dtype=torch.float64)  # seen at 1 %: the top row
    pred = torch.tensor([[[0.2, 0.0], [9.0, 9.0]]], dtype=torch.float64)
    # top row: errors 0.2, 0 → minus their mean 0.1: ±0.1, SS_res 0.02; SS_tot (0 − 1)² twice = 2
    torch.testing.assert_close(metrics.seen_r2(pred, ref, n, mean), torch.tensor([1 - 0.02 / 2], dtype=torch.float64))
