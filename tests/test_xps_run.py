"""The adaptive XPS plan through a real RunEngine into the embedded catalog, and its CLI command."""

import numpy as np
import pytest
from cli_output import read_json, table_row
from click.testing import CliRunner

from agent import xps_agent
from bayesbeam.cli import main
from bayesbeam.rehearsal.xps.cli import rehearse_xps
from bayesbeam.rehearsal.xps.rehearse import XPSOptions, rehearse_xps_run

FAST = dict(analysis="0.1", n_sweeps=300, n_burn=200, n_runs=2)  # for the seed-line-shape samples


def test_ceo2_run_stops_when_decided_and_is_stored(RE, catalog, tmp_path):
    import warnings

    import matplotlib.pyplot as plt
    from bluesky.callbacks.best_effort import BestEffortCallback, hinted_fields

    from bayesbeam.rehearsal.xps.report import xps_figure

    docs = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    agent = xps_agent(max_sweeps=6, **FAST)
    r = rehearse_xps_run(RE, XPSOptions("ceo2", analysis="0.1", seed=3, time_scale=1e6), agent=agent)
    RE.unsubscribe(token)
    hinted = {d["name"]: set(hinted_fields(d)) for n, d in docs if n == "descriptor"}
    assert hinted == {"primary": {"sweep", "analyser_total"}, "sweeps": set(),
                      "posterior": {"model_prob_max", "delta_f_mean", "delta_f_std", "V_mean", "V_std"}}
    with warnings.catch_warnings(record=True) as caught:  # BEC as the session has it: the primary stream only
        warnings.simplefilter("always")
        bec = BestEffortCallback()
        bec.disable_table()
        bec.noplot_streams += ["posterior", "sweeps"]
        before = set(plt.get_fignums())
        for name, doc in docs:
            bec(name, doc)
    panels = [sum(ax.get_visible() for ax in plt.figure(n).axes) for n in set(plt.get_fignums()) - before]
    plt.close("all")
    assert panels == [1] and not [w for w in caught if "Omitting" in str(w.message)]  # total counts vs sweep
    art = r.live.artists()  # the live view: both fits on the summed spectrum, P(3-level) and ΔF per sweep
    assert all(len(line.get_ydata()) == len(agent.energies) for line in art["fits"].values())
    assert list(art["probability"].get_xdata()) == list(range(1, agent.sweeps + 1))
    assert [t.get_ydata()[0] for t in art["thresholds"]] == pytest.approx([0.99, 0.01, -np.log(99), np.log(99)])
    assert np.allclose(art["counts"].get_ydata(), agent.counts)
    assert xps_figure(r, tmp_path / "xps.png").stat().st_size > 10_000
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


def test_xps_json_matches_the_printed_table_and_the_catalog(tmp_path, catalog, catalog_dir):
    path = tmp_path / "xps.json"
    result = CliRunner().invoke(main, ["rehearse", "xps", "--truth", "la2o3", "--max-sweeps", "1", "--mc-sweeps", "50",
                                       "--analysis", "0.1", "--seed", "3", "--time-scale", "1e6",
                                       "--catalog", str(catalog_dir), "--json", str(path),
                                       "--figure", str(tmp_path / "xps.png")])
    assert result.exit_code == 0, result.output
    s = read_json(path)
    assert s["sample"] == "La2O3" and s["seed"] == 3 and s["options"]["mc_sweeps"] == 50
    assert s["options"]["analysis"] == "0.1"
    assert s["steps"] == s["sweeps"] == 1 and s["stop_reason"]
    assert s["p_2level"] + s["p_3level"] == pytest.approx(1)
    assert s["model_prob_max"] == max(s["p_2level"], s["p_3level"])
    out = result.output
    assert table_row(out, "sweeps")[1] == str(s["steps"])
    assert table_row(out, "beamtime")[1] == f"{s['beamtime_s'] / 60:.1f} min"
    assert table_row(out, "stop reason")[1] == s["stop_reason"]
    assert table_row(out, "leading model")[1] == f"{s['model_best']} (P ≥ {s['model_prob_max']:.4f})"
    assert table_row(out, "P 2-level / 3-level")[1] == f"{s['p_2level']:.4f} / {s['p_3level']:.4f}"
    assert table_row(out, "F 2-level / 3-level")[1] == (
        f"{s['F_2level']:.2f} ± {s['F_2level_err']:.2f} / {s['F_3level']:.2f} ± {s['F_3level_err']:.2f} nats")
    for q in ("delta", "V", "U_ff", "U_fc", "gamma", "delta_f"):
        cell = table_row(out, q)[1]
        if s[f"{q}_mean"] is None:  # NaN in the report: null in the file (U_ff of a leading 2-level model)
            assert s["model_best"] == "2-level" and q == "U_ff" and cell.startswith("not in the 2-level model")
        else:
            assert cell.startswith(f"{s[f'{q}_mean']:.4g} ± {s[f'{q}_std']:.2g} eV [{s[f'{q}_lo95']:.4g}, ")
    run = catalog[s["uid"]]
    assert run.metadata["stop"]["reason"] == s["stop_reason"]
    assert float(run["posterior"]["F_2level"].read()[-1]) == pytest.approx(s["F_2level"])
    config = run.metadata["start"]["agent_config"]  # the analysis that decided the run, in its record
    assert config["analysis"] == "0.1" and config["sampler"]["n_sweeps"] == 50


