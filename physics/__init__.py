"""Physics half of qdgan: random quantum-well potentials and exact diagonalization (numpy/scipy only)."""

from physics.config import PhysicsConfig

__all__ = ["PhysicsConfig"]
