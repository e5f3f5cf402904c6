"""Magnetic-Compton plans: one ``+ − − +`` flip cycle, and the adaptive run the agent stops.

Streams of the adaptive run: ``primary`` (one event per spectrum: the detector spectrum and
monitor, the magnet readback before and after the count (``field_before_t``, ``field_after_t``, T),
the ring current at the count's end and its minimum over the count (mA), the run's beamtime (s),
the cycle bookkeeping and ``interruptions``), ``cycles`` (one event per cycle: valid or discarded
and why, beamtime since the run's start), ``posterior`` (the agent's report after each cycle, with
the stop decision). The stop reason goes into the stop document's ``reason``. Whether a cycle is
used is decided from its stored spectra alone (``agent.feeders.cycle_problem``, whose keys and
thresholds the start document's ``validity`` entry holds); ``cycles`` records that decision.
"""

import itertools
import math
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable

from agent.compton import SpinMomentAgent, spin_moment_agent
from agent.feeders import COMPTON_RULE, ComptonFeeder, cycle_problem
from plans.core import (
    DEVICE_FAULTS,
    CountGuard,
    RingWindow,
    RunBeamtime,
    ValuesReadable,
    agent_arg,
    check_ring,
    detector_list,
    plan_agent,
    plan_devices,
    record_decision,
    ring_spec,
    start_md,
    wait_for_beam,
    watched_fields,
)
from plans.registry import device

FLIP_PATTERN = (1, -1, -1, 1)


class CycleInfo(ValuesReadable):
    """The plan's bookkeeping in each ``primary`` event: ``cycle`` number, ``flip`` index, ``field_sign``;
    and the other objects read with each spectrum (``count_readables``). One instance per run (bluesky
    requires the same objects in every event of a stream)."""

    def __init__(self):
        self.state = {"cycle": 0, "flip": 0, "field_sign": 0}
        super().__init__("cycle", lambda: self.state, hints=("cycle",))
        self._readables: tuple | None = None
        self._spec: dict[str, Any] | None = None

    def validity(self, det, field_t: float, tolerance_t: float, ring, beam_floor_ma: float,
                 pattern: Sequence[int], beamtime) -> dict[str, Any]:
        """This run's ``validity_spec``, made on first use: the detector's preset is read once per run, not
        before every cycle (a device read that could fail between a move and a count)."""
        if self._spec is None:
            self._spec = validity_spec(det, field_t, tolerance_t, ring, beam_floor_ma, pattern, beamtime)
            if self.temperature is not None:
                guard, target_k, tolerance_k = self.temperature
                self._spec["temperature"] = {"before": guard.keys[0], "after": guard.keys[1], "target_k": target_k,
                                             "tolerance_k": tolerance_k}
        return self._spec

    def count_readables(self, magnet, ring, beamtime) -> tuple:
        """``(guard, ring_window, beamtime)`` of this run, made on first use: the magnet readback before
        and after each count, the ring's window (``None`` without a ring), the run's beamtime."""
        if self._readables is None:
            bt = beamtime if beamtime is None or isinstance(beamtime, RunBeamtime) else RunBeamtime(beamtime)
            self._readables = (CountGuard("field", magnet, "field_before_t", "field_after_t", "T"),
                               RingWindow(ring) if ring is not None else None, bt)
        return self._readables

    def hold_temperature(self, sample_temp, target_k: float, tolerance_k: float) -> None:
        """Read the sample temperature before and after every count of this run (``temperature_before_k``,
        ``temperature_after_k``, K) and make it part of each spectrum's proof (``validity_spec``)."""
        self.temperature = (CountGuard("temperature", sample_temp, "temperature_before_k", "temperature_after_k",
                                       "K", interruptions=False), float(target_k), float(tolerance_k))

    temperature: tuple | None = None  # (guard, target K, tolerance K) of a run held at a sample temperature


