"""Potential families: which kind of confinement a data set's maps show, chosen by config (`conf/potential/`).

`paper` is §II's random wells (physics/potentials.py, parameters in PhysicsConfig); `gates`, `parabolic`,
`double_dot` are smooth device-like landscapes (physics/shapes.py), `disordered` adds a Gaussian random
field to one of those, `mix` draws each instance's family by weight. Every map is V = v_well_ev + landscape
clipped to [v_well_ev, v_step_ev] (the paper's value range), float64 (grid, grid), and depends only on the
instance's generator, so instance k stays a function of (seed, k, config). Parameters are ranges
[lo, hi] drawn uniformly (counts: integers, both ends included); docs/physics.md explains each choice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physics.config import ConfigError, PhysicsConfig
from physics.constants import HBAR2_OVER_2ME_EV_NM2
from physics.potentials import check_feasible, random_potential
from physics.shapes import Drawn, draw, landscape

__all__ = ["FAMILIES", "PAPER", "DisorderedSpec", "DoubleDotSpec", "Drawn", "GatesSpec", "MixSpec", "PaperSpec",
           "ParabolicSpec", "Spec", "check", "draw", "from_mapping", "landscape", "produces", "random_potential_of",
           "to_dict"]

FAMILIES = ("paper", "gates", "parabolic", "double_dot", "disordered")
"""Families an instance can have; the position is the uint8 code of the shards' `family` field."""


def _range(spec: Any, name: str, lo: float, hi: float, unit: str, integer: bool = False) -> None:
    """Normalise field `name` to a (lo, hi) tuple inside [lo, hi]; ConfigError names field, value and range."""
    value = getattr(spec, name)
    kind = "integers" if integer else "numbers"
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(
        not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) for v in value)
    if ok:
        a, b = (int(v) if integer else float(v) for v in value)
        ok = math.isfinite(a) and math.isfinite(b) and lo <= a <= b <= hi
    if not ok:
        raise ConfigError(f"{type(spec).__name__}.{name}={_plain(value)!r}: expected [min, max], two {kind} with "
                          f"{lo} <= min <= max <= {hi} ({unit})")
    object.__setattr__(spec, name, (a, b))


