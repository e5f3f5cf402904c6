# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Beam-dump suspender: a run pauses while the ring current is below the floor and the count it
interrupted is counted again once the beam is back."""

from bayesbeam.suspenders import ring_current_suspender

_ring = beamline.section("ring")
ring_suspender = ring_current_suspender(ring, _ring["floor_ma"], _ring["resume_ma"], _ring["resume_sleep_s"])
RE.install_suspender(ring_suspender)
