"""XAS plans: the adaptive energy-point run the agent steers and stops, and the conventional grid scan.

Streams of ``adaptive_xas``: ``primary`` (one event per point: monochromator readback, I0, It and the
plan's bookkeeping), ``posterior`` (the agent's report after each point: predicted RMSE, amplitude,
edge shift, beamtime, the next energy and dwell, and the stop decision with its reason). The stop
reason goes into the stop document's ``reason``.
"""

from __future__ import annotations

import itertools
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from agent.feeders import XASFeeder
from plans.core import DEVICE_FAULTS, ValuesReadable


def _dwell_signal(det):
    """The detector's count-time signal (simulated ``dwell_s`` or a scaler's ``preset_time``)."""
    for attr in ("dwell_s", "preset_time", "count_time"):
        sig = getattr(det, attr, None)
        if sig is not None:
            return sig
    return None


def _count_field(det) -> str:
    fields = getattr(det, "hints", {}).get("fields", [])
    return fields[0] if fields else det.name


def _check_range(mono, energies) -> None:
    """Raise ``ValueError`` before any motion if an energy (eV) is outside the monochromator's limits."""
    e = np.atleast_1d(np.asarray(energies, float))
    if e.size == 0 or not np.all(np.isfinite(e)):
        raise ValueError("energies must be a non-empty list of finite numbers (eV)")
    lo, hi = getattr(mono, "limits", (-np.inf, np.inf))
    if lo < hi and (e.min() < lo or e.max() > hi):
        raise ValueError(f"energies {e.min():.2f}-{e.max():.2f} eV outside the monochromator range "
                         f"{lo:.2f}-{hi:.2f} eV")


def _set_dwell(detectors, dwell_s: float):
    args = []
    for det in detectors:
        sig = _dwell_signal(det)
        if sig is not None:
            args += [sig, float(dwell_s)]
    if args:
        yield from bps.mv(*args)


def adaptive_xas(mono, detectors, agent, md: dict[str, Any] | None = None, *, beamtime=None,
                 max_consecutive_failures: int = 3):
    """Move, count, ingest, ask, repeat until ``agent.should_stop()``.

    ``detectors``: ``[i0, it]`` (incident, transmitted); their first hinted field is the count.
    ``agent``: an ``XASAgent`` (its candidate range must lie inside the monochromator limits).
    ``beamtime``: optional readable of elapsed beamtime (s), read into ``primary``. A point whose
    count fails or is not finite is recorded but not ingested; ``max_consecutive_failures`` in a
    row abort the run. Checkpoints around each count: a RunEngine suspender (ring-current floor)
    that trips during a count drops it and counts the point again once the beam is back.
    """
    if len(detectors) != 2:
        raise ValueError(f"adaptive_xas needs [i0, it], got {len(detectors)} detectors")
    _check_range(mono, agent.energy_limits)
    if int(max_consecutive_failures) < 1:
        raise ValueError("max_consecutive_failures must be >= 1")
    i0, it = detectors
    f0, ft = _count_field(i0), _count_field(it)
    mono_field = _count_field(mono)
    _md = {"plan_name": "adaptive_xas", "detectors": [d.name for d in detectors], "motors": [mono.name],
           "agent": type(agent).__name__, "stop_rule": repr(agent.stop_rule), "quantities": list(agent.quantities),
           "energy_limits": list(agent.energy_limits), "hints": {"dimensions": [[[mono_field], "primary"]]}}
    _md.update(md or {})
    point = {"point": 0, "suggestion_id": -1, "dwell_s": 0.0}
    decision: dict[str, Any] = {"stop": False, "stop_reason": ""}
    info = ValuesReadable("point", lambda: point, prefix="point_")
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision})
    readables = [mono, *detectors, info] + ([beamtime] if beamtime is not None else [])

    def run():
        yield from bps.open_run(md=_md)
        start = yield from bps.rd(mono)
        if start is not None and np.isfinite(start) and hasattr(agent, "at"):
            agent.at(start)
        (suggestion,) = agent.suggest(1)
        failures, reason = 0, None
        for n in itertools.count(1):
            energy, dwell = float(suggestion["energy"]), float(suggestion.get("dwell", 1.0))
            _check_range(mono, energy)
            point.update(point=n, suggestion_id=int(suggestion["_id"]), dwell_s=dwell)
            try:
                yield from _set_dwell(detectors, dwell)
                yield from bps.mv(mono, energy)
                yield from bps.checkpoint()  # a suspension (beam dump) during the count re-counts this point
                reading = yield from bps.trigger_and_read(readables)
                yield from bps.checkpoint()  # never replay a saved event
                counts = (reading[f0]["value"], reading[ft]["value"])
                valid = bool(np.all(np.isfinite(counts)) and min(counts) > 0)  # XASFeeder has ingested it
            except DEVICE_FAULTS:  # no event: the agent hears of the lost point here
                valid = False
                agent.register_failures([{**suggestion, "i0": np.nan, "it": np.nan}])
            failures = 0 if valid else failures + 1
            stop, reason = agent.should_stop()
            decision.update(stop=bool(stop), stop_reason=reason or "")
            if not stop:
                (suggestion,) = agent.suggest(1)
            yield from bps.trigger_and_read([report], name="posterior")
            yield from bps.checkpoint()
            if stop:
                break
            if failures >= max_consecutive_failures:
                raise RuntimeError(f"{failures} consecutive XAS points failed (last at {energy:.2f} eV)")
        yield from bps.close_run(exit_status="success", reason=reason)
        return reason

    return (yield from bpp.subs_wrapper(run(), XASFeeder(agent, mono_field, f0, ft)))


def grid_xas(mono, detectors, energies, dwell_s: float = 1.0, md: dict[str, Any] | None = None):
    """Conventional step scan: count ``dwell_s`` seconds at each energy (eV) in the given order.
    Every energy is checked against the monochromator limits before any motion."""
    energies = [float(e) for e in np.atleast_1d(energies)]
    _check_range(mono, energies)
    if not dwell_s > 0:
        raise ValueError(f"dwell must be > 0 s, got {dwell_s!r}")
    _md = {"plan_name": "grid_xas", "detectors": [d.name for d in detectors], "motors": [mono.name],
           "num_points": len(energies), "dwell_s": float(dwell_s),
           "hints": {"dimensions": [[[_count_field(mono)], "primary"]]}}
    _md.update(md or {})

    @bpp.run_decorator(md=_md)
    def inner():
        yield from _set_dwell(detectors, dwell_s)
        for e in energies:
            yield from bps.mv(mono, e)
            yield from bps.checkpoint()  # a suspension during the count re-counts this energy
            yield from bps.trigger_and_read([mono, *detectors])
            yield from bps.checkpoint()

    return (yield from inner())
