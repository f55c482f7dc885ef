"""Smooth confinement landscapes of the potential families (physics/families.py), from drawn parameters.

Every function evaluates at arbitrary points (x, y) in nm (arrays of any equal shape), so tests can check
a family's geometry off the grid; `grid_xy` gives the solver grid (cell-centred, pixel (i, j) at
((i + ½)h, (j + ½)h), axis 0 = x). Energies are in eV relative to `v_well_ev`, unclipped: the family
adds `v_well_ev` and clips to [v_well_ev, v_step_ev]. The `draw_*` functions draw one instance's
parameters from the instance's generator, each uniform in its range of the family's spec; `draw` makes the
whole instance of any spec of physics/families.py (typed Any here: families imports this module, not the
reverse), read by attribute and dispatched on `spec.family`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from physics.config import PhysicsConfig
from physics.constants import HBAR2_OVER_2ME_EV_NM2
from physics.potentials import random_potential

__all__ = ["DRAWS", "Drawn", "double_well", "draw", "draw_double_dot", "draw_gates", "draw_parabolic",
           "gates_landscape", "gaussian_random_field", "gaussians", "grid_xy", "landscape", "parabola", "rotate",
           "spring_ev_nm2"]


def grid_xy(cfg: PhysicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """x and y (nm) of every pixel centre, each (grid, grid): X[i, j] = (i + ½)h, Y[i, j] = (j + ½)h."""
    x = (np.arange(cfg.grid) + 0.5) * cfg.h_nm
    return np.meshgrid(x, x, indexing="ij")


def spring_ev_nm2(hbar_omega_ev: np.ndarray | float, m_eff: float) -> np.ndarray | float:
    """m*ω² in eV/nm² for ħω in eV, so that ½ m*ω² u² is the harmonic potential (eV) at distance u (nm)."""
    return np.square(hbar_omega_ev) * m_eff / (2.0 * HBAR2_OVER_2ME_EV_NM2)


def rotate(x: np.ndarray, y: np.ndarray, centre: np.ndarray, angle_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) in nm along and across the direction `angle_rad` (from +x), origin at `centre`."""
    dx, dy = x - centre[0], y - centre[1]
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return c * dx + s * dy, -s * dx + c * dy


def gaussians(x: np.ndarray, y: np.ndarray, centres: np.ndarray, sigmas: np.ndarray, angles: np.ndarray,
              amplitudes: np.ndarray) -> np.ndarray:
    """Σ_k A_k exp(−u_k²/2σ_u,k² − v_k²/2σ_v,k²): elliptic Gaussians (eV), axes (σ_u, σ_v) nm, turned by angles.

    `centres` (k, 2) and `sigmas` (k, 2) in nm, `angles` (k,) in rad, `amplitudes` (k,) in eV; all k terms at
    once over a trailing axis (no loop over terms or points).
    """
    if len(amplitudes) == 0:
        return np.zeros(np.shape(x))
    dx, dy = x[..., None] - centres[:, 0], y[..., None] - centres[:, 1]
    c, s = np.cos(angles), np.sin(angles)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.exp(-0.5 * ((u / sigmas[:, 0]) ** 2 + (v / sigmas[:, 1]) ** 2)) @ amplitudes


def gates_landscape(x: np.ndarray, y: np.ndarray, p: Mapping[str, Any], length_nm: float) -> np.ndarray:
    """−dips + bumps + tilt·(r − box centre): the smooth landscape under metallic gates (eV, not yet shifted)."""
    dips = gaussians(x, y, p["dip_centres_nm"], p["dip_sigmas_nm"], p["dip_angles_rad"], -p["dip_depths_ev"])
    bumps = gaussians(x, y, p["bump_centres_nm"], p["bump_sigmas_nm"], p["bump_angles_rad"], p["bump_heights_ev"])
    gx, gy = p["tilt_ev_per_nm"] * np.cos(p["tilt_angle_rad"]), p["tilt_ev_per_nm"] * np.sin(p["tilt_angle_rad"])
    return dips + bumps + gx * (x - length_nm / 2) + gy * (y - length_nm / 2)


def parabola(x: np.ndarray, y: np.ndarray, p: Mapping[str, Any], m_eff: float) -> np.ndarray:
    """½ m* (ω_x² u² + ω_y² v²) in eV: elliptic harmonic dot, axes turned by `angle_rad`, minimum 0 at `centre_nm`."""
    u, v = rotate(x, y, p["centre_nm"], p["angle_rad"])
    kx = spring_ev_nm2(p["hbar_omega_x_mev"] * 1e-3, m_eff)
    ky = spring_ev_nm2(p["hbar_omega_y_mev"] * 1e-3, m_eff)
    return 0.5 * (kx * u * u + ky * v * v)


