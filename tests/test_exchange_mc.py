"""Exchange Monte Carlo against exactly solvable models."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy.stats import multivariate_normal

from agent.core.exchange_mc import (
    auto_ladder,
    bridge_log_z,
    effective_sample_size,
    ess_bulk,
    exchange_mc,
    gelman_rubin,
    mbar_log_z,
    split_rhat,
)
from agent.core.nonlinear import Dataset, Param, fit

X = np.linspace(-4.0, 4.0, 80)
G = np.stack([np.exp(-0.5 * (X - 1.0) ** 2), np.exp(-((X + 1.0) ** 2))], axis=1)
SIGMA = 0.1
PRIOR_MEAN = np.array([0.5, 0.5])
PRIOR_SD = np.array([1.0, 2.0])


@njit
def two_peaks(theta, x):
    return theta[0] * np.exp(-0.5 * (x - 1.0) ** 2) + theta[1] * np.exp(-((x + 1.0) ** 2))


@pytest.fixture(scope="module")
def linear_case():
    """y = a·g1 + b·g2 + N(0, σ²), Gaussian priors: posterior and evidence in closed form."""
    y = G @ [1.0, 0.6] + np.random.default_rng(1).normal(0, SIGMA, X.size)
    cov_y = SIGMA**2 * np.eye(X.size) + G @ np.diag(PRIOR_SD**2) @ G.T
    log_z = multivariate_normal(G @ PRIOR_MEAN, cov_y).logpdf(y)
    precision = np.diag(PRIOR_SD**-2) + G.T @ G / SIGMA**2
    cov = np.linalg.inv(precision)
    mean = cov @ (PRIOR_MEAN / PRIOR_SD**2 + G.T @ y / SIGMA**2)
    params = [Param("a", mean=0.5, sd=1.0), Param("b", mean=0.5, sd=2.0)]
    post = fit(params, Dataset(two_peaks, X, y, SIGMA, ["a", "b"]), n_sweeps=1500, n_burn=400,
               n_runs=4, seed=3)
    return post, mean, np.sqrt(np.diag(cov)), log_z


def test_linear_gaussian_moments(linear_case):
    post, mean, std, _ = linear_case
    got_mean = np.array(list(post.mean.values()))
    got_std = np.array(list(post.std.values()))
    ess = post.samples.shape[0] / 20  # conservative effective sample size
    assert np.all(np.abs(got_mean - mean) < 4 * std / np.sqrt(ess))
    assert np.allclose(got_std, std, rtol=0.1)


def test_linear_gaussian_free_energy(linear_case):
    post, _, _, log_z = linear_case
    r = post.result
    assert 0 < r.free_energy_err < 0.2
    assert abs(r.free_energy - (-log_z)) < max(3 * r.free_energy_err, 0.1)


def test_diagnostics(linear_case):
    r = linear_case[0].result
    assert np.all(r.rhat < 1.05)
    b = r.betas
    assert np.all(b[:, 0] == 0) and np.all(b[:, -1] == 1) and np.all(np.diff(b, axis=1) > 0)
    assert r.exchange_acceptance.shape == (b.shape[1] - 1,)
    assert np.all((r.exchange_acceptance > 0.2) & (r.exchange_acceptance < 0.95))
    assert np.all((r.mh_acceptance > 0.2) & (r.mh_acceptance < 0.7))
    assert r.n_evals > 0 and r.evals_per_s > 0


@njit
def bimodal_loglike(theta, args):
    centre, width = args
    a = -0.5 * ((theta[0] - centre) / width) ** 2
    b = -0.5 * ((theta[0] + centre) / width) ** 2
    hi = max(a, b)
    return hi + np.log(np.exp(a - hi) + np.exp(b - hi)) - np.log(2 * width * np.sqrt(2 * np.pi))


def test_bimodal_modes_and_evidence():
    """Two well-separated equal modes: replicas must visit both; Z = ∫ L p exactly known."""
    lo, hi = -10.0, 10.0
    r = exchange_mc(bimodal_loglike, (5.0, 0.2), [lo], [hi], n_sweeps=3000, n_burn=500, n_runs=2, seed=7)
    right = np.mean(r.pooled[:, 0] > 0)
    assert 0.35 < right < 0.65
    assert abs(r.free_energy - np.log(hi - lo)) < max(3 * r.free_energy_err, 0.1)


def test_reproducible_with_seed(linear_case):
    @njit
    def ll(theta, args):
        return -0.5 * np.sum((theta - args[0]) ** 2)

    kw = dict(n_sweeps=200, n_burn=100, n_runs=2)
    a = exchange_mc(ll, (np.zeros(2),), [-5, -5], [5, 5], seed=11, **kw)
    b = exchange_mc(ll, (np.zeros(2),), [-5, -5], [5, 5], seed=11, **kw)
    c = exchange_mc(ll, (np.zeros(2),), [-5, -5], [5, 5], seed=12, **kw)
    assert np.array_equal(a.samples, b.samples) and a.free_energy == b.free_energy
    assert not np.array_equal(a.samples, c.samples)


def test_one_compiled_sampler_serves_every_loglike_with_the_same_args():
    """The sampler is compiled per type of ``args``, not per loglike (each model's, each dataset's closure
    cost seconds of compilation in every process); a loglike it cannot call through a function pointer (not
    float-valued) gets the sampler specialised on it, as before."""
    from agent.core.exchange_mc import _chain_for, _run_chain

    @njit
    def a(theta, args):
        return -0.5 * np.sum((theta - args[0]) ** 2)

    @njit
    def b(theta, args):
        return -np.sum(np.abs(theta - args[0]))

    @njit
    def whole(theta, args):
        return 1

    args = (np.zeros(2),)
    assert _chain_for(a, args) is _chain_for(b, args) is not _run_chain
    assert _chain_for(whole, args) is _run_chain and _chain_for(lambda theta, args: 0.0, args) is _run_chain


def test_bridge_estimator_exact_on_gaussian_energies():
    """For a 1-D Gaussian likelihood with flat prior the per-temperature log L samples are
    exact draws; the bridge estimate then matches log Z."""
    rng = np.random.default_rng(0)
    betas = np.concatenate([[0.0], np.geomspace(1e-3, 1, 12)])
    s = 0.05
    # prior U(-1, 1), L = N(θ; 0, s): at β the tempered posterior is a truncated N(0, s/√β)
    trace = np.empty((20000, betas.size))
    for k, b in enumerate(betas):
        th = rng.uniform(-1, 1, 200000) if b == 0 else rng.normal(0, s / np.sqrt(b), 200000)
        th = th[np.abs(th) <= 1][:20000]
        trace[:, k] = -0.5 * (th / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
    assert abs(bridge_log_z(trace, betas) - np.log(0.5)) < 0.05
    assert abs(mbar_log_z(trace, betas) - np.log(0.5)) < 0.05


def test_mbar_agrees_with_stepping_stone_and_exact_evidence(linear_case):
    """Multi-histogram (MBAR) F per run of the exact linear-Gaussian fit: within 3 of its across-run error
    bars (or 0.1 nats) of the exact F, and each run within 0.1 nats of that run's stepping stone."""
    r = linear_case[0].result
    log_z = linear_case[3]
    f_mbar = np.array([-mbar_log_z(tr, b) for tr, b in zip(r.logl, r.betas, strict=True)])
    err = f_mbar.std(ddof=1) / np.sqrt(f_mbar.size)
    assert abs(f_mbar.mean() + log_z) < max(3 * err, 0.1), (f_mbar, -log_z)
    assert np.all(np.abs(f_mbar - r.free_energy_runs) < 0.1), (f_mbar, r.free_energy_runs)


