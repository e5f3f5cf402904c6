"""Cluster models: closed forms against dense diagonalisation; Hamiltonian selection by F."""

from __future__ import annotations

import numpy as np
import pytest

from agent.cluster_models import (
    CEO2,
    LA2O3,
    N_F,
    dense_lines,
    xas3_lines,
    xps2,
    xps2_lines,
    xps3,
    xps3_lines,
)
from agent.xps_agent import XPS_PRIORS, fit_xps, model_probabilities
from sim_devices.xps_samples import DEFAULT_ENERGIES, sample


def hamiltonians(d, v, uff, ufc):
    t0, t1 = np.sqrt(N_F) * v, np.sqrt(2 * (N_F - 1)) * v
    hi = np.array([[0, t0, 0], [t0, d, t1], [0, t1, 2 * d + uff]])
    hf = hi.copy()
    hf[1, 1] -= ufc
    hf[2, 2] -= 2 * ufc
    x0, x1 = np.sqrt(N_F - 1) * v, np.sqrt(2 * (N_F - 2)) * v
    hx = np.array([[0, x0, 0], [x0, d + uff - ufc, x1], [0, x1, 2 * d + 3 * uff - 2 * ufc]])
    return hi, hf, hx


@pytest.mark.parametrize("seed", range(4))
def test_closed_forms_match_eigh(seed):
    rng = np.random.default_rng(seed)
    d, v, uff, ufc = rng.uniform(-3, 15), rng.uniform(0.1, 1.5), rng.uniform(5, 15), rng.uniform(8, 16)
    hi, hf, hx = hamiltonians(d, v, uff, ufc)
    for got, ref in (
        (xps3_lines(d, v, uff, ufc), dense_lines(hi, hf)),
        (xps2_lines(d, v, ufc), dense_lines(hi[:2, :2], hf[:2, :2])),
        (xas3_lines(d, v, uff, ufc), dense_lines(hi, hx, np.sqrt([N_F, N_F - 1, N_F - 2]))),
    ):
        order = np.argsort(got[0])
        assert np.allclose(got[0][order], ref[0], atol=1e-10)
        assert np.allclose(got[1][order], ref[1], atol=1e-10)
        assert abs(got[1].sum() - 1) < 1e-12


def test_spectra_area_and_peaks():
    e = np.linspace(-400, 400, 400001)
    for f, theta in ((xps2, [12.5, 0.57, 12.7, 0.5]), (xps3, [1.6, 0.76, 10.5, 12.5, 0.7])):
        s = f(np.array(theta), e)
        assert abs(np.sum(s) * (e[1] - e[0]) - 1) < 2e-3
    # CeO2 (3-level) shows three lines, La2O3 (2-level) two, with the DESIGN parameters
    assert np.sum(xps3_lines(1.6, 0.76, 10.5, 12.5)[1] > 0.1) == 3
    assert np.sum(xps2_lines(12.5, 0.57, 12.7)[1] > 0.1) == 2


def counts(name: str, sweeps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return sum(sample(name).sweep(DEFAULT_ENERGIES, 0.1, rng) for _ in range(sweeps))


KW = dict(n_sweeps=500, n_burn=300, n_runs=2)


def inside(post, truth):
    ci = post.interval(0.95)
    return {n: ci[n][0] <= truth[n] <= ci[n][1] for n in post.names}


def test_ceo2_selects_three_levels():
    y = counts("ceo2", 5, seed=2)
    p2 = fit_xps(DEFAULT_ENERGIES, y, "2-level", seed=1, **KW)
    p3 = fit_xps(DEFAULT_ENERGIES, y, "3-level", seed=2, **KW)
    assert p2.free_energy - p3.free_energy > 20
    assert all(inside(p3, CEO2).values()), (p3.mean, p3.interval())
    probs = model_probabilities({"2-level": p2.free_energy, "3-level": p3.free_energy},
                                {"2-level": p2.free_energy_err, "3-level": p3.free_energy_err})
    assert probs["3-level"] > 0.999


def test_la2o3_two_levels_suffice():
    """La₂O₃ (f⁰, Δ ≫ V): the f²L̲² state lies ~35 eV up, so the data cannot see it. The 2-level
    model is not disfavoured (F within noise or lower) and recovers the truth; the 3-level
    model's extra parameter U_ff stays at its prior width (Occam: nothing to pay for)."""
    y = counts("la2o3", 10, seed=4)
    p2 = fit_xps(DEFAULT_ENERGIES, y, "2-level", seed=3, **KW)
    p3 = fit_xps(DEFAULT_ENERGIES, y, "3-level", seed=4, **KW)
    err = np.hypot(p2.free_energy_err, p3.free_energy_err)
    assert p2.free_energy - p3.free_energy < max(3 * err, 0.5)
    assert all(inside(p2, LA2O3).values()), (p2.mean, p2.interval())
    prior = XPS_PRIORS["U_ff"]
    assert p3.std["U_ff"] > 0.6 * (prior.upper - prior.lower) / np.sqrt(12)
