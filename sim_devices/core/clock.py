"""One simulated beamtime clock shared by every simulated device (DESIGN §5).

Time is beamtime in seconds. Each device action (a count, a magnet flip, a monochromator move)
occupies ``[t0, t0 + duration]`` on this clock; the ophyd status it returns completes after
``duration / time_scale`` wall seconds, so a 10-hour beamtime rehearses in seconds while the
report still states the real beamtime. The clock is event driven (it advances only through
actions and ``idle``), so rehearsals are reproducible and do not depend on host speed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from ophyd import Signal
from ophyd.status import Status


class SimClock:
    """Beamtime clock. ``time_scale`` = simulated seconds per wall second (``inf``: no waiting)."""

    def __init__(self, time_scale: float = 1e4, start_s: float = 0.0):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._now = float(start_s)
        self._lock = threading.Lock()

    @property
    def now(self) -> float:
        """Current beamtime (s)."""
        return self._now

    def idle(self, duration_s: float) -> None:
        """Let ``duration_s`` seconds of beamtime pass with nothing happening (e.g. waiting for beam)."""
        with self._lock:
            self._now += max(0.0, float(duration_s))

    def action(self, duration_s: float, on_done: Callable[[float, float], object] | None = None,
               obj=None) -> Status:
        """Start an action of ``duration_s`` s of beamtime; returns the status that completes it.

        ``on_done(t0, t1)`` runs just before the status finishes (it may raise; the status then
        fails with that exception, as a real device would report a fault).
        """
        duration_s = max(0.0, float(duration_s))
        t0 = self._now
        t1 = t0 + duration_s
        status = Status(obj=obj)

        def finish():
            with self._lock:
                self._now = max(self._now, t1)
            try:
                if on_done is not None:
                    on_done(t0, t1)
            except Exception as exc:  # a simulated fault: report it through the status
                status.set_exception(exc)
                return
            status.set_finished()

        delay = 0.0 if math.isinf(self.time_scale) else duration_s / self.time_scale
        if delay <= 0.0:
            finish()
        else:
            timer = threading.Timer(delay, finish)
            timer.daemon = True
            timer.start()
        return status


class BeamtimeSignal(Signal):
    """Elapsed beamtime (s) on a ``SimClock``, read by the adaptive plans into their streams."""

    def __init__(self, clock: SimClock, **kwargs):
        super().__init__(**kwargs)
        self._clock = clock

    def get(self, **kwargs):
        return self._clock.now
