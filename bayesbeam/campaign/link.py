"""The campaign's line to the queue manager, kept through an outage (the manager restarted by its watchdog,
Redis restarting, a person restarting the stack).

A call that finds the manager not answering (a 0MQ request timeout) is retried with backoff (0.5 s doubling to
8 s) for up to ``lost_timeout_s`` of wall time, with one line when the manager is lost and one when it answers
again; then ``ManagerLost``. A refusal (the manager answered ``success: False``) is not an outage and is raised
at once. Queueing is idempotent: if the manager was lost while an item was being added, the request may have
arrived before the reply was lost, so the item is added again only if neither the queue, the running item nor
the history since the attempt holds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ManagerLost(RuntimeError):
    """The queue manager did not answer for ``lost_timeout_s``."""


def _is_outage(exc: BaseException) -> bool:
    from bluesky_queueserver_api.comm_base import RequestTimeoutError

    try:
        import zmq
    except ImportError:  # pragma: no cover - pyzmq is a dependency of the queue server
        return isinstance(exc, RequestTimeoutError)
    return isinstance(exc, RequestTimeoutError | zmq.ZMQError)


def _item_key(item: dict) -> tuple:
    """What identifies a campaign's queue item: its ``agent_suggestion_uid`` and what it continues from."""
    kwargs = item.get("kwargs") or {}
    return (kwargs.get("md") or {}).get("agent_suggestion_uid"), kwargs.get("continue_from")


class ManagerLink:
    """``api`` (an ``REManagerAPI``) with every method retried through a manager outage; ``add_once`` queues
    an item that must not be queued twice."""

    def __init__(self, api, *, echo: Callable[[str], None] = print, lost_timeout_s: float = 600.0,
                 where: str = "the queue manager"):
        self._api, self._echo, self.lost_timeout_s, self._where = api, echo, lost_timeout_s, where
        self.outages = 0  # how many times the manager was lost (and came back)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._api, name)
        if not callable(attribute) or name == "close":
            return attribute
        return lambda *args, **kwargs: self.call(attribute, *args, **kwargs)

    def call(self, method: Callable, *args, **kwargs):
        """``method(*args, **kwargs)``, retried while the manager does not answer."""
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            lost = exc
        self._lost(lost)
        return self.call(method, *args, **kwargs)

    def _lost(self, exc: BaseException) -> None:
        """Wait, with backoff, until the manager answers a status request again; ``ManagerLost`` after
        ``lost_timeout_s``."""
        started, wait = time.monotonic(), 0.5
        self.outages += 1
        self._echo(f"{self._where} is not answering ({type(exc).__name__}); retrying for up to "
                   f"{self.lost_timeout_s:g} s")
        while True:
            try:
                self._api.status(reload=True)
            except Exception as again:
                if not _is_outage(again):
                    raise
            else:
                self._echo(f"{self._where} answers again after {time.monotonic() - started:.0f} s")
                return
            if time.monotonic() - started + wait > self.lost_timeout_s:
                raise ManagerLost(f"{self._where} did not answer for {self.lost_timeout_s:g} s") from None
            time.sleep(wait)
            wait = min(2 * wait, 8.0)

    def holds(self, key: tuple, since: int) -> bool:
        """Whether an item of ``key`` is queued, running, or in the history after its first ``since`` items."""
        queue = self.call(self._api.queue_get)
        items = [*queue["items"], *([queue["running_item"]] if queue.get("running_item") else [])]
        items += self.call(self._api.history_get)["items"][since:]
        return any(_item_key(item) == key for item in items if item)

    def add_once(self, item) -> None:
        """Queue ``item`` (a ``BPlan``) unless the manager already holds it (see the module docstring)."""
        key = _item_key(item.to_dict())
        since = len(self.call(self._api.history_get)["items"])
        try:
            self._api.item_add(item)
            return
        except Exception as exc:
            if not _is_outage(exc):
                raise
            self._lost(exc)
        if not self.holds(key, since):
            self.add_once(item)
