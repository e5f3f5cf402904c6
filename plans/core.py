"""Plan helpers shared by the adaptive plans: the start document, readables for plan/agent state,
what is read with each count to prove it (``CountGuard``, ``RingWindow``, ``RunBeamtime``), waiting
for beam, and the one place the 0.1 calling conventions are still accepted (with a warning).

Pauses and suspensions: the adaptive plans put a checkpoint before each move, so bluesky's rewind
after a resume re-issues the move (and the beam wait) before counting again, whatever happened to
the devices meanwhile; a second checkpoint after each stored event keeps it from being replayed.

No ``from __future__ import annotations`` in ``plans/``: bluesky-queueserver validates plan
parameters from their real annotations.
"""

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.utils import FailedStatus
from ophyd.status import Status
from ophyd.utils import DisconnectedError, StatusTimeoutError, WaitTimeoutError

#: What a device reports when a move or count fails: the plans discard that measurement, not the run (a
#: disconnected device too: an IOC restarting costs the measurement in progress, not the run).
DEVICE_FAULTS = (FailedStatus, TimeoutError, StatusTimeoutError, WaitTimeoutError, DisconnectedError)


def _describe_value(value: Any, source: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"source": source, "dtype": "string", "shape": []}
    if isinstance(value, (bool, np.bool_)):
        return {"source": source, "dtype": "boolean", "shape": []}
    if isinstance(value, (int, np.integer)):
        return {"source": source, "dtype": "integer", "shape": [], "dtype_numpy": "<i8"}
    arr = np.asarray(value)
    if arr.ndim:
        return {"source": source, "dtype": "array", "shape": list(arr.shape), "dtype_numpy": arr.dtype.str}
    return {"source": source, "dtype": "number", "shape": [], "dtype_numpy": "<f8"}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


