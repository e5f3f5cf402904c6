"""Fly-scan XAS: the designed speed profile against a constant-speed sweep of the same time (by brute-force
conditioning), the adaptive fly run through a RunEngine into the catalog and its replay, a bin whose readback
does not prove it, and bad input failing before motion."""

import numpy as np
import pytest
from bluesky import RunEngine

from agent.feeders import FlyXASFeeder
from agent.xas.fly import FlyXASAgent, design_sweep, fly_bins, fly_profile, fly_xas_agent, profile_trace
from bayesbeam.catalog import replay
from plans.xas.fly import adaptive_fly_xas
from sim_devices.core.clock import SimClock
from sim_devices.xas import make_xas_endstation
from sim_devices.xas.fly import fly_scaler


def _brute_force_var(post, noise, weights, centres, dwell):
    """Trace Cov(Wμ) after conditioning a copy of ``post`` from scratch on the sweep (XASPosterior.resolve)."""
    p = post.copy()
    y = np.interp(centres, post.energy, post.y_pred())
    p.data_e, p.data_y, p.data_var = (list(p.data_e) + list(centres), list(p.data_y) + list(y),
                                      list(p.data_var) + list(noise.var(y, dwell)))
    p.resolve()
    return float(np.trace(p.functional_moments(weights)[1]))


def test_the_profile_dwells_near_the_edge_and_beats_a_constant_speed_sweep():
    agent = fly_xas_agent(exclude="Fe3O4", quantity="edge_position", target_std=0.05, adapt=False)
    post, w = agent.post, agent.quantity_weights()
    for e in (7090.0, 7125.0, 7160.0):  # a posterior with some data, not the bare prior
        post.update(e, float(np.interp(e, post.energy, post.y_pred())), 1e-4)
    lo, hi, sweep_s = *agent.fly_range, 60.0
    centres = fly_bins(lo, hi)
    dwell = fly_profile(post, agent.noise, w, sweep_s, lo, hi)
    const = np.full(centres.size, sweep_s / centres.size)
    assert dwell.sum() == pytest.approx(sweep_s) and dwell.min() >= 0.1 / 20.0 * (1 - 1e-12)
    assert dwell.max() <= 0.1 / 0.05 and np.unique(dwell).size <= 30  # piecewise constant, <= 30 speeds
    edge = float(agent.quantity.evaluate(post.mean)[0][0]) - agent.quantity.calibration_eV  # on the mono's axis
    near = np.abs(centres - edge) <= 3.0
    assert dwell[near].sum() > 3 * const[near].sum()
    assert dwell[~near].mean() < const[~near].mean()
    v_fly = _brute_force_var(post, agent.noise, w, centres, dwell)
    v_const = _brute_force_var(post, agent.noise, w, centres, const)
    assert v_fly < 0.5 * v_const
    # the design's own bin-space algebra agrees with the brute force
    assert profile_trace(post, agent.noise, w, centres, dwell) == pytest.approx(v_fly, rel=1e-6)
    prof = design_sweep(post, agent.noise, w, sweep_s, lo, hi)
    assert prof.trace == pytest.approx(v_fly, rel=1e-6) and prof.trace_raw <= prof.trace * 1.2
    assert prof.segments[0][0] == lo and prof.segments[-1][1] == pytest.approx(hi)
    # a long sweep (steps larger than a bin's cap of bin/v_min) still spends its whole time
    long = fly_profile(post, agent.noise, w, 700.0, lo, hi, increments=50)
    assert long.sum() == pytest.approx(700.0) and long.max() <= 2.0 * (1 + 1e-9)


