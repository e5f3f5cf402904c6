"""Simulated sample-temperature controller (cryofurnace) on the beamline's clock.

Move model (beamtime, on the ``SimClock``): a change of ΔT takes ``settle_time_s + |ΔT|/ramp_rate_k_s``
seconds (0 for no change): a linear ramp at the ramp rate, then the settle time, during which an overshoot
of ``overshoot`` × ΔT relaxes with time constant settle/3. Defaults: 0.2 K/s (12 K/min), 180 s, limits
10–1200 K, overshoot 0.01. After that the true sample temperature is the target plus a slow drift
(``drift_k`` × sin(2π t/``drift_period_s``), default 0.05 K over 1800 s) and any scheduled excursion
(``excursion``); the readback adds Gaussian sensor noise (``noise_k``, default 0.02 K) on every read.
"""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.signal import SignalRO
from ophyd.utils import LimitError

from agent.core.words import plain
from sim_devices.core.clock import SimClock
from sim_devices.core.faults import FaultQueue


class _TemperatureReadback(SignalRO):
    """Sensor reading (K): the true sample temperature now plus sensor noise."""

    def get(self, **kwargs):
        dev = self.parent
        self._readback = dev.true_temperature(dev.clock.now) + dev.noise_k.get() * dev.rng.standard_normal()
        return self._readback

    def describe(self):
        d = super().describe()
        d[self.name].update(units="K", precision=3)
        return d


