"""What a run stores: bluesky's start-document keys and plain field names; runs stored by release
0.1 (prefixed field names, tests/data/format_v0, written by the 0.1 plans) still read and replay."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from bluesky_tiled_plugins import TiledWriter

from agent import spin_moment_agent, xas_agent, xps_agent
from agent.feeders import ComptonFeeder, XASFeeder, XPSFeeder
from agent.xas import MoveCost, SpectraLibrary, library_prior
from bayesbeam.catalog import replay
from plans import adaptive_compton, adaptive_xas, grid_xas
from sim_devices import BeamtimeSignal, SimClock, make_compton_beamline, make_xas_endstation
from sim_devices.compton import compton_sample

V0 = Path(__file__).with_name("data") / "format_v0"


def v0_documents(name: str) -> list[tuple[str, dict]]:
    with open(V0 / name) as f:
        return [tuple(json.loads(line)) for line in f]


@pytest.fixture(scope="module")
def v0_catalog(catalog):
    """The 0.1 document streams written into the real embedded catalog, as the 0.1 RunEngine did."""
    uids = {}
    for name in ("compton_fe.jsonl", "xas_fe3o4.jsonl", "xps_la2o3.jsonl"):
        docs = v0_documents(name)
        uid = docs[0][1]["uid"]
        if uid not in catalog:
            writer = TiledWriter(catalog, batch_size=1)
            for doc_name, doc in docs:
                writer(doc_name, doc)
        uids[name.split("_")[0]] = uid
    return uids


def test_v0_compton_run_reads_and_replays_into_the_current_analysis(catalog, v0_catalog):
    """A release-0.1 run (no live times, no correction settings in its configuration: they read as off) replays
    into today's agent: the same two cycles of stored spectra, monitor-normalised as then; the posterior is the
    current model's (a structured misfit, not 0.1's noise scale), so it agrees with the stored one within its
    std, and the stored target is reached again."""
    run = catalog[v0_catalog["compton"]]
    primary = run["primary"].read()
    assert set(primary.data_vars) >= {"cycle_cycle", "cycle_field_sign", "ge_spectrum"}
    fe = compton_sample("fe")
    agent = spin_moment_agent(0.02, element=fe.element, orbitals=fe.orbitals)
    replay(run, ComptonFeeder(agent, detector="ge"))
    stored = run["posterior"].read()
    assert agent.cycles == len(stored["mu_s_std"]) == 2
    assert agent.model.geometry.settings()["ge_thickness_mm"] == 0 and agent.exposure_s.tolist() == [0.0, 0.0]
    spectra, sign, monitor = (np.asarray(primary[k], float) for k in ("ge_spectrum", "cycle_field_sign", "ge_monitor"))
    scale = monitor[:4].mean() / monitor
    assert np.allclose(agent.sums[0], scale[sign > 0] @ spectra[sign > 0])
    rep = agent.report()
    assert abs(rep["mu_s_mean"] - float(stored["mu_s_mean"][-1])) < float(stored["mu_s_std"][-1])
    assert rep["mu_s_std"] == pytest.approx(float(stored["mu_s_std"][-1]), rel=0.2)
    stop, reason = agent.should_stop()
    assert stop and reason.startswith("target_std: std(mu_s)")


def test_v0_xas_run_replays_into_the_same_posterior(catalog, v0_catalog):
    run = catalog[v0_catalog["xas"]]
    start = run.metadata["start"]
    agent = xas_agent(library_prior(SpectraLibrary.from_csv().without(start["sample"])), target_rmse=0.03,
                      max_points=40, cost=MoveCost(), target=start["target"])
    agent.at(start["energy_limits"][0])  # where the monochromator started (the bottom of the range)
    replay(run, XASFeeder(agent, "mono_energy", "i0_counts", "it_counts"))
    stored = run["posterior"].read()
    assert agent.report()["points"] == len(stored["rmse_pred"]) and "point_point" in run["primary"].read()
    assert agent.report()["rmse_pred"] == pytest.approx(float(stored["rmse_pred"][-1]), rel=1e-9)
    assert agent.should_stop() == (True, run.metadata["stop"]["reason"])


def test_v0_xps_run_replays_into_the_same_free_energies(catalog, v0_catalog):
    run = catalog[v0_catalog["xps"]]
    agent = xps_agent(max_sweeps=2, seed=1, analysis="0.1", n_sweeps=300, n_burn=200, n_runs=2)  # as the 0.1 run was
    replay(run, XPSFeeder(agent))
    stored = run["posterior"].read()
    assert agent.sweeps == len(stored["F_2level"]) >= 1
    # the same seed, but a Monte Carlo free energy repeats only within its error across numpy/numba releases (a
    # fresh install moved it by 1.5 σ): agreement within 4 combined σ, not to the last digit
    for key in ("F_2level", "F_3level"):
        new = np.array([h[key] for h in agent.history])
        err = np.hypot([h[f"{key}_err"] for h in agent.history], np.asarray(stored[f"{key}_err"]))
        assert np.all(np.abs(new - np.asarray(stored[key])) < 4 * err), (key, new, np.asarray(stored[key]), err)
    stop, reason = agent.should_stop()  # the same conditions met, their Monte Carlo figures aside

    def conditions(text):
        return re.sub(r"\d+\.\d+", "#", text)

    assert stop and conditions(reason) == conditions(run.metadata["stop"]["reason"])


def test_a_new_run_stores_plan_args_and_plain_field_names(RE, catalog):
    bl = make_compton_beamline("fe", time_scale=1e6, seed=5)
    fe = bl.sample
    agent = spin_moment_agent(0.03, element=fe.element, orbitals=fe.orbitals)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, field_t=1.5,
                                 beamtime=BeamtimeSignal(bl.clock, name="beamtime"), continue_from="0123abcd",
                                 md={"sample": "fe", "agent_suggestion_uid": "sugg-1"}))
    run = catalog[uid]
    start = run.metadata["start"]
    assert start["plan_name"] == "adaptive_compton" and start["detectors"] == ["ge"] and start["motors"] == ["magnet"]
    args = start["plan_args"]
    assert args["field_t"] == 1.5 and args["continue_from"] == "0123abcd" and args["detectors"][0].startswith("SimGe")
    assert args["agent"].startswith("SpinMomentAgent(") and "TargetStd" in args["agent"]
    assert start["continue_from"] == "0123abcd" and start["agent_suggestion_uid"] == "sugg-1"
    assert start["hints"] == {"dimensions": [[["cycle"], "primary"]]}
    primary = run["primary"].read()
    assert {"cycle", "flip", "field_sign"} <= set(primary.data_vars)
    assert not [k for k in primary.data_vars if k.startswith(("cycle_", "flip_"))]
    assert list(primary["field_sign"].values[:4]) == [1, -1, -1, 1] and list(primary["flip"].values[:4]) == [0, 1, 2, 3]


def test_xas_plans_store_plan_args_and_plain_names(RE, catalog):
    es = make_xas_endstation("Fe-foil", SimClock(1e7), seed=1)
    (uid,) = RE(grid_xas([es.i0, es.it], es.mono, [7110.0, 7120.0], dwell_s=0.5))
    start = catalog[uid].metadata["start"]
    assert start["plan_args"]["energies"] == [7110.0, 7120.0] and start["plan_args"]["dwell_s"] == 0.5
    assert start["detectors"] == ["i0", "it"] and start["motors"] == ["mono"]
    agent = xas_agent(exclude="Fe-foil", target_rmse=1e-6, max_points=3)
    (uid,) = RE(adaptive_xas([es.i0, es.it], es.mono, agent, md={"sample": "Fe-foil"}))
    run = catalog[uid]
    assert run.metadata["start"]["plan_args"]["agent"].startswith("XASAgent(any_of(TargetRMSE")
    primary = run["primary"].read()
    assert list(primary["point"].values) == [1, 2, 3] and np.all(primary["dwell_s"].values > 0)
    assert "suggestion_id" in primary and not [k for k in primary.data_vars if k.startswith("point_")]
    assert run.metadata["stop"]["reason"].startswith("budget")


def test_the_01_call_forms_still_run_with_a_warning(RE, catalog):
    bl = make_compton_beamline("fe", time_scale=1e6, seed=6)
    agent = spin_moment_agent(0.05, element=bl.sample.element, orbitals=bl.sample.orbitals)
    with pytest.warns(DeprecationWarning, match=r"pass the detectors as a list, \[ge\]"):
        (uid,) = RE(adaptive_compton(bl.ge, bl.magnet, agent, ring=bl.ring, beam_poll_s=0))
    assert catalog[uid].metadata["start"]["detectors"] == ["ge"]
    es = make_xas_endstation("Fe-foil", SimClock(1e7), seed=1)
    with pytest.warns(DeprecationWarning, match=r"bluesky's is grid_xas\(detectors, mono"):
        (uid,) = RE(grid_xas(es.mono, [es.i0, es.it], [7112.0]))
    assert catalog[uid].metadata["start"]["motors"] == ["mono"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(DeprecationWarning):
            list(adaptive_xas(es.mono, [es.i0, es.it], None))
