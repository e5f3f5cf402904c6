"""The adaptive XPS plan through a real RunEngine into the embedded catalog, and its CLI command."""

import numpy as np
from click.testing import CliRunner

from agent import xps_agent
from bayesbeam.rehearsal.xps.rehearse import rehearse_xps, rehearse_xps_run

FAST = dict(n_sweeps=300, n_burn=200, n_runs=2)


def test_ceo2_run_stops_when_decided_and_is_stored(RE, catalog):
    agent = xps_agent(max_sweeps=6, **FAST)
    r = rehearse_xps_run(RE, "ceo2", agent, seed=3, time_scale=1e6)
    run = catalog[r.uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success" and stop["reason"] == r.stop_reason
    assert r.stop_reason.startswith("model_decided: P(3-level)")
    post = run["posterior"].read()
    assert len(post["model_prob_max"]) == agent.sweeps and bool(post["stop"][-1])
    assert str(post["model_best"].values[-1]) == "3-level"
    counts = run["primary"]["analyser_counts"].read()
    assert np.allclose(counts.sum(0), agent.counts)  # the posterior is re-derivable from the record


def test_corrupted_sweep_is_discarded(RE, catalog):
    from plans.xps.sweeps import adaptive_xps
    from sim_devices.core.clock import SimClock
    from sim_devices.xps.electron_analyser import SimElectronAnalyser
    from sim_devices.xps.samples import sample

    det = SimElectronAnalyser(name="analyser", clock=SimClock(float("inf")), sample=sample("la2o3"), seed=1)
    det.fail_next("nan")
    agent = xps_agent(target_v=1e-6, max_sweeps=2, **FAST)  # budget binds
    (uid,) = RE(adaptive_xps([det], agent))
    sweeps = catalog[uid]["sweeps"].read()
    assert list(sweeps["valid"]) == [False, True, True]
    assert "non-finite" in str(sweeps["reason"].values[0])
    assert agent.sweeps == 2 and catalog[uid].metadata["stop"]["reason"].startswith("budget")
    assert [f["_id"] for f in agent.failures] == [1]


def test_agent_and_decisions_rebuild_from_the_catalog(RE, catalog):
    """Replaying the stored documents through XPSFeeder into a fresh agent reproduces the counts,
    every recorded free energy and the stop decision; a discarded sweep is registered again."""
    from agent.feeders import XPSFeeder
    from bayesbeam.catalog import replay
    from plans.xps.sweeps import adaptive_xps
    from sim_devices.core.clock import SimClock
    from sim_devices.xps.electron_analyser import SimElectronAnalyser
    from sim_devices.xps.samples import sample

    det = SimElectronAnalyser(name="analyser", clock=SimClock(float("inf")), sample=sample("la2o3"), seed=2)
    det.fail_next("timeout")
    live = xps_agent(target_v=1e-6, max_sweeps=2, seed=4, **FAST)
    (uid,) = RE(adaptive_xps([det], live))
    rebuilt = xps_agent(target_v=1e-6, max_sweeps=2, seed=4, **FAST)
    replay(catalog[uid], XPSFeeder(rebuilt))
    assert rebuilt.sweeps == live.sweeps == 2 and len(rebuilt.failures) == 1
    assert np.array_equal(rebuilt.counts, live.counts)
    stored = catalog[uid]["posterior"].read()
    valid = np.asarray(catalog[uid]["sweeps"]["valid"].read(), bool)
    assert np.allclose([h["F_2level"] for h in rebuilt.history], np.asarray(stored["F_2level"])[valid])
    assert rebuilt.should_stop() == live.should_stop() == (True, catalog[uid].metadata["stop"]["reason"])


def test_cli_bad_input_is_rejected_before_anything_moves(tmp_path):
    res = CliRunner().invoke(rehearse_xps, ["--truth", "ceo2", "--p-model", "1.5", "--catalog", str(tmp_path)])
    assert res.exit_code != 0 and "probability" in res.output
