"""Demo: one random potential (paper §II or another family), its ED ground state, and a Fig. 1/2-style PNG.

    python -m physics.demo seed=3 out=outputs/demo.png physics.n_electrons=3
    python -m physics.demo potential=double_dot seed=3
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from physics import families
from physics.choices import exit_on_bad_choice
from physics.config import ConfigError, PhysicsConfig
from physics.ed import solve
from physics.plots import plot_row


def run(cfg: DictConfig) -> Path:
    physics = PhysicsConfig.from_mapping(OmegaConf.to_container(cfg.physics, resolve=True))
    node = cfg.get("potential")
    spec = families.from_mapping(None if node is None else OmegaConf.to_container(node, resolve=True))
    families.check(spec, physics)
    potential, family = families.random_potential_of(np.random.default_rng(cfg.seed), physics, spec)
    gs = solve(potential, physics)
    area = physics.h_nm**2
    print(f"{family}, seed {cfg.seed}: N = {physics.n_electrons}, E_int = {gs.energy:.6f} eV, "
          f"E_nonint = {gs.energy_nonint:.6f} eV, ∫n0 = {gs.n0.sum() * area:.6f}, "
          f"∫n_int = {gs.n_int.sum() * area:.6f}, solve {1e3 * sum(gs.timings_s.values()):.0f} ms")
    out = plot_row({"potential": potential, "n0": gs.n0, "n_int": gs.n_int}, physics.length_nm,
                   Path(cfg.out), title=f"{family}, N = {physics.n_electrons}, seed {cfg.seed}: "
                   f"E_int = {1e3 * gs.energy:.1f} meV, E_nonint = {1e3 * gs.energy_nonint:.1f} meV")
    print(f"picture: {out.resolve()}")
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    exit_on_bad_choice(Path(__file__).resolve().parents[1] / "conf", "physics.demo")
    main()
