"""Hard-wall sine basis of the single-particle problem (eq. 1) on the cell-centred grid.

Basis states χ_mn(x, y) = s_m(x) s_n(y), s_m(x) = √(2/L) sin(mπx/L), m, n = 1..n_basis; they vanish
on the walls. Flattened index of (m, n) is (m−1)·n_basis + (n−1). Lengths in nm, energies in eV.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from physics.config import PhysicsConfig
from physics.constants import HBAR2_OVER_2ME_EV_NM2


def cell_centres_nm(cfg: PhysicsConfig) -> np.ndarray:
    """Pixel centres (i+½)h along one axis, nm, shape (grid,)."""
    return (np.arange(cfg.grid) + 0.5) * cfg.h_nm


def kinetic_diagonal_ev(cfg: PhysicsConfig) -> np.ndarray:
    """Kinetic energies ħ²π²(m²+n²)/(2m*L²) of the basis states, eV, shape (n_basis²,)."""
    m = np.arange(1, cfg.n_basis + 1, dtype=np.float64)
    e1 = HBAR2_OVER_2ME_EV_NM2 / cfg.m_eff * (np.pi * m / cfg.length_nm) ** 2
    return (e1[:, None] + e1[None, :]).ravel()


@lru_cache(maxsize=8)
def _sampled_sines(grid: int, n_basis: int, length_nm: float) -> np.ndarray:
    x = (np.arange(grid) + 0.5) * (length_nm / grid)
    m = np.arange(1, n_basis + 1)
    s = np.sqrt(2.0 / length_nm) * np.sin(np.pi * np.outer(x, m) / length_nm)
    s.setflags(write=False)
    return s


def sampled_sines(cfg: PhysicsConfig) -> np.ndarray:
    """s_m at the pixel centres, nm^-1/2, shape (grid, n_basis).

    With n_basis < grid the midpoint rule h·Σ_i s_m s_m' = δ_mm' is exact, so orbitals sampled on the
    grid stay orthonormal and h²·Σ n = N holds to rounding.
    """
    return _sampled_sines(cfg.grid, cfg.n_basis, cfg.length_nm)


@lru_cache(maxsize=8)
def _cell_overlaps(grid: int, n_basis: int, length_nm: float) -> np.ndarray:
    h = length_nm / grid
    edges = np.arange(grid + 1) * h
    m = np.arange(1, n_basis + 1)
    k_minus = (m[:, None] - m[None, :]).astype(np.float64)
    k_plus = (m[:, None] + m[None, :]).astype(np.float64)

    def cos_integral(k: np.ndarray) -> np.ndarray:
        # ∫_cell cos(kπx/L) dx for every cell, shape (grid, nb, nb); k = 0 gives the cell width h.
        safe = np.where(k == 0, 1.0, k)
        prim = np.sin(np.pi * np.multiply.outer(edges, safe) / length_nm) * length_nm / (np.pi * safe)
        out = prim[1:] - prim[:-1]
        return np.where(k == 0, h, out)

    a = (cos_integral(k_minus) - cos_integral(k_plus)) / length_nm
    a.setflags(write=False)
    return a


def cell_overlaps(cfg: PhysicsConfig) -> np.ndarray:
    """A[i, m, m'] = ∫ over cell i of s_m(x) s_m'(x) dx (exact), shape (grid, n_basis, n_basis).

    Σ_i A[i] = identity exactly, so the potential matrix below is the exact Galerkin matrix of a
    pixel-wise constant potential.
    """
    return _cell_overlaps(cfg.grid, cfg.n_basis, cfg.length_nm)


def potential_matrix_ev(potential_ev: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """⟨χ_mn|V|χ_m'n'⟩ for V constant on each pixel, eV, shape (n_basis², n_basis²).

    V_(mn),(m'n') = Σ_ij A[i,m,m'] V_ij A[j,n,n'], done as two BLAS matmuls.
    """
    nb = cfg.n_basis
    a = cell_overlaps(cfg).reshape(cfg.grid, nb * nb)  # (grid, nb²) over (m, m')
    vm = a.T @ (potential_ev @ a)  # ((m,m'), (n,n'))
    return vm.reshape(nb, nb, nb, nb).transpose(0, 2, 1, 3).reshape(nb * nb, nb * nb)


def hamiltonian_ev(potential_ev: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """Dense single-particle Hamiltonian H0 (eq. 1) in the sine basis, eV, shape (n_basis², n_basis²)."""
    h = potential_matrix_ev(potential_ev, cfg)
    h[np.diag_indices_from(h)] += kinetic_diagonal_ev(cfg)
    return h


def orbitals_on_grid(coeffs: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """Orbitals φ_a(x_i, y_j) from basis coefficients (n_basis², k), nm⁻¹, shape (k, grid, grid)."""
    s = sampled_sines(cfg)
    c = coeffs.T.reshape(-1, cfg.n_basis, cfg.n_basis)  # (k, m, n)
    return np.matmul(np.matmul(s, c), s.T)  # Σ_mn s_m(x_i) c_mn s_n(y_j)
