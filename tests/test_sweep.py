"""Studies: the study configs plan; a two-point multirun via sweep.py summarizes two rows and figures;
aggregate_only reproduces the table; a rerun skips finished runs; a failing run is listed as failed;
resume: auto continues a run dir's checkpoint and refuses results of another config."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tiny import CONF, ROOT, compose_train, make_tiny_set, run_tiny

from qdgan.study.plan import parse_command_line, plan_study
from qdgan.train import rundir

# fixed tiny settings; data.path is relative to the test's working directory (a tmp dir)
TINY = ["physics.n_basis=10", "physics.n_orbitals=4", "data.path=tiny", "data.n_val=10", "data.n_test=10",
        "data.batch_size=4", "data.eval_batch_size=10", "generator.ngf=4", "discriminator.ndf=4", "max_steps=4",
        "val_every_n_steps=2", "logger=csv", "n_tracked=4", "history_every_n_steps=1",
        "trainer.enable_progress_bar=false", "data.generate.workers=1"]
# so many fixed overrides would make too long a dir name: name the run dirs by the swept key only
NAME_BY_SWEEP = ("hydra.job.config.override_dirname.exclude_keys=[study,"
                 + ",".join(o.split("=")[0] for o in TINY) + "]")
TWO_POINTS = ["study=ntrain", "data.n_train=20,40", *TINY, NAME_BY_SWEEP]


def sweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory holding a 60-instance data set `tiny` (cheap ED: 10² basis, 4 orbitals)."""
    cwd = tmp_path_factory.mktemp("study")
    make_tiny_set(cwd / "tiny")
    return cwd


@pytest.fixture(scope="module")
def two_point_study(workdir: Path) -> tuple[Path, subprocess.CompletedProcess]:
    proc = sweep(workdir, *TWO_POINTS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir / "outputs" / "studies" / "ntrain", proc


# --- planning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("study", "n_runs", "x"), [
    ("architecture", 6, [70, 34, 16, 7, 4, 1]), ("ntrain", 8, [50, 100, 200, 400, 800, 1600, 3200, 4800]),
    ("jitter", 9, list(range(64, 81, 2))), ("mappings", 4, ["v_to_n0", "v_to_nint", "n0_to_nint", "nint_to_v"]),
    ("baseline", None, None),
    ("families", 22, ["paper", "gates", "parabolic", "double_dot", "disordered", "mix", "lofo_paper", "lofo_gates",
                      "lofo_parabolic", "lofo_double_dot", "lofo_disordered"] * 2)])
# baseline's λ values: a tunable of conf/study/baseline.yaml, with and without the cGAN term
def test_every_study_plans_its_runs(study, n_runs, x):
    if study == "baseline":
        lambdas = [int(v) for v in str(OmegaConf.load(CONF / "study" / "baseline.yaml").hydra.sweeper.params[
            "model.lambda_l1"]).split(",")]
        n_runs, x = 2 * len(lambdas), lambdas * 2
    s = plan_study(study, [])
    assert len(s.jobs) == n_runs and [j.x for j in s.jobs] == x
    assert s.sweep_dir == Path("outputs/studies") / study
    assert all(j.run_dir.parent == s.sweep_dir for j in s.jobs)
    assert len({j.run_dir for j in s.jobs}) == n_runs


def test_command_line_sweep_replaces_the_studys_and_names_the_dirs():
    s = plan_study("architecture", ["discriminator=pixelgan1,patchgan4", "max_steps=10", "logger=csv"])
    assert [j.label for j in s.jobs] == ["discriminator=pixelgan1", "discriminator=patchgan4"]
    assert [j.run_dir.name for j in s.jobs] == ["discriminator=pixelgan1,max_steps=10",
                                                "discriminator=patchgan4,max_steps=10"]  # logger: neutral
    assert [j.n_pt for j in s.jobs] == [1, 4]


