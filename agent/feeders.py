"""The one adapter between the bluesky document stream and the agents' ``ingest`` (DESIGN §2), and
the one rule that decides, from a count's own stored readings, whether it may enter a posterior.

Validity (issue 9): a count is used only if the readings stored in its own ``primary`` event prove
it: the positioner's readback before and after the count within tolerance of the requested
setting (magnet field, monochromator energy), the ring current's minimum over the count at or above
the floor (and, when the ring reports it, no silence of its monitor longer than its update period),
finite counts (Compton spectra also non-negative, not all zero) and a positive monitor, and, when the
detector reports it (``<det>_elapsed_s``), an elapsed count time of at least ``ELAPSED_FRACTION`` of
the preset. A Compton cycle is used only if its spectra are one whole ``+ − − +`` pattern, each valid,
with no pause or suspension between them.
The plan writes the rule's inputs (keys and thresholds) in its start document under ``validity``;
the plan's own decision (the ``cycles`` stream) and these feeders apply the same functions
(``spectrum_problem``, ``cycle_problem``, ``xas_point_problem``), live and in replay.

``ComptonFeeder`` configures a ``SpinMomentAgent`` from the detector configuration in the
``primary`` descriptor and ingests a cycle as soon as its last spectrum is stored (the ``cycles``
event is bookkeeping: it only names the reason of a cycle cut short before its last spectrum).
``XASFeeder`` ingests each proven point of ``adaptive_xas``. ``XPSFeeder`` feeds an ``XPSAgent``
one analyser sweep per ``primary`` event, closed by its ``sweeps`` event. ``SAXSFeeder`` feeds a
``SAXSAgent`` one 2-D detector frame per ``primary`` event of ``adaptive_saxs`` (``frame_problem``).
``ImagingFeeder`` feeds an ``ImagingAgent`` one dark, flat or image per ``primary`` event of
``adaptive_xas_imaging`` (``imaging_frame_problem``).
The same callbacks work live in the RunEngine, from a document stream, or replaying a catalog run, including
runs stored by release 0.1 and runs without a ``validity`` entry, which carry no proof: for those the ``cycles``
stream (Compton) and finite positive counts (XAS) decide, as they did then. Release 0.1's
bookkeeping fields carried a prefix (``cycle_cycle``, ``point_point``, ``sweep_sweep``): the
``primary`` descriptor says which names a run uses.
"""

from __future__ import annotations

import json
import math
import weakref
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase

from agent.compton.model import ComptonGeometry

#: A count proves its length when the detector's elapsed time is at least this fraction of the preset.
ELAPSED_FRACTION = 0.95
COMPTON_RULE, XAS_RULE, XPS_RULE = "compton-count-proof/1", "xas-count-proof/1", "xps-sweep-proof/1"
SAXS_RULE = "saxs-frame-proof/1"
IMAGING_RULE = "xas-imaging-frame-proof/1"


def field_prefix(data_keys, name: str, old_prefix: str) -> str:
    """The prefix of the plan's bookkeeping fields in a ``primary`` descriptor: ``""`` (field
    ``name``) or release 0.1's ``old_prefix`` (field ``old_prefix + name``)."""
    if name in data_keys:
        return ""
    if old_prefix + name in data_keys:
        return old_prefix
    raise KeyError(f"primary stream has neither {name!r} nor {old_prefix + name!r}: not a bayesbeam run")