def _plain(value: Any) -> Any:
    """Lists and tuples (also OmegaConf's ListConfig) as a list, for messages."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def _number(spec: Any, name: str, lo: float, hi: float, unit: str) -> None:
    """Normalise field `name` to a float inside [lo, hi]; ConfigError names field, value and range."""
    value = getattr(spec, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"{type(spec).__name__}.{name}={value!r}: expected a number in [{lo}, {hi}] ({unit})")
    object.__setattr__(spec, name, float(value))


@dataclass(frozen=True)
class PaperSpec:
    """Paper §II: connected random flat wells; its parameters stay in PhysicsConfig (n_wells, radii, ...)."""

    family: ClassVar[str] = "paper"


@dataclass(frozen=True)
class GatesSpec:
    """Gate landscape: elliptic Gaussian dips (plunger gates), bumps (barrier gates), a tilt; lowest pixel at 0."""

    family: ClassVar[str] = "gates"
    n_dips: tuple[int, int] = (1, 3)
    dip_depth_ev: tuple[float, float] = (0.1, 0.4)
    dip_sigma_nm: tuple[float, float] = (3.5, 7.0)
    n_bumps: tuple[int, int] = (0, 2)
    bump_height_ev: tuple[float, float] = (0.05, 0.2)
    bump_sigma_nm: tuple[float, float] = (2.0, 4.0)
    margin_nm: float = 7.0
    tilt_ev_per_nm: tuple[float, float] = (0.0, 0.005)

    def __post_init__(self) -> None:
        _range(self, "n_dips", 1, 16, "count", integer=True)
        _range(self, "n_bumps", 0, 16, "count", integer=True)
        for name in ("dip_depth_ev", "bump_height_ev"):
            _range(self, name, 0.0, 10.0, "eV")
        for name in ("dip_sigma_nm", "bump_sigma_nm"):
            _range(self, name, 1e-3, 1e3, "nm")
        _number(self, "margin_nm", 0.0, 1e3, "nm")
        _range(self, "tilt_ev_per_nm", 0.0, 1.0, "eV/nm")


@dataclass(frozen=True)
class ParabolicSpec:
    """Elliptic harmonic dot ½m*(ω_x²u² + ω_y²v²), axes turned by the angle, centre near the box centre."""

    family: ClassVar[str] = "parabolic"
    hbar_omega_x_mev: tuple[float, float] = (40.0, 120.0)
    hbar_omega_y_mev: tuple[float, float] = (40.0, 120.0)
    angle_deg: tuple[float, float] = (0.0, 180.0)
    centre_offset_nm: float = 2.0

    def __post_init__(self) -> None:
        _range(self, "hbar_omega_x_mev", 1e-3, 1e4, "meV")
        _range(self, "hbar_omega_y_mev", 1e-3, 1e4, "meV")
        _range(self, "angle_deg", -360.0, 360.0, "degrees")
        _number(self, "centre_offset_nm", 0.0, 1e3, "nm")


@dataclass(frozen=True)
class DoubleDotSpec:
    """Two dots `separation_nm` apart, barrier `barrier_ev` above their mean, detuning V(+a) − V(−a), each dot
    confined by ħω_dot along the axis (outer side) and ħω_⊥ across it (shapes.double_well)."""

    family: ClassVar[str] = "double_dot"
    separation_nm: tuple[float, float] = (8.0, 12.0)
    barrier_ev: tuple[float, float] = (0.03, 0.25)
    detuning_ev: tuple[float, float] = (-0.035, 0.035)
    hbar_omega_dot_mev: tuple[float, float] = (60.0, 100.0)
    hbar_omega_perp_mev: tuple[float, float] = (50.0, 100.0)
    angle_deg: tuple[float, float] = (0.0, 180.0)
    centre_offset_nm: float = 1.0

    def __post_init__(self) -> None:
        _range(self, "separation_nm", 1e-3, 1e3, "nm")
        _range(self, "barrier_ev", 1e-4, 10.0, "eV")
        _range(self, "detuning_ev", -10.0, 10.0, "eV")
        _range(self, "hbar_omega_dot_mev", 1e-3, 1e4, "meV")
        _range(self, "hbar_omega_perp_mev", 1e-3, 1e4, "meV")
        _range(self, "angle_deg", -360.0, 360.0, "degrees")
        _number(self, "centre_offset_nm", 0.0, 1e3, "nm")
        limit = 4.0 / 3.0 * self.barrier_ev[0]
        if max(abs(e) for e in self.detuning_ev) >= limit:
            raise ConfigError(f"DoubleDotSpec.detuning_ev={list(self.detuning_ev)}: expected |detuning| < 4/3 of the "
                              f"lowest barrier_ev ({self.barrier_ev[0]}), i.e. < {limit:.4g} eV, so that each dot "
                              "stays a minimum and the barrier top stays between them")


@dataclass(frozen=True)
class DisorderedSpec:
    """`base` family plus a Gaussian random field: correlation length ξ (nm), standard deviation A (eV)."""

    family: ClassVar[str] = "disordered"
    base: Spec = field(default_factory=lambda: ParabolicSpec())
    correlation_nm: float = 3.0
    amplitude_ev: float = 0.03

    def __post_init__(self) -> None:
        if self.base.family in ("disordered", "mix"):
            raise ConfigError(f"DisorderedSpec.base.family={self.base.family!r}: expected one of "
                              f"{list(FAMILIES[:4])} (disorder is added once, to a single family)")
        _number(self, "correlation_nm", 1e-3, 1e3, "nm")
        _number(self, "amplitude_ev", 0.0, 10.0, "eV")


@dataclass(frozen=True)
class MixSpec:
    """Each instance's family drawn with probability weight/Σweights from the instance's own generator.

    `components` holds one spec per family of positive weight (the defaults of conf/potential/<family>.yaml
    unless given); `weights` is one (family, weight) pair per family of FAMILIES, in that order.
    """

    family: ClassVar[str] = "mix"
    weights: tuple[tuple[str, float], ...] = tuple((f, 0.2) for f in FAMILIES)
    components: tuple[Spec, ...] = ()

    def __post_init__(self) -> None:
        given = dict(self.weights)
        unknown = sorted(set(given) - set(FAMILIES))
        bad = [f for f, w in given.items() if isinstance(w, bool) or not isinstance(w, (int, float))
               or not (math.isfinite(w) and w >= 0)]
        if unknown or bad or sum(given.values()) <= 0:
            got = (f"weights.{unknown[0]} is not a family" if unknown else f"weights.{bad[0]}={given[bad[0]]!r}" if bad
                   else "every weight is 0")
            raise ConfigError(f"MixSpec.weights={given!r}: expected non-negative finite weights, not all 0, for "
                              f"families among {list(FAMILIES)}; {got}")
        weights = tuple((f, float(given.get(f, 0.0))) for f in FAMILIES)
        specs = {c.family: c for c in self.components}
        if len(specs) != len(self.components) or set(specs) - set(given):
            raise ConfigError(f"MixSpec.components={sorted(c.family for c in self.components)}: expected at most one "
                              f"spec per family listed in weights {sorted(given)}")
        object.__setattr__(self, "weights", weights)
        parts = tuple(specs[f] if f in specs else _CLASSES[f]() for f, w in weights if w > 0)
        object.__setattr__(self, "components", parts)


Spec = PaperSpec | GatesSpec | ParabolicSpec | DoubleDotSpec | DisorderedSpec | MixSpec
_CLASSES: dict[str, type] = {c.family: c for c in (PaperSpec, GatesSpec, ParabolicSpec, DoubleDotSpec,
                                                    DisorderedSpec, MixSpec)}
PAPER = PaperSpec()


def to_dict(spec: Spec) -> dict[str, Any]:
    """Canonical plain form (every field, defaults filled; ranges as lists): what the manifest records."""
    out: dict[str, Any] = {"family": spec.family}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name == "base":
            value = to_dict(value)
        elif f.name == "weights":
            value = dict(value)
        elif f.name == "components":
            value = {c.family: to_dict(c) for c in value}
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_mapping(values: Mapping[str, Any] | Spec | None, path: str = "potential") -> Spec:
    """The one way to build a spec: from a Hydra `potential` group (plain or OmegaConf mapping), a spec, or None
    (the paper's). ConfigError names `path`, the field and what is allowed."""
    if values is None:
        return PAPER
    if isinstance(values, tuple(_CLASSES.values())):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}={_plain(values)!r}: expected a family's parameters, a mapping with family: one of "
                          f"{list(_CLASSES)}")
    data = dict(values)
    name = data.pop("family", None)
    if not isinstance(name, str) or name not in _CLASSES:
        raise ConfigError(f"{path}.family={name!r} is not a potential family; expected one of {list(_CLASSES)}")
    cls = _CLASSES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: family {name!r} has no parameter(s) {unknown}; known: {sorted(known)}")
    if "base" in data:
        data["base"] = from_mapping(data["base"], f"{path}.base")
    if "weights" in data:
        if not isinstance(data["weights"], Mapping):
            raise ConfigError(f"{path}.weights={data['weights']!r}: expected a mapping family -> weight")
        data["weights"] = tuple(dict(data["weights"]).items())
    if "components" in data:
        parts = data["components"] or {}
        if not isinstance(parts, Mapping) or not all(c is None or isinstance(c, Mapping) for c in parts.values()):
            raise ConfigError(f"{path}.components={_plain(parts)!r}: expected a mapping family -> its parameters")
        for f, c in parts.items():
            if c and dict(c).get("family", f) != f:
                raise ConfigError(f"{path}.components.{f}.family={dict(c)['family']!r}: expected {f!r}")
        data["components"] = tuple(from_mapping({**dict(c or {}), "family": f}, f"{path}.components.{f}")
                                   for f, c in parts.items())
    try:
        return cls(**data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def check(spec: Spec, cfg: PhysicsConfig, path: str = "potential") -> None:
    """Refuse specs that cannot work with this box and grid, before any map is drawn (ConfigError naming
    `path`, the field, its value and the limit)."""
    half, h = cfg.length_nm / 2.0, cfg.h_nm
    if spec.family != "paper" and not cfg.v_step_ev > cfg.v_well_ev:
        raise ConfigError(f"{path}: family {spec.family!r} clips maps to [v_well_ev, v_step_ev]: expected "
                          f"v_step_ev > v_well_ev, got {cfg.v_step_ev} and {cfg.v_well_ev}")
    problems = []
    if isinstance(spec, PaperSpec):
        check_feasible(cfg)
    elif isinstance(spec, GatesSpec):
        problems += [f"margin_nm={spec.margin_nm} must be < L/2 = {half} nm"] * (spec.margin_nm >= half)
        problems += [f"{n}={list(getattr(spec, n))} must be >= the pixel size h = {h:.4g} nm (else unresolved)"
                     for n in ("dip_sigma_nm", "bump_sigma_nm") if getattr(spec, n)[0] < h]
    elif isinstance(spec, ParabolicSpec):  # oscillator length ℓ = (ħ²/m*ħω)^½ of the softest axis
        soft = min(spec.hbar_omega_x_mev[0], spec.hbar_omega_y_mev[0])
        ell = math.sqrt(2.0 * HBAR2_OVER_2ME_EV_NM2 / cfg.m_eff / (1e-3 * soft))
        problems += [f"hbar_omega_x_mev/hbar_omega_y_mev down to {soft} meV: oscillator length ℓ = {ell:.3g} nm, "
                     f"2ℓ + centre_offset_nm = {2 * ell + spec.centre_offset_nm:.3g} nm must be <= L/2 = {half} nm, "
                     "else the box walls, not the parabola, confine the electrons"] * (
            2 * ell + spec.centre_offset_nm > half)
    elif isinstance(spec, DoubleDotSpec):
        reach = spec.separation_nm[1] / 2.0 + spec.centre_offset_nm
        problems += [f"separation_nm/2 + centre_offset_nm = {reach} must be < L/2 = {half} nm (both dots in the "
                     "box)"] * (reach >= half)
        problems += [f"separation_nm={list(spec.separation_nm)} must be >= 2h = {2 * h:.4g} nm"] * (
            spec.separation_nm[0] < 2 * h)
    elif isinstance(spec, DisorderedSpec):
        check(spec.base, cfg, f"{path}.base")
        if not h <= spec.correlation_nm <= half / 2.0:
            problems.append(f"correlation_nm={spec.correlation_nm} must lie in [h, L/4] = [{h:.4g}, {half / 2}] nm "
                            "(resolved by the grid, no wrap-around)")
    else:
        for c in spec.components:
            check(c, cfg, f"{path}.components.{c.family}")
    if problems:
        raise ConfigError(f"{path}: {type(spec).__name__}.{problems[0]}")


def produces(spec: Spec) -> tuple[str, ...]:
    """The instance families `spec` can draw, in FAMILIES order (a mix: those of positive weight)."""
    if isinstance(spec, MixSpec):
        return tuple(f for f, w in spec.weights if w > 0)
    return (spec.family,)


def random_potential_of(rng: np.random.Generator, cfg: PhysicsConfig, spec: Spec) -> tuple[np.ndarray, str]:
    """One map V(x, y) (eV, (grid, grid) float64) of family `spec` and the family it was drawn from.

    `paper` is exactly `potentials.random_potential(rng, cfg)`, so existing data sets are unchanged.
    """
    if isinstance(spec, PaperSpec):
        return random_potential(rng, cfg), "paper"
    drawn = draw(rng, cfg, spec)
    return drawn.potential, drawn.family
