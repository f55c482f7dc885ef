"""Hyperparameter searches (conf/search/, Hydra's Optuna sweeper): the configs plan; a bad search space ends in one
line naming the key; the objective is the best validation R², never a test metric; interrupted trials are asked
again with their parameters; a tiny search runs on the joblib launcher, continues on a rerun and tabulates."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from test_sweep import TINY
from tiny import CONF, ROOT, compose_train, make_tiny_set

from qdgan.study import hooks, search
from qdgan.study.plan import available, parse_command_line

NAME_BY_SEARCH = ("hydra.job.config.override_dirname.exclude_keys=[study,search,"
                  + ",".join(o.split("=")[0] for o in [*TINY, "data.n_train"]) + "]")
TINY_SEARCH = [*TINY, "data.n_train=40", NAME_BY_SEARCH]


def test_the_n_int_to_v_search_plans_lambda_lr_norm_and_input_encoding():
    s = search.plan_search("nint_to_v", [])
    assert list(s.space) == ["model.lambda_l1", "model.lr_g", "generator.norm", "data.input_log_floor"]
    assert s.sweep_dir == Path("outputs/searches/nint_to_v") and s.study_name == "nint_to_v"
    assert s.storage == "sqlite:///outputs/searches/nint_to_v/optuna.db" and s.n_trials >= 20
    cfg = compose_train(["+search=nint_to_v", "model.lr_g=1e-4", "generator.norm=instance"])
    assert cfg.mapping.name == "nint_to_v" and cfg.max_steps == 3000  # the studies' step budget
    assert cfg.model.lr_d == 1e-4 and cfg.discriminator.norm == "instance"  # searched together with G's
    assert cfg.hydra.callbacks.objective.key == "best_val_r2" and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.callbacks.devices._target_ == "qdgan.study.hooks.OneDevicePerJob"
    (run_dir,) = search.run_dirs(s, [{"model.lambda_l1": 512.5, "generator.norm": "batch"}])
    assert run_dir == s.sweep_dir / "generator.norm=batch,model.lambda_l1=512.5"  # +search does not name it


def test_every_search_plans_and_sweep_py_takes_search():
    assert "nint_to_v" in available(CONF / "search") and "base" not in available(CONF / "search")
    for name in available(CONF / "search"):
        assert search.plan_search(name, []).space
    cmd = parse_command_line(["search=nint_to_v", "aggregate_only=true", "max_steps=5"])
    assert cmd.search and cmd.study == "nint_to_v" and cmd.overrides == ["max_steps=5"]
    with pytest.raises(SystemExit, match=r"search=nope: no conf/search/nope\.yaml"):
        parse_command_line(["search=nope"])
    with pytest.raises(SystemExit, match="together"):
        parse_command_line(["search=nint_to_v", "study=jitter"])


def test_neutral_keys_of_a_search_are_train_yamls_and_search():
    train = OmegaConf.load(CONF / "train.yaml").neutral_keys
    assert list(OmegaConf.load(CONF / "search" / "base.yaml").neutral_keys) == [*train[:1], "search", *train[1:]]


@pytest.mark.parametrize(("override", "message"), [
    ("model.lamda_l1=tag(log,interval(100,1000))", "model.lamda_l1: no such key in train.py's config"),
    ("model.lr_g=interval(0.001,0.001)", r"model.lr_g=interval\(0.001,0.001\): an empty range"),
    ("data.input_log_floor=range(5,5)", r"data.input_log_floor=range\(5,5\): an empty range"),
    ("model.lr_g=tag(log,interval(0,1))", "a log scale needs low > 0"),
])
def test_a_bad_search_space_ends_in_one_line_naming_the_key(override, message):
    with pytest.raises(SystemExit, match=message) as err:
        search.plan_search("nint_to_v", [override])
    assert "\n" not in str(err.value) and str(err.value).startswith("error: search nint_to_v")


def test_a_bad_key_in_the_configs_search_space_is_named():
    cfg = compose_train(["+search=nint_to_v"])
    with pytest.raises(SystemExit, match=r"generator\.nrom: no such key"):
        search.check_space(cfg, {"generator.nrom": "choice(batch,instance)"}, "nint_to_v")
    with pytest.raises(SystemExit, match=r"model\.gan_mode=choice\(\): .*empty choice"):
        search.check_space(cfg, {"model.gan_mode": "choice()"}, "nint_to_v")
    with pytest.raises(SystemExit, match=r"hydra\.job\.num: no such key"):  # Hydra's settings are not searched
        search.check_space(cfg, {"hydra.job.num": "1,2"}, "nint_to_v")


def job(run_dir: Path, value, status=JobStatus.COMPLETED):
    ret = JobReturn()
    ret.status, ret.return_value = status, value
    return ret, OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})


def test_the_objective_is_the_best_validation_r2_never_the_test_r2(tmp_path):
    objective = hooks.SearchObjective()
    ret, cfg = job(tmp_path, 0.5)  # train.py returns the test R²
    (tmp_path / "metrics.json").write_text(json.dumps({"r2": 0.5, "best_val_r2": 0.9, "finished": True}))
    objective.on_job_end(cfg, ret)
    assert ret.return_value == 0.9
    ret, cfg = job(tmp_path / "unfinished", None)
    objective.on_job_end(cfg, ret)
    assert ret.return_value is None  # the sweeper records a failed trial
    with pytest.raises(ValueError, match="never on test"):
        hooks.SearchObjective(key="r2")


def plan_in(tmp_path: Path) -> search.Search:
    return search.plan_search("nint_to_v", [f"hydra.sweep.dir={tmp_path}", "hydra/launcher=joblib",
                                            "hydra.launcher.n_jobs=3"])


def test_interrupted_trials_are_asked_again_with_their_parameters(tmp_path):
    plan = plan_in(tmp_path)
    assert plan.storage == f"sqlite:///{tmp_path}/optuna.db" and plan.batch == 3 and plan.seed == 0
    study = search.open_study(plan)
    done, killed = study.ask(), study.ask()
    for t in (done, killed):
        t.suggest_float("model.lr_g", 1e-5, 1e-3, log=True)
    study.tell(done, 0.8)
    assert search.continue_interrupted(study) == [killed.number]
    assert search.finished(search.open_study(plan)) == 1  # reopened: it is all in the sqlite file
    again = study.ask()
    assert again.suggest_float("model.lr_g", 1e-5, 1e-3, log=True) == killed.params["model.lr_g"]
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "FAIL", "RUNNING"]


def test_launch_args_run_the_missing_trials_with_a_moved_seed(tmp_path):
    plan = plan_in(tmp_path)
    args = search.launch_args(plan, ["max_steps=5"], n_trials=4, n_asked=7)
    assert args == ["+search=nint_to_v", "max_steps=5", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=7",
                    "hydra.sweeper.n_jobs=3"]
    assert search.launch_args(plan, ["hydra.sweeper.n_jobs=2"], 1, 0)[-1] == "hydra.sweeper.sampler.seed=0"


def sweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_tiny_search_runs_continues_and_tabulates(tmp_path):
    make_tiny_set(tmp_path / "tiny")
    out = tmp_path / "outputs" / "searches" / "nint_to_v"
    first = sweep(tmp_path, "search=nint_to_v", *TINY_SEARCH, "hydra.sweeper.n_trials=2", "hydra/launcher=joblib",
                  "hydra.launcher.n_jobs=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 of 2 trials to do" in first.stdout and "is launching 2 jobs" in first.stdout + first.stderr
    rows = read_csv(out / "search.csv")
    assert [r["state"] for r in rows] == ["complete", "complete"]
    for r in rows:  # each trial's value is its run's best validation R², not its test R²
        run_dir = tmp_path / r["run_dir"]  # relative to the working directory, as sweep.py names it
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert float(r["best_val_R2"]) == metrics["best_val_r2"] and float(r["R2"]) == metrics["r2"]
        assert run_dir.parent == out
    # a trial a kill left running: the rerun asks its parameters again and runs the one trial still missing
    plan = search.plan_search("nint_to_v", [f"hydra.sweep.dir={out}", *TINY_SEARCH])
    study = search.open_study(plan)
    killed = study.ask()  # with a point of the space, as the sweeper asks it
    killed.suggest_float("model.lambda_l1", 100, 10000, log=True)
    killed.suggest_float("model.lr_g", 5e-5, 1e-3, log=True)
    killed.suggest_categorical("generator.norm", ["batch", "instance"])
    killed.suggest_categorical("data.input_log_floor", [0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4])
    second = sweep(tmp_path, "search=nint_to_v", *TINY_SEARCH, "hydra.sweeper.n_trials=3")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"trial(s) {killed.number} were interrupted" in second.stdout and "1 of 3 trials to do" in second.stdout
    rows = read_csv(out / "search.csv")
    assert [r["state"] for r in rows] == ["complete", "complete", "fail", "complete"]
    assert {k: rows[3][k] for k in killed.params} == {k: str(v) for k, v in killed.params.items()}
    assert rows[2]["note"] == "interrupted; continued as trial 3"
    assert len({r["run_dir"] for r in rows}) == 3  # the rerun's seed moved on: no trial repeated
    md = (out / "search.md").read_text()
    assert md.count("best (by validation R²)") == 1 and (out / "curves.png").stat().st_size > 1000
    assert (out / "history.png").stat().st_size > 1000 and "history.png" in md
    assert "best trial as a single run: python train.py +search=nint_to_v" in second.stdout
    again = sweep(tmp_path, "search=nint_to_v", *TINY_SEARCH, "hydra.sweeper.n_trials=3", "aggregate_only=true")
    assert again.returncode == 0 and "Launching" not in again.stdout + again.stderr
    assert (out / "search.md").read_text() == md