def _number(data: Mapping[str, Any], key: str | None) -> float:
    """``data[key]`` as a float; NaN when the key is absent or not a number (no proof)."""
    try:
        return float(data[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def count_problem(data: Mapping[str, Any], spec: Mapping[str, Any], target: float, preset_s: float) -> str:
    """Why one count's stored readings ``data`` (an event's ``data``) do not prove it, ``""`` if they do:
    positioner readback before and after the count within ``spec["tolerance"]`` of ``target``
    (``spec["unit"]``), ring minimum over the count ≥ ``spec["beam_floor_ma"]`` (mA) and its monitor
    silence ≤ ``spec["max_gap_s"]`` (s) when stored, ``<det>_elapsed_s`` ≥ ``ELAPSED_FRACTION`` ×
    ``preset_s`` (s) for each detector that stores it. A missing reading is no proof."""
    tol, unit, label = float(spec["tolerance"]), spec.get("unit", ""), spec.get("label", "readback")
    for key, when in ((spec["before"], "before"), (spec["after"], "after")):
        value = _number(data, key)
        if not abs(value - target) <= tol:
            return f"{label} {when} the count {value:.6g} {unit} is not within {tol:g} {unit} of {target:.6g} {unit}"
    ring = spec.get("ring_minimum")
    if ring:
        floor, minimum = float(spec["beam_floor_ma"]), _number(data, ring)
        if not minimum >= floor:
            return f"beam lost during the count (ring minimum {minimum:.3g} mA < {floor:g} mA)"
        gap_key = spec.get("ring_gap")
        if gap_key:
            gap, limit = _number(data, gap_key), float(spec["max_gap_s"])
            if not gap <= limit:
                return (f"no proof of beam over the count: the ring current was not updated for {gap:.3g} s "
                        f"(longer than its {limit:g} s update period)")
    for det in spec.get("detectors", ()):
        key = f"{det}_elapsed_s"
        if key in data:
            elapsed = _number(data, key)
            if not elapsed >= ELAPSED_FRACTION * preset_s:
                return f"{det} counted {elapsed:.3g} s of its {preset_s:.3g} s preset"
    return ""


def spectrum_problem(data: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Why one stored magnetic-Compton spectrum (a ``primary`` event's ``data``) is not proven, ``""``
    if it is: finite, non-negative counts, not all zero (what ``SpinMomentAgent`` also refuses), a finite
    positive monitor, ``count_problem`` at the planned field ``field_sign`` × ``spec["field_t"]`` (T) and
    preset ``spec["preset_s"]`` (s), and, for a run at a set sample temperature (``spec["temperature"]``),
    the temperature readback before and after the count within ``tolerance_k`` of ``target_k`` (K)."""
    flip = data.get("flip", "?")
    counts = np.asarray(data.get(spec["spectrum"], np.nan), dtype=float)
    if counts.size == 0 or not np.all(np.isfinite(counts)):
        return f"non-finite counts in the spectrum of flip {flip}"
    if np.any(counts < 0):
        return f"negative counts in the spectrum of flip {flip}"
    if not np.any(counts):
        return f"empty spectrum (no counts) of flip {flip}"
    monitor = _number(data, spec["monitor"])
    if not monitor > 0:
        return f"monitor {monitor:.6g} is not a positive count (flip {flip})"
    problem = count_problem(data, spec, _number(data, "field_sign") * float(spec["field_t"]),
                            float(spec["preset_s"]))
    temperature = spec.get("temperature")
    if not problem and temperature:  # the sample temperature over the count, as the field's
        target, tol = float(temperature["target_k"]), float(temperature["tolerance_k"])
        for key, when in ((temperature["before"], "before"), (temperature["after"], "after")):
            value = _number(data, key)
            if not abs(value - target) <= tol:
                problem = (f"sample temperature {when} the count {value:.6g} K is not within {tol:g} K of "
                           f"{target:.6g} K")
                break
    return f"{problem} (flip {flip})" if problem else ""


def cycle_problem(events: Sequence[Mapping[str, Any]], spec: Mapping[str, Any], complete: bool = True) -> str:
    """Why the stored spectra ``events`` (``data`` of one cycle's ``primary`` events, in order) are
    not one proven ``spec["pattern"]`` cycle, ``""`` if they are: flips 0, 1, … with the pattern's
    field signs, each spectrum proven (``spectrum_problem``), the same ``interruptions`` count in all
    (a pause or suspension between two spectra breaks the drift cancellation the cycle is for).
    ``complete=False``: judge the spectra so far (the plan stops counting a cycle at the first problem)."""
    pattern = [int(s) for s in spec["pattern"]]
    if not events and complete:
        return "no spectrum stored"
    for k, data in enumerate(events):
        flip, sign = data.get("flip"), _number(data, "field_sign")
        if k >= len(pattern) or flip != k or sign != pattern[k]:
            return f"spectrum {k} is flip {flip} at field sign {sign:g}: not the {pattern} cycle"
        problem = spectrum_problem(data, spec)
        if problem:
            return problem
        if data.get("interruptions") != events[0].get("interruptions"):
            return f"run interrupted (pause or suspension) during flip {flip}: the cycle is measured afresh"
    if complete and len(events) < len(pattern):
        return f"incomplete cycle: {len(events)} of {len(pattern)} spectra stored"
    return ""


def xas_point_problem(data: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Why one stored XAS point (a ``primary`` event's ``data``) is not proven, ``""`` if it is: every count of
    ``spec["counts"]`` (I0, It, Iref, If: those the run measured) finite and positive, and ``count_problem`` at the
    requested energy ``spec["requested"]`` (eV) with the point's dwell ``spec["dwell"]`` (s) as the preset (each
    detector's elapsed time: a fresh count)."""
    counts = [_number(data, k) for k in spec["counts"]]
    if not all(c > 0 and math.isfinite(c) for c in counts):
        return f"counts {', '.join(f'{c:.6g}' for c in counts)} are not finite positive numbers"
    return count_problem(data, spec, _number(data, spec["requested"]), _number(data, spec["dwell"]))


def sweep_problem(data: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Why one stored XPS sweep (a ``primary`` event's ``data``) is not proven, ``""`` if it is: counts
    ``spec["counts"]`` stored, finite and not negative, on as many energies ``spec["energies"]`` (eV)."""
    counts = np.asarray(data.get(spec["counts"], np.nan), dtype=float)
    energies = np.asarray(data.get(spec["energies"], np.nan), dtype=float)
    if counts.size == 0 or not np.all(np.isfinite(counts)):
        return "non-finite counts in the sweep"
    if np.any(counts < 0):
        return "negative counts in the sweep"
    if energies.shape != counts.shape or not np.all(np.isfinite(energies)):
        return f"{energies.size} finite energies stored for {counts.size} counts"
    return ""


#: The agent each run's feeder feeds, by run uid (weakly held): what a live view draws the agent's curves from.
_RUN_AGENTS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_GEOMETRY_NAMED = {"energy_kev", "incident_kev", "angle_deg", "flipping_factor"}  # read under their signal names


def agent_of_run(uid: str):
    """The agent a feeder of this process is feeding from run ``uid`` (``None`` if none is)."""
    return _RUN_AGENTS.get(uid)


def _spec(doc: Mapping[str, Any], rule: str) -> Mapping[str, Any] | None:
    spec = doc.get("validity")
    return spec if isinstance(spec, Mapping) and spec.get("rule") == rule else None


class ComptonFeeder(CallbackBase):
    """Feed a ``SpinMomentAgent`` from the documents of a magnetic-Compton run.

    ``detector``: the Ge detector's name (its fields ``<det>_spectrum``, ``<det>_monitor`` and
    configuration ``<det>_calib_offset`` …); the plan's bookkeeping fields ``cycle``, ``flip``,
    ``field_sign``. With a ``validity`` entry in the start document a cycle is judged by
    ``cycle_problem`` from its stored spectra alone, when its last spectrum arrives (or, cut short,
    at its ``cycles`` event, the next cycle's first spectrum or the run's end) and ingested with the
    run's beamtime stored in that event (s, ``beamtime``; added to the agent's beamtime before the
    run, so a continued measurement keeps counting). Without one, the ``cycles`` events decide.
    """

    def __init__(self, agent, detector: str = "ge"):
        super().__init__()
        self.agent = agent
        self.det = detector
        self.cp = ""
        self.spec: Mapping[str, Any] | None = None
        self._streams: dict[str, str] = {}
        self._buffer: dict[int, list[tuple[float, np.ndarray, float]]] = defaultdict(list)
        self._cycles: dict[int, list[dict]] = {}
        self._verdicts: dict[int, str] = {}
        self._t0 = 0.0
        self._bt0 = 0.0
        self._last_bt: tuple[float, float] | None = None  # (run beamtime s, event time s) of the last reading

    def start(self, doc):
        _RUN_AGENTS[doc["uid"]] = self.agent
        self._t0 = doc["time"]
        self._buffer.clear()
        self._cycles.clear()
        self._verdicts.clear()
        self._last_bt = None
        self.spec = _spec(doc, COMPTON_RULE)
        self._bt0 = float(getattr(self.agent, "beamtime_s", 0.0) or 0.0) if self.spec else 0.0

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]
        if doc["name"] != "primary":
            return
        self.cp = field_prefix(doc["data_keys"], "cycle", "cycle_")
        conf = doc["configuration"][self.det]["data"]
        n = doc["data_keys"][f"{self.det}_spectrum"]["shape"][0]
        # The correction fields when the run recorded them (older runs: ComptonGeometry's defaults, all off).
        extra = {f.name: float(conf[f"{self.det}_{f.name}"]) for f in fields(ComptonGeometry)
                 if f.name not in _GEOMETRY_NAMED and f"{self.det}_{f.name}" in conf}
        self.agent.configure(ComptonGeometry.from_calibration(
            n, conf[f"{self.det}_calib_offset"], conf[f"{self.det}_calib_slope"],
            incident_kev=conf[f"{self.det}_incident_energy"], angle_deg=conf[f"{self.det}_scattering_angle"],
            flipping_factor=conf[f"{self.det}_flipping_factor"], **extra))

    def event(self, doc):
        stream = self._streams.get(doc["descriptor"])
        if self.spec is None:
            self._legacy_event(stream, doc)
        elif stream == "primary":
            data = {**doc["data"], "_time": doc["time"]}
            cycle = int(data["cycle"])
            if cycle in self._verdicts:
                return  # a spectrum after its cycle was decided belongs to no proven cycle
            for older in [c for c in self._cycles if c < cycle]:
                self._decide(older)  # cut short and never closed by its `cycles` event
            self._cycles.setdefault(cycle, []).append(data)
            self._beamtime(data)
            if len(self._cycles[cycle]) >= len(self.spec["pattern"]):
                self._decide(cycle)
        elif stream == "cycles":
            cycle = int(doc["data"]["cycle"])
            if cycle not in self._verdicts:
                self._decide(cycle, reason=str(doc["data"].get("reason") or ""))

    def stop(self, doc):
        if self.spec is not None:
            for cycle in list(self._cycles):
                self._decide(cycle)

    def _beamtime(self, data) -> None:
        key = self.spec.get("beamtime")
        value = _number(data, key) if key else math.nan
        if math.isfinite(value):
            self._last_bt = (value, data["_time"])

    def _run_beamtime(self, data) -> float:
        """Run beamtime (s) at this event: stored; else the last stored one plus wall time since; else
        wall time since the start."""
        if self._last_bt is None:
            return data["_time"] - self._t0
        value, at = self._last_bt
        return value + max(0.0, data["_time"] - at)

    def _decide(self, cycle: int, reason: str = "") -> None:
        events = self._cycles.pop(cycle, [])
        problem = cycle_problem(events, self.spec) or self._live_problem(events)
        if problem and reason and len(events) < len(self.spec["pattern"]):
            problem = reason  # cut short by the plan (a device fault, a bad spectrum): its own words
        self._verdicts[cycle] = problem
        if problem:
            self.agent.register_failures([{"_id": cycle, "reason": problem}])
            return
        point = {
            "_id": cycle,
            "fields": [float(d["field_sign"]) for d in events],
            "spectra": np.stack([np.asarray(d[self.spec["spectrum"]], dtype=float) for d in events]),
            "monitors": [self._monitor(d, float(d[self.spec["monitor"]])) for d in events],
            "count_time_s": float(self.spec["preset_s"]) * len(events),
            "beamtime_s": self._bt0 + self._run_beamtime(events[-1]),
        }
        if all(f"{self.det}_live_s" in d for d in events):
            point["live_s"] = [float(d[f"{self.det}_live_s"]) for d in events]
        self.agent.ingest([point])

    def _live_problem(self, events) -> str:
        """Why a cycle's stored live times cannot normalise it ("" if they can, or the run recorded none): each
        must be finite, positive and at most its count's elapsed real time."""
        for k, d in enumerate(events):
            if f"{self.det}_live_s" not in d:
                continue
            live, real = float(d[f"{self.det}_live_s"]), float(d.get(f"{self.det}_elapsed_s", math.inf))
            if not (math.isfinite(live) and 0 < live <= real * (1 + 1e-9)):
                return f"spectrum {k + 1}: live time {live:g} s is not in (0, elapsed {real:g} s]"
        return ""

    def _monitor(self, data, monitor: float) -> float:
        """The monitor count scaled by the detector's live fraction (``<det>_live_s`` / ``<det>_elapsed_s``) when the
        run recorded both (the dead time differs between field signs); else the monitor as it was."""
        live, real = data.get(f"{self.det}_live_s"), data.get(f"{self.det}_elapsed_s")
        try:
            live, real = float(live), float(real)
        except (TypeError, ValueError):
            return monitor
        ok = math.isfinite(live) and math.isfinite(real) and live > 0 and real > 0
        return monitor * live / real if ok else monitor

    def _legacy_event(self, stream, doc):
        """A run without stored proof (release 0.1, or written before it): the ``cycles`` events decide."""
        data = doc["data"]
        if stream == "primary":
            self._buffer[int(data[f"{self.cp}cycle"])].append(
                (float(data[f"{self.cp}field_sign"]), np.asarray(data[f"{self.det}_spectrum"], dtype=float),
                 self._monitor(data, float(data[f"{self.det}_monitor"]))))
        elif stream == "cycles":
            cycle = int(data["cycle"])
            spectra = self._buffer.pop(cycle, [])
            if not data["valid"]:
                self.agent.register_failures([{"_id": cycle, "reason": data["reason"]}])
                return
            beamtime = float(data.get("beamtime_s", np.nan))
            self.agent.ingest([{
                "_id": cycle,
                "fields": [s[0] for s in spectra],
                "spectra": np.stack([s[1] for s in spectra]),
                "monitors": [s[2] for s in spectra],
                "count_time_s": float(data.get("count_time_s", 0.0)),
                "beamtime_s": beamtime if np.isfinite(beamtime) else doc["time"] - self._t0,
            }])


class XPSFeeder(CallbackBase):
    """Feed an ``XPSAgent`` from the documents of an adaptive 3d XPS run (plans.xps.sweeps).

    ``analyser``: the analyser's name (fields ``<analyser>_counts``, ``<analyser>_energies``, eV). With a
    ``validity`` entry in the start document each ``primary`` event (one sweep; none after a device fault)
    is judged by ``sweep_problem`` from its own stored readings and ingested with the run's beamtime stored
    in it (s), or registered as a failure; a ``sweeps`` event without its sweep's reading registers the
    failure it records. Without one (runs of 0.1), the ``sweeps`` event decides.
    """

    def __init__(self, agent, analyser: str = "analyser"):
        super().__init__()
        self.agent = agent
        self.det = analyser
        self.spec: Mapping[str, Any] | None = None
        self._streams: dict[str, str] = {}
        self._pending: dict[int, dict] = {}
        self._t0 = 0.0
        self._sweep_key = "sweep"

    def start(self, doc):
        _RUN_AGENTS[doc["uid"]] = self.agent
        self._t0 = doc["time"]
        self._pending.clear()
        self.spec = _spec(doc, XPS_RULE)

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]
        if doc["name"] == "primary":
            self._sweep_key = field_prefix(doc["data_keys"], "sweep", "sweep_") + "sweep"

    def event(self, doc):
        stream = self._streams.get(doc["descriptor"])
        data = doc["data"]
        if stream == "primary":
            sweep = int(data[self._sweep_key])
            if self.spec is None:
                self._pending[sweep] = data
                return
            self._pending[sweep] = {}  # seen: its sweeps event is bookkeeping
            problem = sweep_problem(data, self.spec)
            if problem:
                self.agent.register_failures([{"_id": sweep, "reason": problem}])
            else:
                key = self.spec.get("beamtime")
                self._ingest(sweep, data, _number(data, key) if key else math.nan, doc["time"])
        elif stream == "sweeps":
            sweep = int(data["sweep"])
            reading = self._pending.pop(sweep, None)
            if self.spec is not None:
                if reading is None:  # a device fault: no reading stored
                    self.agent.register_failures([{"_id": sweep, "reason": data["reason"]}])
            elif not data["valid"] or reading is None:
                self.agent.register_failures([{"_id": sweep, "reason": data["reason"]}])
            else:
                self._ingest(sweep, reading, float(data.get("beamtime_s", np.nan)), doc["time"])

    def _ingest(self, sweep: int, reading, beamtime: float, time: float) -> None:
        self.agent.ingest([{
            "_id": sweep,
            "counts": np.asarray(reading[f"{self.det}_counts"], dtype=float),
            "energies": np.asarray(reading[f"{self.det}_energies"], dtype=float),
            "beamtime_s": beamtime if np.isfinite(beamtime) else time - self._t0,
        }])


class XASFeeder(CallbackBase):
    """Feed an ``XASAgent`` from the ``primary`` events of ``adaptive_xas``: one per point, with the
    monochromator readback ``energy_key`` (eV), the I0 count and, when the run measured them, It (``it_key``)
    and the fluorescence count (``if_key``, as ``if``), and the plan's bookkeeping (``suggestion_id``, ``dwell_s``
    in s). A point is ingested only if ``xas_point_problem`` finds its stored readings prove it (runs without
    a ``validity`` entry: counts finite and positive); otherwise it is registered as a failure with the
    reason. The reference-foil chamber's count (``iref_key``) goes in as ``iref``; ``iref_key`` and ``if_key``
    default to the validity's ``reference`` and ``fluorescence`` when the run has them."""

    def __init__(self, agent, energy_key: str, i0_key: str, it_key: str | None, iref_key: str | None = None,
                 if_key: str | None = None):
        super().__init__()
        self.agent = agent
        self.energy_key, self.i0_key, self.it_key = energy_key, i0_key, it_key
        self.iref_key, self.if_key = iref_key, if_key
        self.prefix = ""
        self.spec: Mapping[str, Any] | None = None
        self._iref: str | None = iref_key
        self._if: str | None = if_key
        self._streams: dict[str, str] = {}

    def start(self, doc):
        _RUN_AGENTS[doc["uid"]] = self.agent
        self.spec = _spec(doc, XAS_RULE)
        self._iref = self.iref_key or (self.spec or {}).get("reference")
        self._if = self.if_key or (self.spec or {}).get("fluorescence")

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]
        if doc["name"] == "primary":
            self.prefix = field_prefix(doc["data_keys"], "point", "point_")

    def event(self, doc):
        if self._streams.get(doc["descriptor"]) != "primary":
            return
        d = doc["data"]
        outcome = {"_id": int(d[f"{self.prefix}suggestion_id"]), "energy": float(d[self.energy_key]),
                   "i0": float(d[self.i0_key]), "dwell": float(d[f"{self.prefix}dwell_s"])}
        counts = {"it": self.it_key, "if": self._if, "iref": self._iref}
        outcome.update({k: _number(d, key) for k, key in counts.items() if key})
        if self.spec is not None:
            problem = xas_point_problem(d, self.spec)
        else:
            measured = [outcome[k] for k in ("i0", "it", "if") if k in outcome]
            problem = "" if all(np.isfinite(c) and c > 0 for c in measured) else "counts not finite and positive"
        if not problem:
            self.agent.ingest([outcome])
        else:
            self.agent.register_failures([{**outcome, "reason": problem}])


#: Pilatus convention: module gaps read −1, dead pixels −2; anything lower is not a count (a corrupt frame).
SAXS_LOWEST_MARKER = -2


def frame_problem(data: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Why one stored SAXS frame (a ``primary`` event's ``data`` of ``adaptive_saxs``) is not proven, ``""`` if
    it is, in this order: the cell slot ``spec["kind"]`` one of ``spec["kinds"]``; ``count_problem`` at the
    requested cell position ``spec["requested"]`` (mm) with the frame's exposure ``spec["exposure"]`` (s) as the
    preset (cell readback before and after within ``spec["tolerance"]`` mm, the ring's minimum over the frame,
    the detector's elapsed time); a 2-D image ``spec["image"]`` (counts; only the detector's gap and dead-pixel
    markers −1, −2 below 0; finite; some counts); the incident-beam monitor ``spec["i0"]`` finite and positive;
    the beam-stop diode ``spec["transmitted"]`` finite and not negative."""
    frame = data.get("frame", "?")
    kind = data.get(spec["kind"])
    if kind not in tuple(spec.get("kinds", ("sample", "buffer", "standard", "empty"))):
        return f"frame {frame} on an unknown cell slot {kind!r}"
    problem = count_problem(data, spec, _number(data, spec["requested"]), _number(data, spec["exposure"]))
    if problem:
        return f"{problem} (frame {frame}, {kind})"
    image = np.asarray(data.get(spec["image"], np.nan))
    if image.ndim != 2 or image.size == 0:
        return f"no 2-D image stored for frame {frame} (shape {list(image.shape)})"
    if image.dtype.kind not in "iu" and not np.all(np.isfinite(image)):
        return f"non-finite pixels in frame {frame}"
    if image.min() < SAXS_LOWEST_MARKER:
        return (f"corrupt frame {frame}: pixel values down to {image.min():.6g}, below the detector's gap and "
                f"dead-pixel markers (-1, -2)")
    if not image.max() > 0:
        return f"empty frame {frame} (no counts)"
    i0 = _number(data, spec["i0"])
    if not (math.isfinite(i0) and i0 > 0):
        return f"incident-beam monitor {i0:.6g} is not a positive count (frame {frame})"
    transmitted = _number(data, spec["transmitted"])
    if not (math.isfinite(transmitted) and transmitted >= 0):
        return f"transmitted-beam count {transmitted:.6g} is not a finite count (frame {frame})"
    return ""


def saxs_geometry_config(conf: Mapping[str, Any], detector: str) -> dict[str, Any]:
    """The detector geometry (``agent.saxs.geometry.DetectorGeometry.config()``, JSON values) from a detector's
    configuration values ``conf`` (signal name → value: a descriptor's ``configuration[det]["data"]``, or the
    values of ``read_configuration()``): its JSON string ``<det>_geometry``. ``KeyError`` if it is not there."""
    key = f"{detector}_geometry"
    if key not in conf:
        raise KeyError(f"{detector}: no geometry in its configuration ({key})")
    value = conf[key]
    return dict(json.loads(value) if isinstance(value, (str, bytes)) else value)


class _FrameFeeder(CallbackBase):
    """What the frame feeders share: the start document's validity entry ``rule`` (required), the streams by
    descriptor, each ``primary`` event handed to ``_frame(data, doc)``, and a ``frames`` event whose frame has no
    stored reading (a device fault) registered as a failure with the reason it records. ``_beamtime`` is the run's
    beamtime (s) stored with the frame, else the time since the start; with ``continues_beamtime`` it is added to
    the agent's beamtime before the run, so a continued measurement keeps counting."""

    rule = ""
    plan = ""
    continues_beamtime = False

    def __init__(self, agent, detector: str):
        super().__init__()
        self.agent = agent
        self.det = detector
        self.spec: Mapping[str, Any] | None = None
        self._streams: dict[str, str] = {}
        self._seen: set[int] = set()
        self._t0 = 0.0
        self._bt0 = 0.0

    def start(self, doc):
        self.spec = _spec(doc, self.rule)
        if self.spec is None:
            raise ValueError(f"run {doc['uid'][:8]} has no {self.rule} validity entry: not an {self.plan} run")
        _RUN_AGENTS[doc["uid"]] = self.agent
        self._t0 = doc["time"]
        self._seen.clear()
        self._bt0 = float(getattr(self.agent, "beamtime_s", 0.0) or 0.0) if self.continues_beamtime else 0.0

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]

    def _beamtime(self, data: Mapping[str, Any], doc) -> float:
        key = self.spec.get("beamtime")
        beamtime = _number(data, key) if key else math.nan
        return self._bt0 + (beamtime if math.isfinite(beamtime) else doc["time"] - self._t0)

    def _frame(self, data: Mapping[str, Any], doc) -> None:
        raise NotImplementedError

    def event(self, doc):
        stream = self._streams.get(doc["descriptor"])
        data = doc["data"]
        if stream == "primary":
            self._seen.add(int(data["frame"]))
            self._frame(data, doc)
        elif stream == "frames":
            n = int(data["frame"])
            if n not in self._seen:
                self._seen.add(n)
                self.agent.register_failures([{"_id": n, "kind": data.get("kind"), "reason": data["reason"]}])


class SAXSFeeder(_FrameFeeder):
    """Feed a ``SAXSAgent`` from the documents of an ``adaptive_saxs`` run (plans.saxs.frames).

    ``detector``: the pixel detector's name (fields ``<det>_image``, ``<det>_i0``, ``<det>_transmitted``, keys in
    the start document's ``validity``). The agent is configured with the detector geometry of the ``primary``
    descriptor's configuration (``saxs_geometry_config``). Each ``primary`` event (one frame; none after a device
    fault) is judged by ``frame_problem`` from its own stored readings and ingested (``kind`` = the cell slot,
    the image, exposure s, i0 and transmitted counts, the run's beamtime s stored with it, added to the agent's
    beamtime before the run, so a continued measurement keeps counting) or registered as a
    failure with the reason; a ``frames`` event whose frame has no stored reading registers the fault it records.
    Only runs with a ``saxs-frame-proof/1`` validity entry (every ``adaptive_saxs`` run has one).
    """

    rule, plan, continues_beamtime = SAXS_RULE, "adaptive_saxs", True

    def __init__(self, agent, detector: str = "saxs_det"):
        super().__init__(agent, detector)

    def descriptor(self, doc):
        super().descriptor(doc)
        if doc["name"] == "primary":
            conf = doc.get("configuration", {}).get(self.det, {}).get("data", {})
            self.agent.configure(saxs_geometry_config(conf, self.det))

    def _frame(self, data, doc):
        frame = int(data["frame"])
        problem = frame_problem(data, self.spec)
        if problem:
            self.agent.register_failures([{"_id": frame, "kind": data.get(self.spec["kind"]), "reason": problem}])
            return
        self.agent.ingest([{
            "_id": frame,
            "kind": str(data[self.spec["kind"]]),
            "image": np.asarray(data[self.spec["image"]]),
            "exposure_s": float(data[self.spec["exposure"]]),
            "i0": float(data[self.spec["i0"]]),
            "transmitted": float(data[self.spec["transmitted"]]),
            "beamtime_s": self._beamtime(data, doc),
        }])


def imaging_frame_problem(data: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Why one stored imaging frame (a ``primary`` event's ``data`` of ``adaptive_xas_imaging``) is not proven,
    ``""`` if it is, in this order: the frame's ``spec["kind"]`` one of dark, flat, image; the shutter
    (``spec["shutter"]``, when stored) closed for a dark, open otherwise; for flats and images ``count_problem`` at
    the requested energy ``spec["requested"]`` (eV: monochromator readback before and after, the ring's minimum
    over the frame) and the sample-stage readback before and after (``spec["stage_before"]``,
    ``spec["stage_after"]``, mm) within ``spec["stage_tolerance_mm"]`` of in (images) or out (flats); for every
    frame the detector's elapsed time ≥ ``ELAPSED_FRACTION`` of the exposure ``spec["exposure"]`` (s: a fresh
    frame); a finite 2-D image ``spec["image"]`` (ADU) of the detector's shape ``spec["shape"]`` (when stated) with
    no row at or below 0 ADU (a real frame carries the dark offset; a zero row is lost packets)."""
    n = data.get("frame", "?")
    kind = data.get(spec["kind"])
    if kind not in ("dark", "flat", "image"):
        return f"frame {n} of an unknown kind {kind!r}"
    shutter = spec.get("shutter")
    if shutter:
        want = "closed" if kind == "dark" else "open"
        if data.get(shutter) != want:
            return f"shutter {data.get(shutter)!r}, not {want}, during {kind} frame {n}"
    exposure = _number(data, spec["exposure"])
    if kind == "dark":
        elapsed = [(det, _number(data, f"{det}_elapsed_s")) for det in spec.get("detectors", ())
                   if f"{det}_elapsed_s" in data]
        problem = next((f"{det} counted {e:.3g} s of its {exposure:.3g} s preset" for det, e in elapsed
                        if not e >= ELAPSED_FRACTION * exposure), "")
    else:
        problem = count_problem(data, spec, _number(data, spec["requested"]), exposure)
        if not problem:
            target = float(spec["stage_in_mm" if kind == "image" else "stage_out_mm"])
            tol = float(spec["stage_tolerance_mm"])
            for key, when in ((spec["stage_before"], "before"), (spec["stage_after"], "after")):
                value = _number(data, key)
                if not abs(value - target) <= tol:
                    where = "in" if kind == "image" else "out"
                    problem = (f"sample stage {when} the frame at {value:.6g} mm, not within {tol:g} mm of "
                               f"{where} ({target:.6g} mm)")
                    break
    if problem:
        return f"{problem} ({kind} frame {n})"
    image = np.asarray(data.get(spec["image"], np.nan))
    if image.ndim != 2 or image.size == 0:
        return f"no 2-D image stored for {kind} frame {n} (shape {list(image.shape)})"
    shape = spec.get("shape")
    if shape and list(image.shape) != list(shape):
        return f"{kind} frame {n} has shape {list(image.shape)}, not the detector's {list(shape)}"
    if image.dtype.kind not in "iu" and not np.all(np.isfinite(image)):
        return f"non-finite pixels in {kind} frame {n}"
    dead = int(np.count_nonzero(image.max(axis=1) <= 0))
    if dead:
        return f"corrupt {kind} frame {n}: {dead} rows at or below 0 ADU (lost packets)"
    return ""


class ImagingFeeder(_FrameFeeder):
    """Feed an ``ImagingAgent`` from the documents of an ``adaptive_xas_imaging`` run (plans.imaging.images).

    ``detector``: the full-field detector's name (field ``<det>_image``; keys in the start document's
    ``validity``). Each ``primary`` event (one dark, flat or image; none after a device fault) is judged by
    ``imaging_frame_problem`` from its own stored readings and ingested (``kind``, the requested energy (eV), the
    pass, the image in ADU, the run's beamtime (s) stored with it) or registered as a failure with the reason; a
    ``frames`` event whose frame has no stored reading registers the fault it records. The agent classifies the
    stack inside ``ingest`` when a pass completes. Only runs with a ``xas-imaging-frame-proof/1`` validity entry.
    """

    rule, plan = IMAGING_RULE, "adaptive_xas_imaging"

    def __init__(self, agent, detector: str = "imaging_det"):
        super().__init__(agent, detector)

    def _frame(self, data, doc):
        n = int(data["frame"])
        kind = str(data[self.spec["kind"]])
        point = {"_id": int(data.get("suggestion_id", n)), "kind": kind, "pass": int(data.get("pass", -1))}
        if kind != "dark":
            point["energy"] = float(data[self.spec["requested"]])
        problem = imaging_frame_problem(data, self.spec)
        if problem:
            self.agent.register_failures([{**point, "reason": problem}])
            return
        self.agent.ingest([{**point, "image": np.asarray(data[self.spec["image"]]),
                            "beamtime_s": self._beamtime(data, doc)}])


FLY_XAS_RULE = "xas-fly-bin-proof/1"
#: A fly bin proves it had beam when the ring's mean current over its gate is at least this fraction of the
#: sweep's median (and at least the floor): a dump or refill inside the bin pulls its mean down.
FLY_BEAM_FRACTION = 0.9


def fly_bin_problems(data: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """Why each bin of one stored fly sweep (a ``primary`` event's ``data`` of ``adaptive_fly_xas``) is not
    proven, ``""`` for a bin that is: its encoder readback ``spec["energies"]`` within ``spec["tolerance"]`` (eV)
    of its requested centre ``spec["requested"]``; when the spec names the ring's mean current over each gate
    (``spec["ring"]``, mA), at least ``spec["beam_floor_ma"]`` and ``spec["beam_fraction"]`` of the sweep's median
    (beam there through the whole bin); I0 and It (``spec["counts"]``) finite and positive; a finite positive gate
    time ``spec["dwell"]`` (s). Arrays of different lengths: every bin unproven."""
    req = np.atleast_1d(np.asarray(data.get(spec["requested"], np.nan), dtype=float))
    got = np.atleast_1d(np.asarray(data.get(spec["energies"], np.nan), dtype=float))
    counts = [np.atleast_1d(np.asarray(data.get(k, np.nan), dtype=float)) for k in spec["counts"]]
    dwell = np.atleast_1d(np.asarray(data.get(spec["dwell"], np.nan), dtype=float))
    ring_key = spec.get("ring")
    ring = np.atleast_1d(np.asarray(data.get(ring_key, np.nan), dtype=float)) if ring_key else None
    if not all(a.shape == req.shape for a in (got, dwell, *counts, *([ring] if ring is not None else []))):
        return ["stored arrays of different lengths"] * req.size
    tol = float(spec["tolerance"])
    if ring is not None:
        floor = float(spec["beam_floor_ma"])
        finite = ring[np.isfinite(ring)]
        least = max(floor, float(spec.get("beam_fraction", 0.0)) * float(np.median(finite)) if finite.size else floor)
    out = []
    for k in range(req.size):
        if not abs(got[k] - req[k]) <= tol:
            out.append(f"readback {got[k]:.6g} eV not within {tol:g} eV of the bin centre {req[k]:.6g} eV")
        elif ring is not None and not ring[k] >= least:
            out.append(f"beam lost during the bin (ring current {ring[k]:.3g} mA over its gate < {least:.3g} mA)")
        elif not all(np.isfinite(c[k]) and c[k] > 0 for c in counts):
            out.append(f"counts {', '.join(f'{c[k]:.6g}' for c in counts)} not finite positive numbers")
        elif not (np.isfinite(dwell[k]) and dwell[k] > 0):
            out.append(f"gate time {dwell[k]:.6g} s not positive")
        else:
            out.append("")
    return out


class FlyXASFeeder(CallbackBase):
    """Feed a ``FlyXASAgent`` from the ``primary`` events of ``adaptive_fly_xas``: one per sweep with array
    fields (keys in the start document's ``validity``) and the plan's ``sweep_id``. The whole sweep is ingested
    (``energies`` = the readbacks, eV) with ``problems``: the bins ``fly_bin_problems`` does not prove are not
    used, and the agent registers them as failures with their reason, live and in replay alike."""

    def __init__(self, agent):
        super().__init__()
        self.agent = agent
        self.spec: Mapping[str, Any] | None = None
        self._streams: dict[str, str] = {}

    def start(self, doc):
        _RUN_AGENTS[doc["uid"]] = self.agent
        self.spec = _spec(doc, FLY_XAS_RULE)
        if self.spec is None:
            raise ValueError(f"run {doc['uid'][:8]} has no {FLY_XAS_RULE} validity entry: not an adaptive_fly_xas run")

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]

    def event(self, doc):
        if self._streams.get(doc["descriptor"]) != "primary":
            return
        d, s = doc["data"], self.spec
        problems = fly_bin_problems(d, s)
        good = np.array([not p for p in problems], bool)
        arrays = {key: np.atleast_1d(np.asarray(d[name], dtype=float)) for key, name in
                  (("energies", s["energies"]), ("i0", s["counts"][0]), ("it", s["counts"][1]), ("dwell", s["dwell"]))}
        if good.size != arrays["energies"].size:
            problems = ["stored arrays of different lengths"] * arrays["energies"].size
        # every bin goes in (its time was spent); the agent skips and registers the unproven ones with their reason
        self.agent.ingest([{"_id": int(d["sweep_id"]), **arrays, "problems": problems}])
