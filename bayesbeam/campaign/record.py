"""A campaign's own run in the catalog: every decision and every run it learnt from, as document streams, so a
campaign can be re-derived, audited and resumed after a crash.

Start document: ``plan_name = "campaign"``, the campaign's ``campaign`` name, ``agent`` / ``stop_rule`` /
``agent_config`` (its settings) and ``continue_from`` (the uid of the record of the same campaign it carries
on from, if any). Streams: ``decisions`` (one event per decision: the chosen temperature K and target std μB,
expected cost s, gain K² and std(T_c) after K, the reason, the ``agent_suggestion_uid`` the queued run
carries, the candidate arrays with their gains, costs and scores, and, in review mode, the person's answer
and what was queued) and ``observations`` (one event per
run learnt from: its uid, temperature K, μs mean and std μB, beamtime s, cycles, and T_c's posterior mean
and std after it, K). Stop document: the campaign's stop reason. Written through ``CatalogWriter``: a
journal first, so a catalog failure loses nothing.
"""

from __future__ import annotations

import math
from typing import Any

from event_model import compose_run

DECISION_SCALARS = ("decision", "temperature_k", "target_std", "expected_cycles", "expected_cost_s",
                    "expected_gain_k2", "expected_tc_std_after", "tc_std_now", "from_temperature_k", "sigma1_mub")
DECISION_ARRAYS = ("candidate_temperature_k", "candidate_target_std", "gain_k2", "cost_s", "score")
OBSERVATION_KEYS = ("temperature_k", "mu_s_mean", "mu_s_std", "beamtime_s", "cycles", "tc_mean", "tc_std")


def _key(value: Any, source: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"source": source, "dtype": "string", "shape": []}
    if isinstance(value, list):
        return {"source": source, "dtype": "array", "shape": [len(value)], "dtype_numpy": "<f8"}
    return {"source": source, "dtype": "number", "shape": [], "dtype_numpy": "<f8"}


class CampaignRecord:
    """Writes the record through ``writer`` (a ``bayesbeam.session.CatalogWriter``, or any document callback)."""

    def __init__(self, writer, name: str, agent, continue_from: str | None = None, md: dict | None = None):
        self.writer = writer
        start = {"plan_name": "campaign", "campaign": name, "agent": type(agent).__name__,
                 "stop_rule": repr(agent.stop_rule), "agent_config": agent.config(), **(md or {})}
        if continue_from:
            start["continue_from"] = continue_from
        self._run = compose_run(metadata=start)
        self.uid = self._run.start_doc["uid"]
        self._streams: dict[str, Any] = {}
        self.writer("start", self._run.start_doc)

    def _emit(self, stream: str, data: dict[str, Any]) -> None:
        import time

        if stream not in self._streams:
            keys = {k: _key(v, f"campaign:{stream}") for k, v in data.items()}
            bundle = self._run.compose_descriptor(name=stream, data_keys=keys)
            self.writer("descriptor", bundle.descriptor_doc)
            self._streams[stream] = bundle
        now = time.time()
        event = self._streams[stream].compose_event(data=data, timestamps=dict.fromkeys(data, now))
        self.writer("event", event)

    def decision(self, decision: dict[str, Any], suggestion_uid: str, *, review: str = "none", review_note: str = "",
                 queued_temperature_k: float = math.nan, queued_target_std: float = math.nan) -> None:
        """One decision; ``review``: ``none`` (queued as decided), ``approved`` or ``refused`` by a person, and
        what was queued (``queued_*``, NaN if nothing: an approval may have edited the setting)."""
        data = {k: float(decision[k]) for k in DECISION_SCALARS}
        data.update({k: [float(x) for x in decision[k]] for k in DECISION_ARRAYS})
        data.update(reason=str(decision["reason"]), agent_suggestion_uid=suggestion_uid, review=review,
                    review_note=review_note, queued_temperature_k=float(queued_temperature_k),
                    queued_target_std=float(queued_target_std))
        self._emit("decisions", data)

    def observation(self, run_uid: str, observed: dict[str, Any], report: dict[str, Any]) -> None:
        data = {k: float(observed.get(k, math.nan)) for k in OBSERVATION_KEYS[:5]}
        data.update(tc_mean=float(report["tc_mean"]), tc_std=float(report["tc_std"]), run_uid=run_uid)
        self._emit("observations", data)

    def close(self, reason: str, exit_status: str = "success") -> None:
        self.writer("stop", self._run.compose_stop(exit_status=exit_status, reason=reason))
