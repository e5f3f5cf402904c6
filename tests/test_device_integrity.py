"""Devices that never hand over a stale count, never wait forever, and write only where configured
(issue 9, part C). Over real Channel Access against this process's IOC (tests/caioc.py, started with
``--faults``) through the epics profile's devices, and the simulated devices in-process; the runs go
through the real RunEngine into the real catalog, and the assertions are on what the catalog holds."""

import asyncio
import os
from pathlib import Path

import bluesky.plan_stubs as bps
import caioc
import numpy as np
import pytest
from stored_counts import stored_sums

from bayesbeam.beamline_config import BeamlineConfigError, default_beamline_file, load_beamline

SIM_FILE = default_beamline_file()


@pytest.fixture(scope="module")
def session(epics_session):
    return epics_session


@pytest.fixture(scope="module")
def ioc(session):
    """Read-only views of the IOC's own state (its counters and record fields), created once the
    session's channels are up, so none of them joins a PV while its first connection is running."""
    from ophyd import EpicsSignalRO

    p = session["epics_bl"].config.data["ring"]["current"].split("RING:")[0]
    sigs = {k: EpicsSignalRO(p + pv, name=k) for k, pv in (
        ("counts", "STAT:Counts"), ("scaler_counts", "STAT:ScalerCounts"), ("moves", "STAT:MonoMoves"),
        ("acqg", "GE:mca1.ACQG"), ("nack", "GE:mca1.NACK"), ("prtm", "GE:mca1.PRTM"),
        ("tp", "XAS:scaler1.TP"), ("mono_val", "DCM:Energy.VAL"))}
    for s in sigs.values():
        s.wait_for_connection(timeout=30)
    return {k: (lambda s=s: s.get(use_monitor=False)) for k, s in sigs.items()}


@pytest.fixture()
def short_floor(session):
    """``short_floor("ge", ...)``: a 3 s wall-clock timeout floor (the file's is 10 s) for the devices a test
    makes hang, and only for them; restored after the test."""
    from dataclasses import replace

    saved = {}

    def shorten(*names):
        for n in names:
            saved.setdefault(n, session[n].timing)
            session[n].timing = replace(session[n].timing, floor_s=3.0)
        return 3.0

    yield shorten
    for n, timing in saved.items():
        session[n].timing = timing


def _compton(ns, agent, **kwargs):
    (uid,) = ns["RE"](ns["adaptive_compton"]([ns["ge"]], ns["magnet"], agent, ring=ns["ring"],
                                             beamtime=ns["beamtime"], md={"sample": "fe"}, **kwargs))
    return ns["catalog"][uid]


def _compton_with_fault(ns, fault: str, value: float, cycle: int, flip: int):
    """A 2-cycle adaptive Compton run (its agent and run) in which ``fault`` is armed on the IOC once event
    (cycle, flip) is stored."""

    def arm(name, doc):
        if name == "event" and doc["data"].get("cycle") == cycle and doc["data"].get("flip") == flip:
            ns["faults"][fault].put(value)

    agent = ns["spin_moment_agent"](1e-6, element="Fe", max_cycles=2)
    token = ns["RE"].subscribe(arm)
    try:
        return agent, _compton(ns, agent)
    finally:
        ns["RE"].unsubscribe(token)


def _reasons(cycles) -> list[str]:
    return [str(r) for r in cycles["reason"].values]


# --- defect 2: a count proves it is fresh; a refused or stale count is a device fault, never data ------------

def test_every_reading_carries_the_count_s_own_elapsed_time(session):
    ge, i0, it = session["ge"], session["i0"], session["it"]
    ge.trigger().wait(30)
    r = ge.read()
    assert r["ge_elapsed_s"]["value"] == pytest.approx(ge.preset_real_time.get())  # .ERTM, not a second signal
    assert ge.elapsed_real_time.pvname.endswith("GE:mca1.ERTM") and "ge_elapsed_s" in ge.describe()
    st = [i0.trigger(), it.trigger()]
    for s in st:
        s.wait(30)
    tp = i0.preset_time.get()
    assert i0.read()["i0_elapsed_s"]["value"] == pytest.approx(tp)  # the scaler's .T
    assert it.read()["it_elapsed_s"]["value"] == pytest.approx(tp)
    assert "i0_elapsed_s" not in i0.read_configuration()