def double_well(x: np.ndarray, y: np.ndarray, p: Mapping[str, Any], m_eff: float) -> np.ndarray:
    """Two dots at u = ±a (a = separation/2) along `angle_rad` through `centre_nm` (eV).

    Along the axis, with t = u/a: between the dots a quartic barrier V_b (t² − 1)², outside them harmonic
    walls ½ m*ω_u² (|u| − a)² (each dot's own confinement, independent of the barrier); across the axis
    ½ m*ω_⊥² v². The two pieces meet at t = ±1 with value and slope 0 (V is C¹). The detuning adds ε s(t),
    s(t) = sign(t)·(3τ² − 2τ³)/2 with τ = min(|t|, 1): odd, flat at t = 0 and t = ±1 and ±½ beyond, so the
    minima stay at t = ±1 with values 0 and |ε| (V(+a) − V(−a) = ε) and the barrier top stays at t = 0, V_b
    above the mean of the two minima. For |ε| < 4V_b/3 (checked by the spec) V rises monotonically from each
    minimum to the top.
    """
    u, v = rotate(x, y, p["centre_nm"], p["angle_rad"])
    a = 0.5 * p["separation_nm"]
    t = u / a
    tau = np.minimum(np.abs(t), 1.0)
    step = np.sign(t) * (3.0 * tau**2 - 2.0 * tau**3) / 2.0
    eps, vb = p["detuning_ev"], p["barrier_ev"]
    outer = 0.5 * spring_ev_nm2(p["hbar_omega_dot_mev"] * 1e-3, m_eff) * (np.abs(u) - a) ** 2
    along = np.where(np.abs(t) <= 1.0, vb * (t * t - 1.0) ** 2, outer)
    perp = 0.5 * spring_ev_nm2(p["hbar_omega_perp_mev"] * 1e-3, m_eff) * v * v
    return abs(eps) / 2.0 + along + eps * step + perp


def gaussian_random_field(rng: np.random.Generator, grid: int, h_nm: float, correlation_nm: float,
                          amplitude_ev: float) -> np.ndarray:
    """A stationary Gaussian random field (eV) on the grid: mean 0, covariance A² exp(−r²/2ξ²).

    White noise on a (2·grid)² periodic grid is filtered in Fourier space by exp(−k²ξ²/4) (the square root
    of the spectrum of that covariance) and the first grid × grid block is kept, so the map has no
    periodic wrap-around (images are ≥ L apart, correlation e^{−L²/2ξ²} ≈ 0 for ξ ≤ L/4). The field is
    scaled by its exact standard deviation, mean(|filter|²)^½, not the sample one: every map is a true
    draw of the field, with pointwise standard deviation A.
    """
    size = 2 * grid
    k = 2.0 * np.pi * np.fft.fftfreq(size, d=h_nm)
    kr = 2.0 * np.pi * np.fft.rfftfreq(size, d=h_nm)
    filt = np.exp(-(k[:, None] ** 2 + kr[None, :] ** 2) * correlation_nm**2 / 4.0)
    full = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) * correlation_nm**2 / 2.0)  # |filter|² on the full grid
    noise = rng.standard_normal((size, size))
    field = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(size, size))[:grid, :grid]
    return field * (amplitude_ev / np.sqrt(full.mean()))


# --- drawing the parameters of one instance (uniform in each range of the family's spec) ---------------


def _uniform(rng: np.random.Generator, span: tuple[float, float], size: int | tuple[int, ...] | None = None) -> Any:
    """Uniform in [min, max] (a zero-width range gives its value)."""
    return rng.uniform(span[0], span[1], size)


def _centre(rng: np.random.Generator, cfg: PhysicsConfig, offset_nm: float) -> np.ndarray:
    return cfg.length_nm / 2.0 + rng.uniform(-offset_nm, offset_nm, 2)


def draw_gates(rng: np.random.Generator, cfg: PhysicsConfig, spec: Any) -> dict[str, Any]:
    """Counts, centres in [margin, L − margin]² (nm), widths (nm), orientations (rad), depths/heights (eV), tilt."""
    n_dips = int(rng.integers(spec.n_dips[0], spec.n_dips[1] + 1))
    n_bumps = int(rng.integers(spec.n_bumps[0], spec.n_bumps[1] + 1))
    lo, hi = spec.margin_nm, cfg.length_nm - spec.margin_nm
    return {
        "dip_centres_nm": rng.uniform(lo, hi, (n_dips, 2)),
        "dip_sigmas_nm": _uniform(rng, spec.dip_sigma_nm, (n_dips, 2)),
        "dip_angles_rad": rng.uniform(0.0, np.pi, n_dips),
        "dip_depths_ev": _uniform(rng, spec.dip_depth_ev, n_dips),
        "bump_centres_nm": rng.uniform(lo, hi, (n_bumps, 2)),
        "bump_sigmas_nm": _uniform(rng, spec.bump_sigma_nm, (n_bumps, 2)),
        "bump_angles_rad": rng.uniform(0.0, np.pi, n_bumps),
        "bump_heights_ev": _uniform(rng, spec.bump_height_ev, n_bumps),
        "tilt_ev_per_nm": float(_uniform(rng, spec.tilt_ev_per_nm)),
        "tilt_angle_rad": float(rng.uniform(0.0, 2.0 * np.pi)),
    }


