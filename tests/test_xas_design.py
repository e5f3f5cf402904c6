"""Sequential A-optimal design: rank-1 posterior = direct conditioning, choice = brute force."""

import numpy as np
import pytest

from agent.xas.design import (
    N_NUISANCE,
    CountingNoise,
    MoveCost,
    Nuisance,
    XASPosterior,
    choose_next,
    greedy_batch,
    scan_time,
)
from agent.xas.prior import SpectraLibrary, default_grid, library_prior


@pytest.fixture(scope="module")
def prior():
    lib = SpectraLibrary.from_csv()
    return library_prior(lib.without("Fe3O4"), default_grid(step_eV=0.5))


def target_map(post):
    """L written out densely: mu = m + r - m' delta, or the measured spectrum / a_lin = H_grid x / a_lin."""
    n = post.n
    if post.target == "mu":
        return np.hstack([np.eye(n), -post.dm[:, None], np.zeros((n, N_NUISANCE - 1))]), post.m
    return post.rows(post.energy) / post.amp_lin, 0.0


def direct(prior, post, energies, ys, vs):
    """Independent dense Gaussian conditioning of x on y = H x + noise; mu and the target from it."""
    n = prior.energy.size
    s0, x0 = post.prior_cov(), post.x0
    h = post.rows(energies)
    lmu = np.hstack([np.eye(n), -post.dm[:, None], np.zeros((n, N_NUISANCE - 1))])
    lmat, base = target_map(post)
    c = h @ s0 @ h.T + np.diag(vs)
    gain = s0 @ h.T @ np.linalg.inv(c)
    x = x0 + gain @ (ys - h @ x0)
    s = s0 - gain @ h @ s0
    return post.m + lmu @ x, lmu @ s @ lmu.T, base + lmat @ x, lmat @ s @ lmat.T


@pytest.mark.parametrize("harmonic_sd", [0.0, 0.01])
@pytest.mark.parametrize("target", ["absorbance", "mu"])
def test_rank1_posterior_equals_direct_conditioning(prior, target, harmonic_sd):
    rng = np.random.default_rng(0)
    nu = Nuisance(harmonic_sd=harmonic_sd)
    post = XASPosterior(prior, nu, shift_lin_eV=0.3, amp_lin=1.6, target=target)
    e = rng.uniform(prior.energy[0], prior.energy[-1], 25)
    ys = 1.7 * np.interp(e, prior.energy, prior.mean) + 0.4 + 0.01 * rng.standard_normal(25)
    vs = rng.uniform(1e-5, 1e-3, 25)
    for a, b, c in zip(e, ys, vs, strict=True):
        post.update(a, b, c)
    mean, cov, tmean, tcov = direct(prior, post, e, ys, vs)
    np.testing.assert_allclose(post.mean, mean, atol=1e-8)
    np.testing.assert_allclose(post.var, np.diag(cov), atol=1e-9)
    np.testing.assert_allclose(post.target_mean, tmean, atol=1e-8)
    # the target carries the nuisance prior (variance ~25): both computations cancel from there
    np.testing.assert_allclose(post.target_var, np.diag(tcov), atol=2e-8)
    assert post.rmse_pred == pytest.approx(np.sqrt(np.trace(tcov) / tcov.shape[0]), rel=1e-5)
    fresh = XASPosterior(prior, nu, shift_lin_eV=0.3, amp_lin=1.6, target=target)
    assert fresh.design_rmse(e, vs) == pytest.approx(post.rmse_pred, rel=1e-8)
    m_rank1 = post.M.copy()
    post.resolve()
    np.testing.assert_allclose(m_rank1, post.M, atol=1e-9 * np.abs(post.M).max())


@pytest.mark.parametrize("target", ["absorbance", "mu"])
def test_first_choice_equals_brute_force(prior, target):
    """Cost-aware choice over every (candidate, dwell) vs recomputing the posterior trace each time."""
    rng = np.random.default_rng(1)
    post = XASPosterior(prior, Nuisance(), target=target)
    for e in rng.uniform(7100, 7150, 4):
        post.update(e, 1.5 * np.interp(e, prior.energy, prior.mean), 2e-4)
    noise, cost, dwells, cur = CountingNoise(), MoveCost(settle_s=0.5, speed_eV_s=5.0), (0.5, 2.0), 7120.0
    j, dwell, score = choose_next(post, noise, cost, cur, dwells)
    n = prior.energy.size
    lmat, _ = target_map(post)
    tr0 = np.trace(lmat @ post.S @ lmat.T)
    y = post.y_pred()
    best = (-np.inf, None)
    for jj in range(n):
        h = post.rows([prior.energy[jj]])[0]
        for d in dwells:
            v = noise.var(y[jj], d)
            s_new = post.S - np.outer(post.S @ h, post.S @ h) / (h @ post.S @ h + v)
            red = tr0 - np.trace(lmat @ s_new @ lmat.T)
            sc = red / (d + cost.time(cur, prior.energy[jj]))
            best = max(best, (sc, (jj, d)))
    assert (j, dwell) == best[1]
    assert score == pytest.approx(best[0], rel=1e-6)