def validity_spec(det, field_t: float, tolerance_t: float, ring, beam_floor_ma: float,
                  pattern: Sequence[int] = FLIP_PATTERN, beamtime=None) -> dict[str, Any]:
    """What proves a spectrum of this run (the start document's ``validity``, read by
    ``agent.feeders.cycle_problem``): stored keys and thresholds, field in T, current in mA, time in s."""
    preset = getattr(det, "preset_time", None)
    return {"rule": COMPTON_RULE, "detectors": [det.name], "spectrum": f"{det.name}_spectrum",
            "monitor": f"{det.name}_monitor", "field_t": float(field_t), "tolerance": float(tolerance_t), "unit": "T",
            "label": "magnet readback", "before": "field_before_t", "after": "field_after_t",
            "preset_s": float(preset.get()) if preset is not None else 0.0, "pattern": [int(p) for p in pattern],
            "beamtime": beamtime.name if beamtime is not None else None, **ring_spec(ring, beam_floor_ma)}


def flip_cycle(detectors: Sequence[Readable], magnet: Movable, field_t: float, *, cycle: int = 0,
               pattern: Sequence[int] = FLIP_PATTERN, tolerance_t: float = 0.05, ring: Readable | None = None,
               beam_floor_ma: float = 10.0, beam_poll_s: float = 1.0, info: CycleInfo | None = None,
               beamtime: Readable | None = None, interruptions: Any = None):
    """Measure one flip cycle: for each sign in ``pattern`` set the field to sign·``field_t`` (T),
    wait for beam (ring current ≥ ``beam_floor_ma`` mA, polled every ``beam_poll_s`` wall s), count
    ``detectors`` and read one ``primary`` event. ``detectors[0]`` is the Ge MCA (field
    ``<name>_spectrum``); the others are read with it. ``ring``: a ring that reports its minimum over
    each count (``plans.core.check_ring``). ``beamtime``: readable of elapsed beamtime (s), stored as
    beamtime since its first reading (``adaptive_compton`` takes that at the run's start; see
    ``plans.core.RunBeamtime``). ``info``: the run's ``CycleInfo`` (one per run).

    Returns ``(valid, reason)``, decided by ``agent.feeders.cycle_problem`` from the spectra's stored
    readings: the magnet readback before and after each count within ``tolerance_t`` (T) of the
    field, the ring's minimum during each count ≥ ``beam_floor_ma``, finite counts, a whole pattern
    with no pause or suspension between its spectra. Counting stops at the first spectrum that fails
    (or a device fault, or a magnet readback off the field after its move). A checkpoint precedes
    each move: after a pause or a suspension (beam dump) the RunEngine replays from there, so the
    field is set again before the interrupted spectrum is counted afresh; the cycle is then measured
    anew unless the interruption came before its first spectrum. ``interruptions``: no longer needed
    (pauses and suspensions are seen through bluesky's device ``pause()`` notification); ignored.
    """
    detectors = detector_list(detectors, "flip_cycle")
    det = detectors[0]
    info = info or CycleInfo()
    info.state["cycle"] = cycle
    guard, window, bt = info.count_readables(magnet, ring, beamtime)
    spec = info.validity(det, field_t, tolerance_t, ring, beam_floor_ma, pattern, bt)
    readables = [guard] + ([info.temperature[0]] if info.temperature else []) \
        + ([window] if window is not None else []) + [*detectors, magnet, info] + ([bt] if bt is not None else [])
    events: list[dict[str, Any]] = []
    for flip, sign in enumerate(pattern):
        target = sign * float(field_t)
        info.state.update(flip=flip, field_sign=sign)
        yield from bps.checkpoint()  # a resume replays from here: the field is set again before counting
        try:
            yield from bps.mv(magnet, target)
        except DEVICE_FAULTS as exc:
            return False, f"magnet failed moving to {target:+.3f} T ({type(exc).__name__}: {exc})"
        readback = yield from bps.rd(magnet)
        if not abs(readback - target) <= tolerance_t:
            return False, f"magnet readback {readback:+.3f} T did not reach {target:+.3f} T (flip {flip})"
        if ring is not None:
            yield from wait_for_beam(ring, beam_floor_ma, beam_poll_s)
        try:
            reading = yield from bps.trigger_and_read(readables)
        except DEVICE_FAULTS as exc:
            return False, f"detector fault on flip {flip} ({type(exc).__name__}: {exc})"
        yield from bps.checkpoint()  # never replay a saved event
        events.append({k: v["value"] for k, v in reading.items()})
        problem = cycle_problem(events, spec, complete=False)
        if problem:
            return False, problem
    problem = cycle_problem(events, spec)
    return not problem, problem


