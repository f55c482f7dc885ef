"""Tests for the potential families (`physics.families`, `physics.shapes`): configuration and its errors,
value range and determinism of every family, the geometric meaning of each family's parameters, the
paper's family unchanged, and every family solvable by the ED engine."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from physics import families, shapes
from physics.config import ConfigError, PhysicsConfig
from physics.constants import HBAR2_OVER_2ME_EV_NM2
from physics.demo import run as demo_run
from physics.ed import solve
from physics.families import FAMILIES, PAPER, from_mapping, random_potential_of
from physics.instances import compute_instance, instance_seed
from physics.manifest import Identity
from physics.potentials import random_potential

CONF = Path(__file__).resolve().parents[1] / "conf"
CFG = PhysicsConfig()
NAMES = (*FAMILIES, "mix")
PAPER_HASH = "2f7994e87613773bd87add0f7f702c7ac539fa7ba49a4d6b354181ec6f70cc98"
"""config_hash of data/paper (written before families existed): the paper's identity must keep it."""


def _spec(family: str, **params: object) -> families.Spec:
    return from_mapping({"family": family, **params})


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_yaml_holds_its_dataclass_defaults(name: str) -> None:
    values = OmegaConf.to_container(OmegaConf.load(CONF / "potential" / f"{name}.yaml"))
    assert values["family"] == name
    from_yaml, default = from_mapping(values), from_mapping({"family": name})
    assert from_yaml == default and families.to_dict(from_yaml) == families.to_dict(default)
    families.check(from_yaml, CFG)


def test_generate_and_demo_compose_the_potential_group_with_paper_as_default() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert compose("generate").potential.family == "paper"
        assert compose("demo").potential.family == "paper"
        cfg = compose("generate", overrides=["potential=mix", "+potential.components.gates.n_dips=[2,3]"])
    spec = from_mapping(OmegaConf.to_container(cfg.potential))
    assert isinstance(spec, families.MixSpec) and spec.components[1].n_dips == (2, 3)


