"""A measurement enters a posterior only if its own stored readings prove it, and a finished cycle is
never lost (issue 9, part A): pauses and suspensions during a count, a magnet trip or a beam dump
inside a count, a run that dies right after a cycle, and beamtime that is the run's own. Real
RunEngine, real embedded catalog; every test asserts what the catalog holds and what the agent used."""

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from ophyd import Signal
from stored_counts import stored_sums

from agent import spin_moment_agent, xas_agent
from agent.feeders import ComptonFeeder, XASFeeder
from bayesbeam.catalog import replay
from plans import adaptive_compton, adaptive_xas
from sim_devices import SimClock, make_compton_beamline, make_xas_endstation
from sim_devices.compton.ge_detector import SimGeMCA
from sim_devices.core.ring import RingCurrent
from sim_devices.xas.ion_chambers import SimIonChamber

FIELD_T, TOL_T, FLOOR_MA = 2.0, 0.05, 10.0


def budget_agent(bl, cycles):
    """An agent that stops after ``cycles`` valid cycles (a budget, so the run length is known)."""
    return spin_moment_agent(1e-9, max_cycles=cycles, element=bl.sample.element, orbitals=bl.sample.orbitals)


def after_nth(plan, obj, n_set, make_tail):
    """``plan`` with ``make_tail()``'s messages inserted right after the plan's own k-th trigger of ``obj``
    for k in ``n_set`` (1-based; replays after a resume are the RunEngine's, not counted here)."""
    seen = [0]

    def proc(msg):
        if msg.command == "trigger" and msg.obj is obj:
            seen[0] += 1
            if seen[0] in n_set:
                return None, make_tail()
        return None, None

    return bpp.plan_mutator(plan, proc)


def run_with_pauses(RE, plan, while_paused):
    """Run ``plan``; at each pause call ``while_paused()`` (what a person does meanwhile), then resume."""
    uids = []
    token = RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    pauses = 0
    try:
        try:
            RE(plan)
        except RunEngineInterrupted:
            pass
        while RE.state == "paused":
            pauses += 1
            while_paused()
            try:
                RE.resume()
            except RunEngineInterrupted:
                pass
    finally:
        RE.unsubscribe(token)
    return uids[-1], pauses


def counted(RE, obj):
    """A list that grows by one for every trigger of ``obj`` the RunEngine processes (replays included)."""
    hits = []
    RE.msg_hook = lambda msg: hits.append(1) if msg.command == "trigger" and msg.obj is obj else None
    return hits


def used_spectra(run):
    """Stored spectra and field signs of the cycles the run's ``cycles`` stream calls valid."""
    primary, cycles = run["primary"].read(), run["cycles"].read()
    valid = np.asarray(cycles["cycle"])[np.asarray(cycles["valid"], bool)]
    used = np.isin(np.asarray(primary["cycle"]), valid)
    return primary, used


def test_a_pause_during_a_count_re_establishes_the_field_and_keeps_only_whole_cycles(RE, catalog):
    """Paused during a count, magnet set to 0 T meanwhile, resumed (issue 9, defect 1): the replay
    re-issues the move, so the re-counted spectrum is counted at the field, and a cycle straddling
    the pause is measured afresh. Pause 1 hits the first spectrum of cycle 2 (the whole cycle is then
    counted after the resume: valid); pause 2 hits the third spectrum of cycle 3 (discarded)."""
    bl = make_compton_beamline("fe", time_scale=1e6, seed=31)
    agent = budget_agent(bl, 4)
    triggers = counted(RE, bl.ge)
    plan = after_nth(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}),
                     bl.ge, {5, 11}, lambda: bps.pause())
    try:
        uid, pauses = run_with_pauses(RE, plan, lambda: bl.magnet.set(0.0).wait(5))
    finally:
        RE.msg_hook = None
    assert pauses == 2
    run = catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    primary, used = used_spectra(run)
    sign = np.asarray(primary["field_sign"], float)
    # Every spectrum the agent used was counted at its field: the readback after the count says so ...
    after = np.asarray(primary["magnet_readback"], float)
    assert np.all(np.abs(after[used] - sign[used] * FIELD_T) <= TOL_T), after[used]
    # ... and so does the readback before it, stored in the same event.
    before = np.asarray(primary["field_before_t"], float)
    assert np.all(np.abs(before - sign * FIELD_T) <= TOL_T)  # every stored count started at its field
    cycles = run["cycles"].read()
    assert list(np.asarray(cycles["valid"])) == [True, True, False, True, True]
    assert "interrupted" in str(cycles["reason"].values[2]) and len(agent.failures) == 1
    assert list(primary["cycle"].values) == [1] * 4 + [2] * 4 + [3] * 3 + [4] * 4 + [5] * 4
    assert list(primary["interruptions"].values) == [0] * 4 + [1] * 4 + [1, 1, 2] + [2] * 8
    assert len(triggers) == len(after) + 2  # each pause dropped the count it interrupted
    assert agent.cycles == 4
    assert np.allclose(agent.sums[:2], stored_sums(primary, used))


