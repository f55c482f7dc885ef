"""Per-mapping training settings (issue 12): conf/mapping may carry lr_g, lr_d and norm, read by conf/model and
conf/generator, conf/discriminator through `oc.select` with the paper's values as the fallback, and the density
mappings carry their lr, schedule, EMA and output layer (conf/mapping/training/density.yaml); model=pix2pix_paper gives
the paper's values back; command-line overrides win."""

from __future__ import annotations

import itertools

import pytest
from tiny import CONF, compose_train
from torch import nn

from qdgan.train.run import build_model

PAPER_MAPPINGS = ["v_to_nint", "v_to_n0", "n0_to_nint"]  # the mappings to a density
DENSITY_TRAINING = {"lr_g": 1e-3, "lr_d": 1e-3, "lr_schedule": "cosine", "lr_decay_start": 0.5, "ema_decay": 0.999,
                    "density_output": "softplus", "adv_every": 2}  # conf/mapping/training/density.yaml (issue 12)
PAPER_TRAINING = {"lr_g": 2e-4, "lr_d": 2e-4, "lr_schedule": "linear", "lr_decay_start": 1.0, "ema_decay": 0.0,
                  "density_output": None, "adv_every": 1}
GENERATORS = sorted(p.stem for p in (CONF / "generator").glob("unet*.yaml"))
DISCRIMINATORS = sorted(p.stem for p in (CONF / "discriminator").glob("*.yaml"))
MAPPING_KEYS = {"name", "input", "target", "input_log_floor", "lambda_l1"}  # before the per-mapping fields


def norm_types(net: nn.Module) -> set[type]:
    return {type(m) for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))}


@pytest.mark.parametrize("mapping", PAPER_MAPPINGS)
def test_density_mappings_keep_batch_norm_and_train_with_their_settings_or_the_papers(mapping):
    pairs = zip(itertools.cycle(GENERATORS), DISCRIMINATORS) if mapping == "v_to_nint" else [(None, None)]
    for generator, discriminator in pairs:  # every option once; the other mappings with the default ones
        groups = [f"generator={generator}", f"discriminator={discriminator}"] if generator else []
        cfg = compose_train([f"mapping={mapping}", *groups])
        assert {k: cfg.model[k] for k in DENSITY_TRAINING} == DENSITY_TRAINING
        assert (cfg.generator.norm, cfg.discriminator.norm) == ("batch", "batch")
        assert set(cfg.mapping) == MAPPING_KEYS | set(DENSITY_TRAINING)
        paper = compose_train([f"mapping={mapping}", "model=pix2pix_paper", *groups])  # the paper's configuration
        assert {k: paper.model[k] for k in PAPER_TRAINING} == PAPER_TRAINING
        assert (paper.generator.norm, paper.discriminator.norm) == ("batch", "batch")


def test_nint_to_v_takes_its_own_length_not_the_density_settings():
    cfg = compose_train(["mapping=nint_to_v"])
    assert {k: cfg.model[k] for k in PAPER_TRAINING if k not in ("lr_g", "lr_d")} == {
        k: v for k, v in PAPER_TRAINING.items() if k not in ("lr_g", "lr_d")}
    assert cfg.max_steps == cfg.mapping.max_steps != 3000
    assert compose_train(["mapping=nint_to_v", "max_steps=500"]).max_steps == 500  # the command line wins
    assert compose_train(["mapping=nint_to_v", "study=mappings"]).max_steps == 3000  # a study fixes its budget
    for mapping in PAPER_MAPPINGS:
        assert compose_train([f"mapping={mapping}"]).max_steps == 3000  # train.yaml's


def test_nint_to_v_carries_its_own_lr_and_norm_into_the_built_model():
    cfg = compose_train(["mapping=nint_to_v", "generator.ngf=4", "discriminator.ndf=4"])
    assert cfg.mapping.lr_g != 2e-4 and cfg.mapping.norm != "batch"
    assert (cfg.model.lr_g, cfg.model.lr_d) == (cfg.mapping.lr_g, cfg.mapping.lr_d)
    model = build_model(cfg)
    assert (model.hparams.lr_g, model.hparams.lr_d) == (cfg.mapping.lr_g, cfg.mapping.lr_d)
    assert norm_types(model.generator) == norm_types(model.discriminator) == {nn.InstanceNorm2d}


def test_command_line_overrides_win_over_the_mapping():
    cfg = compose_train(["mapping=nint_to_v", "model.lr_g=1e-4", "generator.norm=batch", "discriminator=pixelgan1"])
    assert (cfg.model.lr_g, cfg.model.lr_d) == (1e-4, cfg.mapping.lr_d)
    assert (cfg.generator.norm, cfg.discriminator.norm) == ("batch", cfg.mapping.norm)
    # any mapping can be given the fields on the command line
    cfg = compose_train(["mapping=v_to_nint", "+mapping.norm=instance", "mapping.lr_d=3e-4"])
    assert (cfg.generator.norm, cfg.discriminator.norm, cfg.model.lr_g, cfg.model.lr_d) == (
        "instance", "instance", 1e-3, 3e-4)
