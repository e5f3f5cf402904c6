"""Magnetic-Compton plans: one ``+ − − +`` flip cycle, and the adaptive run the agent stops.

Streams of the adaptive run: ``primary`` (one event per spectrum: the detector spectrum and
monitor, the magnet readback, the ring current, the cycle bookkeeping), ``cycles`` (one event per
cycle: valid or discarded and why, beamtime), ``posterior`` (the agent's report after each cycle,
with the stop decision). The stop reason goes into the stop document's ``reason``.
"""

import itertools
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable

from agent.compton import SpinMomentAgent
from agent.feeders import ComptonFeeder
from plans.core import (
    DEVICE_FAULTS,
    ValuesReadable,
    agent_arg,
    detector_list,
    record_decision,
    start_md,
    wait_for_beam,
)

FLIP_PATTERN = (1, -1, -1, 1)


class CycleInfo(ValuesReadable):
    """The plan's bookkeeping in each ``primary`` event: ``cycle`` number, ``flip`` index, ``field_sign``.
    One instance per run (bluesky requires the same objects in every event of a stream)."""

    def __init__(self):
        self.state = {"cycle": 0, "flip": 0, "field_sign": 0}
        super().__init__("cycle", lambda: self.state)


def flip_cycle(detectors: Sequence[Readable], magnet: Movable, field_t: float, *, cycle: int = 0,
               pattern: Sequence[int] = FLIP_PATTERN, tolerance_t: float = 0.05, ring: Readable | None = None,
               beam_floor_ma: float = 10.0, beam_poll_s: float = 1.0, info: CycleInfo | None = None,
               interruptions: Any = None):
    """Measure one flip cycle: for each sign in ``pattern`` set the field to sign·``field_t`` (T),
    check the magnet readback within ``tolerance_t`` (T), count ``detectors`` and read one ``primary``
    event. ``detectors[0]`` is the Ge MCA (field ``<name>_spectrum``); the others are read with it.

    Returns ``(valid, reason)``. The cycle is invalid, and counting stops, if the magnet did not
    reach its field, a device reported a fault, the counts are not finite, or the beam was lost
    during a count (ring current below ``beam_floor_ma`` mA when read back). Before each count the
    plan waits for beam, so a dump between spectra costs time but corrupts nothing. A checkpoint
    precedes each count: a RunEngine suspender (ring-current floor) that trips during a count drops
    that count and re-counts it once the beam is back. ``interruptions``: an object whose ``trips``
    counts suspensions (``bayesbeam.suspenders.RingCurrentSuspender``); if it changes during the
    cycle, the cycle is discarded after the re-counted spectrum, so a fresh cycle is measured.
    """
    detectors = detector_list(detectors, "flip_cycle")
    det = detectors[0]
    info = info or CycleInfo()
    info.state["cycle"] = cycle
    trips = getattr(interruptions, "trips", 0)
    readables = [*detectors, magnet, info] + ([ring] if ring is not None else [])
    for flip, sign in enumerate(pattern):
        target = sign * float(field_t)
        try:
            yield from bps.mv(magnet, target)
        except DEVICE_FAULTS as exc:
            return False, f"magnet failed moving to {target:+.3f} T ({type(exc).__name__}: {exc})"
        readback = yield from bps.rd(magnet)
        if not abs(readback - target) <= tolerance_t:
            return False, f"magnet readback {readback:+.3f} T did not reach {target:+.3f} T (flip {flip})"
        if ring is not None:
            yield from wait_for_beam(ring, beam_floor_ma, beam_poll_s)
        info.state.update(flip=flip, field_sign=sign)
        yield from bps.checkpoint()  # a suspension (beam dump) re-counts from here; nothing half-counted is saved
        try:
            reading = yield from bps.trigger_and_read(readables)
        except DEVICE_FAULTS as exc:
            return False, f"detector fault on flip {flip} ({type(exc).__name__}: {exc})"
        yield from bps.checkpoint()  # never replay a saved event
        counts = reading[f"{det.name}_spectrum"]["value"]
        if not np.all(np.isfinite(counts)):
            return False, f"non-finite counts in the spectrum of flip {flip}"
        if ring is not None:
            current = next(v["value"] for k, v in reading.items() if k.startswith(ring.name))
            if current < beam_floor_ma:
                return False, f"beam lost during the count of flip {flip} (ring current {current:.3g} mA)"
        if getattr(interruptions, "trips", 0) != trips:
            return False, f"run suspended during flip {flip} (beam dump): the cycle is measured afresh"
    return True, ""


