"""The adaptive Compton plan through a real RunEngine into a real embedded catalog."""

import json
import subprocess
import sys

import numpy as np
import pytest
from stored_counts import stored_sums

from bayesbeam.rehearsal.compton.rehearse import ComptonOptions, make_agent, rehearse_repeats, rehearse_run
from plans.compton.flip_cycles import adaptive_compton
from sim_devices.compton.beamline import make_compton_beamline


def test_run_stops_on_target_and_is_stored(RE, catalog):
    result = rehearse_run(RE, ComptonOptions("fe", target_std=0.01, seed=4, time_scale=1e6))
    run = catalog[result.uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success"
    assert stop["reason"].startswith("target_std: std(mu_s)") and stop["reason"] == result.stop_reason
    post = run["posterior"].read()
    assert len(post["mu_s_std"]) == result.agent.cycles
    assert post["mu_s_std"][-1] <= 0.01 < post["mu_s_std"][-2]
    assert bool(post["stop"][-1]) and not np.any(post["stop"][:-1])
    spectra = run["primary"]["ge_spectrum"].read()
    assert spectra.shape == (4 * result.agent.cycles, 1024)
    # The agent's sums are re-derivable from the stored spectra, monitors and live times alone.
    primary = {k: run["primary"][k].read() for k in ("field_sign", "ge_spectrum", "ge_monitor", "ge_live_s",
                                                    "ge_elapsed_s")}
    plus, minus = stored_sums(primary, np.ones(spectra.shape[0], bool))
    assert np.allclose(result.agent.sums[0], plus) and np.allclose(result.agent.sums[1], minus)
    assert not np.allclose(plus, spectra[primary["field_sign"] > 0].sum(0))  # the live time did normalise them


def test_discarded_cycles_are_not_mixed_in(RE, catalog):
    bl = make_compton_beamline("fe", time_scale=1e6, seed=8)
    bl.magnet.fail_next(1, mode="stuck")  # first flip never reaches +2 T
    agent = make_agent(bl.sample, 0.01)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}))
    cycles = catalog[uid]["cycles"].read()
    assert not cycles["valid"][0] and "did not reach +2.000 T" in str(cycles["reason"].values[0])
    assert cycles["valid"][1:].all()
    assert agent.cycles == len(cycles["valid"]) - 1 and len(agent.failures) == 1


def test_beam_dump_during_a_count_discards_that_cycle(RE, catalog):
    bl = make_compton_beamline("fe", time_scale=1e6, seed=9)
    bl.ring.dump(at_s=450.0, duration_s=1200.0)  # while the third cycle is counting
    bl.ge.fail_next("nan")  # and a corrupted readout in the first cycle
    agent = make_agent(bl.sample, 0.01)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}))
    cycles = catalog[uid]["cycles"].read()
    reasons = [str(r) for r in cycles["reason"].values]
    assert "non-finite counts" in reasons[0]
    lost = [i for i, r in enumerate(reasons) if "beam lost during the count" in r]
    assert lost == [2], reasons
    assert agent.cycles == len(reasons) - 2 and cycles["valid"].values.sum() == agent.cycles
    primary = {k: catalog[uid]["primary"][k].read() for k in ("cycle", "ring_current", "ge_spectrum", "field_sign",
                                                              "ge_monitor", "ge_live_s", "ge_elapsed_s")}
    # Every spectrum the agent used was counted with beam; the posterior only holds valid cycles.
    valid_cycles = np.asarray(cycles["cycle"])[np.asarray(cycles["valid"], bool)]
    used = np.isin(primary["cycle"], valid_cycles)
    assert np.all(primary["ring_current"][used] > 10)
    assert np.allclose(agent.sums[:2], stored_sums(primary, used))