@pytest.mark.parametrize(("values", "needle"), [
    ({"family": "wells"}, r"potential\.family='wells' is not a potential family; expected one of \['paper', 'gates'"),
    ({}, r"potential\.family=None is not a potential family"),
    ({"family": "gates", "n_dots": [1, 2]}, r"family 'gates' has no parameter\(s\) \['n_dots'\]; known: "),
    ({"family": "gates", "dip_sigma_nm": [5, 1]}, r"GatesSpec\.dip_sigma_nm=\[5, 1\]: expected \[min, max\], two "
                                                  r"numbers with 0\.001 <= min <= max"),
    ({"family": "gates", "n_dips": [1.5, 2]}, r"GatesSpec\.n_dips=\[1\.5, 2\]: expected \[min, max\], two integers"),
    ({"family": "gates", "n_dips": [0, 2]}, r"GatesSpec\.n_dips=\[0, 2\]: .* 1 <= min <= max <= 16 \(count\)"),
    ({"family": "gates", "margin_nm": "wide"}, r"GatesSpec\.margin_nm='wide': expected a number in"),
    ({"family": "parabolic", "hbar_omega_x_mev": [float("nan"), 50]}, r"ParabolicSpec\.hbar_omega_x_mev=\[nan, 50\]"),
    ({"family": "parabolic", "hbar_omega_y_mev": 50}, r"ParabolicSpec\.hbar_omega_y_mev=50: expected \[min, max\]"),
    ({"family": "double_dot", "detuning_ev": [-0.05, 0.05]}, r"DoubleDotSpec\.detuning_ev=\[-0\.05, 0\.05\]: expected "
                                                             r"\|detuning\| < 4/3 of the lowest barrier_ev \(0\.03\)"),
    ({"family": "disordered", "base": {"family": "disordered"}}, r"DisorderedSpec\.base\.family='disordered'"),
    ({"family": "disordered", "base": {"family": "gates", "n_bumps": [3, 1]}},
     r"potential\.base: GatesSpec\.n_bumps=\[3, 1\]"),
    ({"family": "disordered", "amplitude_ev": -0.1}, r"DisorderedSpec\.amplitude_ev=-0\.1: expected a number in \[0"),
    ({"family": "mix", "weights": {"paper": -1}}, r"MixSpec\.weights=\{'paper': -1\}: expected non-negative"),
    ({"family": "mix", "weights": {"paper": 0, "gates": 0}}, r"MixSpec\.weights=.*not all 0"),
    ({"family": "mix", "weights": {"wells": 1}}, r"MixSpec\.weights=\{'wells': 1\}: .*among \['paper'"),
    ({"family": "mix", "weights": {"gates": 1}, "components": {"parabolic": {}}},
     r"MixSpec\.components=\['parabolic'\]: expected at most one spec per family listed in weights \['gates'\]"),
    ({"family": "mix", "components": {"gates": {"family": "parabolic"}}},
     r"potential\.components\.gates\.family='parabolic': expected 'gates'"),
])
def test_bad_specs_are_one_line_errors_naming_the_field(values: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        from_mapping(values)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("spec", "cfg", "needle"), [
    (_spec("gates", margin_nm=15.0), CFG, r"potential: GatesSpec\.margin_nm=15\.0 must be < L/2 = 15\.0 nm"),
    (_spec("gates", dip_sigma_nm=[0.2, 3]), CFG, r"GatesSpec\.dip_sigma_nm=\[0\.2, 3\.0\] must be >= the pixel size"),
    (_spec("parabolic", hbar_omega_x_mev=[10, 50]), CFG, r"ParabolicSpec\.hbar_omega_x_mev/hbar_omega_y_mev down to "
                                                         r"10\.0 meV: oscillator length ℓ = 10\.7 nm"),
    (_spec("double_dot", separation_nm=[8, 30]), CFG, r"DoubleDotSpec\.separation_nm/2 \+ centre_offset_nm = 16\.0"),
    (_spec("disordered", correlation_nm=10.0), CFG, r"DisorderedSpec\.correlation_nm=10\.0 must lie in \[h, L/4\]"),
    (_spec("disordered", base={"family": "gates", "margin_nm": 20}), CFG, r"potential\.base: GatesSpec\.margin_nm"),
    (_spec("mix"), PhysicsConfig(n_wells=100_000), r"PhysicsConfig\.n_wells=100000 exceeds"),
    (_spec("parabolic"), PhysicsConfig(v_step_ev=0.0), r"potential: family 'parabolic' clips maps to \[v_well_ev, "
                                                       r"v_step_ev\]: expected v_step_ev > v_well_ev"),
])
def test_specs_that_cannot_work_in_this_box_are_refused(spec: families.Spec, cfg: PhysicsConfig, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        families.check(spec, cfg)


def test_canonical_form_fills_defaults_and_reads_integers_as_floats() -> None:
    a = _spec("parabolic", hbar_omega_x_mev=[40, 120])
    assert a == _spec("parabolic") and a.hbar_omega_x_mev == (40.0, 120.0)
    mix = _spec("mix", weights={"gates": 1, "parabolic": 3})
    assert families.to_dict(mix)["weights"] == {"paper": 0.0, "gates": 1.0, "parabolic": 3.0, "double_dot": 0.0,
                                                "disordered": 0.0}
    assert [c.family for c in mix.components] == ["gates", "parabolic"] and families.produces(mix) == (
        "gates", "parabolic")
    assert families.to_dict(_spec("disordered"))["base"] == families.to_dict(_spec("parabolic"))


# --- every family: range, determinism, the paper unchanged -----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_maps_are_grid_sized_in_the_value_range_and_depend_only_on_the_generator(name: str) -> None:
    cfg = dataclasses.replace(CFG, v_well_ev=0.1, v_step_ev=0.8)
    spec = _spec(name)
    seen = []
    for k in range(4):
        v, family = random_potential_of(_rng(instance_seed(5, k)), cfg, spec)
        again, _ = random_potential_of(_rng(instance_seed(5, k)), cfg, spec)
        assert v.shape == (cfg.grid, cfg.grid) and v.dtype == np.float64 and np.isfinite(v).all()
        assert np.array_equal(v, again)
        assert v.min() >= cfg.v_well_ev and v.max() <= cfg.v_step_ev
        assert family in families.produces(spec)
        if family in ("gates", "disordered"):
            assert v.min() == cfg.v_well_ev  # the lowest pixel sits at v_well_ev
        if family != "paper":
            assert len(np.unique(v)) > 100  # smooth, not two-valued
        seen.append(v)
    assert not any(np.array_equal(seen[0], other) for other in seen[1:])


def test_the_paper_family_is_the_papers_random_potential_and_identity() -> None:
    for seed in range(3):
        v, family = random_potential_of(_rng(seed), CFG, PAPER)
        assert family == "paper" and np.array_equal(v, random_potential(_rng(seed), CFG))
    identity = Identity(CFG, 0, 5000, 100)
    assert identity.potential == PAPER and "potential" not in identity.to_dict()
    assert identity.hash == PAPER_HASH == Identity(CFG, 0, 5000, 100, {"family": "paper"}).hash
    assert Identity.from_dict(identity.to_dict(), "old manifest").potential == PAPER
    gates = Identity(CFG, 0, 5000, 100, _spec("gates"))
    assert gates.to_dict()["potential"]["family"] == "gates" and gates.hash != PAPER_HASH
    assert Identity.from_dict(gates.to_dict(), "manifest") == gates
    row = compute_instance(3, 0, CFG)
    assert row["family"] == 0 and np.array_equal(row["potential"], random_potential(
        _rng(instance_seed(0, 3)), CFG).astype(np.float32))


def test_mix_draws_families_by_weight_and_never_one_of_weight_zero() -> None:
    spec = _spec("mix", weights={"gates": 3, "parabolic": 1, "double_dot": 0})
    drawn = [random_potential_of(_rng(instance_seed(0, k)), CFG, spec)[1] for k in range(400)]
    share = drawn.count("gates") / len(drawn)
    assert set(drawn) == {"gates", "parabolic"} and abs(share - 0.75) < 0.07  # 3.2 binomial σ
    k = 17  # instance k's family and map come from its own generator alone
    a, b = (random_potential_of(_rng(instance_seed(0, k)), CFG, spec) for _ in range(2))
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


# --- the geometric meaning of each family's parameters ----------------------------------------------------


def test_parabolic_minimum_sits_at_the_drawn_centre_with_the_drawn_curvatures() -> None:
    spec = _spec("parabolic")
    x, y = shapes.grid_xy(CFG)
    for seed in range(5):
        d = families.draw(_rng(seed), CFG, spec)
        p = d.params
        assert abs(p["centre_nm"] - 15.0).max() <= spec.centre_offset_nm
        i, j = np.unravel_index(np.argmin(d.potential), d.potential.shape)
        assert math.hypot(x[i, j] - p["centre_nm"][0], y[i, j] - p["centre_nm"][1]) <= CFG.h_nm / math.sqrt(2)
        c, s, step = math.cos(p["angle_rad"]), math.sin(p["angle_rad"]), 0.5
        for (ex, ey), key in (((c, s), "hbar_omega_x_mev"), ((-s, c), "hbar_omega_y_mev")):
            pts = np.array([-step, 0.0, step])
            v = families.landscape(p["centre_nm"][0] + pts * ex, p["centre_nm"][1] + pts * ey, "parabolic", p, CFG)
            curvature = (v[0] + v[2] - 2 * v[1]) / step**2  # m*ω² (eV/nm²)
            hbar_omega_mev = 1e3 * math.sqrt(curvature * 2 * HBAR2_OVER_2ME_EV_NM2 / CFG.m_eff)
            assert v[1] == 0.0 and hbar_omega_mev == pytest.approx(p[key], rel=1e-9)


def test_a_centred_parabolic_dot_has_the_harmonic_oscillator_energy() -> None:
    """E_nonint of two electrons in the lowest orbital = ħω_x + ħω_y: the box walls and the clip do not matter."""
    d = families.draw(_rng(1), CFG, _spec("parabolic", centre_offset_nm=0.0))
    gs = solve(d.potential, CFG)
    expected = 1e-3 * (d.params["hbar_omega_x_mev"] + d.params["hbar_omega_y_mev"])
    assert gs.energy_nonint == pytest.approx(expected, rel=5e-3)


def test_double_dot_has_two_minima_with_the_drawn_detuning_and_a_barrier_of_the_drawn_height() -> None:
    spec = _spec("double_dot")
    for seed in range(6):
        d = families.draw(_rng(seed), CFG, spec)
        p = d.params
        a, (cx, cy) = p["separation_nm"] / 2, p["centre_nm"]
        ex, ey = math.cos(p["angle_rad"]), math.sin(p["angle_rad"])
        u = np.linspace(-2 * a, 2 * a, 4001)  # the axis through both dots; u = ±a and 0 are samples
        v = families.landscape(cx + u * ex, cy + u * ey, "double_dot", p, CFG)
        interior = np.flatnonzero((v[1:-1] < v[:-2]) & (v[1:-1] < v[2:])) + 1
        assert np.allclose(u[interior], [-a, a], atol=1e-9), u[interior]
        left, right, top = v[0 + 1000], v[3000], v[2000]
        assert right - left == pytest.approx(p["detuning_ev"], abs=1e-12)
        assert min(left, right) == pytest.approx(0.0, abs=1e-12)
        assert top - (left + right) / 2 == pytest.approx(p["barrier_ev"], abs=1e-12)
        assert np.argmax(v[1000:3001]) == 1000  # the barrier top lies between the dots, at u = 0
        step = 0.25
        out = a + np.array([1, 2, 3]) * step  # beyond the right dot: ½ m*ω_dot² (u − a)²
        w = families.landscape(cx + out * ex, cy + out * ey, "double_dot", p, CFG)
        curvature = (w[0] + w[2] - 2 * w[1]) / step**2
        hbar_omega_mev = 1e3 * math.sqrt(curvature * 2 * HBAR2_OVER_2ME_EV_NM2 / CFG.m_eff)
        assert hbar_omega_mev == pytest.approx(p["hbar_omega_dot_mev"], rel=1e-6)
        across = families.landscape(cx - u * ey, cy + u * ex, "double_dot", p, CFG)  # through the midpoint
        assert np.argmin(across) == 2000 and across[2000] == pytest.approx(top, abs=1e-12)
        assert d.potential.min() >= CFG.v_well_ev and d.potential.min() < 0.02  # lowest pixel near the lower dot


def test_gates_dip_bump_and_tilt_have_their_drawn_position_width_and_size() -> None:
    one = _spec("gates", n_dips=[1, 1], n_bumps=[0, 0], tilt_ev_per_nm=[0, 0])
    x, y = shapes.grid_xy(CFG)
    for seed in range(4):
        d = families.draw(_rng(seed), CFG, one)
        p = d.params
        (cx, cy), (su, sv), depth = p["dip_centres_nm"][0], p["dip_sigmas_nm"][0], p["dip_depths_ev"][0]
        assert one.margin_nm <= min(cx, cy) and max(cx, cy) <= 30.0 - one.margin_nm
        i, j = np.unravel_index(np.argmin(d.potential), d.potential.shape)
        assert math.hypot(x[i, j] - cx, y[i, j] - cy) <= CFG.h_nm / math.sqrt(2)
        c, s = math.cos(p["dip_angles_rad"][0]), math.sin(p["dip_angles_rad"][0])
        pts_x = np.array([cx, cx + su * c, cx - sv * s])
        pts_y = np.array([cy, cy + su * s, cy + sv * c])
        v = families.landscape(pts_x, pts_y, "gates", p, CFG)
        np.testing.assert_allclose(v, [-depth, -depth * math.exp(-0.5), -depth * math.exp(-0.5)], rtol=1e-12)
    bump = families.draw(_rng(0), CFG, _spec("gates", n_dips=[1, 1], dip_depth_ev=[0, 0], n_bumps=[1, 1],
                                                 tilt_ev_per_nm=[0, 0])).params
    (bx, by), height = bump["bump_centres_nm"][0], bump["bump_heights_ev"][0]
    assert families.landscape(np.array(bx), np.array(by), "gates", bump, CFG) == pytest.approx(height, rel=1e-12)
    tilt = families.draw(_rng(2), CFG, _spec("gates", dip_depth_ev=[0, 0], n_bumps=[0, 0])).params
    gx = families.landscape(np.array([10.0, 11.0]), np.array([12.0, 12.0]), "gates", tilt, CFG)
    gy = families.landscape(np.array([10.0, 10.0]), np.array([12.0, 13.0]), "gates", tilt, CFG)
    g, angle = tilt["tilt_ev_per_nm"], tilt["tilt_angle_rad"]
    assert 0 < g <= 0.005
    np.testing.assert_allclose([gx[1] - gx[0], gy[1] - gy[0]], [g * math.cos(angle), g * math.sin(angle)], rtol=1e-9)


@pytest.mark.parametrize("xi", [1.5, 3.0])
def test_random_field_has_the_set_amplitude_and_correlation_length(xi: float) -> None:
    """Averaged autocorrelation of 64 fields: C(r)/C(0) = exp(−r²/2ξ²), so it falls to e^{−1/2} at r = ξ."""
    grid, h, amp = 64, 0.46875, 0.03
    rng = _rng(11)
    fields = np.stack([shapes.gaussian_random_field(rng, grid, h, xi, amp) for _ in range(64)])
    assert fields.std() == pytest.approx(amp, rel=0.06) and abs(fields.mean()) < 0.2 * amp
    pad = np.fft.rfft2(fields - fields.mean(), s=(2 * grid, 2 * grid))
    acf = np.fft.irfft2(np.abs(pad) ** 2, s=(2 * grid, 2 * grid)).mean(axis=0)
    overlap = np.fft.irfft2(np.abs(np.fft.rfft2(np.ones((grid, grid)), s=(2 * grid, 2 * grid))) ** 2,
                            s=(2 * grid, 2 * grid))
    lags = np.arange(grid // 2)
    along = (acf[lags, 0] / overlap[lags, 0] + acf[0, lags] / overlap[0, lags]) / 2  # unbiased, x and y lags
    along /= along[0]
    target = math.exp(-0.5)
    i = int(np.argmax(along < target))  # first lag below e^{-1/2}; interpolate linearly to the crossing
    measured = (i - 1 + (along[i - 1] - target) / (along[i - 1] - along[i])) * h
    assert measured == pytest.approx(xi, rel=0.08)
    r = lags * h
    near = r <= 2 * xi
    np.testing.assert_allclose(along[near], np.exp(-r[near] ** 2 / (2 * xi**2)), atol=0.08)


def test_disorder_is_the_drawn_field_added_to_the_drawn_base_map() -> None:
    spec = _spec("disordered", base={"family": "gates"})
    for seed in range(3):
        d = families.draw(_rng(seed), CFG, spec)
        base, noise = d.params["base"], d.params["field_ev"]
        assert d.family == "disordered" and base.family == "gates" and noise.shape == (CFG.grid, CFG.grid)
        inside = (d.potential > CFG.v_well_ev) & (d.potential < CFG.v_step_ev) & (base.potential < CFG.v_step_ev)
        shift = d.potential - base.potential - noise
        assert inside.mean() > 0.2 and np.ptp(shift[inside]) < 1e-12  # V = base + field + one constant
        assert d.potential.min() == CFG.v_well_ev


# --- the ED engine solves every family; the demo draws one ----------------------------------------------


@pytest.mark.parametrize("name", FAMILIES[1:])
def test_every_family_is_solvable_at_the_default_physics(name: str) -> None:
    for k in range(2):
        v, _ = random_potential_of(_rng(instance_seed(0, k)), CFG, _spec(name))
        gs = solve(v, CFG)
        assert np.isfinite([gs.energy, gs.energy_nonint]).all() and gs.energy > gs.energy_nonint > 0
        for n in (gs.n0, gs.n_int):
            assert n.sum() * CFG.h_nm**2 == pytest.approx(CFG.n_electrons, rel=1e-9) and n.min() >= -1e-12


def test_demo_draws_a_double_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=["potential=double_dot", "seed=3", f"out={tmp_path / 'demo.png'}",
                                         "physics.n_basis=16", "physics.n_orbitals=8"])
    assert demo_run(cfg).exists()
    assert capsys.readouterr().out.startswith("double_dot, seed 3: N = 2")
