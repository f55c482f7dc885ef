"""Bad potential input ends in one line naming the field and what is allowed, at every entry point: an unknown
option of a config group (physics/choices.py, before Hydra composes), an unknown family, a parameter out of its
range or impossible in the box, a bad mixture weight (physics/families.py; through train.py's data module the
field is data.generate.potential)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny import CONF, ROOT, compose_app, compose_train

from physics.choices import bad_choice, options
from physics.config import ConfigError
from physics.demo import run as run_demo
from physics.generate import plan_from_config
from qdgan.train.run import instantiate

FAMILIES = ["disordered", "double_dot", "gates", "mix", "paper", "parabolic"]  # conf/potential/, sorted
TRAIN = {"potential": "data.generate.potential"}  # where train.py places the potential group


def test_options_are_the_group_files():
    assert options(CONF, "potential") == FAMILIES
    assert "mix_of_sets" in options(CONF, "data")


@pytest.mark.parametrize(("argv", "needle"), [
    (["potential=nope"], f"potential=nope: 'nope' is not an option of config group 'potential' (conf/potential/); "
                         f"expected one of {FAMILIES}"),
    (["-m", "seed=1", "potential=gates,nope"], "potential=gates,nope: 'nope' is not an option"),
    (["+potential@data.generate.potential=wells"], "+potential@data.generate.potential=wells: 'wells' is not an "
                                                   "option of config group 'potential'"),
    (["data=gate"], "data=gate: 'gate' is not an option of config group 'data' (conf/data/); expected one of ["),
])
def test_an_unknown_group_option_is_one_line_naming_the_options(argv, needle):
    problem = bad_choice(CONF, argv, TRAIN)
    assert problem is not None and "\n" not in problem and needle in problem, problem


def test_known_options_flags_sweeps_and_values_pass():
    argv = ["-m", "--cfg", "job", "data=gates,paper", "potential@data.generate.potential=parabolic", "study=null",
            "physics.grid=32", "data.path=[a,b]", "seed=1", "mapping=choice(v_to_n0,v_to_nint)", "hydra.run.dir=x"]
    assert bad_choice(CONF, argv, TRAIN) is None
    assert bad_choice(CONF, ["potential=gates", "potential.margin_nm=6"]) is None  # physics.generate, physics.demo


def test_train_says_where_its_potential_group_is():
    problem = bad_choice(CONF, ["data=gates", "potential=parabolic"], TRAIN)
    assert problem == ("potential=parabolic: this app takes the potential group at data.generate.potential, not at "
                       "the top level: override it as potential@data.generate.potential=parabolic "
                       "(+potential@data.generate.potential=parabolic where the config names no potential there yet)")


@pytest.mark.parametrize(("command", "app"), [
    ([sys.executable, "-m", "physics.generate"], "physics.generate"),
    ([sys.executable, "-m", "physics.demo"], "physics.demo"),
    ([sys.executable, "train.py", "data=gates"], "train.py"),
])
def test_entry_points_end_an_unknown_family_in_one_line(command, app, tmp_path):
    result = subprocess.run([*command, "potential=nope", f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"{app}: error: potential=nope: 'nope' is not an option"), result.stderr
    assert str(FAMILIES) in result.stderr
    assert not list(tmp_path.iterdir())  # before Hydra composed: no run directory


def test_generate_cli_ends_a_bad_weight_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "physics.generate", "potential=mix", "potential.weights.gates=-1",
                             f"out_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'h'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("physics.generate: error: potential: MixSpec.weights={'paper': 0.2, 'gates': -1")
    assert result.stderr.strip().endswith("for families among ['paper', 'gates', 'parabolic', 'double_dot', "
                                          "'disordered']; weights.gates=-1")
    assert not (tmp_path / "data").exists()


BAD_PARAMETERS = [  # (overrides of the potential group, what the one line says)
    (["potential.family=nope"], "potential.family='nope' is not a potential family; expected one of "
                                "['paper', 'gates', 'parabolic', 'double_dot', 'disordered', 'mix']"),
    (["potential=mix", "+potential.weights.nope=1"], "potential: MixSpec.weights={"),
    (["potential=mix", "+potential.weights.nope=1"], "; weights.nope is not a family"),
    (["potential=mix", "potential.weights.gates=-1"], "; weights.gates=-1"),
    (["potential=mix", "potential.weights.gates=0", "potential.weights.paper=0", "potential.weights.parabolic=0",
      "potential.weights.double_dot=0", "potential.weights.disordered=0"], "; every weight is 0"),
    (["potential=gates", "potential.dip_depth_ev=[0,20]"],
     "potential: GatesSpec.dip_depth_ev=[0, 20]: expected [min, max], two numbers with 0.0 <= min <= max <= 10.0 (eV)"),
    (["potential=gates", "potential.n_dips=[3,1]"], "GatesSpec.n_dips=[3, 1]: expected [min, max], two integers "
                                                    "with 1 <= min <= max <= 16 (count)"),
    (["potential=gates", "potential.margin_nm=20"], "potential: GatesSpec.margin_nm=20.0 must be < L/2 = 15.0 nm"),
    (["potential=gates", "+potential.depth=1"], "potential: family 'gates' has no parameter(s) ['depth']; known: "),
    (["potential=disordered", "potential.base=5"], "potential.base=5: expected a family's parameters, a mapping "
                                                   "with family: one of ['paper'"),
    (["potential=mix", "potential.components=5"], "potential.components=5: expected a mapping family -> its "),
]


@pytest.mark.parametrize(("overrides", "needle"), BAD_PARAMETERS)
def test_generate_and_demo_refuse_bad_parameters_in_one_line(overrides, needle, tmp_path):
    for app, run in (("generate", plan_from_config), ("demo", run_demo)):
        cfg = compose_app(app, [*overrides, f"out_dir={tmp_path}" if app == "generate" else "seed=0"])
        with pytest.raises(ConfigError) as err:
            run(cfg)
        assert "\n" not in str(err.value) and needle in str(err.value), (app, str(err.value))


@pytest.mark.parametrize(("overrides", "needle"), [
    (["data=gates", "data.generate.potential.family=nope"], "data.generate.potential.family='nope' is not a "
                                                            "potential family; expected one of ['paper'"),
    (["data=gates", "data.generate.potential.dip_depth_ev=[0,20]"], "data.generate.potential: GatesSpec.dip_depth_ev"
                                                                    "=[0, 20]: expected [min, max]"),
    (["data=gates", "data.generate.potential.margin_nm=20"], "data.generate.potential: GatesSpec.margin_nm=20.0 "
                                                             "must be < L/2 = 15.0 nm"),
    (["data=mix", "+data.generate.potential.weights.nope=1"], "; weights.nope is not a family"),
    (["data=mix", "data.generate.potential.weights.gates=-1"], "data.generate.potential: MixSpec.weights={"),
])
def test_train_data_module_refuses_a_bad_potential_naming_data_generate_potential(overrides, needle):
    cfg = compose_train(["physics.n_basis=10", "physics.n_orbitals=4", *overrides])
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.data, _recursive_=False)  # as qdgan.train.run does, before any data is read
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)
