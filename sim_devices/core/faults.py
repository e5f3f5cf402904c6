"""Fault injection shared by the simulated devices: a queue of failure modes for the next operations."""

from __future__ import annotations


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
