"""The exact grid posterior against brute-force numerical integration."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from agent.core.linear_posterior import LinearGridPosterior


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    x = np.linspace(-3, 3, 14)
    gammas = np.array([0.6, 1.0, 1.4])
    design = np.stack([np.stack([np.exp(-0.5 * (x / g) ** 2), np.exp(-0.5 * (x / (3 * g)) ** 2)], -1) for g in gammas])
    var = rng.uniform(0.02, 0.06, x.size)
    y = design[1] @ np.array([1.2, -0.4]) + rng.normal(0, np.sqrt(var) * 1.3)
    solver = LinearGridPosterior(design, gammas, np.array([0.8, 1.2, 1.8]), np.array([0.5, 0.0]),
                                 np.array([[1.0, 0.3], [0.3, 0.8]]))
    return solver, design, y, var


def brute_force(solver, design, y, var, n=601, gamma_log_prior=None):
    """Integrate likelihood × prior on a dense (a1, a2) grid for every (γ, s) cell: s scales the noise, or
    (``solver.scaled``) the prior std of the scaled amplitudes."""
    a1 = np.linspace(-3, 5, n)
    a2 = np.linspace(-4.5, 3.5, n)
    A1, A2 = np.meshgrid(a1, a2, indexing="ij")
    da = (a1[1] - a1[0]) * (a2[1] - a2[0])
    d1, d2 = A1 - solver.prior_mean[0], A2 - solver.prior_mean[1]

    def log_prior(s):
        scale = np.where(solver.scaled, s, 1.0) if solver.scaled is not None else np.ones(2)
        cov = solver.prior_cov * np.outer(scale, scale)
        prec = np.linalg.inv(cov)
        return -0.5 * (prec[0, 0] * d1**2 + 2 * prec[0, 1] * d1 * d2 + prec[1, 1] * d2**2) \
            - 0.5 * np.log((2 * np.pi) ** 2 * np.linalg.det(cov))

    logs, m1, m2, msum, msum2, m11, m22 = [], [], [], [], [], [], []
    for g in range(design.shape[0]):
        pred = A1[..., None] * design[g, :, 0] + A2[..., None] * design[g, :, 1]
        chi2 = (((y - pred) ** 2) / var).sum(-1)
        for s in solver.scale_grid:
            noise = 1.0 if solver.scaled is not None else s
            v = var * noise**2
            logl = -0.5 * (chi2 / noise**2 + np.log(2 * np.pi * v).sum())
            lj = logl + log_prior(s)
            cell = logsumexp(lj) + np.log(da) + (0.0 if gamma_log_prior is None else gamma_log_prior[g])
            w = np.exp(lj - lj.max())
            w /= w.sum()
            logs.append(cell)
            m1.append((w * A1).sum()), m2.append((w * A2).sum())
            m11.append((w * A1**2).sum()), m22.append((w * A2**2).sum())
            msum.append((w * (A1 + A2)).sum()), msum2.append((w * (A1 + A2) ** 2).sum())
    logs = np.array(logs) - np.log(solver.scale_grid.size)
    if gamma_log_prior is None:
        logs -= np.log(design.shape[0])
    wc = np.exp(logs - logsumexp(logs))
    mom = {k: wc @ np.array(v) for k, v in dict(m1=m1, m2=m2, m11=m11, m22=m22, ms=msum, ms2=msum2).items()}
    return logsumexp(logs), mom


def test_posterior_matches_brute_force_integration(problem):
    solver, design, y, var = problem
    post = solver.fit(y, var)
    log_ev, m = brute_force(solver, design, y, var)
    assert post.log_evidence == pytest.approx(log_ev, abs=2e-3)
    for coeffs, mean, second in [((1, 0), m["m1"], m["m11"]), ((0, 1), m["m2"], m["m22"]), ((1, 1), m["ms"], m["ms2"])]:
        mix = post.marginal(coeffs)
        assert mix.mean == pytest.approx(mean, abs=1e-4)
        assert mix.std == pytest.approx(np.sqrt(second - mean**2), rel=1e-3)


def test_structured_misfit_mode_matches_brute_force_integration(problem):
    """s scaling the prior std of the second amplitude (a discrepancy-like block, noise known) and a
    non-uniform prior over γ: evidence, means and stds as brute-force integration gives them."""
    _, design, y, var = problem
    gammas = np.array([0.6, 1.0, 1.4])
    log_g = np.log(np.array([0.2, 0.5, 0.3]))
    solver = LinearGridPosterior(design, gammas, np.array([0.1, 0.5, 2.0]), np.array([0.5, 0.0]),
                                 np.array([[1.0, 0.0], [0.0, 0.8]]), scaled=[False, True], gamma_log_prior=log_g)
    post = solver.fit(y, var)
    log_ev, m = brute_force(solver, design, y, var, gamma_log_prior=log_g)
    assert post.log_evidence == pytest.approx(log_ev, abs=2e-3)
    for coeffs, mean, second in [((1, 0), m["m1"], m["m11"]), ((0, 1), m["m2"], m["m22"]), ((1, 1), m["ms"], m["ms2"])]:
        mix = post.marginal(coeffs)
        assert mix.mean == pytest.approx(mean, abs=1e-4)
        assert mix.std == pytest.approx(np.sqrt(second - mean**2), rel=1e-3)
    assert post.weights.sum(axis=1) @ gammas != pytest.approx(gammas.mean(), abs=1e-3)  # the γ prior acts


def test_mixture_quantiles_invert_the_cdf(problem):
    solver, _, y, var = problem
    mix = solver.fit(y, var).marginal((1, 1))
    probs = np.array([0.025, 0.16, 0.5, 0.84, 0.975])
    q = mix.quantiles(probs)
    assert np.allclose(mix.cdf(q), probs, atol=1e-9)
    assert np.all(np.diff(q) > 0)


def test_single_cell_reduces_to_gaussian_conditioning():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1, 30, 2))
    var = np.full(30, 0.5)
    y = X[0] @ [1.0, 2.0] + rng.normal(0, np.sqrt(0.5), 30)
    post = LinearGridPosterior(X, [0.0], [1.0], np.zeros(2), np.eye(2) * 4).fit(y, var)
    cov = np.linalg.inv(np.eye(2) / 4 + X[0].T @ X[0] / 0.5)
    mean = cov @ (X[0].T @ y / 0.5)
    assert np.allclose(post.means[0, 0], mean) and np.allclose(post.covs[0, 0], cov)
    marginal_cov = X[0] @ (np.eye(2) * 4) @ X[0].T + np.eye(30) * 0.5
    from scipy.stats import multivariate_normal

    assert post.log_evidence == pytest.approx(multivariate_normal(np.zeros(30), marginal_cov).logpdf(y), abs=1e-8)
    assert post.marginal((1, 0)).interval(0.95) == pytest.approx(
        (mean[0] - norm.ppf(0.975) * np.sqrt(cov[0, 0]), mean[0] + norm.ppf(0.975) * np.sqrt(cov[0, 0])), abs=1e-9)


def test_bad_data_rejected(problem):
    solver, _, y, var = problem
    with pytest.raises(ValueError):
        solver.fit(y[:-1], var[:-1])
    with pytest.raises(ValueError):
        solver.fit(np.where(np.arange(y.size) == 3, np.nan, y), var)
    with pytest.raises(ValueError):
        solver.fit(y, -var)


def test_batched_marginals_equal_single_ones(problem):
    solver, _, y, var = problem
    post = solver.fit(y, var)
    coeffs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    batch = post.marginal(coeffs)
    probs = [0.025, 0.16, 0.84, 0.975]
    for i, c in enumerate(coeffs):
        one = post.marginal(c)
        assert batch.mean[i] == pytest.approx(one.mean) and batch.std[i] == pytest.approx(one.std)
        assert np.allclose(batch.quantiles(probs)[i], one.quantiles(probs), atol=1e-9)


def test_block_eigenbasis_path_equals_the_general_solve():
    """The prior-scale role's fast path (Schur complement in the scaled block's eigenbasis) gives the same
    evidence, weights, means and covariances as inverting every cell's precision."""
    rng = np.random.default_rng(3)
    g, n, k, m = 5, 60, 2, 9
    args = (rng.normal(size=(g, n, k + m)), np.arange(g), np.geomspace(1e-3, 1, 7), np.r_[0.3, -0.2, np.zeros(m)],
            np.diag(np.r_[np.full(k, 25.0), np.ones(m)]))
    y, var = rng.normal(size=n), rng.uniform(0.5, 2, n)
    scaled = np.r_[np.zeros(k, bool), np.ones(m, bool)]
    fast, general = LinearGridPosterior(*args, scaled=scaled), LinearGridPosterior(*args, scaled=scaled)
    assert fast._block is not None
    general._block = None
    p, q = fast.fit(y, var), general.fit(y, var)
    assert p.log_evidence == pytest.approx(q.log_evidence, abs=1e-9)
    for a, b in ((p.weights, q.weights), (p.means, q.means), (p.covs, q.covs)):
        assert np.allclose(a, b, rtol=1e-9, atol=1e-12)
