"""`PhysicsConfig`: every physical and numerical parameter of the model system (paper §II, §III.1).

Units: lengths in nm, energies in eV, effective mass in units of the free-electron mass.
m* and ε_r are not given in the paper; the GaAs values (0.067, 12.9) are our documented choice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of its admissible range; the message names the field."""


MAX_AMPLITUDES = 2**26
"""N ≥ 3: the many-body solver (physics/determinants.py) holds n_orbitals^N amplitudes per vector (0.5 GB here)."""


@dataclass(frozen=True)
class PhysicsConfig:
    """Parameters of the quantum-dot system, its random potentials and the ED solver.

    System (eq. 1-3): square box of side `length_nm` with hard walls, `grid`×`grid` cell-centred
    pixels, `n_electrons` electrons of effective mass `m_eff` in a dielectric `eps_r`.
    Numerics: `n_basis` sine functions per axis (`n_basis`² single-particle basis states),
    `n_orbitals` lowest single-particle orbitals kept for the many-body (Slater determinant) basis.
    Potentials (paper §II): `n_wells` circular wells of depth `v_well_ev` in a step `v_step_ev`,
    radii uniform in (`radius_min_frac`, `radius_max_frac`)·L, each new well touching the previous
    one and overlapping it by at most `max_overlap` of its own area; maps with more than
    `max_well_area` of L² in wells are discarded.
    """

    length_nm: float = 30.0
    grid: int = 64
    n_basis: int = 32
    n_orbitals: int = 16
    n_electrons: int = 2
    m_eff: float = 0.067
    eps_r: float = 12.9
    # random potential generator (paper §II)
    n_wells: int = 25
    v_step_ev: float = 0.5
    v_well_ev: float = 0.0
    radius_min_frac: float = 1.0 / 16.0
    radius_max_frac: float = 1.0 / 8.0
    max_overlap: float = 0.75
    max_well_area: float = 0.8
    max_redraws: int = 100_000
    max_restarts: int = 1_000
    # single-particle eigensolver (two-level Davidson, physics/single_particle.py)
    eig_tol_ev: float = 1e-7
    eig_max_iter: int = 100
    eig_coarse_basis: int = 256

    def __post_init__(self) -> None:
        _positive(self, "length_nm", "m_eff", "eps_r", "eig_tol_ev")
        _positive_int(self, "grid", "n_basis", "n_orbitals", "n_electrons", "n_wells",
                      "max_redraws", "max_restarts", "eig_max_iter", "eig_coarse_basis")
        if self.n_basis >= self.grid:
            raise ConfigError(
                f"PhysicsConfig.n_basis={self.n_basis} must be smaller than grid={self.grid}: the "
                "cell-centred grid integrates products of two sine functions exactly only then")
        if self.n_orbitals > self.n_basis**2:
            raise ConfigError(
                f"PhysicsConfig.n_orbitals={self.n_orbitals} exceeds the number of basis states "
                f"n_basis²={self.n_basis**2}")
        if self.n_electrons > 2 * self.n_orbitals:
            raise ConfigError(
                f"PhysicsConfig.n_electrons={self.n_electrons} exceeds the number of spin-orbitals "
                f"2·n_orbitals={2 * self.n_orbitals}")
        if self.n_electrons >= 3 and self.n_orbitals**self.n_electrons > MAX_AMPLITUDES:
            raise ConfigError(
                f"PhysicsConfig.n_electrons={self.n_electrons} with n_orbitals={self.n_orbitals} is too large for the "
                f"many-body solver: n_orbitals^n_electrons = {self.n_orbitals**self.n_electrons:.2e} amplitudes per "
                f"vector, expected at most {MAX_AMPLITUDES:.2e}")
        for name in ("v_step_ev", "v_well_ev"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"PhysicsConfig.{name} must be finite, got {getattr(self, name)}")
        if not 0.0 < self.radius_min_frac <= self.radius_max_frac:
            raise ConfigError(
                "PhysicsConfig radii must satisfy 0 < radius_min_frac <= radius_max_frac, got "
                f"radius_min_frac={self.radius_min_frac}, radius_max_frac={self.radius_max_frac}")
        if self.radius_max_frac >= 0.5:
            raise ConfigError(
                f"PhysicsConfig.radius_max_frac={self.radius_max_frac} must be < 0.5: a well must "
                "fit inside the box")
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ConfigError(f"PhysicsConfig.max_overlap={self.max_overlap} must lie in [0, 1]")
        if not 0.0 < self.max_well_area <= 1.0:
            raise ConfigError(f"PhysicsConfig.max_well_area={self.max_well_area} must lie in (0, 1]")

    @property
    def h_nm(self) -> float:
        """Pixel size h = L/grid in nm."""
        return self.length_nm / self.grid

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | PhysicsConfig) -> PhysicsConfig:
        """The one way to build a PhysicsConfig: from a plain or OmegaConf mapping (a Hydra `physics`
        group; interpolations resolved, unknown fields rejected by name) or an existing one.

        Integers given for float fields become floats, so `length_nm=30` and `30.0` are one config
        (equal, with equal data-set hashes).
        """
        if isinstance(values, PhysicsConfig):
            return values
        fields = {f.name: f for f in dataclasses.fields(cls)}
        data = {k: v for k, v in dict(values).items() if k != "_target_"}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"PhysicsConfig has no field(s) {unknown}; known fields: {sorted(fields)}")
        for name, value in data.items():
            if isinstance(fields[name].default, float) and isinstance(value, int) and not isinstance(value, bool):
                data[name] = float(value)
        return cls(**data)


def diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every leaf where two nested dicts differ."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff(a, b, f"{prefix}{key}.")
        elif a != b or type(a) is not type(b):
            out.append((f"{prefix}{key}", a, b))
    return out


def describe(differences: list[tuple[str, Any, Any]], old: str, new: str) -> str:
    """'field: <old> a, <new> b; …' — one line naming every difference found by `diff`."""
    return "; ".join(f"{k}: {old} {a!r}, {new} {b!r}" for k, a, b in differences)


def _positive(cfg: PhysicsConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"PhysicsConfig.{name} must be a number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"PhysicsConfig.{name} must be a positive finite number, got {value}")


def _positive_int(cfg: PhysicsConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"PhysicsConfig.{name} must be a positive integer, got {value!r}")
