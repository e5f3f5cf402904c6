"""RunEngine suspenders of a beamline session: the ring-current floor (beam dump)."""

from __future__ import annotations

import bluesky.plan_stubs as bps
from bluesky.suspenders import SuspendFloor


class RingCurrentSuspender(SuspendFloor):
    """Suspend a run while the ring current is below a floor (mA) and count the trips.

    ``trips`` lets an adaptive plan (``adaptive_compton(..., interruptions=suspender)``) see that a
    flip cycle was interrupted, discard the whole cycle and measure a fresh one: a long beam dump in
    the middle of ``+ − − +`` breaks the drift cancellation the cycle exists for."""

    def __init__(self, current, floor_ma: float, resume_ma: float, sleep_s: float):
        self.trips = 0

        def count_trip():  # a plain function: a bound method would make the suspender's repr recurse
            self.trips += 1
            yield from bps.null()

        super().__init__(current, suspend_thresh=floor_ma, resume_thresh=resume_ma, sleep=sleep_s,
                         pre_plan=count_trip, tripped_message=f"ring current below {floor_ma} mA (beam dump)")


def ring_current_suspender(current, floor_ma: float, resume_ma: float, sleep_s: float) -> RingCurrentSuspender:
    """Suspend a run while ``current`` (a signal, mA) is below ``floor_ma``; resume once it is back
    above ``resume_ma`` and has stayed there ``sleep_s`` wall seconds. Adaptive plans checkpoint
    before each count, so the count the dump interrupted is never stored half-counted."""
    return RingCurrentSuspender(current, floor_ma, resume_ma, sleep_s)
