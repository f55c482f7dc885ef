"""Lowest eigenpairs of a large symmetric operator given only σ = Hx: block Davidson–Liu.

Preconditioner: the diagonal D of H with Olsen's correction, t = (D − θ)⁻¹(r − εx) with ε such that t ⊥ x;
it keeps t from collapsing onto x when H is diagonally dominant, as in configuration interaction.
Converged when every wanted residual ‖Hx − θx‖ ≤ tol; otherwise ConvergenceError: a state that missed the
tolerance is never returned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from physics.single_particle import Eigenpairs

__all__ = ["ConvergenceError", "lowest_eigenpairs"]


class ConvergenceError(RuntimeError):
    """An iterative eigensolver did not reach its tolerance; the message gives the residual."""


def lowest_eigenpairs(sigma: Callable[[np.ndarray], np.ndarray], diagonal: np.ndarray, start: np.ndarray,
                      tol: float, max_iter: int, max_space: int) -> Eigenpairs:
    """The k = start.shape[1] lowest eigenpairs of H (dim × dim) from σ(X) = HX on blocks X (dim, m).

    `start` (dim, k): initial guesses; `max_space` (≥ 3k): subspace size at which the basis restarts from the
    2k lowest Ritz vectors. Raises ConvergenceError after `max_iter` iterations.
    """
    dim, k = start.shape
    keep = min(2 * k, dim)
    basis = np.empty((dim, max_space))  # orthonormal columns [:m]; h_basis = H basis
    h_basis = np.empty((dim, max_space))
    projected = np.empty((max_space, max_space))  # basisᵀ H basis
    m = _extend(basis, h_basis, projected, 0, start, sigma)
    res = np.full(k, np.inf)
    for it in range(1, max_iter + 1):
        theta, s = np.linalg.eigh(projected[:m, :m])
        x, hx = basis[:, :m] @ s[:, :keep], h_basis[:, :m] @ s[:, :keep]
        r = hx[:, :k] - x[:, :k] * theta[:k]
        res = np.linalg.norm(r, axis=0)
        if res.max() <= tol:
            return Eigenpairs(theta[:k].copy(), x[:, :k].copy(), float(res.max()), it)
        active = np.flatnonzero(res > tol)
        shift = diagonal[:, None] - theta[active]
        shift = np.where(np.abs(shift) < 1e-8, np.copysign(1e-8, shift), shift)
        xs = x[:, active] / shift
        eps = np.einsum("ij,ij->j", xs, r[:, active]) / np.einsum("ij,ij->j", xs, x[:, active])
        t = (r[:, active] - eps * x[:, active]) / shift
        if m + t.shape[1] > max_space:  # thick restart on the lowest Ritz vectors
            m = x.shape[1]
            basis[:, :m], h_basis[:, :m] = x, hx
            projected[:m, :m] = np.diag(theta[:m])
        m_new = _extend(basis, h_basis, projected, m, t, sigma)
        if m_new == m:
            break
        m = m_new
    raise ConvergenceError(f"Davidson stopped after {it} of at most {max_iter} iterations with residual "
                           f"‖Hx − θx‖ = {res.max():.2e} eV > tol = {tol:.0e} eV")


def _extend(basis: np.ndarray, h_basis: np.ndarray, projected: np.ndarray, m: int, t: np.ndarray,
            sigma: Callable[[np.ndarray], np.ndarray]) -> int:
    """Orthonormalize t against basis[:, :m] (two Gram–Schmidt passes, then QR), append it with H t and the
    new rows and columns of basisᵀ H basis; return the new size."""
    norms = np.linalg.norm(t, axis=0)
    for _ in range(2):
        t = t - basis[:, :m] @ (basis[:, :m].T @ t)
    q, rr = np.linalg.qr(t)
    q = q[:, np.abs(np.diag(rr)) > 1e-8 * norms]  # drop what lay in the span already
    n = q.shape[1]
    if n == 0:
        return m
    hq = sigma(q)
    basis[:, m:m + n], h_basis[:, m:m + n] = q, hq
    projected[:m + n, m:m + n] = basis[:, :m + n].T @ hq
    projected[m:m + n, :m] = projected[:m, m:m + n].T
    return m + n