def test_a_refused_count_is_a_device_fault_and_its_cycle_is_discarded(session, ioc):
    """The IOC acknowledges one count without counting (FAULT:DetectorRefuse: the put-callback returns at
    once, the record's fields keep the previous count's values), as happens when device support refuses
    to start. ophyd alone reports success and the previous spectrum would be stored again."""
    counts = ioc["counts"]()
    agent, run = _compton_with_fault(session, "fault_detector_refuse", 1, cycle=1, flip=1)
    cycles = run["cycles"].read()
    assert list(np.asarray(cycles["valid"])) == [False, True, True], _reasons(cycles)
    assert "ge: stale count" in _reasons(cycles)[0] and "flip 2" in _reasons(cycles)[0]
    prim = run["primary"].read()
    spectra = np.asarray(prim["ge_spectrum"])
    assert len({s.tobytes() for s in spectra}) == len(spectra)  # no spectrum stored twice
    assert np.allclose(np.asarray(prim["ge_elapsed_s"]), 60.0)  # each stored count ran its preset
    assert ioc["counts"]() - counts == len(spectra)  # the refused count counted nothing and stored nothing
    used = np.asarray(prim["cycle"]) != 1
    assert agent.cycles == 2 and np.allclose(agent.sums[:2], stored_sums(prim, used))


def test_a_negative_preset_time_is_refused_before_anything_is_counted(session, ioc):
    """The MCA record takes PRTM = -5 as written (no clamp, no alarm); its device support then has no
    real-time preset (<= 0 means 'ignore') and would count until stopped. The client refuses the count."""
    ge, counts = session["ge"], ioc["counts"]()
    ge.preset_real_time.put(-5.0)
    try:
        assert ioc["prtm"]() == -5.0  # accepted by the record
        agent = session["spin_moment_agent"](0.01, element="Fe")
        with pytest.raises(RuntimeError, match="3 consecutive cycles discarded"):
            _compton(session, agent)
    finally:
        ge.preset_real_time.put(60.0)
    run = session["catalog"].values().last()
    reasons = _reasons(run["cycles"].read())
    assert len(reasons) == 3 and all("ge: preset time" in r and "-5" in r for r in reasons), reasons
    assert "primary" not in run or len(run["primary"].read()["cycle"]) == 0  # no spectrum stored
    assert ioc["counts"]() == counts and agent.cycles == 0


# --- defect 6: every wait has a timeout; a count that never ends is a fault and the run goes on -----------

def test_a_count_that_never_ends_times_out_and_the_run_goes_on(session, ioc, short_floor):
    short_floor("ge")
    agent, run = _compton_with_fault(session, "fault_detector_hang", 1, cycle=1, flip=2)
    cycles = run["cycles"].read()
    reasons = _reasons(cycles)
    assert list(np.asarray(cycles["valid"])) == [False, True, True], reasons
    assert "flip 3" in reasons[0] and "ge: count" in reasons[0] and "timeout" in reasons[0], reasons[0]
    assert ioc["acqg"]() == 0  # the client stopped the acquisition it gave up on
    prim = run["primary"].read()
    assert list(prim["cycle"].values) == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert agent.cycles == 2 and len(agent.failures) == 1


def test_scaler_counts_refused_stale_or_hung_are_faults(session, ioc, short_floor):
    """The scaler record takes TP = -5 as written; its PR1 = (epicsUInt32)(TP * FREQ) is then no usable
    preset (C's conversion of a negative double), so the count would not be TP seconds long."""
    i0, it = session["i0"], session["it"]
    short_floor("i0", "it")
    n = ioc["scaler_counts"]()
    i0.preset_time.put(-5.0)
    try:
        assert ioc["tp"]() == -5.0
        with pytest.raises(Exception, match=r"i0: preset time .*TP = -5"):
            i0.trigger().wait(30)
    finally:
        i0.preset_time.put(1.0)
    assert ioc["scaler_counts"]() == n
    session["faults"]["fault_scaler_refuse"].put(1)
    with pytest.raises(Exception, match="i0: stale count"):
        i0.trigger().wait(30)
    session["faults"]["fault_scaler_hang"].put(1)
    st = i0.trigger()
    with pytest.raises(Exception, match="timeout"):
        st.wait(60)
    assert st.timeout < 3.0 + 1.0  # the floor plus twice the expected 1 s / time scale
    assert ioc["scaler_counts"]() == n  # neither the refused nor the hung count was counted
    ok = [i0.trigger(), it.trigger()]  # the record counts again afterwards
    for s in ok:
        s.wait(30)
    assert ioc["scaler_counts"]() == n + 1 and i0.read()["i0_elapsed_s"]["value"] == pytest.approx(1.0)


