"""Simulated double-crystal monochromator energy positioner on the simulated clock (DESIGN §5)."""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.utils import LimitError

from agent.core.words import plain
from sim_devices.core.clock import SimClock


def travel_time(distance_eV: float, speed_eV_s: float, accel_s: float = 0.0) -> float:
    """Seconds of beamtime a move of ``distance_eV`` takes from rest to rest at ``speed_eV_s`` with a linear
    ramp of ``accel_s`` s to and from that speed (the motor record's ``.VELO``, ``.ACCL``; base speed 0): d/v + accel
    (trapezoid), or 2·√(d·accel/v) when the move is too short to reach the speed (triangle)."""
    d, v, a = abs(float(distance_eV)), float(speed_eV_s), max(float(accel_s), 0.0)
    if d == 0:
        return 0.0
    return d / v + a if d >= v * a else 2.0 * float(np.sqrt(d * a / v))


def time_at_distance(x_eV, distance_eV: float, speed_eV_s: float, accel_s: float = 0.0) -> np.ndarray:
    """Seconds since the start of that move (``travel_time``'s profile) at which it has travelled ``x_eV``
    (array, 0 ≤ x ≤ distance)."""
    x = np.clip(np.asarray(x_eV, float), 0.0, abs(float(distance_eV)))
    d, v, a = abs(float(distance_eV)), float(speed_eV_s), max(float(accel_s), 0.0)
    if a == 0:
        return x / v
    half = min(v * a / 2, d / 2)  # distance of the ramp up (= of the ramp down)
    total = travel_time(d, v, a)
    rate = v / a  # eV/s²
    up = np.sqrt(2 * np.minimum(x, half) / rate)
    down = total - np.sqrt(2 * np.maximum(d - x, 0.0) / rate)
    cruise = np.sqrt(2 * half / rate) + (x - half) / v
    return np.where(x <= half, up, np.where(x >= d - half, down, cruise))


class SimMonochromator(Device):
    """Energy positioner (eV). ``set(E)`` takes settle + |dE|/speed seconds of beamtime (plus ``accel_s``: the
    ramps to and from the speed, ``travel_time``); with
    ``backlash_eV`` > 0 every move ends approaching from below, so a move down travels an extra
    2*backlash. Energies outside [low_limit_eV, high_limit_eV] raise ``LimitError`` before any motion.

    Hidden truth (off by default; plain attributes, never read out or stored): the photons' energy
    ``photon_energy(t)`` = readback + lag + ``calibration_offset_eV`` + ``calibration_drift_eV_h`` · t/3600
    (t: beamtime s). ``lash_eV``: mechanical play between the encoder (the readback: the commanded
    angle) and the crystals. After approaching from below the lag is 0; a move down drags the crystals
    only once the play is taken up, so after a reversal the photons stay up to ``lash_eV`` above the
    readback (lag = clip of the crystal position into [E, E + lash] at each waypoint of the move), until
    a move up takes the lash up again. An anti-backlash approach (``backlash_eV`` ≥ ``lash_eV``) removes it.
    """

    energy = Cpt(Signal, value=7100.0, kind=Kind.hinted)
    setpoint = Cpt(Signal, value=7100.0, kind=Kind.normal)
    low_limit_eV = Cpt(Signal, value=4500.0, kind=Kind.config)
    high_limit_eV = Cpt(Signal, value=30000.0, kind=Kind.config)
    settle_time_s = Cpt(Signal, value=0.3, kind=Kind.config)
    speed_eV_s = Cpt(Signal, value=20.0, kind=Kind.config)
    accel_s = Cpt(Signal, value=0.0, kind=Kind.config)
    backlash_eV = Cpt(Signal, value=0.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, limits_eV=(4500.0, 30000.0), start_eV: float | None = None,
                 settle_time_s: float = 0.3, speed_eV_s: float = 20.0, backlash_eV: float = 0.0,
                 lash_eV: float = 0.0, calibration_offset_eV: float = 0.0, calibration_drift_eV_h: float = 0.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        lo, hi = map(float, limits_eV)
        if not (lo < hi and speed_eV_s > 0 and settle_time_s >= 0 and backlash_eV >= 0 and lash_eV >= 0
                and np.isfinite(calibration_offset_eV) and np.isfinite(calibration_drift_eV_h)):
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
        self.lash_eV = float(lash_eV)
        self.calibration_offset_eV = float(calibration_offset_eV)
        self.calibration_drift_eV_h = float(calibration_drift_eV_h)
        self.lag_eV = 0.0  # crystal position - readback (eV), in [0, lash_eV]

    def photon_energy(self, t_s=None, readback=None, lag=None):
        """The photons' energy (eV) at beamtime ``t_s`` (default now): the readback, lag, calibration
        offset and drift (class docstring); ``readback``, ``lag``: as they were (eV; default now). Equal
        to the readback when those are off. Floats, or arrays (broadcast) for array arguments."""
        e = self.position if readback is None else np.asarray(readback, float)
        lag = self.lag_eV if lag is None else np.asarray(lag, float)
        if not (np.any(lag) or self.calibration_offset_eV or self.calibration_drift_eV_h):
            return e if np.ndim(e) else float(e)
        t = self.clock.now if t_s is None else np.asarray(t_s, float)
        out = e + lag + self.calibration_offset_eV + self.calibration_drift_eV_h * t / 3600.0
        return out if np.ndim(out) else float(out)

    def _arrive(self, value: float) -> None:
        """At the end of a move to ``value``: the readback, and the crystals dragged through the play
        along the move's waypoints (the anti-backlash overshoot first on a move down)."""
        start = self.position
        if self.lash_eV > 0:
            crystal = start + self.lag_eV
            waypoints = [value - self.backlash_eV.get(), value] if value < start and self.backlash_eV.get() > 0 \
                else [value]
            for w in waypoints:
                crystal = min(max(crystal, w), w + self.lash_eV)
            self.lag_eV = crystal - value
        self.energy.put(value)

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
        return self.settle_time_s.get() + travel_time(abs(d) + extra, self.speed_eV_s.get(), self.accel_s.get())

    def set(self, value):
        self.check_value(value)
        value = float(value)
        self.setpoint.put(value)
        duration = self.move_time(value)
        self.moves += duration > 0
        self.move_time_s += duration
        return self.clock.action(duration, on_done=lambda t0, t1: self._arrive(value), obj=self,
                                 what=f"move to {value:.2f} eV")
