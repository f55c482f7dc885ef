"""The ED demo app end to end, and the physics half staying free of torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from physics.demo import run

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_demo_writes_a_picture(tmp_path, capsys):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=[f"out={tmp_path / 'demo.png'}", "seed=5",
                                         "physics.grid=32", "physics.n_basis=16", "physics.n_orbitals=8"])
    out = run(cfg)
    assert out.exists()
    width, height = Image.open(out).size
    assert width > 2 * height  # three panels side by side
    printed = capsys.readouterr().out
    assert "∫n_int = 2.000000" in printed


@pytest.mark.slow
def test_demo_reports_bad_config_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "physics.demo", "physics.m_eff=-1",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=CONF.parent)
    assert proc.returncode != 0
    assert "m_eff" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_physics_does_not_import_torch():
    code = ("import sys, physics.ed, physics.potentials, physics.demo, physics.plots; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CONF.parent)
