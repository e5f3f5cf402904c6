"""Stock ophyd EPICS devices built from a beamline configuration, connected with a clear verdict.

``ca_environment`` must run before pyepics creates its context (DESIGN §8); ``connect_beamline``
builds the detector (``EpicsMCA`` + monitor + calibration), the magnet (a put-completion
setpoint/readback positioner), the ring current and the beamtime (``EpicsSignalRO``), waits for
every PV up to the configured timeout, and raises ``BeamlineConnectionError`` naming each PV that
did not connect and where it is configured. Writable PVs are checked to be configured ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from ophyd import Component as Cpt
from ophyd import EpicsSignal, EpicsSignalRO, Kind, Signal
from ophyd import FormattedComponent as FCpt
from ophyd.mca import EpicsMCA
from ophyd.pv_positioner import PVPositionerPC

from .beamline_config import BeamlineConfig


class BeamlineConnectionError(RuntimeError):
    """Some configured PVs did not connect within the timeout."""


class ArrayEpicsSignalRO(EpicsSignalRO):
    """A read-only array PV that states its numpy dtype in ``describe()`` (DESIGN §8)."""

    def describe(self):
        d = super().describe()
        d[self.name]["dtype_numpy"] = np.asarray(self._readback).dtype.str
        return d


class ComptonMCA(EpicsMCA):
    """``EpicsMCA`` plus what the Compton analysis reads: the monitor PV, the record's CALO/CALS
    calibration (keV) and the scattering geometry from the beamline file, under the names the
    simulated detector uses (``<name>_spectrum``, ``<name>_monitor``, ``<name>_calib_offset`` …)."""

    spectrum = Cpt(ArrayEpicsSignalRO, ".VAL", auto_monitor=False)
    monitor = FCpt(EpicsSignalRO, "{self._monitor_pv}", auto_monitor=False, kind=Kind.normal)
    preset_time = Cpt(EpicsSignal, ".PRTM", kind=Kind.omitted)
    calib_offset = Cpt(EpicsSignalRO, ".CALO", kind=Kind.config)
    calib_slope = Cpt(EpicsSignalRO, ".CALS", kind=Kind.config)
    incident_energy = Cpt(Signal, value=175.0, kind=Kind.config)
    scattering_angle = Cpt(Signal, value=178.0, kind=Kind.config)
    flipping_factor = Cpt(Signal, value=0.12, kind=Kind.config)

    def __init__(self, prefix, *, monitor_pv: str, **kwargs):
        self._monitor_pv = monitor_pv
        super().__init__(prefix, **kwargs)


class EpicsMagnet(PVPositionerPC):
    """Magnet field (T): a setpoint PV whose put-callback completes when the field has settled,
    and a readback PV (what the plan checks)."""

    setpoint = FCpt(EpicsSignal, "{self._setpoint_pv}", kind=Kind.normal)
    readback = FCpt(EpicsSignalRO, "{self._readback_pv}", auto_monitor=False, kind=Kind.hinted)
    max_field_t = Cpt(Signal, value=2.5, kind=Kind.config)

    def __init__(self, *, setpoint_pv: str, readback_pv: str, max_field_t: float, **kwargs):
        self._setpoint_pv, self._readback_pv = setpoint_pv, readback_pv
        super().__init__("", limits=(-max_field_t, max_field_t), egu="T", **kwargs)
        self.max_field_t.put(float(max_field_t))


@dataclass
class EpicsBeamline:
    """The connected devices of one beamline configuration."""

    config: BeamlineConfig
    ge: ComptonMCA
    magnet: EpicsMagnet
    ring: EpicsSignalRO
    beamtime: EpicsSignalRO | None
    faults: dict[str, EpicsSignal]

    def devices(self) -> dict:
        out = {"ge": self.ge, "magnet": self.magnet, "ring": self.ring, **self.faults}
        return out | ({"beamtime": self.beamtime} if self.beamtime is not None else {})


def ca_environment(config: BeamlineConfig) -> dict[str, str]:
    """Set the Channel Access client environment (unless already set) from ``[epics]``; call before
    the first EPICS signal is created. Returns the values in force."""
    os.environ.setdefault("EPICS_CA_ADDR_LIST", config.data["epics"]["addr_list"])
    os.environ.setdefault("EPICS_CA_AUTO_ADDR_LIST", "NO")
    return {k: os.environ[k] for k in ("EPICS_CA_ADDR_LIST", "EPICS_CA_AUTO_ADDR_LIST")}


def _signals(device):
    """Every instantiated (non-lazy) EPICS signal of ``device`` with its PV names."""
    if isinstance(device, EpicsSignalRO | EpicsSignal):
        return [device]
    return [w.item for w in device.walk_signals(include_lazy=False)
            if isinstance(w.item, EpicsSignalRO | EpicsSignal)]


def writable_pvs(devices) -> set[str]:
    """The PVs these devices can write to."""
    return {s.setpoint_pvname for d in devices for s in _signals(d) if isinstance(s, EpicsSignal)}


def wait_for_pvs(config: BeamlineConfig, devices, timeout_s: float | None = None) -> None:
    """Wait until every PV of ``devices`` is connected; raise ``BeamlineConnectionError`` naming
    the missing ones and where they are configured."""
    timeout_s = config.timeout_s() if timeout_s is None else float(timeout_s)
    signals = [s for d in devices for s in _signals(d)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(s.connected for s in signals):
        time.sleep(0.05)
    missing = sorted({pv for s in signals if not s.connected
                      for pv in {s.pvname, getattr(s, "setpoint_pvname", s.pvname)}})
    if not missing:
        return
    addr = os.environ.get("EPICS_CA_ADDR_LIST", "<unset>")
    lines = [f"  {pv}  ({config.where(pv)})" for pv in missing]
    total = len({pv for s in signals for pv in {s.pvname, getattr(s, 'setpoint_pvname', s.pvname)}})
    if len(missing) == total:
        head = (f"no PV of beamline {config.name!r} answered within {timeout_s:g} s: is the IOC up, and is "
                f"EPICS_CA_ADDR_LIST={addr} right? Not connected ({len(missing)}):")
        named = set(config.pvs().values())
        lines = [f"  {pv}  ({config.where(pv)})" for pv in missing if pv in named]
        lines.append(f"  … and {len(missing) - len(lines)} fields of the records above")
    else:
        head = (f"{len(missing)} of {total} PVs of beamline {config.name!r} did not connect within {timeout_s:g} s "
                f"(EPICS_CA_ADDR_LIST={addr}); check these names in {config.path}:")
    raise BeamlineConnectionError("\n".join([head, *lines]))


def connect_beamline(config: BeamlineConfig, timeout_s: float | None = None) -> EpicsBeamline:
    """Build the configured devices from stock ophyd EPICS classes and wait for every PV."""
    det, mag, ring = config.data["detector"], config.data["magnet"], config.data["ring"]
    ge = ComptonMCA(det["mca"], monitor_pv=det["monitor"], name=det["name"])
    ge.incident_energy.put(float(det["incident_energy_kev"]))
    ge.scattering_angle.put(float(det["scattering_angle_deg"]))
    ge.flipping_factor.put(float(det["flipping_factor"]))
    magnet = EpicsMagnet(setpoint_pv=mag["setpoint"], readback_pv=mag["readback"],
                         max_field_t=float(mag["max_field_t"]), name=mag["name"])
    current = EpicsSignalRO(ring["current"], name=ring["name"], kind=Kind.hinted)
    bt = config.section("beamtime")
    beamtime = EpicsSignalRO(bt["pv"], name=bt["name"], auto_monitor=False) if bt else None
    faults = {f"fault_{k}": EpicsSignal(pv, name=f"fault_{k}") for k, pv in (config.section("faults") or {}).items()}
    bl = EpicsBeamline(config, ge, magnet, current, beamtime, faults)
    configured = set(config.pvs().values())
    stray = sorted(pv for pv in writable_pvs(bl.devices().values())
                   if pv not in configured and not pv.startswith(det["mca"]))
    if stray:
        raise BeamlineConnectionError(f"devices would write to PVs not in {config.path}: {stray}")
    wait_for_pvs(config, bl.devices().values(), timeout_s)
    return bl