def test_a_refused_scaler_count_is_not_stored_as_an_xas_point(session, ioc):
    def refuse_point_3(name, doc):
        if name == "event" and doc["data"].get("point") == 2:
            session["faults"]["fault_scaler_refuse"].put(1)

    token = session["RE"].subscribe(refuse_point_3)
    agent = session["xas_agent"](target_rmse=1e-6, exclude="Fe3O4", max_points=4)
    try:
        (uid,) = session["RE"](session["adaptive_xas"]([session["i0"], session["it"]], session["mono"], agent,
                                                       beamtime=session["beamtime"], md={"sample": "Fe3O4"}))
    finally:
        session["RE"].unsubscribe(token)
    run = session["catalog"][uid]
    prim, post = run["primary"].read(), run["posterior"].read()
    assert list(prim["point"].values) == [1, 2, 4, 5]  # point 3 was refused: no event, counted again at 4
    assert len(post["rmse_pred"]) == 5 and agent.report()["points"] == 4
    problems = [str(p) for p in post["point_problem"].values]  # the refused point's reason is stored
    assert problems[2].startswith("device fault at") and not any(problems[:2] + problems[3:])
    assert np.allclose(np.asarray(prim["i0_elapsed_s"]), np.asarray(prim["dwell_s"]))
    assert np.allclose(agent.post.data_e, np.asarray(prim["mono"]))


def test_the_magnet_put_completion_times_out(session, short_floor):
    magnet = session["magnet"]
    short_floor("magnet")
    session["faults"]["fault_magnet_hang"].put(1)
    st = magnet.set(0.5)
    with pytest.raises(Exception, match="magnet"):
        st.wait(60)
    assert st.timeout < 3.0 + 1.0  # the floor, twice the expected 10 s flip / time scale, a 0.5 s backstop
    magnet.set(1.0).wait(30)  # the next move completes; the abandoned put's late callback is ignored
    assert magnet.readback.get(use_monitor=False) == pytest.approx(1.0)


def test_the_motor_record_refuses_a_move_outside_its_soft_limits_and_the_client_says_so(session, ioc, monkeypatch,
                                                                                        short_floor):
    """The motor record accepts the put, sets .LVIO = 1, restores .VAL and does not move; DMOV blinks and
    the put-callback completes (ophyd alone calls that a successful move). The client's own limit check
    is bypassed here, as when its copy of the limits is stale."""
    mono = session["mono"]
    short_floor("mono")  # should DMOV's blink be missed, the timeout ends the move, and LVIO still says why
    moves, pos, lo = ioc["moves"](), mono.position, mono.limits[0]
    monkeypatch.setattr(mono, "check_value", lambda value: None)
    monkeypatch.setattr(mono.user_setpoint, "check_value", lambda value: None)
    with pytest.raises(Exception, match=r"mono: the motor record refused the move .*LVIO"):
        mono.set(lo - 5.0).wait(30)
    assert ioc["moves"]() == moves and ioc["mono_val"]() == pytest.approx(pos)
    monkeypatch.undo()
    mono.set(pos + 1.0).wait(30)  # a move inside the limits clears LVIO and moves
    assert mono.limit_violation.get(use_monitor=False) == 0 and ioc["moves"]() == moves + 1


