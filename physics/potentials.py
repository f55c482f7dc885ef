"""Random connected quantum-well potentials V(x, y) (paper §II).

A map starts as a flat step `v_step_ev` (eV) over the L×L box (L = `length_nm`, nm). `n_wells` flat
circular wells of depth `v_well_ev` are placed one after another: centre uniform in [0, L]², radius
uniform in (`radius_min_frac`·L, `radius_max_frac`·L). Each new well must overlap the previous one
(lens area > 0) by at most `max_overlap` of its own area, else it is redrawn. A finished map whose
wells cover more than `max_well_area` of the box (counted on the pixel grid) is discarded and
generation restarts from the first well. The chain of overlaps makes the union of wells connected.

Grid convention (shared with the solver): cell-centred pixels, pixel (i, j) sits at
((i + ½)h, (j + ½)h) with h = L/grid = `cfg.h_nm`; array axis 0 is x, axis 1 is y.
"""

from __future__ import annotations

import math

import numpy as np

from physics.config import ConfigError, PhysicsConfig

__all__ = ["check_feasible", "lens_area", "max_wells", "min_well_fraction", "random_potential", "random_wells",
           "rasterize", "well_mask"]

_BATCH = 64
"""Candidate wells drawn per vectorized batch; the first admissible one in draw order is kept,
which is statistically identical to one-at-a-time rejection sampling."""

_MASK_ELEMENTS = 1 << 22
"""Well × pixel distances computed at once by `well_mask` (32 MiB of float64): memory per map stays flat
in n_wells (all at once took n_wells·grid²·9 bytes, 3.7 GB for n_wells = 10^5 on the 64² grid)."""


def lens_area(r1: np.ndarray | float, r2: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
    """Analytic intersection area (nm²) of two discs of radii r1, r2 (nm) whose centres are d (nm) apart.

    Broadcasts over its arguments. Returns 0 for disjoint or tangent discs, π·min(r1, r2)² when one
    disc contains the other, and the circle–circle lens area otherwise. Used for the §II overlap rule.
    """
    r1, r2, d = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (r1, r2, d)))
    area = np.zeros(r1.shape, dtype=np.float64)
    small = np.minimum(r1, r2)
    inside = d <= np.abs(r1 - r2)
    area[inside] = np.pi * small[inside] ** 2
    part = ~inside & (d < r1 + r2)
    if np.any(part):
        a, b, s = r1[part], r2[part], d[part]
        cos_a = np.clip((s * s + a * a - b * b) / (2.0 * s * a), -1.0, 1.0)
        cos_b = np.clip((s * s + b * b - a * a) / (2.0 * s * b), -1.0, 1.0)
        kite = (-s + a + b) * (s + a - b) * (s - a + b) * (s + a + b)
        lens = a * a * np.arccos(cos_a) + b * b * np.arccos(cos_b) - 0.5 * np.sqrt(np.maximum(kite, 0.0))
        area[part] = np.clip(lens, 0.0, np.pi * small[part] ** 2)
    return area


