"""PhysicsConfig and its Hydra mirror conf/physics/paper.yaml stay in sync."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from physics.config import ConfigError, PhysicsConfig

PAPER_YAML = Path(__file__).resolve().parents[1] / "conf" / "physics" / "paper.yaml"


def test_paper_yaml_mirrors_the_dataclass_defaults():
    cfg = OmegaConf.load(PAPER_YAML)
    fields = {f.name for f in dataclasses.fields(PhysicsConfig)}
    assert set(cfg.keys()) - {"_target_"} == fields
    assert instantiate(cfg) == PhysicsConfig()


def test_from_mapping_names_unknown_fields():
    with pytest.raises(ConfigError, match="n_electron"):
        PhysicsConfig.from_mapping({"n_electron": 2})
    assert PhysicsConfig.from_mapping({"_target_": "x", "grid": 32, "n_basis": 16}).grid == 32
