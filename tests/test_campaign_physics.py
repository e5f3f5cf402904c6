"""The simulated sample temperature: the true μs(T, B) of Fe, the temperature positioner, and Compton runs
at two temperatures through a real RunEngine whose posteriors follow the model."""

import numpy as np
import pytest
from bluesky import plan_stubs as bps
from ophyd import Kind
from ophyd.utils import LimitError

from agent.compton.agent import spin_moment_agent
from plans.compton.flip_cycles import adaptive_compton
from sim_devices.compton.beamline import make_compton_beamline
from sim_devices.compton.magnetisation import FE, Magnetisation
from sim_devices.compton.temperature import SimTemperature
from sim_devices.core.clock import SimClock

TC = FE.curie_k


# -- μs(T, B) -----------------------------------------------------------------------------------------
def test_bloch_law_at_low_temperature():
    """Zero field, T ≤ 0.15 T_c: 1 − m = B·T^{3/2} + C·T^{5/2} (Bloch's spin-wave term and its next order) with
    B = βs/T_c^{3/2}, Kuz'min's Fe value 3.46e-6 K^-3/2; below 0.02 T_c the T^{3/2} law alone."""
    t = np.linspace(5.0, 0.15 * TC, 60)
    one_minus_m = 1.0 - FE.reduced(t)
    (b, c), *_ = np.linalg.lstsq(np.stack([t**1.5, t**2.5], axis=1), one_minus_m, rcond=None)
    assert b == pytest.approx(FE.bloch_coefficient, rel=0.02) and c > 0
    assert FE.bloch_coefficient == pytest.approx(3.46e-6, rel=0.01)
    low = np.linspace(2.0, 0.02 * TC, 20)
    slope = np.polyfit(np.log(low), np.log(1.0 - FE.reduced(low)), 1)[0]
    assert slope == pytest.approx(1.5, abs=0.02)


def test_critical_exponent_near_tc():
    """Zero field, 1e-4 ≤ 1 − T/T_c ≤ 1e-2: log m against log(1 − T/T_c) has slope β within 0.005."""
    eps = np.geomspace(1e-4, 1e-2, 30)
    m = FE.reduced(TC * (1 - eps))
    slope = np.polyfit(np.log(eps), np.log(m), 1)[0]
    assert slope == pytest.approx(FE.beta, abs=0.005)
    assert 0.34 <= FE.beta <= 0.39  # Fe's measured range; the 3D-Heisenberg value


def test_critical_isotherm_and_field_induced_tail():
    """At T_c, m ∝ B^{1/δ} (δ = 1 + γ/β); above T_c at 2 T a positive tail falling with T, within 15 % of
    Curie–Weiss (p_eff = 3.2 μB) at 1.1 T_c; zero field gives 0 above T_c."""
    b = np.geomspace(1e-3, 1e-1, 20)
    slope = np.polyfit(np.log(b), np.log(FE.reduced(TC, b)), 1)[0]
    assert slope == pytest.approx(1 / FE.delta, rel=0.01)
    above = np.linspace(TC + 5, 1200, 30)
    tail = FE.spin_moment(2.2, above, 2.0)
    assert np.all(tail > 0) and np.all(np.diff(tail) < 0)
    curie_weiss = 3.2**2 * 0.67171 * 2.0 / (3 * (1.1 * TC - TC))  # μB: p_eff² μB B / (3 k (T − T_c))
    assert FE.spin_moment(2.2, 1.1 * TC, 2.0) == pytest.approx(curie_weiss, rel=0.15)
    assert np.all(FE.reduced(above, 0.0) == 0.0)
    assert 0.2 < FE.reduced(TC, 2.0) < 0.35  # the 2 T moment at T_c


def test_monotone_bounded_and_the_field_only_adds():
    t = np.linspace(0, 1250, 1251)
    for b in (0.0, 0.5, 2.0):
        m = FE.reduced(t, b)
        assert np.all(np.diff(m) <= 1e-12) and np.all((m >= 0) & (m <= 1 + 1e-12))
    assert np.all(FE.reduced(t, 2.0) >= FE.reduced(t, 0.0) - 1e-12)
    assert FE.reduced(0.0, 2.0) == 1.0 and FE.reduced(0.0, -2.0) == 1.0  # μs(0, B) = μs(0); |B| counts
    grid = FE.reduced(t[:, None], np.array([0.0, 2.0])[None, :])  # vectorised over both
    assert grid.shape == (1251, 2) and np.allclose(grid[:, 1], FE.reduced(t, 2.0))
    with pytest.raises(ValueError, match="invalid magnetisation model"):
        Magnetisation(beta=1.5)


