"""Fault injection shared by the simulated devices: a queue of failure modes for the next operations,
and what is armed (a session says so at start: an armed fault must never surprise the next run)."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby


class FaultQueue:
    """The next operations (counts, moves) of one device fail in the queued modes, in order."""

    def __init__(self, device: str, modes: tuple[str, ...]):
        self.device, self.modes = device, modes
        self._queue: list[str | None] = []

    def add(self, mode: str, n: int = 1, after: int = 0) -> None:
        """Queue ``n`` failures of ``mode`` after ``after`` good operations; unknown modes raise ValueError."""
        if mode not in self.modes:
            raise ValueError(f"unknown {self.device} failure mode {mode!r} (known: {', '.join(self.modes)})")
        self._queue.extend([None] * int(after) + [mode] * int(n))

    def pop(self) -> str | None:
        """The failure mode of the operation starting now (None: it succeeds)."""
        return self._queue.pop(0) if self._queue else None

    def clear(self) -> None:
        """Disarm every queued failure."""
        self._queue.clear()

    def describe(self) -> list[str]:
        """What is armed, in order: e.g. ``["17 × stuck after 2 good operations"]`` (empty: nothing)."""
        out, good = [], 0
        for mode, run in groupby(self._queue):
            n = len(list(run))
            if mode is None:
                good += n
                continue
            out.append(f"{n} × {mode}" + (f" after {good} good operation{'s' if good != 1 else ''}" if good else ""))
            good = 0
        return out


def armed_faults(devices: Mapping[str, object]) -> list[str]:
    """One line per device whose fault queue is not empty: ``"<name>: 17 × stuck after 2 good operations"``."""
    lines = []
    for name, dev in devices.items():
        queue = getattr(dev, "_faults", None)
        if isinstance(queue, FaultQueue):
            lines += [f"{name}: {d}" for d in queue.describe()]
    return lines
