"""What instance k of a data set is: its seed, its potential (paper §II or another family, physics/families.py)
and its ED solution (§III.1).

Instance k depends only on (seed, k), the physics config and the potential spec, never on worker count,
shard size or scheduling. This module is also what generator worker processes import, so it stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from physics.config import PhysicsConfig
from physics.ed import solve
from physics.families import FAMILIES, PAPER, Spec, random_potential_of

__all__ = ["InstanceError", "compute_instance", "instance_seed"]


class InstanceError(RuntimeError):
    """Generating or solving one instance failed; the message names the instance and its seed."""


def instance_seed(seed: int, k: int) -> int:
    """The 64-bit seed of instance k: the first word of SeedSequence(seed, spawn_key=(k,)).

    The potential of instance k is `random_potential_of(np.random.default_rng(instance_seed(seed, k)), cfg,
    spec)` (for `paper`: `random_potential(...)`); the value is stored per instance, so one instance can be
    regenerated from it alone.
    """
    return int(np.random.SeedSequence(seed, spawn_key=(k,)).generate_state(1, np.uint64)[0])


def compute_instance(k: int, seed: int, cfg: PhysicsConfig, spec: Spec = PAPER) -> dict[str, Any]:
    """Potential (eV), n0 and n_int (nm⁻²) as float32, energies (eV), seed, family code and ground-state spin S
    of instance k (a solver that misses its tolerance raises: InstanceError, never a wrong density)."""
    s = instance_seed(seed, k)
    try:
        potential, family = random_potential_of(np.random.default_rng(s), cfg, spec)
        state = solve(potential, cfg)
    except Exception as err:
        raise InstanceError(f"instance {k} (instance seed {s}, base seed {seed}) failed: "
                            f"{type(err).__name__}: {err}") from err
    return {"index": k, "seed": s, "potential": potential.astype(np.float32),
            "n0": state.n0.astype(np.float32), "n_int": state.n_int.astype(np.float32),
            "energy": state.energy, "energy_nonint": state.energy_nonint, "family": FAMILIES.index(family),
            "spin": state.spin}
