"""Simulated storage-ring current: top-up sawtooth, beam dumps on demand, and the minimum over a
count window (DESIGN §5)."""

from __future__ import annotations

import math

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


class _MinimumSignal(SignalRO):
    """Lowest ring current (mA) since the ring's window was opened (``start_window``), up to now."""

    def get(self, **kwargs):
        ring = self.parent
        now = ring.clock.now
        t0 = now if ring.window_start_s is None else ring.window_start_s
        self._readback = ring.min_current(t0, now)
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
    current over ``average_s`` seconds of beamtime (the monitor's integration time) and opens a window.

    Count windows: ``start_window()`` (no beamtime passes) marks the start of a count; ``minimum``
    then reads the lowest current from that moment to now (``min_current``), so an event read at the
    count's end stores the minimum over the count, a dump-and-refill inside it included, beside
    ``current`` (the value at its end).
    """

    current = Cpt(_CurrentSignal, kind=Kind.hinted)
    minimum = Cpt(_MinimumSignal, kind=Kind.normal)
    nominal_ma = Cpt(Signal, value=100.0, kind=Kind.config)
    average_s = Cpt(Signal, value=1.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, topup_period_s: float = 60.0, topup_band_ma: float = 0.05,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.topup_period_s = float(topup_period_s)
        self.topup_band_ma = float(topup_band_ma)
        self._dumps: list[tuple[float, float]] = []
        self.window_start_s: float | None = None

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

    def min_current(self, t0_s: float, t1_s: float) -> float:
        """Lowest current (mA) over [t0_s, t1_s] (s of beamtime), exact: 0 if a dump overlaps the
        interval, else the lower of the current at ``t1_s`` and, if a top-up refill falls inside, the
        bottom of the sawtooth just before it."""
        t0, t1 = float(t0_s), max(float(t0_s), float(t1_s))
        if any(start <= t1 and end > t0 for start, end in self._dumps):
            return 0.0
        lowest = min(float(self.current_at(t0)), float(self.current_at(t1)))
        if math.floor(t1 / self.topup_period_s) > math.floor(t0 / self.topup_period_s):
            lowest = min(lowest, self.nominal_ma.get() - self.topup_band_ma)
        return lowest

    def start_window(self) -> None:
        """Start a count window now: ``minimum`` reads the lowest current from here on."""
        self.window_start_s = self.clock.now

    def trigger(self):
        self.start_window()
        return self.clock.action(self.average_s.get(), obj=self)
