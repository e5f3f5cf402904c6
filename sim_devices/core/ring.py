"""Simulated storage-ring current: top-up sawtooth, beam dumps on demand (DESIGN §5)."""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.signal import SignalRO

from sim_devices.core.clock import SimClock


class _CurrentSignal(SignalRO):
    """Ring current (mA) evaluated on the simulated clock at read time."""

    def get(self, **kwargs):
        ring = self.parent
        self._readback = ring.current_at(ring.clock.now)
        return self._readback

    def describe(self):
        d = super().describe()
        d[self.name].update(units="mA", precision=3)
        return d


class RingCurrent(Device):
    """Storage-ring current monitor on the simulated clock.

    Top-up keeps the current within ``topup_band_ma`` below ``nominal_ma``: it decays linearly
    and is refilled every ``topup_period_s``. ``dump(at_s, duration_s)`` schedules a beam dump: the
    current is 0 from ``at_s`` until refilled ``duration_s`` later. ``trigger()`` averages the
    current over ``average_s`` seconds of beamtime (the monitor's integration time).
    """

    current = Cpt(_CurrentSignal, kind=Kind.hinted)
    nominal_ma = Cpt(Signal, value=100.0, kind=Kind.config)
    average_s = Cpt(Signal, value=1.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, topup_period_s: float = 60.0, topup_band_ma: float = 0.05,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.topup_period_s = float(topup_period_s)
        self.topup_band_ma = float(topup_band_ma)
        self._dumps: list[tuple[float, float]] = []

    def dump(self, at_s: float | None = None, duration_s: float = 900.0) -> None:
        """Schedule a beam dump at beamtime ``at_s`` (default: now) lasting ``duration_s`` seconds."""
        start = self.clock.now if at_s is None else float(at_s)
        self._dumps.append((start, start + float(duration_s)))

    def current_at(self, t_s) -> np.ndarray | float:
        """Ring current (mA) at beamtime ``t_s`` (s); array in, array out."""
        t = np.asarray(t_s, dtype=float)
        phase = np.mod(t, self.topup_period_s) / self.topup_period_s
        i = self.nominal_ma.get() - self.topup_band_ma * phase
        for start, end in self._dumps:
            i = np.where((t >= start) & (t < end), 0.0, i)
        return float(i) if np.ndim(i) == 0 else i

    def mean_current(self, t0_s: float, t1_s: float) -> float:
        """Mean current (mA) over [t0_s, t1_s] (s) of beamtime, integrated on a 1 s grid."""
        if t1_s <= t0_s:
            return float(self.current_at(t0_s))
        t = np.linspace(t0_s, t1_s, max(2, int(t1_s - t0_s) + 1))
        return float(np.mean(self.current_at(t)))

    def trigger(self):
        return self.clock.action(self.average_s.get(), obj=self)
