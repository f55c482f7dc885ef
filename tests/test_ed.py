"""ED engine against analytic results (box, oscillator, Hooke's atom) and invariants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.linalg as sla

from physics import basis
from physics.config import ConfigError, PhysicsConfig
from physics.constants import COULOMB_EV_NM, HBAR2_OVER_2ME_EV_NM2
from physics.ed import solve
from physics.potentials import random_potential
from physics.single_particle import lowest_eigenpairs

PAPER = PhysicsConfig()
SMALL = PhysicsConfig(grid=32, n_basis=16, n_orbitals=8)


def harmonic_potential(cfg: PhysicsConfig, hbar_omega_ev: float) -> np.ndarray:
    """½ m* ω² r² about the box centre, eV; ħω in eV. Oscillator length ℓ² = ħ²/(m* ħω)."""
    ell2 = 2 * HBAR2_OVER_2ME_EV_NM2 / cfg.m_eff / hbar_omega_ev
    x = basis.cell_centres_nm(cfg) - cfg.length_nm / 2
    return 0.5 * hbar_omega_ev * (x[:, None] ** 2 + x[None, :] ** 2) / ell2


def area(cfg: PhysicsConfig) -> float:
    return cfg.h_nm**2


# --- single particle -------------------------------------------------------------------------


def test_particle_in_a_box_levels_are_analytic():
    """Flat potential c: E_mn = c + ħ²π²(m²+n²)/(2m*L²), exact in the sine basis."""
    c = 0.123
    gs = solve(np.full((PAPER.grid, PAPER.grid), c), PAPER)
    e1 = HBAR2_OVER_2ME_EV_NM2 / PAPER.m_eff * (np.pi / PAPER.length_nm) ** 2
    mn = sorted(m * m + n * n for m in range(1, 10) for n in range(1, 10))
    expected = c + e1 * np.array(mn[: PAPER.n_orbitals])
    np.testing.assert_allclose(gs.orbital_energies, expected, rtol=0, atol=1e-9)
    assert gs.energy_nonint == pytest.approx(2 * expected[0], abs=1e-9)


def test_harmonic_oscillator_levels_and_degeneracies():
    """ħω(n_x+n_y+1) with degeneracy n+1; ℓ = 2.5 nm ≪ L/2, so the walls do not matter."""
    hw = 2 * HBAR2_OVER_2ME_EV_NM2 / PAPER.m_eff / 2.5**2
    gs = solve(harmonic_potential(PAPER, hw), PAPER)
    levels = gs.orbital_energies[:15] / hw
    expected = np.repeat([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(levels, expected, rtol=5e-3)  # O(h²) pixel-staircase error ≈ 0.3%
    # degenerate shells stay degenerate to far better than the shell spacing
    for start, size in [(1, 2), (3, 3), (6, 4), (10, 5)]:
        shell = levels[start : start + size]
        assert np.ptp(shell) < 1e-3


def test_davidson_matches_dense_eigh_on_random_potentials():
    rng = np.random.default_rng(7)
    for _ in range(3):
        v = random_potential(rng, PAPER)
        h = basis.hamiltonian_ev(v, PAPER)
        order = np.argsort(basis.kinetic_diagonal_ev(PAPER), kind="stable")
        pairs = lowest_eigenpairs(h, 16, order, PAPER.eig_coarse_basis, 1e-8, 100)
        assert pairs.iterations > 0  # the iterative path ran, not the dense fallback
        w = sla.eigh(h, subset_by_index=[0, 15], eigvals_only=True)
        np.testing.assert_allclose(pairs.energies, w, atol=1e-10)
        assert pairs.residual_ev <= 1e-8
        np.testing.assert_allclose(pairs.vectors.T @ pairs.vectors, np.eye(16), atol=1e-10)


def test_basis_quadratures_are_exact():
    a = basis.cell_overlaps(PAPER)
    np.testing.assert_allclose(a.sum(axis=0), np.eye(PAPER.n_basis), atol=1e-13)
    s = basis.sampled_sines(PAPER)
    np.testing.assert_allclose(PAPER.h_nm * s.T @ s, np.eye(PAPER.n_basis), atol=1e-12)


# --- many body: Hooke's atom -----------------------------------------------------------------


def hooke_config(**overrides) -> tuple[PhysicsConfig, float]:
    """2D Hooke's atom at Taut's analytic point: ħω = m* k²/ħ² (k = e²/4πε0ε_r), E = 3ħω exactly.

    The relative-motion ansatz (1 + r/a*) e^{−r²/2ℓ²} solves the m = 0 problem for exactly this ω, with
    E_rel = 2ħω and E_cm = ħω (Taut, J. Phys. A 27, 1045 (1994)). ε_r is chosen so ℓ = a* = 3.5 nm.
    """
    ell = 3.5
    hbar2_over_m = 2 * HBAR2_OVER_2ME_EV_NM2 / PAPER.m_eff
    k = hbar2_over_m / ell
    cfg = dataclasses.replace(PAPER, eps_r=COULOMB_EV_NM / k, **overrides)
    return cfg, k / ell


def test_hooke_atom_within_one_percent_and_variational():
    cfg, hw = hooke_config()
    v = harmonic_potential(cfg, hw)
    exact = 3 * hw
    energies = [solve(v, dataclasses.replace(cfg, n_orbitals=n)).energy for n in (6, 10, 16, 21)]
    assert all(e > exact for e in energies)  # variational: above the exact energy
    assert all(np.diff(energies) < 0)  # nested orbital spaces: monotone from above
    assert energies[2] == pytest.approx(exact, rel=0.01)  # default n_orbitals = 16
    assert energies[0] / exact - 1 > 0.01  # and the test can tell a too-small space


def test_hooke_atom_improves_with_single_particle_basis():
    cfg, hw = hooke_config(n_orbitals=10)
    exact = 3 * hw
    errors = []
    for nb, grid in [(16, 32), (24, 48), (32, 64)]:
        c = dataclasses.replace(cfg, n_basis=nb, grid=grid)
        errors.append(solve(harmonic_potential(c, hw), c).energy - exact)
    assert all(e > 0 for e in errors)
    assert errors[0] > errors[1] > errors[2]


# --- invariants -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_states():
    rng = np.random.default_rng(2024)
    pots = [random_potential(rng, PAPER) for _ in range(4)]
    return pots, [solve(v, PAPER) for v in pots]


def test_densities_integrate_to_n_and_are_nonnegative(random_states):
    _, states = random_states
    for gs in states:
        for n in (gs.n0, gs.n_int):
            assert n.shape == (PAPER.grid, PAPER.grid)
            assert n.sum() * area(PAPER) == pytest.approx(PAPER.n_electrons, abs=1e-10)
            assert n.min() > -1e-12
        assert np.trace(gs.rdm1) == pytest.approx(PAPER.n_electrons, abs=1e-10)


def test_interaction_raises_energy_and_spreads_density(random_states):
    _, states = random_states
    for gs in states:
        assert gs.energy > gs.energy_nonint
        # Repulsion spreads the charge: the density is less concentrated (smaller ∫n², lower peak).
        assert (gs.n_int**2).sum() < (gs.n0**2).sum()
        assert gs.n_int.max() < gs.n0.max()


def test_mirror_symmetric_potential_gives_mirror_symmetric_density():
    rng = np.random.default_rng(3)
    v = random_potential(rng, PAPER)
    v = np.minimum(v, v[::-1, :])  # symmetric under x → L − x
    gs = solve(v, PAPER)
    scale = gs.n_int.max()
    np.testing.assert_allclose(gs.n_int, gs.n_int[::-1, :], atol=1e-6 * scale)
    np.testing.assert_allclose(gs.n0, gs.n0[::-1, :], atol=1e-6 * scale)


def test_single_electron_has_no_interaction():
    cfg = dataclasses.replace(SMALL, n_electrons=1)
    v = random_potential(np.random.default_rng(5), cfg)
    gs = solve(v, cfg)
    assert gs.energy == pytest.approx(gs.orbital_energies[0])
    np.testing.assert_allclose(gs.n_int, gs.n0)


@pytest.mark.parametrize("n_electrons", [3, 4])
def test_more_electrons_work(n_electrons):
    cfg = dataclasses.replace(SMALL, n_electrons=n_electrons)
    v = random_potential(np.random.default_rng(11), cfg)
    gs = solve(v, cfg)
    assert gs.n_int.sum() * area(cfg) == pytest.approx(n_electrons, abs=1e-8)
    assert gs.n0.sum() * area(cfg) == pytest.approx(n_electrons, abs=1e-10)
    assert gs.energy > gs.energy_nonint
    assert gs.n_int.min() > -1e-10


def test_weak_interaction_limit_recovers_noninteracting_state():
    cfg = dataclasses.replace(SMALL, eps_r=1e7)
    v = random_potential(np.random.default_rng(1), cfg)
    gs = solve(v, cfg)
    assert gs.energy == pytest.approx(gs.energy_nonint, abs=1e-6)
    np.testing.assert_allclose(gs.n_int, gs.n0, atol=1e-4 * gs.n0.max())


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((64, 32)), r"shape \(64, 64\)"),
        (np.zeros((32, 32)), r"grid=64"),
        (np.zeros(64 * 64), r"shape"),
        (np.full((64, 64), np.nan), r"finite"),
        (np.where(np.eye(64) > 0, np.inf, 0.0), r"NaN/inf"),
        (np.full((64, 64), "a"), r"real numbers"),
    ],
)
def test_solve_rejects_bad_potentials(array, match):
    with pytest.raises(ValueError, match=match):
        solve(array, PAPER)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("m_eff", 0.0, "m_eff"),
        ("m_eff", -0.067, "m_eff"),
        ("eps_r", -1.0, "eps_r"),
        ("length_nm", 0.0, "length_nm"),
        ("length_nm", float("nan"), "length_nm"),
        ("n_basis", 0, "n_basis"),
        ("n_basis", 64, "n_basis"),
        ("grid", -4, "grid"),
        ("n_orbitals", 32 * 32 + 1, "n_orbitals"),
        ("n_orbitals", 0, "n_orbitals"),
        ("n_electrons", 33, "spin-orbitals"),
        ("n_electrons", 2.5, "n_electrons"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(PAPER, **{field: value})


def test_solve_rejects_non_config():
    with pytest.raises(TypeError, match="PhysicsConfig"):
        solve(np.zeros((64, 64)), {"grid": 64})
