"""pix2pix networks (paper §III.2, §III.4): the U-Net generator G and the conditional PatchGAN D.

Every architectural choice is a constructor argument with the paper's default; the patch size N_pt
and the side of D's logit map follow from those arguments (`receptive_field`, `output_size`).
Bad arguments raise ValueError at construction, naming the argument and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

NORMS = ("batch", "instance", "none")
UPSAMPLES = ("transpose", "resize")
RESIZE_MODES = ("nearest", "bilinear")
LEAK = 0.2


def _check_int(owner: str, name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{owner}.{name}={value!r}: expected {kind}")


def _check_common(owner: str, norm: str, init_std: float, **positive_ints: object) -> None:
    for name, value in positive_ints.items():
        _check_int(owner, name, value)
    if norm not in NORMS:
        raise ValueError(f"{owner}.norm={norm!r}: expected one of {NORMS}")
    if not (isinstance(init_std, numbers.Real) and init_std > 0):
        raise ValueError(f"{owner}.init_std={init_std!r}: expected a positive float")


def same_padding(kernel_size: int) -> int:
    """Padding (k−1)//2: a stride-2 conv halves an even map; a stride-1 conv keeps it (odd k) or
    shrinks it by one (even k), so pix2pix's 70×70 PatchGAN maps 64 → 32 → 16 → 8 → 7 → 6."""
    return (kernel_size - 1) // 2


def norm_layer(norm: str, channels: int) -> nn.Module:
    """BatchNorm, InstanceNorm (no affine, no running stats, as in pix2pix) or identity."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)
    return nn.Identity()


def conv_block(in_channels: int, out_channels: int, kernel_size: int, stride: int,
               norm: str) -> nn.Sequential:
    """Conv → norm → LeakyReLU(0.2): a U-Net encoder layer (stride 2) or a hidden layer of D."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, same_padding(kernel_size),
                  bias=norm != "batch"),
        norm_layer(norm, out_channels),
        nn.LeakyReLU(LEAK),
    )