def adaptive_compton(detectors: Sequence[Readable] = ("ge",), magnet: Movable = "magnet",
                     agent: SpinMomentAgent | None = None, *, target_std: float | None = None,
                     quantity: str | None = None, max_cycles: int | None = None, element: str | None = None,
                     orbitals: list[str] | None = None, temperature_k: float | None = None,
                     sample_temp: Movable | None = "sample_temp", temperature_tolerance_k: float = 2.0,
                     field_t: float = 2.0, ring: Readable | None = "ring",
                     beam_floor_ma: float = 10.0, tolerance_t: float = 0.05, max_consecutive_failures: int = 3,
                     beam_poll_s: float = 1.0, beamtime: Readable | None = "beamtime", interruptions: Any = None,
                     continue_from: str | None = None, md: dict[str, Any] | None = None):
    """Flip cycles until the agent stops the run (target reached, plateau, budget …).

    ``detectors``: ``[ge]``, the Ge MCA first (see ``flip_cycle``); ``magnet``: the field (T). Devices or
    their names (resolved by ``plans.registry``; the defaults are the profiles' names). The agent: ``agent``,
    a ``SpinMomentAgent`` object (an IPython session's); or, as a queued plan gives it, its parameters:
    stop when std(``quantity``, default ``mu_s``) ≤ ``target_std`` (μB, default 0.01) or after
    ``max_cycles`` (default 136, the conventional measurement), for ``element`` (default Fe) with the
    ``orbitals`` (default 3d, 4s) (``agent.spin_moment_agent``); or, with ``continue_from`` and neither, the
    stored run's agent rebuilt from the catalog. It is fed through ``ComptonFeeder`` from this run's own
    documents, a cycle as soon as its last spectrum is stored and proven (so a cycle is never lost to a
    failure after it). ``temperature_k``: set the sample temperature (K) with ``sample_temp`` (a positioner
    or its name) before the first count and hold it: each spectrum counts only if the temperature readback
    before and after it is within ``temperature_tolerance_k`` (K) of it, as for the field; ``None`` (the
    default): the temperature is neither set nor checked. ``ring``: a ring that reports its minimum over
    each count (the simulated ``RingCurrent``, ``EpicsRingCurrent``); ``None``: the beam is not checked.
    ``continue_from``: uid of a stored run this one continues (recorded in the start document; an agent
    passed in carries that run's state, e.g. rebuilt with ``bayesbeam.resume.rebuild_agent``).
    ``beamtime``: readable of elapsed beamtime (s), e.g. the simulated clock or an IOC's beamtime PV; stored
    (``primary`` ``beamtime``, ``cycles`` ``beamtime_s``) and given to the agent as beamtime since this run's
    start (without one,
    wall time since the start). ``interruptions``: ignored (see ``flip_cycle``). A discarded cycle is not
    mixed into the posterior and is said so in the ``cycles`` stream; ``max_consecutive_failures``
    discarded cycles in a row abort the run (what was counted stays in the catalog).
    """
    detectors, magnet, ring, beamtime = plan_devices("adaptive_compton", detectors, magnet, ring, beamtime)
    params = {"target_std": target_std, "quantity": quantity, "max_cycles": max_cycles, "element": element,
              "orbitals": orbitals}
    agent, continue_from = plan_agent("adaptive_compton", agent, continue_from, spin_moment_agent, params)
    info = CycleInfo()
    if temperature_k is not None:
        sample_temp = device(sample_temp, "adaptive_compton sample_temp")
        lo, hi = getattr(sample_temp, "limits", (-float("inf"), float("inf")))
        if not (math.isfinite(temperature_k) and (lo >= hi or lo <= temperature_k <= hi)):
            raise ValueError(f"temperature {temperature_k!r} K outside the sample temperature range {lo:g}-{hi:g} K")
        if not temperature_tolerance_k > 0:
            raise ValueError(f"temperature tolerance must be > 0 K, got {temperature_tolerance_k!r}")
        info.hold_temperature(sample_temp, temperature_k, temperature_tolerance_k)
    det = detectors[0]
    if not field_t > 0:
        raise ValueError(f"field must be positive, got {field_t!r} T")
    limit = getattr(getattr(magnet, "max_field_t", None), "get", lambda: None)()
    if limit is not None and field_t > limit:
        raise ValueError(f"field {field_t} T exceeds the magnet's limit {limit} T")
    if int(max_consecutive_failures) < 1:
        raise ValueError("max_consecutive_failures must be >= 1")
    check_ring(ring)
    plan_args = {"detectors": list(map(repr, detectors)), "magnet": repr(magnet), "agent": agent_arg(agent), **params,
                 "field_t": field_t, "ring": repr(ring) if ring is not None else None, "beam_floor_ma": beam_floor_ma,
                 "tolerance_t": tolerance_t, "max_consecutive_failures": max_consecutive_failures,
                 "beam_poll_s": beam_poll_s, "continue_from": continue_from, "temperature_k": temperature_k,
                 "sample_temp": repr(sample_temp) if temperature_k is not None else None,
                 "temperature_tolerance_k": temperature_tolerance_k}
    _, _, run_bt = info.count_readables(magnet, ring, beamtime)
    _md = start_md("adaptive_compton", detectors, [magnet], plan_args, ["cycle"], agent=agent,
                   continue_from=continue_from, md=md, field_t=field_t, flip_pattern=list(FLIP_PATTERN),
                   **({"sample_temperature_k": float(temperature_k)} if temperature_k is not None else {}),
                   validity=info.validity(det, field_t, tolerance_t, ring, beam_floor_ma, FLIP_PATTERN, run_bt))
    cycle_state: dict[str, Any] = {"cycle": 0, "valid": True, "reason": "", "beamtime_s": 0.0, "count_time_s": 0.0}
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "next_cycle": 1}
    status = ValuesReadable("cycles", lambda: cycle_state)
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision}, hints=watched_fields(agent))
    count_time = float(det.preset_time.get()) if hasattr(det, "preset_time") else 0.0

    def run():
        yield from bps.open_run(md=_md)
        if run_bt is not None:
            yield from bps.rd(run_bt)  # the zero of the run's beamtime
        if info.temperature is not None:
            yield from bps.checkpoint()
            yield from bps.mv(info.temperature[0].positioner, temperature_k)  # its settle time is the run's
        failures, reason = 0, None
        for cycle in itertools.count(1):
            valid, why = yield from flip_cycle(detectors, magnet, field_t, cycle=cycle, tolerance_t=tolerance_t,
                                               ring=ring, beam_floor_ma=beam_floor_ma, beam_poll_s=beam_poll_s,
                                               info=info, beamtime=run_bt)
            bt = (yield from bps.rd(run_bt)) if run_bt is not None else float("nan")  # never raises: NaN
            cycle_state.update(cycle=cycle, valid=valid, reason=why, beamtime_s=float(bt),
                               count_time_s=len(FLIP_PATTERN) * count_time)
            yield from bps.trigger_and_read([status], name="cycles")  # bookkeeping: the feeder has decided
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