class ValuesReadable:
    """A bluesky Readable over a function returning a flat dict: how the agent's numbers and the
    plan's bookkeeping (cycle index, validity, stop reason) become fields of an event stream.
    The set of keys must not change within a run. ``hints``: the fields a live table or plot shows
    (the descriptor's ``hints``, as an ophyd device's hinted components); none by default, so
    bookkeeping never becomes a BestEffortCallback panel."""

    def __init__(self, name: str, values: Callable[[], Mapping[str, Any]], hints: Sequence[str] = ()):
        self.name = name
        self.parent = None
        self._values = values
        self.hints = {"fields": list(hints)}

    def read(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {k: {"value": _plain(v), "timestamp": now} for k, v in self._values().items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {k: _describe_value(v, f"agent:{self.name}") for k, v in self._values().items()}


def _done(obj) -> Status:
    status = Status(obj=obj)
    status.set_finished()
    return status


def readback_signal(positioner):
    """The signal holding ``positioner``'s readback: ``readback`` / ``user_readback`` (magnet, EpicsMotor)
    or its one hinted field (e.g. a simulated monochromator's ``energy``); ``None`` if it has neither."""
    for attr in ("readback", "user_readback"):
        sig = getattr(positioner, attr, None)
        if callable(getattr(sig, "get", None)):
            return sig
    fields = getattr(positioner, "hints", {}).get("fields", [])
    walk = getattr(positioner, "walk_signals", None)
    if len(fields) == 1 and walk is not None:
        for item in walk():
            if item.item.name == fields[0]:
                return item.item
    return None


class CountGuard:
    """Read with each count, first in ``trigger_and_read``'s list, so that the event stores what proves
    where ``positioner`` was: its readback at the count's start (``trigger``, just before the detectors
    are triggered) under ``before`` and at its end (``read``, right after they finished) under ``after``
    (in ``units``), both read afresh from the device (not a monitor's cache); a failed read stores NaN
    (no proof), never loses the count. ``interruptions``: pauses and suspensions of the run so far —
    the RunEngine calls ``pause()`` on every device it has seen — so a cycle whose spectra straddle one
    is known from its events alone (``interruptions=False``: a second guard in the same event leaves that
    key to the first). One instance per run."""

    def __init__(self, name: str, positioner, before: str, after: str, units: str = "", interruptions: bool = True):
        self.name, self.parent = name, None
        self.positioner, self.keys, self.units = positioner, (before, after), units
        self._reports_interruptions = interruptions
        self._signal = readback_signal(positioner)
        self.hints = {"fields": []}  # proof of the count, not the measurement: no live panel
        self.interruptions = 0
        self._before = (float("nan"), time.time())

    def _readback(self) -> float:
        try:
            if self._signal is None:
                return float(self.positioner.position)
            try:
                return float(self._signal.get(use_monitor=False))  # EPICS: a CA get, not the monitor's cache
            except TypeError:  # a signal whose get() takes no such option
                return float(self._signal.get())
        except Exception:  # an unreadable readback proves nothing; the count is still stored
            return float("nan")

    def trigger(self) -> Status:
        self._before = (self._readback(), time.time())
        return _done(self)

    def read(self) -> dict[str, dict[str, Any]]:
        (before, t0), now = self._before, time.time()
        reading = {self.keys[0]: {"value": before, "timestamp": t0},
                   self.keys[1]: {"value": self._readback(), "timestamp": now}}
        if self._reports_interruptions:
            reading["interruptions"] = {"value": self.interruptions, "timestamp": now}
        return reading

    def describe(self) -> dict[str, dict[str, Any]]:
        src = getattr(self._signal, "name", getattr(self.positioner, "name", "positioner"))
        d = {k: {"source": f"plan:{self.name} ({src} {when} the count)", "dtype": "number", "shape": [],
                 "dtype_numpy": "<f8", "units": self.units}
             for k, when in zip(self.keys, ("before", "after"), strict=True)}
        if self._reports_interruptions:
            d["interruptions"] = {"source": f"plan:{self.name} (pauses and suspensions so far)", "dtype": "integer",
                                  "shape": [], "dtype_numpy": "<i8"}
        return d

    def pause(self) -> None:
        self.interruptions += 1

    def resume(self) -> None:
        pass


def check_ring(ring) -> None:
    """Raise ``TypeError`` unless ``ring`` reports its minimum over a count window (``start_window()``
    and a ``minimum`` signal: ``sim_devices`` ``RingCurrent``, ``bayesbeam.epics_devices.EpicsRingCurrent``)."""
    if ring is not None and not (callable(getattr(ring, "start_window", None)) and hasattr(ring, "minimum")):
        raise TypeError(f"ring {getattr(ring, 'name', ring)!r} must report the minimum current over each count "
                        "(start_window() and a 'minimum' signal); one read at the count's end misses a dump "
                        "and refill during it")


def ring_spec(ring, beam_floor_ma: float) -> dict[str, Any]:
    """The ring part of a plan's ``validity`` entry: the stored keys of the minimum over the count
    (mA) and, if the ring reports it, of its monitor's longest silence (s) with the allowed maximum."""
    if ring is None:
        return {"ring_minimum": None}
    gap = getattr(ring, "gap_s", None)
    limit = getattr(ring, "max_gap_s", None)
    return {"ring_minimum": ring.minimum.name, "beam_floor_ma": float(beam_floor_ma),
            "ring_gap": gap.name if gap is not None else None,
            "max_gap_s": float(limit.get()) if limit is not None else None}


class RingWindow:
    """The ring read with a count (its keys, name and configuration): ``trigger`` opens the ring's
    count window (``ring.start_window()``, no beamtime passes), so the event read at the count's end
    stores the minimum over the count. Put it before the detectors in ``trigger_and_read``'s list.
    One instance per run."""

    def __init__(self, ring):
        check_ring(ring)
        self.ring, self.name, self.parent = ring, ring.name, None
        self.hints = {"fields": []}  # the ring read as proof of the count: no live panel

    def trigger(self) -> Status:
        self.ring.start_window()
        return _done(self)

    def read(self):
        return self.ring.read()

    def describe(self):
        return self.ring.describe()

    def read_configuration(self):
        return self.ring.read_configuration()

    def describe_configuration(self):
        return self.ring.describe_configuration()


class RunBeamtime:
    """Beamtime since the run's start (s), key ``<source name>``, from ``source`` (the simulated clock,
    or an IOC's beamtime PV, which is its uptime and restarts from 0): the first reading is the zero
    and each later one adds its increase over the previous one, so an IOC restart (the value going
    back) adds nothing instead of a jump. An unreadable source stores NaN (unknown), without losing
    the measurement read with it. Read it once right after ``open_run`` to set the zero."""

    def __init__(self, source):
        self.source, self.name, self.parent = source, source.name, None
        self.hints = {"fields": []}  # bookkeeping: the live views plot beamtime themselves
        self._last: float | None = None
        self._elapsed = 0.0

    def _raw(self) -> float:
        try:
            if callable(getattr(self.source, "get", None)):
                return float(self.source.get())
            (reading,) = self.source.read().values()
            return float(reading["value"])
        except Exception:  # a beamtime PV that does not answer: unknown, not fatal
            return float("nan")

    def read(self) -> dict[str, dict[str, Any]]:
        raw, now = self._raw(), time.time()
        if not np.isfinite(raw):
            return {self.name: {"value": float("nan"), "timestamp": now}}
        if self._last is not None:
            self._elapsed += max(0.0, raw - self._last)
        self._last = raw
        return {self.name: {"value": self._elapsed, "timestamp": now}}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"source": f"plan:beamtime since the run's start ({self.source.name})", "dtype": "number",
                            "shape": [], "dtype_numpy": "<f8", "units": "s"}}


