"""The adaptive SAXS plan through a real RunEngine into the embedded catalog: stop reason, streams and the 2-D
frames read back; faulted frames stored but not ingested; bad input refused before any exposure; the CLI
rehearsal with --json; the queue-ready signature and a call with plain parameters."""

import inspect
import math
import time
import typing

import numpy as np
import pytest
from cli_output import read_json, table_row
from click.testing import CliRunner

from bayesbeam.cli import main

FRAMES = 6  # calibration (3) + 3 sample/buffer frames: the budget binds


def station(seed=1, **kwargs):
    from sim_devices.saxs import make_saxs_endstation

    return make_saxs_endstation("silica-50nm", detector="pilatus-300k", seed=seed, time_scale=float("inf"), **kwargs)


def budget_agent(frames=FRAMES, **kwargs):
    from agent.saxs import saxs_agent

    return saxs_agent(stop="posterior", target_std=1e-6, max_frames=frames, **kwargs)


def run_on(RE, st, agent, **kwargs):
    from plans.saxs import adaptive_saxs
    from sim_devices.core.clock import BeamtimeSignal

    docs = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        (uid,) = RE(adaptive_saxs([st.det], st.cell, agent, ring=st.ring,
                                  beamtime=BeamtimeSignal(st.clock, name="beamtime"), beam_poll_s=0.0, **kwargs))
    finally:
        RE.unsubscribe(token)
    return uid, docs


