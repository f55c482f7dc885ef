"""U-Net upsampling (issue 12): `transpose` (pix2pix, the default, unchanged) vs `resize` (resize ×2, then a
stride-1 conv), which cannot paint period-2 checkerboards."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from qdgan.networks import UNetGenerator

CONF = Path(__file__).resolve().parents[1] / "conf"
WIDTHS = [16, 32, 64, 128, 128, 128]  # unet64_small: ngf 16, mults 1-2-4-8-8-8


def expected_parameters(k_up: int, batch_norm: bool = True) -> int:
    """Parameters of the ngf-16 U-Net from its layer widths: encoder k = 4; decoder kernels k_up × k_up."""
    n, c = 0, 1
    for i, w in enumerate(WIDTHS):  # no norm on the first and the innermost layer: those keep their bias
        plain = i in (0, len(WIDTHS) - 1)
        n += c * w * 16 + (w if plain or not batch_norm else 2 * w)
        c = w
    for w in reversed(WIDTHS[:-1]):  # conv without bias, batch norm scale and shift
        n += c * w * k_up**2 + 2 * w
        c = 2 * w
    return n + c * 1 * k_up**2 + 1  # head: conv with bias


def checkerboard(y: torch.Tensor) -> tuple[float, float]:
    """(|2×2 checkerboard Fourier component|, mean |y − mean y|) of a (1, 1, H, W) map: F at (π, π) / (H·W)."""
    y = y[0, 0].double()
    sign = torch.ones(y.shape[-1], dtype=torch.float64)
    sign[1::2] = -1
    return float((y * torch.outer(sign, sign)).mean().abs()), float((y - y.mean()).abs().mean())


def test_transpose_is_the_default_and_unchanged():
    torch.manual_seed(0)
    default = UNetGenerator(ngf=16)
    torch.manual_seed(0)
    explicit = UNetGenerator(ngf=16, upsample="transpose", resize_mode="bilinear", resize_kernel=5)
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)  # same parameters, same init draws
    assert sum(p.numel() for p in default.parameters()) == expected_parameters(4) == 1_829_169
    assert isinstance(default.up[0][0], torch.nn.ConvTranspose2d)
    assert isinstance(default.head[0], torch.nn.ConvTranspose2d)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_conv_shapes_and_parameters(mode):
    gen = UNetGenerator(ngf=16, upsample="resize", resize_mode=mode).eval()
    assert sum(p.numel() for p in gen.parameters()) == expected_parameters(3) == 1_334_353
    x = torch.randn(3, 1, 64, 64)
    seen = []
    for up in gen.up:
        up.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[1:])))
    y = gen(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert seen == [(128, 2, 2), (128, 4, 4), (64, 8, 8), (32, 16, 16), (16, 32, 32)]  # same widths as transpose


@pytest.mark.parametrize("ngf", [16, 64])
def test_resize_conv_output_has_no_checkerboard_at_init(ngf):
    """A constant input: transposed convs paint a 2×2 checkerboard comparable to the output's whole variation;
    resize-conv's checkerboard component is ~0 (only the zero-padded borders leak a little)."""
    x = torch.full((1, 1, 64, 64), 0.3)
    results = {}
    for upsample in ("transpose", "resize"):
        torch.manual_seed(0)
        gen = UNetGenerator(ngf=ngf, upsample=upsample).eval()
        with torch.no_grad():
            results[upsample] = checkerboard(gen(x))
    (cb_t, spread_t), (cb_r, spread_r) = results["transpose"], results["resize"]
    assert cb_t > 0.3 * spread_t  # transposed convs: a strong period-2 pattern
    assert cb_r < 0.01 * spread_r and cb_r < 1e-3 * cb_t  # resize-conv: none


def test_resize_config_instantiates():
    gen = instantiate(OmegaConf.load(CONF / "generator" / "unet64_resize.yaml"))
    assert isinstance(gen, UNetGenerator) and gen.upsample == "resize"
    assert sum(p.numel() for p in gen.parameters()) == expected_parameters(3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"upsample": "pixelshuffle"}, "upsample='pixelshuffle'"),
    ({"upsample": "resize", "resize_mode": "bicubic"}, "resize_mode='bicubic'"),
    ({"upsample": "resize", "resize_kernel": 4}, "resize_kernel=4"),
    ({"upsample": "resize", "resize_kernel": 0}, "resize_kernel=0"),
])
def test_bad_upsampling_arguments_fail_early(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        UNetGenerator(ngf=4, **kwargs)