# -- the positioner -----------------------------------------------------------------------------------
def test_temperature_positioner_settles_after_ramp_plus_settle():
    clock = SimClock(float("inf"))
    temp = SimTemperature(name="sample_temp", clock=clock, start_k=300.0, seed=1)
    assert temp.readback.kind == Kind.hinted and temp.setpoint.kind == Kind.normal
    assert temp.ramp_rate_k_s.kind == Kind.config and temp.settle_time_s.kind == Kind.config
    desc = temp.describe()["sample_temp_readback"]
    assert desc["units"] == "K" and desc["dtype"] == "number"
    assert temp.move_time(400.0) == pytest.approx(180.0 + 100.0 / 0.2)
    status = temp.set(400.0)
    assert status.done and status.success
    assert clock.now == pytest.approx(680.0)  # settle + |ΔT|/rate of beamtime
    assert temp.setpoint.get() == 400.0 and temp.target_k == 400.0
    reads = np.array([temp.readback.get() for _ in range(400)])
    assert abs(reads.mean() - 400.0) < 0.2 and reads.std() == pytest.approx(0.02, rel=0.2)
    assert temp.move_time(400.0) == 0.0 and temp.set(400.0).done and clock.now == pytest.approx(680.0)
    with pytest.raises(LimitError, match="outside the range 10-1200 K"):
        temp.set(1300.0)
    with pytest.raises(LimitError):
        temp.set(float("nan"))


def test_true_temperature_ramps_drifts_and_can_be_disturbed():
    clock = SimClock(float("inf"))
    temp = SimTemperature(name="t", clock=clock, start_k=300.0, seed=2)
    temp.set(500.0)  # ramp 1000 s, then settle 180 s
    assert temp.true_temperature(500.0) == pytest.approx(400.0, abs=0.2)  # half way up the ramp
    settled = temp.true_temperature(np.linspace(1180.0, 4000.0, 200))
    assert np.all(np.abs(settled - 500.0) < 0.2)  # overshoot residual + drift, both small
    assert np.ptp(settled) > 0.05  # but not frozen: a stability check over a count can mean something
    temp.excursion(at_s=clock.now + 100, duration_s=50, delta_k=5.0)
    assert temp.true_temperature(clock.now + 120) - temp.true_temperature(clock.now + 200) == pytest.approx(5, abs=0.2)
    temp.excursion(at_s=clock.now + 300, duration_s=float("inf"), delta_k=8.0)  # a trip, until the heater is reset
    temp.excursion(at_s=clock.now + 900, duration_s=50, delta_k=3.0)
    temp.end_excursions(at_s=clock.now + 400)
    assert temp.true_temperature(clock.now + 350) - temp.true_temperature(clock.now + 500) == pytest.approx(8, abs=0.2)
    later = temp.true_temperature(clock.now + 920) - temp.true_temperature(clock.now + 500)
    assert abs(later) < 0.2  # the excursion not begun at the reset is dropped
    temp.fail_next(1, mode="stuck")
    assert temp.set(600.0).done and temp.target_k == 500.0 and temp.setpoint.get() == 600.0


# -- the beamline ---------------------------------------------------------------------------------------
def test_without_a_temperature_nothing_changes():
    plain = make_compton_beamline("fe", time_scale=float("inf"), seed=3)
    assert plain.sample_temp is None and plain.ge.temperature is None
    assert plain.ge.magnetic_scale(0.0, 60.0, 2.0) is None
    hot = make_compton_beamline("fe", time_scale=float("inf"), seed=3, with_temperature=True)
    assert isinstance(hot.sample_temp, SimTemperature) and hot.sample_temp.name == "sample_temp"
    g = hot.ge.geometry()
    ref = hot.sample.expected_counts(g, 1.0, 60.0)
    assert np.array_equal(hot.sample.expected_counts(g, 1.0, 60.0, magnetic_scale=None), ref)
    def rate(sign, scale=None):  # per second of live time: the dead time (which the scale changes) normalised
        counts, live = hot.sample.expected_counts_live(g, sign, 60.0, magnetic_scale=scale)
        return counts / live

    charge = (rate(1.0) + rate(-1.0)) / 2
    assert np.allclose(rate(1.0, 0.5) - charge, (rate(1.0) - charge) / 2)
    with pytest.raises(ValueError, match="no temperature-dependent magnetisation model for 'Ni'"):
        make_compton_beamline("ni", with_temperature=True)


