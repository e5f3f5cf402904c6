"""The line a scientist reads when ``RE(...)`` returns: how the run ended and why (plain text, every run)."""

from __future__ import annotations

import sys

from bluesky.callbacks.core import CallbackBase

from bayesbeam.live.base import pretty_reason


class StopReasonPrinter(CallbackBase):
    """At each stop document print one line: scan id, plan, uid, exit status, the stop reason (the agent's,
    e.g. ``target reached: σ(μs) = 0.0098 ≤ 0.01``, or the failure), the agent's updates and the beamtime
    (h, from the last ``posterior`` event). ``file``: where (default stdout)."""

    def __init__(self, file=None):
        super().__init__()
        self.file = file
        self.last_line = ""
        self._start: dict = {}
        self._streams: dict[str, str] = {}
        self._posterior: dict = {}
        self._updates = 0

    def start(self, doc):
        self._start, self._streams, self._posterior, self._updates = doc, {}, {}, 0

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]

    def event(self, doc):
        if self._streams.get(doc["descriptor"]) == "posterior":
            self._posterior, self._updates = doc["data"], self._updates + 1

    def stop(self, doc):
        start = self._start if self._start.get("uid") == doc.get("run_start") else {}
        what = f"scan {start.get('scan_id', '?')} ({start.get('plan_name', 'plan')}, {doc.get('run_start', '')[:8]})"
        reason = pretty_reason(str(doc.get("reason") or ""), plain=True) or "no reason recorded"
        line = f"{what} ended: {doc.get('exit_status', '?')} — {reason}"
        if self._updates:
            bt = self._posterior.get("beamtime_s")
            line += f" · {self._updates} posterior updates"
            if isinstance(bt, (int, float)) and bt == bt:
                line += f" · beamtime {bt / 3600:.2f} h"
        self.last_line = line
        print(line, file=self.file or sys.stdout, flush=True)
