"""The Fourier neural operator generator (issue 12, model comparison): the `fno` extra, the UNetGenerator
interface, training through train.py's path, and one-line errors without the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tiny import CONF, ROOT, compose_train, run_tiny, tiny_overrides

from qdgan import fno

needs_fno = pytest.mark.skipif(not fno.available(), reason='neuraloperator is not installed: pip install -e ".[fno]"')
SMALL = {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 2}


@pytest.fixture
def no_neuralop(monkeypatch):
    """neuraloperator hidden: `import neuralop` fails as if it were not installed."""
    monkeypatch.setitem(sys.modules, "neuralop", None)
    monkeypatch.setitem(sys.modules, "neuralop.models", None)


def test_missing_extra_is_one_line_naming_it(no_neuralop):
    with pytest.raises(fno.MissingExtra) as err:
        fno.FNOGenerator(**SMALL)
    message = str(err.value)
    assert "\n" not in message and 'pip install -e ".[fno]"' in message and "neuraloperator" in message
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)
    with pytest.raises(fno.MissingExtra):
        fno.check_generator("qdgan.fno.FNOGenerator")
    fno.check_generator("qdgan.networks.UNetGenerator")  # other generators need nothing


def test_train_py_without_the_extra_ends_in_one_line(tmp_path):
    hide = tmp_path / "hide"
    (hide / "neuralop").mkdir(parents=True)
    (hide / "neuralop" / "__init__.py").write_text("raise ImportError('neuralop hidden by the test')\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "train.py", "generator=fno", "model.adv_weight=0", "logger=csv",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ['error: generator=fno needs the neuraloperator package: '
                                                'pip install -e ".[fno]"']
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hidden_channels": 0}, "hidden_channels=0"),
    ({"n_modes": [4]}, r"n_modes=\[4\]"),
    ({"n_modes": [40, 40]}, r"n_modes=\[40, 40\]"),
    ({"domain_padding": 1.5}, "domain_padding=1.5"),
])
def test_bad_arguments_fail_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fno.FNOGenerator(**(SMALL | kwargs))


@needs_fno
def test_same_interface_as_the_unet():
    gen = instantiate(OmegaConf.load(CONF / "generator" / "fno.yaml"))
    assert isinstance(gen, fno.FNOGenerator) and gen.image_size == 64
    x = 5 * torch.randn(3, 1, 64, 64)
    y = gen(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    two = fno.FNOGenerator(in_channels=2, out_channels=1, **SMALL)  # N as a second input channel
    assert two(torch.randn(2, 2, 64, 64)).shape == (2, 1, 64, 64)


@needs_fno
def test_spectral_weights_are_real_parameters_with_the_same_forward():
    from neuralop.models import FNO

    torch.manual_seed(0)
    plain = FNO(n_modes=(4, 4), in_channels=1, out_channels=1, hidden_channels=8, n_layers=2)
    complex_count = sum(p.numel() for p in plain.parameters() if p.is_complex())
    x = torch.randn(2, 1, 64, 64)
    expected = plain(x)
    real = fno.real_parameters(plain)
    assert complex_count > 0 and not any(p.is_complex() for p in real.parameters())
    torch.testing.assert_close(real(x), expected)
    gen = fno.FNOGenerator(**SMALL)
    opt = torch.optim.Adam(gen.parameters(), fused=True)  # fused Adam refuses complex parameters
    gen(x).square().mean().backward()
    opt.step()
    state = gen.state_dict()
    assert all(torch.is_tensor(v) for v in state.values())  # no neuralop '_metadata' entry
    again = fno.FNOGenerator(**SMALL)
    again.load_state_dict(state)
    torch.testing.assert_close(again(x), gen(x))


def fno_overrides(data: Path, run_dir: Path, *extra: str) -> list[str]:
    small = [f"generator.{k}={v}".replace(" ", "") for k, v in SMALL.items()]
    return [o for o in tiny_overrides(data, run_dir, "generator=fno", *small, "max_steps=2", "val_every_n_steps=2",
                                      "n_panels=1", *extra) if not o.startswith("generator.ngf")]


@needs_fno
@pytest.mark.parametrize("adv_weight", [0, 1])
def test_trains_and_predicts_like_a_unet(tiny_data, tmp_path, adv_weight):
    from qdgan.pix2pix import Pix2Pix

    result = run_tiny(compose_train(fno_overrides(tiny_data, tmp_path, f"model.adv_weight={adv_weight}")), tmp_path)
    assert result["generator_steps"] == 2 and "ssim_pm1" in result["mean"]
    model = Pix2Pix.load_from_checkpoint(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu")
    assert isinstance(model.generator, fno.FNOGenerator)
    assert (model.discriminator is None) == (adv_weight == 0)
    assert model.predict_maps(torch.rand(3, 64, 64)).shape == (3, 64, 64)
