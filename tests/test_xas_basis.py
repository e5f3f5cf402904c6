"""Basis (low-rank) XAS posterior = the dense XASPosterior with the same covariance; the SYNTHETIC EXAFS
extension joins the measured library without a step or a kink."""

import numpy as np
import pytest
from scipy import sparse

import agent.xas.basis as basis_mod
import agent.xas.exafs as exafs_mod
from agent.xas.basis import BasisPosterior, basis_prior
from agent.xas.design import N_NUISANCE, CountingNoise, MoveCost, Nuisance, XASPosterior, choose_next
from agent.xas.exafs import extended_library, extension, k_of
from agent.xas.prior import LIBRARY_PRIOR_DEFAULTS, se_kernel

GRID = np.linspace(7076.2, 7181.2, 200)


@pytest.fixture(scope="module")
def prior(lib):
    return basis_prior(lib.without("Fe3O4"), GRID)


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / np.abs(b).max())


def measure(posts, seed=3, k=7):
    rng = np.random.default_rng(seed)
    for e in rng.uniform(GRID[0], GRID[-1], k):
        y, v = rng.normal(1.2, 0.3), rng.uniform(5e-5, 5e-4)
        for p in posts:
            p.update(e, y, v)


def dense_functional(d: XASPosterior, w_mu: np.ndarray):
    """Reference from the dense S: W mu = W m + (W L_mu) x, L_mu = [I_n, T_mu], T_mu[:, 0] = -m'."""
    n = d.n
    t_mu = np.zeros((n, N_NUISANCE))
    t_mu[:, 0] = -d.dm
    w = w_mu @ np.hstack([np.eye(n), t_mu])
    h = d.rows(d.energy)
    wsh = w @ d.S @ h.T
    return w_mu @ d.m + w @ d.x, w @ d.S @ w.T, (wsh**2).sum(0), np.einsum("ij,jk,ik->i", h, d.S, h)


@pytest.mark.parametrize("target", ["absorbance", "mu"])
def test_basis_equals_dense_with_the_same_covariance(prior, target):
    nu = Nuisance(harmonic_sd=0.01)
    b, d = BasisPosterior(prior, nu, target=target), XASPosterior(prior.to_gaussian(), nu, target=target)
    measure([b, d])
    for relin in (None, (0.7, 1.3, 2.0)):
        if relin:
            y_lin = d.y_fundamental()
            assert rel(b.y_fundamental(), y_lin) < 1e-8
            b.set_linearisation(*relin, y_lin=y_lin)
            d.set_linearisation(*relin, y_lin=y_lin)
        b.fantasise(7120.0, 2e-4)
        d.fantasise(7120.0, 2e-4)
        for name in ("mean", "var", "target_mean", "target_var", "rmse_pred", "shift", "amplitude"):
            assert rel(getattr(b, name), getattr(d, name)) < 1e-8, name
        assert rel(b.y_pred(), d.y_pred()) < 1e-8
        for gb, gd in zip(b.gain_terms(), d.gain_terms(), strict=True):
            assert rel(gb, gd) < 1e-8
        assert abs(b.design_rmse(GRID[::7], 1e-4) / d.design_rmse(GRID[::7], 1e-4) - 1) < 1e-8
        w = np.random.default_rng(0).normal(size=(3, b.n)) * (GRID > 7110)
        mean, cov, num, s = dense_functional(d, w)
        for wb in (w, sparse.csr_matrix(w)):
            mb, cb = b.functional_moments(wb)
            nb, sb = b.functional_gain(wb)
            assert rel(mb, mean) < 1e-8 and rel(cb, cov) < 1e-8 and rel(nb, num) < 1e-8 and rel(sb, s) < 1e-8
        noise, cost = CountingNoise(), MoveCost()
        pick_b, pick_d = (choose_next(p, noise, cost, 7100.0, (2.0, 4.0))[:2] for p in (b, d))
        assert pick_b == pick_d
    hb, _, ckb, cnb = b.data_terms()
    hd, _, ckd, cnd = d.data_terms()
    assert rel(ckb, ckd) < 1e-10 and rel(cnb, cnd) < 1e-10 and rel(hb @ b.x0, hd @ d.x0) < 1e-12


