"""One simulated beamtime clock shared by every simulated device (DESIGN §5).

Time is beamtime in seconds. Each device action (a count, a magnet flip, a monochromator move)
occupies ``[t0, t0 + duration]`` on this clock; the ophyd status it returns completes after
``duration / time_scale`` wall seconds, so a 10-hour beamtime rehearses in seconds while the
report still states the real beamtime. The clock is event driven (it advances only through
actions and ``idle``), so rehearsals are reproducible and do not depend on host speed.

Every action's status carries a timeout: twice its expected wall duration plus an absolute wall-clock
floor (``timeout_floor_s``, default 10 s) that does not shrink with the time scale, so a device that
never reports done (a fault mode) fails its status, naming the device, instead of hanging the run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from ophyd import Signal
from ophyd.status import Status
from ophyd.utils import StatusTimeoutError

DEFAULT_TIMEOUT_FLOOR_S = 10.0  # wall seconds; never scaled by the simulator's time scale
TIMEOUT_FACTOR = 2.0  # allowed multiple of the expected wall duration, on top of the floor


class ActionStatus(Status):
    """The status of one simulated action, named after its device and what it does, so that a failure
    (``str(status)``, which bluesky's ``FailedStatus`` shows) says which device and why."""

    def __init__(self, obj, what: str, duration_s: float, timeout: float):
        self.device_name = getattr(obj, "name", None) or "device"
        self.what, self.duration_s = what, float(duration_s)
        super().__init__(obj=obj, timeout=timeout)

    def __repr__(self):
        timeout = getattr(self, "_timeout", None)
        limit = "no timeout" if timeout is None else f"timeout {timeout:.3g} s"
        return f"{self.device_name} {self.what} ({self.duration_s:g} s of beamtime; {limit})"

    def __str__(self):
        exc = self._exception if self.done else None
        if isinstance(exc, StatusTimeoutError):
            return (f"{self.device_name}: {self.what} did not finish within its timeout of {self.timeout:.3g} s "
                    f"(expected {self.duration_s:g} s of beamtime)")
        if exc is not None:
            return f"{self.device_name}: {self.what} failed: {exc}"
        return repr(self)


class SimClock:
    """Beamtime clock. ``time_scale`` = simulated seconds per wall second (``inf``: no waiting)."""

    def __init__(self, time_scale: float = 1e4, start_s: float = 0.0,
                 timeout_floor_s: float = DEFAULT_TIMEOUT_FLOOR_S):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if not timeout_floor_s > 0:
            raise ValueError(f"timeout_floor_s must be > 0, got {timeout_floor_s!r}")
        self.time_scale = float(time_scale)
        self.timeout_floor_s = float(timeout_floor_s)
        self._now = float(start_s)
        self._lock = threading.Lock()

    def wall_s(self, duration_s: float) -> float:
        """Wall seconds that ``duration_s`` seconds of beamtime take on this clock."""
        return 0.0 if math.isinf(self.time_scale) else max(0.0, float(duration_s)) / self.time_scale

    def timeout_for(self, duration_s: float) -> float:
        """The timeout (wall s) of an action of ``duration_s`` s of beamtime: twice its wall duration
        plus the absolute floor, which does not shrink with the time scale."""
        return TIMEOUT_FACTOR * self.wall_s(duration_s) + self.timeout_floor_s

    @property
    def now(self) -> float:
        """Current beamtime (s)."""
        return self._now

    def idle(self, duration_s: float) -> None:
        """Let ``duration_s`` seconds of beamtime pass with nothing happening (e.g. waiting for beam)."""
        with self._lock:
            self._now += max(0.0, float(duration_s))

    def action(self, duration_s: float, on_done: Callable[[float, float], object] | None = None,
               obj=None, *, what: str = "action", hang: bool = False) -> Status:
        """Start an action of ``duration_s`` s of beamtime; returns the status that completes it.

        ``on_done(t0, t1)`` runs just before the status finishes (it may raise; the status then
        fails with that exception, as a real device would report a fault). ``hang``: the action never
        reports done (a simulated fault); its status fails by its timeout (``timeout_for``).
        ``what`` names the action in the status (e.g. "count", "move to +2 T").
        """
        duration_s = max(0.0, float(duration_s))
        t0 = self._now
        t1 = t0 + duration_s
        delay = self.wall_s(duration_s)
        # An action done before this returns needs no timeout (nor the watcher thread a timeout costs).
        timeout = self.timeout_for(duration_s) if hang or delay > 0.0 else None
        status = ActionStatus(obj, what, duration_s, timeout)
        if hang:
            return status

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

        if delay <= 0.0:
            finish()
        else:
            timer = threading.Timer(delay, finish)
            timer.daemon = True
            timer.start()
        return status


def refused(obj, what: str, message: str) -> ActionStatus:
    """A failed status for an action a device refuses to start (e.g. a count of no positive preset
    time, which the real records would start and never end): a device fault, never a count."""
    status = ActionStatus(obj, what, 0.0, None)
    status.set_exception(ValueError(message))
    return status


class BeamtimeSignal(Signal):
    """Elapsed beamtime (s) on a ``SimClock``, read by the adaptive plans into their streams."""

    def __init__(self, clock: SimClock, **kwargs):
        super().__init__(**kwargs)
        self._clock = clock

    def get(self, **kwargs):
        return self._clock.now
