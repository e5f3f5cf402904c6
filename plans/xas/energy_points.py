"""XAS plans: the adaptive energy-point run the agent steers and stops, and the conventional grid scan.

Streams of ``adaptive_xas``: ``primary`` (one event per point: monochromator readback, I0, It (and Iref,
the chamber behind a reference foil, and If, a fluorescence detector, when given), the requested energy and the
readback before and
after the count (``energy_requested_ev``,
``energy_before_ev``, ``energy_after_ev``), the ring's minimum over the count (mA, with a ring), the
run's beamtime (s) and the plan's bookkeeping), ``posterior`` (the agent's report after each point:
predicted RMSE, amplitude, edge shift, beamtime, the next energy and dwell, why the point was not used
(``point_problem``, empty if it was: its stored readings or the device fault that lost it), and the stop
decision with its reason). The stop reason goes into the stop document's ``reason``. A point is ingested only if
its stored readings prove it (``agent.feeders.xas_point_problem``; keys and thresholds in the start
document's ``validity``).
"""

import itertools
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable

from agent.feeders import XAS_RULE, XASFeeder, xas_point_problem
from agent.xas import XASAgent, xas_agent
from plans.core import (
    DEVICE_FAULTS,
    CountGuard,
    RingWindow,
    RunBeamtime,
    ValuesReadable,
    agent_arg,
    check_ring,
    detectors_then_motor,
    plan_agent,
    plan_devices,
    ring_spec,
    start_md,
    wait_for_beam,
    watched_fields,
)


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


def _roles(detectors, mode: str) -> tuple[list, Any]:
    """(ion chambers [i0, it, iref] in the order given, the fluorescence detector or None): a fluorescence
    detector is the one that states its dead time (a ``dead_time_s`` signal, s). ``ValueError`` (one line) for
    a list the ``mode`` cannot measure with."""
    names = "[" + ", ".join(getattr(d, "name", "?") for d in detectors) + "]"
    fluo = [d for d in detectors if getattr(d, "dead_time_s", None) is not None]
    chambers = [d for d in detectors if all(d is not f for f in fluo)]
    if len(fluo) > 1:
        raise ValueError(f"adaptive_xas takes one fluorescence detector, got {len(fluo)} in {names}")
    if mode == "fluorescence":
        if not fluo:
            raise ValueError(f"fluorescence mode needs a fluorescence detector (one stating its dead time, "
                             f"dead_time_s) among the detectors, e.g. [i0, ifl] or [i0, it, iref, ifl]; got {names}")
        if not 1 <= len(chambers) <= 3:
            raise ValueError(f"fluorescence mode needs [i0, ifl], [i0, it, ifl] or [i0, it, iref, ifl], got {names}")
    elif len(chambers) not in (2, 3):
        raise ValueError(f"adaptive_xas needs [i0, it] or [i0, it, iref] (and a fluorescence detector), got {names}")
    return chambers, (fluo[0] if fluo else None)


def _set_dwell(detectors, dwell_s: float):
    args = []
    for det in detectors:
        sig = _dwell_signal(det)
        if sig is not None:
            args += [sig, float(dwell_s)]
    if args:
        yield from bps.mv(*args)