def test_a_run_stores_its_frames_streams_and_stop_reason(RE, catalog):
    st = station()
    agent = budget_agent()
    t0 = time.perf_counter()
    uid, docs = run_on(RE, st, agent, md={"sample": st.sample.name})
    wall = time.perf_counter() - t0
    run = catalog[uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success" and stop["reason"] == agent.should_stop()[1]
    assert stop["reason"].startswith("budget")
    start = run.metadata["start"]
    assert start["plan_name"] == "adaptive_saxs" and start["validity"]["rule"] == "saxs-frame-proof/1"
    assert set(run) >= {"primary", "frames", "posterior"}
    primary = run["primary"].read()
    n = primary.sizes["time"]
    assert n == run["frames"].read().sizes["time"] == run["posterior"].read().sizes["time"]
    assert [str(k) for k in primary["kind"].values[:3]] == ["empty", "standard", "buffer"]
    assert set(map(str, primary["kind"].values[3:])) <= {"sample", "buffer"}
    images = primary[f"{st.det.name}_image"].values
    assert images.shape == (n, 619, 487) and images.dtype == np.int32
    live = [d["data"][f"{st.det.name}_image"] for name, d in docs if name == "event" and f"{st.det.name}_image" in
            d["data"]]
    assert len(live) == n and all(np.array_equal(a, b) for a, b in zip(live, images, strict=True))
    assert (images[:, st.geometry.gap_mask()] == -1).all()  # the Pilatus gap marker, stored as measured
    post = run["posterior"].read()
    assert bool(post["stop"][-1]) and str(post["stop_reason"].values[-1]) == stop["reason"]
    assert int(post["frames"][-1]) == agent.report()["frames"]
    print(f"\n{n} frames in {wall:.2f} s wall")


def test_a_damaged_sample_stops_for_drift_not_convergence(RE, catalog):
    """A sample that aggregates under the beam: the frames after the first differ from it (χ² homogeneity), are
    stored but not accumulated, and the run stops with the drift reason, never declaring the KDE converged."""
    from agent.saxs import saxs_agent
    from sim_devices.saxs import make_saxs_endstation

    st = make_saxs_endstation("silica-50nm-aggregating", detector="pilatus-300k", seed=2, time_scale=float("inf"))
    agent = saxs_agent(stop="kde", max_frames=30)
    uid, _ = run_on(RE, st, agent, md={"sample": st.sample.name})
    run = catalog[uid]
    reason = run.metadata["stop"]["reason"]
    assert reason.startswith("drift") and reason == agent.should_stop()[1]
    post = run["posterior"].read()
    assert not any(str(r).startswith("kde_converged") for r in post["stop_reason"].values)
    flagged = int(post["flagged_frames"][-1])
    kinds = [str(k) for k in run["primary"].read()["kind"].values]
    assert flagged >= 3 and kinds.count("sample") == int(post["sample_frames"][-1]) + flagged  # all stored
    assert st.sample.truth()["aggregated_fraction"] > 0


@pytest.mark.parametrize("fault", ["timeout", "dump", "stuck"])
def test_a_faulted_frame_is_stored_but_not_ingested(RE, catalog, fault):
    st = station(seed=2)
    agent = budget_agent(frames=FRAMES + 1)
    if fault == "timeout":
        st.det.fail_next("timeout", after=3)  # frame 4: the first after empty, standard, buffer
    elif fault == "dump":
        dump_during_frame(st, 4)
    else:
        st.cell.fail_next("stall", after=3)  # the move to frame 4's slot stops halfway
    uid, _ = run_on(RE, st, agent)
    run = catalog[uid]
    frames = run["frames"].read()
    valid = [bool(v) for v in frames["valid"].values]
    assert valid[:3] == [True] * 3 and valid[3] is False and all(valid[4:])
    reason = str(frames["reason"].values[3])
    primary = run["primary"].read()
    stored = [int(f) for f in primary["frame"].values]
    if fault == "timeout":
        assert "device fault" in reason and 4 not in stored  # no reading: the frames stream records it
    else:
        assert 4 in stored  # stored, not ingested
        assert ("beam lost" in reason) if fault == "dump" else ("cell readback" in reason)
    assert [f["reason"] for f in agent.failures if f["_id"] == 4] == [reason]
    assert not [f for f in agent.failures if f["_id"] != 4 and not f["reason"].startswith("drift")]
    assert agent.report()["frames"] == len(valid) - 1  # the faulted frame never reached the agent


def dump_during_frame(st, frame):
    """Schedule a beam dump inside frame ``frame`` (counting from 1) of the run about to start."""
    original = st.det.trigger
    count = {"n": 0}

    def trigger():
        count["n"] += 1
        if count["n"] == frame:
            st.ring.dump(at_s=st.clock.now + 0.1, duration_s=0.2)
        return original()

    st.det.trigger = trigger


@pytest.mark.parametrize("call, words", [
    (dict(stop="posterior", target_std=0.0), "target"),
    (dict(stop="posterior", target_std=-1.0), "target"),
    (dict(exposure_s=0.0), "exposure"),
    (dict(exposure_s=-2.0), "exposure"),
    (dict(q_range=[50.0, 60.0]), "q"),
    (dict(mask_file="ALL"), "mask"),
])
def test_bad_input_is_one_line_before_any_exposure(RE, call, words, tmp_path):
    from plans.saxs import adaptive_saxs

    st = station(seed=3)
    if call.get("mask_file") == "ALL":
        import fabio

        path = tmp_path / "all.edf"
        fabio.edfimage.EdfImage(data=np.ones(st.geometry.shape, np.int8)).write(str(path))
        call = {**call, "mask_file": str(path)}
    before, position = st.clock.now, st.cell.position
    with pytest.raises(ValueError, match=words) as err:
        RE(adaptive_saxs([st.det], st.cell, ring=st.ring, **call))
    assert "\n" not in str(err.value)
    assert st.clock.now == before and st.cell.position == position and st.cell.moves == 0  # no move
    assert float(st.det.elapsed_s.get()) == 0 and float(st.det.total.get()) == 0  # no exposure


def test_unknown_sample_is_refused_before_anything(tmp_path):
    from bayesbeam.rehearsal.saxs.options import SAXSOptions

    with pytest.raises(ValueError, match="unknown SAXS sample 'silica-5nm'; did you mean silica-50nm"):
        SAXSOptions("silica-5nm").validate()
    res = CliRunner().invoke(main, ["rehearse", "saxs", "--sample", "nosuch", "--catalog", str(tmp_path / "c")])
    assert res.exit_code == 2 and "unknown SAXS sample 'nosuch'" in res.output
    assert not (tmp_path / "c").exists()  # refused before the catalog was opened


def test_cli_rehearsal_json_table_and_catalog(tmp_path, catalog, catalog_dir):
    path, figure = tmp_path / "saxs.json", tmp_path / "saxs.png"
    result = CliRunner().invoke(main, ["rehearse", "saxs", "--sample", "silica-50nm", "--stop", "posterior",
                                       "--quantity", "radius", "--target-std", "1e-6", "--max-frames", "5",
                                       "--seed", "3", "--time-scale", "inf", "--catalog", str(catalog_dir),
                                       "--json", str(path), "--figure", str(figure), "--no-progress"])
    assert result.exit_code == 0, result.output
    s = read_json(path)
    assert s["technique"] == "saxs" and s["sample"] == "silica-50nm" and s["seed"] == 3
    assert s["steps"] == s["frames"] == 5 and s["stop_reason"].startswith("budget")
    out = result.output
    assert table_row(out, "stop reason")[1] == s["stop_reason"]
    assert table_row(out, "beamtime")[1] == f"{s['beamtime_s'] / 60:.1f} min"
    decimals = 1 - math.floor(math.log10(s["radius_std"]))  # the mean to two digits of its std
    assert table_row(out, "radius")[1].startswith(f"{s['radius_mean']:.{decimals}f} ± {s['radius_std']:.2g} nm")
    assert "conventional (estimate)" in out
    assert figure.stat().st_size > 20_000
    run = catalog[s["uid"]]
    assert run.metadata["stop"]["reason"] == s["stop_reason"]
    assert float(run["posterior"]["radius_mean"].read()[-1]) == pytest.approx(s["radius_mean"])


def test_the_plan_is_queue_ready():
    from plans import adaptive_saxs

    sig = inspect.signature(adaptive_saxs)
    params = list(sig.parameters.values())
    assert [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD] == \
        ["detectors", "cell", "agent"]
    assert all(not isinstance(p.annotation, str) and p.annotation is not inspect.Parameter.empty for p in params)
    hints = typing.get_type_hints(adaptive_saxs)
    plain = (str, int, float, bool, list, dict, type(None))
    for name in ("stop", "quantity", "target_std", "precision", "max_frames", "exposure_s", "q_range", "mask_file",
                 "slots", "beam_floor_ma", "cell_tolerance_mm", "continue_from", "md"):
        assert all(typing.get_origin(a) in plain or a in plain for a in typing.get_args(hints[name]) or
                   [hints[name]]), name
    assert params[-1].name == "md" and params[-1].default is None and params[-1].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["detectors"].default == ("saxs_det",) and sig.parameters["cell"].default == "cell_x"


def test_plain_parameters_by_device_name_as_the_queue_calls_it(RE, catalog):
    from plans import adaptive_saxs, registry
    from sim_devices.core.clock import BeamtimeSignal

    saved = registry.registered_devices()
    st = station(seed=4)
    registry.clear_devices()
    registry.register_devices(saxs_det=st.det, cell_x=st.cell, ring=st.ring,
                              beamtime=BeamtimeSignal(st.clock, name="beamtime"))
    try:
        (uid,) = RE(adaptive_saxs(["saxs_det"], "cell_x", stop="kde", precision=0.01, max_frames=4, beam_poll_s=0.0))
    finally:
        registry.clear_devices()
        registry.register_devices(saved)
    run = catalog[uid]
    start = run.metadata["start"]
    assert start["detectors"] == ["saxs_det"] and start["motors"] == ["cell_x"]
    assert start["validity"]["ring_minimum"] == st.ring.minimum.name
    assert "KDEConverged" in start["stop_rule"]
    assert run.metadata["stop"]["reason"]
    assert "kde_divergence" in run["posterior"].read()
