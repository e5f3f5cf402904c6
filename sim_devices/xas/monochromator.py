"""Simulated double-crystal monochromator energy positioner on the simulated clock (DESIGN §5)."""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.utils import LimitError

from agent.core.words import plain
from sim_devices.core.clock import SimClock


class SimMonochromator(Device):
    """Energy positioner (eV). ``set(E)`` takes settle + |dE|/speed seconds of beamtime; with
    ``backlash_eV`` > 0 every move ends approaching from below, so a move down travels an extra
    2*backlash. Energies outside [low_limit_eV, high_limit_eV] raise ``LimitError`` before any motion."""

    energy = Cpt(Signal, value=7100.0, kind=Kind.hinted)
    setpoint = Cpt(Signal, value=7100.0, kind=Kind.normal)
    low_limit_eV = Cpt(Signal, value=4500.0, kind=Kind.config)
    high_limit_eV = Cpt(Signal, value=30000.0, kind=Kind.config)
    settle_time_s = Cpt(Signal, value=0.3, kind=Kind.config)
    speed_eV_s = Cpt(Signal, value=20.0, kind=Kind.config)
    backlash_eV = Cpt(Signal, value=0.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, limits_eV=(4500.0, 30000.0), start_eV: float | None = None,
                 settle_time_s: float = 0.3, speed_eV_s: float = 20.0, backlash_eV: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        lo, hi = map(float, limits_eV)
        if not (lo < hi and speed_eV_s > 0 and settle_time_s >= 0 and backlash_eV >= 0):
            raise ValueError(f"invalid monochromator settings: limits {limits_eV}, speed {speed_eV_s}, "
                             f"settle {settle_time_s}, backlash {backlash_eV}")
        self.clock = clock
        self.low_limit_eV.put(lo)
        self.high_limit_eV.put(hi)
        self.settle_time_s.put(float(settle_time_s))
        self.speed_eV_s.put(float(speed_eV_s))
        self.backlash_eV.put(float(backlash_eV))
        start = lo if start_eV is None else float(start_eV)
        self.check_value(start)
        self.energy.put(start)
        self.setpoint.put(start)
        self.moves = 0
        self.move_time_s = 0.0

    @property
    def position(self) -> float:
        return float(self.energy.get())

    @property
    def limits(self) -> tuple[float, float]:
        return float(self.low_limit_eV.get()), float(self.high_limit_eV.get())

    def check_value(self, value) -> None:
        """Raise ``LimitError`` if any energy (eV) is outside the limits or not finite."""
        lo, hi = self.limits
        v = np.atleast_1d(np.asarray(value, float))
        bad = v[~np.isfinite(v) | (v < lo) | (v > hi)]
        if bad.size:
            raise LimitError(f"{self.name}: energy {plain(bad[0])} eV outside the range {lo:.1f}-{hi:.1f} eV")

    def move_time(self, target_eV: float) -> float:
        """Seconds of beamtime to move from the current energy to ``target_eV``."""
        d = float(target_eV) - self.position
        if d == 0:
            return 0.0
        extra = 2 * self.backlash_eV.get() if d < 0 else 0.0
        return self.settle_time_s.get() + (abs(d) + extra) / self.speed_eV_s.get()

    def set(self, value):
        self.check_value(value)
        value = float(value)
        self.setpoint.put(value)
        duration = self.move_time(value)
        self.moves += duration > 0
        self.move_time_s += duration
        return self.clock.action(duration, on_done=lambda t0, t1: self.energy.put(value), obj=self,
                                 what=f"move to {value:.2f} eV")