def upsampler(in_channels: int, out_channels: int, kernel_size: int, upsample: str, resize_mode: str,
              resize_kernel: int, bias: bool) -> nn.Module:
    """×2 upsampling layer: a stride-2 transposed conv (pix2pix), or `resize` then a stride-1 conv: nearest or
    bilinear ×2 has no response at the period-2 frequency, so resize-conv cannot paint checkerboards."""
    if upsample == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, 2, same_padding(kernel_size),
                                  output_padding=kernel_size % 2, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode=resize_mode),
                         nn.Conv2d(in_channels, out_channels, resize_kernel, 1, resize_kernel // 2, bias=bias))


def up_block(in_channels: int, out_channels: int, kernel_size: int, norm: str, dropout: float,
             upsample: str = "transpose", resize_mode: str = "nearest", resize_kernel: int = 3) -> nn.Sequential:
    """×2 upsampling (`upsampler`) → norm → dropout (the noise γ) → ReLU."""
    return nn.Sequential(
        upsampler(in_channels, out_channels, kernel_size, upsample, resize_mode, resize_kernel, norm != "batch"),
        norm_layer(norm, out_channels),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.ReLU(),
    )


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix 'normal' init: conv weights ~ N(0, std), BatchNorm scales ~ N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class UNetGenerator(nn.Module):
    """U-Net G: {α, γ} ↦ β (paper §III.4): `depth` stride-2 conv layers down, `depth` ×2 upsampling
    layers up, skip connections between equal sizes, tanh output.

    Encoder widths are ngf·channel_mults; the decoder mirrors them. As in pix2pix, the first and
    the innermost encoder layers carry no norm (instance/batch norm of a 1×1 map is degenerate), and
    the noise γ is dropout on the `n_dropout` innermost decoder layers. `upsample="transpose"` (pix2pix)
    upsamples by stride-2 transposed convs; `"resize"` by `resize_mode` ×2 then a `resize_kernel` stride-1
    conv, with the same widths and skips (issue 12: no checkerboard artifacts).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 6,
        ngf: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4, 8, 8, 8),
        kernel_size: int = 4,
        norm: str = "batch",
        dropout: float = 0.5,
        n_dropout: int = 3,
        image_size: int = 64,
        init_std: float = 0.02,
        upsample: str = "transpose",
        resize_mode: str = "nearest",
        resize_kernel: int = 3,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_common(owner, norm, init_std, in_channels=in_channels, out_channels=out_channels,
                      depth=depth, ngf=ngf, kernel_size=kernel_size, image_size=image_size)
        for name, value, options in (("upsample", upsample, UPSAMPLES), ("resize_mode", resize_mode, RESIZE_MODES)):
            if value not in options:
                raise ValueError(f"{owner}.{name}={value!r}: expected one of {options}")
        _check_int(owner, "resize_kernel", resize_kernel)
        if resize_kernel % 2 == 0:
            raise ValueError(f"{owner}.resize_kernel={resize_kernel}: expected an odd size (keeps the map's size)")
        mults = tuple(channel_mults)
        if len(mults) != depth:
            raise ValueError(f"{owner}.channel_mults={list(mults)} has {len(mults)} entries: "
                             f"expected one per layer, depth={depth}")
        for i, m in enumerate(mults):
            _check_int(owner, f"channel_mults[{i}]", m)
        if image_size % 2**depth:
            raise ValueError(f"{owner}.image_size={image_size}: expected a multiple of 2**depth={2**depth} "
                             f"(depth={depth} stride-2 layers)")
        if not (isinstance(dropout, numbers.Real) and 0 <= dropout < 1):
            raise ValueError(f"{owner}.dropout={dropout!r}: expected a probability in [0, 1)")
        _check_int(owner, "n_dropout", n_dropout, minimum=0)
        if n_dropout > depth - 1:
            raise ValueError(f"{owner}.n_dropout={n_dropout}: expected at most depth-1={depth - 1}, "
                             "the number of decoder layers before the output layer")
        self.image_size = image_size
        self.depth = depth

        widths = [ngf * m for m in mults]
        self.down = nn.ModuleList(
            conv_block(c_in, c_out, kernel_size, 2, "none" if i in (0, depth - 1) else norm)
            for i, (c_in, c_out) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True))
        )
        self.upsample = upsample
        resize = (upsample, resize_mode, resize_kernel)
        ups, c = [], widths[-1]
        for j, w in enumerate(reversed(widths[:-1])):
            ups.append(up_block(c, w, kernel_size, norm, dropout if j < n_dropout else 0.0, *resize))
            c = 2 * w  # decoder output concatenated with the encoder skip
        self.up = nn.ModuleList(ups)
        self.head = nn.Sequential(upsampler(c, out_channels, kernel_size, *resize, bias=True), nn.Tanh())
        init_weights(self, init_std)

    @property
    def bottleneck_size(self) -> int:
        """Side of the innermost feature map for an image_size input (1 for the paper's 64, depth 6)."""
        return self.image_size // 2**self.depth

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        for up, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = torch.cat([up(x), skip], dim=1)
        return self.head(x)


def _strides(n_strided: int, n_plain: int) -> list[int]:
    return [2] * n_strided + [1] * n_plain


def _check_layers(owner: str, n_strided: int, n_plain: int, kernel_size: int) -> None:
    _check_int(owner, "n_strided", n_strided, minimum=0)
    _check_int(owner, "n_plain", n_plain)
    _check_int(owner, "kernel_size", kernel_size)


def receptive_field(n_strided: int, n_plain: int, kernel_size: int) -> int:
    """Patch size N_pt of D: rf = (rf − 1)·stride + k over the layers from the output back.

    (3, 2, 4) → 70 (ImageGAN), (2, 2, 4) → 34, (1, 2, 4) → 16, (0, 2, 4) → 7, (0, 1, 4) → 4,
    (0, 3, 1) → 1 (PixelGAN).
    """
    _check_layers("receptive_field", n_strided, n_plain, kernel_size)
    rf = 1
    for stride in reversed(_strides(n_strided, n_plain)):
        rf = (rf - 1) * stride + kernel_size
    return rf


def map_sizes(image_size: int, n_strided: int, n_plain: int, kernel_size: int) -> list[int]:
    """Sides of D's maps, input first, logit map last; ValueError if a layer cannot be applied.

    A kernel larger than a map is fine while the zero-padded map still holds it (as in the U-Net's
    innermost 4×4 kernel on a 2×2 map); otherwise the map would shrink below 1×1.
    """
    owner = "PatchDiscriminator"
    _check_layers(owner, n_strided, n_plain, kernel_size)
    _check_int(owner, "image_size", image_size)
    pad = same_padding(kernel_size)
    sizes = [image_size]
    for i, stride in enumerate(_strides(n_strided, n_plain)):
        n = sizes[-1]
        if n + 2 * pad < kernel_size:
            culprit = (f"n_strided={n_strided}: too many stride-2 layers" if i < n_strided else
                       f"kernel_size={kernel_size} with n_plain={n_plain}: the kernel is larger than the map")
            raise ValueError(
                f"{owner}.{culprit} for image_size={image_size}; layer {i + 1} gets a {n}×{n} map that "
                f"kernel_size={kernel_size} with padding {pad} cannot cover (output would be < 1×1)")
        sizes.append((n + 2 * pad - kernel_size) // stride + 1)
    return sizes


def output_size(image_size: int, n_strided: int, n_plain: int, kernel_size: int) -> int:
    """Side of D's logit map for an image_size×image_size input (6 for the 70×70 ImageGAN on 64)."""
    return map_sizes(image_size, n_strided, n_plain, kernel_size)[-1]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN D(α, β) (paper §III.4): `n_strided` stride-2 convs, then `n_plain`
    stride-1 convs, the last giving a 1-channel map of patch logits (no sigmoid).

    Widths are ndf·min(2^i, max_mult) as in pix2pix; no norm on the first and the last layer.
    `in_channels` counts the channels of input and target together.
    """

    def __init__(
        self,
        in_channels: int = 2,
        ndf: int = 64,
        n_strided: int = 3,
        n_plain: int = 2,
        kernel_size: int = 4,
        max_mult: int = 8,
        norm: str = "batch",
        image_size: int = 64,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_common(owner, norm, init_std, in_channels=in_channels, ndf=ndf, max_mult=max_mult)
        self.map_sizes = map_sizes(image_size, n_strided, n_plain, kernel_size)
        self.receptive_field = receptive_field(n_strided, n_plain, kernel_size)
        self.output_size = self.map_sizes[-1]

        n_layers = n_strided + n_plain
        widths = [ndf * min(2**i, max_mult) for i in range(n_layers - 1)]
        strides = _strides(n_strided, n_plain)
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers.append(conv_block(c, w, kernel_size, strides[i], "none" if i == 0 else norm))
            c = w
        layers.append(nn.Conv2d(c, 1, kernel_size, strides[-1], same_padding(kernel_size)))
        self.model = nn.Sequential(*layers)
        init_weights(self, init_std)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return self.model(torch.cat([input, target], dim=1))