def test_sweep_py_rejects_a_missing_or_unknown_study():
    with pytest.raises(SystemExit, match="study=<name> is required"):
        parse_command_line(["max_steps=10"])
    with pytest.raises(SystemExit, match=r"no conf/study/nope\.yaml"):
        parse_command_line(["study=nope"])
    cmd = parse_command_line(["study=jitter", "aggregate_only=true", "copy_to=docs/results", "max_steps=5"])
    assert cmd.aggregate_only and cmd.copy_to == Path("docs/results") and cmd.overrides == ["max_steps=5"]


# --- multiruns -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_point_study_summarizes_two_rows_and_figures(two_point_study):
    out, _ = two_point_study
    rows = read_csv(out / "summary.csv")
    assert [r["run"] for r in rows] == ["data.n_train=20", "data.n_train=40"]
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert [r["N_train"] for r in rows] == ["20", "40"] and {r["N_pt"] for r in rows} == {"70"}
    assert all(float(r["R2"]) == json.loads((out / r["run"] / "metrics.json").read_text())["r2"] for r in rows)
    assert (out / "summary.md").read_text().count("| data.n_train=") == 2
    for name in ("summary.png", "curves.png"):
        assert (out / name).stat().st_size > 1000
    hist = json.loads((out / "data.n_train=20" / "history.json").read_text())
    assert hist["val"]["step"] == [2, 4] and len(hist["val"]["r2"]) == 2  # each validation's own R²


