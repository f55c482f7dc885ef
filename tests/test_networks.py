"""Networks: configs instantiate, patch sizes and map shapes follow the paper, bad arguments fail early."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from qdgan.networks import PatchDiscriminator, UNetGenerator, output_size, receptive_field

CONF = Path(__file__).resolve().parents[1] / "conf"
PATCH_SIZES = {"imagegan70": 70, "patchgan34": 34, "patchgan16": 16, "patchgan7": 7, "patchgan4": 4,
               "pixelgan1": 1}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("name", "n_pt"), PATCH_SIZES.items())
def test_discriminator_configs_reproduce_paper_patch_sizes(name, n_pt):
    cfg = OmegaConf.load(CONF / "discriminator" / f"{name}.yaml")
    disc = instantiate(cfg, ndf=4)
    assert isinstance(disc, PatchDiscriminator)
    assert disc.receptive_field == n_pt
    assert receptive_field(cfg.n_strided, cfg.n_plain, cfg.kernel_size) == n_pt
    side = output_size(cfg.image_size, cfg.n_strided, cfg.n_plain, cfg.kernel_size)
    alpha, beta = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64)
    assert disc(alpha, beta).shape == (2, 1, side, side)


def test_imagegan70_gives_the_papers_6x6_logit_map():
    disc = instantiate(OmegaConf.load(CONF / "discriminator" / "imagegan70.yaml"), ndf=4)
    assert disc.map_sizes == [64, 32, 16, 8, 7, 6]
    out = disc(torch.randn(3, 1, 64, 64), torch.randn(3, 1, 64, 64))
    assert out.shape == (3, 1, 6, 6)


def test_receptive_field_by_hand():
    # One 3×3 stride-1 conv sees 3 pixels; a 2×2 stride-2 conv below it widens that to (3−1)·2 + 2 = 6.
    assert receptive_field(0, 1, 3) == 3
    assert receptive_field(1, 1, 2) == 4
    assert receptive_field(1, 1, 3) == 7


def test_receptive_field_matches_gradient_support():
    disc = PatchDiscriminator(ndf=4, n_strided=2, n_plain=2, kernel_size=4, norm="none").eval()
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    disc(x, torch.zeros(1, 1, 64, 64))[0, 0, 7, 7].backward()
    rows = x.grad[0, 0].abs().sum(dim=1).nonzero()
    assert rows.max() - rows.min() + 1 == disc.receptive_field == 34


@pytest.mark.parametrize("name", ["unet64", "unet64_small"])
def test_generator_configs_instantiate(name):
    gen = instantiate(OmegaConf.load(CONF / "generator" / f"{name}.yaml"), ngf=4)
    assert isinstance(gen, UNetGenerator)
    assert gen.bottleneck_size == 1


def test_generator_keeps_shape_and_range():
    gen = UNetGenerator(ngf=4)
    x = 10 * torch.randn(2, 1, 64, 64)
    y = gen(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1


def test_depth_6_reaches_a_1x1_bottleneck():
    gen = UNetGenerator(ngf=4, norm="instance")
    seen = []
    gen.down[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    gen(torch.randn(1, 1, 64, 64))
    assert seen == [(1, 4 * 8, 1, 1)]


@pytest.mark.parametrize("kernel_size", [3, 4, 5])
def test_generator_other_kernels_and_depths(kernel_size):
    gen = UNetGenerator(ngf=4, depth=3, channel_mults=(1, 2, 4), n_dropout=1, kernel_size=kernel_size,
                        image_size=32)
    assert gen(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_dropout_only_on_innermost_decoder_layers():
    gen = UNetGenerator(ngf=4, n_dropout=2)
    has_dropout = [any(isinstance(m, torch.nn.Dropout) for m in up) for up in gen.up]
    assert has_dropout == [True, True, False, False, False]


def test_first_and_innermost_encoder_layers_have_no_norm():
    gen = UNetGenerator(ngf=4)
    normed = [any(isinstance(m, torch.nn.BatchNorm2d) for m in down) for down in gen.down]
    assert normed == [False, True, True, True, True, False]


def test_init_is_pix2pix_normal():
    gen = UNetGenerator(ngf=16)
    w = gen.down[1][0].weight
    assert abs(w.mean().item()) < 0.002
    assert w.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 7, "channel_mults": (1, 2, 4, 8, 8, 8, 8)}, r"image_size=64.*2\*\*depth=128"),
        ({"depth": 5}, r"channel_mults=.*depth=5"),
        ({"ngf": 0}, r"ngf=0"),
        ({"channel_mults": (1, 2, 4, 8, 8, 0)}, r"channel_mults\[5\]=0"),
        ({"norm": "layer"}, r"norm='layer'.*'batch'"),
        ({"n_dropout": 6}, r"n_dropout=6.*depth-1=5"),
        ({"dropout": 1.0}, r"dropout=1.0"),
        ({"image_size": 48}, r"image_size=48"),
    ],
)
def test_invalid_generator_fails_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetGenerator(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_strided": 7}, r"n_strided=7: too many stride-2 layers"),
        ({"n_strided": 6, "n_plain": 2}, r"kernel_size=4 with n_plain=2: the kernel is larger than the map"),
        ({"n_strided": 0, "n_plain": 2, "image_size": 2}, r"kernel_size=4.*1×1 map"),
        ({"n_strided": -1}, r"n_strided=-1: expected an int >= 0"),
        ({"n_plain": 0}, r"n_plain=0: expected a positive int"),
        ({"kernel_size": 0}, r"kernel_size=0"),
        ({"image_size": 0}, r"image_size=0"),
        ({"norm": "group"}, r"norm='group'"),
    ],
)
def test_invalid_discriminator_fails_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchDiscriminator(ndf=4, **kwargs)


def test_generator_overfits_one_pair():
    # A smooth well-like α and a blob-like β, as a potential and its density; dropout (γ) stays on.
    gen = UNetGenerator(ngf=8)
    xs = torch.linspace(-1, 1, 64)
    x, y = torch.meshgrid(xs, xs, indexing="ij")
    alpha = torch.tanh(3 * (x**2 + 0.5 * y**2) - 1)[None, None]
    beta = (2 * torch.exp(-((x - 0.2) ** 2 + (y + 0.1) ** 2) / 0.1) - 1)[None, None]
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(30):
        loss = (gen(alpha) - beta).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
