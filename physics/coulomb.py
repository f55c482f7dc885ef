"""Coulomb matrix elements V_abcd (eq. 5) of real orbitals sampled on the grid.

V_abcd = (ac|bd) = h⁴ Σ_r Σ_r' ρ_ac(r) K(r − r') ρ_bd(r'), with pair densities ρ_ac = φ_a φ_c and
K = e²/(4π ε0 ε_r) · ⟨1/|r|⟩_cell: the Coulomb kernel averaged over one pixel (closed form below), so
the r = r' pixel carries its finite average (4/h)·ln(1+√2) instead of a divergence.
The convolution is a zero-padded 2·grid FFT; by Parseval the whole (ac|bd) matrix is one real
matmul of the pair-density spectra, float32. Error: O(h²) from treating each density as constant
over a pixel (measured against two Gaussian clouds in tests/test_coulomb.py and docs/physics.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from physics.config import PhysicsConfig
from physics.constants import COULOMB_EV_NM


def _inverse_r_integral(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """G(x, y) = ∫₀ˣ∫₀ʸ dx' dy' / √(x'²+y'²) (signed): for x, y ≥ 0, x·asinh(y/x) + y·asinh(x/y)."""
    ax, ay = np.abs(x), np.abs(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        fx = np.where(ax == 0, 0.0, ax * np.arcsinh(ay / np.where(ax == 0, 1.0, ax)))
        fy = np.where(ay == 0, 0.0, ay * np.arcsinh(ax / np.where(ay == 0, 1.0, ay)))
    return np.sign(x) * np.sign(y) * (fx + fy)


def cell_averaged_inverse_r(grid: int, h_nm: float) -> np.ndarray:
    """⟨1/|r|⟩ over the pixel displaced by (i, j)·h, i, j = 0..grid−1, nm⁻¹, shape (grid, grid).

    The (0, 0) entry is the finite average (4/h)·ln(1+√2) of 1/r over the pixel holding r = 0.
    """
    lo = (np.arange(grid) - 0.5) * h_nm
    hi = lo + h_nm
    g = _inverse_r_integral
    x0, x1, y0, y1 = lo[:, None], hi[:, None], lo[None, :], hi[None, :]
    return (g(x1, y1) - g(x0, y1) - g(x1, y0) + g(x0, y0)) / h_nm**2


@lru_cache(maxsize=8)
def _kernel_spectrum(grid: int, h_nm: float, eps_r: float) -> np.ndarray:
    # Even kernel on the 2·grid periodic box (displacement −d at index 2·grid − d); index grid unused.
    k_half = COULOMB_EV_NM / eps_r * cell_averaged_inverse_r(grid, h_nm)
    pad = 2 * grid
    kernel = np.zeros((pad, pad))
    kernel[:grid, :grid] = k_half
    kernel[grid + 1 :, :grid] = k_half[1:][::-1]
    kernel[:, grid + 1 :] = kernel[:, 1:grid][:, ::-1]
    spectrum = sfft.rfft2(kernel).real  # real: the kernel is even
    # Parseval weights for the half spectrum: columns other than 0 and Nyquist stand for two.
    weights = np.full(spectrum.shape[1], 2.0)
    weights[0] = weights[-1] = 1.0
    scale = h_nm**4 / pad**2
    out = (spectrum * weights * scale).astype(np.float32)
    out.setflags(write=False)
    return out


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangle pairs (a ≤ c) and the (n, n) map from (a, c) to the pair number."""
    a, c = np.triu_indices(n)
    index = np.empty((n, n), dtype=np.intp)
    index[a, c] = np.arange(a.size)
    index[c, a] = np.arange(a.size)
    return a, c, index


def coulomb_integrals_ev(orbitals: np.ndarray, cfg: PhysicsConfig) -> np.ndarray:
    """(ac|bd) = V_abcd (eq. 5) for real orbitals (n, grid, grid) in nm⁻¹, eV, shape (n, n, n, n).

    One rfft2 per pair a ≤ c, then J = Re Σ_k ρ̂_ac* K̂ ρ̂_bd as a single matmul (n_pairs × n_pairs).
    """
    n, grid = orbitals.shape[0], cfg.grid
    a, c, index = pair_index(n)
    phi = orbitals.astype(np.float32, copy=False)
    rho = phi[a] * phi[c]  # (n_pairs, grid, grid)
    spec = sfft.rfft2(rho, s=(2 * grid, 2 * grid), workers=1)  # (n_pairs, 2g, g+1) complex64
    weights = _kernel_spectrum(grid, cfg.h_nm, cfg.eps_r)
    flat = spec.reshape(a.size, -1).view(np.float32)  # interleaved (re, im)
    w = np.repeat(weights.ravel(), 2)
    j = (flat * w) @ flat.T  # (n_pairs, n_pairs): Re ρ̂·K̂·ρ̂* summed
    j = j.astype(np.float64)
    j = 0.5 * (j + j.T)
    return j[index[:, :, None, None], index[None, None, :, :]]