def wait_for_beam(ring, floor_ma: float, poll_s: float = 1.0, max_wait_s: float = 6 * 3600.0,
                  trigger_first: bool = True):
    """Hold until the ring current reads at least ``floor_ma`` (mA). Each poll triggers the
    monitor (its averaging time passes) and sleeps ``poll_s`` (wall seconds). Returns the number
    of polls that found no beam; raises ``RuntimeError`` after ``max_wait_s`` seconds of polling.
    ``trigger_first=False``: read the current as it is first, and trigger only while there is no beam
    (no averaging time spent when the beam is there). The count's proof of beam is the ring's minimum
    stored with it, not this check."""
    polls = 0
    start = time.monotonic()
    while True:
        if trigger_first or polls:
            yield from bps.trigger(ring, wait=True)
        current = yield from bps.rd(ring)
        if current >= floor_ma:
            return polls
        polls += 1
        if time.monotonic() - start > max_wait_s:
            raise RuntimeError(f"no beam: ring current {current:.3g} mA below {floor_ma} mA for {max_wait_s} s")
        if poll_s > 0:
            yield from bps.sleep(poll_s)


def watched_fields(agent) -> list[str]:
    """The ``posterior`` fields the agent's stop rule watches, hinted in that stream: ``<q>_mean`` and
    ``<q>_std`` of a target-std or plateau quantity, ``rmse_pred`` of a target RMSE, ``model_prob_max`` of a
    model decision, ``kde_divergence`` and ``kde_threshold`` of SAXS's KDE rule (in the rule's order, each once)."""
    from agent.core.stopping import leaf_rules

    fields: list[str] = []
    for rule in leaf_rules(getattr(agent, "stop_rule", None)):
        name = type(rule).__name__
        if name in ("TargetStd", "Plateau"):
            fields.extend((f"{rule.quantity}_mean", f"{rule.quantity}_std"))
        elif name == "TargetRMSE":
            fields.append("rmse_pred")
        elif name == "ModelDecided":
            fields.append("model_prob_max")
        elif name == "KDEConverged":
            fields.extend(("kde_divergence", "kde_threshold"))
    return list(dict.fromkeys(fields))


def record_decision(agent, report: ValuesReadable, decision: dict[str, Any], **extra: Any):
    """Ask ``agent.should_stop()``, put its report and the decision into the ``posterior`` stream
    (one event), checkpoint, and return ``(stop, reason)``. ``extra``: more decision fields
    (e.g. the next cycle); ``report`` must read ``decision`` as part of its values."""
    stop, reason = agent.should_stop()
    decision.update(stop=bool(stop), stop_reason=reason or "", **extra)
    yield from bps.trigger_and_read([report], name="posterior")
    yield from bps.checkpoint()
    return stop, reason


