"""Slater determinants of the S_z = 0 or ½ sector as α-string × β-string matrices, and eq. 4 acting on them
with BLAS: σ = Hc, the diagonal of H, the spin-summed one-body density matrix and ⟨S²⟩.

A determinant vector C (n_α strings × n_β strings, strings in lexicographic order) is the first-quantized
amplitude ψ(x_1..x_Nα; y_1..y_Nβ), antisymmetric in the x's and in the y's, at sorted orbitals
(`Sector.embedding`).
On ψ, H = Σ_i ε_i + Σ_{i<j} v_ij with V[(a,b),(a',b')] = (aa'|bb'). By antisymmetry every pair acts like
the first pair of its kind:
  same spin:      Σ_{i<j∈α} v_ij → H_α C,  H_α the (n_α × n_α) string Hamiltonian, built once per solve;
  opposite spin:  Σ_{i∈α,j∈β} v_ij ψ = N_α N_β 𝒜_α 𝒜_β v_{x1 y1} ψ, one (n² × n²)·(n² × n^(N−2)) matmul.
So σ = H_α C + C H_βᵀ + (αβ term): no loop over determinants or orbital pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations, permutations

import numpy as np
import scipy.sparse as sp

__all__ = ["Sector", "pair_matrix", "sector", "string_hamiltonian", "strings"]


@lru_cache(maxsize=32)
def strings(n_orb: int, n_el: int) -> np.ndarray:
    """(n_strings, n_el) occupied orbitals of every string of n_el electrons, ascending, lexicographic order."""
    return np.array(list(combinations(range(n_orb), n_el)), dtype=np.int64).reshape(-1, n_el)


def _permutations(k: int) -> tuple[np.ndarray, np.ndarray]:
    """All k! permutations (k!, k) and their signs (k!,)."""
    perms = np.array(list(permutations(range(k))), dtype=np.int64).reshape(-1, k)
    inversions = (perms[:, :, None] > perms[:, None, :]) & np.triu(np.ones((k, k), dtype=bool), 1)
    return perms, np.where(inversions.sum(axis=(1, 2)) % 2, -1.0, 1.0)


def _positions(occ: np.ndarray, strides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat offsets (n_strings, k!) of every permutation of every string in a tensor with these axis
    strides (one per electron), and the permutations' signs (k!,)."""
    perms, signs = _permutations(occ.shape[1])
    return occ[:, perms] @ strides, signs  # (n_str, k!, k) · (k,)


def pair_matrix(eri: np.ndarray) -> np.ndarray:
    """V[(a,b),(a',b')] = (aa'|bb') (n², n²): the interaction of two electrons in orbital-pair space (eq. 4)."""
    n = eri.shape[0]
    return eri.transpose(0, 2, 1, 3).reshape(n * n, n * n)


def string_hamiltonian(eps: np.ndarray, v: np.ndarray, n_el: int) -> np.ndarray:
    """⟨I|Σ_i ε_i + Σ_{i<j} v_ij|J⟩ (n_str, n_str) between strings of n_el electrons of one spin.

    Columns: ψ_J embedded, v_12 applied as a matmul, antisymmetrized back at sorted orbitals times C(n_el, 2).
    """
    n = eps.size
    occ = strings(n, n_el)
    h = np.diag(eps[occ].sum(axis=1))
    if n_el < 2:
        return h
    pos, signs = _positions(occ, n ** np.arange(n_el - 1, -1, -1))
    n_str = occ.shape[0]
    psi = np.zeros((n**n_el, n_str))  # column J: ψ_J on the (x_1, ..., x_k) grid
    psi[pos, np.arange(n_str)[:, None]] = signs
    t = (v @ psi.reshape(n * n, -1)).reshape(n**n_el, n_str)
    h2 = np.einsum("p,ipj->ij", signs, t[pos]) * (math.comb(n_el, 2) / math.factorial(n_el))
    return h + 0.5 * (h2 + h2.T)