def test_a_simulated_count_that_never_ends_is_discarded_and_the_run_goes_on(RE, catalog):
    from agent import spin_moment_agent
    from plans import adaptive_compton
    from sim_devices.compton.beamline import make_compton_beamline

    bl = make_compton_beamline("fe", time_scale=1e6, seed=21)
    bl.clock.timeout_floor_s = 2.0
    bl.ge.fail_next("hang", after=5)  # the second spectrum of cycle 2 never reports done
    agent = spin_moment_agent(1e-6, element="Fe", max_cycles=2)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}))
    run = catalog[uid]
    cycles = run["cycles"].read()
    reasons = _reasons(cycles)
    assert list(np.asarray(cycles["valid"])) == [True, False, True], reasons
    assert "flip 1" in reasons[1] and "ge: count did not finish within its timeout of 2 s" in reasons[1], reasons[1]
    prim = run["primary"].read()
    assert list(prim["cycle"].values) == [1, 1, 1, 1, 2, 3, 3, 3, 3]
    assert np.allclose(np.asarray(prim["ge_elapsed_s"]), 60.0)
    assert agent.cycles == 2 and len(agent.failures) == 1


def test_simulated_devices_time_out_from_the_expected_duration_plus_a_floor():
    from sim_devices.core.clock import SimClock

    clock = SimClock(time_scale=1000.0, timeout_floor_s=5.0)
    st = clock.action(60.0)
    assert st.timeout == pytest.approx(5.0 + 2 * 60.0 / 1000.0)
    st.wait(10)
    fast = SimClock(time_scale=1e9, timeout_floor_s=5.0)
    assert fast.action(60.0).timeout == pytest.approx(5.0, abs=1e-6)  # the floor does not shrink


def test_simulated_devices_refuse_a_count_of_no_positive_preset():
    """As the EPICS devices do: a preset <= 0 is a device fault of that count, not an error of the run."""
    from sim_devices.compton.beamline import make_compton_beamline
    from sim_devices.xas.endstation import make_xas_endstation

    bl = make_compton_beamline("fe", time_scale=1e6, seed=1)
    xas = make_xas_endstation("Fe3O4", bl.clock, ring=bl.ring, seed=2)
    bl.ge.preset_time.put(-5.0)
    xas.i0.dwell_s.put(0.0)
    for dev in (bl.ge, xas.i0):
        st = dev.trigger()
        assert st.done and not st.success and "is not positive; refused before counting" in str(st), str(st)
    assert bl.clock.now == 0.0  # nothing was counted


# --- defect 10 (first half): the session says which faults are armed --------------------------------------

def test_the_epics_session_names_the_faults_armed_on_the_ioc(session, capsys):
    faults = session["faults"]
    faults["fault_magnet_stuck"].put(17)
    try:
        armed = session["epics_bl"].armed_faults()
        assert any("SIM08W:FAULT:MagnetStuck = 17" in line for line in armed), armed
        ns = dict(session)
        caioc.run_startup_file(caioc.ROOT / "profiles" / "epics" / "startup" / "99-banner.py", ns)
        out = capsys.readouterr().out
        assert "FAULTS ARMED ON THE IOC" in out and "SIM08W:FAULT:MagnetStuck = 17" in out
    finally:
        faults["fault_magnet_stuck"].put(0)
    assert session["epics_bl"].armed_faults() == []


def test_the_simulated_session_names_the_armed_fault_queues(catalog_dir, capsys):
    from sim_devices.core.faults import armed_faults

    mp = pytest.MonkeyPatch()
    mp.setenv("BAYESBEAM_CATALOG", str(catalog_dir))
    mp.setenv("BAYESBEAM_PLOTS", "0")
    try:
        ns = caioc.run_startup(caioc.ROOT / "profiles" / "sim")
        assert "armed faults: none" in capsys.readouterr().out
        ns["magnet"].fail_next(17, mode="stuck", after=2)
        ns["ge"].fail_next("hang")
        lines = armed_faults(ns["devices"])
        assert "magnet: 17 × stuck after 2 good operations" in lines and "ge: 1 × hang" in lines, lines
        caioc.run_startup_file(caioc.ROOT / "profiles" / "sim" / "startup" / "99-banner.py", ns)
        assert "magnet: 17 × stuck after 2 good operations" in capsys.readouterr().out
    finally:
        mp.undo()


# --- security: writes only where configured ---------------------------------------------------------------

def _unsimulated(tmp_path) -> Path:
    """The shipped file as a real beamline's would be: not simulated, no fault PVs, no simulator clock."""
    text = SIM_FILE.read_text()
    text = text.split("\n[faults]")[0]
    text = "\n".join(line for line in text.splitlines() if not line.startswith("simulated ="))
    text = "\n".join(line for line in text.splitlines() if not line.startswith("time_scale"))
    path = tmp_path / "real_bl08w.toml"
    path.write_text(text + "\n")
    return path


