"""Time-to-accuracy benchmark (issue 12, part 3): the timed checkpoints of a training run
(`timed_ckpt_every_n_steps`), the benchmark's threshold logic, and (slow) the whole script on a tiny grid."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from tiny import ROOT, TINY_PHYSICS, compose_train, run_tiny, tiny_overrides

from qdgan.pix2pix import Pix2Pix

spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "benchmarks" / "time_to_accuracy.py")
tta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tta)


@pytest.fixture(scope="module")
def timed_run(tiny_data, tmp_path_factory, one_torch_thread):
    """A 6-step tiny run with a timed checkpoint every 2 steps."""
    run_dir = tmp_path_factory.mktemp("timed")
    run_tiny(compose_train(tiny_overrides(tiny_data, run_dir, "timed_ckpt_every_n_steps=2")), run_dir)
    return run_dir


def test_timed_checkpoints_every_n_steps_with_their_time(timed_run):
    timed = timed_run / "checkpoints" / "timed"
    index = json.loads((timed / "index.json").read_text())
    assert [e["step"] for e in index] == [2, 4, 6]
    times = [e["unix_time"] for e in index]
    assert times == sorted(times) and len(set(times)) == 3
    assert index[0]["overhead_s"] == 0 < index[1]["overhead_s"] < index[2]["overhead_s"]
    weights = []
    for e in index:
        model = Pix2Pix.load_from_checkpoint(timed / e["file"], map_location="cpu")
        assert int(model.generator_steps) == e["step"]  # saved after that step's update
        weights.append(next(model.generator.parameters()).detach().clone())
    assert not torch.equal(weights[0], weights[2])


def test_timed_checkpoints_are_off_by_default_and_refuse_negative(tiny_data, tmp_path, one_torch_thread):
    from qdgan.train.run import check_settings

    cfg = compose_train(tiny_overrides(tiny_data, tmp_path))
    assert cfg.timed_ckpt_every_n_steps == 0
    run_tiny(cfg, tmp_path)
    assert not (tmp_path / "checkpoints" / "timed").exists()
    with pytest.raises(ValueError, match="timed_ckpt_every_n_steps=-1"):
        check_settings(compose_train(tiny_overrides(tiny_data, tmp_path, "timed_ckpt_every_n_steps=-1")))


def test_crossing_first_and_held():
    points = [{"minutes": m, "test_r2": r} for m, r in [(1, 0.97), (2, 0.991), (3, 0.985), (4, 0.992), (5, 0.993)]]
    assert tta.crossing(points, 0.98) == (2, 2)
    assert tta.crossing(points, 0.99) == (2, 4)
    assert tta.crossing(points, 0.995) == (None, None)
    assert tta.crossing(points[:3], 0.99) == (2, None)  # crossed once, not held at the end


def test_timeline_adds_ed_and_leaves_out_the_saves_own_time():
    index = [{"step": 100, "file": "a", "unix_time": 1060.0, "overhead_s": 0.0},
             {"step": 200, "file": "b", "unix_time": 1130.0, "overhead_s": 10.0}]
    scores = {"a": {"test_r2": 0.9, "val_r2": 0.91, "test_r2_bs": 0.985},
              "b": {"test_r2": 0.99, "val_r2": 0.992, "test_r2_bs": 0.97}}
    points = tta.timeline(index, scores, launched=1000.0, ed_minutes=2.0)
    assert [p["minutes"] for p in points] == [3.0, 4.0]
    row = tta.summarize_row("x", ["a=b"], points, 2.0, {"r2": 0.985, "best_step": 200, "generator_steps": 200},
                            {"train_minutes": 2.5, "eval_minutes": 0.1, "threads": 1, "load": [1.0, 2.0]})
    assert row["reached"]["0.99"] == {"first": 4.0, "held": 4.0}
    assert row["reached_bs"]["0.98"] == {"first": 3.0, "held": None}  # scored with BN batch statistics
    table = tta.markdown([row | {"reached": {"0.98": {"first": 4.0, "held": 4.0},
                                             "0.99": {"first": None, "held": None}}}])
    assert "| x | `a=b` | 2.0 | 4.0 | not reached | not reached | 0.9900 (step 200) | 0.9850 (step 200) | " \
           "3.0 / not reached; 0.9700 |" in table


def test_batch_stat_predictions_normalize_each_instance_alone(timed_run):
    """Batch norm on each instance's own statistics: a prediction depends on its input only, and differs from
    the running-statistics prediction; the model is left in eval mode."""
    model = Pix2Pix.load_from_checkpoint(timed_run / "checkpoints" / "last.ckpt", map_location="cpu")
    x = torch.randn(3, 64, 64) * 0.05
    both = tta.batch_stat_predictions(model, x)
    assert torch.allclose(tta.batch_stat_predictions(model, x[1:2]), both[1:2], atol=1e-6)
    assert not model.training and not torch.allclose(both, model.predict_maps(x), atol=1e-6)


@pytest.mark.slow
def test_benchmark_on_a_tiny_grid(tmp_path):
    """Clone HEAD (the committed script), tiny ED set, 6 steps, scores and table: the script end to end."""
    sets = [f"--set={o}" for o in tiny_overrides(tmp_path / "unused", tmp_path / "unused")
            if not o.startswith(("data.path", "hydra.run.dir", "max_steps", "val_every_n_steps"))]
    gen = ["n_samples=60", "shard_size=30", *TINY_PHYSICS]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--rows", "default", "--threads", "1",
         "--every-images", "8", "--out", str(tmp_path / "out"), "--max-minutes", "5", "--set=max_steps=6",
         "--set=val_every_n_steps=2",
         *sets, *[f"--generate-set={g}" for g in gen]], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    row = result["rows"][0]
    assert [p["step"] for p in row["points"]] == [2, 4, 6]  # 8 images at batch 4
    at_best = next(p for p in row["points"] if p["step"] == row["best_step"])
    assert at_best["test_r2"] == pytest.approx(row["run_test_r2"], abs=1e-6)  # the same weights, scored alike
    assert all(-1e3 < p["test_r2_bs"] <= 1 for p in row["points"])
    assert (tmp_path / "out" / "rows" / "default" / "train.json").exists()
    minutes = [p["minutes"] for p in row["points"]]
    assert result["ed"]["ed_minutes"] < minutes[0] and minutes == sorted(minutes)
    assert result["ed"]["same_as_reference"] in (False, None)  # a tiny set is not the paper's
    assert (tmp_path / "out" / "time_to_accuracy.png").stat().st_size > 0
