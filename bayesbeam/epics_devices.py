"""Stock ophyd EPICS devices built from a beamline configuration, connected with a clear verdict.

``ca_environment`` must run before pyepics creates its context (DESIGN §8); ``connect_beamline``
builds the end stations the file configures: the Compton detector (``EpicsMCA`` + monitor +
calibration) and magnet (a put-completion setpoint/readback positioner), the XAS monochromator
(stock ``EpicsMotor``) and ion chambers (``EpicsScaler``, one device per chamber on the shared
scaler record), plus the ring current and the beamtime (``EpicsSignalRO``); it waits for every PV
up to the configured timeout, and raises ``BeamlineConnectionError`` naming each PV that did not
connect and where it is configured. Writable PVs are checked to be configured ones (or fields of
the configured records).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from ophyd import Component as Cpt
from ophyd import EpicsMotor, EpicsSignal, EpicsSignalRO, Kind, Signal
from ophyd import FormattedComponent as FCpt
from ophyd.mca import EpicsMCA
from ophyd.pv_positioner import PVPositionerPC
from ophyd.scaler import EpicsScaler

from bayesbeam.beamline_config import BeamlineConfig


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
    calib_offset = Cpt(EpicsSignalRO, ".CALO", kind=Kind.config)
    calib_slope = Cpt(EpicsSignalRO, ".CALS", kind=Kind.config)
    incident_energy = Cpt(Signal, value=175.0, kind=Kind.config)
    scattering_angle = Cpt(Signal, value=178.0, kind=Kind.config)
    flipping_factor = Cpt(Signal, value=0.12, kind=Kind.config)

    def __init__(self, prefix, *, monitor_pv: str, **kwargs):
        self._monitor_pv = monitor_pv
        super().__init__(prefix, **kwargs)

    @property
    def preset_time(self) -> EpicsSignal:
        """The count time (s), ``.PRTM``, under the name the plans use. An alias, not a second
        signal on the same PV: two ophyd signals sharing one PV race on its connection callbacks."""
        return self.preset_real_time


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


class ScalerGate:
    """The one count of a scaler record shared by its chamber devices: a trigger starts a count
    unless the current one is still running (or ended less than ``join_s`` wall seconds ago) and
    this chamber has not read it yet, in which case it joins it. So ``trigger_and_read([i0, it])``
    counts once (one dwell of beamtime), however fast the record answers."""

    def __init__(self, join_s: float = 0.1):
        self.join_s = float(join_s)
        self.status = None
        self.members: set[str] = set()
        self._done_at = -np.inf

    def _finished(self, status) -> None:
        self._done_at = time.monotonic()

    def trigger(self, chamber, start):
        st = self.status
        if (st is not None and chamber.name not in self.members
                and (not st.done or time.monotonic() - self._done_at < self.join_s)):
            self.members.add(chamber.name)
            return st
        self.status, self.members, self._done_at = start(), {chamber.name}, np.inf
        self.status.add_callback(self._finished)
        return self.status


class IonChamberScaler(EpicsScaler):
    """``EpicsScaler`` whose reading is one channel (``.S<channel>``), named ``<name>_counts`` and
    hinted, as the simulated ion chambers read; the other channels are omitted. Stock triggering
    (a put to ``.CNT`` that completes when the count of ``.TP`` s, the plan's dwell, is done);
    chambers on one record share a ``ScalerGate`` so that, triggered together, they count once."""

    def __init__(self, prefix, *, channel: int, gate: ScalerGate | None = None, **kwargs):
        super().__init__(prefix, **kwargs)
        for n in range(1, 33):
            getattr(self.channels, f"chan{n}").kind = Kind.omitted
        chan = getattr(self.channels, f"chan{int(channel)}")
        chan.name = f"{self.name}_counts"
        chan.kind = Kind.hinted
        self.channel = int(channel)
        self.gate = gate

    def trigger(self):
        return super().trigger() if self.gate is None else self.gate.trigger(self, super().trigger)


@dataclass
class EpicsBeamline:
    """The connected devices of one beamline configuration (``None`` where an end station is absent)."""

    config: BeamlineConfig
    ge: ComptonMCA | None
    magnet: EpicsMagnet | None
    ring: EpicsSignalRO
    beamtime: EpicsSignalRO | None
    faults: dict[str, EpicsSignal]
    mono: EpicsMotor | None = None
    i0: IonChamberScaler | None = None
    it: IonChamberScaler | None = None

    def devices(self) -> dict:
        out = {"ge": self.ge, "magnet": self.magnet, "mono": self.mono, "i0": self.i0, "it": self.it,
               "ring": self.ring, "beamtime": self.beamtime, **self.faults}
        return {k: v for k, v in out.items() if v is not None}


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


def _wait_connected(signals, deadline: float) -> None:
    """Poll until every signal is connected or ``deadline`` (time.monotonic, s) passes."""
    while time.monotonic() < deadline and not all(s.connected for s in signals):
        time.sleep(0.05)


def wait_for_pvs(config: BeamlineConfig, devices, timeout_s: float | None = None,
                 deadline: float | None = None) -> None:
    """Wait until every PV of ``devices`` is connected (within ``timeout_s``, or until ``deadline`` when
    part of the time is already spent); raise ``BeamlineConnectionError`` naming the missing ones and
    where they are configured."""
    timeout_s = config.timeout_s() if timeout_s is None else float(timeout_s)
    signals = [s for d in devices for s in _signals(d)]
    _wait_connected(signals, time.monotonic() + timeout_s if deadline is None else deadline)
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
        fields = [pv for pv in missing if pv not in named]
        lines += [f"  {rec}.*  ({config.where(rec)})" for rec in config.records()
                  if any(pv.startswith(rec) for pv in fields)]
        lines.append(f"  … {len(fields)} PVs in all are fields of the records above")
    else:
        head = (f"{len(missing)} of {total} PVs of beamline {config.name!r} did not connect within {timeout_s:g} s "
                f"(EPICS_CA_ADDR_LIST={addr}); check these names in {config.path}:")
    raise BeamlineConnectionError("\n".join([head, *lines]))


def connect_beamline(config: BeamlineConfig, timeout_s: float | None = None) -> EpicsBeamline:
    """Build the configured devices from stock ophyd EPICS classes and wait for every PV."""
    timeout_s = config.timeout_s() if timeout_s is None else float(timeout_s)
    deadline = time.monotonic() + timeout_s
    ge = magnet = mono = i0 = it = None
    if config.has("magnetic Compton"):
        det, mag = config.data["detector"], config.data["magnet"]
        ge = ComptonMCA(det["mca"], monitor_pv=det["monitor"], name=det["name"])
        ge.incident_energy.put(float(det["incident_energy_kev"]))
        ge.scattering_angle.put(float(det["scattering_angle_deg"]))
        ge.flipping_factor.put(float(det["flipping_factor"]))
        magnet = EpicsMagnet(setpoint_pv=mag["setpoint"], readback_pv=mag["readback"],
                             max_field_t=float(mag["max_field_t"]), name=mag["name"])
    if config.has("XAS"):
        dcm, ic = config.data["mono"], config.data["ion_chambers"]
        mono = EpicsMotor(dcm["motor"], name=dcm["name"])
        gate = ScalerGate()
        i0 = IonChamberScaler(ic["scaler"], channel=ic["i0_channel"], gate=gate, name=ic["i0_name"])
        # It shares i0's pyepics PV objects (one scaler record). A PV joined while its first connection
        # callback is running can miss that callback for good (pyepics appends to the list being
        # iterated), so It is built once i0's channels are up.
        _wait_connected(_signals(i0), deadline)
        it = IonChamberScaler(ic["scaler"], channel=ic["it_channel"], gate=gate, name=ic["it_name"])
    ring = config.data["ring"]
    current = EpicsSignalRO(ring["current"], name=ring["name"], kind=Kind.hinted)
    bt = config.section("beamtime")
    beamtime = EpicsSignalRO(bt["pv"], name=bt["name"], auto_monitor=False) if bt else None
    faults = {f"fault_{k}": EpicsSignal(pv, name=f"fault_{k}") for k, pv in (config.section("faults") or {}).items()}
    bl = EpicsBeamline(config, ge, magnet, current, beamtime, faults, mono, i0, it)
    configured, records = set(config.pvs().values()), tuple(config.records())
    stray = sorted(pv for pv in writable_pvs(bl.devices().values())
                   if pv not in configured and not pv.startswith(records))
    if stray:
        raise BeamlineConnectionError(f"devices would write to PVs not in {config.path}: {stray}")
    wait_for_pvs(config, bl.devices().values(), timeout_s, deadline)
    return bl