class FaultyGe(SimGeMCA):
    """A Ge detector whose k-th count (1-based) sees the magnet trip (readback 0 T from the count's
    start on) or a beam dump and refill inside the count (``dump_counts``: 10 s from 20 s in)."""

    def __init__(self, *args, trip_counts=(), dump_counts=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.trip_counts, self.dump_counts, self.n = set(trip_counts), set(dump_counts), 0

    def trigger(self):
        t0 = self.clock.now  # the count's start (its end may come first on a fast clock)
        status = super().trigger()
        self.n += 1
        if self.n in self.trip_counts:
            self.magnet.readback.put(0.0)
        if self.n in self.dump_counts:
            self.ring.dump(at_s=t0 + 20.0, duration_s=10.0)
        return status


def test_a_field_lost_or_a_beam_dump_inside_a_count_is_never_used(RE, catalog):
    """The magnet trips during count 2 (cycle 1), the beam is dumped and refilled inside count 4:
    the readback before the count and the current at its end look fine; the readback after the
    count and the ring minimum over it, stored in the event, do not. Both cycles are discarded."""
    bl = make_compton_beamline("fe", time_scale=1e6, seed=32)
    ge = FaultyGe(name="ge", clock=bl.clock, sample=bl.sample, magnet=bl.magnet, ring=bl.ring, seed=3,
                  trip_counts={2}, dump_counts={4})
    ge.preset_time.put(60.0)
    agent = budget_agent(bl, 2)
    (uid,) = RE(adaptive_compton([ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, md={"sample": "fe"}))
    run = catalog[uid]
    primary, used = used_spectra(run)
    sign = np.asarray(primary["field_sign"], float)
    after = np.asarray(primary["magnet_readback"], float)
    assert np.all(np.abs(after[used] - sign[used] * FIELD_T) <= TOL_T), after[used]
    minimum = np.asarray(primary["ring_minimum"], float)
    assert np.all(minimum[used] >= FLOOR_MA), minimum[used]
    assert np.all(np.asarray(primary["ring_current"])[:4] > 99)  # the end-of-count current never showed the dump
    cycles = run["cycles"].read()
    reasons = [str(r) for r in cycles["reason"].values]
    assert list(np.asarray(cycles["valid"])) == [False, False, True, True], reasons
    assert "magnet readback after the count" in reasons[0] and "beam lost during the count" in reasons[1]
    assert list(primary["cycle"].values) == [1, 1, 2, 2] + [3] * 4 + [4] * 4  # counting stops at a bad spectrum
    assert after[1] == 0.0 and minimum[3] == 0.0 and np.asarray(primary["field_before_t"])[1] == -FIELD_T
    assert np.allclose(agent.sums[:2], stored_sums(primary, used)) and agent.cycles == 2
    rebuilt = budget_agent(bl, 2)
    replay(run, ComptonFeeder(rebuilt, detector="ge"))
    assert rebuilt.cycles == 2 and np.allclose(rebuilt.sums, agent.sums)
    assert [f["reason"] for f in rebuilt.failures] == [f["reason"] for f in agent.failures] == reasons[:2]


def test_a_cycle_is_used_when_the_run_dies_right_after_it(RE, catalog):
    """The run dies after cycle 2's fourth spectrum, before its ``cycles`` record (issue 9, defect 5):
    the live agent and an agent rebuilt from the catalog both hold cycle 2."""
    bl = make_compton_beamline("fe", time_scale=1e6, seed=33)
    agent = budget_agent(bl, 5)
    creates = [0]

    def crash(msg):
        if msg.command == "create" and msg.kwargs.get("name") == "cycles":
            creates[0] += 1
            if creates[0] == 2:
                def head():
                    raise RuntimeError("simulated crash between the cycle and its record")
                    yield  # pragma: no cover
                return head(), None
        return None, None

    uids = []
    token = RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            RE(bpp.plan_mutator(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0), crash))
    finally:
        RE.unsubscribe(token)
    run = catalog[uids[-1]]
    assert run.metadata["stop"]["exit_status"] == "fail"
    primary = run["primary"].read()
    assert primary["ge_spectrum"].shape == (8, 1024) and len(run["cycles"]["valid"].read()) == 1
    assert agent.cycles == 2
    assert np.allclose(agent.sums[:2], stored_sums(primary, np.ones(8, bool)))
    rebuilt = budget_agent(bl, 5)
    replay(run, ComptonFeeder(rebuilt, detector="ge"))
    assert rebuilt.cycles == 2 and np.allclose(rebuilt.sums, agent.sums)


class UptimeBeamtime(Signal):
    """An IOC's beamtime PV: its uptime (s), ``offset_s`` at the clock's zero, restarting from 0 when
    the IOC restarts at beamtime ``restart_s``; unreadable (a CA timeout) after ``dead_after_s``."""

    def __init__(self, clock, offset_s=0.0, restart_s=np.inf, dead_after_s=np.inf, **kwargs):
        super().__init__(**kwargs)
        self.clock, self.offset_s, self.restart_s, self.dead_after_s = clock, offset_s, restart_s, dead_after_s

    def get(self, **kwargs):
        now = self.clock.now
        if now > self.dead_after_s:
            raise TimeoutError(f"{self.name}: no answer")
        return now - self.restart_s if now >= self.restart_s else now + self.offset_s


def test_a_failed_beamtime_read_after_a_cycle_loses_nothing(RE, catalog):
    """The beamtime PV stops answering during cycle 2 (on the 0.1 plan: read after the cycle, the run
    aborted and cycle 2 was lost). Every complete cycle in the catalog is in the agent, live and rebuilt."""
    bl = make_compton_beamline("fe", time_scale=1e6, seed=34)
    agent = budget_agent(bl, 3)
    beamtime = UptimeBeamtime(bl.clock, offset_s=0.0, dead_after_s=400.0, name="beamtime")
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, beamtime=beamtime))
    run = catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    primary, used = used_spectra(run)
    assert used.sum() == 12 and agent.cycles == 3
    assert np.allclose(agent.sums[:2], stored_sums(primary, used))
    bt = np.asarray(primary["beamtime"], float)
    assert np.all(np.isfinite(bt[:5])) and np.all(np.isnan(bt[5:]))  # stored as unknown, not as a guess
    rebuilt = budget_agent(bl, 3)
    replay(run, ComptonFeeder(rebuilt, detector="ge"))
    assert rebuilt.cycles == 3 and np.allclose(rebuilt.sums, agent.sums)