def test_fault_pvs_only_in_a_file_that_declares_itself_simulated(tmp_path):
    assert load_beamline(SIM_FILE).simulated
    real = load_beamline(_unsimulated(tmp_path))
    assert not real.simulated and "faults.beam_dump" not in real.pvs()
    bad = tmp_path / "bad.toml"
    bad.write_text("\n".join(ln for ln in SIM_FILE.read_text().splitlines() if not ln.startswith("simulated =")))
    with pytest.raises(BeamlineConfigError, match=r"\[faults\] .*only in a beamline file that declares itself "
                                                  r"simulated"):
        load_beamline(bad)


def test_the_gate_allows_configured_pvs_and_the_fields_of_configured_records_only():
    from bayesbeam.epics_devices import WriteGate

    gate = WriteGate(load_beamline(SIM_FILE))
    for pv in ("SIM08W:MAG:FieldSP", "SIM08W:GE:mca1EraseStart", "SIM08W:GE:mca1.PRTM", "SIM08W:DCM:Energy.VAL",
               "SIM08W:XAS:scaler1.CNT", "SIM08W:FAULT:MagnetStuck", "SIM08W:TEMP:SP"):
        assert gate.allows(pv), pv
    for pv in ("SIM08W:STAT:Counts", "SIM08W:GE:mca10.PRTM", "SIM08W:DCM:EnergyX.VAL", "SIM08W:RING:Current",
               "SIM08W:MAG:FieldRB", "SIM08W:GE:mca1Anything", "SIM08W:TEMP:RB", "SIM08W:TEMP:RampRate"):
        assert not gate.allows(pv), pv


def test_a_plan_writing_an_unlisted_pv_is_refused_and_nothing_is_written(session, tmp_path):
    """In a session on a real beamline's file (no [faults]), a plan that puts a fault PV of the IOC gets
    a clear error and the IOC's value does not change; configured writes still go through."""
    from bayesbeam.epics_devices import WriteGate, WriteRefused, connect_beamline

    stuck = session["faults"]["fault_magnet_stuck"]
    before = stuck.get(use_monitor=False)
    previous = WriteGate.active()
    real = connect_beamline(load_beamline(_unsimulated(tmp_path)), timeout_s=60)
    try:
        assert WriteGate.active() is real.gate and real.faults == {}
        with pytest.raises(Exception) as err:
            session["RE"](bps.mv(stuck, before + 5))
        chain = [err.value, err.value.__cause__, err.value.__context__]
        refused = next(e for e in chain if isinstance(e, WriteRefused))
        assert "SIM08W:FAULT:MagnetStuck" in str(refused) and "real_bl08w.toml" in str(refused)
        with pytest.raises(WriteRefused, match="not in real_bl08w.toml"):
            stuck.put(before + 5)
        real.ge.preset_real_time.put(60.0)  # in the file: allowed
    finally:
        WriteGate.set_active(previous)
    assert stuck.get(use_monitor=False) == before  # read back from the IOC: nothing was written


def test_a_read_libca_refuses_does_not_block_its_pv_for_good(session, monkeypatch):
    """libca refusing one read request (``Virtual circuit disconnect``, as during an IOC restart) raises for that
    read only: pyepics 3.5 alone leaves the read marked pending and every later read of the PV times out
    (``bayesbeam.pyepics_fixes``, installed by ``connect_beamline``)."""
    from epics import ca
    from ophyd import EpicsSignalRO

    probe = EpicsSignalRO(session["epics_bl"].config.data["ring"]["current"], name="probe", auto_monitor=False)
    probe.wait_for_connection(timeout=30)
    assert probe.get() > 0
    real, refused = ca.libca.ca_array_get_callback, []

    def refuse_once(*args):
        if not refused:
            refused.append(args)
            return 192  # ECA_DISCONN
        return real(*args)

    monkeypatch.setattr(ca.libca, "ca_array_get_callback", refuse_once)
    with pytest.raises(ca.CASeverityException, match="Virtual circuit disconnect"):
        probe.get()
    assert refused and probe.get(timeout=10) > 0