def test_the_fly_run_stops_on_target_std_is_stored_and_replays(RE, catalog):
    es = make_xas_endstation("LiFePO4", SimClock(1e7), seed=4)
    fly = fly_scaler(es)
    (uid,) = RE(adaptive_fly_xas([fly], es.mono, quantity="edge_position", target_std=0.15, exclude="LiFePO4",
                                 beamtime=None))
    run = catalog[uid]
    post = run["posterior"].read()
    assert run.metadata["stop"]["reason"].startswith("target_std: std(edge_position)")
    assert float(post["edge_position_std"][-1]) <= 0.15 < float(post["edge_position_std"][-2])
    primary = run["primary"].read()
    n_sweeps = int(post["sweeps"][-1])
    assert primary["fly_i0"].shape[0] == n_sweeps and primary["fly_i0"].shape[1] == 1050  # every bin stored
    assert float(post["beamtime_s"][-1]) == pytest.approx(es.mono.clock.now, rel=1e-9)
    fresh = fly_xas_agent(exclude="LiFePO4", quantity="edge_position", target_std=0.15)
    fresh.at(es.sample.energy_range[0])
    replay(run, FlyXASFeeder(fresh))
    rep = fresh.report()
    assert rep["sweeps"] == n_sweeps and rep["bins"] == int(post["bins"][-1])
    assert rep["edge_position_std"] == pytest.approx(float(post["edge_position_std"][-1]), rel=1e-9)
    assert rep["edge_position_mean"] == pytest.approx(float(post["edge_position_mean"][-1]), rel=1e-12)
    assert rep["beamtime_s"] == pytest.approx(float(post["beamtime_s"][-1]), rel=1e-12)


def test_a_bin_whose_readback_is_off_is_not_fed():
    es = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=1)
    fly = fly_scaler(es)
    fly.fail_next("readback", bins=[400, 401], offset_eV=0.3)
    agent = fly_xas_agent(exclude="Fe3O4", quantity="edge_position", target_std=0.05, max_sweeps=1, adapt=False)
    docs = []
    RunEngine()(adaptive_fly_xas([fly], es.mono, agent, beamtime=None), lambda n, d: docs.append((n, d)))
    centres = fly_bins(*agent.fly_range)
    assert agent.bins == centres.size - 2 and len(agent.post.data_e) == centres.size - 2
    bad = [f for f in agent.failures if "readback" in f["reason"]]
    assert [round(f["energy"] - 0.3, 6) for f in bad] == [round(centres[400], 6), round(centres[401], 6)]
    assert not np.any(np.isclose(agent.post.data_e, centres[400])) and not np.any(np.isclose(agent.post.data_e,
                                                                                             centres[401]))
    (last,) = [d for n, d in docs if n == "event" and "bins_unused" in d["data"]]
    assert last["data"]["bins_unused"] == 2 and last["data"]["stop_reason"].startswith("budget: cycles")


def test_bad_fly_inputs_fail_in_one_line_before_motion():
    es = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=1)
    fly = fly_scaler(es, max_speed_eV_s=20.0)
    fast = fly_xas_agent(exclude="Fe3O4", quantity="edge_position", target_std=0.05, v_max_eV_s=50.0)
    with pytest.raises(ValueError, match="above the fly controller") as err:
        RunEngine()(adaptive_fly_xas([fly], es.mono, fast, beamtime=None))
    assert "\n" not in str(err.value) and es.mono.moves == 0 and es.mono.clock.now == 0.0 and fly.sweeps == 0
    post, noise = fast.post, fast.noise
    with pytest.raises(ValueError, match="empty fly range"):
        fly_profile(post, noise, None, 10.0, 7120.0, 7120.0)
    with pytest.raises(ValueError, match="sweep time"):
        fly_profile(post, noise, None, 1.0, 7080.0, 7180.0)  # faster than 20 eV/s everywhere
    with pytest.raises(ValueError, match="v_min < v_max"):
        fly_profile(post, noise, None, 10.0, 7080.0, 7180.0, v_max_eV_s=0.01)
    with pytest.raises(ValueError, match="empty fly range"):
        FlyXASAgent(post.prior0, fast.stop_rule, quantity=fast.quantity, energy_limits=(7120.0, 7120.05))
    assert es.mono.moves == 0 and es.mono.clock.now == 0.0
