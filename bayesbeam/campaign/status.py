"""What the control room's status page shows, gathered read-only as one plain JSON-able dict (``gather``).

Three parts, each failing soft on its own (an ``error`` line instead of the part, never an exception):

- ``manager``, ``queue``, ``running_item``, ``history``: the queue manager (``REManagerAPI.status``,
  ``queue_get``, ``history_get``; ``answers: False`` and "manager not answering at ADDR" if it does not);
- ``running_run``: the run the running plan has open (``re_runs("open")``; without a manager answer, the
  campaign's latest run that ``run_status`` says is running), from the catalog: uid, plan, cycles so far and
  its last posterior row, each watched quantity (the start document's ``TargetStd`` rules) as mean ± std
  against its target;
- ``campaign``: the campaign's latest record run (``plan_name="campaign"``): T_c mean ± std (K) after the last
  run learnt against the target, the observations, and every decision (chosen temperature K and target std
  μB, expected cost s, std(T_c) before and expected after K, reason, review, the best candidates by score),
  following ``continue_from`` back through earlier records of a restarted campaign.

Non-finite numbers become ``None`` (JSON has no NaN); nothing here writes to the manager or the catalog.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from bayesbeam.catalog import one_line

TOP_CANDIDATES = 5  # candidates per decision shown, best score first
HISTORY_ITEMS = 5  # finished queue items shown, newest first
MAX_RECORDS = 20  # earlier records of a restarted campaign followed back (continue_from)


def _num(value: Any) -> float | None:
    """A finite float, else ``None``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _brief(value: Any, limit: int = 160) -> str:
    """Plan parameters as one short line (``md`` left out: it is shown apart)."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "md")
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the queue ------------------------------------------------------------------------------------------
def _item(item: dict | None) -> dict | None:
    if not item:
        return None
    kwargs = item.get("kwargs") or {}
    md = kwargs.get("md") or {}
    result = item.get("result") or {}
    out = {"item_uid": item.get("item_uid"), "name": item.get("name"), "item_type": item.get("item_type"),
           "args": _brief(item.get("args") or [], 80) if item.get("args") else "", "params": _brief(kwargs),
           "user": item.get("user"), "campaign": md.get("campaign"),
           "agent_suggestion_uid": md.get("agent_suggestion_uid")}
    if result:
        out.update(exit_status=result.get("exit_status"), msg=_brief(result.get("msg") or "", 200).strip("'\""),
                   run_uids=list(result.get("run_uids") or []), time_stop=_num(result.get("time_stop")))
    return out


def queue_status(api, control_addr: str = "") -> dict[str, Any]:
    """The manager's state, the queue, the running item and the last finished items; ``{"answers": False}``
    with a one-line ``error`` if the manager does not answer (its timeout: the api's ``timeout_recv``)."""
    try:
        st = api.status(reload=True)
    except Exception as exc:  # RequestTimeoutError, 0MQ errors: not answering is the answer
        where = f" at {control_addr}" if control_addr else ""
        return {"manager": {"answers": False, "control_addr": control_addr,
                            "error": f"manager not answering{where} ({one_line(exc)})"},
                "queue": [], "running_item": None, "history": [], "open_runs": []}
    manager = {"answers": True, "control_addr": control_addr, "state": st.get("manager_state"),
               "re_state": st.get("re_state"), "environment": bool(st.get("worker_environment_exists")),
               "items_in_queue": st.get("items_in_queue"), "items_in_history": st.get("items_in_history"),
               "queue_stop_pending": bool(st.get("queue_stop_pending")), "msg": st.get("msg") or ""}
    out: dict[str, Any] = {"manager": manager, "queue": [], "running_item": None, "history": [], "open_runs": []}
    try:
        queue = api.queue_get()
        out["queue"] = [_item(i) for i in queue.get("items") or []]
        out["running_item"] = _item(queue.get("running_item"))
        out["history"] = [_item(i) for i in reversed((api.history_get().get("items") or [])[-HISTORY_ITEMS:])]
        if out["running_item"]:
            out["open_runs"] = [r["uid"] for r in api.re_runs(option="open").get("run_list") or []]
    except Exception as exc:
        manager["error"] = f"manager answered its status but not the queue ({one_line(exc)})"
    return out


# -- a run and its posterior -------------------------------------------------------------------------------
def watched(stop_rule: str) -> tuple[dict[str, float], dict[str, float | None]]:
    """From a stop rule's repr (``bayesbeam.live.base.stop_targets``): ``{quantity: target std}`` of its
    ``TargetStd`` rules, and its budget (``cycles``, ``points``, ``runs``, ``beamtime_s``; ``None`` where not
    limited)."""
    from bayesbeam.live.base import stop_targets

    found = stop_targets(stop_rule)
    targets = {k[:-4]: v for k, v in found.items() if k.endswith("_std")}
    budget = {key: found.get(f"budget_{key}") for key in ("cycles", "points", "runs", "beamtime_s")}
    return targets, budget


def _last_row(run, stream: str) -> tuple[dict[str, Any], int]:
    """The last complete event of ``stream`` as plain values, and how many there are (``({}, 0)`` if none)."""
    try:
        data = run[stream].read()
    except KeyError:
        return {}, 0
    n = int(data.sizes.get("time", 0))
    if n == 0:
        return {}, 0
    row = {}
    for key in data.data_vars:
        value = data[key].values[-1]
        row[key] = value.item() if isinstance(value, np.generic) else value
    return row, n


def run_summary(run) -> dict[str, Any]:
    """A run as the page shows it: uid, plan, status (``bayesbeam.catalog.run_status``), its campaign and
    temperature (K), steps so far, and each watched quantity's last posterior mean ± std against its target."""
    from bayesbeam.catalog import run_status

    start = run.metadata.get("start") or {}
    stop = run.metadata.get("stop") or {}
    targets, budget = watched(str(start.get("stop_rule") or ""))
    row, events = _last_row(run, "posterior")
    steps = next((k for k in ("cycles", "points", "sweeps", "frames") if k in row), None)
    quantities = []
    for q in targets or dict.fromkeys(start.get("quantities") or []):
        mean, std, target = _num(row.get(f"{q}_mean")), _num(row.get(f"{q}_std")), targets.get(q)
        quantities.append({"quantity": q, "mean": mean, "std": std, "target": target,
                           "reached": bool(std is not None and target is not None and std <= target)})
    return {"uid": start.get("uid"), "scan_id": start.get("scan_id"), "plan_name": start.get("plan_name"),
            "sample": start.get("sample"), "campaign": start.get("campaign"),
            "agent_suggestion_uid": start.get("agent_suggestion_uid"), "status": run_status(run),
            "temperature_k": _num(start.get("sample_temperature_k")), "started": _num(start.get("time")),
            "updates": events, "steps_name": steps or "updates", "steps": _num(row[steps]) if steps else events,
            "budget": budget.get(steps) if steps else None, "quantities": quantities,
            "stop_reason": stop.get("reason") or row.get("stop_reason") or "", "exit_status": stop.get("exit_status")}


def running_run(catalog, open_runs: list[str], campaign: str | None, manager_answers: bool) -> dict | None:
    """The run the running plan has open (the last of ``open_runs``); with no manager answer, the campaign's
    latest run if the catalog says it is running; ``None`` if none."""
    from bayesbeam.catalog import find_runs, run_status

    if open_runs:
        return run_summary(catalog[open_runs[-1]])
    if manager_answers or not campaign:
        return None
    found = find_runs(catalog, campaign=campaign)
    for run in reversed(list(found.values())[-3:]):
        if run.metadata["start"].get("plan_name") != "campaign" and run_status(run) == "running":
            return run_summary(run)
    return None


# -- the campaign -------------------------------------------------------------------------------------------
def _rows(run, stream: str) -> list[dict[str, Any]]:
    try:
        data = run[stream].read()
    except KeyError:
        return []
    n = int(data.sizes.get("time", 0))
    columns = {k: data[k].values for k in data.data_vars}
    rows = []
    for i in range(n):
        rows.append({k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in columns.items()})
    return rows


def decision_summary(row: dict[str, Any], record_uid: str) -> dict[str, Any]:
    """One decision of the ``decisions`` stream: what was chosen and why, and the best ``TOP_CANDIDATES``."""
    score = np.asarray(row.get("score", []), float)
    best = np.argsort(-np.where(np.isfinite(score), score, -np.inf))[:TOP_CANDIDATES] if score.size else []
    temps, stds, gains, costs = (np.asarray(row.get(k, []), float) for k in (
        "candidate_temperature_k", "candidate_target_std", "gain_k2", "cost_s"))
    top = [{"temperature_k": _num(temps[i]), "target_std": _num(stds[i]), "gain_k2": _num(gains[i]),
            "cost_s": _num(costs[i]), "score": _num(score[i])} for i in best]
    return {"record_uid": record_uid, "decision": int(row.get("decision", 0)),
            "temperature_k": _num(row.get("temperature_k")), "target_std": _num(row.get("target_std")),
            "queued_temperature_k": _num(row.get("queued_temperature_k")),
            "queued_target_std": _num(row.get("queued_target_std")),
            "expected_cycles": _num(row.get("expected_cycles")), "expected_cost_s": _num(row.get("expected_cost_s")),
            "tc_std_now": _num(row.get("tc_std_now")), "expected_tc_std_after": _num(row.get("expected_tc_std_after")),
            "reason": str(row.get("reason", "")), "review": str(row.get("review", "none")),
            "review_note": str(row.get("review_note", "")), "agent_suggestion_uid": row.get("agent_suggestion_uid"),
            "candidates": int(score.size), "top": top}


def campaign_status(catalog, name: str, target_tc_std_k: float | None = None,
                    memo: dict[str, list] | None = None) -> dict[str, Any] | None:
    """The campaign ``name`` from its latest record in ``catalog`` (``None`` if it has none yet). ``memo``: the
    decisions of earlier records by uid, kept between calls (a record that is not the latest no longer changes)."""
    from bayesbeam.catalog import find_runs, run_status

    records = list(find_runs(catalog, campaign=name, plan_name="campaign").values())
    if not records:
        return None
    latest = records[-1]
    start, stop = latest.metadata["start"], latest.metadata.get("stop") or {}
    observations = [{"run_uid": r.get("run_uid"), **{k: _num(r.get(k)) for k in (
        "temperature_k", "mu_s_mean", "mu_s_std", "cycles", "beamtime_s", "tc_mean", "tc_std")}}
        for r in _rows(latest, "observations")]
    by_uid = {r.metadata["start"]["uid"]: r for r in records}
    chain, run = [], latest
    while run is not None and len(chain) < MAX_RECORDS:  # a restarted campaign: its earlier records' decisions
        chain.append(run)
        run = by_uid.get(run.metadata["start"].get("continue_from"))
    memo = {} if memo is None else memo
    decisions = []
    for r in reversed(chain):
        uid = r.metadata["start"]["uid"]
        rows = memo.get(uid) if r is not latest else None
        if rows is None:
            rows = [decision_summary(row, uid) for row in _rows(r, "decisions")]
            if r is not latest:
                memo[uid] = rows
        decisions.extend(rows)
    last = observations[-1] if observations else {}
    target = _num(target_tc_std_k)
    return {"name": name, "record_uid": start["uid"], "status": run_status(latest), "started": _num(start.get("time")),
            "records": len(chain), "stop_reason": stop.get("reason"), "exit_status": stop.get("exit_status"),
            "tc_mean": last.get("tc_mean"), "tc_std": last.get("tc_std"), "target_tc_std_k": target,
            "reached": bool(target is not None and last.get("tc_std") is not None and last["tc_std"] <= target),
            "runs": len(observations), "observations": observations, "decisions": decisions}


# -- all of it ---------------------------------------------------------------------------------------------
def gather(api, catalog, campaign: str | None = None, *, target_tc_std_k: float | None = None,
           control_addr: str = "", read_campaign: bool = True, memo: dict | None = None) -> dict[str, Any]:
    """The whole status (see the module docstring); ``catalog`` may be ``None`` (not openable: ``errors``
    says so). Each part that fails adds one line to ``errors`` and is left empty; ``read_campaign=False``
    leaves the campaign part out (``None``), for a caller that has it from a moment ago; ``memo``: see
    ``campaign_status``."""
    out: dict[str, Any] = {"time": time.time(), "campaign_name": campaign, "errors": []}
    out.update(queue_status(api, control_addr))
    out["running_run"], out["campaign"] = None, None
    if catalog is None:
        out.pop("open_runs")
        return jsonable(out)
    try:
        out["running_run"] = running_run(catalog, out.pop("open_runs"), campaign, out["manager"]["answers"])
    except Exception as exc:
        out["errors"].append(f"running run: {one_line(exc)}")
    if campaign and read_campaign:
        try:
            out["campaign"] = campaign_status(catalog, campaign, target_tc_std_k, memo)
        except Exception as exc:
            out["errors"].append(f"campaign {campaign}: {one_line(exc)}")
    out.pop("open_runs", None)
    return jsonable(out)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values and non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


class StatusSource:
    """Gathers the status for any number of page viewers: its own manager client (``control_addr``, replies
    within ``manager_timeout_s`` s) and read-only catalog client (``catalog_location``, opened on first use
    and again after a failure), one gather at a time, a result reused for ``max_age_s`` s and the campaign
    part (its record's streams, the slow read) for ``campaign_max_age_s`` s."""

    def __init__(self, control_addr: str, catalog_location: str | None, campaign: str | None = None, *,
                 target_tc_std_k: float | None = None, manager_timeout_s: float = 2.0, max_age_s: float = 1.0,
                 campaign_max_age_s: float = 2.0):
        self.control_addr, self.location = control_addr, catalog_location
        self.campaign, self.target_tc_std_k = campaign, target_tc_std_k
        self.manager_timeout_s, self.max_age_s, self.campaign_max_age_s = manager_timeout_s, max_age_s, \
            campaign_max_age_s
        self._lock = threading.Lock()
        self._api = self._catalog = None
        self._last: tuple[float, dict[str, Any]] | None = None
        self._campaign: tuple[float, dict | None] | None = None
        self._memo: dict[str, list] = {}

    def _catalog_client(self, errors: list[str]):
        if self._catalog is None:
            from bayesbeam.catalog import open_catalog

            try:
                self._catalog = open_catalog(self.location, writable=False)
            except Exception as exc:
                errors.append(f"catalog: {one_line(exc)}")
        return self._catalog

    def open(self) -> None:
        """Open the catalog client now, in the calling thread. A program that has a catalog of its own opens this
        one right after it, before serving: tiled's in-process app started in a thread while another starts or
        runs in the same process can hang for good in its startup (seen: ``TestClient.__enter__``)."""
        with self._lock:
            self._catalog_client([])

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.max_age_s:
                return self._last[1]
            if self._api is None:
                from bayesbeam.queue.stack import manager_api

                self._api = manager_api(self.control_addr, None, timeout=self.manager_timeout_s)
            errors: list[str] = []
            catalog = self._catalog_client(errors)
            now = time.monotonic()
            fresh = self._campaign is None or now - self._campaign[0] >= self.campaign_max_age_s
            status = gather(self._api, catalog, self.campaign, target_tc_std_k=self.target_tc_std_k,
                            control_addr=self.control_addr, read_campaign=fresh, memo=self._memo)
            status["errors"][:0] = errors
            failed = any(e.startswith(("running run", "campaign")) for e in status["errors"])
            if fresh and catalog is not None and not failed:
                self._campaign = (now, status["campaign"])
            elif not fresh:
                status["campaign"] = self._campaign[1]
            if catalog is not None and failed:
                self._catalog = None  # reopen next time (a server that went away, a catalog replaced)
            self._last = (time.monotonic(), status)
            return status

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None