def _run_at(RE, bl, temperature_k, cycles):
    RE(bps.mv(bl.sample_temp, temperature_k))
    agent = spin_moment_agent(target_std=1e-4, max_cycles=cycles, element="Fe")
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0,
                                 md={"sample": "fe", "temperature_k": temperature_k}))
    return agent.report(), bl.true_spin_moment_mub(field_t=2.0), uid


def test_compton_runs_at_two_temperatures_follow_the_model(RE, catalog):
    """Real RunEngine runs at 300 K and 1000 K (2 T): posterior μs means within 4σ (+1 % for the
    free-atom analysis' own bias) of μs(T, 2 T), and the ratio of the two follows the model."""
    bl = make_compton_beamline("fe", time_scale=float("inf"), seed=5, with_temperature=True)
    cold, truth_cold, uid = _run_at(RE, bl, 300.0, 3)
    hot, truth_hot, _ = _run_at(RE, bl, 1000.0, 3)
    assert truth_hot == pytest.approx(FE.spin_moment(2.2, 1000.0, 2.0), abs=0.005)
    for rep, truth in ((cold, truth_cold), (hot, truth_hot)):
        assert rep["cycles"] == 3
        assert abs(rep["mu_s_mean"] - truth) < 4 * rep["mu_s_std"] + 0.01 * truth, (rep["mu_s_mean"], truth)
    ratio, sd = hot["mu_s_mean"] / cold["mu_s_mean"], hot["mu_s_std"] / cold["mu_s_mean"] * 1.5
    assert ratio == pytest.approx(truth_hot / truth_cold, abs=4 * sd)
    assert truth_hot / truth_cold < 0.5  # the two temperatures are told apart by far
    assert catalog[uid].metadata["start"]["temperature_k"] == 300.0


def test_a_compton_run_held_at_a_temperature_uses_only_spectra_counted_at_it(RE, catalog):
    """``adaptive_compton(temperature_k=...)``: the sample is brought to 900 K before the first count and its
    readback is stored before and after every count; a heater excursion during cycle 2 makes that cycle's
    spectra unproven (stored, not used), as a field off its value would."""
    from agent import spin_moment_agent
    from plans import adaptive_compton
    from sim_devices import BeamtimeSignal, make_compton_beamline

    bl = make_compton_beamline("fe", time_scale=float("inf"), seed=8, with_temperature=True)
    agent = spin_moment_agent(1e-6, max_cycles=3)
    beamtime = BeamtimeSignal(bl.clock, name="beamtime")
    settle = bl.sample_temp.move_time(900.0)
    streams = {}

    def heater_trip(name, doc):  # right after cycle 2's first spectrum: its second starts 8 K off
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams[doc["descriptor"]] == "primary" and doc["data"]["cycle"] == 2 \
                and doc["data"]["flip"] == 0:
            bl.sample_temp.excursion(duration_s=120.0, delta_k=8.0)

    RE.subscribe(heater_trip)
    (uid,) = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beamtime=beamtime, beam_poll_s=0,
                                 temperature_k=900.0, sample_temp=bl.sample_temp, md={"sample": "fe"}))
    run = catalog[uid]
    start = run.metadata["start"]
    assert start["sample_temperature_k"] == 900.0 and start["validity"]["temperature"]["tolerance_k"] == 2.0
    primary = run["primary"].read()
    before = np.asarray(primary["temperature_before_k"], float)
    assert np.all(np.abs(before - 900.0) < 10.0) and float(primary["beamtime"][0]) >= settle  # settled first
    cycles = run["cycles"].read()
    assert list(cycles["valid"].values)[:2] == [True, False] and agent.cycles == 3
    assert "sample temperature" in str(cycles["reason"].values[1])
    with pytest.raises(ValueError, match="outside the sample temperature range 10-1200 K"):
        RE(adaptive_compton([bl.ge], bl.magnet, spin_moment_agent(0.01), temperature_k=2000.0,
                            sample_temp=bl.sample_temp))
