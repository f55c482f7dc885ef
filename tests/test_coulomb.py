"""Coulomb integrals against closed forms for Gaussian charge clouds in the plane."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import i0e

from physics import basis, coulomb
from physics.config import PhysicsConfig
from physics.constants import COULOMB_EV_NM

CFG = PhysicsConfig(eps_r=1.0)


def gaussian_density(cx: float, cy: float, sigma: float) -> np.ndarray:
    x = basis.cell_centres_nm(CFG)
    rho = np.exp(-((x[:, None] - cx) ** 2 + (x[None, :] - cy) ** 2) / (2 * sigma**2))
    return rho / (rho.sum() * CFG.h_nm**2)


def exact_interaction(s1: float, s2: float, d: float) -> float:
    """∫∫ρ1ρ2/|r−r'| for normalized 2D Gaussians at distance d: √(π/2)/s · e^{−z} I0(z), z = d²/4s²."""
    s = np.hypot(s1, s2)
    return COULOMB_EV_NM * np.sqrt(np.pi / 2) / s * i0e(d * d / (4 * s * s))


@pytest.mark.parametrize(
    ("s1", "s2", "d", "rtol"),
    [
        (1.0, 1.0, 0.0, 5e-3),  # σ ≈ 2.1 h: O(h²) pixel error 0.37 %
        (2.0, 2.0, 0.0, 1.5e-3),  # σ ≈ 4.3 h: 0.10 %
        (1.5, 2.5, 6.0, 5e-4),
        (2.0, 2.0, 10.0, 5e-4),
    ],
)
def test_gaussian_clouds(s1, s2, d, rtol):
    rho1 = gaussian_density(15 - d / 2, 15, s1)
    rho2 = gaussian_density(15 + d / 2, 15, s2)
    eri = coulomb.coulomb_integrals_ev(np.sqrt(np.stack([rho1, rho2])), CFG)
    assert eri[0, 0, 1, 1] == pytest.approx(exact_interaction(s1, s2, d), rel=rtol)
    assert eri[1, 1, 0, 0] == pytest.approx(eri[0, 0, 1, 1], rel=1e-6)


def test_pixel_error_shrinks_as_h_squared():
    """Self-energy error of one Gaussian at σ = 1 and 2 nm: ratio ≈ 4 (O(h²) in h/σ)."""
    errors = []
    for s in (1.0, 2.0):
        rho = gaussian_density(15, 15, s)
        eri = coulomb.coulomb_integrals_ev(np.sqrt(rho)[None], CFG)
        errors.append(abs(eri[0, 0, 0, 0] / exact_interaction(s, s, 0.0) - 1))
    assert 3.0 < errors[0] / errors[1] < 5.0


def test_cell_average_of_inverse_r():
    k = coulomb.cell_averaged_inverse_r(8, 0.5)
    assert k[0, 0] == pytest.approx(4 / 0.5 * np.log(1 + np.sqrt(2)), rel=1e-12)
    assert k[5, 6] == pytest.approx(1 / np.hypot(2.5, 3.0), rel=2e-3)  # far cells ≈ 1/r
    assert k[5, 6] > 1 / np.hypot(2.5, 3.0)  # convexity: the average exceeds the centre value
    np.testing.assert_allclose(k, k.T)


def test_integrals_have_the_symmetries_of_real_orbitals():
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((4, CFG.grid, CFG.grid))
    eri = coulomb.coulomb_integrals_ev(phi, CFG)
    np.testing.assert_allclose(eri, eri.transpose(1, 0, 2, 3), rtol=1e-6)
    np.testing.assert_allclose(eri, eri.transpose(2, 3, 0, 1), rtol=1e-5, atol=1e-6 * np.abs(eri).max())
