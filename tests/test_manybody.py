"""The N ≥ 3 many-body solver (physics/determinants.py, physics/davidson.py, physics.ci): against the
Jordan–Wigner Fock-space construction and the earlier direct CI, ⟨S²⟩ against known spins, the rule for
degenerate levels, non-convergence, and the per-instance `spin` field of a data set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_ci import fock_ground_state, physical_integrals
from test_ed import PAPER, SMALL, harmonic_potential
from tiny import CONF

from physics import basis, ci, coulomb, davidson, determinants, generate
from physics.config import ConfigError, PhysicsConfig
from physics.constants import HBAR2_OVER_2ME_EV_NM2
from physics.dataset import open_dataset
from physics.ed import _kinetic_order, solve
from physics.instances import InstanceError, compute_instance
from physics.potentials import random_potential
from physics.shards import SPIN_FIELD, read_header
from physics.single_particle import lowest_eigenpairs

CIRCULAR = dataclasses.replace(SMALL, n_orbitals=6)  # closed shells s, p, d: the kept space has the dot's symmetry
HBAR_OMEGA_EV = 2 * HBAR2_OVER_2ME_EV_NM2 / SMALL.m_eff / 5.0**2  # ħω = ħ²/(m* ℓ²) at ℓ = 5 nm


def strings_route(eps: np.ndarray, eri: np.ndarray, n_el: int, davidson_always: bool,
                  monkeypatch: pytest.MonkeyPatch) -> ci.CIResult:
    monkeypatch.setattr(ci, "DENSE_DIM", 0 if davidson_always else 10**6)
    return ci._ground_state_strings(eps, eri, n_el)


# --- against independent constructions ------------------------------------------------------------------


@pytest.mark.parametrize("davidson_always", [False, True], ids=["dense", "davidson"])
@pytest.mark.parametrize("n_el", [2, 3, 4])
def test_strings_route_matches_fock_space(n_el, davidson_always, monkeypatch):
    """Energies to 1e-8 eV and γ to 1e-6 against Jordan–Wigner on 2^8 Fock states (4 orbitals)."""
    eps, eri = physical_integrals(4, seed=10 + n_el)
    expected_e, expected_rdm = fock_ground_state(eps, eri, n_el)
    result = strings_route(eps, eri, n_el, davidson_always, monkeypatch)
    assert abs(result.energy_ev - expected_e) < 1e-8
    np.testing.assert_allclose(result.rdm1, expected_rdm, atol=1e-6)
    assert result.iterations > 0 if davidson_always else result.iterations == 0


@pytest.mark.parametrize(("n_el", "n_orb"), [(2, 8), (3, 8), (4, 7)])
def test_davidson_matches_direct_ci_and_dense(n_el, n_orb, monkeypatch):
    """Davidson (dims 64, 224, 441) against the earlier direct CI and against a full `eigh` of the same H."""
    eps, eri = physical_integrals(n_orb, seed=n_el)
    reference = ci.ground_state_direct(eps, eri, n_el, tol=1e-12)
    dense = strings_route(eps, eri, n_el, False, monkeypatch)
    fast = strings_route(eps, eri, n_el, True, monkeypatch)
    for result in (dense, fast):
        assert abs(result.energy_ev - reference.energy_ev) < 1e-8
        np.testing.assert_allclose(result.rdm1, reference.rdm1, atol=1e-6)
        assert result.spin == reference.spin
    assert np.trace(fast.rdm1) == pytest.approx(n_el, abs=1e-12)


def test_two_electron_route_is_the_strings_route_at_n2(monkeypatch):
    eps, eri = physical_integrals(7, seed=9)
    two = ci.ground_state(eps, eri, 2)
    strings = strings_route(eps, eri, 2, True, monkeypatch)
    assert abs(strings.energy_ev - two.energy_ev) < 1e-10
    np.testing.assert_allclose(strings.rdm1, two.rdm1, atol=1e-8)
    assert two.spin == strings.spin == 0.0


@pytest.mark.parametrize("n_el", [3, pytest.param(4, marks=pytest.mark.slow)])  # the direct CI: 0.5 s, 5 s
def test_paper_resolution_matches_direct_ci(n_el):
    """One random paper potential at 16 orbitals, the whole ED: new route against the earlier direct CI."""
    cfg = dataclasses.replace(PAPER, n_electrons=n_el)
    v = random_potential(np.random.default_rng(100 + n_el), cfg)
    gs = solve(v, cfg)
    pairs = lowest_eigenpairs(basis.hamiltonian_ev(v, cfg), cfg.n_orbitals, _kinetic_order(cfg),
                              cfg.eig_coarse_basis, cfg.eig_tol_ev, cfg.eig_max_iter)
    eri = coulomb.coulomb_integrals_ev(basis.orbitals_on_grid(pairs.vectors, cfg), cfg)
    direct = ci.ground_state_direct(pairs.energies, eri, cfg.n_electrons)
    assert abs(gs.energy - direct.energy_ev) < 1e-8
    np.testing.assert_allclose(gs.rdm1, direct.rdm1, atol=1e-6)
    assert gs.spin == direct.spin


# --- spin -------------------------------------------------------------------------------------------------


def test_spin_square_of_single_determinants_and_pairs():
    """A closed shell has S² = 0; N = 3 with one open orbital S² = ¾; N = 2 singlet 0 and triplet 2."""
    for n_alpha, n_beta, expected in [(2, 2, 0.0), (2, 1, 0.75)]:
        sec = determinants.sector(5, n_alpha, n_beta)
        aufbau = np.zeros((sec.dim, 1))
        aufbau[0] = 1.0  # lowest orbitals: α (0, 1), β (0, 1) or (0)
        assert sec.spin_square(aufbau)[0, 0] == pytest.approx(expected, abs=1e-14)
    sec = determinants.sector(3, 1, 1)
    c = np.zeros((3, 3))
    c[0, 1], c[1, 0] = 1.0, 1.0  # |0α 1β⟩ + |1α 0β⟩: singlet; minus: the S_z = 0 triplet
    s2 = sec.spin_square(np.stack([c.ravel(), (c * [[1, 1, 1], [-1, 1, 1], [1, 1, 1]]).ravel()], axis=1) / np.sqrt(2))
    np.testing.assert_allclose(np.diag(s2), [0.0, 2.0], atol=1e-14)
    assert ci.spin_of(0.75, 3) == 0.5 and ci.spin_of(3.75, 3) == 1.5 and ci.spin_of(2.0000001, 4) == 1.0


def test_noninteracting_ground_states_have_known_spin_and_occupations():
    """eri = 0: Aufbau. N = 3 → S = ½, γ = diag(2, 1, 0…); N = 4 with ε_1 = ε_2 degenerate: S = 0 (both in
    orbital 1 or 2, …) and S = 1 are degenerate; the rule takes the highest S: the triplet, γ = diag(2, 1, 1, 0…)."""
    n = 6
    eri = np.zeros((n,) * 4)
    eps = np.array([0.0, 0.1, 0.25, 0.3, 0.45, 0.5])
    three = ci.ground_state(eps, eri, 3)
    assert three.spin == 0.5
    np.testing.assert_allclose(three.rdm1, np.diag([2, 1, 0, 0, 0, 0]), atol=1e-12)
    eps[2] = eps[1]
    four = ci.ground_state(eps, eri, 4)
    assert four.spin == 1.0 and four.energy_ev == pytest.approx(0.2, abs=1e-12)
    np.testing.assert_allclose(four.rdm1, np.diag([2, 1, 1, 0, 0, 0]), atol=1e-10)
    eps = np.array([0.1, 0.1, 0.1, 0.3, 0.4])  # N = 3 in three degenerate orbitals: S = 3/2, one in each
    quartet = ci.ground_state(eps, eri[:5, :5, :5, :5], 3)
    assert quartet.spin == 1.5
    np.testing.assert_allclose(quartet.rdm1, np.diag([1, 1, 1, 0, 0]), atol=1e-10)


def test_parabolic_dot_obeys_hunds_rule_at_n4_and_is_a_symmetric_doublet_at_n3():
    """Circular dot (ℓ = 5 nm, 64² grid centred: square symmetry, the p shell stays degenerate). N = 4: two
    electrons in the p shell, triplet (Hund's rule, as measured in vertical dots). N = 3: a spatially
    degenerate doublet, averaged, so the density keeps the dot's x ↔ y symmetry."""
    for n_el, spin in [(4, 1.0), (3, 0.5)]:
        cfg = dataclasses.replace(CIRCULAR, n_electrons=n_el)
        gs = solve(harmonic_potential(cfg, HBAR_OMEGA_EV), cfg)
        assert gs.spin == spin
        np.testing.assert_allclose(gs.n_int, gs.n_int.T, atol=1e-6 * gs.n_int.max())
        np.testing.assert_allclose(gs.n_int, gs.n_int[::-1], atol=1e-6 * gs.n_int.max())


def test_degenerate_level_is_independent_of_the_start_vectors(monkeypatch):
    """N = 3 in the circular dot: the averaged γ does not depend on how the solver rotates the doublet."""
    cfg = dataclasses.replace(CIRCULAR, n_electrons=3)
    v = harmonic_potential(cfg, HBAR_OMEGA_EV)
    monkeypatch.setattr(ci, "DENSE_DIM", 0)
    first = solve(v, cfg)
    start = ci._start_vectors
    noise = np.random.default_rng(1).normal
    monkeypatch.setattr(ci, "_start_vectors", lambda d, k: start(d, k) + noise(0, 0.1, (d.size, k)))
    second = solve(v, cfg)
    assert first.spin == second.spin == 0.5
    assert abs(first.energy - second.energy) < 1e-10
    np.testing.assert_allclose(first.n_int, second.n_int, atol=1e-7 * first.n_int.max())


@pytest.mark.parametrize("n_el", [2, 3, 4])
def test_random_paper_ground_states_have_a_definite_spin(n_el):
    cfg = dataclasses.replace(SMALL, n_electrons=n_el)
    v = random_potential(np.random.default_rng(3), cfg)
    gs = solve(v, cfg)
    assert gs.spin in {2: (0.0,), 3: (0.5, 1.5), 4: (0.0, 1.0, 2.0)}[n_el]
    assert gs.n_int.sum() * cfg.h_nm**2 == pytest.approx(n_el, abs=1e-9)


# --- bad input and non-convergence ------------------------------------------------------------------------


def test_too_many_electrons_for_the_orbitals_is_one_line_naming_both():
    with pytest.raises(ConfigError, match=r"n_electrons=9 exceeds the number of spin-orbitals 2·n_orbitals=4"):
        PhysicsConfig(n_electrons=9, n_orbitals=2)
    with pytest.raises(ConfigError, match=r"n_electrons=7 with n_orbitals=16 is too large"):
        PhysicsConfig(n_electrons=7, n_orbitals=16)


def test_davidson_that_misses_its_tolerance_raises(monkeypatch):
    eps, eri = physical_integrals(8, seed=3)
    monkeypatch.setattr(ci, "DENSE_DIM", 0)
    monkeypatch.setattr(ci, "MAX_ITER", 2)
    with pytest.raises(davidson.ConvergenceError, match=r"Davidson stopped after 2 of at most 2 iterations with "
                                                         r"residual .* eV > tol = 1e-09 eV"):
        ci.ground_state(eps, eri, 3)


def test_non_convergence_names_the_instance_and_stops_generation(tmp_path, monkeypatch):
    """No shard is written for the instances of the failing shard; the set is not finalized."""
    monkeypatch.setattr(ci, "DENSE_DIM", 0)
    monkeypatch.setattr(ci, "MAX_ITER", 1)
    cfg = PhysicsConfig(n_basis=10, n_orbitals=6, n_electrons=3)
    with pytest.raises(InstanceError, match=r"instance 4 \(instance seed \d+, base seed 0\) failed: ConvergenceError: "
                                            r"Davidson stopped"):
        compute_instance(4, 0, cfg)
    in_process = lambda instances, cfg, seed, workers, spec: (compute_instance(k, seed, cfg, spec)  # noqa: E731
                                                                for k in instances)
    monkeypatch.setattr(generate, "solve_in_order", in_process)
    plan = generate.plan_from_config(_generate_config(tmp_path / "n3", "physics.n_orbitals=6", "physics.n_electrons=3"))
    with pytest.raises(InstanceError, match=r"instance 0 \(instance seed"):
        generate.generate(plan, progress=False)
    assert not list((tmp_path / "n3").glob("shard-*.h5"))


# --- the spin field of a data set -------------------------------------------------------------------------


def _generate_config(out: Path, *overrides: str):
    gen = OmegaConf.load(CONF / "generate.yaml")
    gen.physics = OmegaConf.load(CONF / "physics" / "paper.yaml")
    gen.physics.n_basis = 10
    del gen["defaults"], gen["hydra"]
    gen.merge_with_dotlist([f"out_dir={out}", "n_samples=6", "shard_size=3", "workers=1", *overrides])
    return gen


def test_a_set_of_three_electrons_stores_the_spin_and_opens(tmp_path):
    out = tmp_path / "n3"
    generate.generate(generate.plan_from_config(_generate_config(out, "physics.n_orbitals=6",
                                                                 "physics.n_electrons=3")), progress=False)
    ds = open_dataset(out)
    ds.validate()
    spins = ds[SPIN_FIELD][:]
    assert spins.dtype == np.float32 and set(spins.tolist()) <= {0.5, 1.5}
    assert ds.manifest["fields"][SPIN_FIELD] == {"dtype": "float32", "unit": "", "shape": []}
    expected = [compute_instance(k, 0, ds.config)["spin"] for k in range(len(ds))]
    np.testing.assert_array_equal(spins, expected)


def test_two_electron_sets_have_no_spin_field(tiny_data):
    """The paper's sets keep exactly their fields (and hashes); `spin` reads as S = 0 there."""
    ds = open_dataset(tiny_data)
    assert SPIN_FIELD not in ds.identity.fields and SPIN_FIELD not in ds.manifest["fields"]
    assert all(SPIN_FIELD not in read_header(path).shapes for path in tiny_data.glob("shard-*.h5"))
    np.testing.assert_array_equal(ds[SPIN_FIELD][:], np.zeros(len(ds), np.float32))
