"""Protocol plumbing shared by every agent (DESIGN §3), free of bluesky imports.

Agents speak bluesky-adaptive 1.0 structurally: ``suggest(num_points)``, ``ingest(points)`` (and their
older names ``ask``, ``tell``),
``get_best_points()``, ``should_stop() -> (bool, reason)``, ``checkpoint()``; plus ours,
``posterior()`` and ``report()`` (a flat dict of numbers, recorded after every update in
``history`` so the stop rules and the run's ``posterior`` stream see the same values).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.stopping import StopRule

ID_KEY = "_id"


class BayesAgent:
    """Base class. Subclasses set ``quantities`` and implement ``_ingest_one``, ``suggest``,
    ``posterior``, ``_summary`` (the numbers of ``report``) and ``state``/``load_state``."""

    quantities: tuple[str, ...] = ()

    def __init__(self, stop_rule: StopRule, checkpoint_path: str | os.PathLike | None = None):
        if not isinstance(stop_rule, StopRule):
            raise TypeError(f"stop_rule must be a StopRule, got {type(stop_rule).__name__}")
        stop_rule.validate(self.quantities)
        self.stop_rule = stop_rule
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.history: list[dict[str, Any]] = []
        self.failures: list[Mapping] = []
        self._stop_reason: str | None = None

    def config(self) -> dict[str, Any]:
        """The agent's settings as JSON values, recorded in a run's start document as ``agent_config``: with
        the stop rule, what ``from_config`` needs to build the same agent again (to continue a stored run)."""
        return {}

    @classmethod
    def from_config(cls, stop_rule: StopRule, config: Mapping[str, Any]) -> BayesAgent:
        """A new agent with ``stop_rule`` and the settings ``config`` (a ``config()`` of this class)."""
        return cls(stop_rule, **config)

    def ingest(self, points: Sequence[Mapping]) -> None:
        """Update the posterior with measured outcomes, one dict per measurement (with ``_id``)."""
        for point in points:
            self._ingest_one(point)
            self.history.append(self.report())

    def register_failures(self, suggestions: Sequence[Mapping]) -> None:
        """bluesky-adaptive ``TrialFaultAware``: remember measurements that were discarded."""
        self.failures.extend(dict(s) for s in suggestions)

    def should_stop(self) -> tuple[bool, str | None]:
        """``SupportsStoppingCriteria``: (stop, reason naming the rule)."""
        self._stop_reason = self.stop_rule.check(self.history)
        return self._stop_reason is not None, self._stop_reason

    def report(self) -> dict[str, Any]:
        """Flat dict of the numbers recorded in the run after each update (DESIGN §6)."""
        return dict(self._summary())

    def tell(self, points: Sequence[Mapping]) -> None:
        """bluesky-adaptive's older name for ``ingest``."""
        self.ingest(points)

    def ask(self, num_points: int = 1) -> list[dict[str, Any]]:
        """bluesky-adaptive's older name for ``suggest``."""
        return self.suggest(num_points)

    def get_best_points(self) -> list[dict[str, Any]]:
        """Posterior means of the quantities: the 'best point' of an estimation agent."""
        rep = self.report()
        return [{q: rep[f"{q}_mean"] for q in self.quantities if f"{q}_mean" in rep}]

    # -- Checkpointable ---------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write the state (arrays + history) to ``checkpoint_path`` (npz) atomically."""
        if self.checkpoint_path is None:
            return
        arrays, meta = self.state()
        meta = {**meta, "history": self.history, "failures": self.failures}
        tmp = self.checkpoint_path.with_suffix(".tmp.npz")
        np.savez(tmp, _meta=np.array(json.dumps(meta, default=float)), **arrays)
        os.replace(tmp, self.checkpoint_path)

    def restore(self, path: str | os.PathLike | None = None) -> None:
        """Load a state written by ``checkpoint``."""
        with np.load(Path(path or self.checkpoint_path)) as f:
            meta = json.loads(str(f["_meta"]))
            arrays = {k: f[k] for k in f.files if k != "_meta"}
        self.history = meta.pop("history")
        self.failures = meta.pop("failures")
        self.load_state(arrays, meta)

    # -- subclass hooks ------------------------------------------------------------------------
    def _ingest_one(self, point: Mapping) -> None:
        raise NotImplementedError

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        raise NotImplementedError

    def posterior(self):
        raise NotImplementedError

    def _summary(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        raise NotImplementedError
