"""Exact diagonalization of N electrons in a confinement potential (paper §III.1): `solve`.

Pipeline: H0 in the sine basis (eq. 1) → lowest `n_orbitals` orbitals (two-level Davidson) →
Coulomb integrals V_abcd (eq. 5, FFT) → many-body ground state in the Slater-determinant basis
(eq. 4, 6) → densities n0 (lowest orbitals filled, two per orbital) and n_int (eq. 7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from physics import basis, ci, coulomb
from physics.config import ConfigError, PhysicsConfig
from physics.single_particle import lowest_eigenpairs


@dataclass(frozen=True)
class GroundState:
    """ED result. Energies in eV, densities in nm⁻² on the cell-centred grid (h²·Σ n = N)."""

    energy: float  # many-body ground-state energy E_int (eq. 6)
    energy_nonint: float  # Σ of the N lowest spin-orbital energies
    orbital_energies: np.ndarray  # (n_orbitals,) ε_a
    n0: np.ndarray  # (grid, grid) non-interacting density
    n_int: np.ndarray  # (grid, grid) interacting density
    rdm1: np.ndarray  # (n_orbitals, n_orbitals) spin-summed one-body density matrix
    n_electrons: int
    spin: float  # total spin S of the many-body ground state, ⟨S²⟩ = S(S+1) (ħ = 1); degenerate levels: ci._choose
    n_basis: int
    n_orbitals: int
    ci_dim: int  # determinants in the S_z sector
    eig_residual_ev: float  # largest single-particle residual ‖H0 φ − ε φ‖
    eig_iterations: int
    timings_s: dict[str, float] = field(default_factory=dict)


def check_potential(potential_ev: np.ndarray, cfg: PhysicsConfig, name: str = "potential_ev") -> np.ndarray:
    """Return the potential as float64 (grid, grid), or raise ValueError naming what is wrong."""
    arr = np.asarray(potential_ev)
    if arr.ndim != 2 or arr.shape != (cfg.grid, cfg.grid):
        raise ValueError(
            f"{name} must be a square array of shape ({cfg.grid}, {cfg.grid}) matching "
            f"PhysicsConfig.grid={cfg.grid}, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers (eV), got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite, found {int((~np.isfinite(arr)).sum())} NaN/inf value(s), "
            f"first at pixel {tuple(int(i) for i in bad)}")
    return arr


@lru_cache(maxsize=8)
def _kinetic_order(cfg: PhysicsConfig) -> np.ndarray:
    return np.argsort(basis.kinetic_diagonal_ev(cfg), kind="stable")


def occupations(n_electrons: int, n_orbitals: int) -> np.ndarray:
    """Aufbau occupations of the non-interacting ground state: two per orbital, lowest first."""
    occ = np.zeros(n_orbitals)
    full, odd = divmod(n_electrons, 2)
    occ[:full] = 2.0
    occ[full] += odd
    return occ


def solve(potential_ev: np.ndarray, cfg: PhysicsConfig) -> GroundState:
    """Ground state of `cfg.n_electrons` electrons in `potential_ev` (eV, grid×grid)."""
    if not isinstance(cfg, PhysicsConfig):
        raise TypeError(f"cfg must be a PhysicsConfig, got {type(cfg).__name__}")
    v = check_potential(potential_ev, cfg)
    n_orb = cfg.n_orbitals
    if cfg.n_electrons > 2 * n_orb:  # PhysicsConfig checks this too; keep solve() self-contained
        raise ConfigError(f"n_electrons={cfg.n_electrons} exceeds 2·n_orbitals={2 * n_orb}")
    clock = time.perf_counter
    t0 = clock()
    h0 = basis.hamiltonian_ev(v, cfg)
    pairs = lowest_eigenpairs(h0, n_orb, _kinetic_order(cfg), cfg.eig_coarse_basis,
                              cfg.eig_tol_ev, cfg.eig_max_iter)
    phi = basis.orbitals_on_grid(pairs.vectors, cfg)  # (n_orb, grid, grid), nm⁻¹
    t1 = clock()
    occ = occupations(cfg.n_electrons, n_orb)
    n0 = np.einsum("a,aij->ij", occ, phi * phi)
    energy_nonint = float(occ @ pairs.energies)
    if cfg.n_electrons == 1:
        result = ci.CIResult(float(pairs.energies[0]), np.diag(occ), n_orb, 0.5)
        t2 = t3 = clock()
    else:
        eri = coulomb.coulomb_integrals_ev(phi, cfg)
        t2 = clock()
        result = ci.ground_state(pairs.energies, eri, cfg.n_electrons)
        t3 = clock()
    flat = phi.reshape(n_orb, -1)
    n_int = np.einsum("pr,pr->r", result.rdm1 @ flat, flat).reshape(cfg.grid, cfg.grid)
    t4 = clock()
    return GroundState(
        energy=result.energy_ev,
        energy_nonint=energy_nonint,
        orbital_energies=pairs.energies,
        n0=n0,
        n_int=n_int,
        rdm1=result.rdm1,
        n_electrons=cfg.n_electrons,
        spin=result.spin,
        n_basis=cfg.n_basis,
        n_orbitals=n_orb,
        ci_dim=result.dim,
        eig_residual_ev=pairs.residual_ev,
        eig_iterations=pairs.iterations,
        timings_s={"single_particle": t1 - t0, "coulomb": t2 - t1, "many_body": t3 - t2 + t4 - t3},
    )