def test_auto_ladder_and_rhat():
    ladder = auto_ladder(np.random.default_rng(0).normal(0, 1e4, 200), 5)
    assert ladder[0] == 0 and ladder[-1] == 1 and np.all(np.diff(ladder) > 0)
    assert 10 < ladder.size < 40
    same = np.random.default_rng(1).normal(size=(3, 500, 2))
    shifted = same + np.array([0.0, 0.0, 5.0])[:, None, None]
    assert np.all(gelman_rubin(same) < 1.02)
    assert np.all(gelman_rubin(shifted) > 1.5)


def test_bad_bounds_raise():
    @njit
    def ll(theta, args):
        return 0.0

    with pytest.raises(ValueError, match="lower"):
        exchange_mc(ll, (), [1.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        exchange_mc(ll, (), [0.0], [np.inf])
    with pytest.raises(ValueError, match="betas"):
        exchange_mc(ll, (), [0.0], [1.0], betas=[0.1, 1.0])


def _ar1(rng, rho: float, m: int, n: int) -> np.ndarray:
    """m stationary AR(1) chains of n draws, unit innovations: x_t = ρ x_{t−1} + ε_t."""
    from scipy.signal import lfilter

    eps = rng.normal(size=(m, n))
    eps[:, 0] /= np.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], eps, axis=1)