def test_a_disconnected_magnet_costs_the_cycle_not_the_run(RE, catalog, monkeypatch):
    """The magnet's channel drops during cycle 2 (an IOC restarting: ophyd raises ``DisconnectedError`` on the
    move): that cycle is discarded with the reason and the run goes on to its budget (it used to abort)."""
    from ophyd.utils import DisconnectedError

    bl = make_compton_beamline("fe", time_scale=1e6, seed=35)
    agent = budget_agent(bl, 3)
    real, moves = bl.magnet.set, []

    def set_(value, **kwargs):
        moves.append(value)
        if len(moves) == 6:  # the second move of cycle 2
            raise DisconnectedError("magnet_setpoint is not connected")
        return real(value, **kwargs)

    monkeypatch.setattr(bl.magnet, "set", set_)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0))
    run = catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "success" and agent.cycles == 3
    cycles = run["cycles"].read()
    assert list(cycles["valid"].values) == [True, False, True, True]
    reason = str(cycles["reason"].values[1])
    assert "magnet failed moving" in reason and "not connected" in reason


def test_the_agents_beamtime_is_the_runs_own(RE, catalog):
    """The beamtime source is an IOC's uptime (5e4 s when the run starts) and the IOC restarts
    mid-run (issue 9, defect 10): the stored beamtime counts from the run's start and never jumps."""
    bl = make_compton_beamline("fe", time_scale=1e6, seed=35)
    bl.clock.idle(1000.0)  # the run starts at 1000 s of the clock
    agent = budget_agent(bl, 2)
    beamtime = UptimeBeamtime(bl.clock, offset_s=5e4, restart_s=1400.0, name="beamtime")
    clock_at_event = []
    token = RE.subscribe(lambda name, doc: clock_at_event.append(bl.clock.now)
                         if name == "event" and "ge_spectrum" in doc["data"] else None)
    try:
        (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0, beamtime=beamtime))
    finally:
        RE.unsubscribe(token)
    run = catalog[uid]
    t = np.asarray(clock_at_event) - 1000.0  # beamtime since the run's start at each spectrum
    cycles = run["cycles"].read()
    assert np.all(np.asarray(cycles["beamtime_s"]) <= t[-1])  # not the IOC's 5e4 s of uptime
    bt = np.asarray(run["primary"]["beamtime"].read(), float)
    before = t < 400.0
    assert np.allclose(bt[before], t[before])  # the IOC's 5e4 s of uptime are not the run's
    assert np.all(np.diff(bt) >= 0) and bt[-1] < t[-1]  # the restart loses the jump, it never goes back
    assert np.allclose(np.asarray(cycles["beamtime_s"]), bt[3::4])
    assert agent.report()["beamtime_s"] == pytest.approx(bt[-1])


