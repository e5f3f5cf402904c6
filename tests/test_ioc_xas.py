"""XAS through the epics profile against the caproto IOC over real Channel Access on 127.0.0.1: the
motor and scaler records, an adaptive XAS run end to end into the catalog, a motor-range violation
refused before motion, a beam dump during a count that re-counts the point (with a suspender) or is
stored and not used (without); the adaptive fly scan over CA (the MCS counting encoder bins while the motor
record flies each segment at its .VELO), a dump inside a sweep, a sweep that never ends; and the XAS devices
and plans of the sim profile."""

import re
import time

import caioc
import numpy as np
import pytest
from ophyd.utils import LimitError

XAS_SAMPLE = "Fe3O4"  # what `bayesbeam ioc` serves on its XAS end station by default


@pytest.fixture(scope="module")
def session(epics_session):
    return epics_session


@pytest.fixture(scope="module")
def stats(session):
    """The IOC's counters of scaler counts and monochromator moves (diagnostic PVs, read only), as functions."""
    from ophyd import EpicsSignalRO

    prefix = session["epics_bl"].config.data["ring"]["current"].split("RING:")[0]
    sigs = {k: EpicsSignalRO(f"{prefix}STAT:{pv}", name=k) for k, pv in
            (("counts", "ScalerCounts"), ("moves", "MonoMoves"))}
    for s in sigs.values():
        s.wait_for_connection(timeout=30)
    # A fresh read each time: a monitored value can lag the IOC under load (a count looked missing).
    return {k: (lambda s=s: s.get(use_monitor=False)) for k, s in sigs.items()}


def _run(ns, agent, **kwargs):
    (uid,) = ns["RE"](ns["adaptive_xas"]([ns["i0"], ns["it"]], ns["mono"], agent, beamtime=ns["beamtime"],
                                         md={"sample": XAS_SAMPLE}, **kwargs))
    return ns["catalog"][uid]


def test_ioc_serves_motor_and_scaler_records_for_stock_ophyd(session, stats):
    mono, i0, it = session["mono"], session["i0"], session["it"]
    assert type(mono).__mro__[1].__name__ == "EpicsMotor" and mono.user_setpoint.pvname.endswith("DCM:Energy.VAL")
    assert type(i0).__mro__[1].__name__ == "EpicsScaler" and i0.channels.chan2.pvname.endswith("scaler1.S2")
    assert mono.egu == "eV" and mono.limits == pytest.approx((7070.05, 7196.85))
    moves = stats["moves"]()
    mono.set(7125.0).wait(10)
    assert mono.position == pytest.approx(7125.0) and stats["moves"]() == moves + 1
    counts = stats["counts"]()
    i0.preset_time.put(2.0)
    st = [i0.trigger(), it.trigger()]  # two chambers on one scaler record: one count
    for s in st:
        s.wait(10)
    assert stats["counts"]() == counts + 1
    a, b = i0.read()["i0_counts"]["value"], it.read()["it_counts"]["value"]
    assert 2 * 23760 * 0.9 < a < 2 * 23760 * 1.1 and 0 < b < a  # 23 760 I0 counts/s at 100 mA


def test_adaptive_xas_over_channel_access(session, stats):
    from sim_devices.xas.samples import XASSample

    agent = session["xas_agent"](target_rmse=0.02, exclude=XAS_SAMPLE)
    counts = stats["counts"]()
    raw_before = session["beamtime"].get()  # the IOC's uptime
    run = _run(session, agent)
    raw_after = session["beamtime"].get()
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success" and stop["reason"].startswith("target_rmse")
    n = agent.report()["points"]
    post = run["posterior"].read()
    assert len(post["rmse_pred"]) == n and post["rmse_pred"][-1] <= 0.02 and bool(post["stop"][-1])
    prim = run["primary"].read()
    e, a, b = (np.asarray(prim[k]) for k in ("mono", "i0_counts", "it_counts"))
    assert len(e) == n and stats["counts"]() - counts == n  # one scaler count per point
    assert np.allclose(e, agent.post.data_e) and np.all(np.diff(np.asarray(prim["beamtime"])) > 0)
    bt = np.asarray(prim["beamtime"], float)  # beamtime since the run's start, not the IOC's uptime
    assert 0 < bt[0] and bt[-1] <= raw_after - raw_before
    for key in ("energy_before_ev", "energy_after_ev"):  # the energy over each count, stored
        assert np.all(np.abs(np.asarray(prim[key]) - np.asarray(prim["energy_requested_ev"])) <= 0.1), key
    # the IOC's counts follow the sample's mu(E): -log(It/I0) = mu t within counting statistics
    z = (-np.log(b / a) - XASSample(XAS_SAMPLE).mut(e)) / np.sqrt(1 / a + 1 / b)
    assert np.sqrt(np.mean(z**2)) < 2.0


