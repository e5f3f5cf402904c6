"""The sample temperature over real Channel Access on 127.0.0.1 (the epics profile against the caproto IOC):
the controller's limits, move time and in-position flag; ``adaptive_compton(temperature_k=...)`` runs whose
stored readbacks and μs posteriors follow the IOC's temperature (μs(T, B) of ``sim_devices.compton.magnetisation``);
and a heater excursion during a count, whose spectrum is stored but not fed to the posterior."""

import time

import numpy as np
import pytest
from stored_counts import stored_sums

from sim_devices.compton.magnetisation import FE

MU0_FE = 2.2  # μB: the simulated Fe preset's spin moment at T = 0
START_K = 295.0  # where the IOC's controller starts (and where this module leaves it)


@pytest.fixture(scope="module")
def session(epics_session):
    yield epics_session
    epics_session["sample_temp"].set(START_K).wait(60)  # the other CA test modules count at the start temperature


def _run(ns, temperature_k, agent, subscribe=None):
    RE = ns["RE"]
    tokens = [RE.subscribe(subscribe)] if subscribe is not None else []
    try:  # this session's devices: the registry is per process, and other test modules register the sim profile's
        (uid,) = RE(ns["adaptive_compton"]([ns["ge"]], ns["magnet"], agent, temperature_k=temperature_k,
                                           sample_temp=ns["sample_temp"], ring=ns["ring"], beamtime=ns["beamtime"],
                                           md={"sample": "fe"}))
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    return ns["catalog"][uid]


def test_the_controller_refuses_out_of_range_and_settles_after_ramp_plus_settle(session):
    from ophyd.utils import LimitError

    from bayesbeam.epics_devices import DeviceFault

    temp, faults = session["sample_temp"], session["faults"]
    assert temp.limits == (10.0, 1200.0)  # the setpoint PV's control limits
    assert temp.describe()["sample_temp_readback"]["units"] == "K"
    with pytest.raises(LimitError, match="outside the range 10-1200 K"):
        temp.set(2000.0)
    temp.setpoint.put(2000.0, wait=True)  # past the device's check: caproto refuses it at the control limits
    assert temp.setpoint.get(use_monitor=False) != 2000.0
    here = float(temp.readback.get(use_monitor=False))
    target = round(here) + 20.0
    expected = temp.expected_move_s(target)
    assert expected == pytest.approx(180.0 + abs(target - here) / 0.2, abs=1.0)  # settle + |ΔT|/ramp (s)
    t0 = time.monotonic()
    temp.set(target).wait(30)
    assert time.monotonic() - t0 >= 0.95 * expected / session["epics_bl"].timing.time_scale  # it took its beamtime
    assert abs(temp.readback.get(use_monitor=False) - target) < 0.5 and temp.in_position.get(use_monitor=False) == 1
    faults["fault_temperature_stuck"].put(1, wait=True)  # the heater does not move: the move fails, saying so
    with pytest.raises(DeviceFault, match="not in position"):
        temp.set(target + 20.0).wait(30)
    assert abs(temp.readback.get(use_monitor=False) - target) < 0.5
    temp.set(START_K).wait(30)


def test_compton_runs_at_two_temperatures_over_channel_access(session):
    """At 300 K and 900 K (2 T): every stored spectrum carries the IOC's readback before and after its count
    at the run's temperature, and each μs posterior is the model's μs(T, 2 T) within 4σ (+1 % for the
    free-atom analysis' own bias); 900 K is measurably below 300 K."""
    result = {}
    for temperature in (300.0, 900.0):
        agent = session["spin_moment_agent"](1e-9, max_cycles=3, element="Fe")
        run = _run(session, temperature, agent)
        start, primary = run.metadata["start"], run["primary"].read()
        assert run.metadata["stop"]["exit_status"] == "success"
        assert start["sample_temperature_k"] == start["validity"]["temperature"]["target_k"] == temperature
        for key in ("temperature_before_k", "temperature_after_k"):
            assert np.all(np.abs(np.asarray(primary[key], float) - temperature) < 1.0), key
        assert list(np.asarray(run["cycles"]["valid"].read())) == [True] * 3 and agent.cycles == 3
        post = run["posterior"].read()
        mean, std = float(post["mu_s_mean"][-1]), float(post["mu_s_std"][-1])
        truth = float(FE.spin_moment(MU0_FE, temperature, 2.0))
        assert abs(mean - truth) < 4 * std + 0.01 * truth, (temperature, mean, std, truth)
        result[temperature] = (mean, std)
    (cold, s_cold), (hot, s_hot) = result[300.0], result[900.0]
    assert cold - hot > 10 * np.hypot(s_cold, s_hot)  # ~0.75 μB apart, σ ~ 0.015 μB each
    assert hot / cold == pytest.approx(FE.reduced(900.0, 2.0) / FE.reduced(300.0, 2.0), abs=0.05)


def test_a_heater_excursion_during_a_count_is_stored_but_not_fed(session):
    """``FAULT:TempExcursion`` armed after cycle 2's second spectrum: half-way through its third count the sample
    goes 8 K off; that spectrum is stored with its readback after the count 8 K off, the cycle is discarded
    (the agent has cycles 1 and 3), and cycle 3, after the heater is reset, counts at 300 K again."""
    faults = session["faults"]
    excursion = faults["fault_temperature_excursion"]
    streams = {}

    def heater_trip(name, doc):
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams[doc["descriptor"]] == "primary" and doc["data"]["cycle"] == 2 \
                and doc["data"]["flip"] == 1:
            excursion.put(8.0, wait=True)
        elif name == "event" and streams[doc["descriptor"]] == "cycles" and doc["data"]["cycle"] == 2:
            excursion.put(0.0, wait=True)  # the heater is reset before cycle 3

    agent = session["spin_moment_agent"](1e-9, max_cycles=2, element="Fe")
    t0 = time.monotonic()
    run = _run(session, 300.0, agent, subscribe=heater_trip)
    assert time.monotonic() - t0 < 60
    assert excursion.get(use_monitor=False) == 0
    primary, cycles = run["primary"].read(), run["cycles"].read()
    assert list(cycles["valid"].values) == [True, False, True] and agent.cycles == 2  # the budget: 2 fed
    assert "sample temperature after the count" in str(cycles["reason"].values[1])
    assert list(primary["cycle"].values) == [1] * 4 + [2] * 3 + [3] * 4  # the unproven spectrum is stored
    before, after = (np.asarray(primary[k], float) for k in ("temperature_before_k", "temperature_after_k"))
    assert abs(before[6] - 300.0) < 1.0 and abs(after[6] - 308.0) < 1.0  # tripped during the count
    others = np.arange(len(before)) != 6
    assert np.all(np.abs(before[others] - 300.0) < 1.0) and np.all(np.abs(after[others] - 300.0) < 1.0)
    used = np.asarray(primary["cycle"]) != 2
    assert np.allclose(agent.sums[:2], stored_sums(primary, used))
    assert not np.allclose(agent.sums[:2], stored_sums(primary, np.asarray(primary["cycle"]) != 3))
    assert list(np.asarray(run["posterior"].read()["cycles"])) == [1, 1, 2]  # cycle 2 never reached the posterior
