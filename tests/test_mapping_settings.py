"""Per-mapping learning rates and normalization (issue 12): conf/mapping may carry lr_g, lr_d and norm, read by
conf/model and conf/generator, conf/discriminator through `oc.select` with the paper's values as the fallback; the
other mappings' configs (and so their run dirs' settings) stay as they were, and command-line overrides win."""

from __future__ import annotations

import itertools

import pytest
from tiny import CONF, compose_train
from torch import nn

from qdgan.train.run import build_model

PAPER_MAPPINGS = ["v_to_nint", "v_to_n0", "n0_to_nint"]
GENERATORS = sorted(p.stem for p in (CONF / "generator").glob("unet*.yaml"))
DISCRIMINATORS = sorted(p.stem for p in (CONF / "discriminator").glob("*.yaml"))
MAPPING_KEYS = {"name", "input", "target", "input_log_floor", "lambda_l1"}  # before the per-mapping fields


def norm_types(net: nn.Module) -> set[type]:
    return {type(m) for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))}


@pytest.mark.parametrize("mapping", PAPER_MAPPINGS)
def test_paper_mappings_keep_paper_lr_and_batch_norm_in_every_network(mapping):
    pairs = zip(itertools.cycle(GENERATORS), DISCRIMINATORS) if mapping == "v_to_nint" else [(None, None)]
    for generator, discriminator in pairs:  # every option once; the other mappings with the default ones
        groups = [f"generator={generator}", f"discriminator={discriminator}"] if generator else []
        cfg = compose_train([f"mapping={mapping}", *groups])
        assert (cfg.model.lr_g, cfg.model.lr_d) == (2e-4, 2e-4)
        assert (cfg.generator.norm, cfg.discriminator.norm) == ("batch", "batch")
        # no new keys: a finished run's config.yaml from before still matches (rundir.Settings)
        assert set(cfg.mapping) == MAPPING_KEYS


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
    cfg = compose_train(["mapping=v_to_nint", "+mapping.norm=instance", "+mapping.lr_d=1e-3"])
    assert (cfg.generator.norm, cfg.discriminator.norm, cfg.model.lr_g, cfg.model.lr_d) == (
        "instance", "instance", 2e-4, 1e-3)