def test_resolve_from_scratch_equals_the_rank1_path(prior):
    b = BasisPosterior(prior)
    measure([b], seed=5, k=12)
    c = b.copy()
    c.resolve()
    for name in ("mean", "target_var"):
        assert rel(getattr(c, name), getattr(b, name)) < 1e-8
    for gc, gb in zip(c.gain_terms(), b.gain_terms(), strict=True):
        assert rel(gc, gb) < 1e-8
    c.update(7130.0, 1.0, 1e-4)  # the copy is independent
    assert len(b.data_e) == 12 and rel(b.M, c.M) > 1e-6


def test_prior_pieces(lib, prior):
    """Phi_pc Phi_pc^T is the sample covariance; the residual's variance is the kernels' exactly."""
    y = lib.without("Fe3O4").on(GRID)
    r = y - y.mean(1, keepdims=True)
    assert rel(prior.phi_pc @ prior.phi_pc.T, r @ r.T / (y.shape[1] - 1)) < 1e-10
    p = LIBRARY_PRIOR_DEFAULTS
    k = p["kernel_scale"] * se_kernel(GRID, y.std(1), p["cutoff_eV"]) + p["fine_scale"] * se_kernel(
        GRID, y.std(1), p["fine_cutoff_eV"])
    sp = prior.phi_sp.toarray()
    assert rel(np.diag(sp @ sp.T), np.diag(k)) < 1e-10
    assert basis_mod.residual_error(prior, lib.without("Fe3O4"), basis_mod.XANES_TOP_EV)["frobenius_rel"] < 0.1


def test_extension_is_continuous_and_labelled(lib):
    ext = extended_library(lib, stop_eV=7660.0, step_eV=0.5)
    e_end = lib.energy[-1]
    assert ext.synthetic_from_eV == e_end and np.array_equal(ext.energy[~ext.synthetic], lib.energy)
    assert ext.energy[-1] == 7660.0 and k_of(ext.energy[-1]) > 11.9 and np.diff(ext.energy).max() <= 0.5 + 1e-9
    assert "SYNTHETIC" in ext.note and "SYNTHETIC" in exafs_mod.__doc__ and "SYNTHETIC" in extended_library.__doc__
    assert ext.without("Fe-foil").synthetic_from_eV == e_end
    m = lib.energy >= e_end - 3.0
    h = 1e-4
    for i, name in enumerate(lib.names):
        slope = np.polyfit(lib.energy[m] - e_end, lib.spectra[m, i], 2)[1]  # measured end slope (per eV)
        right = extension(lib.energy, lib.spectra[:, i], name, [e_end + h, e_end + 2 * h])
        v0 = 2 * right[0] - right[1]  # extrapolated to E_end
        assert abs(v0 - lib.spectra[-1, i]) < 1e-6, name
        assert abs((right[1] - right[0]) / h - slope) < 1e-3 * max(abs(slope), 1e-2), name
    step = np.abs(np.diff(ext.on(np.arange(7190.0, 7205.0, 0.05)), axis=0)).max()
    typical = np.abs(np.diff(lib.on(np.arange(7180.0, 7196.8, 0.05)), axis=0)).max()
    assert step < 1.5 * typical
    bp = basis_prior(ext, np.linspace(7076.2, 7660.0, 2000))
    assert "SYNTHETIC" in bp.info["note"]


def test_no_n_by_n_array_in_the_posterior(lib):
    ext = extended_library(lib)
    n = 3000
    b = BasisPosterior(basis_prior(ext, np.linspace(7076.2, 7660.0, n)))
    b.update(7300.0, 1.5, 1e-4)
    sizes = [v.size for v in vars(b).values() if isinstance(v, np.ndarray)]
    sizes += [v.data.size for v in vars(b).values() if sparse.issparse(v)]
    assert max(sizes) <= n * b.p < n * n / 5