def draw_parabolic(rng: np.random.Generator, cfg: PhysicsConfig, spec: Any) -> dict[str, Any]:
    """ħω_x, ħω_y (meV), orientation (rad) and centre (nm) of one elliptic dot."""
    return {"hbar_omega_x_mev": float(_uniform(rng, spec.hbar_omega_x_mev)),
            "hbar_omega_y_mev": float(_uniform(rng, spec.hbar_omega_y_mev)),
            "angle_rad": float(np.deg2rad(_uniform(rng, spec.angle_deg))),
            "centre_nm": _centre(rng, cfg, spec.centre_offset_nm)}


def draw_double_dot(rng: np.random.Generator, cfg: PhysicsConfig, spec: Any) -> dict[str, Any]:
    """Separation (nm), barrier and detuning (eV), ħω_dot and ħω_⊥ (meV), axis direction (rad), midpoint (nm)."""
    return {"separation_nm": float(_uniform(rng, spec.separation_nm)),
            "barrier_ev": float(_uniform(rng, spec.barrier_ev)),
            "detuning_ev": float(_uniform(rng, spec.detuning_ev)),
            "hbar_omega_dot_mev": float(_uniform(rng, spec.hbar_omega_dot_mev)),
            "hbar_omega_perp_mev": float(_uniform(rng, spec.hbar_omega_perp_mev)),
            "angle_rad": float(np.deg2rad(_uniform(rng, spec.angle_deg))),
            "centre_nm": _centre(rng, cfg, spec.centre_offset_nm)}


DRAWS = {"gates": draw_gates, "parabolic": draw_parabolic, "double_dot": draw_double_dot}


@dataclass(frozen=True)
class Drawn:
    """One drawn instance: its family, the drawn parameters (nm, eV, meV, rad) and the map V (eV, float64)."""

    family: str
    params: dict[str, Any]
    potential: np.ndarray


def draw(rng: np.random.Generator, cfg: PhysicsConfig, spec: Any) -> Drawn:
    """Draw one instance of `spec` (see `Drawn`): the parameters the maps' geometry tests read back."""
    if spec.family == "mix":
        p = np.array([w for _, w in spec.weights if w > 0])  # components are in this order
        pick = min(int(np.searchsorted(np.cumsum(p / p.sum()), rng.random(), side="right")), len(p) - 1)
        return draw(rng, cfg, spec.components[pick])
    if spec.family == "paper":
        return Drawn("paper", {}, random_potential(rng, cfg))
    if spec.family == "disordered":
        base = draw(rng, cfg, spec.base)
        noise = gaussian_random_field(rng, cfg.grid, cfg.h_nm, spec.correlation_nm, spec.amplitude_ev)
        v = base.potential + noise
        v += cfg.v_well_ev - v.min()  # the lowest pixel back at v_well_ev, as in every family
        return Drawn("disordered", {"base": base, "field_ev": noise}, np.clip(v, cfg.v_well_ev, cfg.v_step_ev))
    params = DRAWS[spec.family](rng, cfg, spec)
    v = landscape(*grid_xy(cfg), spec.family, params, cfg)
    if spec.family == "gates":  # no analytic minimum: the lowest pixel sits at v_well_ev
        v -= v.min()
    return Drawn(spec.family, params, np.clip(cfg.v_well_ev + v, cfg.v_well_ev, cfg.v_step_ev))


def landscape(x: np.ndarray, y: np.ndarray, family: str, params: Mapping[str, Any], cfg: PhysicsConfig) -> np.ndarray:
    """Unclipped landscape (eV above v_well_ev) of a drawn smooth instance at points (x, y) in nm."""
    if family == "gates":
        return gates_landscape(x, y, params, cfg.length_nm)
    if family == "parabolic":
        return parabola(x, y, params, cfg.m_eff)
    if family == "double_dot":
        return double_well(x, y, params, cfg.m_eff)
    raise ValueError(f"family {family!r} has no smooth landscape; expected gates, parabolic or double_dot")