def test_repeated_failures_abort_but_keep_what_was_counted(RE, catalog):
    bl = make_compton_beamline("fe", time_scale=1e6, seed=10)
    agent = make_agent(bl.sample, 0.001)
    bl.magnet.fail_next(3, mode="timeout", after=4)  # one good cycle, then three failed flips in a row
    with pytest.raises(RuntimeError, match="3 consecutive cycles discarded"):
        RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}))
    run = catalog.values().last()
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "consecutive cycles discarded" in run.metadata["stop"]["reason"]
    assert run["primary"]["ge_spectrum"].read().shape == (4, 1024)  # the good cycle is stored
    assert list(run["cycles"]["valid"].read()) == [True, False, False, False]


def test_catalog_round_trip_in_a_fresh_process(RE, catalog, catalog_dir):
    result = rehearse_run(RE, ComptonOptions("fe", target_std=0.01, seed=12, time_scale=1e6),
                          md={"operator": "round-trip"})
    code = f"""
import json
from bayesbeam.catalog import open_catalog, find_runs
client = open_catalog({str(catalog_dir)!r})
run = client[{result.uid!r}]
by_md = list(find_runs(client, sample="fe", operator="round-trip"))
print(json.dumps({{"found": by_md, "reason": run.metadata["stop"]["reason"],
  "spectra": list(run["primary"]["ge_spectrum"].read().shape),
  "std": run["posterior"]["mu_s_std"].read().tolist(),
  "truth": run.metadata["start"]["truth_spin_moment_mub"]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["found"] == [result.uid]
    assert got["reason"] == result.stop_reason
    assert got["spectra"] == [4 * result.agent.cycles, 1024]
    assert got["std"] == pytest.approx([h["mu_s_std"] for h in result.agent.history])
    assert got["truth"] == pytest.approx(2.2)


def test_bad_plan_arguments_fail_before_anything_moves(RE):
    bl = make_compton_beamline("fe", time_scale=1e6)
    agent = make_agent(bl.sample, 0.01)
    with pytest.raises(ValueError, match="exceeds the magnet's limit"):
        RE(adaptive_compton([bl.ge], bl.magnet, agent, field_t=5.0))
    with pytest.raises(ValueError, match="field must be positive"):
        RE(adaptive_compton([bl.ge], bl.magnet, agent, field_t=-1.0))
    assert bl.clock.now == 0.0 and bl.magnet.readback.get() == 0.0


def test_agent_and_decisions_rebuild_from_the_catalog(RE, catalog):
    """Checkpointable through the catalog: replaying the stored documents into a fresh agent
    reproduces every posterior the run recorded, and the stop decision."""
    from agent.feeders import ComptonFeeder
    from bayesbeam.catalog import replay

    bl = make_compton_beamline("fe", time_scale=1e6, seed=21)
    bl.magnet.fail_next(1, mode="stuck", after=5)  # include a discarded cycle
    live = make_agent(bl.sample, 0.01)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, live, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}))
    rebuilt = make_agent(bl.sample, 0.01)
    replay(catalog[uid], ComptonFeeder(rebuilt, detector="ge"))
    assert rebuilt.cycles == live.cycles and len(rebuilt.failures) == 1
    stored = catalog[uid]["posterior"]["mu_s_std"].read()
    valid = np.asarray(catalog[uid]["cycles"]["valid"].read(), bool)
    assert np.allclose([h["mu_s_std"] for h in rebuilt.history], np.asarray(stored)[valid])
    assert rebuilt.should_stop() == live.should_stop() == (True, catalog[uid].metadata["stop"]["reason"])


def test_options_are_checked_and_the_old_keyword_form_still_works():
    with pytest.raises(ValueError, match="count time must be positive"):
        ComptonOptions(count_time_s=0).validate()
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        rehearse_repeats(ComptonOptions(), 0)
    with pytest.warns(DeprecationWarning, match="pass ComptonOptions"):
        old = rehearse_repeats(sample="fe", target_std=0.05, repeats=3, seed=5)
    new = rehearse_repeats(ComptonOptions("fe", target_std=0.05, seed=5), 3)
    assert old.options == new.options and np.array_equal(old.cycles, new.cycles)
    assert np.array_equal(old.mu_s_mean, new.mu_s_mean)


def test_hints_curate_the_live_plots_and_the_live_view_draws_the_run(RE, catalog, tmp_path):
    """BEC plots only the hinted fields: per spectrum the monitor and the field against the cycle, and the
    watched quantity of the posterior stream; the run's live view and its replay from the catalog draw the
    same MCP fit, the std of each quantity with the target, and a stop line is printed."""
    import io
    import warnings

    import matplotlib.pyplot as plt
    from bluesky.callbacks.best_effort import BestEffortCallback, hinted_fields

    from bayesbeam.live import PosteriorLines, StopReasonPrinter, replay_figure
    from bayesbeam.rehearsal.compton.report import rehearsal_figure

    docs = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    result = rehearse_run(RE, ComptonOptions("fe", target_std=0.01, seed=4, time_scale=1e6))
    RE.unsubscribe(token)
    hinted = {d["name"]: set(hinted_fields(d)) for n, d in docs if n == "descriptor"}
    assert hinted == {"primary": {"cycle", "magnet_readback", "ge_monitor"}, "cycles": set(),
                      "posterior": {"mu_s_mean", "mu_s_std"}}
    before = set(plt.get_fignums())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bec = BestEffortCallback()
        bec.disable_table()
        for name, doc in docs:
            bec(name, doc)
    panels = {plt.figure(n).get_label(): sum(ax.get_visible() for ax in plt.figure(n).axes)
              for n in set(plt.get_fignums()) - before}
    plt.close("all")
    assert sorted(panels.values()) == [2, 2], panels  # was 9 + 4 + 30
    assert not [w for w in caught if "Omitting" in str(w.message)]

    view = result.live
    art = view.artists()
    n_pz = len(result.agent.model.pz)
    assert len(art["mcp_fit"].get_xdata()) == n_pz and len(art["mcp_measured"].get_xdata()) == n_pz
    assert art["mcp_band"] is not None and len(art["components"]) == 3  # 3d, 4s and the discrepancy
    assert list(art["std"]["mu_s"].get_ydata()) == pytest.approx(
        list(catalog[result.uid]["posterior"]["mu_s_std"].read()))
    assert art["target"].get_ydata()[0] == 0.01
    assert art["hours_axis"].get_xlabel() == "beamtime (h)"
    legend = [t.get_text() for t in art["legends"][1].get_texts()]
    assert "σ($\\mu_s$)" in legend and any(t.startswith("target σ") for t in legend)
    assert "target reached" in view.ax_std.get_title() and "χ²/ν" in view.res_text.get_text()
    png = rehearsal_figure(result, tmp_path / "compton.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    replayed = replay_figure(catalog, result.uid, tmp_path / "replayed.png")
    assert (tmp_path / "replayed.png").stat().st_size > 10_000
    assert np.allclose(replayed.artists()["mcp_fit"].get_ydata(), art["mcp_fit"].get_ydata())
    assert replayed.redraws == 0  # headless: no frame is rendered before the stop (the PNG is the last state)

    out = io.StringIO()
    printer = StopReasonPrinter(file=out)
    for name, doc in docs:
        printer(name, doc)
    assert "ended: success — target reached: σ(μs) = " in out.getvalue()
    assert f"{result.agent.cycles} posterior updates" in out.getvalue()

    table = PosteriorLines(file=io.StringIO())  # the live table's posterior column
    for name, doc in docs:
        table(name, doc)
    stds = catalog[result.uid]["posterior"]["mu_s_std"].read()
    assert len(table.lines) == len(stds) == result.agent.cycles
    assert table.lines[-1].startswith(f"  posterior {len(stds)} · μs = ")
    assert f"± {float(stds[-1]):.2g} μB (target σ 0.01)" in table.lines[-1] and table.lines[-1].endswith(" h")
