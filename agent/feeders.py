"""The one adapter between the bluesky document stream and the agents' ``ingest`` (DESIGN §2).

``ComptonFeeder`` configures a ``SpinMomentAgent`` from the detector configuration in the
``primary`` descriptor, buffers the spectra of each flip cycle from ``primary`` events and, on the
``cycles`` event that closes a cycle, ingests it if valid or registers it as a failure if not.
``XPSFeeder`` does the same for an ``XPSAgent`` with one analyser sweep per ``primary`` event,
closed by its ``sweeps`` event. The same callbacks work live in the RunEngine, from a document
stream, or replaying a catalog run, including runs stored by release 0.1, whose bookkeeping
fields carried a prefix (``cycle_cycle``, ``point_point``, ``sweep_sweep``): the ``primary``
descriptor says which names a run uses.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from bluesky.callbacks.core import CallbackBase

from agent.compton.model import ComptonGeometry


def field_prefix(data_keys, name: str, old_prefix: str) -> str:
    """The prefix of the plan's bookkeeping fields in a ``primary`` descriptor: ``""`` (field
    ``name``) or release 0.1's ``old_prefix`` (field ``old_prefix + name``)."""
    if name in data_keys:
        return ""
    if old_prefix + name in data_keys:
        return old_prefix
    raise KeyError(f"primary stream has neither {name!r} nor {old_prefix + name!r}: not a bayesbeam run")


class ComptonFeeder(CallbackBase):
    """Feed a ``SpinMomentAgent`` from the documents of a magnetic-Compton run.

    ``detector``: the Ge detector's name (its fields ``<det>_spectrum``, ``<det>_monitor`` and
    configuration ``<det>_calib_offset`` …); the plan's bookkeeping fields ``cycle``, ``field_sign``.
    """

    def __init__(self, agent, detector: str = "ge"):
        super().__init__()
        self.agent = agent
        self.det = detector
        self.cp = ""
        self._streams: dict[str, str] = {}
        self._buffer: dict[int, list[tuple[float, np.ndarray, float]]] = defaultdict(list)
        self._t0 = 0.0

    def start(self, doc):
        self._t0 = doc["time"]
        self._buffer.clear()

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]
        if doc["name"] != "primary":
            return
        self.cp = field_prefix(doc["data_keys"], "cycle", "cycle_")
        conf = doc["configuration"][self.det]["data"]
        n = doc["data_keys"][f"{self.det}_spectrum"]["shape"][0]
        self.agent.configure(ComptonGeometry.from_calibration(
            n, conf[f"{self.det}_calib_offset"], conf[f"{self.det}_calib_slope"],
            incident_kev=conf[f"{self.det}_incident_energy"], angle_deg=conf[f"{self.det}_scattering_angle"],
            flipping_factor=conf[f"{self.det}_flipping_factor"]))

    def event(self, doc):
        stream = self._streams.get(doc["descriptor"])
        data = doc["data"]
        if stream == "primary":
            self._buffer[int(data[f"{self.cp}cycle"])].append(
                (float(data[f"{self.cp}field_sign"]), np.asarray(data[f"{self.det}_spectrum"], dtype=float),
                 float(data[f"{self.det}_monitor"])))
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

    ``analyser``: the analyser's name (fields ``<analyser>_counts``, ``<analyser>_energies``, eV).
    Each ``primary`` event (absent after a device fault) is held by its ``sweep`` number until
    the ``sweeps`` event that closes that sweep: ingested if valid (with that event's
    ``beamtime_s``, s), registered as a failure otherwise.
    """

    def __init__(self, agent, analyser: str = "analyser"):
        super().__init__()
        self.agent = agent
        self.det = analyser
        self._streams: dict[str, str] = {}
        self._pending: dict[int, dict] = {}
        self._t0 = 0.0
        self._sweep_key = "sweep"

    def start(self, doc):
        self._t0 = doc["time"]
        self._pending.clear()

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]
        if doc["name"] == "primary":
            self._sweep_key = field_prefix(doc["data_keys"], "sweep", "sweep_") + "sweep"

    def event(self, doc):
        stream = self._streams.get(doc["descriptor"])
        data = doc["data"]
        if stream == "primary":
            self._pending[int(data[self._sweep_key])] = data
        elif stream == "sweeps":
            sweep = int(data["sweep"])
            reading = self._pending.pop(sweep, None)
            if not data["valid"] or reading is None:
                self.agent.register_failures([{"_id": sweep, "reason": data["reason"]}])
                return
            beamtime = float(data.get("beamtime_s", np.nan))
            self.agent.ingest([{
                "_id": sweep,
                "counts": np.asarray(reading[f"{self.det}_counts"], dtype=float),
                "energies": np.asarray(reading[f"{self.det}_energies"], dtype=float),
                "beamtime_s": beamtime if np.isfinite(beamtime) else doc["time"] - self._t0,
            }])


class XASFeeder(CallbackBase):
    """Feed an ``XASAgent`` from the ``primary`` events of ``adaptive_xas``: one per point, with the
    monochromator readback ``energy_key`` (eV), the I0/It counts, and the plan's bookkeeping
    (``suggestion_id``, ``dwell_s`` in s). A point whose counts are not finite and positive is
    registered as a failure, not ingested."""

    def __init__(self, agent, energy_key: str, i0_key: str, it_key: str):
        super().__init__()
        self.agent = agent
        self.keys = (energy_key, i0_key, it_key)
        self.prefix = ""
        self._streams: dict[str, str] = {}

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]
        if doc["name"] == "primary":
            self.prefix = field_prefix(doc["data_keys"], "point", "point_")

    def event(self, doc):
        if self._streams.get(doc["descriptor"]) != "primary":
            return
        d = doc["data"]
        energy, i0, it = (float(d[k]) for k in self.keys)
        outcome = {"_id": int(d[f"{self.prefix}suggestion_id"]), "energy": energy, "i0": i0, "it": it,
                   "dwell": float(d[f"{self.prefix}dwell_s"])}
        if np.isfinite(i0) and np.isfinite(it) and min(i0, it) > 0:
            self.agent.ingest([outcome])
        else:
            self.agent.register_failures([outcome])