def adaptive_compton(detectors: Sequence[Readable], magnet: Movable, agent: SpinMomentAgent, *,
                     field_t: float = 2.0, ring: Readable | None = None, beam_floor_ma: float = 10.0,
                     tolerance_t: float = 0.05, max_consecutive_failures: int = 3, beam_poll_s: float = 1.0,
                     beamtime: Readable | None = None, interruptions: Any = None, continue_from: str | None = None,
                     md: dict[str, Any] | None = None):
    """Flip cycles until ``agent.should_stop()`` (target reached, plateau, budget …).

    ``detectors``: ``[ge]``, the Ge MCA first (see ``flip_cycle``). ``agent``: a ``SpinMomentAgent``;
    it is fed through ``ComptonFeeder`` from this run's own documents. ``continue_from``: uid of a
    stored run this one continues (recorded in the start document; the agent passed in carries
    that run's state, e.g. rebuilt with ``bayesbeam.catalog.replay``). ``beamtime``: optional
    readable whose value is elapsed beamtime (s) (the simulated clock); otherwise wall time since
    the start is used. ``interruptions``: see ``flip_cycle``
    (pass the session's ring-current suspender). A discarded cycle is not mixed into the
    posterior and is said so in the ``cycles`` stream; ``max_consecutive_failures`` discarded
    cycles in a row abort the run (what was counted stays in the catalog).
    """
    detectors = detector_list(detectors, "adaptive_compton")
    det = detectors[0]
    if not field_t > 0:
        raise ValueError(f"field must be positive, got {field_t!r} T")
    limit = getattr(getattr(magnet, "max_field_t", None), "get", lambda: None)()
    if limit is not None and field_t > limit:
        raise ValueError(f"field {field_t} T exceeds the magnet's limit {limit} T")
    if int(max_consecutive_failures) < 1:
        raise ValueError("max_consecutive_failures must be >= 1")
    plan_args = {"detectors": list(map(repr, detectors)), "magnet": repr(magnet), "agent": agent_arg(agent),
                 "field_t": field_t, "ring": repr(ring) if ring is not None else None, "beam_floor_ma": beam_floor_ma,
                 "tolerance_t": tolerance_t, "max_consecutive_failures": max_consecutive_failures,
                 "beam_poll_s": beam_poll_s, "continue_from": continue_from}
    _md = start_md("adaptive_compton", detectors, [magnet], plan_args, ["cycle"], agent=agent,
                   continue_from=continue_from, md=md, field_t=field_t, flip_pattern=list(FLIP_PATTERN))
    cycle_state: dict[str, Any] = {"cycle": 0, "valid": True, "reason": "", "beamtime_s": 0.0, "count_time_s": 0.0}
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "next_cycle": 1}
    status = ValuesReadable("cycles", lambda: cycle_state)
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision})
    count_time = float(det.preset_time.get()) if hasattr(det, "preset_time") else 0.0
    info = CycleInfo()

    def run():
        yield from bps.open_run(md=_md)
        failures, reason = 0, None
        for cycle in itertools.count(1):
            valid, why = yield from flip_cycle(detectors, magnet, field_t, cycle=cycle, tolerance_t=tolerance_t,
                                               ring=ring, beam_floor_ma=beam_floor_ma, beam_poll_s=beam_poll_s,
                                               info=info, interruptions=interruptions)
            bt = (yield from bps.rd(beamtime)) if beamtime is not None else float("nan")
            cycle_state.update(cycle=cycle, valid=valid, reason=why, beamtime_s=float(bt),
                               count_time_s=len(FLIP_PATTERN) * count_time)
            yield from bps.trigger_and_read([status], name="cycles")
            yield from bps.checkpoint()
            failures = 0 if valid else failures + 1
            stop, reason = yield from record_decision(agent, report, decision, next_cycle=cycle + 1)
            if stop:
                break
            if failures >= max_consecutive_failures:
                raise RuntimeError(f"{failures} consecutive cycles discarded; last: {why}")
        yield from bps.close_run(exit_status="success", reason=reason)
        return reason

    return (yield from bpp.subs_wrapper(run(), ComptonFeeder(agent, detector=det.name)))
