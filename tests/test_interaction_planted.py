"""Planted checks of the interaction basis (METHODS.md section 3), in float64 to ~1e-8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featuregeo.tl.interaction.basis import build_bases, eig_desc, extend, gram_matrix, m_prime, extended_step
from featuregeo.tl.interaction.edges import convergence, edge_matrix, quadrature, top_fraction

TOL = 1e-8


def affine(W, b, act=None):
    Wt, bt = torch.as_tensor(W), torch.as_tensor(b)

    def step(x, c):
        y = x @ Wt.T + c * bt
        return act(y) if act is not None else y

    return step


def run(steps, x0):
    acts = [x0]
    for s in steps:
        x = torch.as_tensor(acts[-1])
        acts.append(s(x, torch.ones(x.shape[:-1] + (1,), dtype=x.dtype)).numpy())
    return acts


def folded(W, b):
    d_out, d_in = W.shape
    Wf = np.zeros((d_out + 1, d_in + 1))
    Wf[:d_out, :d_in], Wf[:d_out, d_in], Wf[d_out, d_in] = W, b, 1.0
    return Wf


def same_up_to_sign(A, B):
    """Columns of A equal columns of B up to sign; returns the max abs difference (relative to max |B|)."""
    s = np.sign(np.sum(A * B, axis=0))
    s[s == 0] = 1
    return np.max(np.abs(A * s - B)) / np.max(np.abs(B))


@pytest.fixture
def linear_net(rng):
    x0 = rng.normal(size=(40, 3, 4)) + np.array([0.5, -1.0, 0.0, 2.0])
    W1, b1 = rng.normal(size=(5, 4)), rng.normal(size=5)
    W2, b2 = rng.normal(size=(3, 5)), rng.normal(size=3)
    steps = [affine(W1, b1), affine(W2, b2)]
    return x0, (W1, b1, W2, b2), steps, run(steps, x0)


def test_gram_folds_the_bias(rng):
    x = rng.normal(size=(10, 2, 3)) + 4.0
    G, n = gram_matrix(x)
    f = extend(x.reshape(-1, 3))
    assert n == 20 and np.allclose(G, f.T @ f / 20, atol=1e-14) and G[-1, -1] == pytest.approx(1.0)


def test_two_layer_linear_network_matches_the_closed_form(linear_net):
    x0, (W1, b1, W2, b2), steps, acts = linear_net
    bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
    # the last layer: plain PCA of [f, 1]
    D2, U2 = eig_desc(gram_matrix(acts[2])[0])
    r2 = int(np.sum(D2 > 1e-9 * D2[0]))
    assert bases[2].method == "pca" and bases[2].n_kept == r2 == 4
    assert same_up_to_sign(bases[2].C, U2[:, :r2]) < TOL
    # layer 1 by hand: M' = W~2^T C2 C2^T W~2, M = D^1/2 U^T M' U D^1/2, C = U D^-1/2 V L^1/2
    G1 = gram_matrix(acts[1])[0]
    D1, U1 = eig_desc(G1)
    r1 = int(np.sum(D1 > 1e-9 * D1[0]))
    D1, U1 = D1[:r1], U1[:, :r1]
    K = bases[2].C.T @ folded(W2, b2)
    M = np.sqrt(D1)[:, None] * (U1.T @ K.T @ K @ U1) * np.sqrt(D1)[None, :]
    L, V = eig_desc(M)
    q = int(np.sum(L > 1e-9 * L[0]))
    C1 = U1 / np.sqrt(D1) @ V[:, :q] * np.sqrt(L[:q])
    assert bases[1].n_gram == r1 == 5 and bases[1].n_kept == q == 4
    assert same_up_to_sign(bases[1].C, C1) < TOL
    # closed form of a linear layer: its importances are the next layer's PCA eigenvalues
    assert np.allclose(bases[1].importance, D2[:r2], rtol=TOL, atol=TOL * D2[0])
    # the features' second moment is exactly diag(L), and P inverts C on the kept features
    f1 = bases[1].features(acts[1].reshape(-1, 5))
    assert np.allclose(f1.T @ f1 / len(f1), np.diag(bases[1].importance), atol=TOL * bases[1].importance[0])
    assert np.allclose(bases[1].C.T @ bases[1].P, np.eye(q), atol=TOL)


def test_stochastic_m_prime_is_unbiased_and_its_error_is_reported(rng):
    W = rng.normal(size=(4, 4))
    mix = torch.tril(torch.ones(3, 3, dtype=torch.float64)) / torch.arange(1, 4, dtype=torch.float64)[:, None]

    def step(x, c):  # attention-like mixing over positions, then tanh
        return torch.tanh(torch.einsum("ts,bsd->btd", mix, x) @ torch.as_tensor(W).T + 0.3 * c)

    x = rng.normal(size=(30, 3, 4))
    Cn = np.linalg.qr(rng.normal(size=(5, 5)))[0][:, :3]
    g = extended_step(step, Cn, torch.float64)
    exact, se0, n_exact = m_prime(x, g, mode="exact", dtype="float64")
    assert np.isnan(se0) and n_exact == 3 * 3
    # brute force: the full Jacobian of one row
    brute = np.zeros((5, 5))
    for r in range(30):
        J = torch.autograd.functional.jacobian(g, extend(torch.as_tensor(x[r:r + 1]))).reshape(9, 3, 5).numpy()
        brute += np.einsum("asj,ask->jk", J, J)
    assert np.allclose(exact, brute / 90, atol=1e-12)
    errs, ses = [], []
    for s in range(6):
        est, se, n = m_prime(x, g, mode="stochastic", n_sources=16, dtype="float64", seed=s)
        errs.append(np.linalg.norm(est - exact) / np.linalg.norm(exact))
        ses.append(se)
        assert n == 16
    # the reported standard error matches the real error in size (within a factor of 3 on average)
    assert 1 / 3 < np.mean(errs) / np.mean(ses) < 3
    many, se_many, _ = m_prime(x, g, mode="stochastic", n_sources=512, dtype="float64", seed=9)
    assert np.linalg.norm(many - exact) / np.linalg.norm(exact) < 4 * se_many and se_many < np.mean(ses) / 4


def test_invariant_under_reparameterisation(rng):
    x0 = rng.normal(size=(60, 2, 4))
    W1, b1 = rng.normal(size=(5, 4)), rng.normal(size=5)
    W2, b2 = rng.normal(size=(5, 5)), rng.normal(size=5)
    W3, b3 = rng.normal(size=(3, 5)), rng.normal(size=3)
    A = rng.normal(size=(5, 5)) + 3 * np.eye(5)  # invertible, far from orthogonal
    Ai = np.linalg.inv(A)
    nets = {
        "plain": [affine(W1, b1), affine(W2, b2, torch.tanh), affine(W3, b3)],
        "reparam": [affine(A @ W1, A @ b1), affine(W2 @ Ai, b2, torch.tanh), affine(W3, b3)],
    }
    feats, pcs = {}, {}
    for name, steps in nets.items():
        acts = run(steps, x0)
        bases = build_bases([0, 1, 2, 3], acts, steps, mode="exact", dtype="float64")
        feats[name] = [b.features(a.reshape(-1, a.shape[-1])) for b, a in zip(bases, acts)]
        pcs[name] = extend(acts[1].reshape(-1, 5)) @ eig_desc(gram_matrix(acts[1])[0])[1][:, :5]
    for L in range(4):
        assert same_up_to_sign(feats["reparam"][L], feats["plain"][L]) < TOL, L
    # PCA is not invariant: its layer-1 features change
    assert same_up_to_sign(pcs["reparam"], pcs["plain"]) > 1e-2


def test_zero_variance_and_null_space_directions_are_dropped(rng):
    x0 = rng.normal(size=(50, 2, 4))
    W1 = np.vstack([rng.normal(size=(4, 4)), np.zeros((1, 4))])  # coordinate 4 is constant ...
    b1 = np.r_[rng.normal(size=4), 2.0]  # ... = 2: zero variance, nonzero mean
    u = np.r_[rng.normal(size=4), 0.0]
    u /= np.linalg.norm(u)
    W2 = rng.normal(size=(3, 5)) @ (np.eye(5) - np.outer(u, u))  # u is in the null space of the next layer
    steps = [affine(W1, b1), affine(W2, rng.normal(size=3), torch.tanh)]
    acts = run(steps, x0)
    bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
    b1_ = bases[1]
    assert b1_.n_gram == 5  # PCA keeps 5 of 6: only the zero-variance direction goes
    assert b1_.n_kept == 4  # the interaction basis drops the null-space direction too
    zero_var = np.r_[np.zeros(4), 1.0, -2.0]  # f_4 - 2 * 1 == 0 on every token
    for v in (zero_var, np.r_[u, 0.0]):
        assert np.max(np.abs(b1_.C.T @ v)) < TOL * np.max(np.abs(b1_.C))
    # the dropped null-space direction is one PCA keeps: it carries variance
    assert np.var(acts[1].reshape(-1, 5) @ u) > 0.1


def _block_net(rng):
    def sym(n, d):
        x = rng.normal(size=(n, d))
        return np.vstack([x, -x])  # exactly zero mean
    xa, xb = sym(6, 3), sym(5, 2)
    x0 = np.array([np.r_[a, b] for a in xa for b in xb])[:, None, :]  # product design: no cross-moments
    blk = lambda: np.block([[rng.normal(size=(3, 3)), np.zeros((3, 2))], [np.zeros((2, 3)), rng.normal(size=(2, 2))]])
    steps = [affine(blk(), np.zeros(5), torch.tanh), affine(blk(), np.zeros(5), torch.tanh)]
    return steps, run(steps, x0)


def _block_of(C):
    mass = np.stack([np.sum(C[:3] ** 2, 0), np.sum(C[3:5] ** 2, 0), C[5] ** 2])
    lab = np.argmax(mass, axis=0)
    off = (mass.sum(0) - mass.max(0)) / mass.sum(0)
    return lab, off


def test_block_diagonal_network_gives_block_diagonal_edges(rng):
    steps, acts = _block_net(rng)
    bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
    labs = []
    for b in bases:
        lab, off = _block_of(b.C)
        assert np.max(off) < TOL and set(lab) == {0, 1, 2}
        labs.append(lab)
    for i in range(2):
        E = edge_matrix(acts[i], steps[i], bases[i], bases[i + 1], n_in=6, n_out=6, steps=4, dtype="float64")
        cross = labs[i + 1][:E.shape[0], None] != labs[i][None, :E.shape[1]]
        assert cross.any() and np.max(E[cross]) < TOL * np.max(E)
        assert np.max(E[~cross]) > 0


def test_linear_edges_have_the_closed_form_and_need_one_step(linear_net):
    x0, (W1, b1, W2, b2), steps, acts = linear_net
    bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
    E = edge_matrix(acts[1], steps[1], bases[1], bases[2], n_in=4, n_out=4, steps=3, dtype="float64")
    K = bases[2].C.T @ folded(W2, b2) @ bases[1].P
    assert np.allclose(E, K ** 2 * bases[1].importance[None, :], rtol=TOL, atol=TOL * E.max())
    conv = convergence(acts[1], steps[1], bases[1], bases[2], n_in=4, n_out=4, step_counts=(1, 2, 4), dtype="float64")
    assert max(conv.rel_change) < 1e-12


def test_nonlinear_edges_converge_with_steps(rng):
    steps, acts = _block_net(rng)
    bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
    conv = convergence(acts[0], steps[0], bases[0], bases[1], n_in=6, n_out=6, step_counts=(1, 2, 4, 8, 32),
                       dtype="float64")
    rc = conv.rel_change
    assert rc[-1] == 0 and all(b < a for a, b in zip(rc, rc[1:])) and rc[3] < 0.01


def test_top_fraction():
    e = np.zeros(200)
    e[:2] = 1.0
    assert top_fraction(e) == 1.0
    assert top_fraction(np.ones(100)) == pytest.approx(0.01)
    assert np.isnan(top_fraction(np.zeros(5)))


def test_quadrature_rules():
    for n in (1, 2, 3, 5):
        x, w = quadrature(n, "gauss")
        assert np.all((x > 0) & (x < 1)) and w.sum() == pytest.approx(1.0, abs=1e-15)
        for deg in range(2 * n):  # Gauss-Legendre: exact up to degree 2n - 1
            assert np.dot(w, x ** deg) == pytest.approx(1.0 / (deg + 1), abs=1e-14)
    x, w = quadrature(4, "midpoint")
    assert np.allclose(x, [0.125, 0.375, 0.625, 0.875]) and np.allclose(w, 0.25)


def test_linear_edges_with_the_mean_baseline_use_the_feature_variance(linear_net):
    """Mean baseline: a linear layer's edge is (C'^T W~ P)_ij^2 Var(f^_j) (the folded constant is not scaled)."""
    x0, (W1, b1, W2, b2), steps, acts = linear_net
    bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
    mean = acts[1].reshape(-1, 5).mean(axis=0)
    K = bases[2].C.T @ folded(W2, b2) @ bases[1].P
    var = bases[1].features(acts[1].reshape(-1, 5)).var(axis=0)
    for steps_ in (1, 3):
        E = edge_matrix(acts[1], steps[1], bases[1], bases[2], n_in=4, n_out=4, steps=steps_, baseline=mean,
                        dtype="float64")
        assert np.allclose(E, K ** 2 * var[None, :], rtol=TOL, atol=TOL * E.max())


def test_edges_are_invariant_under_reparameterisation(rng):
    """Both baselines: f -> A f with the next weight times A^-1 leaves the edges unchanged."""
    x0 = rng.normal(size=(30, 2, 4)) + 1.0
    W1, b1 = rng.normal(size=(5, 4)), rng.normal(size=5)
    W2, b2 = rng.normal(size=(3, 5)), rng.normal(size=3)
    A = rng.normal(size=(5, 5)) + 3 * np.eye(5)
    nets = {"plain": [affine(W1, b1), affine(W2, b2, torch.tanh)],
            "reparam": [affine(A @ W1, A @ b1), affine(W2 @ np.linalg.inv(A), b2, torch.tanh)]}
    out = {}
    for name, steps in nets.items():
        acts = run(steps, x0)
        bases = build_bases([0, 1, 2], acts, steps, mode="exact", dtype="float64")
        mean = acts[1].reshape(-1, 5).mean(axis=0)
        out[name] = [edge_matrix(acts[1], steps[1], bases[1], bases[2], n_in=4, n_out=3, steps=4, baseline=b,
                                 dtype="float64") for b in (None, mean)]
    for a, b in zip(out["plain"], out["reparam"]):
        assert np.allclose(a, b, rtol=1e-8, atol=1e-8 * a.max())


def _rms_block(rng, d=6, eps=1e-12):
    """A pre-norm residual block y = x + W2 tanh(W1 rmsnorm(x)) on data with a large mean (a residual stream)."""
    W1, W2 = torch.as_tensor(rng.normal(size=(8, d))), torch.as_tensor(rng.normal(size=(d, 8)) / 3)

    def step(x, c):
        h = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps)
        return x + torch.tanh(h @ W1.T) @ W2.T

    x0 = rng.normal(size=(12, 3, d)) + 4.0 * np.r_[1.0, np.zeros(d - 1)]
    return [step], run([step], x0)


def test_edges_behind_rmsnorm_converge_from_the_mean_but_not_from_zero(rng):
    """The scale-invariant branch makes the zero-baseline integrand ~ 1/a: its edges grow with every doubling of
    the nodes (set by how close to a = 0 the rule reaches); from the mean the path avoids the origin and the
    edges converge (monotone; Gauss-Legendre below 1e-5 relative change by 16 nodes)."""
    steps, acts = _rms_block(rng)
    bases = build_bases([0, 1], acts, steps, mode="exact", dtype="float64")
    mean = acts[0].reshape(-1, acts[0].shape[-1]).mean(axis=0)
    counts = (1, 2, 4, 8, 16, 32)
    kw = dict(n_in=5, n_out=5, step_counts=counts, dtype="float64")
    zero = convergence(acts[0], steps[0], bases[0], bases[1], baseline=None, rule="midpoint", **kw)
    assert all(b > 1.02 * a for a, b in zip(zero.total[2:], zero.total[3:]))  # keeps growing
    assert zero.rel_change[-2] > 0.05  # 16 vs 32 nodes still differ by > 5 %
    for rule in ("gauss", "midpoint"):
        mean_c = convergence(acts[0], steps[0], bases[0], bases[1], baseline=mean, rule=rule, **kw)
        rc = mean_c.rel_change
        assert all(b <= a for a, b in zip(rc[1:], rc[2:])) and rc[-2] < 1e-3, (rule, rc)
        if rule == "gauss":  # spectral: ~1e-4 at 8 nodes, ~1e-7 at 16
            assert rc[3] < 1e-3 and rc[4] < 1e-5, rc
        assert mean_c.baseline == "mean" and mean_c.rule == rule
    assert zero.total[-1] > 3 * mean_c.total[-1]
