"""Simulated sample magnet: field ±B with a flip time, a readback, and injectable failures."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.utils import LimitError

from sim_devices.core.clock import SimClock
from sim_devices.core.faults import FaultQueue


class SimMagnet(Device):
    """Electromagnet on the simulated clock. ``set(field_t)`` (T) takes ``flip_time_s`` seconds of
    beamtime when the field changes sign (``settle_time_s`` otherwise); the readback then shows
    the field reached. ``fail_next(n, mode)`` makes the next ``n`` moves fail: ``"stuck"`` (the
    status completes but the readback stays where it was, as a tripped power supply reports),
    ``"timeout"`` (the status fails at the end of the move) or ``"hang"`` (the supply never reports
    ready: the status fails by its timeout)."""

    readback = Cpt(Signal, value=0.0, kind=Kind.hinted)
    setpoint = Cpt(Signal, value=0.0, kind=Kind.normal)
    flip_time_s = Cpt(Signal, value=10.0, kind=Kind.config)
    settle_time_s = Cpt(Signal, value=1.0, kind=Kind.config)
    max_field_t = Cpt(Signal, value=2.5, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self._faults = FaultQueue("magnet", ("stuck", "timeout", "hang"))

    @property
    def position(self) -> float:
        return self.readback.get()

    def fail_next(self, n: int = 1, mode: str = "stuck", after: int = 0) -> None:
        """Make ``n`` moves fail (``mode``: "stuck", "timeout" or "hang") after ``after`` good ones."""
        self._faults.add(mode, n, after)

    def set(self, value):
        value = float(value)
        limit = self.max_field_t.get()
        if abs(value) > limit:
            raise LimitError(f"{self.name}: field {value} T outside ±{limit} T")
        self.setpoint.put(value)
        old = self.readback.get()
        flips = (old >= 0) != (value >= 0) or old == 0.0
        duration = self.flip_time_s.get() if flips else self.settle_time_s.get()
        failure = self._faults.pop()

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: power supply did not report ready for {value:+.3f} T")
            if failure is None:
                self.readback.put(value)

        return self.clock.action(duration, on_done=done, obj=self, what=f"move to {value:+.3f} T",
                                 hang=failure == "hang")