class SimTemperature(Device):
    """Sample-temperature positioner (K). ``set(T)`` returns a status that completes after the move time
    (``move_time``) of beamtime; temperatures outside [low_limit_k, high_limit_k] or not finite raise
    ``LimitError`` before anything moves. ``fail_next(n, mode)``: ``"stuck"`` (the status completes, the
    heater never moved), ``"timeout"`` (the status fails at the end, nothing moved) or ``"hang"`` (the
    controller never reports; the status fails by its timeout)."""

    readback = Cpt(_TemperatureReadback, kind=Kind.hinted)
    setpoint = Cpt(Signal, value=295.0, kind=Kind.normal)
    ramp_rate_k_s = Cpt(Signal, value=0.2, kind=Kind.config)
    settle_time_s = Cpt(Signal, value=180.0, kind=Kind.config)
    low_limit_k = Cpt(Signal, value=10.0, kind=Kind.config)
    high_limit_k = Cpt(Signal, value=1200.0, kind=Kind.config)
    noise_k = Cpt(Signal, value=0.02, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, start_k: float = 295.0, limits_k=(10.0, 1200.0),
                 ramp_rate_k_s: float = 0.2, settle_time_s: float = 180.0, noise_k: float = 0.02,
                 drift_k: float = 0.05, drift_period_s: float = 1800.0, overshoot: float = 0.01,
                 seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        lo, hi = map(float, limits_k)
        if not (0 <= lo < hi and ramp_rate_k_s > 0 and settle_time_s >= 0 and noise_k >= 0 and drift_k >= 0
                and drift_period_s > 0 and overshoot >= 0):
            raise ValueError(f"invalid temperature-controller settings: limits {limits_k} K, ramp {ramp_rate_k_s} "
                             f"K/s, settle {settle_time_s} s, noise {noise_k} K, drift {drift_k} K")
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        for sig, v in ((self.low_limit_k, lo), (self.high_limit_k, hi), (self.ramp_rate_k_s, ramp_rate_k_s),
                       (self.settle_time_s, settle_time_s), (self.noise_k, noise_k)):
            sig.put(float(v))
        self.drift_k, self.drift_period_s, self.overshoot = float(drift_k), float(drift_period_s), float(overshoot)
        start = float(start_k)
        self.check_value(start)
        self.setpoint.put(start)
        # The last commanded move that happened: (start s, from K, end of ramp s, to K, settle s).
        self._move = (clock.now, start, clock.now, start, 0.0)
        self._excursions: list[tuple[float, float, float]] = []
        self._faults = FaultQueue("temperature controller", ("stuck", "timeout", "hang"))
        self.moves = 0
        self.move_time_total_s = 0.0

    # -- the physics ---------------------------------------------------------------------------
    @property
    def target_k(self) -> float:
        """Temperature (K) of the last move that happened (where the sample is heading or sits)."""
        return self._move[3]

    def _controlled(self, t: np.ndarray) -> np.ndarray:
        """The controller's part of the temperature (K): ramp, then the relaxing overshoot."""
        t0, start, t_ramp, target, settle = self._move
        d = target - start
        ramp = start + d * np.clip((t - t0) / (t_ramp - t0), 0.0, 1.0) if t_ramp > t0 else np.full(t.shape, target)
        tail = self.overshoot * d * np.exp(-3.0 * np.maximum(t - t_ramp, 0.0) / settle) if settle > 0 else 0.0
        return np.where(t < t_ramp, ramp, target + tail)

    def true_temperature(self, t_s) -> np.ndarray | float:
        """True sample temperature (K) at beamtime ``t_s`` (s); array in, array out."""
        t = np.asarray(t_s, dtype=float)
        temp = self._controlled(t) + self.drift_k * np.sin(2 * np.pi * t / self.drift_period_s)
        for a, b, delta in self._excursions:
            temp = temp + np.where((t >= a) & (t < b), delta, 0.0)
        return float(temp) if temp.ndim == 0 else temp

    def excursion(self, at_s: float | None = None, duration_s: float = 300.0, delta_k: float = 5.0) -> None:
        """Schedule a temperature excursion: the sample is ``delta_k`` K off from ``at_s`` (default now)
        for ``duration_s`` seconds of beamtime (e.g. a heater trip), to test stability rules."""
        start = self.clock.now if at_s is None else float(at_s)
        self._excursions.append((start, start + float(duration_s), float(delta_k)))

    def end_excursions(self, at_s: float | None = None) -> None:
        """End every excursion still running at ``at_s`` (default now; s of beamtime) there, and drop those
        not begun yet (the heater is reset)."""
        end = self.clock.now if at_s is None else float(at_s)
        self._excursions = [(a, min(b, end), d) for a, b, d in self._excursions if a < end]

    # -- positioner ----------------------------------------------------------------------------
    @property
    def position(self) -> float:
        return float(self.readback.get())

    @property
    def limits(self) -> tuple[float, float]:
        return float(self.low_limit_k.get()), float(self.high_limit_k.get())

    def check_value(self, value) -> None:
        """Raise ``LimitError`` if a temperature (K) is not finite or outside the limits."""
        lo, hi = self.limits
        v = float(value)
        if not (np.isfinite(v) and lo <= v <= hi):
            raise LimitError(f"{self.name}: temperature {plain(value)} K outside the range {lo:g}-{hi:g} K")

    def move_time(self, target_k: float, from_k: float | None = None) -> float:
        """Beamtime (s) to go from ``from_k`` (default: the current target) to ``target_k`` and settle:
        settle + |ΔT|/ramp rate, 0 for no change."""
        d = abs(float(target_k) - (self.target_k if from_k is None else float(from_k)))
        return 0.0 if d == 0 else self.settle_time_s.get() + d / self.ramp_rate_k_s.get()

    def fail_next(self, n: int = 1, mode: str = "stuck", after: int = 0) -> None:
        """Make ``n`` moves fail (``mode``: "stuck", "timeout" or "hang") after ``after`` good ones."""
        self._faults.add(mode, n, after)

    def set(self, value):
        self.check_value(value)
        value = float(value)
        self.setpoint.put(value)
        duration = self.move_time(value)
        failure = self._faults.pop()
        if failure is None and duration > 0:
            now = self.clock.now
            settle = self.settle_time_s.get()
            self._move = (now, float(self._controlled(np.asarray(now))), now + duration - settle, value, settle)
            self.moves += 1
            self.move_time_total_s += duration

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: controller did not report the end of the move to {value:.2f} K")

        return self.clock.action(duration, on_done=done, obj=self, what=f"move to {value:.2f} K",
                                 hang=failure == "hang")
