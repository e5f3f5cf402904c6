"""Plan helpers shared by the adaptive plans: readables for plan/agent state, waiting for beam."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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
    Keys are ``prefix + key``; the set of keys must not change within a run."""

    def __init__(self, name: str, values: Callable[[], Mapping[str, Any]], prefix: str = ""):
        self.name = name
        self.parent = None
        self._values = values
        self._prefix = prefix

    def read(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {f"{self._prefix}{k}": {"value": _plain(v), "timestamp": now} for k, v in self._values().items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {f"{self._prefix}{k}": _describe_value(v, f"agent:{self.name}") for k, v in self._values().items()}


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
