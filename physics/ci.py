"""Many-body Hamiltonian (eq. 4) in the Slater-determinant basis of the kept orbitals; ground state.

Determinants are products |α-string⟩|β-string⟩ in the sector S_z = 0 (even N) or ½ (odd N), which
contains every spin multiplet, so its lowest state is the ground state. In the orbital basis the
one-body part is diagonal (ε_a). Two routes:
- N = 2: H[(a,b),(c,d)] = (ε_a+ε_b) δ_ac δ_bd + (ac|bd), dense `eigh` of an n² × n² matrix.
- any N: matrix-free σ = H c with excitation lists (the "direct CI" of quantum-chemistry codes),
  H = Σ h'_ps E_ps + ½ Σ (pq|rs) E_pq E_rs, h'_ps = ε_p δ_ps − ½ Σ_q (pq|qs); sparse Lanczos.
Both return the spin-summed one-body density matrix γ_pq = ⟨Ψ|Σ_σ c†_pσ c_qσ|Ψ⟩, from which the
density n(r) = Σ_pq γ_pq φ_p(r) φ_q(r) (eq. 7) follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

DENSE_DIM = 400
"""Below this many determinants the general route builds H explicitly and uses dense `eigh`."""


@dataclass(frozen=True)
class CIResult:
    energy_ev: float
    rdm1: np.ndarray  # (n, n) spin-summed one-body density matrix, trace = N
    dim: int  # number of determinants in the S_z sector


def spin_occupations(n_electrons: int) -> tuple[int, int]:
    """(N_α, N_β) of the S_z = 0 or ½ sector."""
    return (n_electrons + 1) // 2, n_electrons // 2


def ground_state(eps_ev: np.ndarray, eri_ev: np.ndarray, n_electrons: int, tol: float = 1e-10) -> CIResult:
    """Lowest eigenstate of eq. 4 for orbital energies ε (n,) and (ac|bd) integrals (n, n, n, n)."""
    if n_electrons == 2:
        return _ground_state_two(eps_ev, eri_ev)
    return _ground_state_direct(eps_ev, eri_ev, n_electrons, tol)


def _ground_state_two(eps: np.ndarray, eri: np.ndarray) -> CIResult:
    n = eps.size
    h = eri.transpose(0, 2, 1, 3).reshape(n * n, n * n).copy()  # [(a,b),(c,d)] = (ac|bd)
    h[np.diag_indices_from(h)] += (eps[:, None] + eps[None, :]).ravel()
    w, v = sla.eigh(h, subset_by_index=[0, 0])
    c = v[:, 0].reshape(n, n)  # amplitude of c†_a↑ c†_b↓ |0⟩
    return CIResult(float(w[0]), c @ c.T + c.T @ c, n * n)


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


def _ground_state_direct(eps: np.ndarray, eri: np.ndarray, n_electrons: int, tol: float) -> CIResult:
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
    return CIResult(energy, 0.5 * (rdm1 + rdm1.T), dim)


def _start_vector(dim: int) -> np.ndarray:
    """Aufbau determinant (index 0: lowest orbitals occupied) plus a small fixed admixture."""
    v0 = np.random.default_rng(12345).uniform(-1e-3, 1e-3, dim)
    v0[0] = 1.0
    return v0
