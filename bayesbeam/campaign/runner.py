"""The campaign agent outside the worker: watch the catalog, update the campaign posterior, queue the next run.

Loop (``CampaignRunner.run``): learn from every finished run of this campaign in the catalog (``md["campaign"]``
is the campaign's name; each run once, by uid: a restarted campaign rebuilds its posterior from them); stop
when the campaign's stop rule says so; otherwise, unless a run of this campaign is already queued or
running (then wait for it: nothing is queued twice), decide the next temperature and target std, record the
decision, and queue ``adaptive_compton(temperature_k=..., target_std=..., max_cycles=...)`` as the agents'
user group, with ``md`` carrying ``campaign``, ``campaign_uid`` (this record's uid) and bluesky-adaptive's
``agent_suggestion_uid`` (the decision's correlation id). A run is learnt from when it is finished in the
catalog: the temperature is the mean readback over its proven spectra, μs its last posterior (a run that
failed after some cycles still counts what it measured). A queued item that failed without a posterior is
removed from the queue (the queue server puts it back at the front) and counts as a failure; three in a row
stop the campaign. With the local stack, a watchdog notices a worker process that died during a run (the
manager does not), reopens the environment and continues the interrupted run with ``continue_from``. A manager
that stops answering mid-campaign is waited for (``link.ManagerLink``: one line lost, one line back, nothing
queued twice) for up to ``manager_lost_timeout_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayesbeam.campaign.config import CampaignConfig
from bayesbeam.campaign.record import CampaignRecord

MAX_FAILED_ITEMS = 3


class CampaignError(RuntimeError):
    """The campaign cannot go on; the message says why."""


@dataclass
class CampaignResult:
    """What ``run`` ends with: T_c (K), runs learnt from, beamtime (s), the stop reason and the record's uid."""

    tc_mean: float
    tc_std: float
    runs: int
    beamtime_s: float
    stop_reason: str
    record_uid: str

    def as_json(self) -> dict[str, Any]:
        return {"tc_mean": self.tc_mean, "tc_std": self.tc_std, "runs": self.runs, "beamtime_s": self.beamtime_s,
                "stop_reason": self.stop_reason, "record_uid": self.record_uid}


def observe(run) -> dict[str, Any] | None:
    """What a finished Compton run of a campaign tells it: temperature (K, the mean readback before and after
    its proven spectra), μs mean and std (μB, its last posterior), beamtime (s, the run's own, its temperature
    change included) and cycles; ``None`` if the run has no posterior (nothing proven was measured)."""
    from agent.feeders import spectrum_problem

    start = run.metadata["start"]
    try:
        post = run["posterior"].read()
    except KeyError:
        return None
    if post.sizes.get("time", 0) == 0 or not np.isfinite(float(post["mu_s_std"][-1])):
        return None
    primary = run["primary"].read()
    spec = start.get("validity") or {}
    names = list(primary.data_vars)
    proven = [i for i in range(primary.sizes["time"])
              if not spectrum_problem({k: primary[k].values[i] for k in names}, spec)]
    temps = np.concatenate([np.asarray(primary[k].values, float)[proven]
                            for k in ("temperature_before_k", "temperature_after_k") if k in names])
    temperature = float(np.mean(temps)) if temps.size else float(start.get("sample_temperature_k", math.nan))
    beamtime = float(np.asarray(primary["beamtime"].values, float)[-1]) if "beamtime" in names else math.nan
    return {"temperature_k": temperature, "mu_s_mean": float(post["mu_s_mean"][-1]),
            "mu_s_std": float(post["mu_s_std"][-1]), "cycles": float(post["cycles"][-1]),
            "beamtime_s": beamtime if np.isfinite(beamtime) else 0.0, "field_t": float(start.get("field_t", 2.0))}


