"""The storage-ring current over Channel Access, with the minimum over each count (issue 9).

A count is proven to have had beam only by the ring current over the whole count, not by one read at
its end (which misses a dump and refill, or a top-up glitch, during it). ``EpicsRingCurrent`` keeps
the CA monitor updates of the ring PV with the IOC's timestamps; ``start_window()`` marks a count's
start (``plans.core.RingWindow`` calls it right before the detectors are triggered) and ``read()`` at
its end reports the value in force at the end (``current``), the minimum over the window
(``minimum``, including the value in force when it opened) and the longest silence of the monitor
within it (``gap_s``). Before reporting, ``read`` waits (at most ``max_gap_s`` + ``settle_s``) until
an update stamped at or after the window's end has arrived: CA delivers updates in order, so every
update of the count has then been seen, and the result does not depend on how late the client's
monitor thread runs. A silence longer than ``max_gap_s`` (the PV's update period, with slack) proves
nothing about the beam during it: the plans discard such a count (``agent.feeders.count_problem``).
The PV's timestamps are compared with this host's clock: the IOC and the client must be
time-synchronised (NTP), as EPICS timestamps assume.
"""

from __future__ import annotations

import math
import threading
import time

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO, Kind, Signal
from ophyd.status import DeviceStatus

#: Default longest silence (s) of the ring PV that still proves beam; the simulated IOC posts every 20 ms.
DEFAULT_MAX_GAP_S = 2.0


class EpicsRingCurrent(Device):
    """Ring current (mA) from the PV ``prefix``, with its minimum over each count window.

    Readings: ``<name>_current`` (mA, the value in force at the window's end), ``<name>_minimum`` (mA,
    lowest value in force during the window), ``<name>_gap_s`` (s, longest stretch of the window without
    an update, counted from the update in force at its start). A ``read`` without ``start_window``
    reports the latest update as it is (``gap_s`` its age; no wait). Configuration: ``<name>_max_gap_s``.
    ``live`` is the monitored PV itself (what a suspender watches). ``settle_s``: how long (wall s)
    ``read`` waits beyond ``max_gap_s`` for the monitor to deliver an update after the window's end."""

    live = Cpt(EpicsSignalRO, "", auto_monitor=True, kind=Kind.omitted)
    current = Cpt(Signal, value=math.nan, kind=Kind.hinted)
    minimum = Cpt(Signal, value=math.nan, kind=Kind.normal)
    gap_s = Cpt(Signal, value=math.nan, kind=Kind.normal)
    max_gap_s = Cpt(Signal, value=DEFAULT_MAX_GAP_S, kind=Kind.config)

    def __init__(self, prefix: str, *, max_gap_s: float = DEFAULT_MAX_GAP_S, settle_s: float = 5.0, **kwargs):
        super().__init__(prefix, **kwargs)
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0 s, got {max_gap_s!r}")
        self.max_gap_s.put(float(max_gap_s))
        self.settle_s = float(settle_s)
        self._cond = threading.Condition()
        self._updates: list[tuple[float, float]] = []  # (IOC timestamp s, mA), in arrival (= IOC) order
        self._window_start: float | None = None
        self._subscribed = False

    def _on_update(self, value=None, timestamp=None, **kwargs) -> None:
        if value is None or timestamp is None:
            return
        with self._cond:
            if self._window_start is None:  # no count running: the last update is all a window needs
                self._updates = self._updates[-1:]
            self._updates.append((float(timestamp), float(value)))
            self._cond.notify_all()

    def _subscribe(self) -> None:
        """Subscribe to the monitor once the PV is connected (not while connecting: DESIGN §8)."""
        if not self._subscribed:
            self.live.wait_for_connection()
            self.live.subscribe(self._on_update, run=True)  # run: the update in force now
            self._subscribed = True

    def start_window(self) -> None:
        """A count starts now: forget updates older than the one in force."""
        self._subscribe()
        now = time.time()
        with self._cond:
            earlier = [u for u in self._updates if u[0] <= now]
            self._updates = earlier[-1:] + [u for u in self._updates if u[0] > now]
            self._window_start = now

    def trigger(self) -> DeviceStatus:
        """Nothing to do (the PV is monitored): a read without a window reports the latest update."""
        status = DeviceStatus(self)
        status.set_finished()
        return status

    def window(self) -> tuple[float, float, float]:
        """``(current, minimum, gap_s)`` over the window from ``start_window`` to now (see the class).
        Without an update in force at the start, the silence counts from the start (and with no update
        at all, current and minimum are NaN: no proof). No window open: the latest update as it is
        (``gap_s`` its age), without waiting: a check such as waiting for beam, not a proof."""
        self._subscribe()
        end = time.time()
        limit = float(self.max_gap_s.get())
        with self._cond:
            start = self._window_start
            if start is None:
                start = end
            else:
                self._cond.wait_for(lambda: self._updates and self._updates[-1][0] >= end,
                                    timeout=limit + self.settle_s)
            ups = sorted(self._updates)
        before = [u for u in ups if u[0] <= start]
        inside = [u for u in ups if start < u[0] <= end]
        seen = before[-1:] + inside
        times = [seen[0][0] if before else start] + [t for t, _ in inside] + [end]
        gap = max(b - a for a, b in zip(times, times[1:], strict=False))
        if not seen:
            return math.nan, math.nan, gap
        return seen[-1][1], min(v for _, v in seen), gap

    def read(self):
        current, minimum, gap = self.window()
        with self._cond:
            self._window_start = None
        self.current.put(current)
        self.minimum.put(minimum)
        self.gap_s.put(gap)
        return super().read()
