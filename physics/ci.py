"""Many-body Hamiltonian (eq. 4) in the Slater-determinant basis of the kept orbitals; ground state and its spin.

Determinants are products |α-string⟩|β-string⟩ in the sector S_z = 0 (even N) or ½ (odd N), which
contains every spin multiplet, so its lowest state is the ground state. In the orbital basis the
one-body part is diagonal (ε_a). Routes:
- N = 2 (the paper's data): H[(a,b),(c,d)] = (ε_a+ε_b) δ_ac δ_bd + (ac|bd), dense `eigh` of an n² × n²
  matrix. Kept float for float: the paper's data set depends on it.
- N ≥ 3: σ = Hc on α-string × β-string matrices with BLAS (physics/determinants.py), block Davidson with
  the diagonal of H (physics/davidson.py) for the lowest ROOTS states, then the ground state is chosen by
  `_choose` (degenerate multiplets: see there).
- `ground_state_direct`, any N: the earlier matrix-free "direct CI" (excitation lists, H = Σ h'_ps E_ps +
  ½ Σ (pq|rs) E_pq E_rs, Lanczos); ~25× slower at N = 3, kept as an independent reference.
All return the spin-summed one-body density matrix γ_pq = ⟨Ψ|Σ_σ c†_pσ c_qσ|Ψ⟩, from which the
density n(r) = Σ_pq γ_pq φ_p(r) φ_q(r) (eq. 7) follows, and the total spin S from ⟨S²⟩ = S(S+1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from physics import determinants
from physics.davidson import ConvergenceError, lowest_eigenpairs

__all__ = ["CIResult", "ConvergenceError", "ground_state", "ground_state_direct", "spin_occupations", "spin_of"]

DENSE_DIM = 400
"""Up to this many determinants H is built explicitly and fully diagonalized (dense `eigh`)."""
TOL_EV = 1e-9
"""Davidson: residual ‖Hc − Ec‖ (eV) of every wanted state; the energy is then exact to ~1e-15 eV and γ to
~TOL_EV/gap (measured against a 1e-12 eV solve: see docs/physics.md)."""
MAX_ITER = 200
ROOTS = 2
"""States the Davidson solve converges: the ground state and the next one, to see whether they are degenerate."""
DEGENERATE_EV = 1e-6
"""States within this energy of the lowest count as degenerate with it (see `_choose`)."""
SPIN_TOL = 1e-3
"""A chosen state's S from ⟨S²⟩ = S(S+1) must lie this close to a half-integer of N's parity."""


@dataclass(frozen=True)
class CIResult:
    energy_ev: float
    rdm1: np.ndarray  # (n, n) spin-summed one-body density matrix, trace = N
    dim: int  # number of determinants in the S_z sector
    spin: float  # total spin S of the ground state, from ⟨S²⟩ = S(S+1)
    iterations: int = 0  # Davidson iterations (0: a direct diagonalization)


def spin_occupations(n_electrons: int) -> tuple[int, int]:
    """(N_α, N_β) of the S_z = 0 or ½ sector."""
    return (n_electrons + 1) // 2, n_electrons // 2


def ground_state(eps_ev: np.ndarray, eri_ev: np.ndarray, n_electrons: int) -> CIResult:
    """Ground state of eq. 4 for orbital energies ε (n,) and (ac|bd) integrals (n, n, n, n), N ≥ 2.

    Raises ConvergenceError when the iterative solve misses its tolerance: never a wrong state.
    """
    if n_electrons == 2:
        return _ground_state_two(eps_ev, eri_ev)
    return _ground_state_strings(eps_ev, eri_ev, n_electrons)


def spin_of(s2: float, n_electrons: int) -> float:
    """S from ⟨S²⟩ = S(S+1), rounded to the nearest half-integer of N's parity."""
    s = 0.5 * (np.sqrt(1.0 + 4.0 * max(s2, 0.0)) - 1.0)
    return float(np.round(s - 0.5 * (n_electrons % 2)) + 0.5 * (n_electrons % 2))


def _ground_state_two(eps: np.ndarray, eri: np.ndarray) -> CIResult:
    n = eps.size
    h = eri.transpose(0, 2, 1, 3).reshape(n * n, n * n).copy()  # [(a,b),(c,d)] = (ac|bd)
    h[np.diag_indices_from(h)] += (eps[:, None] + eps[None, :]).ravel()
    w, v = sla.eigh(h, subset_by_index=[0, 0])
    c = v[:, 0].reshape(n, n)  # amplitude of c†_a↑ c†_b↓ |0⟩
    s2 = 1.0 - float(np.sum(c * c.T))  # S² = N_β − ⟨swap of the two electrons' orbitals⟩ at S_z = 0
    return CIResult(float(w[0]), c @ c.T + c.T @ c, n * n, spin_of(s2, 2))