def start_md(plan_name: str, detectors: Sequence, motors: Sequence, plan_args: Mapping[str, Any],
             dimensions: Sequence[str], agent=None, continue_from: str | None = None,
             md: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The start document's keys in bluesky's vocabulary (``plan_name``, ``plan_args``,
    ``detectors``, ``motors``, ``hints``), the agent's configuration, ``continue_from`` (uid of the
    stored run this one continues) when given, ``extra`` plan settings, then the caller's ``md``
    (which may carry ``agent_suggestion_uid``, bluesky-adaptive's key for a run an agent queued)."""
    _md: dict[str, Any] = {
        "plan_name": plan_name,
        "plan_args": dict(plan_args),
        "detectors": [d.name for d in detectors],
        "motors": [m.name for m in motors],
        "hints": {"dimensions": [[list(dimensions), "primary"]]},
        **extra,
    }
    if agent is not None:
        _md.update(agent=type(agent).__name__, stop_rule=repr(agent.stop_rule), quantities=list(agent.quantities))
        if callable(getattr(agent, "config", None)):
            _md["agent_config"] = agent.config()  # with stop_rule: the agent can be built again (resume)
    if continue_from is not None:
        if not isinstance(continue_from, str) or not continue_from:
            raise ValueError(f"continue_from must be the uid of a stored run, got {continue_from!r}")
        _md["continue_from"] = continue_from
    _md.update(md or {})
    return _md


def plan_agent(plan_name: str, agent: Any, continue_from: str | None, factory: Callable[..., Any],
               params: Mapping[str, Any]) -> tuple[Any, str | None]:
    """``(agent, continue_from)`` a plan runs with: ``agent`` itself (an object, as an IPython session passes
    it); else, with ``continue_from``, the stored run's agent rebuilt (``plans.registry.rebuilt_agent``: its
    stop rule and state) and that run's full uid; else a new one, ``factory(**params)`` with the parameters
    given (``None``: the factory's default), as a queued plan builds it from plain values. Giving both an
    agent and its parameters is an error."""
    given = {k: v for k, v in params.items() if v is not None}
    if agent is not None:
        if isinstance(agent, (str, bytes, int, float, Mapping, list)):
            raise TypeError(f"{plan_name}: agent must be an agent object (an IPython session's); over the queue give "
                            f"the agent's parameters instead ({', '.join(params)})")
        if given:
            raise ValueError(f"{plan_name}: give an agent or its parameters ({', '.join(given)}), not both")
        return agent, continue_from
    if continue_from is not None:
        if given:
            raise ValueError(f"{plan_name}: continue_from={continue_from!r} goes on with the stored run's agent and "
                             f"stop rule; its parameters ({', '.join(given)}) cannot be changed")
        from plans.registry import rebuilt_agent

        return rebuilt_agent(plan_name, continue_from)
    return factory(**given), None


def agent_arg(agent) -> str:
    """How an agent appears in ``plan_args``: its class and stop rule (an object cannot be stored)."""
    return f"{type(agent).__name__}({agent.stop_rule!r})"


def detector_list(detectors, plan: str) -> list:
    """``detectors`` as a list. A single device (the 0.1 convention) still works, with a warning."""
    if isinstance(detectors, (list, tuple)):
        return list(detectors)
    warnings.warn(f"{plan}: pass the detectors as a list, [{getattr(detectors, 'name', 'det')}]; a single "
                  "device goes in the next release", DeprecationWarning, stacklevel=3)
    return [detectors]


def device_list(detectors, plan: str) -> list:
    """``detectors`` as a list of devices: devices or their names (``plans.registry``); a single device (the 0.1
    convention) still works, with a warning (``detector_list``)."""
    from plans.registry import devices

    if isinstance(detectors, (str, list, tuple)):
        return devices(detectors, f"{plan} detectors")
    return detector_list(detectors, plan)


def plan_devices(plan: str, detectors, motor, ring, beamtime) -> tuple[list, Any, Any, Any]:
    """``(detectors, motor, ring, beamtime)`` of a plan as devices: each given as a device or a name
    (``plans.registry``); the ring and beamtime by the registry's rule for optional devices."""
    from plans.registry import device, optional_device

    detectors = device_list(detectors, plan)
    motor = device(motor, f"{plan} motor")
    measured_with = [*detectors, motor]
    return (detectors, motor, optional_device(ring, f"{plan} ring", "ring", measured_with),
            optional_device(beamtime, f"{plan} beamtime", "beamtime", measured_with))


def detectors_then_motor(detectors, motor, plan: str) -> tuple[list, Any]:
    """Accept the 0.1 order ``(motor, [detectors])`` with a warning; return ``(detectors, motor)``."""
    if not isinstance(detectors, (list, tuple)) and isinstance(motor, (list, tuple)):
        warnings.warn(f"{plan}(mono, detectors, ...) is the 0.1 order; bluesky's is {plan}(detectors, mono, ...), "
                      "the old order goes in the next release", DeprecationWarning, stacklevel=3)
        detectors, motor = motor, detectors
    return detector_list(detectors, plan), motor