def adaptive_xas(detectors: Sequence[Readable] = ("i0", "it"), mono: Movable = "mono", agent: XASAgent | None = None,
                 *, mode: str | None = None, composition: dict[str, Any] | None = None,
                 target_rmse: float | None = None, max_points: int | None = None, prior: str | None = None,
                 exclude: str | None = None, target: str | None = None, quantity: str | None = None,
                 target_std: float | None = None, components: list[str] | None = None,
                 beamtime: Readable | None = "beamtime",
                 ring: Readable | None = "ring", beam_floor_ma: float = 10.0, beam_poll_s: float = 1.0,
                 energy_tolerance_ev: float = 0.1, max_consecutive_failures: int = 3,
                 continue_from: str | None = None, md: dict[str, Any] | None = None):
    """Move, count, ingest, ask, repeat until the agent stops the run.

    ``detectors``: ``[i0, it]`` (incident, transmitted) or ``[i0, it, iref]`` (and the chamber behind a
    reference foil, counted in the same gate: stored, listed in the validity counts, passed to the agent
    as ``iref``), and a fluorescence detector (one that states its dead time, ``dead_time_s``; conventionally
    last): ``[i0, ifl]``, ``[i0, it, ifl]``, ``[i0, it, iref, ifl]``; their first hinted field is the count.
    ``mode``: ``transmission`` (the agent's default) analyses ln(I0/It), ``fluorescence`` If/I0 of a dilute
    sample of ``composition`` (``agent.xas.fluorescence.FluorescenceSample`` fields: fe_fraction, matrix,
    incidence_deg, exit_deg, thickness_cm, density_g_cm3), dead-time corrected with the detector's stated τ
    (an agent given another fails before motion); a fluorescence detector in transmission mode is only stored.
    ``mono``: the monochromator energy (eV). Devices or their names (``plans.registry``; the defaults are
    the profiles' names). The agent: ``agent``, an ``XASAgent`` object (an IPython session's; its
    candidate range must lie inside the monochromator limits); or, as a queued plan gives it, its
    parameters: stop when the predicted RMSE of the ``target`` spectrum (``absorbance``, the default, or
    ``mu``) reaches ``target_rmse`` (edge-step units, default none: the budget decides) or after
    ``max_points`` (default 2000), with the ``prior`` construction (``library``, the default, or
    ``reference``) from the Fe K standards minus ``exclude`` (the sample's own, if it is one)
    (``agent.xas_agent``); or the design and the stop aimed at a ``quantity`` (``edge_position``,
    ``pre_edge_centroid``, ``pre_edge_area``, ``fractions`` of ``components`` (standards' names),
    ``valence``; ``agent.xas.quantities``) until its posterior std reaches ``target_std`` (its unit);
    or, with ``continue_from`` and neither, the stored run's agent rebuilt from the
    catalog. ``continue_from``: uid of a stored run this one continues (recorded in the start document;
    an agent passed in carries that run's state).
    ``beamtime``: readable of elapsed beamtime (s), stored in ``primary`` as beamtime since
    the run's start. ``ring``: a ring that reports its minimum over each count (``plans.core.check_ring``);
    with one, the plan waits for beam (≥ ``beam_floor_ma`` mA, polled every ``beam_poll_s`` wall s)
    before each count and a point counts only if the ring's minimum during it was at or above the floor.

    A point is ingested only if its stored readings prove it: the monochromator readback before and
    after the count within ``energy_tolerance_ev`` (eV) of the requested energy, the ring minimum (with
    a ring), finite positive counts. Otherwise it is stored and registered with the agent as a
    failure; ``max_consecutive_failures`` in a row abort the run. A checkpoint precedes each move: a
    pause or a suspension (beam dump) during the count replays from there, so the monochromator is
    moved again and the point counted afresh at the requested energy.
    """
    detectors, mono = detectors_then_motor(detectors, mono, "adaptive_xas")
    detectors, mono, ring, beamtime = plan_devices("adaptive_xas", detectors, mono, ring, beamtime)
    params = {"mode": mode, "composition": composition, "target_rmse": target_rmse, "max_points": max_points,
              "prior": prior, "exclude": exclude,
              "target": target, "quantity": quantity, "target_std": target_std,
              "components": components if components is None or isinstance(components, str) else list(components)}
    agent, continue_from = plan_agent("adaptive_xas", agent, continue_from, xas_agent, params)
    chambers, fluo = _roles(detectors, agent.mode)
    if agent.mode == "fluorescence":
        agent.adopt_dead_time(fluo.dead_time_s.get())
    _check_range(mono, agent.energy_limits)
    if int(max_consecutive_failures) < 1:
        raise ValueError("max_consecutive_failures must be >= 1")
    if not energy_tolerance_ev > 0:
        raise ValueError(f"energy tolerance must be > 0 eV, got {energy_tolerance_ev!r}")
    check_ring(ring)
    f0, ft, fref = (_count_field(chambers[k]) if len(chambers) > k else None for k in range(3))
    ff = _count_field(fluo) if fluo is not None else None
    mono_field = _count_field(mono)
    plan_args = {"detectors": list(map(repr, detectors)), "mono": repr(mono), "agent": agent_arg(agent), **params,
                 "beamtime": repr(beamtime) if beamtime is not None else None,
                 "ring": repr(ring) if ring is not None else None, "beam_floor_ma": beam_floor_ma,
                 "beam_poll_s": beam_poll_s, "energy_tolerance_ev": energy_tolerance_ev,
                 "max_consecutive_failures": max_consecutive_failures, "continue_from": continue_from}
    run_bt = RunBeamtime(beamtime) if beamtime is not None else None
    spec = {"rule": XAS_RULE, "detectors": [d.name for d in detectors], "counts": [f for f in (f0, ft, fref, ff) if f],
            "monitor": f0, "transmitted": ft, **({"reference": fref} if fref else {}),
            **({"fluorescence": ff} if ff else {}), "requested": "energy_requested_ev",
            "before": "energy_before_ev", "after": "energy_after_ev", "tolerance": float(energy_tolerance_ev),
            "unit": "eV", "label": "monochromator readback", "dwell": "dwell_s", **ring_spec(ring, beam_floor_ma)}
    _md = start_md("adaptive_xas", detectors, [mono], plan_args, [mono_field], agent=agent,
                   continue_from=continue_from, md=md, energy_limits=list(agent.energy_limits), validity=spec)
    point = {"point": 0, "suggestion_id": -1, "dwell_s": 0.0, "energy_requested_ev": float("nan")}
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "point_problem": ""}
    info = ValuesReadable("point", lambda: point)
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision}, hints=watched_fields(agent))
    guard = CountGuard("energy", mono, "energy_before_ev", "energy_after_ev", "eV")
    readables = [guard] + ([RingWindow(ring)] if ring is not None else []) + [mono, *detectors, info] \
        + ([run_bt] if run_bt is not None else [])

    def run():
        yield from bps.open_run(md=_md)
        if run_bt is not None:
            yield from bps.rd(run_bt)  # the zero of the run's beamtime
        start = yield from bps.rd(mono)
        if start is not None and np.isfinite(start) and hasattr(agent, "at"):
            agent.at(start)
        (suggestion,) = agent.suggest(1)
        failures, reason = 0, None
        for n in itertools.count(1):
            energy, dwell = float(suggestion["energy"]), float(suggestion.get("dwell", 1.0))
            _check_range(mono, energy)
            point.update(point=n, suggestion_id=int(suggestion["_id"]), dwell_s=dwell, energy_requested_ev=energy)
            try:
                yield from bps.checkpoint()  # a resume replays from here: dwell and energy are set again
                yield from _set_dwell(detectors, dwell)
                yield from bps.mv(mono, energy)
                if ring is not None:
                    yield from wait_for_beam(ring, beam_floor_ma, beam_poll_s, trigger_first=False)
                reading = yield from bps.trigger_and_read(readables)
                yield from bps.checkpoint()  # never replay a saved event
                problem = xas_point_problem({k: v["value"] for k, v in reading.items()}, spec)  # as XASFeeder
            except DEVICE_FAULTS as exc:  # no event: the agent hears of the lost point here
                problem = f"device fault at {energy:.2f} eV ({type(exc).__name__}: {exc})"
                lost = {"i0": np.nan, **{k: np.nan for k, f in (("it", ft), ("iref", fref), ("if", ff)) if f}}
                agent.register_failures([{**suggestion, **lost, "reason": problem}])
            valid = not problem
            failures = 0 if valid else failures + 1
            stop, reason = agent.should_stop()
            decision.update(stop=bool(stop), stop_reason=reason or "", point_problem=problem)
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

    return (yield from bpp.subs_wrapper(run(), XASFeeder(agent, mono_field, f0, ft, fref, ff)))


