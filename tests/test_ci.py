"""Many-body solver against an independent Fock-space construction of eq. 4 (Jordan–Wigner)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from physics import ci


def physical_integrals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Orbital energies and (ac|bd) of n random real orbitals with a positive-definite kernel."""
    rng = np.random.default_rng(seed)
    g = 12
    phi = np.linalg.qr(rng.standard_normal((g, n)))[0].T  # orthonormal "orbitals" on g points
    x = np.arange(g)
    kernel = 0.3 / (1.0 + np.abs(x[:, None] - x[None, :]))  # positive definite (Pólya-type)
    rho = phi[:, None, :] * phi[None, :, :]  # (n, n, g)
    eri = np.einsum("acx,xy,bdy->acbd", rho, kernel, rho)
    eps = np.sort(rng.uniform(0.0, 1.0, n))
    return eps, eri


def fock_ground_state(eps: np.ndarray, eri: np.ndarray, n_el: int) -> tuple[float, np.ndarray]:
    """Brute force: c_{iσ} as 2^(2n) matrices, H = Σ ε n + ½ Σ V_abcd c†_a c†_b c_d c_c (eq. 4)."""
    n = eps.size
    modes = 2 * n  # spin-orbital (a, σ) → mode 2a + σ
    dim = 2**modes
    z = sp.diags([1.0, -1.0])
    lower = sp.csr_matrix(np.array([[0.0, 1.0], [0.0, 0.0]]))  # |1⟩ → |0⟩
    ops = []
    for k in range(modes):
        m = sp.identity(1, format="csr")
        for j in range(modes):
            m = sp.kron(m, z if j < k else (lower if j == k else sp.identity(2)), format="csr")
        ops.append(m)
    c = lambda a, s: ops[2 * a + s]  # noqa: E731
    h = sp.csr_matrix((dim, dim))
    for a in range(n):
        for s in range(2):
            h += eps[a] * c(a, s).T @ c(a, s)
    for a in range(n):
        for b in range(n):
            for cc in range(n):
                for d in range(n):
                    if eri[a, cc, b, d] == 0:
                        continue
                    for s in range(2):
                        for t in range(2):
                            h += 0.5 * eri[a, cc, b, d] * (
                                c(a, s).T @ c(b, t).T @ c(d, t) @ c(cc, s))
    number = sum(op.T @ op for op in ops).diagonal()
    sz = sum(c(a, 0).T @ c(a, 0) - c(a, 1).T @ c(a, 1) for a in range(n)).diagonal()
    keep = np.flatnonzero(np.isclose(number, n_el) & np.isclose(sz, n_el % 2))
    w, v = np.linalg.eigh(h.toarray()[np.ix_(keep, keep)])
    psi = np.zeros(dim)
    psi[keep] = v[:, 0]
    rdm = np.array([[sum(psi @ (c(p, s).T @ (c(q, s) @ psi)) for s in range(2)) for q in range(n)]
                     for p in range(n)])
    return float(w[0]), rdm


@pytest.mark.parametrize("n_el", [2, 3, 4])
def test_ground_state_matches_fock_space_construction(n_el):
    eps, eri = physical_integrals(4, seed=n_el)
    expected_e, expected_rdm = fock_ground_state(eps, eri, n_el)
    result = ci.ground_state(eps, eri, n_el)
    assert result.energy_ev == pytest.approx(expected_e, abs=1e-10)
    # the 1-RDM is unique only for a non-degenerate ground state; these random cases are
    np.testing.assert_allclose(result.rdm1, expected_rdm, atol=1e-8)


def test_direct_ci_agrees_with_two_electron_route():
    eps, eri = physical_integrals(7, seed=9)
    fast = ci.ground_state(eps, eri, 2)
    direct = ci.ground_state_direct(eps, eri, 2, tol=1e-12)
    assert direct.energy_ev == pytest.approx(fast.energy_ev, abs=1e-12)
    np.testing.assert_allclose(direct.rdm1, fast.rdm1, atol=1e-10)


def test_lanczos_route_matches_dense_route(monkeypatch):
    eps, eri = physical_integrals(8, seed=4)  # N = 3: dim 28·8 = 224 determinants
    dense = ci.ground_state_direct(eps, eri, 3)
    monkeypatch.setattr(ci, "DENSE_DIM", 10)
    sparse = ci.ground_state_direct(eps, eri, 3)
    assert sparse.energy_ev == pytest.approx(dense.energy_ev, abs=1e-9)
    np.testing.assert_allclose(sparse.rdm1, dense.rdm1, atol=1e-6)


def test_excitation_list_signs():
    """E_pq on two electrons in three orbitals: c†_2 c_0 |0,1⟩ = −|1,2⟩ (c_0 then c†_2 past orbital 1)."""
    n_str, rows, cols, pq, sign = ci.excitation_list(3, 2)
    strings = [(0, 1), (0, 2), (1, 2)]
    assert n_str == 3
    hit = (cols == strings.index((0, 1))) & (pq == 2 * 3 + 0)
    assert rows[hit].tolist() == [strings.index((1, 2))]
    assert sign[hit].tolist() == [-1.0]
    # number operator E_pp on occupied p is +1 on the same string
    diag = (rows == cols) & (pq // 3 == pq % 3)
    assert np.all(sign[diag] == 1.0)
