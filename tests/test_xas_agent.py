"""The XAS agent on simulated transmission physics: stopping, honesty, adaptation, protocol."""

import numpy as np
import pytest

from agent.core.stopping import Budget
from agent.xas.agent import TargetRMSE, XASAgent, xas_agent
from agent.xas.prior import library_prior
from sim_devices.xas.samples import XASSample


def run(agent, sample, max_points=400):
    while not agent.should_stop()[0] and len(agent.history) < max_points:
        (s,) = agent.suggest(1)
        i0, it = sample.counts(s["energy"], s["dwell"])
        agent.ingest([{**s, "i0": i0, "it": it}])
    return agent


def actual(agent, sample):
    """(actual RMSE of the design target, fraction of the grid where mu's 95 % band covers the truth)."""
    p = agent.posterior()
    truth = sample.mu(p["energy"])
    return sample.target_rmse(agent.post), np.mean((truth >= p["lower"]) & (truth <= p["upper"]))


def test_bad_targets_raise_before_anything_runs(lib):
    for bad in (0.0, -0.01, np.nan):
        with pytest.raises(ValueError, match="target RMSE"):
            xas_agent(library_prior(lib), target_rmse=bad)
    with pytest.raises(ValueError, match="exclude the whole grid"):
        xas_agent(library_prior(lib), target_rmse=0.01, energy_limits=(8000.0, 9000.0))
    with pytest.raises(ValueError, match="dwell"):
        xas_agent(library_prior(lib), target_rmse=0.01, dwell_options=(0.0,))


def test_stops_at_the_target_with_an_honest_rmse(lib):
    sample = XASSample("LiFePO4", seed=3, amplitude=1.3, offset=0.6, shift_eV=0.8)
    agent = run(xas_agent(library_prior(lib.without("LiFePO4")), target_rmse=0.01), sample)
    stop, reason = agent.should_stop()
    rep = agent.report()
    assert stop and reason.startswith("target_rmse") and rep["rmse_pred"] <= 0.01
    rmse, cover = actual(agent, sample)
    assert 0.4 * rep["rmse_pred"] < rmse < 1.6 * rep["rmse_pred"]
    assert rep["points"] == len(agent.history) and rep["beamtime_s"] > rep["points"] * 0.5
    assert abs(rep["amplitude_mean"] - 1.3) < 0.1


@pytest.mark.slow
def test_95_band_covers_held_out_standards(lib):
    """Across 12 held-out standards the 95 % band covers the truth at ~95 % of the grid points."""
    covers, ratios = [], []
    for k, name in enumerate(lib.names[::5]):
        sample = XASSample(name, seed=k, amplitude=1.75, offset=0.45)
        agent = run(xas_agent(library_prior(lib.without(name)), target_rmse=0.012), sample)
        rmse, cover = actual(agent, sample)
        covers.append(cover)
        ratios.append(rmse / agent.report()["rmse_pred"])
    assert 0.85 <= np.mean(covers) <= 1.0, covers
    assert 0.6 < np.median(ratios) < 1.3, ratios


def test_adapts_to_a_rigid_edge_shift(lib):
    prior = library_prior(lib.without("Fe-foil"))
    shifts, sds = [], []
    for shift in (0.0, 1.5):
        agent = run(xas_agent(prior, stop_rule=Budget(points=60)), XASSample("Fe-foil", seed=5, shift_eV=shift))
        shifts.append(agent.report()["shift_mean"])
        sds.append(agent.report()["shift_std"])
    assert 0.1 < sds[0] < 0.5 and 0.1 < sds[1] < 0.5
    assert abs(shifts[1] - shifts[0] - 1.5) < 3 * np.hypot(*sds) and shifts[1] > 1.0


def test_suggestions_protocol_limits_and_failures(lib):
    agent = xas_agent(library_prior(lib), target_rmse=0.01, energy_limits=(7100.0, 7150.0))
    sug = agent.suggest(3)
    assert [s["_id"] for s in sug] == [0, 1, 2]
    assert all(7100.0 <= s["energy"] <= 7150.0 and s["dwell"] >= agent.dwell_options.min() for s in sug)
    assert len({s["energy"] for s in sug}) == 3
    agent.ingest([{**sug[0], "i0": np.nan, "it": 10.0}])
    assert agent.failures and agent.report()["points"] == 0
    assert not agent.should_stop()[0]


def test_checkpoint_restores_the_posterior(lib, tmp_path):
    prior = library_prior(lib.without("FeO_2"))
    sample = XASSample("FeO_2", seed=7)
    agent = run(xas_agent(prior, stop_rule=Budget(points=25), checkpoint_path=tmp_path / "xas.npz"), sample)
    agent.checkpoint()
    fresh = XASAgent(prior, TargetRMSE(0.01) | Budget(points=25))
    fresh.restore(tmp_path / "xas.npz")
    np.testing.assert_allclose(fresh.posterior()["mean"], agent.posterior()["mean"], atol=1e-10)
    assert fresh.report()["beamtime_s"] == agent.report()["beamtime_s"]
    assert fresh.suggest(1)[0]["energy"] == agent.suggest(1)[0]["energy"]