def grid_xas(detectors: Sequence[Readable], mono: Movable, energies: list[float], *, dwell_s: float = 1.0,
             md: dict[str, Any] | None = None):
    """Conventional step scan: count ``dwell_s`` seconds at each energy (eV) in the given order.
    Every energy is checked against the monochromator limits before any motion."""
    detectors, mono = detectors_then_motor(detectors, mono, "grid_xas")
    energies = [float(e) for e in np.atleast_1d(energies)]
    _check_range(mono, energies)
    if not dwell_s > 0:
        raise ValueError(f"dwell must be > 0 s, got {dwell_s!r}")
    plan_args = {"detectors": list(map(repr, detectors)), "mono": repr(mono), "energies": energies,
                 "dwell_s": float(dwell_s)}
    _md = start_md("grid_xas", detectors, [mono], plan_args, [_count_field(mono)], md=md,
                   num_points=len(energies), dwell_s=float(dwell_s))

    @bpp.run_decorator(md=_md)
    def inner():
        yield from _set_dwell(detectors, dwell_s)
        for e in energies:
            yield from bps.checkpoint()  # a pause or suspension replays from here: moved again, counted afresh
            yield from bps.mv(mono, e)
            yield from bps.trigger_and_read([mono, *detectors])
            yield from bps.checkpoint()

    return (yield from inner())
