"""RunEngine suspenders of a beamline session: the ring-current floor (beam dump)."""

from __future__ import annotations

import bluesky.plan_stubs as bps
from bluesky.suspenders import SuspendFloor


class RingCurrentSuspender(SuspendFloor):
    """Suspend a run while the ring current is below a floor (mA) and count the trips (``trips``).

    The adaptive plans need no link to it: bluesky tells every device of a run about a suspension
    (``pause()``), the plans store that count with each measurement and discard a ``+ − − +`` cycle
    whose spectra straddle one; their checkpoint before each move makes the replay after the
    resume set the field or energy again before the interrupted count is counted afresh."""

    def __init__(self, current, floor_ma: float, resume_ma: float, sleep_s: float):
        self.trips = 0

        def count_trip():  # a plain function: a bound method would make the suspender's repr recurse
            self.trips += 1
            yield from bps.null()

        super().__init__(current, suspend_thresh=floor_ma, resume_thresh=resume_ma, sleep=sleep_s,
                         pre_plan=count_trip, tripped_message=f"ring current below {floor_ma} mA (beam dump)")


def ring_current_suspender(current, floor_ma: float, resume_ma: float, sleep_s: float) -> RingCurrentSuspender:
    """Suspend a run while ``current`` (mA; a signal, or a ring device whose monitored PV is ``live``,
    as ``bayesbeam.epics_ring.EpicsRingCurrent``) is below ``floor_ma``; resume once it is back above
    ``resume_ma`` and has stayed there ``sleep_s`` wall seconds. The adaptive plans checkpoint before
    each move, so the count a dump interrupted is never stored half-counted, and is counted again
    after the move is re-issued."""
    return RingCurrentSuspender(getattr(current, "live", current), floor_ma, resume_ma, sleep_s)
