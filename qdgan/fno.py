"""A Fourier neural operator generator (issue 12, model comparison): the FNO of the `neuraloperator` package
behind the interface of `networks.UNetGenerator` (in/out channels, `image_size`, (B, C, H, W) → (B, C_out, H, W)
in [−1, 1] through tanh), so `generator=fno` trains with the same Pix2Pix module, with or without D.

`neuraloperator` is an optional extra (`pip install -e ".[fno]"`): this module imports without it, and building
an `FNOGenerator` without it raises `MissingExtra`, one line naming the extra.
"""

from __future__ import annotations

import importlib.util
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

EXTRA = "fno"
PACKAGE = "neuraloperator"  # distribution name; it imports as `neuralop`


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed (a ValueError too, so entry points report it in one line)."""


def available() -> bool:
    """Whether `neuraloperator` can be imported."""
    return importlib.util.find_spec("neuralop") is not None


def require() -> Any:
    """The `neuralop.models.FNO` class, or MissingExtra naming the extra to install."""
    try:
        from neuralop.models import FNO
    except ImportError:
        raise MissingExtra(f"generator=fno needs the {PACKAGE} package: pip install -e \".[{EXTRA}]\"") from None
    return FNO


def check_generator(target: str) -> None:
    """MissingExtra before any work when a generator config's `_target_` lives here and the extra is missing."""
    if target.startswith(f"{__name__}."):
        require()


class ComplexWeight(nn.Module):
    """A complex weight stored as two real parameters, indexed like the tensor it stands for: Adam's fused kernel
    takes no complex parameters (the spectral weights of `neuralop`'s SpectralConv are complex)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.real = nn.Parameter(weight.real.detach().clone())
        self.imag = nn.Parameter(weight.imag.detach().clone())

    @property
    def shape(self) -> torch.Size:
        """The complex weight's shape."""
        return self.real.shape

    def to_tensor(self) -> Tensor:
        """The complex weight (differentiable in both parts)."""
        return torch.complex(self.real, self.imag)

    def __getitem__(self, index: Any) -> Tensor:
        """A slice of the complex weight, as SpectralConv takes its kept modes."""
        return self.to_tensor()[index]


def real_parameters(fno: nn.Module) -> nn.Module:
    """The dense spectral weights of a `neuralop` FNO stored as real parameters (same values, same forward)."""
    for conv in fno.modules():
        weight = getattr(conv, "weight", None)
        if isinstance(weight, nn.Module) and hasattr(weight, "to_tensor") and not isinstance(weight, ComplexWeight):
            dense = weight.to_tensor()
            if dense.is_complex():
                conv.weight = ComplexWeight(dense)
    if any(p.is_complex() for p in fno.parameters()):
        raise ValueError("FNOGenerator: complex parameters left (only dense spectral weights are supported)")
    return fno


class FNOGenerator(nn.Module):
    """G: α ↦ β as a Fourier neural operator (Li et al. 2021, `neuralop.models.FNO`): a lifting MLP to
    `hidden_channels`, `n_layers` spectral blocks keeping `n_modes` Fourier modes per axis, a projection MLP,
    then tanh (the targets are scaled to [−1, 1], as for the U-Net). `domain_padding` pads the box (a fraction
    of its side) so the spectral convolutions' periodicity does not wrap the hard walls onto each other;
    `positional_embedding="grid"` appends x and y channels. The spectral weights are stored as real parameters
    (`real_parameters`), so every optimizer (fused Adam included) and checkpoint sees real tensors.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        image_size: int = 64,
        n_modes: Sequence[int] = (16, 16),
        hidden_channels: int = 32,
        n_layers: int = 4,
        lifting_channel_ratio: int = 2,
        projection_channel_ratio: int = 2,
        domain_padding: float | None = None,
        positional_embedding: str | None = "grid",
        tanh: bool = True,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        sizes = {"in_channels": in_channels, "out_channels": out_channels, "image_size": image_size,
                 "hidden_channels": hidden_channels, "n_layers": n_layers,
                 "lifting_channel_ratio": lifting_channel_ratio, "projection_channel_ratio": projection_channel_ratio}
        modes = tuple(n_modes)
        sizes |= {f"n_modes[{i}]": m for i, m in enumerate(modes)}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{owner}.{name}={value!r}: expected a positive int")
        if len(modes) != 2 or max(modes) > image_size // 2 + 1:
            raise ValueError(f"{owner}.n_modes={list(modes)}: expected two ints ≤ image_size/2 + 1 = "
                             f"{image_size // 2 + 1}")
        if domain_padding is not None and not (isinstance(domain_padding, numbers.Real) and 0 <= domain_padding < 1):
            raise ValueError(f"{owner}.domain_padding={domain_padding!r}: expected null or a fraction in [0, 1)")
        fno = require()
        self.image_size = image_size
        self.fno = real_parameters(fno(n_modes=modes, in_channels=in_channels, out_channels=out_channels,
                       hidden_channels=hidden_channels, n_layers=n_layers,
                       lifting_channel_ratio=lifting_channel_ratio, projection_channel_ratio=projection_channel_ratio,
                       domain_padding=domain_padding or None, positional_embedding=positional_embedding))
        # neuralop's BaseModel.state_dict adds a non-tensor '_metadata' entry to the whole (Lightning) state dict
        self.fno.state_dict = nn.Module.state_dict.__get__(self.fno)
        self.head = nn.Sequential(nn.Tanh() if tanh else nn.Identity())  # the output layer, as UNetGenerator's

    def forward(self, x: Tensor) -> Tensor:
        """Scaled inputs (B, in_channels, H, W) → outputs (B, out_channels, H, W), in [−1, 1] with `tanh`."""
        return self.head(self.fno(x))
