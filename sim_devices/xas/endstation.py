"""A simulated XAS end station on a given clock and ring: monochromator, ion chambers I0/It, sample."""

from __future__ import annotations

from dataclasses import dataclass

from sim_devices.core.clock import SimClock
from sim_devices.xas.ion_chambers import SharedDwell, SimIonChamber, ion_chambers
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample


@dataclass
class XASEndStation:
    sample: XASSample
    mono: SimMonochromator
    i0: SimIonChamber
    it: SimIonChamber
    dwell: SharedDwell


def make_xas_endstation(sample: str, clock: SimClock, ring=None, seed: int | None = None,
                        settle_s: float = 0.3, speed_eV_s: float = 20.0, backlash_eV: float = 0.0,
                        dwell_s: float = 1.0) -> XASEndStation:
    """The XAS devices for the Fe K-edge standard ``sample`` (``ValueError`` if unknown) on ``clock``;
    counts follow ``ring`` (mA) when given. The monochromator range is the tabulated truth (eV), it
    starts at its low end and moves in ``settle_s`` + |ΔE|/``speed_eV_s`` seconds of beamtime."""
    s = XASSample(sample, seed=seed)
    lo, hi = s.energy_range
    mono = SimMonochromator(name="mono", clock=clock, limits_eV=(lo, hi), start_eV=lo, settle_time_s=settle_s,
                            speed_eV_s=speed_eV_s, backlash_eV=backlash_eV)
    i0, it = ion_chambers(clock, mono, s, ring=ring, dwell_s=dwell_s)
    return XASEndStation(s, mono, i0, it, SharedDwell([i0, it], name="dwell"))