def _ground_state_strings(eps: np.ndarray, eri: np.ndarray, n_electrons: int) -> CIResult:
    """N ≥ 3: H on α × β string matrices (physics/determinants.py), Davidson or, when small, dense `eigh`."""
    n = eps.size
    n_alpha, n_beta = spin_occupations(n_electrons)
    sec = determinants.sector(n, n_alpha, n_beta)
    v = determinants.pair_matrix(eri)
    h_alpha = determinants.string_hamiltonian(eps, v, n_alpha)  # (n_α str, n_α str)
    h_beta = determinants.string_hamiltonian(eps, v, n_beta)
    n_a, n_b = sec.shape

    def sigma(x: np.ndarray) -> np.ndarray:
        """H x for determinant vectors x (dim, m): H_α C + C H_βᵀ + Σ_{i∈α,j∈β} v_ij C."""
        c = np.ascontiguousarray(x.T).reshape(-1, n_a, n_b)  # (m, n_α str, n_β str)
        same = (h_alpha @ c + c @ h_beta.T).reshape(x.shape[1], -1).T
        return same + sec.opposite_spin(v, x)

    if sec.dim <= DENSE_DIM:
        unit = np.eye(sec.dim)
        h = np.hstack([sigma(unit[:, i:i + 64]) for i in range(0, sec.dim, 64)])
        energies, vectors = np.linalg.eigh(0.5 * (h + h.T))
        return _choose(sec, sigma, energies, vectors, 0)
    occ_a, occ_b = _occupation_matrix(sec.occ_alpha, n), _occupation_matrix(sec.occ_beta, n)
    coulomb = np.einsum("aacc->ac", eri)  # (aa|cc): α–β pairs on the diagonal of H
    diagonal = (np.diag(h_alpha)[:, None] + np.diag(h_beta)[None, :] + occ_a @ coulomb @ occ_b.T).ravel()
    roots = min(ROOTS, sec.dim)
    start = _start_vectors(diagonal, roots)
    while True:
        pairs = lowest_eigenpairs(sigma, diagonal, start, TOL_EV, MAX_ITER, 8 * roots + 8)
        if pairs.energies[-1] - pairs.energies[0] > DEGENERATE_EV or roots == sec.dim:
            return _choose(sec, sigma, pairs.energies, pairs.vectors, pairs.iterations)
        roots = min(roots + 2, sec.dim)  # every converged state is degenerate: look for more
        start = np.hstack([pairs.vectors, _start_vectors(diagonal, roots)[:, pairs.vectors.shape[1]:]])


def _choose(sec: determinants.Sector, sigma: Callable[[np.ndarray], np.ndarray], energies: np.ndarray,
            vectors: np.ndarray, iterations: int) -> CIResult:
    """The ground state among the lowest eigenpairs (ascending `energies`, orthonormal `vectors`).

    States within DEGENERATE_EV of the lowest are one degenerate level. Within it S² is diagonalized and the
    highest S is taken (what an infinitesimal magnetic field selects: its Zeeman term lowers the M_S = ±S
    component most; the spin-summed density is the same for every M_S of a multiplet). If several states of
    that S remain (a spatially degenerate level), γ is their equal-weight average, the T → 0 limit of the
    thermal state: independent of how the solver happened to rotate them, hence deterministic.
    """
    level = np.flatnonzero(energies - energies[0] <= DEGENERATE_EV)
    x = vectors[:, level]
    s2, u = np.linalg.eigh(sec.spin_square(x))
    spins = 0.5 * (np.sqrt(1.0 + 4.0 * np.maximum(s2, 0.0)) - 1.0)
    n_el = sec.n_alpha + sec.n_beta
    spin = spin_of(s2[-1], n_el)
    if np.abs(spins[-1] - spin) > SPIN_TOL:
        raise ConvergenceError(f"ground state is not a spin eigenstate: ⟨S²⟩ = {s2[-1]:.6f}, S = {spins[-1]:.6f} "
                               f"is not a half-integer of N = {n_el}'s parity to {SPIN_TOL}")
    y = x @ u[:, np.abs(spins - spin) <= SPIN_TOL]  # the states of the highest S
    energy = float(np.mean(np.einsum("ij,ij->j", y, sigma(y))))
    rdm1 = np.mean([sec.one_body_density(col) for col in y.T], axis=0)
    return CIResult(energy, 0.5 * (rdm1 + rdm1.T), sec.dim, spin, iterations)


def _occupation_matrix(occ: np.ndarray, n_orb: int) -> np.ndarray:
    """(n_strings, n_orb) 0/1: which orbitals each string occupies."""
    out = np.zeros((occ.shape[0], n_orb))
    np.put_along_axis(out, occ, 1.0, axis=1)
    return out


def _start_vectors(diagonal: np.ndarray, k: int) -> np.ndarray:
    """The k determinants of lowest diagonal energy, each with a small fixed random admixture, so that
    states of every spatial symmetry overlap the start (dim, k)."""
    start = np.random.default_rng(12345).uniform(-1e-3, 1e-3, (diagonal.size, k))
    start[np.argsort(diagonal, kind="stable")[:k], np.arange(k)] = 1.0
    return start


