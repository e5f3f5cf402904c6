"""Cluster models: closed forms against dense diagonalisation; Hamiltonian selection by F."""

from __future__ import annotations

import numpy as np
import pytest

from agent.xps.agent import fit_xps, model_probabilities
from agent.xps.cluster_models import (
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
from sim_devices.xps.samples import DEFAULT_ENERGIES, sample


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
        (xps2_lines(d, v, ufc), dense_lines(np.diag([0.0, 1.0]), hf[:2, :2])),  # pure f⁰ initial state
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
    y = counts("ceo2", 5, seed=3)
    p2 = fit_xps(DEFAULT_ENERGIES, y, "2-level", seed=1, **KW)
    p3 = fit_xps(DEFAULT_ENERGIES, y, "3-level", seed=3, **KW)
    assert p2.free_energy - p3.free_energy > 20
    assert all(inside(p3, CEO2).values()), (p3.mean, p3.interval())
    probs = model_probabilities({"2-level": p2.free_energy, "3-level": p3.free_energy},
                                {"2-level": p2.free_energy_err, "3-level": p3.free_energy_err})
    assert probs["3-level"] > 0.999


def test_la2o3_selects_two_levels():
    """La₂O₃ (seed 002's 2-level model: pure f⁰ initial state, E_g = 0) is decided for the 2-level
    model. Not by a third line: the 3-level model's f²L̲²-like line (≈ U_ff + 1 eV, inside the
    window) carries only 10⁻⁴–10⁻² of the weight. It loses because its initial state is always
    hybridised (E_g ≈ −N_f V²/Δ ≈ −0.3 eV, ~3 % f¹L̲), which shifts and re-weights the two lines on
    the calibrated energy axis; mimicking a pure f⁰ state needs Δ, U_fc beyond their 16 eV bounds."""
    y = counts("la2o3", 2, seed=4)
    p2 = fit_xps(DEFAULT_ENERGIES, y, "2-level", seed=3, **KW)
    p3 = fit_xps(DEFAULT_ENERGIES, y, "3-level", seed=4, **KW)
    assert p3.free_energy - p2.free_energy > 10
    assert all(inside(p2, LA2O3).values()), (p2.mean, p2.interval())
    # the 2-level data fix Δ − U_fc and V; Δ and U_fc separately stay near their prior ridge
    d_f = p2.samples[:, 0] - p2.samples[:, 2]
    assert abs(d_f.mean() - (LA2O3["delta"] - LA2O3["U_fc"])) < 3 * d_f.std() and d_f.std() < 0.1
    assert p2.std["delta"] > 1.0
