"""The epics profile against the caproto IOC over real Channel Access on 127.0.0.1: an adaptive
Compton run end to end into the catalog, and a beam dump that suspends it without half-counting."""

import time

import numpy as np
import pytest


@pytest.fixture(scope="module")
def session(epics_session):
    return epics_session


def _run(ns, target_std=0.01, **kwargs):
    agent = ns["spin_moment_agent"](target_std, element="Fe")
    (uid,) = ns["RE"](ns["adaptive_compton"]([ns["ge"]], ns["magnet"], agent, ring=ns["ring"],
                                             beamtime=ns["beamtime"], md={"sample": "fe"}, **kwargs))
    return agent, ns["catalog"][uid]


def test_ioc_serves_the_record_fields_stock_ophyd_uses(session):
    ge, magnet = session["ge"], session["magnet"]
    assert type(ge).__mro__[1].__name__ == "EpicsMCA" and ge.spectrum.pvname.endswith("GE:mca1.VAL")
    assert ge.calib_offset.get() == pytest.approx(86.0) and ge.calib_slope.get() == pytest.approx(0.036)
    magnet.set(1.0).wait(10)
    assert magnet.readback.get() == pytest.approx(1.0)
    assert 99.0 < session["ring"].get() <= 100.0
    b0 = session["beamtime"].get()
    time.sleep(0.2)
    assert session["beamtime"].get() > b0  # beamtime passes with wall time on the IOC


def test_signals_connected_together_never_share_a_pv(session):
    """Two ophyd signals on one PV, connecting at once, can lose a connection callback for good (pyepics);
    only It, built once i0's channels are up, may share i0's scaler PVs."""
    from bayesbeam.epics_devices import _signals

    owner = {}
    for name, dev in session["epics_bl"].devices().items():
        if name == "it":
            continue
        for sig in _signals(dev):
            for pv in {sig.pvname, getattr(sig, "setpoint_pvname", sig.pvname)}:
                assert owner.setdefault(pv, sig.name) == sig.name, f"{pv}: {owner[pv]} and {sig.name}"
    assert session["it"].channels.chan3.pvname in owner  # the shared record is there, counted once


def test_adaptive_compton_over_channel_access(session):
    agent, run = _run(session)
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success" and stop["reason"].startswith("target_std: std(mu_s)")
    spectra = run["primary"]["ge_spectrum"].read()
    assert spectra.shape == (4 * agent.cycles, 1024) and spectra.sum(1).min() > 1e7
    assert len({s.tobytes() for s in np.asarray(spectra)}) == len(spectra)  # a fresh spectrum per count
    post = run["posterior"].read()
    assert post["mu_s_std"][-1] <= 0.01
    assert abs(post["mu_s_mean"][-1] - 2.2) < 0.1  # the simulated Fe spin moment (μB)
    fields = np.asarray(run["primary"]["field_sign"].read())
    assert np.allclose(agent.sums[0], np.asarray(spectra)[fields > 0].sum(0))


def test_beam_dump_suspends_and_the_interrupted_cycle_is_measured_afresh(session, capsys):
    RE, faults, ring = session["RE"], session["faults"], session["ring"]
    from bayesbeam.suspenders import ring_current_suspender

    RE.clear_suspenders()
    suspender = ring_current_suspender(ring, 10.0, 90.0, 0.3)
    RE.install_suspender(suspender)
    counted = session["epics_bl"].config.data["faults"]["dump_mid_count"].replace("DumpMidCount", "")
    from ophyd import EpicsSignalRO

    n_counts = EpicsSignalRO(counted.replace("FAULT:", "STAT:Counts"), name="n_counts")
    n_counts.wait_for_connection(timeout=5)
    before = n_counts.get()

    def dump_during_cycle_2(name, doc):  # after cycle 2's second spectrum: dump half-way through the third
        if name == "event" and doc["data"].get("cycle") == 2 and doc["data"].get("flip") == 1:
            faults["fault_dump_mid_count"].put(1500.0)

    token = RE.subscribe(dump_during_cycle_2)
    try:
        agent, run = _run(session, interruptions=suspender)
    finally:
        RE.unsubscribe(token)
        RE.clear_suspenders()
    assert "Suspending" in capsys.readouterr().out
    primary = run["primary"].read()
    n = len(primary["ge_monitor"])
    assert n_counts.get() - before == n + 1  # one count was dropped and counted again
    monitor = np.asarray(primary["ge_monitor"])
    assert monitor.min() > 0.99 * np.median(monitor)  # every stored spectrum counted with full beam
    # Cycle 2 was interrupted at its third spectrum: that spectrum was counted again after the dump,
    # then the whole cycle was discarded and a fresh one measured.
    cycles = run["cycles"].read()
    assert suspender.trips == 1
    assert list(np.asarray(cycles["valid"])) == [True, False] + [True] * (len(cycles["valid"]) - 2)
    assert "run suspended during flip 2" in str(cycles["reason"].values[1]) and len(agent.failures) == 1
    per_cycle = [c for c in range(1, len(cycles["valid"]) + 1) for _ in range(3 if c == 2 else 4)]
    assert list(primary["cycle"].values) == per_cycle
    used = np.asarray(primary["cycle"]) != 2
    assert agent.cycles == len(cycles["valid"]) - 1
    assert np.allclose(agent.sums[0] + agent.sums[1], np.asarray(primary["ge_spectrum"])[used].sum(0))