@pytest.mark.parametrize("target", ["absorbance", "mu"])
def test_scores_survive_a_long_run(prior, target):
    """After 3000 rank-1 updates the candidate scores still equal those of a fresh solve (M code: 2e-6
    relative; the former S L^T L S recursion: 6e-5 here for mu, every score rounded to 0 on the 0.1 eV
    grid for the measured spectrum)."""
    post = XASPosterior(prior, Nuisance(), amp_lin=1.75, target=target)
    noise = CountingNoise()
    e, _ = greedy_batch(post, noise, 3000, dwell_s=0.5)
    for energy in e:
        post.fantasise(energy, float(noise.var(np.interp(energy, post.energy, post.y_pred()), 0.5)))
    q_rank1, s_rank1 = post.gain_terms()
    uniq, counts = np.unique(e, return_counts=True)
    y = np.interp(uniq, post.energy, post.y_pred())
    post.data_e, post.data_y, post.data_var = list(uniq), list(y), list(noise.var(y, 0.5 * counts))
    post.resolve()
    q_fresh, s_fresh = post.gain_terms()
    assert np.all(q_fresh > 0)
    np.testing.assert_allclose(q_rank1, q_fresh, rtol=2e-5)
    np.testing.assert_allclose(s_rank1, s_fresh, rtol=2e-5)


def test_greedy_batch_reduces_predicted_error(prior):
    post = XASPosterior(prior, Nuisance())
    e, rmse = greedy_batch(post, CountingNoise(), 30)
    assert e.size == 30 and np.all(np.diff(rmse) <= 1e-12) and rmse[-1] < 0.5 * post.rmse_pred
    j, _, _ = choose_next(post, CountingNoise(), MoveCost(settle_s=0.0, speed_eV_s=1e12), None, (1.0,))
    assert e[0] == post.energy[j]
    assert not post.data_e
    with pytest.raises(ValueError):
        greedy_batch(post, CountingNoise(), 0)


def test_counting_noise_matches_poisson_statistics():
    noise, rng, y = CountingNoise(i0_rate=5000.0), np.random.default_rng(2), 2.0
    i0 = rng.poisson(5000.0, 40000)
    it = rng.poisson(5000.0 * np.exp(-y), 40000)
    assert np.var(np.log(i0 / it)) == pytest.approx(noise.var(y, 1.0), rel=0.05)
    assert noise.var(y, 4.0) == pytest.approx(noise.var(y, 1.0) / 4)
    with pytest.raises(ValueError):
        noise.from_counts(0, 10)
    with pytest.raises(ValueError):
        noise.from_counts(np.nan, 10)
    with pytest.raises(ValueError):
        CountingNoise(i0_rate=0)


def test_move_cost_and_scan_time():
    c = MoveCost(settle_s=0.5, speed_eV_s=10.0, backlash_eV=1.0)
    assert c.time(7100.0, 7110.0) == pytest.approx(1.5)
    assert c.time(7110.0, 7100.0) == pytest.approx(1.7)
    assert c.time(7100.0, 7100.0) == 0.0 and c.time(None, 7100.0) == 0.5
    assert scan_time([7100.0, 7110.0], 1.0, c) == pytest.approx(2 + 0.5 + 1.5)
    with pytest.raises(ValueError):
        MoveCost(speed_eV_s=0)


def test_the_two_targets_differ_by_the_edge_step_uncertainty(prior):
    """With dense precise data the measured spectrum is pinned, normalised mu keeps the edge-step floor."""
    e = prior.energy
    y = 1.75 * prior.mean + 0.45
    posts = {t: XASPosterior(prior, Nuisance(), amp_lin=1.75, target=t) for t in ("absorbance", "mu")}
    for p in posts.values():
        p.data_e, p.data_y, p.data_var = list(e), list(y), [1e-6] * e.size
        p.resolve()
    floor = np.sqrt(np.mean(prior.mean**2)) * posts["mu"].amplitude[1] / 1.75
    assert posts["absorbance"].rmse_pred < 0.2 * posts["mu"].rmse_pred
    assert posts["mu"].rmse_pred == pytest.approx(floor, rel=0.3)
    with pytest.raises(ValueError, match="target"):
        XASPosterior(prior, target="transmission")


def test_energy_outside_the_grid_raises(prior):
    post = XASPosterior(prior, Nuisance())
    with pytest.raises(ValueError, match="outside"):
        post.update(7000.0, 1.0, 1e-4)
    with pytest.raises(ValueError):
        post.update(7100.0, np.nan, 1e-4)