def xas_station(seed, time_scale=1e7, faulty=None):
    """Fe-foil XAS end station on its own clock and ring; ``faulty``: kwargs of a ``FaultyChamber`` I0."""
    clock = SimClock(time_scale)
    ring = RingCurrent(name="ring", clock=clock)
    es = make_xas_endstation("Fe-foil", clock, ring=ring, seed=seed, dwell_s=2.0)
    if faulty is not None:
        es.i0 = FaultyChamber(name="i0", clock=clock, mono=es.mono, sample=es.sample, transmitted=False, ring=ring,
                              gate=es.it.gate, **faulty)
        es.i0.dwell_s.put(2.0)
    return clock, ring, es


class FaultyChamber(SimIonChamber):
    """I0 whose k-th count sees the monochromator move by 1 eV (``move_counts``) or the beam dumped and
    refilled inside the count (``dump_counts``: a quarter of the dwell, from half-way)."""

    def __init__(self, *args, move_counts=(), dump_counts=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.move_counts, self.dump_counts, self.n = set(move_counts), set(dump_counts), 0

    def trigger(self):
        dwell, t0 = float(self.dwell_s.get()), self.clock.now  # the count's start (its end may come first)
        status = super().trigger()
        self.n += 1
        if self.n in self.move_counts:
            self.mono.energy.put(self.mono.position + 1.0)
        if self.n in self.dump_counts:
            self.ring.dump(at_s=t0 + dwell / 2, duration_s=dwell / 4)
        return status


def requested_energies(run):
    """The energy the plan asked for at each stored point after the first (the previous decision's)."""
    return np.asarray(run["posterior"]["next_energy"].read(), float)[:-1]


def test_xas_a_pause_during_a_count_re_establishes_the_energy(RE, catalog):
    """Paused during the count of point 3, monochromator moved away meanwhile, resumed: the point is
    counted at the energy the agent asked for, and that is what the agent ingests."""
    clock, ring, es = xas_station(seed=41)
    agent = xas_agent(exclude="Fe-foil", target_rmse=1e-6, max_points=5)
    plan = after_nth(adaptive_xas([es.i0, es.it], es.mono, agent, md={"sample": "Fe-foil"}), es.i0, {3},
                     lambda: bps.pause())
    uid, pauses = run_with_pauses(RE, plan, lambda: es.mono.set(7160.05).wait(5))
    run = catalog[uid]
    assert pauses == 1 and run.metadata["stop"]["exit_status"] == "success"
    energy = np.asarray(run["primary"]["mono_energy"].read(), float)
    assert len(energy) == 5
    assert np.allclose(energy[1:], requested_energies(run))  # point 3 too: the move was re-issued
    assert np.allclose(agent.post.data_e, energy)
    assert np.allclose(np.asarray(run["primary"]["energy_before_ev"].read()), energy)


def test_xas_points_count_only_if_their_readings_prove_energy_and_beam(RE, catalog):
    """The monochromator moves during count 2 and the beam is dumped and refilled inside count 4:
    both points are stored with the readings that show it, and neither is ingested."""
    clock, ring, es = xas_station(seed=42, faulty={"move_counts": {2}, "dump_counts": {4}})
    agent = xas_agent(exclude="Fe-foil", target_rmse=1e-6, max_points=5)
    (uid,) = RE(adaptive_xas([es.i0, es.it], es.mono, agent, ring=ring, md={"sample": "Fe-foil"}))
    run = catalog[uid]
    primary = run["primary"].read()
    energy = np.asarray(primary["mono_energy"], float)
    requested = np.asarray(primary["energy_requested_ev"], float)
    minimum = np.asarray(primary["ring_minimum"], float)
    assert len(energy) == 7 and agent.report()["points"] == 5
    ok = np.ones(7, bool)
    ok[[1, 3]] = False
    assert energy[1] == pytest.approx(requested[1] + 1.0) and minimum[3] == 0.0
    assert np.all(np.abs(energy[ok] - requested[ok]) <= 0.1) and np.all(minimum[ok] >= FLOOR_MA)
    assert np.allclose(agent.post.data_e, energy[ok])  # exactly the proven points, in order
    assert len(agent.failures) == 2
    problems = [str(p) for p in run["posterior"].read()["point_problem"].values]  # why, stored with each point
    assert [bool(p) for p in problems] == list(~ok)
    assert problems[1].startswith("monochromator readback after the count") and "beam lost" in problems[3]
    fresh = xas_agent(exclude="Fe-foil", target_rmse=1e-6, max_points=5)
    fresh.at(es.sample.energy_range[0])
    replay(run, XASFeeder(fresh, "mono_energy", "i0_counts", "it_counts"))
    assert np.allclose(fresh.post.data_e, agent.post.data_e)
    assert fresh.report()["rmse_pred"] == pytest.approx(agent.report()["rmse_pred"], rel=1e-9)


def test_the_rule_judges_a_count_from_its_stored_readings_alone():
    """``agent.feeders``' rule on hand-made event data: each missing or failing reading is named."""
    from agent.feeders import cycle_problem, spectrum_problem, xas_point_problem
    from plans.compton.flip_cycles import validity_spec

    bl = make_compton_beamline("fe", time_scale=float("inf"))
    spec = validity_spec(bl.ge, FIELD_T, TOL_T, bl.ring, FLOOR_MA)
    assert spec["preset_s"] == 60.0 and spec["ring_minimum"] == "ring_minimum"
    good = {"ge_spectrum": [3.0] * 8, "ge_monitor": 6e7, "flip": 1, "field_sign": -1, "field_before_t": -2.0,
            "field_after_t": -1.97, "ring_minimum": 99.9, "interruptions": 0}
    assert spectrum_problem(good, spec) == ""  # no ge_elapsed_s stored: that check is skipped
    assert spectrum_problem({**good, "ge_elapsed_s": 57.0}, spec) == ""
    cases = {"ge_elapsed_s": (56.9, "ge counted 56.9 s of its 60 s preset"),
             "field_after_t": (-1.9, "magnet readback after the count -1.9 T is not within 0.05 T of -2 T"),
             "ring_minimum": (9.99, "beam lost during the count (ring minimum 9.99 mA < 10 mA)"),
             "ge_monitor": (0.0, "monitor 0 is not a positive count")}
    for key, (value, why) in cases.items():
        assert spectrum_problem({**good, key: value}, spec).startswith(why), key
    assert "before the count nan T" in spectrum_problem({k: v for k, v in good.items() if k != "field_before_t"}, spec)
    assert "non-finite counts" in spectrum_problem({**good, "ge_spectrum": [1.0, np.nan]}, spec)
    # what SpinMomentAgent refuses is never proven: the plan discards the cycle instead of the run failing
    assert spectrum_problem({**good, "ge_spectrum": [1.0, -1.0]}, spec) == "negative counts in the spectrum of flip 1"
    assert spectrum_problem({**good, "ge_spectrum": [0.0] * 8}, spec) == "empty spectrum (no counts) of flip 1"
    gap_spec = {**spec, "ring_gap": "ring_gap_s", "max_gap_s": 2.0}
    assert spectrum_problem({**good, "ring_gap_s": 1.5}, gap_spec) == ""
    assert "not updated for 2.5 s" in spectrum_problem({**good, "ring_gap_s": 2.5}, gap_spec)
    cycle = [{**good, "flip": k, "field_sign": s, "field_before_t": 2.0 * s, "field_after_t": 2.0 * s}
             for k, s in enumerate([1, -1, -1, 1])]
    assert cycle_problem(cycle, spec) == ""
    assert cycle_problem(cycle[:3], spec) == "incomplete cycle: 3 of 4 spectra stored"
    assert cycle_problem(cycle[:3], spec, complete=False) == ""
    assert "not the [1, -1, -1, 1] cycle" in cycle_problem([cycle[1], cycle[0]], spec)
    assert "interrupted (pause or suspension) during flip 2" in cycle_problem(
        cycle[:2] + [{**cycle[2], "interruptions": 1}, cycle[3]], spec)
    xspec = {"detectors": ["i0", "it"], "counts": ["i0_counts", "it_counts"], "requested": "energy_requested_ev",
             "before": "energy_before_ev", "after": "energy_after_ev", "tolerance": 0.1, "unit": "eV",
             "label": "monochromator readback", "dwell": "dwell_s", "ring_minimum": None}
    point = {"i0_counts": 5e4, "it_counts": 2e4, "energy_requested_ev": 7112.0, "energy_before_ev": 7112.0,
             "energy_after_ev": 7112.05, "dwell_s": 2.0, "i0_elapsed_s": 2.0}
    assert xas_point_problem(point, xspec) == ""
    assert "after the count 7112.5 eV" in xas_point_problem({**point, "energy_after_ev": 7112.5}, xspec)
    assert "i0 counted 1.5 s of its 2 s preset" == xas_point_problem({**point, "i0_elapsed_s": 1.5}, xspec)
    assert "not finite positive" in xas_point_problem({**point, "it_counts": 0.0}, xspec)


def test_the_simulated_ring_knows_its_minimum_over_any_window():
    """Top-up sawtooth (100 mA, 0.05 mA band, 60 s period) and a dump: the exact minimum over [t0, t1]."""
    ring = RingCurrent(name="ring", clock=SimClock(float("inf")))
    assert ring.min_current(10.0, 50.0) == pytest.approx(ring.current_at(50.0))  # decaying within a period
    assert ring.min_current(50.0, 70.0) == pytest.approx(100.0 - 0.05)  # the bottom just before the refill at 60 s
    ring.dump(at_s=100.0, duration_s=5.0)
    assert ring.min_current(90.0, 110.0) == 0.0 and ring.current_at(110.0) > 99.9  # dumped and refilled inside
    assert ring.min_current(105.0, 110.0) > 99.9
    ring.clock.idle(90.0)
    ring.start_window()
    ring.clock.idle(20.0)
    reading = ring.read()
    assert reading["ring_minimum"]["value"] == 0.0 and reading["ring_current"]["value"] > 99.9


def test_a_ring_that_cannot_prove_the_beam_over_a_count_is_refused_before_anything_moves(RE):
    bl = make_compton_beamline("fe", time_scale=1e6)
    with pytest.raises(TypeError, match="must report the minimum current over each count"):
        RE(adaptive_compton([bl.ge], bl.magnet, budget_agent(bl, 1), ring=bl.ring.current))
    clock, ring, es = xas_station(seed=1)
    with pytest.raises(TypeError, match="must report the minimum current over each count"):
        RE(adaptive_xas([es.i0, es.it], es.mono, xas_agent(exclude="Fe-foil", max_points=1), ring=ring.current))
    assert bl.clock.now == 0.0 and clock.now == 0.0 and bl.magnet.readback.get() == 0.0