@pytest.mark.slow
def test_aggregate_only_reproduces_the_table(two_point_study, workdir, tmp_path):
    out, _ = two_point_study
    before = {name: (out / name).read_text() for name in ("summary.csv", "summary.md")}
    proc = sweep(workdir, *TWO_POINTS, "aggregate_only=true", f"copy_to={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching" not in proc.stdout + proc.stderr
    for name, text in before.items():
        assert (out / name).read_text() == text
        assert (tmp_path / "ntrain" / name).read_text() == text
    assert (tmp_path / "ntrain" / "summary.png").exists()


@pytest.mark.slow
def test_rerun_skips_finished_runs(two_point_study, workdir):
    out, _ = two_point_study
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    proc = sweep(workdir, *TWO_POINTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 runs finished" in proc.stdout and "Launching" not in proc.stdout + proc.stderr
    assert len(stamps) == 2 and {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_failing_run_is_listed_as_failed_and_the_others_go_on(two_point_study, workdir):
    out, _ = two_point_study
    copy = workdir / "outputs" / "failing"
    shutil.copytree(out / "data.n_train=40", copy / "data.n_train=40")  # a finished run train.py must skip
    stamp = (copy / "data.n_train=40" / "metrics.json").stat().st_mtime_ns
    proc = sweep(workdir, "study=ntrain", "data.n_train=999,40", *TINY, NAME_BY_SWEEP, f"hydra.sweep.dir={copy}")
    assert proc.returncode == 1  # not every run finished
    assert "skipped:" in proc.stdout  # the finished run, inside the multirun
    rows = {r["run"]: r for r in read_csv(copy / "summary.csv")}
    assert list(rows) == ["data.n_train=999", "data.n_train=40"]
    assert rows["data.n_train=999"]["status"] == "failed" and "n_train" in rows["data.n_train=999"]["error"]
    assert rows["data.n_train=40"]["status"] == "finished"
    assert (copy / "data.n_train=40" / "metrics.json").stat().st_mtime_ns == stamp
    assert "failed" in (copy / "summary.md").read_text()
    assert "Traceback" in json.loads((copy / "data.n_train=999" / "failed.json").read_text())["traceback"]


# --- resume and run-dir states -------------------------------------------------------------------


def run_in(run_dir: Path, *overrides: str) -> dict:
    """train.py's `run` in-process on the tiny data set, as a multirun job in `run_dir` would."""
    return run_tiny(compose_train([*TINY, "data.n_train=40", *overrides]), run_dir)


def test_resume_auto_continues_an_interrupted_run_and_refuses_another_config(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(workdir)
    run_in(tmp_path, "max_steps=4")
    # make it a run of max_steps=8 killed after its step-4 checkpoint
    (tmp_path / "config.yaml").write_text((tmp_path / "config.yaml").read_text().replace(
        "max_steps: 4", "max_steps: 8"))
    (tmp_path / "metrics.json").unlink()
    assert rundir.status(tmp_path)[0] == rundir.INCOMPLETE
    metrics = run_in(tmp_path, "max_steps=8")
    assert metrics["generator_steps"] == 8
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["losses"]["step"] == list(range(1, 9)) and hist["val"]["step"] == [2, 4, 6, 8]
    assert run_in(tmp_path, "max_steps=8", "logger=wandb")["r2"] == metrics["r2"]  # finished: skipped
    with pytest.raises(ValueError, match=r"another config \(max_steps: 8 → 6\)"):
        run_in(tmp_path, "max_steps=6")
    state, payload = rundir.status(tmp_path)
    assert state == rundir.FAILED and "another config" in payload["error"]


def test_run_dir_states(tmp_path):
    assert rundir.status(tmp_path / "none")[0] == rundir.MISSING
    (tmp_path / "config.yaml").write_text("max_steps: 4\nlogger: {csv: {}}\n")
    assert rundir.status(tmp_path)[0] == rundir.INCOMPLETE
    (tmp_path / "metrics.json").write_text(json.dumps({"r2": 0.5, "finished": True}))
    assert rundir.status(tmp_path) == (rundir.FINISHED, {"r2": 0.5, "finished": True})
    same = rundir.Settings.of(OmegaConf.create({"max_steps": 4, "logger": {"wandb": {}}, "neutral_keys": ["logger"]}))
    other = rundir.Settings.of(OmegaConf.create({"max_steps": 8, "neutral_keys": ["logger"]}))
    assert rundir.status(tmp_path, same)[0] == rundir.FINISHED
    assert rundir.status(tmp_path, other) == (rundir.STALE, {"error": "finished with another config: max_steps: 4 → 8"})
    rundir.record_failure(tmp_path, RuntimeError("boom"))
    assert rundir.status(tmp_path)[1]["error"] == "RuntimeError: boom"


def test_expand_is_the_product_with_the_last_override_of_a_key_winning():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from qdgan.study.plan import expand

    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y", "c=5", "a=3,4"])
    assert expand(parsed) == [["a=3", "b=x", "c=5"], ["a=3", "b=y", "c=5"], ["a=4", "b=x", "c=5"],
                              ["a=4", "b=y", "c=5"]]
    with pytest.raises(SystemExit, match="only discrete sweeps"):
        expand(OverridesParser.create().parse_overrides(["a=interval(0,1)"]))


def test_transfer_table_repeats_a_runs_own_test_metrics_on_its_diagonal(tiny_data, tmp_path):
    from tiny import train_tiny

    from qdgan.study import transfer

    ckpt = train_tiny(tiny_data, tmp_path / "run", "v_to_nint")
    own = json.loads((tmp_path / "run" / "metrics.json").read_text())
    split = {"split_seed": 0, "n_train": 40, "n_val": 10, "n_test": 10}
    cells = transfer.evaluate_runs([("tiny", "v_to_nint", ckpt.parent.parent)], {"tiny": str(tiny_data)}, split)
    (cell,) = cells
    assert cell.r2 == own["r2"] and cell.ssim == own["mean"]["ssim"] and cell.n == 10
    assert cell.charge_error == own["mean"]["charge_error"]
    written = transfer.write(cells, tmp_path / "out")
    assert "| tiny | " in (tmp_path / "out" / "transfer.md").read_text()
    assert written[-1].stat().st_size > 1000
    assert transfer.read_csv(tmp_path / "out" / "transfer.csv") == cells  # redraw without evaluating again