class CampaignRunner:
    """One campaign (``config``) through the queue manager ``api`` (an ``REManagerAPI`` in the agents' group),
    learning from the catalog ``catalog``; the record goes through ``writer`` (a ``CatalogWriter`` on it)."""

    def __init__(self, config: CampaignConfig, api, catalog, writer, *, echo: Callable[[str], None] = print,
                 poll_s: float = 0.5, review: bool = False, state_dir=None, stack=None):
        from agent.campaign import curie_campaign
        from bayesbeam.campaign.link import ManagerLink

        self.config, self.catalog, self.echo, self.poll_s = config, catalog, echo, poll_s
        self.api = ManagerLink(api, echo=echo, lost_timeout_s=config.manager_lost_timeout_s)
        self.review, self.state_dir = review, state_dir  # review: propose, queue only what a person approved
        self.refused: str | None = None
        self.stack = stack  # a local QueueStack: its worker process is watched (see ``wait``)
        self._md: dict[str, dict] = {}  # the md of each run queued, by agent_suggestion_uid
        self._handled: set[str] = set()  # failed queue items already acted on (history keeps them)
        self.agent = curie_campaign(config.target_tc_std_k, max_runs=config.max_runs, **config.design)
        self.learnt: set[str] = set()
        previous = self._records()
        self.record = CampaignRecord(writer, config.name, self.agent,
                                     continue_from=previous[-1] if previous else None,
                                     md={"sample": config.sample, "config_file": config.path})

    # -- the catalog ------------------------------------------------------------------------------------
    def _records(self) -> list[str]:
        from bayesbeam.catalog import find_runs

        found = find_runs(self.catalog, campaign=self.config.name, plan_name="campaign")
        return [run.metadata["start"]["uid"] for run in found.values()]

    def learn(self) -> int:
        """Ingest every finished run of this campaign not learnt from yet (oldest first); returns how many."""
        from bayesbeam.catalog import find_runs

        found = find_runs(self.catalog, campaign=self.config.name, plan_name="adaptive_compton")
        new = 0
        for run in found.values():
            uid = run.metadata["start"]["uid"]
            if uid in self.learnt or not run.metadata.get("stop"):
                continue
            self.learnt.add(uid)
            observed = observe(run)
            if observed is None:
                self.echo(f"run {uid[:8]}: nothing proven to learn from")
                continue
            try:
                self.agent.ingest([{**observed, "_id": uid}])
            except ValueError as exc:  # a run the campaign's model cannot take (another field, out of range)
                self.echo(f"run {uid[:8]}: not learnt from: {exc}")
                continue
            report = self.agent.report()
            self.record.observation(uid, observed, report)
            self.echo(f"run {uid[:8]} at {observed['temperature_k']:.1f} K: mu_s = {observed['mu_s_mean']:.4f} ± "
                      f"{observed['mu_s_std']:.4f} μB; T_c = {report['tc_mean']:.1f} ± {report['tc_std']:.1f} K")
            new += 1
        return new

    # -- the queue ----------------------------------------------------------------------------------------
    def _ours(self, item: dict) -> bool:
        return ((item.get("kwargs") or {}).get("md") or {}).get("campaign") == self.config.name

    def pending(self) -> str | None:
        """The ``agent_suggestion_uid`` of a run of this campaign queued or running, if any."""
        queue = self.api.queue_get()
        items = list(queue["items"]) + ([queue["running_item"]] if queue.get("running_item") else [])
        for item in items:
            if item and self._ours(item):
                return item["kwargs"]["md"].get("agent_suggestion_uid")
        return None

    def submit(self) -> str | None:
        """Decide, record and queue the next run; returns its ``agent_suggestion_uid``. With ``review``, the
        decision is proposed first and queued as the person approved it (``None``: refused)."""
        from bluesky_queueserver_api import BPlan

        (suggestion,) = self.agent.suggest(1)
        decision = self.agent.last_decision
        suid = f"{self.record.uid}-{decision['decision']}"
        setting = {"temperature_k": suggestion["temperature_k"], "target_std": suggestion["target_std"]}
        review = {"review": "none"}
        if self.review:
            from bayesbeam.campaign.review import propose, wait_for_decision

            path = propose(self.config.name, decision, suid, self.state_dir)
            self.echo(f"proposal {decision['decision']}: {setting['temperature_k']:g} K to ±{setting['target_std']:g} "
                      f"μB ({decision['reason']}); bayesbeam campaign approve|refuse {decision['decision']}")
            answer = wait_for_decision(path, self.poll_s)
            review = {"review": answer["status"], "review_note": str(answer.get("why", ""))}
            if answer["status"] == "refused":
                self.record.decision(decision, suid, **review)
                self.refused = f"proposal {decision['decision']} refused" + (f": {answer['why']}" if answer.get("why")
                                                                              else "")
                return None
            setting = {k: float(answer[k]) for k in setting}
        self.record.decision(decision, suid, queued_temperature_k=setting["temperature_k"],
                             queued_target_std=setting["target_std"], **review)
        md = {"sample": self.config.sample, "campaign": self.config.name, "campaign_uid": self.record.uid,
              "agent_suggestion_uid": suid, "purpose": "campaign"}
        self._md[suid] = md
        self.api.add_once(BPlan("adaptive_compton", **setting, max_cycles=self.config.max_cycles, md=md))
        if self.api.status()["manager_state"] == "idle":
            self.api.queue_start()
        self.echo(f"decision {decision['decision']}: {decision['reason']}")
        return suid

    def wait(self, suid: str) -> bool:
        """Until the run of ``suid`` is finished in the catalog (``True``) or its item failed without one
        (``False``, and the item is taken out of the queue); ``CampaignError`` after ``run_timeout_s``."""
        from bayesbeam.catalog import find_runs

        deadline = time.monotonic() + self.config.run_timeout_s
        while time.monotonic() < deadline:
            for run in find_runs(self.catalog, agent_suggestion_uid=suid).values():
                if run.metadata.get("stop"):
                    return True
            if self._worker_is_gone():
                return self.recover(suid)
            for item in self.api.history_get()["items"][-20:]:
                md = (item.get("kwargs") or {}).get("md") or {}
                if item["item_uid"] in self._handled:
                    continue
                if md.get("agent_suggestion_uid") == suid and item["result"]["exit_status"] != "completed":
                    self._handled.add(item["item_uid"])
                    if item["result"].get("run_uids"):
                        continue  # its run is being finished in the catalog
                    if any(not run.metadata.get("stop")
                           for run in find_runs(self.catalog, agent_suggestion_uid=suid).values()):
                        return self.recover(suid)  # its worker died mid-run and the manager noticed
                    for queued in self.api.queue_get()["items"]:
                        if ((queued.get("kwargs") or {}).get("md") or {}).get("agent_suggestion_uid") == suid:
                            self.api.item_remove(uid=queued["item_uid"])
                    self.echo(f"run {suid} failed: {item['result'].get('msg', '')[:200]}")
                    return False
            time.sleep(self.poll_s)
        raise CampaignError(f"no finished run for {suid} after {self.config.run_timeout_s:g} s")

    def _worker_is_gone(self) -> bool:
        """The watchdog: the manager reports an environment (and a plan running) but its worker process is dead
        (killed, or its environment destroyed from outside); the manager itself does not notice."""
        if self.stack is None:
            return False
        from bayesbeam.queue.stack import manager_status

        def gone() -> bool:
            status = manager_status(self.api)
            return bool(status and status["worker_environment_exists"] and self.stack.worker_pid() is None)

        # Twice, 2 s apart: while a killed manager is replaced, its processes change under the look and the new
        # one answers from Redis before it knows its worker (a worker that lives on must not be "resumed").
        if not gone():
            return False
        time.sleep(2.0)
        return gone()

    def recover(self, suid: str) -> bool:
        """After the worker died during the run of ``suid``: destroy and reopen the environment, take the item
        out of the queue if the manager put it back, and continue the interrupted run to its target in a new run
        (``continue_from``: nothing recounted; the same ``agent_suggestion_uid``), or queue it again if it never
        started; then wait for it."""
        from bluesky_queueserver_api import BPlan

        from bayesbeam.catalog import find_runs, load_backup
        from bayesbeam.queue.stack import wait_for_status

        self.echo("watchdog: the worker process is gone; reopening the environment and resuming the run")
        status = wait_for_status(self.api, lambda s: s["manager_state"] in ("idle", "executing_queue"), timeout=120,
                                 what="the manager to settle")
        if status["worker_environment_exists"]:
            self.api.environment_destroy()
            wait_for_status(self.api, lambda s: not s["worker_environment_exists"] and s["manager_state"] == "idle",
                            timeout=120, what="the dead worker's environment to go")
        for queued in self.api.queue_get()["items"]:
            if ((queued.get("kwargs") or {}).get("md") or {}).get("agent_suggestion_uid") == suid:
                self.api.item_remove(uid=queued["item_uid"])
        self.api.environment_open()
        wait_for_status(self.api, lambda s: s["worker_environment_exists"] and s["manager_state"] == "idle",
                        timeout=180, what="the worker environment to open again")
        self._handled.update(item["item_uid"] for item in self.api.history_get()["items"]
                             if ((item.get("kwargs") or {}).get("md") or {}).get("agent_suggestion_uid") == suid)
        md = self._md.get(suid) or {"sample": self.config.sample, "campaign": self.config.name,
                                    "campaign_uid": self.record.uid, "agent_suggestion_uid": suid}
        cut = [run for run in find_runs(self.catalog, agent_suggestion_uid=suid).values()
               if not run.metadata.get("stop")]
        if cut:
            start = cut[-1].metadata["start"]
            load_backup(self.catalog, uids=[start["uid"]])  # what its journal has beyond the catalog's copy
            if self.catalog[start["uid"]].metadata.get("stop"):  # it ended before its worker died: nothing to resume
                self.echo(f"watchdog: run {start['uid'][:8]} had ended before its worker died (its journal holds "
                          "its stop); nothing to resume")
                self.api.queue_start()
                return True
            held = {"temperature_k": start["sample_temperature_k"]} if "sample_temperature_k" in start else {}
            self.api.add_once(BPlan("adaptive_compton", continue_from=start["uid"], **held,  # at the same temperature
                                    md={**md, "resumed_after": "worker died"}))
        else:
            decided = self.agent.last_decision or {}
            self.api.add_once(BPlan("adaptive_compton", temperature_k=decided.get("temperature_k"),
                                    target_std=decided.get("target_std"), max_cycles=self.config.max_cycles, md=md))
        self.api.queue_start()
        return self.wait(suid)

    def open_environment(self) -> None:
        """Open the worker environment if it is closed (``bayesbeam queue start`` leaves it closed unless
        ``--open``): the campaign cannot run anything without it."""
        from bayesbeam.queue.stack import StackError, wait_for_status

        if self.api.status()["worker_environment_exists"]:
            return
        self.echo("the queue's worker environment is closed: opening it (the profile's startup runs in the worker)")
        self.api.environment_open()
        try:
            wait_for_status(self.api, lambda s: s["worker_environment_exists"] and s["manager_state"] == "idle",
                            timeout=300, what="the worker environment to open")
        except StackError as exc:
            raise CampaignError(f"{exc}: see the manager's log (bayesbeam queue status names it)") from None

    def resume_queue(self, suid: str) -> None:
        """A run of this campaign is queued (left by a campaign that stopped before it ran): start the queue if
        it is stopped, saying so, rather than wait for it silently."""
        status = self.api.status()
        if status["manager_state"] == "idle" and status["items_in_queue"] > 0:
            self.echo(f"run {suid} of this campaign is queued but the queue is stopped: starting the queue")
            self.api.queue_start()

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> CampaignResult:
        failures, reason = 0, ""
        self.open_environment()
        while True:
            self.learn()
            stop, reason = self.agent.should_stop()
            if stop:
                break
            suid = self.pending()
            if suid is not None:
                self.resume_queue(suid)
            else:
                suid = self.submit()
            if suid is None:
                reason = self.refused or "refused"
                break
            ok = self.wait(suid)
            failures = 0 if ok else failures + 1
            if failures >= MAX_FAILED_ITEMS:
                reason = f"{failures} queued runs in a row failed without a measurement"
                self.learn()
                break
        report = self.agent.report()
        self.record.close(reason or "")
        return CampaignResult(float(report["tc_mean"]), float(report["tc_std"]), len(self.agent.runs),
                              float(self.agent.beamtime_s), reason or "", self.record.uid)
