"""RunEngine suspenders of a beamline session: the ring-current floor (beam dump)."""

from __future__ import annotations

from bluesky.suspenders import SuspendFloor


def ring_current_suspender(current, floor_ma: float, resume_ma: float, sleep_s: float) -> SuspendFloor:
    """Suspend a run while ``current`` (a signal, mA) is below ``floor_ma``; resume once it is back
    above ``resume_ma`` and has stayed there ``sleep_s`` wall seconds. Adaptive plans checkpoint
    before each count, so the count the dump interrupted is dropped and counted again."""
    return SuspendFloor(current, suspend_thresh=floor_ma, resume_thresh=resume_ma, sleep=sleep_s,
                        tripped_message=f"ring current below {floor_ma} mA (beam dump)")