def test_ess_matches_ar1_theory():
    """AR(1) chains have ESS = m·n·(1−ρ)/(1+ρ); the estimate averaged over 100 sets of 4 chains lies within
    5 % of it (bulk ESS, on split rank-normalised chains, within 10 %), and independent draws give ≈ m·n."""
    rng = np.random.default_rng(5)
    m, n = 4, 1000
    for rho in (0.0, 0.5, 0.9):
        expected = m * n * (1 - rho) / (1 + rho)
        plain, bulk = [], []
        for _ in range(100):
            chains = _ar1(rng, rho, m, n)[..., None]
            plain.append(effective_sample_size(chains)[0])
            bulk.append(ess_bulk(chains)[0])
        assert abs(np.mean(plain) / expected - 1) < 0.05, (rho, np.mean(plain), expected)
        assert abs(np.mean(bulk) / expected - 1) < 0.10, (rho, np.mean(bulk), expected)


def test_split_rhat_sees_a_drift_plain_rhat_misses():
    """Four chains drifting alike (mean −1 → +1) agree with each other: plain R-hat ≈ 1; their halves
    do not: split R-hat > 1.1. Stationary chains pass both."""
    rng = np.random.default_rng(9)
    n = 1000
    still = rng.normal(size=(4, n, 1))
    drift = still + np.linspace(-1.0, 1.0, n)[None, :, None]
    assert gelman_rubin(drift)[0] < 1.02 and split_rhat(drift)[0] > 1.1
    assert split_rhat(still)[0] < 1.01 and gelman_rubin(still)[0] < 1.01


@njit
def flat_loglike(theta, args):
    return 0.0


def test_round_trip_time_exact_on_a_flat_likelihood():
    """With a flat likelihood every swap is accepted and the swaps, proposed from hot to cold in each sweep,
    shift the replicas cyclically: each goes coldest → hottest in L−1 sweeps and back in one, so a round
    trip lasts exactly L sweeps (L = 4 temperatures here)."""
    r = exchange_mc(flat_loglike, (), [0.0, 0.0], [1.0, 1.0], betas=[0.0, 0.2, 0.6, 1.0], adapt_ladder=False,
                    n_sweeps=400, n_burn=50, n_runs=2, seed=1, mbar=True)
    assert r.round_trip_sweeps == 4.0
    assert r.round_trips >= 2 * 4 * (400 // 4 - 2)
    assert np.all(r.exchange_acceptance == 1.0)
    assert r.rhat_split.shape == (2,) and r.ess_bulk.shape == (2,)
    assert r.free_energy == 0.0 and abs(r.free_energy_mbar) < 1e-9  # L = 1: F = 0


def test_linear_gaussian_diagnostics_in_result(linear_case):
    """The exact linear-Gaussian fit: split R-hat near 1, bulk ESS between 5 % and 100 % of the draws,
    finite round trips, and the summary and report carry them."""
    post = linear_case[0]
    r = post.result
    assert np.all(r.rhat_split < 1.05)
    assert np.all((r.ess_bulk > 0.05 * r.pooled.shape[0]) & (r.ess_bulk < 1.2 * r.pooled.shape[0]))
    assert r.round_trips > 0 and r.round_trip_sweeps > r.betas.shape[1]
    s = post.summary()
    assert s["rhat_split_max"] == pytest.approx(r.rhat_split.max()) and s["ess_bulk_min"] == r.ess_bulk.min()
    assert "R-hat(split)" in post.report() and "round trips" in post.report()


@njit
def reads_past_theta(theta, args):
    return -0.5 * (theta[0] ** 2 + theta[5] ** 2)


def test_loglike_reading_out_of_bounds_is_a_clear_error():
    with pytest.raises(ValueError, match=r"reads_past_theta: reads out of bounds .* \(2 parameters\)"):
        exchange_mc(reads_past_theta, (), [-1.0, -1.0], [1.0, 1.0], n_sweeps=10, n_burn=10, n_runs=1)


def test_loglike_numba_cannot_compile_is_a_clear_error():
    @njit
    def makes_a_class(theta, args):
        class Local:
            pass

        return 0.0

    with pytest.raises(ValueError, match="loglike 'makes_a_class' cannot be compiled by numba: "
                                         "UnsupportedBytecodeError") as info:
        exchange_mc(makes_a_class, (), [0.0], [1.0], n_sweeps=10, n_burn=10, n_runs=1)
    assert "\n" not in str(info.value) and info.value.__cause__ is not None