@dataclass(frozen=True)
class Sector:
    """The S_z sector of n_α + n_β electrons in n orbitals; ψ's axes are (x1, y1, x2..x_Nα, y2..y_Nβ).

    Determinant K = Iα·(n_β strings) + Iβ. `embedding` (n^N, dim): ψ = embedding @ c puts every permutation
    of each determinant's orbitals, with its sign, into ψ; its transpose sums them back.
    """

    n_orb: int
    n_alpha: int
    n_beta: int
    occ_alpha: np.ndarray  # (n_α strings, N_α)
    occ_beta: np.ndarray  # (n_β strings, N_β)
    embedding: sp.csr_matrix  # (n^N, dim), N_α! N_β! entries ±1 per column
    extraction: sp.csr_matrix  # (dim, n^N) = N_α N_β/(N_α! N_β!) · embeddingᵀ: N_α N_β 𝒜_α 𝒜_β at sorted orbitals

    @property
    def shape(self) -> tuple[int, int]:
        return self.occ_alpha.shape[0], self.occ_beta.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_perm(self) -> int:
        return math.factorial(self.n_alpha) * math.factorial(self.n_beta)

    def opposite_spin(self, v: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Σ_{i∈α, j∈β} v_ij c (dim, m): v_{x1 y1} as one matmul V (n², n²) @ ψ (n², n^(N−2)·m)."""
        n = self.n_orb
        t = v @ (self.embedding @ c).reshape(n * n, -1)  # (n², n^(N−2)·m)
        return self.extraction @ t.reshape(self.embedding.shape[0], -1)

    def one_body_density(self, c: np.ndarray) -> np.ndarray:
        """Spin-summed γ_pq = Σ_σ ⟨c|c†_pσ c_qσ|c⟩/⟨c|c⟩ (n, n) of one determinant vector c (dim,)."""
        n = self.n_orb
        psi = (self.embedding @ c).reshape(n, n, -1)
        g_alpha = np.einsum("pyr,qyr->pq", psi, psi)
        g_beta = np.einsum("xpr,xqr->pq", psi, psi)
        return (self.n_alpha * g_alpha + self.n_beta * g_beta) / (psi.ravel() @ psi.ravel())

    def spin_square(self, c: np.ndarray) -> np.ndarray:
        """⟨c_i|S²|c_j⟩ (m, m) for orthonormal determinant vectors c (dim, m).

        S² = S_z(S_z+1) + S₋S₊ and S₋S₊ = N_β − Σ_pq E^α_pq E^β_qp, where Σ_pq E^α_pq E^β_qp swaps the orbitals of
        every α electron with every β electron: N_α N_β ⟨ψ|P_{x1 y1}|ψ⟩/⟨ψ|ψ⟩, and ⟨ψ|ψ⟩ = N_α! N_β! ⟨c|c⟩.
        """
        n, m = self.n_orb, c.shape[1]
        psi = (self.embedding @ c).reshape(n, n, -1, m)
        swap = np.einsum("xyri,yxrj->ij", psi, psi) / self.n_perm
        sz = 0.5 * (self.n_alpha - self.n_beta)
        return (sz * (sz + 1) + self.n_beta) * np.eye(m) - self.n_alpha * self.n_beta * swap


@lru_cache(maxsize=8)
def sector(n_orb: int, n_alpha: int, n_beta: int) -> Sector:
    """The sector's strings and embedding (cached: they depend only on the sizes)."""
    if n_alpha < 1 or n_beta < 1:
        raise ValueError(f"a sector needs electrons of both spins, got N_α={n_alpha}, N_β={n_beta}")
    occ_a, occ_b = strings(n_orb, n_alpha), strings(n_orb, n_beta)
    n_el = n_alpha + n_beta
    stride = n_orb ** np.arange(n_el - 1, -1, -1)  # axes (x1, y1, x2..x_Nα, y2..y_Nβ)
    pos_a, sign_a = _positions(occ_a, stride[[0, *range(2, n_alpha + 1)]])
    pos_b, sign_b = _positions(occ_b, stride[[1, *range(n_alpha + 1, n_el)]])
    pos = pos_a[:, None, :, None] + pos_b[None, :, None, :]  # (n_α str, n_β str, N_α!, N_β!)
    sign = np.broadcast_to(sign_a[:, None] * sign_b[None, :], pos.shape).ravel()
    dim = occ_a.shape[0] * occ_b.shape[0]
    det = np.repeat(np.arange(dim), pos[0, 0].size)
    embedding = sp.csr_matrix((sign, (pos.ravel(), det)), shape=(n_orb**n_el, dim))
    scale = n_alpha * n_beta / (math.factorial(n_alpha) * math.factorial(n_beta))
    return Sector(n_orb, n_alpha, n_beta, occ_a, occ_b, embedding, (scale * embedding.T).tocsr())
