"""What the model and its data agree on: the quantities and their units, the split, the data statistics
and the input encoding. Used by the data module (to build tensors) and the model (whose checkpoint
carries the statistics, so it maps physical inputs to physical outputs on its own).

Quantities and units come from the one table of the data-set format, `physics.shards.FIELDS`.
Split (paper §IV: 4800/100/100): one permutation of the data set fixed by `split_seed`; test takes
the first `n_test` indices, validation the next `n_val`, training the next `n_train`, so lowering
`n_train` (training-size study) never changes validation or test.
One model for several N (issue 11) takes N as a second input channel, `with_electrons`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from physics.shards import FIELDS

if TYPE_CHECKING:  # torch only through tensor methods: the apply apps' ED workers import this module
    import torch

QUANTITIES = tuple(name for name, f in FIELDS.items() if f.is_map)
"""Map quantities a mapping reads or writes: potential (eV), n0 and n_int (nm⁻², ∫ = N)."""
UNITS = {name: FIELDS[name].unit for name in QUANTITIES}
DENSITIES = tuple(name for name in QUANTITIES if UNITS[name] == "nm^-2")
SPLITS = ("train", "val", "test")


def is_density(quantity: str) -> bool:
    """Densities integrate to N (h²·Σn = N); potentials do not."""
    return quantity in DENSITIES


def split_indices(n: int, split_seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """The sorted train/val/test instance indices of a data set of n instances (see the module docstring);
    ValueError when n is smaller than the split."""
    need = n_train + n_val + n_test
    if n < need:
        raise ValueError(f"holds {n} instances, but the split needs n_train + n_val + n_test = "
                         f"{n_train} + {n_val} + {n_test} = {need}")
    order = np.random.default_rng(split_seed).permutation(n)
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:need])}


@dataclass(frozen=True)
class DataStats:
    """Scaling and reference statistics from the training split, in physical units."""

    input_min: float
    input_max: float
    target_min: float
    target_max: float
    target_mean: torch.Tensor  # (H, W) β̄ of the training set (R², eqs. 14–16)
    pixel_area: float  # h², nm²
    n_electrons: int  # N; 0 when the training data mix several N (each instance has its own)
    input_code: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (log offset, lo, hi) of `encode_input`


def encode_input(x: torch.Tensor, log_offset: float, lo: float, hi: float) -> torch.Tensor:
    """Network input from physical values: log(x + offset) when offset > 0 (densities: exposes the
    exponential tails, where the potential beyond the electrons is written), then [lo, hi] → [−1, 1]."""
    if log_offset > 0:
        x = (x.clamp(min=0) + log_offset).log()
    return to_unit_range(x, lo, hi)


def with_electrons(x: torch.Tensor, n_electrons: torch.Tensor | float, n_max: int) -> torch.Tensor:
    """Scaled inputs (B, 1, H, W) and each instance's N → (B, 2, H, W), the second channel the constant map
    N/N_max (N_max: the largest N trained on): one ordered number, so the network can share what N = 2 and 3
    have in common, where a one-hot code would give each N its own channel."""
    n = n_electrons.to(x) if hasattr(n_electrons, "dim") else x.new_tensor(float(n_electrons))
    out = x.new_empty((len(x), 2, *x.shape[2:]))
    out[:, :1], out[:, 1:] = x, n.reshape(-1, 1, 1, 1) / n_max
    return out


def electrons_in(x: torch.Tensor, n_max: int) -> torch.Tensor:
    """Each instance's N (B,) float, read back from the channel `with_electrons` added."""
    return (x[:, 1].mean(dim=(-2, -1)) * n_max).round()


def to_unit_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Physical values in [lo, hi] → [−1, 1] (the generator's tanh range)."""
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


def from_unit_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Inverse of `to_unit_range`."""
    return (x + 1.0) * (0.5 * (hi - lo)) + lo


def fit_stats(x_train: torch.Tensor, y_train: torch.Tensor, input_log_floor: float, pixel_area: float,
              n_electrons: int) -> DataStats:
    """Statistics of the training inputs and targets (n, H, W), physical units. With `input_log_floor`
    > 0 the input is log-encoded with offset floor·max(x_train). ValueError if a quantity is constant."""
    offset = input_log_floor * float(x_train.max())
    coded = (x_train.clamp(min=0) + offset).log() if offset > 0 else x_train
    stats = DataStats(
        input_min=float(x_train.min()), input_max=float(x_train.max()),
        target_min=float(y_train.min()), target_max=float(y_train.max()),
        target_mean=y_train.double().mean(0).float(),
        pixel_area=pixel_area, n_electrons=n_electrons,
        input_code=(offset, float(coded.min()), float(coded.max())),
    )
    for which, lo, hi in (("input", stats.input_min, stats.input_max),
                          ("target", stats.target_min, stats.target_max)):
        if not hi > lo:
            raise ValueError(f"the training {which} values are constant ({lo}); cannot scale them to [-1, 1]")
    return stats
