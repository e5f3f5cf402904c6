"""The human gate of a campaign run with ``--review``: the campaign proposes, a person approves (possibly with
edits) or refuses each proposal, and nothing is queued without approval.

A proposal is a JSON file ``<state dir>/campaigns/<name>/proposal-<N>.json`` (``N`` = the decision number):
``{"n", "agent_suggestion_uid", "temperature_k", "target_std", "reason", "status": "proposed"}``. ``bayesbeam
campaign approve N [--temperature-k T] [--target-std S]`` sets ``status`` to ``approved`` (with the edits);
``bayesbeam campaign refuse N [--why TEXT]`` to ``refused``: the campaign then ends, with that reason (the
person takes over; run it again to carry on). Files are replaced atomically, so a reader never sees half of
one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bayesbeam.queue.stack import default_state_dir


class ReviewError(ValueError):
    """A proposal that does not exist or was already decided (one line)."""


def review_dir(name: str, state_dir: str | os.PathLike | None = None) -> Path:
    return Path(state_dir or default_state_dir()).expanduser() / "campaigns" / name


def _path(name: str, n: int, state_dir) -> Path:
    return review_dir(name, state_dir) / f"proposal-{int(n)}.json"


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def propose(name: str, decision: dict[str, Any], suggestion_uid: str, state_dir=None) -> Path:
    """Write the proposal of ``decision`` (a ``CurieCampaign`` decision) for review."""
    path = _path(name, decision["decision"], state_dir)
    _write(path, {"n": int(decision["decision"]), "agent_suggestion_uid": suggestion_uid,
                  "temperature_k": float(decision["temperature_k"]), "target_std": float(decision["target_std"]),
                  "reason": decision["reason"], "status": "proposed"})
    return path


def proposals(name: str, state_dir=None) -> list[dict[str, Any]]:
    """Every proposal of campaign ``name``, oldest first."""
    directory = review_dir(name, state_dir)
    found = [json.loads(p.read_text()) for p in directory.glob("proposal-*.json")] if directory.is_dir() else []
    return sorted(found, key=lambda p: p["n"])


def decide(name: str, n: int, status: str, state_dir=None, **edits: Any) -> dict[str, Any]:
    """Approve (``status="approved"``, with ``edits``: ``temperature_k``, ``target_std``) or refuse (``"refused"``,
    ``why``) proposal ``n``; ``ReviewError`` if there is no such open proposal."""
    path = _path(name, n, state_dir)
    if not path.exists():
        raise ReviewError(f"campaign {name!r} has no proposal {n} (in {path.parent})")
    data = json.loads(path.read_text())
    if data["status"] != "proposed":
        raise ReviewError(f"proposal {n} of campaign {name!r} is already {data['status']}")
    data.update({k: v for k, v in edits.items() if v is not None}, status=status, decided_at=time.time())
    _write(path, data)
    return data


def wait_for_decision(path: Path, poll_s: float = 0.5, timeout_s: float | None = None) -> dict[str, Any]:
    """The proposal at ``path`` once a person has approved or refused it."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        data = json.loads(path.read_text())
        if data["status"] != "proposed":
            return data
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"proposal {data['n']} not reviewed within {timeout_s:g} s")
        time.sleep(poll_s)