@lru_cache(maxsize=32)
def excitation_list(n_orb: int, n_el: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All nonzero ⟨I|E_pq|J⟩ = ±1 between strings of n_el electrons in n_orb orbitals.

    Returns (n_strings, I, J, pq, sign) with pq = p·n_orb + q, E_pq = c†_p c_q.
    """
    strings = list(combinations(range(n_orb), n_el))
    index = {s: i for i, s in enumerate(strings)}
    rows, cols, pqs, signs = [], [], [], []
    for j, occ in enumerate(strings):
        occ_set = set(occ)
        for q in occ:
            rest = [o for o in occ if o != q]
            sign_q = (-1) ** occ.index(q)
            for p in range(n_orb):
                if p in occ_set and p != q:
                    continue
                target = tuple(sorted([*rest, p]))
                sign_p = (-1) ** sum(o < p for o in rest)
                rows.append(index[target])
                cols.append(j)
                pqs.append(p * n_orb + q)
                signs.append(sign_q * sign_p)
    as_int = np.asarray
    return (len(strings), as_int(rows, dtype=np.int64), as_int(cols, dtype=np.int64),
            as_int(pqs, dtype=np.int64), as_int(signs, dtype=np.float64))


@lru_cache(maxsize=8)
def _excitation_operator(n_orb: int, n_alpha: int, n_beta: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Sparse A with A[(K, pq), J] = ⟨K|E_pq|J⟩ over determinants K = Kα·n_β_str + Kβ, and Aᵀ."""
    na, ia, ja, pqa, sa = excitation_list(n_orb, n_alpha)
    nb, ib, jb, pqb, sb = excitation_list(n_orb, n_beta)
    n2 = n_orb * n_orb
    beta = np.arange(nb)
    alpha = np.arange(na)
    # α excitations act for every β string; β excitations for every α string.
    rows_a = ((ia[:, None] * nb + beta) * n2 + pqa[:, None]).ravel()
    cols_a = (ja[:, None] * nb + beta).ravel()
    rows_b = ((alpha[:, None] * nb + ib) * n2 + pqb).ravel()
    cols_b = (alpha[:, None] * nb + jb).ravel()
    data = np.concatenate([np.repeat(sa, nb), np.tile(sb, na)])
    rows = np.concatenate([rows_a, rows_b])
    cols = np.concatenate([cols_a, cols_b])
    dim = na * nb
    a = sp.csr_matrix((data, (rows, cols)), shape=(dim * n2, dim))
    return a, a.T.tocsr()


def ground_state_direct(eps: np.ndarray, eri: np.ndarray, n_electrons: int, tol: float = 1e-10) -> CIResult:
    """Any N: the earlier direct CI (Lanczos above DENSE_DIM determinants). An independent reference for the
    string route; its state is whatever the sector's lowest eigenvector is (no degeneracy rule)."""
    n = eps.size
    n_alpha, n_beta = spin_occupations(n_electrons)
    a, a_t = _excitation_operator(n, n_alpha, n_beta)
    dim = a.shape[1]
    eri2 = eri.reshape(n * n, n * n)  # [(p,q),(r,s)] = (pq|rs)
    h1 = np.diag(eps) - 0.5 * np.einsum("pqqs->ps", eri)
    h1_flat = h1.ravel()

    def sigma(c: np.ndarray) -> np.ndarray:
        """H c for a block of vectors c (dim, m)."""
        m = c.shape[1]
        t1 = (a @ c).reshape(dim, n * n, m).transpose(0, 2, 1).reshape(dim * m, n * n)  # ⟨K|E_rs|c⟩
        g = 0.5 * (t1 @ eri2)  # Σ_rs (pq|rs) t1[K, rs]; eri2 is symmetric
        g = g.reshape(dim, m, n * n).transpose(0, 2, 1).reshape(dim * n * n, m)
        return a_t @ g + (t1 @ h1_flat).reshape(dim, m)

    if dim <= DENSE_DIM:
        h = np.hstack([sigma(np.eye(dim)[:, i : i + 32]) for i in range(0, dim, 32)])
        w, v = sla.eigh(0.5 * (h + h.T), subset_by_index=[0, 0])
        energy, c = float(w[0]), v[:, 0]
    else:
        op = spla.LinearOperator((dim, dim), matvec=lambda x: sigma(x.reshape(dim, 1)).ravel(),
                                 dtype=np.float64)
        v0 = _start_vector(dim)
        w, v = spla.eigsh(op, k=1, which="SA", v0=v0, tol=tol)
        energy, c = float(w[0]), v[:, 0]
    t1 = (a @ c).reshape(dim, n * n)
    rdm1 = (c @ t1).reshape(n, n)
    spin = np.nan
    if n_alpha and n_beta:
        sec = determinants.sector(n, n_alpha, n_beta)
        spin = spin_of(float(sec.spin_square(c[:, None] / np.linalg.norm(c))[0, 0]), n_electrons)
    return CIResult(energy, 0.5 * (rdm1 + rdm1.T), dim, spin)


def _start_vector(dim: int) -> np.ndarray:
    """Aufbau determinant (index 0: lowest orbitals occupied) plus a small fixed admixture."""
    v0 = np.random.default_rng(12345).uniform(-1e-3, 1e-3, dim)
    v0[0] = 1.0
    return v0