def test_the_ring_s_update_period_comes_from_the_beamline_file(session, tmp_path):
    """``[ring] max_gap_s``: the silence of the ring PV over a count that still proves beam (s); stored as the
    ring's configuration and in each run's ``validity``; a value that is not > 0 is one line naming the file."""
    from bayesbeam.epics_devices import WriteGate, connect_beamline
    from plans.core import ring_spec

    text = _unsimulated(tmp_path).read_text().replace("max_gap_s = 2.0", "max_gap_s = 3.5")
    path = tmp_path / "slow_ring.toml"
    path.write_text(text)
    previous = WriteGate.active()
    try:
        bl = connect_beamline(load_beamline(path), timeout_s=60)
    finally:
        WriteGate.set_active(previous)
    assert bl.ring.max_gap_s.get() == 3.5 and ring_spec(bl.ring, 10.0)["max_gap_s"] == 3.5
    path.write_text(text.replace("max_gap_s = 3.5", "max_gap_s = 0"))
    with pytest.raises(BeamlineConfigError, match=r"slow_ring.toml: \[ring\] max_gap_s must be > 0 s, got 0"):
        load_beamline(path)


def test_the_ioc_refuses_writes_to_read_only_pvs_and_to_faults_unless_started_with_faults():
    from caproto import AccessRights, Forbidden

    from sim_devices.ioc import ComptonBeamlineIOC

    async def write(ioc, pv, value):
        await ioc.pvdb[pv].auth_write("localhost", "tester", [value], ioc.pvdb[pv].data_type, None)

    locked = ComptonBeamlineIOC(prefix="T:", faults=False, seed=0)
    armed = ComptonBeamlineIOC(prefix="T:", faults=True, seed=0)
    for pv in ("T:RING:Current", "T:MAG:FieldRB", "T:GE:mca1.ERTM", "T:XAS:scaler1.T", "T:CLOCK:TimeScale",
               "T:FAULT:MagnetStuck", "T:TEMP:RB", "T:TEMP:InPosition", "T:FAULT:TempExcursion"):
        assert AccessRights.WRITE not in locked.pvdb[pv].check_access("localhost", "tester"), pv
        with pytest.raises(Forbidden):
            asyncio.run(write(locked, pv, 1))
    assert locked.pvdb["T:FAULT:MagnetStuck"].value == 0
    assert AccessRights.WRITE in armed.pvdb["T:FAULT:MagnetStuck"].check_access("localhost", "tester")
    assert AccessRights.WRITE in locked.pvdb["T:MAG:FieldSP"].check_access("localhost", "tester")
    assert AccessRights.WRITE in locked.pvdb["T:TEMP:SP"].check_access("localhost", "tester")


def test_every_socket_of_the_ioc_is_on_127_0_0_1():
    """``ss -lunp`` showed one UDP socket of the IOC on 0.0.0.0: libca's client socket, opened because
    the IOC process imported ophyd's pyepics control layer. The IOC is a CA server only."""
    caioc.shared_ioc()
    pid = caioc._ioc["proc"].pid
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    local = []
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                local.append((proto, fields[1]))
    assert local and all(proto in ("udp", "tcp") and addr.startswith("0100007F:") for proto, addr in local), local


def test_the_shipped_access_security_rules_are_those_of_the_beamline_file():
    from bayesbeam.beamline_config import access_security, gateway_pvlist

    cfg = load_beamline(SIM_FILE)
    acf = SIM_FILE.with_suffix(".acf")
    assert acf.read_text() == access_security(cfg), "regenerate with bayesbeam.beamline_config.access_security"
    assert SIM_FILE.with_suffix(".pvlist").read_text() == gateway_pvlist(cfg)
    text = acf.read_text()
    assert "ASG(BAYESBEAM_WRITE)" in text and "RULE(1, WRITE" in text and "ASG(DEFAULT)" in text
    writes = text.split("ASG BAYESBEAM_WRITE:")[1].split("\n#\n")[0]
    assert "SIM08W:MAG:FieldSP" in writes and "SIM08W:GE:mca1EraseStart" in writes
    assert "SIM08W:RING:Current" not in writes and "SIM08W:MAG:FieldRB" not in writes
