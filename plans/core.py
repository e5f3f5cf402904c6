"""Plan helpers shared by the adaptive plans: the start document, readables for plan/agent state,
waiting for beam, and the one place the 0.1 calling conventions are still accepted (with a warning).

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
from ophyd.utils import StatusTimeoutError, WaitTimeoutError

#: What a device reports when a move or count fails: the plans discard that measurement, not the run.
DEVICE_FAULTS = (FailedStatus, TimeoutError, StatusTimeoutError, WaitTimeoutError)


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
    The set of keys must not change within a run."""

    def __init__(self, name: str, values: Callable[[], Mapping[str, Any]]):
        self.name = name
        self.parent = None
        self._values = values

    def read(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {k: {"value": _plain(v), "timestamp": now} for k, v in self._values().items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {k: _describe_value(v, f"agent:{self.name}") for k, v in self._values().items()}


def wait_for_beam(ring, floor_ma: float, poll_s: float = 1.0, max_wait_s: float = 6 * 3600.0):
    """Hold until the ring current reads at least ``floor_ma`` (mA). Each poll triggers the
    monitor (its averaging time passes) and sleeps ``poll_s`` (wall seconds). Returns the number
    of polls that found no beam; raises ``RuntimeError`` after ``max_wait_s`` seconds of polling."""
    polls = 0
    start = time.monotonic()
    while True:
        yield from bps.trigger(ring, wait=True)
        current = yield from bps.rd(ring)
        if current >= floor_ma:
            return polls
        polls += 1
        if time.monotonic() - start > max_wait_s:
            raise RuntimeError(f"no beam: ring current {current:.3g} mA below {floor_ma} mA for {max_wait_s} s")
        if poll_s > 0:
            yield from bps.sleep(poll_s)


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
    if continue_from is not None:
        if not isinstance(continue_from, str) or not continue_from:
            raise ValueError(f"continue_from must be the uid of a stored run, got {continue_from!r}")
        _md["continue_from"] = continue_from
    _md.update(md or {})
    return _md


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


def detectors_then_motor(detectors, motor, plan: str) -> tuple[list, Any]:
    """Accept the 0.1 order ``(motor, [detectors])`` with a warning; return ``(detectors, motor)``."""
    if not isinstance(detectors, (list, tuple)) and isinstance(motor, (list, tuple)):
        warnings.warn(f"{plan}(mono, detectors, ...) is the 0.1 order; bluesky's is {plan}(detectors, mono, ...), "
                      "the old order goes in the next release", DeprecationWarning, stacklevel=3)
        detectors, motor = motor, detectors
    return detector_list(detectors, plan), motor
