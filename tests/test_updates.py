"""Layer-update geometry on synthetic data: the planted check (METHODS.md §2), the neighbour search
against brute force, the fitting classes, the geometry, the bootstrap, params and result files."""

from __future__ import annotations

import numpy as np
import pytest

from featuregeo.core.errors import InputError
from featuregeo.tl import updates as U


def _pooled_cos(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def planted():
    return {c: U.planted_updates(n_seq=48, seq_len=32, cross=c, seed=1) for c in (0.2, 0.0)}


@pytest.mark.parametrize("cls, rank", [("diag", 8), ("lowrank", 4), ("lowrank", 24)])
def test_residual_recovers_the_planted_cross_token_term(planted, cls, rank):
    p = planted[0.2]
    params = U.UpdatesParams(k=32, rank=rank)
    T, rec = U.analyze_arrays(p.h, p.D, p.groups, params, cls=cls)
    R = p.D - T
    assert _pooled_cos(R, p.cross) > 0.95
    # R lives (mostly) in the planted subspace; T does not
    inside = lambda X: float(((X @ p.subspace) ** 2).sum() / (X * X).sum())  # noqa: E731
    assert inside(R) > 0.9 and inside(T) < 0.2
    assert rec.cos_dt > 0.95 and rec.cos_dr < rec.cos_dt and rec.proj_r < rec.proj_t


@pytest.mark.parametrize("cls, rank", [("diag", 8), ("lowrank", 24)])
def test_residual_vanishes_to_the_fit_floor_without_the_cross_term(planted, cls, rank):
    on, off = planted[0.2], planted[0.0]
    params = U.UpdatesParams(k=32, rank=rank)
    T_off, rec_off = U.analyze_arrays(off.h, off.D, off.groups, params, cls=cls)
    T_on, _ = U.analyze_arrays(on.h, on.D, on.groups, params, cls=cls)
    floor = ((off.D - T_off) ** 2).sum()
    planted_energy = (on.cross ** 2).sum()
    assert floor < 0.1 * planted_energy          # the fit error is far below the planted term
    assert rec_off.explained > 0.99 and rec_off.cos_dt > 0.995
    # with the term on, the residual energy is the planted energy plus about the floor
    resid_on = ((on.D - T_on) ** 2).sum()
    assert planted_energy < resid_on < 1.15 * planted_energy + floor  # + the neighbours' terms leaking into T


def test_controls_on_planted_data(planted):
    p = planted[0.2]
    params = U.UpdatesParams(k=32)
    sh = U.shuffled_neighbours(p.groups, 32, np.random.default_rng(0))
    T_sh, _ = U.analyze_arrays(p.h, p.D, p.groups, params, cls="diag", nbr=sh)
    T_nn, _ = U.analyze_arrays(p.h, p.D, p.groups, params, cls="diag")
    # random neighbours lose the local map: the residual no longer isolates the planted term
    assert _pooled_cos(p.D - T_sh, p.cross) < _pooled_cos(p.D - T_nn, p.cross) - 0.1
    # a global affine map cannot follow the smooth gain a(h): its residual is contaminated
    T_gl, _ = U.analyze_arrays(p.h, p.D, p.groups, params, cls="global")
    assert _pooled_cos(p.D - T_gl, p.cross) < 0.9


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_blocked_search_equals_brute_force_and_excludes_own_row(metric, rng):
    x = rng.standard_normal((600, 12)).astype(np.float32)
    groups = np.repeat(np.arange(20), 30)
    xp = U.prepare(x, metric)
    fast = U.knn_other_rows(xp, groups, 7, metric=metric, block=128)
    ref = U.knn_brute_force(xp, groups, 7, metric=metric)
    assert U.recall(fast, ref) == 1.0
    assert fast.shape == (600, 7) and not (groups[fast] == groups[:, None]).any()


def test_shuffled_neighbours_are_distinct_other_row_tokens(rng):
    groups = np.repeat(np.arange(5), 10)
    nb = U.shuffled_neighbours(groups, 8, rng)
    assert not (groups[nb] == groups[:, None]).any()
    assert all(len(set(r)) == 8 for r in nb.tolist())
    assert np.array_equal(nb, U.shuffled_neighbours(groups, 8, np.random.default_rng(0)))


def test_fits_are_exact_for_maps_of_their_class(rng):
    # one global linear map: every class with enough neighbours recovers it
    n, d = 1200, 6
    h = rng.standard_normal((n, d))
    W = rng.standard_normal((d, d))
    D = h @ W.T
    groups = np.repeat(np.arange(40), 30)
    nbr = U.knn_other_rows(U.prepare(h), groups, 24)
    assert np.allclose(U.fit_lowrank(h, D, nbr, rank=24, ridge=1e-9), D, atol=1e-3)
    assert np.allclose(U.fit_global(h, D, groups, ridge=1e-9), D, atol=1e-3)
    # a diagonal map is exactly diag-fit; a rank-2 map exactly rank-2 fit
    a = rng.uniform(0.5, 2, d)
    assert np.allclose(U.fit_diag(h, h * a, nbr, ridge=1e-9), h * a, atol=1e-4)
    W2 = rng.standard_normal((d, 2)) @ rng.standard_normal((2, d))
    assert np.allclose(U.fit_lowrank(h, h @ W2.T, nbr, rank=2, ridge=1e-9), h @ W2.T, atol=1e-3)
    assert not np.allclose(U.fit_lowrank(h, D, nbr, rank=2, ridge=1e-9), D, atol=1e-1)


def test_geometry_of_known_splits(rng):
    D = rng.standard_normal((400, 10))
    groups = np.repeat(np.arange(20), 20)
    g = U.geometry(D, D, groups)
    assert g["energy_share"] == pytest.approx(1) and g["explained"] == pytest.approx(1)
    assert g["cos_dt"] == pytest.approx(1) and g["angle_dt"] == pytest.approx(0, abs=1e-5)
    g0 = U.geometry(D, np.zeros_like(D), groups)
    assert g0["explained"] == pytest.approx(0) and g0["cos_dr"] == pytest.approx(1)
    # T confined to 2 coordinates, R to the others: T's subspace holds T, not R
    T = D.copy()
    T[:, 2:] = 0
    g2 = U.geometry(D, T, groups, energy=0.999)
    assert g2["subspace_dim"] == 2 and g2["proj_t"] == pytest.approx(1) and g2["proj_r"] == pytest.approx(0, abs=1e-9)
    assert g2["chance"] == pytest.approx(0.2)
    assert U.dominant_subspace(T, 0.5).shape[1] == 1


def test_spearman_bootstrap_is_seeded_and_covers_the_truth(rng):
    x = rng.standard_normal(400)
    y = x + 0.5 * rng.standard_normal(400)
    groups = np.repeat(np.arange(40), 10)
    r1 = U.spearman_boot(x, y, groups, n_boot=300, rng=np.random.default_rng(3))
    r2 = U.spearman_boot(x, y, groups, n_boot=300, rng=np.random.default_rng(3))
    assert r1 == r2
    rho, (lo, hi) = r1
    assert lo < rho < hi and rho > 0.8
    from scipy.stats import spearmanr

    assert rho == pytest.approx(spearmanr(x, y).statistic)
    assert U.spearman(x, -x) == pytest.approx(-1)


def test_patch_positions_seeded_distinct():
    assert U.patch_positions(128, 4, 0) == U.patch_positions(128, 4, 0)
    ps = U.patch_positions(128, 4, 0)
    assert len(set(ps)) == 4 and all(4 <= p <= 128 for p in ps)
    assert U.patch_positions(3, 3, 0) == [1, 2, 3]


@pytest.mark.parametrize("change, match", [
    ({"k": 1}, r"k: expected an integer >= 2"),
    ({"rank": 0}, r"rank: expected an integer >= 1"),
    ({"ridge": 0.0}, r"ridge: expected a finite number > 0"),
    ({"metric": "manhattan"}, r"metric: expected one of cosine, euclidean"),
    ({"classes": ("diag", "full")}, r"classes: expected one or more of"),
    ({"classes": ("global",)}, r"primary: expected a local class"),
    ({"kl_classes": ("global",), "classes": ("diag", "lowrank")}, r"kl_classes:"),
    ({"layers": (-1,)}, r"layers: expected"),
    ({"n_rows": 2}, r"n_rows: expected an integer >= 4"),
    ({"energy": 1.5}, r"energy: expected a finite number"),
    ({"k_grid": (1, 8)}, r"k_grid: expected an integer >= 2"),
    ({"n_rows": 4, "seq_len": 4, "k": 32}, r"k: expected at most 12 neighbours"),
])
def test_params_bad_values_one_line(change, match):
    with pytest.raises(InputError, match=match) as e:
        U.UpdatesParams(**change).validate()
    assert "\n" not in str(e.value)


def test_params_strings_and_roundtrip():
    p = U.UpdatesParams(layers="9,3,3", classes="diag,lowrank", k_grid=[16, 8])
    assert p.layers == (3, 9) and p.classes == ("diag", "lowrank") and p.k_grid == (8, 16)
    assert U.UpdatesParams.from_dict(p.to_dict()) == p
    assert "layers" not in p.unit_dict() and U.UpdatesParams.fast().validate().n_tokens == 16 * 48


def test_result_roundtrip_and_table(tmp_path):
    fn = U.UpdateFunction(cls="diag", n=3, kl_mean=0.1, kl_median=0.05, spearman=0.5, spearman_ci=[0.1, 0.8],
                          kl=np.array([0.1, 0.2, 0.0]), r_norm=np.ones(3), d_norm=np.ones(3),
                          rows=np.arange(3), positions=np.full(3, 5))
    fit = U.UpdateFit(cls="diag", k=8, explained=0.9, cos_dt=0.95, cos_dr=0.3)
    ctl = [U.UpdateFit(target="mlp", cls="diag", explained=0.99), U.UpdateFit(target="attn", cls="diag", explained=0.5),
           U.UpdateFit(target="update", cls="diag", neighbours="shuffled", explained=0.2)]
    rec = U.UpdatesLayer(layer=3, block=4, n_tokens=10, d_norm=1.0, fits=[fit], controls=ctl, function=[fn])
    r = U.UpdatesResult(params=U.UpdatesParams(primary="diag"), model="m", d_model=8, layers=[rec], positions=[5])
    r.save(tmp_path)
    back = U.UpdatesResult.load(tmp_path)
    assert back.to_dict() == r.to_dict() and isinstance(back.layers[0].function[0].kl, np.ndarray)
    row = r.rows()[0]
    assert row["diag.explained"] == 0.9 and row["mlp.explained"] == 0.99 and row["shuffled.explained"] == 0.2
    assert row["diag.spearman_lo"] == 0.1 and (tmp_path / "updates.csv").exists()
    assert r.layer(3).fit("diag", "mlp").explained == 0.99
    with pytest.raises(InputError, match="layer: expected one of"):
        r.layer(7)


def test_batched_local_fits_equal_a_per_token_reference(rng):
    """The batched dual-form fits equal the textbook per-token computation (primal ridge, full SVD)."""
    n, d, k = 300, 20, 12
    h = rng.standard_normal((n, d))
    D = np.tanh(h @ rng.standard_normal((d, d))) + 0.1 * rng.standard_normal((n, d))
    groups = np.repeat(np.arange(10), 30)
    nbr = U.knn_other_rows(U.prepare(h), groups, k)
    specs = [("diag", 8, 0), ("diag", 12, 0), ("lowrank", 12, 3), ("lowrank", 8, 2), ("lowrank", 12, 12)]
    outs = U.local_fits(h, D, nbr, specs, ridge=0.05)
    for (cls, kk, r), T in zip(specs, outs):
        for i in range(0, n, 37):
            H, Y = h[nbr[i, :kk]], D[nbr[i, :kk]]
            if cls == "diag":
                den = (H * H).sum(0)
                ref = (H * Y).sum(0) / (den + 0.05 * den.mean()) * h[i]
            else:
                lam = 0.05 * np.trace(H @ H.T) / kk
                A_t = np.linalg.solve(H.T @ H + lam * np.eye(d), H.T @ Y)     # primal ridge: D ~ h A_t
                _, _, Vt = np.linalg.svd(H @ A_t, full_matrices=False)
                V = Vt[:r].T
                ref = (h[i] @ A_t) @ V @ V.T
            assert np.allclose(T[i], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max()), (cls, kk, r, i)
