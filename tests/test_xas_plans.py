"""XAS plans through a real RunEngine: adaptive run into the catalog, bad input, optimize_in_run, and
`bayesbeam rehearse xas --json`."""

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky_adaptive.plans import optimize_in_run
from bluesky_adaptive.protocols import OptimizationProblem
from cli_output import read_json
from click.testing import CliRunner

from agent.core.stopping import Budget
from agent.feeders import XASFeeder
from agent.xas.agent import XASAgent
from agent.xas.prior import SpectraLibrary, library_prior
from bayesbeam.catalog import replay
from bayesbeam.cli import main
from bayesbeam.rehearsal.xas.rehearse import XASOptions, make_agent, make_xas_beamline, rehearse_xas_run
from plans.xas.energy_points import adaptive_xas, grid_xas


def test_adaptive_run_stops_on_target_and_is_stored(RE, catalog, tmp_path):
    from bluesky.callbacks.best_effort import hinted_fields

    from bayesbeam.rehearsal.xas.report import rehearsal_figure

    docs = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    r = rehearse_xas_run(RE, XASOptions("Fe-foil", target_rmse=0.012, seed=2, time_scale=1e7))
    RE.unsubscribe(token)
    # live tables and plots show the measured counts against the energy, and the watched predicted RMSE
    hinted = {d["name"]: set(hinted_fields(d)) for n, d in docs if n == "descriptor"}
    assert hinted == {"primary": {"mono_energy", "i0_counts", "it_counts"}, "posterior": {"rmse_pred"}}
    primary = next(d for n, d in docs if n == "descriptor" and d["name"] == "primary")
    assert primary["data_keys"]["i0_counts"]["precision"] == 0  # a table prints 47458, not 47458.000
    # the live view: posterior mean and band on the grid, every measured point, the RMSE against the target
    art = r.live.artists()
    assert len(art["points"].get_xdata()) == r.agent.report()["points"] and art["band"] is not None
    assert len(art["rmse"].get_ydata()) == r.agent.report()["points"] and art["target"].get_ydata()[0] == 0.012
    assert "target reached" in r.live.ax_rmse.get_title()
    assert rehearsal_figure(r, str(tmp_path / "xas.png")) and (tmp_path / "xas.png").stat().st_size > 10_000
    run = catalog[r.uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success" and stop["reason"].startswith("target_rmse")
    post = run["posterior"].read()
    n = r.agent.report()["points"]
    assert len(post["rmse_pred"]) == n and post["rmse_pred"][-1] <= 0.012 < post["rmse_pred"][-2]
    assert bool(post["stop"][-1]) and not np.any(post["stop"][:-1])
    assert np.all(np.isfinite(post["next_energy"][:-1]))
    # the posterior stream is re-derivable: replay the stored documents into a fresh agent
    fresh = make_agent("Fe-foil", 0.012)
    fresh.at(r.sample.energy_range[0])  # where the monochromator started
    replay(run, XASFeeder(fresh, "mono_energy", "i0_counts", "it_counts"))
    assert fresh.report()["points"] == n
    assert fresh.report()["rmse_pred"] == pytest.approx(float(post["rmse_pred"][-1]), rel=1e-9)
    assert r.beamtime_s == pytest.approx(fresh.report()["beamtime_s"], rel=1e-9)
    assert r.conventional["region 2/0.25/1 eV"][1] > 0 and r.trajectory.shape == (n, 3)


def test_energies_outside_the_mono_range_fail_before_motion():
    bl = make_xas_beamline("Fe3O4", time_scale=float("inf"))
    bl.mono.low_limit_eV.put(7100.0)
    agent = make_agent("Fe3O4", 0.01)
    RE = RunEngine()
    with pytest.raises(ValueError, match="outside the monochromator range"):
        RE(adaptive_xas([bl.i0, bl.it], bl.mono, agent))
    with pytest.raises(ValueError, match="outside the monochromator range"):
        RE(grid_xas([bl.i0, bl.it], bl.mono, [7110.0, 7050.0]))
    assert bl.clock.now == 0.0 and bl.mono.moves == 0
    with pytest.raises(ValueError, match="Fe-foil"):
        make_agent("unobtainium", 0.01)
    with pytest.raises(ValueError, match="target RMSE"):
        make_agent("Fe3O4", 0.0)


def test_grid_scan_counts_every_energy():
    bl = make_xas_beamline("Fe3O4", time_scale=float("inf"))
    docs = []
    RunEngine()(grid_xas([bl.i0, bl.it], bl.mono, [7110.0, 7120.0, 7130.0], dwell_s=2.0),
                lambda name, doc: docs.append((name, doc)))
    events = [d for n, d in docs if n == "event"]
    assert [e["data"]["mono_energy"] for e in events] == [7110.0, 7120.0, 7130.0]
    assert bl.clock.now == pytest.approx(3 * 2.0 + 3 * 0.3 + (7130.0 - bl.sample.energy_range[0]) / 20.0)


def test_optimize_in_run_drives_the_xas_agent():
    """bluesky-adaptive's own plan moves the mono ("energy") and dwell, the agent ingests, stops."""
    bl = make_xas_beamline("FeS2", time_scale=float("inf"), seed=3)
    bl.mono.name = "energy"
    lib = SpectraLibrary.from_csv()
    agent = XASAgent(library_prior(lib.without("FeS2")), Budget(points=12))
    events = []

    def collect(name, doc):
        if name == "event" and "i0_counts" in doc["data"]:
            events.append(doc["data"])

    def evaluate(uid, suggestions):
        got = events[-len(uid):]
        by_id = {s["_id"]: s for s in suggestions}
        return [{**by_id[i], "energy": d[bl.mono.energy.name], "i0": d["i0_counts"], "it": d["it_counts"]}
                for i, d in zip(uid, got, strict=True)]

    problem = OptimizationProblem(optimizer=agent, actuators=[bl.mono, bl.dwell], sensors=[bl.i0, bl.it],
                                  evaluation_function=evaluate)
    RE = RunEngine()
    RE.subscribe(collect)
    RE(optimize_in_run(problem, iterations=50, n_points=3))
    stop, reason = agent.should_stop()
    assert stop and reason.startswith("budget") and agent.report()["points"] == 12 and len(events) == 12
    assert {round(e[bl.mono.energy.name], 6) for e in events} <= set(np.round(agent.post.energy, 6))
    assert bl.clock.now > 12 * 2.0


def test_xas_json_matches_the_printed_summary_and_the_catalog(tmp_path, catalog, catalog_dir):
    path = tmp_path / "xas.json"
    result = CliRunner(env={"TTY_COMPATIBLE": "1"}).invoke(  # as on a terminal: the progress display on stderr
        main, ["rehearse", "xas", "--sample", "fe-FOIL", "--target-rmse", "0.03", "--seed", "2", "--time-scale", "1e7",
               "--catalog", str(catalog_dir), "--json", str(path), "--figure", str(tmp_path / "xas.png")])
    assert result.exit_code == 0, result.output
    s = read_json(path)
    assert s["sample"] == s["options"]["sample"] == "Fe-foil"  # any case in, the library's spelling stored
    assert s["seed"] == 2 and s["options"]["target_rmse"] == 0.03
    assert f"point {s['points']}: predicted RMSE {s['rmse_pred']:.4f} (target 0.03)" in result.stderr
    assert s["rmse_pred"] <= 0.03 and s["steps"] == s["points"] == len(s["energies_eV"])
    assert s["beamtime_s"] == pytest.approx(s["dwell_s"] + s["moves_s"])
    lines = result.stdout.splitlines()  # the summary alone: the progress display is on stderr
    assert lines[0] == f"stop: {s['stop_reason']}"
    assert lines[1].startswith(f"points: {s['points']}, beamtime {s['beamtime_s']:.0f} s (dwell {s['dwell_s']:.0f} s")
    assert f"predicted {s['rmse_pred']:.4f}, actual {s['rmse_actual']:.4f}" in lines[2]
    assert f"amplitude {s['amplitude_mean']:.3f} ± {s['amplitude_std']:.3f}" in lines[2]
    assert f"edge shift {s['shift_mean']:+.2f} ± {s['shift_std']:.2f} eV" in lines[2]
    for name, c in s["conventional"].items():
        assert f"{name}: {c['beamtime_s']:.0f} s (dwell x{c['dwell_scale']:.2f}) for the same predicted RMSE" \
            in result.stdout
    assert "energies in the order chosen (eV): " + " ".join(f"{e:.1f}" for e in s["energies_eV"]) in lines
    run = catalog[s["uid"]]
    assert run.metadata["stop"]["reason"] == s["stop_reason"] and run.metadata["start"]["sample"] == "Fe-foil"
    assert float(run["posterior"]["rmse_pred"].read()[-1]) == pytest.approx(s["rmse_pred"])
