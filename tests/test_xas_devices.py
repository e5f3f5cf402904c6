"""Simulated XAS hardware: monochromator limits and timing, ion chambers, samples."""

import numpy as np
import pytest
from ophyd.utils import LimitError

from sim_devices.core.clock import SimClock
from sim_devices.xas.ion_chambers import ion_chambers
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample


@pytest.fixture()
def beamline():
    clock = SimClock(time_scale=float("inf"))
    sample = XASSample("Fe3O4", seed=0)
    mono = SimMonochromator(name="mono", clock=clock, limits_eV=(7071.0, 7195.0), start_eV=7100.0,
                            settle_time_s=0.5, speed_eV_s=10.0, backlash_eV=1.0)
    i0, it = ion_chambers(clock, mono, sample, dwell_s=2.0)
    return clock, sample, mono, i0, it


def test_mono_refuses_energies_outside_its_range_before_moving(beamline):
    clock, _, mono, _, _ = beamline
    for bad in (7000.0, 7200.0, np.nan):
        with pytest.raises(LimitError, match="outside the range"):
            mono.set(bad)
    assert mono.position == 7100.0 and clock.now == 0.0 and mono.moves == 0
    with pytest.raises(ValueError):
        SimMonochromator(name="m", clock=clock, limits_eV=(7200.0, 7100.0))


def test_mono_move_time_and_backlash(beamline):
    clock, _, mono, _, _ = beamline
    mono.set(7110.0).wait(1)
    assert clock.now == pytest.approx(0.5 + 1.0) and mono.energy.get() == 7110.0
    mono.set(7100.0).wait(1)
    assert clock.now == pytest.approx(1.5 + 0.5 + 1.2)
    assert mono.read()["mono_energy"]["value"] == 7100.0
    assert "mono_settle_time_s" in mono.read_configuration()


def test_ion_chambers_count_poisson_transmission(beamline):
    clock, sample, mono, i0, it = beamline
    mono.set(7150.0).wait(1)
    t0 = clock.now
    n0, nt = [], []
    for _ in range(400):
        i0.trigger().wait(1)
        it.trigger().wait(1)
        n0.append(i0.counts.get())
        nt.append(it.counts.get())
    assert clock.now - t0 == pytest.approx(400 * 2.0)  # one gate: I0 and It count together
    lam0 = sample.i0_rate * 2.0
    assert np.mean(n0) == pytest.approx(lam0, rel=0.005)
    assert np.var(n0) == pytest.approx(lam0, rel=0.25)
    assert np.mean(np.log(np.array(n0) / np.array(nt))) == pytest.approx(float(sample.mut(7150.0)), abs=0.01)
    assert "it_counts" in it.hints["fields"] and "i0_dwell_s" in i0.read_configuration()


def test_ion_chamber_faults(beamline):
    clock, _, _, i0, _ = beamline
    i0.fail_next("nan")
    i0.trigger().wait(1)
    assert np.isnan(i0.counts.get())
    i0.trigger().wait(1)  # a new window (i0 already counted in the last one): clock advances
    assert clock.now == pytest.approx(2 * 2.0)
    i0.fail_next("timeout")
    with pytest.raises(TimeoutError):
        i0.trigger().wait(1)
    with pytest.raises(ValueError):
        i0.fail_next("melted")


def test_unknown_sample_lists_the_standards():
    with pytest.raises(ValueError, match="Fe-foil"):
        XASSample("unobtainium")
    s = XASSample("Fe-foil", shift_eV=1.0)
    assert s.mu(7113.0) == pytest.approx(XASSample("Fe-foil").mu(7112.0))
    with pytest.raises(ValueError, match="outside"):
        s.mu(7000.0)
