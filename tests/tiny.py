"""Shared test helpers: the tiny data set (60 instances, 64² grid, cheap ED), tiny training runs and
composed app configs. Fixtures built on them are in conftest.py."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from physics.generate import generate, plan_from_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_PHYSICS = ["physics.n_basis=10", "physics.n_orbitals=4"]  # 64² grid, cheap ED (~3 ms)
MAPPINGS = ["v_to_n0", "v_to_nint", "n0_to_nint", "nint_to_v"]


def make_tiny_set(path: Path, n: int = 60, shard_size: int = 30) -> Path:
    """A data set of `n` instances under the paper's potential rules with TINY_PHYSICS."""
    gen = OmegaConf.load(CONF / "generate.yaml")
    gen.physics = OmegaConf.load(CONF / "physics" / "paper.yaml")
    gen.physics.n_basis, gen.physics.n_orbitals = 10, 4
    gen.n_samples, gen.shard_size, gen.workers, gen.out_dir = n, shard_size, 1, str(path)
    del gen["defaults"], gen["hydra"]
    generate(plan_from_config(gen), progress=False)
    return path


def tiny_overrides(data_path: Path, run_dir: Path, *extra: str) -> list[str]:
    """train.py overrides of a 6-step run on the tiny set, 4-channel networks."""
    return [*TINY_PHYSICS, f"data.path={data_path}", "data.n_train=40", "data.n_val=10", "data.n_test=10",
            "data.batch_size=4", "data.eval_batch_size=10", "generator.ngf=4", "discriminator.ndf=4",
            "max_steps=6", "val_every_n_steps=3", "logger=csv", "n_tracked=4", "history_every_n_steps=1",
            "trainer.enable_progress_bar=false", "data.generate.n_samples=60", "data.generate.shard_size=30",
            "data.generate.workers=1", f"hydra.run.dir={run_dir}", *extra]


def compose_app(name: str, overrides: list[str], hydra: bool = False):
    """The composed config of conf/<name>.yaml (with its hydra node when `hydra`)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=hydra)


def compose_train(overrides: list[str]):
    return compose_app("train", overrides, hydra=True)


def run_tiny(cfg, run_dir: Path) -> dict:
    """qdgan.train.run.run as train.py calls it, in `run_dir`."""
    from qdgan.train.run import run

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    train_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return run(train_cfg, run_dir)


def train_tiny(data: Path, run_dir: Path, mapping: str) -> Path:
    """A 2-step model of `mapping` on the tiny data set; returns its best checkpoint."""
    run_tiny(compose_train(tiny_overrides(data, run_dir, f"mapping={mapping}", "max_steps=2", "val_every_n_steps=2",
                                          "n_panels=1")), run_dir)
    return run_dir / "checkpoints" / "best.ckpt"
