"""Composable stopping rules (DESIGN §3).

A rule looks at the agent's history, the list of flat ``report()`` dicts recorded after each
update (oldest first), and returns a reason string when the run should stop, else ``None``.
Reasons name the rule so that the stop document says *why* a run ended.

Report keys the rules read: ``"<q>_std"`` for a quantity ``q`` (same unit as the quantity),
``"cycles"``/``"points"`` (counts of ingested measurements), ``"beamtime_s"`` (seconds of
beamtime) and ``"model_prob_max"`` (posterior probability of the leading model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.core.words import plain, suggestion

History = Sequence[Mapping[str, float]]


class StopRule:
    """Base class: ``check(history) -> reason | None``; ``quantities`` it needs from the agent;
    ``watching``: what the rule is, in a message (``"the target std"``)."""

    quantities: tuple[str, ...] = ()
    watching = "a stop rule"

    def check(self, history: History) -> str | None:
        raise NotImplementedError

    def validate(self, available: Iterable[str]) -> None:
        """Raise ``ValueError`` before anything moves if a watched quantity does not exist."""
        available = tuple(available)
        for q in self.quantities:
            if q not in available:
                close = suggestion(q, available)
                reports = f"this agent reports {', '.join(available)}"
                raise ValueError(f"unknown quantity {q!r} for {self.watching}; "
                                 + (f"{close} ({reports})" if close.startswith("did") else reports))

    def __or__(self, other: StopRule) -> StopRule:
        return any_of(self, other)

    def __and__(self, other: StopRule) -> StopRule:
        return all_of(self, other)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {plain(value)}")
    return value


@dataclass(frozen=True)
class TargetStd(StopRule):
    """Stop when the posterior std of ``quantity`` is at or below ``target`` (quantity's unit)."""

    quantity: str
    target: float
    watching = "the target std"

    def __post_init__(self):
        _positive("target std", self.target)
        object.__setattr__(self, "quantities", (self.quantity,))

    def check(self, history: History) -> str | None:
        if not history:
            return None
        std = history[-1][f"{self.quantity}_std"]
        if std <= self.target:
            return f"target_std: std({self.quantity}) = {std:.4g} <= {self.target:.4g}"
        return None


@dataclass(frozen=True)
class Plateau(StopRule):
    """Stop when the std of ``quantity`` improved by less than ``rel`` (fraction) over the last
    ``k`` updates: more counting no longer helps, the model limits the precision."""

    quantity: str
    k: int = 5
    rel: float = 0.05
    min_updates: int = 2
    watching = "the plateau rule"

    def __post_init__(self):
        if int(self.k) < 1:
            raise ValueError(f"plateau window k must be >= 1, got {plain(self.k)}")
        _positive("plateau relative improvement", self.rel)
        object.__setattr__(self, "quantities", (self.quantity,))

    def check(self, history: History) -> str | None:
        if len(history) < max(self.k + 1, self.min_updates):
            return None
        key = f"{self.quantity}_std"
        old, new = history[-1 - self.k][key], history[-1][key]
        improvement = (old - new) / old if old > 0 else 0.0
        if improvement < self.rel:
            return (
                f"plateau: std({self.quantity}) improved {100 * improvement:.1f} % over the last "
                f"{self.k} updates (< {100 * self.rel:.1f} %)"
            )
        return None


@dataclass(frozen=True)
class Budget(StopRule):
    """Stop when any given budget is spent: ``cycles``, ``points``, ``runs`` (a campaign's) or ``beamtime_s``
    (seconds)."""

    cycles: int | None = None
    points: int | None = None
    beamtime_s: float | None = None
    runs: int | None = None

    def __post_init__(self):
        for name in ("cycles", "points", "runs"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"budget {name} must be >= 1, got {plain(v)}")
        if self.beamtime_s is not None:
            _positive("budget beamtime_s", self.beamtime_s)

    def check(self, history: History) -> str | None:
        if not history:
            return None
        last = history[-1]
        for key, limit in (("cycles", self.cycles), ("points", self.points), ("runs", self.runs),
                           ("beamtime_s", self.beamtime_s)):
            if limit is not None and last.get(key, 0) >= limit:
                return f"budget: {key} = {last[key]:.6g} reached the limit {limit:.6g}"
        return None


@dataclass(frozen=True)
class ModelDecided(StopRule):
    """Stop when the leading model's posterior probability ``model_prob_max`` reaches ``p``. Checked after
    every update, the decision is wrong with probability ≤ (1 − p)/p when the probabilities are those of
    ``agent.core.model_decision.model_probabilities`` (Ville's inequality; Monte-Carlo error spent over the
    looks) and the data come from one of the two models."""

    p: float = 0.99

    def __post_init__(self):
        if not 0 < self.p < 1:
            raise ValueError(f"model probability threshold must be in (0, 1), got {plain(self.p)}")

    def check(self, history: History) -> str | None:
        if not history or "model_prob_max" not in history[-1]:
            return None
        prob = history[-1]["model_prob_max"]
        if prob >= self.p:
            best = history[-1].get("model_best", "leading model")
            return f"model_decided: P({best}) = {prob:.4f} >= {self.p}"
        return None


class _Combined(StopRule):
    def __init__(self, *rules: StopRule):
        if not rules:
            raise ValueError(f"{type(self).__name__} needs at least one rule")
        self.rules = tuple(rules)
        self.quantities = tuple(q for r in rules for q in r.quantities)

    def validate(self, available: Iterable[str]) -> None:
        available = tuple(available)
        for r in self.rules:
            r.validate(available)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(map(repr, self.rules))})"


def leaf_rules(rule: StopRule | None) -> list[StopRule]:
    """The single rules of ``rule`` in order, ``any_of``/``all_of`` opened (``[]`` for ``None``): what a live
    table or plot reads the watched quantities and targets from."""
    if rule is None:
        return []
    inner = getattr(rule, "rules", None)
    return [leaf for r in inner for leaf in leaf_rules(r)] if inner is not None else [rule]


class any_of(_Combined):  # noqa: N801 - reads as a function in user code
    """Stop as soon as one of the rules says stop; the reason is that rule's."""

    def check(self, history: History) -> str | None:
        for r in self.rules:
            reason = r.check(history)
            if reason is not None:
                return reason
        return None


class all_of(_Combined):  # noqa: N801
    """Stop only when every rule says stop; the reason joins theirs."""

    def check(self, history: History) -> str | None:
        reasons = [r.check(history) for r in self.rules]
        if all(reason is not None for reason in reasons):
            return " and ".join(reasons)
        return None


def crossing_time(times, stds, target: float) -> float:
    """Time (the units of ``times``) at which a std first reaches ``target``, interpolated between the two
    updates around the crossing with the precision 1/std² linear in time (counting statistics: precision
    grows as the time spent), from zero precision at time 0 for a first update already below; nan if it
    never does."""
    times, stds = np.asarray(times, dtype=float), np.asarray(stds, dtype=float)
    below = np.flatnonzero(stds <= target)
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    t0, p0 = (times[i - 1], stds[i - 1] ** -2) if i > 0 else (0.0, 0.0)
    t1, p1 = times[i], stds[i] ** -2
    return float(t0 + (target**-2 - p0) / (p1 - p0) * (t1 - t0)) if p1 > p0 else float(t1)