def well_mask(centres: np.ndarray, radii: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """Boolean (grid, grid) map of pixels whose centre lies in any well (closed discs, nm units).

    Pixel (i, j) is at ((i + ½)h, (j + ½)h), axis 0 = x (paper §II maps on the solver grid).
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    if centres.shape[0] != radii.shape[0]:
        raise ValueError(f"centres has {centres.shape[0]} rows but radii has {radii.shape[0]} entries")
    x = (np.arange(cfg.grid) + 0.5) * cfg.h_nm
    dx2 = (x[None, :] - centres[:, 0:1]) ** 2  # (n_wells, grid) along x
    dy2 = (x[None, :] - centres[:, 1:2]) ** 2  # (n_wells, grid) along y
    r2 = radii**2
    mask = np.zeros((cfg.grid, cfg.grid), dtype=bool)
    step = max(1, _MASK_ELEMENTS // cfg.grid**2)  # wells per block; the paper's 25 on 64² are one block
    for k in range(0, len(radii), step):
        b = slice(k, k + step)
        mask |= (dx2[b, :, None] + dy2[b, None, :] <= r2[b, None, None]).any(axis=0)
    return mask


def rasterize(centres: np.ndarray, radii: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """Potential (eV, float64, grid×grid): `v_well_ev` inside any well, `v_step_ev` elsewhere (paper §II).

    `centres` (n_wells, 2) and `radii` (n_wells,) are in nm; see `well_mask` for the grid convention.
    """
    return _potential_from_mask(well_mask(centres, radii, cfg), cfg)


def random_wells(rng: np.random.Generator, cfg: PhysicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n_wells, 2) and radii (n_wells,), both nm, of one accepted well chain (paper §II).

    Raises ConfigError for parameters that can never be satisfied and RuntimeError when
    `cfg.max_redraws` (per well) or `cfg.max_restarts` (per map) is exhausted.
    """
    centres, radii, _ = _accepted_wells(rng, cfg)
    return centres, radii


def random_potential(rng: np.random.Generator, cfg: PhysicsConfig) -> np.ndarray:
    """One random potential map V(x, y) in eV, shape (grid, grid), float64, following paper §II."""
    _, _, mask = _accepted_wells(rng, cfg)
    return _potential_from_mask(mask, cfg)


def min_well_fraction(cfg: PhysicsConfig) -> float:
    """Rigorous lower bound on the pixel-counted well-area fraction of any map (paper §II check).

    A centre in the box keeps a full quadrant of its disc inside the box (radius < L/2), and pixels
    whose centres lie in a disc of radius r cover that disc shrunk by h/√2, so at least
    π·(r_min − h/√2)²/4 of the L² area is counted as well.
    """
    r_eff = max(cfg.radius_min_frac * cfg.length_nm - cfg.h_nm / math.sqrt(2.0), 0.0)
    return math.pi * r_eff**2 / 4.0 / cfg.length_nm**2


def max_wells(cfg: PhysicsConfig) -> int | None:
    """Largest n_wells for which the §II area rule can still accept maps (None: no limit).

    Every well after the first overlaps its predecessor by at most `max_overlap` of its own area, so
    it adds at least a = (1 − max_overlap)·π·R_min² of area outside it, and its centre is uniform over
    the box. Pieces of area a at random places leave E[U] ≈ exp(−(n − 1)·a/L²) of the box uncovered
    (Boolean model; the pixel-counted fraction has the same expectation). Real chains cover far more
    (paper geometry, measured: mean uncovered 0.33 at n = 100 where this gives 0.74; no accepted map in
    300 tries at n = 400), so it overstates U. A map is accepted only if U ≥ 1 − max_well_area, which
    by Markov's inequality has probability at most E[U]/(1 − max_well_area); when that times the
    max_restarts + 1 tries per map is below 1, no map is expected to be accepted at all, and each
    instance would first spend (max_restarts + 1) chains of n_wells draws (hours at n_wells = 10^5).
    Paper values: 2777 (the paper uses 25).
    """
    if cfg.max_overlap >= 1.0 or cfg.max_well_area >= 1.0:
        return None
    new_area = (1.0 - cfg.max_overlap) * math.pi * (cfg.radius_min_frac * cfg.length_nm) ** 2 / cfg.length_nm**2
    return 1 + math.floor(math.log((cfg.max_restarts + 1) / (1.0 - cfg.max_well_area)) / new_area)


def check_feasible(cfg: PhysicsConfig) -> None:
    """Refuse §II parameters that no amount of redrawing can satisfy, before any map is drawn.

    ConfigError names the field, its value and the limit (see `min_well_fraction`, `max_wells`).
    """
    if cfg.n_wells > 1 and cfg.max_overlap <= 0.0:
        raise ConfigError(
            f"PhysicsConfig.max_overlap={cfg.max_overlap} must be > 0 when n_wells={cfg.n_wells} > 1: "
            "each new well must overlap the previous one with positive area (paper §II)")
    bound = min_well_fraction(cfg)
    if bound > cfg.max_well_area:
        raise ConfigError(
            f"PhysicsConfig.max_well_area={cfg.max_well_area} is below {bound:.4g}, the smallest "
            f"well-area fraction one well of radius radius_min_frac·L="
            f"{cfg.radius_min_frac * cfg.length_nm:.4g} nm can cover on a grid={cfg.grid} map; "
            "every map would be discarded")
    limit = max_wells(cfg)
    if limit is not None and cfg.n_wells > limit:
        raise ConfigError(
            f"PhysicsConfig.n_wells={cfg.n_wells} exceeds {limit}, the most wells whose chain can stay within "
            f"max_well_area={cfg.max_well_area} of the box in max_restarts={cfg.max_restarts} restarts "
            f"(each well adds at least (1 - max_overlap)·π·R_min² of new area, paper §II): every map would "
            "be discarded after hours of drawing; use fewer or smaller-overlapping wells")


def _potential_from_mask(mask: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    return np.where(mask, np.float64(cfg.v_well_ev), np.float64(cfg.v_step_ev))


def _check_inputs(rng: object, cfg: object) -> None:
    """Fail fast on wrong types and on §II parameters that no amount of redrawing can satisfy."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"argument 'rng' must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(cfg, PhysicsConfig):
        raise TypeError(f"argument 'cfg' must be a PhysicsConfig, got {type(cfg).__name__}")
    check_feasible(cfg)


def _accepted_wells(
    rng: np.random.Generator, cfg: PhysicsConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place well chains until one covers at most `max_well_area` of the pixels (paper §II)."""
    _check_inputs(rng, cfg)
    fraction = float("nan")
    for _ in range(cfg.max_restarts + 1):
        centres, radii = _place_chain(rng, cfg)
        mask = well_mask(centres, radii, cfg)
        fraction = float(mask.mean())
        if fraction <= cfg.max_well_area:
            return centres, radii, mask
    raise RuntimeError(
        f"no potential map with well-area fraction <= max_well_area={cfg.max_well_area} after "
        f"max_restarts={cfg.max_restarts} restarts (last fraction {fraction:.3f}); "
        "raise max_well_area or max_restarts, or use smaller wells")


def _place_chain(rng: np.random.Generator, cfg: PhysicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n_wells, 2) and radii (n_wells,) in nm, each well touching its predecessor (paper §II)."""
    length = cfg.length_nm
    centres = np.empty((cfg.n_wells, 2), dtype=np.float64)
    radii = np.empty(cfg.n_wells, dtype=np.float64)
    centres[0] = rng.uniform(0.0, length, size=2)
    radii[0] = rng.uniform(cfg.radius_min_frac * length, cfg.radius_max_frac * length)
    for k in range(1, cfg.n_wells):
        centres[k], radii[k] = _draw_touching(rng, centres[k - 1], radii[k - 1], cfg)
    return centres, radii


def _draw_touching(
    rng: np.random.Generator, centre: np.ndarray, radius: float, cfg: PhysicsConfig
) -> tuple[np.ndarray, float]:
    """First candidate well (centre nm, radius nm) with 0 < lens area <= max_overlap·πR_new²."""
    length = cfg.length_nm
    drawn = 0
    while drawn < cfg.max_redraws:
        size = min(_BATCH, cfg.max_redraws - drawn)
        cand = rng.uniform(0.0, length, size=(size, 2))
        r_new = rng.uniform(cfg.radius_min_frac * length, cfg.radius_max_frac * length, size=size)
        dist = np.hypot(cand[:, 0] - centre[0], cand[:, 1] - centre[1])
        overlap = lens_area(radius, r_new, dist)
        ok = np.flatnonzero((overlap > 0.0) & (overlap <= cfg.max_overlap * np.pi * r_new**2))
        if ok.size:
            return cand[ok[0]], float(r_new[ok[0]])
        drawn += size
    raise RuntimeError(
        f"no admissible well after max_redraws={cfg.max_redraws} candidate draws: a new well must "
        f"overlap the previous one with 0 < area <= max_overlap={cfg.max_overlap} of its own area "
        "(paper §II); raise max_redraws or max_overlap")