def _wait_limits(mono, lo, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while mono.limits[0] != pytest.approx(lo) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mono.limits[0] == pytest.approx(lo)


def test_motor_range_violation_is_refused_before_motion(session, stats):
    mono, RE = session["mono"], session["RE"]
    lo = mono.limits[0]
    moves, pos = stats["moves"](), mono.position
    mono.low_limit_travel.put(7100.0)  # .LLM of the configured motor record
    try:
        _wait_limits(mono, 7100.0)
        agent = session["xas_agent"](target_rmse=0.02, exclude=XAS_SAMPLE)  # candidates from 7076.2 eV
        with pytest.raises(ValueError, match=r"eV outside the monochromator range 7100.00-7196"):
            RE(session["adaptive_xas"]([session["i0"], session["it"]], mono, agent))
        with pytest.raises(ValueError, match="outside the monochromator range"):
            RE(session["grid_xas"]([session["i0"], session["it"]], mono, [7120.0, 7090.0]))
        with pytest.raises(LimitError, match="7090"):
            mono.set(7090.0)
    finally:
        mono.low_limit_travel.put(lo)
        _wait_limits(mono, lo)
    assert stats["moves"]() == moves and mono.position == pytest.approx(pos)


def test_beam_dump_during_a_count_recounts_the_point(session, stats, capsys):
    from bayesbeam.suspenders import ring_current_suspender

    RE, faults = session["RE"], session["faults"]
    RE.clear_suspenders()
    RE.install_suspender(ring_current_suspender(session["ring"], 10.0, 90.0, 0.3))
    counts = stats["counts"]()

    def dump_during_point_4(name, doc):  # after point 3 is stored: dump half-way through the next count
        if name == "event" and doc["data"].get("point") == 3:
            faults["fault_dump_mid_count"].put(1500.0)

    token = RE.subscribe(dump_during_point_4)
    agent = session["xas_agent"](target_rmse=1e-6, exclude=XAS_SAMPLE, max_points=8)
    try:
        run = _run(session, agent)
    finally:
        RE.unsubscribe(token)
        RE.clear_suspenders()
    assert "Suspending" in capsys.readouterr().out
    prim = run["primary"].read()
    assert list(prim["point"].values) == list(range(1, 9)) and agent.report()["points"] == 8
    assert len(run["posterior"].read()["rmse_pred"]) == 8
    assert stats["counts"]() - counts == 8 + 1  # the interrupted count was dropped and counted again
    rate = np.asarray(prim["i0_counts"]) / np.asarray(prim["dwell_s"])
    assert rate.min() > 0.97 * np.median(rate)  # every stored point counted with full beam
    beamtime = np.asarray(prim["beamtime"])
    assert beamtime[3] - beamtime[2] > 1500.0  # point 4 waited out the dump
    assert np.allclose(agent.post.data_e, np.asarray(prim["mono"]))  # the agent saw exactly the stored points


def test_a_dump_inside_a_count_without_a_suspender_is_stored_and_not_used(session, stats):
    """No suspender: the beam is dumped half-way through point 3's count (issue 9, defect 1). The ring's
    minimum over the count, from its CA monitor updates, is stored with the point; the point is not
    ingested, and the plan waits for the beam before the next one."""
    RE, faults = session["RE"], session["faults"]
    RE.clear_suspenders()

    def dump_during_point_3(name, doc):
        if name == "event" and doc["data"].get("point") == 2:
            faults["fault_dump_mid_count"].put(200.0)

    token = RE.subscribe(dump_during_point_3)
    agent = session["xas_agent"](target_rmse=1e-6, exclude=XAS_SAMPLE, max_points=4)
    try:
        (uid,) = RE(session["adaptive_xas"]([session["i0"], session["it"]], session["mono"], agent,
                                            ring=session["ring"], beam_poll_s=0.02, beamtime=session["beamtime"],
                                            md={"sample": XAS_SAMPLE}))
    finally:
        RE.unsubscribe(token)
    run = session["catalog"][uid]
    prim = run["primary"].read()
    minimum, e = np.asarray(prim["ring_minimum"], float), np.asarray(prim["mono"], float)
    assert list(prim["point"].values) == [1, 2, 3, 4, 5] and agent.report()["points"] == 4
    assert minimum[2] < 10.0 and np.all(np.delete(minimum, 2) >= 10.0)  # the dump is in point 3's own event
    assert np.all(np.asarray(prim["ring_gap_s"]) <= session["ring"].max_gap_s.get())
    assert np.allclose(agent.post.data_e, np.delete(e, 2)) and len(agent.failures) == 1
    assert "beam lost during the count" in agent.failures[0]["reason"]
    assert run.metadata["stop"]["reason"].startswith("budget")


def test_typo_and_dead_ioc_messages_name_the_xas_records(tmp_path, session):
    from bayesbeam.beamline_config import default_beamline_file, load_beamline
    from bayesbeam.epics_devices import BeamlineConnectionError, connect_beamline

    text = default_beamline_file().read_text()
    (tmp_path / "typo.toml").write_text(text.replace('"SIM08W:XAS:scaler1"', '"SIM08W:XAS:scalr1"'))
    with pytest.raises(BeamlineConnectionError) as err:
        connect_beamline(load_beamline(tmp_path / "typo.toml"), timeout_s=2.0)
    # The typo'd record is named with its line, whether its fields are listed one by one or, when nothing
    # of that file answered within the timeout, as the record (no assertion on how long anything took).
    assert re.search(r"SIM08W:XAS:scalr1(\.CNT|\.\*)  \(\[ion_chambers\] scaler in typo\.toml\)", str(err.value))
    (tmp_path / "dead.toml").write_text(text.replace("SIM08W:", "DEAD08W:"))  # no IOC serves these
    with pytest.raises(BeamlineConnectionError) as err:
        connect_beamline(load_beamline(tmp_path / "dead.toml"), timeout_s=1.0)
    msg = str(err.value)
    assert "no PV of beamline 'sim_bl08w' answered within 1 s: is the IOC up" in msg
    assert "DEAD08W:DCM:Energy.*  ([mono] motor in dead.toml)" in msg and "DEAD08W:XAS:scaler1.*" in msg


def test_sim_profile_offers_the_xas_devices_and_plans(catalog_dir, capsys):
    mp = pytest.MonkeyPatch()
    mp.setenv("BAYESBEAM_CATALOG", str(catalog_dir))
    mp.setenv("BAYESBEAM_PLOTS", "0")
    mp.setenv("BAYESBEAM_TIME_SCALE", "1e7")
    try:
        ns = caioc.run_startup(caioc.ROOT / "profiles" / "sim")
    finally:
        mp.undo()
    ns["bec"].disable_table()
    assert "adaptive_xas([i0, it], mono" in capsys.readouterr().out
    assert ns["mono"].clock is ns["sim"].clock and ns["i0"].ring is ns["ring"]  # one clock, one ring
    agent = ns["xas_agent"](target_rmse=1e-6, exclude=ns["xas_sample"].name, max_points=4)
    (uid,) = ns["RE"](ns["adaptive_xas"]([ns["i0"], ns["it"]], ns["mono"], agent, beamtime=ns["beamtime"],
                                         md={"sample": ns["xas_sample"].name}))
    run = ns["catalog"][uid]
    assert run.metadata["stop"]["reason"].startswith("budget") and len(run["primary"]["i0_counts"].read()) == 4


# -- fly scans over Channel Access: the MCS (SIS38XX PVs) counting encoder bins while the motor record flies ------
def _fly_run(session, agent, **kwargs):
    (uid,) = session["RE"](session["adaptive_fly_xas"]([session["fly"]], session["mono"], agent,
                                                       beamtime=session["beamtime"], md={"sample": XAS_SAMPLE},
                                                       **kwargs))
    return session["catalog"][uid]


def _ramp_s(distance, speed, accel):
    """Seconds of a rest-to-rest move of ``distance`` eV at ``speed`` eV/s with ``accel`` s ramps."""
    return distance / speed + accel if distance >= speed * accel else 2 * np.sqrt(distance * accel / speed)


@pytest.fixture()
def no_suspenders(session):
    """The run without the profile's beam-dump suspender (restored afterwards)."""
    RE = session["RE"]
    before = list(RE.suspenders)
    RE.clear_suspenders()
    yield RE
    RE.clear_suspenders()
    for s in before:
        RE.install_suspender(s)


def test_adaptive_fly_xas_over_channel_access_flies_the_designed_speeds(session, stats, no_suspenders):
    """Two sweeps into the catalog over CA: one motor-record move per segment at that segment's .VELO (the IOC's
    record of each move's speed), the stored gate times those of the designed speeds (bin/v away from the ramps;
    per segment |Δ|/v + .ACCL in all), every bin with counts fed, .VELO restored after the sweep."""
    import ast

    from ophyd import EpicsSignalRO

    from agent.xas.fly import fly_xas_agent

    fly, mono = session["fly"], session["mono"]
    speeds_pv = EpicsSignalRO(mono.prefix.replace("DCM:Energy", "STAT:MonoMoveSpeeds"), name="speeds")
    speeds_pv.wait_for_connection(timeout=30)
    velo = mono.velocity.get(use_monitor=False)
    accel = float(mono.acceleration.get(use_monitor=False))
    moves = stats["moves"]()
    agent = fly_xas_agent(exclude=XAS_SAMPLE, quantity="edge_position", target_std=0.05, max_sweeps=2, adapt=False)
    run = _fly_run(session, agent)
    prim, post = run["primary"].read(), run["posterior"].read()
    assert run.metadata["stop"]["exit_status"] == "success" and len(prim["sweep_id"]) == 2
    segs = [ast.literal_eval(s) for s in np.asarray(prim["segments"])]
    # moves: per sweep one to its start and one per segment, each at the speed it was asked
    assert stats["moves"]() - moves == sum(1 + len(s) for s in segs)
    flown = np.asarray(speeds_pv.get(use_monitor=False), float)
    assert flown[-len(segs[-1]):] == pytest.approx([s[2] for s in segs[-1]], rel=1e-5)  # stored to 6 digits
    assert flown[-len(segs[-1]):] == pytest.approx(fly.speeds_flown[-len(segs[-1]):], rel=1e-12)
    assert len({s[2] for s in segs[-1]}) > 3  # a designed profile, not one speed
    assert mono.velocity.get(use_monitor=False) == pytest.approx(velo)  # restored for the next step scan
    for k, sweep in enumerate(segs):
        dwell = np.asarray(prim["fly_dwell"][k], float)
        req = np.asarray(prim["fly_energy_requested"][k], float)
        e = np.asarray(prim["fly_energy"][k], float)
        assert dwell.size == req.size == 1050 and np.max(np.abs(e - req)) < 0.01  # the encoder's bin centres
        for e0, e1, v in sweep:
            inside = (req > e0) & (req < e1)
            clear = inside & (req - e0 > v * accel / 2 + 0.1) & (e1 - req > v * accel / 2 + 0.1)  # off the ramps
            assert dwell[clear] == pytest.approx(0.1 / v, rel=1e-4)
            assert dwell[inside].sum() == pytest.approx(_ramp_s(e1 - e0, v, accel), rel=1e-4)
            assert np.all(dwell[inside] >= 0.1 / v * (1 - 1e-4))  # the ramps only lengthen a bin's gate
    # every bin fed but those where a fast bin past the edge counted no It photon (a few in 2100; ln(I0/It) has none)
    assert all(f["reason"].startswith("counts") and min(f["i0"], f["it"]) == 0 for f in agent.failures), agent.failures
    assert agent.report()["bins"] == 2 * 1050 - len(agent.failures) and len(agent.failures) < 10
    assert int(post["sweeps"][-1]) == 2 and run.metadata["stop"]["reason"]


def test_a_dump_during_a_sweep_leaves_its_bins_stored_and_not_fed(session, no_suspenders):
    """``FAULT:DumpMidCount`` during the sweep: the beam goes when the channel advance reaches the middle bin,
    for 5 s of beamtime. Every bin is stored; the bins whose gate saw the dump (the ring V/F input's mean over
    the gate) are not fed, and only those."""
    from agent.feeders import FLY_BEAM_FRACTION
    from agent.xas.fly import fly_xas_agent

    session["faults"]["fault_dump_mid_count"].put(5.0)
    agent = fly_xas_agent(exclude=XAS_SAMPLE, quantity="edge_position", target_std=0.05, max_sweeps=1, adapt=False)
    run = _fly_run(session, agent)
    prim = run["primary"].read()
    ring = np.asarray(prim["fly_ring_current"][0], float)
    req = np.asarray(prim["fly_energy_requested"][0], float)
    i0, dwell = np.asarray(prim["fly_i0"][0], float), np.asarray(prim["fly_dwell"][0], float)
    lost = ring < FLY_BEAM_FRACTION * np.median(ring)
    # stored, gate times unaffected; from the middle channel on, no beam (if the designed profile stopped the motor
    # there, the dump passes while it stands still: then the bin it ended in is the only one)
    assert ring.size == 1050 and 1 <= lost.sum() < 200 and np.all(dwell > 0)
    assert abs(np.flatnonzero(lost)[0] - 525) <= 1 and np.min(ring) < 0.6 * np.median(ring)
    assert np.all(i0[ring < 1.0] == 0)  # no beam, no photons
    refused = [f for f in agent.failures if f["reason"].startswith("beam lost during the bin")]
    other = [f for f in agent.failures if f not in refused]  # a fast bin with no It photon, at most
    assert all(f["reason"].startswith("counts") for f in other) and len(other) < 5
    assert len(refused) == lost.sum() and agent.report()["bins"] == 1050 - lost.sum() - len(other)
    assert np.allclose(sorted(f["energy"] for f in refused), req[lost], atol=0.01)
    assert not np.any(np.isin(np.round(agent.post.data_e, 3), np.round(req[lost], 3)))


def test_a_fly_sweep_that_never_ends_fails_in_its_timeout_and_a_bad_one_is_refused(session, stats):
    """``FAULT:McsHang``: the MCS never reports the end; the sweep's status fails within the timeout derived from
    its planned time (a short floor here), the MCS is stopped and .VELO restored. A sweep that does not start at
    the monochromator is refused before anything moves."""
    from ophyd.utils import StatusTimeoutError

    from bayesbeam.epics_devices import DeviceFault, DeviceTiming

    fly, mono = session["fly"], session["mono"]
    velo = mono.velocity.get(use_monitor=False)
    mono.set(7100.0).wait(30)
    fly.start_eV.put(7100.0)
    fly.bin_eV.put(0.1)
    fly.segments.put([7100.0, 7101.0, 10.0, 7101.0, 7102.0, 2.0])
    timing = fly.timing
    fly.timing = DeviceTiming(time_scale=timing.time_scale, floor_s=1.0)
    session["faults"]["fault_mcs_hang"].put(1)
    try:
        t0 = time.monotonic()
        st = fly.trigger()
        with pytest.raises((StatusTimeoutError, DeviceFault)):
            st.wait(60)
        assert "did not finish within its timeout" in str(st), str(st)
        assert time.monotonic() - t0 < st.timeout + 5.0 and st.timeout < 1.0 + 2 * 1.0 + 1.0
    finally:
        fly.timing = timing
        session["faults"]["fault_mcs_hang"].put(0)
    deadline = time.monotonic() + 30  # the sweep's thread stops the MCS and restores .VELO after the status failed
    while (fly.acquiring.get(use_monitor=False) or mono.velocity.get(use_monitor=False) != pytest.approx(velo)) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fly.acquiring.get(use_monitor=False) == 0 and mono.velocity.get(use_monitor=False) == pytest.approx(velo)
    moves = stats["moves"]()
    fly.start_eV.put(7110.0)  # the monochromator is at 7102 eV
    fly.segments.put([7110.0, 7111.0, 10.0])
    st = fly.trigger()
    with pytest.raises(DeviceFault):
        st.wait(10)
    assert "not at the sweep start" in str(st) and stats["moves"]() == moves