def test_the_default_rehearsal_is_the_poisson_analysis_of_the_full_line_shape():
    """Without --analysis: the Poisson agent with the sample's element, on the truth's full-line-shape sample
    over the wide analyser (the run itself: tests/test_xps_run's plan test; ~40 s of fits, so not repeated)."""
    from sim_devices.core.clock import SimClock
    from sim_devices.xps import SimWideAnalyser, analyser_for

    for truth, element in (("la2o3", "La"), ("CeO2", "Ce"), ("CeO2-full", "Ce")):
        options = XPSOptions(truth)
        s, agent = options.sample(), options.agent()
        assert s.name.endswith("-full") and (agent.analysis, agent.element) == ("poisson", element)
        det = analyser_for(s, name="analyser", clock=SimClock(float("inf")))
        assert isinstance(det, SimWideAnalyser) and det.energies.get().size == 276
    from agent.xps.agent import ANALYSES
    from bayesbeam.rehearsal.xps.options import ANALYSES as OPTION_ANALYSES  # kept light for --help

    assert OPTION_ANALYSES == ANALYSES and XPSOptions().analysis == ANALYSES[0]
    assert XPSOptions("la2o3", analysis="0.1").sample().name == "La2O3"
    with pytest.raises(ValueError, match="analysis must be one of poisson, 0.1"):
        XPSOptions("la2o3", analysis="gauss").agent()


def test_the_feeder_judges_each_sweep_by_its_stored_reading_not_the_plan_s_verdict(RE, catalog):
    """The ``sweeps`` stream is bookkeeping: with its verdicts inverted, a replay still ingests exactly the sweeps
    whose stored counts are proven (``sweep_problem``), and registers the NaN sweep as a failure."""
    from agent.feeders import XPSFeeder, sweep_problem
    from plans.xps.sweeps import adaptive_xps
    from sim_devices.core.clock import SimClock
    from sim_devices.xps.electron_analyser import SimElectronAnalyser
    from sim_devices.xps.samples import sample

    det = SimElectronAnalyser(name="analyser", clock=SimClock(float("inf")), sample=sample("la2o3"), seed=1)
    det.fail_next("nan")
    live = xps_agent(target_v=1e-6, max_sweeps=2, seed=4, **FAST)
    (uid,) = RE(adaptive_xps([det], live))
    run = catalog[uid]
    spec = run.metadata["start"]["validity"]
    primary = run["primary"].read()
    proven = [not sweep_problem({k: primary[k].values[i] for k in primary.data_vars}, spec)
              for i in range(primary.sizes["time"])]
    assert proven == [False, True, True]
    streams, rebuilt = {}, xps_agent(target_v=1e-6, max_sweeps=2, seed=4, **FAST)
    feeder = XPSFeeder(rebuilt)
    for name, doc in run.documents():
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        if name == "event" and streams[doc["descriptor"]] == "sweeps":
            doc = {**doc, "data": {**doc["data"], "valid": not doc["data"]["valid"], "reason": "inverted"}}
        feeder(name, doc)
    assert rebuilt.sweeps == live.sweeps == 2 and np.array_equal(rebuilt.counts, live.counts)
    assert [(f["_id"], f["reason"]) for f in rebuilt.failures] == [(1, "non-finite counts in the sweep")]


def test_poisson_analysis_runs_through_the_plan_on_the_wide_analyser(RE, catalog):
    """The Poisson analysis of the full line shape through adaptive_xps: the wide analyser sweeps the full CeO₂
    truth (with beam-induced reduction), the posterior stream records both free energies with their errors and
    the sweep-consistency p-value, and the stored counts sum to the agent's."""
    from plans.xps.sweeps import adaptive_xps
    from sim_devices.core.clock import SimClock
    from sim_devices.xps import SimWideAnalyser
    from sim_devices.xps.samples import full_sample

    det = SimWideAnalyser(name="analyser", clock=SimClock(float("inf")), seed=3,
                          sample=full_sample(1.6, reduction_per_sweep=0.05))
    betas = np.concatenate([[0.0], np.geomspace(1e-7, 1.0, 19)])
    agent = xps_agent(max_sweeps=2, analysis="poisson", n_sweeps=100, n_burn=100, betas=betas)
    (uid,) = RE(adaptive_xps([det], agent))
    run = catalog[uid]
    post = run["posterior"].read()
    assert len(post["F_3level"]) == 2 and np.all(np.isfinite(post["F_3level_err"]))
    assert np.isnan(float(post["sweep_consistency_p"][0])) and 0 <= float(post["sweep_consistency_p"][1]) <= 1
    assert str(post["model_best"].values[-1]) == "3-level"
    assert np.allclose(run["primary"]["analyser_counts"].read().sum(0), agent.counts)
    assert run.metadata["stop"]["reason"].startswith("budget")
