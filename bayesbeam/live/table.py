"""The live table's missing column: one plain line per posterior update with the quantity the run watches
(BestEffortCallback's table prints only the primary stream: counts, field, energy)."""

from __future__ import annotations

import math
import sys

from bluesky.callbacks.core import CallbackBase

from bayesbeam.live.base import label, stop_targets

UNITS = {"mu_s": " μB"}


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class PosteriorLines(CallbackBase):
    """At each ``posterior`` event print ``  posterior N · μs = 2.131 ± 0.021 μB (target σ 0.01) · 0.42 h``:
    the fields the stream hints (the ones the stop rule watches: ``<q>_mean``/``<q>_std``, ``rmse_pred``,
    ``model_prob_max``), the targets from the start document's stop rule, and the beamtime (h). ``file``:
    where (default stdout). Other streams and runs without a ``posterior`` stream print nothing."""

    def __init__(self, file=None):
        super().__init__()
        self.file = file
        self.lines: list[str] = []
        self._targets: dict[str, float] = {}
        self._fields: dict[str, list[str]] = {}  # hinted fields of each posterior descriptor, by its uid
        self._n = 0

    def start(self, doc):
        self._targets, self._fields, self._n, self.lines = stop_targets(doc.get("stop_rule")), {}, 0, []

    def descriptor(self, doc):
        if doc.get("name") == "posterior":
            self._fields[doc["uid"]] = [f for hint in (doc.get("hints") or {}).values() for f in hint.get("fields", [])]

    def event(self, doc):
        fields = self._fields.get(doc["descriptor"])
        if fields is None:
            return
        self._n += 1
        data = doc["data"]
        parts = [f"  posterior {self._n}"]
        for field in fields:
            value = _number(data.get(field))
            if field.endswith("_mean"):
                q = field[:-5]
                std = _number(data.get(f"{q}_std"))
                target = self._targets.get(f"{q}_std")
                parts.append(f"{label(q, plain=True)} = {value:.4g} ± {std:.2g}{UNITS.get(q, '')}"
                             + (f" (target σ {target:g})" if target is not None else ""))
            elif field == "rmse_pred":
                target = self._targets.get("rmse_pred")
                parts.append(f"predicted RMSE = {value:.3g}" + (f" (target {target:g})" if target is not None else ""))
            elif field == "model_prob_max":
                target = self._targets.get("model_prob_max")
                parts.append(f"P(leading model) = {value:.3f}" + (f" (decided at {target:g})" if target is not None
                                                                   else ""))
        beamtime = _number(data.get("beamtime_s"))
        if math.isfinite(beamtime):
            parts.append(f"{beamtime / 3600:.2f} h")
        line = " · ".join(parts)
        self.lines.append(line)
        print(line, file=self.file or sys.stdout, flush=True)
