"""Stock ophyd EPICS devices built from a beamline configuration, connected with a clear verdict.

``ca_environment`` must run before pyepics creates its context (DESIGN §8); ``connect_beamline``
builds the end stations the file configures: the Compton detector (``EpicsMCA`` + monitor +
calibration), magnet (a put-completion setpoint/readback positioner) and, if configured, the sample
temperature controller (``EpicsTemperature``, the same shape, in K), the XAS monochromator
(stock ``EpicsMotor``) and ion chambers (``EpicsScaler``, one device per chamber on the shared
scaler record) and, with ``[fly]``, the fly-scan scaler (``bayesbeam.epics_fly.EpicsFlyScaler``), plus
the ring current (``bayesbeam.epics_ring.EpicsRingCurrent``: the minimum over each count from the PV's
monitor updates) and the beamtime (``EpicsSignalRO``); it waits for every PV
up to the configured timeout, and raises ``BeamlineConnectionError`` naming each PV that did not
connect and where it is configured.

Integrity of what the devices hand over (DESIGN §8): every count proves it is fresh from the record's
own elapsed time (MCA ``.ERTM``, scaler ``.T``, read as ``<det>_elapsed_s``) and from its update
timestamps advancing by about the preset time, or its status fails with a ``DeviceFault`` naming the
device and why (refused, stale, short); a preset <= 0, which the records take as written and then
count without end, is refused before counting. Every count, move and magnet change has a timeout of
twice its expected duration plus an absolute wall-clock floor (``DeviceTiming``; a simulated IOC's
time scale is read from its PV), and stops what it gave up on. A move the motor record refused
(``.LVIO``) or that ended off target fails. Every EPICS write of the process goes through one
``WriteGate``: only the PVs the beamline file drives (``BeamlineConfig.allows_write``) are written.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import reprlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO, Kind, Signal
from ophyd import FormattedComponent as FCpt
from ophyd.mca import EpicsMCA
from ophyd.pv_positioner import PVPositionerPC
from ophyd.scaler import EpicsScaler
from ophyd.signal import EpicsSignalBase
from ophyd.status import DeviceStatus
from ophyd.utils import LimitError, StatusTimeoutError

from bayesbeam.beamline_config import SCHEMA, BeamlineConfig
from bayesbeam.epics_ring import DEFAULT_MAX_GAP_S, EpicsRingCurrent

log = logging.getLogger(__name__)


class BeamlineConnectionError(RuntimeError):
    """Some configured PVs did not connect within the timeout."""


class DeviceFault(RuntimeError):
    """A count or move that cannot be trusted (refused, stale, short, off target): its status fails."""


class WriteRefused(PermissionError):
    """A write to a PV the session's beamline file does not let it drive; nothing was sent."""


class WriteGate:
    """The one gate every EPICS write of this process goes through: the active gate (the beamline the
    session connected, ``connect_beamline``) refuses, before anything is sent, a put to any PV its
    file does not let the session drive (``BeamlineConfig.allows_write``). It wraps the put of ophyd's
    pyepics control layer, so stock devices, signals a plan makes itself and ``epics.caput`` in the
    session are all gated. It is no defence against someone bypassing ophyd and pyepics: the IOC's
    access security or a CA gateway is (``profiles/beamlines/<beamline>.acf``/``.pvlist``)."""

    _active: WriteGate | None = None

    def __init__(self, config: BeamlineConfig):
        self.config = config

    def allows(self, pv: str) -> bool:
        return self.config.allows_write(pv)

    def check(self, pv: str, value=None) -> None:
        """Raise ``WriteRefused`` unless the session may write ``pv``."""
        if self.allows(pv):
            return
        name = self.config.path.name
        if pv in self.config.pvs().values():
            why = f"read-only in {name} ({self.config.where(pv)}): the session never writes it"
        else:
            drives = "the MCA, motor and scaler records and their fields, the magnet and temperature setpoints" + (
                ", the [faults] PVs" if self.config.simulated else "")
            why = f"not in {name}: this session writes only what its beamline file drives ({drives})"
        raise WriteRefused(f"refused to write {reprlib.repr(value)} to {pv}: {why}; nothing was written")

    def activate(self) -> WriteGate | None:
        """Make this the process's gate (installing the hook on first use); returns the previous one."""
        return WriteGate.set_active(self)

    @classmethod
    def set_active(cls, gate: WriteGate | None) -> WriteGate | None:
        """Make ``gate`` the process's gate (``None``: no gate); returns the previous one."""
        if gate is not None:
            _install_gate_hook()
        previous, cls._active = cls._active, gate
        return previous

    @classmethod
    def active(cls) -> WriteGate | None:
        return cls._active


def _install_gate_hook() -> None:
    """Route every put of ophyd's pyepics control layer through ``WriteGate.active()`` (once)."""
    import ophyd

    if ophyd.cl.name != "pyepics":
        raise RuntimeError(f"the write gate needs ophyd's pyepics control layer, not {ophyd.cl.name!r}")
    from ophyd._pyepics_shim import PyepicsShimPV

    if getattr(PyepicsShimPV.put, "_bayesbeam_gate", False):
        return
    original = PyepicsShimPV.put

    @functools.wraps(original)
    def put(self, value, *args, **kwargs):
        gate = WriteGate._active
        if gate is not None:
            gate.check(self.pvname, value)
        return original(self, value, *args, **kwargs)

    put._bayesbeam_gate = True
    PyepicsShimPV.put = put


@dataclass(frozen=True)
class DeviceTiming:
    """How long a device may take: ``timeout(expected_s)`` = ``factor`` × the expected wall time
    (``expected_s`` of beamtime / ``time_scale``) + ``floor_s``, an absolute wall-clock floor that does
    not shrink with a simulator's time scale. ``time_scale``: 1 on a real beamline."""

    time_scale: float = 1.0
    floor_s: float = 10.0
    factor: float = 2.0

    def wall(self, expected_s: float) -> float:
        return max(0.0, float(expected_s)) / self.time_scale

    def timeout(self, expected_s: float) -> float:
        return self.factor * self.wall(expected_s) + self.floor_s


class FaultStatus(DeviceStatus):
    """The status of one count or move of ``device``, named after it and what it does, so that a
    failure (``str(status)``, which bluesky's ``FailedStatus`` shows in the plans' reasons) says which
    device and why. On failure (a timeout included) the device is stopped (``DeviceStatus``)."""

    def __init__(self, device, what: str, expected_s: float, timeout: float | None):
        self.what, self.expected_s = what, float(expected_s)
        super().__init__(device, timeout=timeout)

    def __repr__(self):
        timeout = getattr(self, "_timeout", None)
        limit = "no timeout" if timeout is None else f"timeout {timeout:.3g} s"
        return f"{self.device.name} {self.what} ({self.expected_s:g} s expected; {limit})"

    def __str__(self):
        exc = self._exception if self.done else None
        if isinstance(exc, StatusTimeoutError):
            return (f"{self.device.name}: {self.what} did not finish within its timeout of {self.timeout:.3g} s "
                    f"(expected {self.expected_s:g} s); stopped")
        return str(exc) if exc is not None else repr(self)

    def fail(self, message: str) -> None:
        """Fail with a ``DeviceFault(message)`` unless already done (e.g. timed out meanwhile)."""
        if not self.done:
            try:
                self.set_exception(DeviceFault(message))
            except Exception:  # completed meanwhile (timeout): that outcome stands
                pass

    def succeed(self) -> None:
        if not self.done:
            try:
                self.set_finished()
            except Exception:
                pass


def _stamped(sig) -> tuple[object, float]:
    """Value and timestamp of ``sig`` from a Channel Access get now (never a monitor's last update)."""
    value = sig.get(use_monitor=False)
    return value, float(sig.timestamp)


COUNT_REL_TOL = 1e-3  # an elapsed time this much short of the preset is a count that ended early
COUNT_ABS_TOL_S = 1e-3


def fresh_count(device, *, preset, elapsed, data: Sequence, start: Callable[[Callable], None],
                what: str = "count") -> FaultStatus:
    """Start one count of ``device`` and return its status, which completes only once the count is
    proven fresh, and fails with a ``DeviceFault`` saying why otherwise:

    - ``preset`` (the record's preset time, s) must be > 0: the MCA and scaler records take a preset
      <= 0 as written, and then have no time preset (the count would not end); refused before counting;
    - ``start(callback)`` puts the count's start with put-completion; when it completes, the record's
      own ``elapsed`` time field must read the preset (not less: a count that ended early), and it and
      every ``data`` field must carry a newer timestamp than before the count (not the previous count's
      fields, as after a count the IOC acknowledged without counting), the elapsed field's by about the
      preset's duration, as must the wall time the put took (``device.timing``);
    - the status times out after ``device.timing.timeout(preset)`` (and stops the device)."""
    name, timing = device.name, device.timing
    t = float(preset.get(use_monitor=False))
    if not (math.isfinite(t) and t > 0):
        status = FaultStatus(device, what, t, None)
        status.fail(f"{name}: preset time {preset.pvname} = {t:g} s is not positive: the record takes it as "
                    "written and then has no time preset (it would count until stopped); refused before counting")
        return status
    fields = [elapsed, *data]
    try:
        before = [_stamped(sig)[1] for sig in fields]
    except Exception as exc:  # a device fault, as the plans treat it, not an error that aborts the run
        status = FaultStatus(device, what, t, None)
        status.fail(f"{name}: could not read the record before the count ({type(exc).__name__}: {exc})")
        return status
    status = FaultStatus(device, what, t, timing.timeout(t))
    t_put = time.monotonic()

    def verify():
        if status.done:  # timed out meanwhile: the late completion of a count given up on changes nothing
            return
        wall = time.monotonic() - t_put
        try:
            e_val, e_ts = _stamped(elapsed)
            stamps = [e_ts] + [_stamped(sig)[1] for sig in data]
        except Exception as exc:
            status.fail(f"{name}: could not read the count back ({type(exc).__name__}: {exc})")
            return
        stale = [sig.pvname for sig, b, a in zip(fields, before, stamps, strict=True) if not a > b]
        least = 0.9 * timing.wall(t) - 0.005  # the least wall time a t-second count takes (timer jitter)
        e_val = float(e_val)
        if stale:
            status.fail(f"{name}: stale count: {', '.join(stale)} not updated by this count (the IOC acknowledged "
                        "it without counting); the previous values are no new measurement")
        elif e_val < t * (1 - COUNT_REL_TOL) - COUNT_ABS_TOL_S:
            status.fail(f"{name}: the count ended after {e_val:.6g} s of its {t:g} s preset ({elapsed.pvname})")
        elif e_val > t * 1.1 + 1.0:
            status.fail(f"{name}: the count ran {e_val:.6g} s, not its {t:g} s preset ({elapsed.pvname})")
        elif e_ts - before[0] < least or wall < least:
            status.fail(f"{name}: the count took {min(e_ts - before[0], wall):.3g} s, less than a {t:g} s count "
                        f"takes ({least:.3g} s at time scale {timing.time_scale:g})")
        else:
            status.succeed()

    def put_done(**kwargs):  # on the CA callback thread: read back from a thread of its own
        threading.Thread(target=verify, daemon=True, name=f"{name}-count-check").start()

    start(put_done)
    return status


class ArrayEpicsSignalRO(EpicsSignalRO):
    """A read-only array PV that states its numpy dtype in ``describe()`` (DESIGN §8)."""

    def describe(self):
        d = super().describe()
        d[self.name]["dtype_numpy"] = np.asarray(self._readback).dtype.str
        return d


#: The ComptonGeometry fields a beamline file's [detector] may give beyond energy, angle and κ.
GEOMETRY_KEYS = ("flipping_factor_rel_std", "sample_thickness_mm", "incidence_deg", "ge_thickness_mm", "cross_section",
                 "ms_fraction", "ms_fwhm_au", "ms_fraction_rel_std", "ms_depolarisation", "resolution_fwhm_au",
                 "resolution_rel_std", "background_cps_per_kev", "energy_offset_std_kev", "incident_std_kev",
                 "resolution_const_kev2", "resolution_fano_kev")


class ComptonMCA(EpicsMCA):
    """``EpicsMCA`` plus what the Compton analysis reads: the monitor PV, the record's CALO/CALS
    calibration (keV) and the scattering geometry from the beamline file, under the names the
    simulated detector uses (``<name>_spectrum``, ``<name>_monitor``, ``<name>_elapsed_s`` (``.ERTM``),
    ``<name>_calib_offset`` …). A count proves it is fresh or fails (``fresh_count``)."""

    spectrum = Cpt(ArrayEpicsSignalRO, ".VAL", auto_monitor=False)
    monitor = FCpt(EpicsSignalRO, "{self._monitor_pv}", auto_monitor=False, kind=Kind.hinted)
    calib_offset = Cpt(EpicsSignalRO, ".CALO", kind=Kind.config)
    calib_slope = Cpt(EpicsSignalRO, ".CALS", kind=Kind.config)
    incident_energy = Cpt(Signal, value=175.0, kind=Kind.config)
    scattering_angle = Cpt(Signal, value=178.0, kind=Kind.config)
    flipping_factor = Cpt(Signal, value=0.12, kind=Kind.config)
    # The other ComptonGeometry fields (optional keys of the beamline file's [detector]; ComptonGeometry's defaults).
    flipping_factor_rel_std = Cpt(Signal, value=0.0, kind=Kind.config)
    sample_thickness_mm = Cpt(Signal, value=0.0, kind=Kind.config)
    incidence_deg = Cpt(Signal, value=90.0, kind=Kind.config)
    ge_thickness_mm = Cpt(Signal, value=0.0, kind=Kind.config)
    cross_section = Cpt(Signal, value=0.0, kind=Kind.config)
    ms_fraction = Cpt(Signal, value=0.0, kind=Kind.config)
    ms_fwhm_au = Cpt(Signal, value=8.0, kind=Kind.config)
    ms_fraction_rel_std = Cpt(Signal, value=0.0, kind=Kind.config)
    ms_depolarisation = Cpt(Signal, value=0.0, kind=Kind.config)
    resolution_fwhm_au = Cpt(Signal, value=0.44, kind=Kind.config)
    resolution_rel_std = Cpt(Signal, value=0.0, kind=Kind.config)
    background_cps_per_kev = Cpt(Signal, value=0.0, kind=Kind.config)
    energy_offset_std_kev = Cpt(Signal, value=0.0, kind=Kind.config)
    incident_std_kev = Cpt(Signal, value=0.0, kind=Kind.config)
    resolution_const_kev2 = Cpt(Signal, value=0.0, kind=Kind.config)
    resolution_fano_kev = Cpt(Signal, value=0.0, kind=Kind.config)

    def __init__(self, prefix, *, monitor_pv: str, timing: DeviceTiming | None = None, **kwargs):
        self._monitor_pv = monitor_pv
        super().__init__(prefix, **kwargs)
        self.timing = timing or DeviceTiming()
        # The count's own elapsed time, .ERTM: the stock signal under the name every detector reads it by
        # (no second signal on the PV), as the simulated detector's <name>_elapsed_s.
        self.elapsed_real_time.name = f"{self.name}_elapsed_s"
        # .ELTM, the detector's live time (dead time), as the simulated detector's <name>_live_s: read with every
        # spectrum (the analysis normalises each count by it) and proven fresh like the spectrum.
        self.elapsed_live_time.name = f"{self.name}_live_s"
        self.elapsed_live_time.kind = Kind.normal

    def trigger(self):
        """Erase and start a count of ``.PRTM`` s (put-completion on ``EraseStart``); the status
        completes once the count is proven fresh (``fresh_count``), and times out otherwise."""
        return fresh_count(self, preset=self.preset_real_time, elapsed=self.elapsed_real_time,
                           data=[self.spectrum, self.elapsed_live_time],
                           start=lambda done: self.erase_start.put(1, wait=False, callback=done, use_complete=True))

    @property
    def preset_time(self) -> EpicsSignal:
        """The count time (s), ``.PRTM``, under the name the plans use. An alias, not a second
        signal on the same PV: two ophyd signals sharing one PV race on its connection callbacks."""
        return self.preset_real_time


class _PutCompletionPositioner(PVPositionerPC):
    """A ``PVPositionerPC`` (setpoint PV ``_setpoint_pv``, readback PV ``_readback_pv``) whose move ends with
    the setpoint put's completion, but only the latest move's: the late completion of a put given up on
    never completes a later move."""

    setpoint = FCpt(EpicsSignal, "{self._setpoint_pv}", kind=Kind.normal)
    readback = FCpt(EpicsSignalRO, "{self._readback_pv}", auto_monitor=False, kind=Kind.hinted)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._move_token = 0

    def _setup_move(self, position):
        """As ``PVPositionerPC``: the setpoint put's completion ends the move, but only this move's."""
        self._move_token += 1
        token = self._move_token

        def done_moving(**kwargs):
            if token == self._move_token:
                self._done_moving(success=True)

        if self.done is None:
            self._move_changed(value=1 - self.done_value)
        self.setpoint.put(position, wait=False, callback=done_moving)


class EpicsMagnet(_PutCompletionPositioner):
    """Magnet field (T): a setpoint PV whose put-callback completes when the field has settled,
    and a readback PV (what the plan checks). A move times out after twice ``flip_time_s`` (s of
    beamtime, the longest field change) plus the timing's floor."""

    max_field_t = Cpt(Signal, value=2.5, kind=Kind.config)

    def __init__(self, *, setpoint_pv: str, readback_pv: str, max_field_t: float, flip_time_s: float = 60.0,
                 timing: DeviceTiming | None = None, **kwargs):
        self._setpoint_pv, self._readback_pv = setpoint_pv, readback_pv
        super().__init__("", limits=(-max_field_t, max_field_t), egu="T", **kwargs)
        self.max_field_t.put(float(max_field_t))
        self.flip_time_s = float(flip_time_s)
        self.timing = timing or DeviceTiming()

    def move(self, position, wait=True, timeout=None, moved_cb=None):
        timeout = self.timing.timeout(self.flip_time_s) if timeout is None else timeout
        inner = super().move(position, wait=False, timeout=timeout, moved_cb=moved_cb)
        status = _outer(self, inner, f"move to {float(position):+.3f} T", self.flip_time_s)
        if wait:
            status.wait()
        return status


class EpicsTemperature(_PutCompletionPositioner):
    """Sample temperature controller (K): a setpoint PV whose put-callback completes when the temperature has
    settled, and a readback PV (``<name>_readback``, what the plans' validity rule reads before and after each
    count), as the simulated ``sim_devices.compton.temperature.SimTemperature``. Its limits are the setpoint
    PV's control limits (the controller's range, which the IOC also enforces); a value outside them or not
    finite raises ``LimitError`` before anything is sent. With the optional PVs of the beamline file (built by
    ``temperature_device``): ``in_position`` (1 once settled; a move that ends without it fails, naming the
    readback), ``ramp_rate_k_s`` (K/s) and ``settle_time_s`` (s), from which a move to T takes settle + |ΔT|/ramp
    s of beamtime; without those, ``max_move_s``. A move times out after twice that plus the timing's floor."""

    def __init__(self, *, setpoint_pv: str, readback_pv: str, max_move_s: float = 7200.0,
                 timing: DeviceTiming | None = None, **kwargs):
        self._setpoint_pv, self._readback_pv = setpoint_pv, readback_pv
        super().__init__("", egu="K", **kwargs)
        self.max_move_s = float(max_move_s)
        self.timing = timing or DeviceTiming()

    def check_value(self, value) -> None:
        """Raise ``LimitError`` if a temperature (K) is not finite or outside the setpoint's control limits."""
        lo, hi = self.limits
        v = float(value)
        if not (math.isfinite(v) and (lo >= hi or lo <= v <= hi)):
            raise LimitError(f"{self.name}: temperature {value!r} K outside the range {lo:g}-{hi:g} K "
                             f"({self.setpoint.pvname} control limits)")

    def expected_move_s(self, target: float) -> float:
        """Beamtime (s) a move to ``target`` (K) takes: settle + |ΔT|/ramp rate from the controller's PVs (the
        readback as the start), or ``max_move_s`` without them or if they do not read as positive numbers."""
        ramp, settle = getattr(self, "ramp_rate_k_s", None), getattr(self, "settle_time_s", None)
        if ramp is None or settle is None:
            return self.max_move_s
        try:
            rate, wait = float(ramp.get()), float(settle.get())
            start = float(self.readback.get(use_monitor=False))
        except Exception:
            return self.max_move_s
        if not (rate > 0 and wait >= 0 and math.isfinite(start)):
            return self.max_move_s
        return wait + abs(float(target) - start) / rate

    def move(self, position, wait=True, timeout=None, moved_cb=None):
        target = float(position)
        self.check_value(target)  # before anything is sent (a NaN too)
        expected = self.expected_move_s(target)
        timeout = self.timing.timeout(expected) if timeout is None else timeout
        inner = super().move(target, wait=False, timeout=timeout, moved_cb=moved_cb)
        flag = getattr(self, "in_position", None)

        def verify() -> str:
            if flag is None or int(flag.get(use_monitor=False)) == 1:
                return ""
            reading = float(self.readback.get(use_monitor=False))
            return (f"{self.name}: the move to {target:.2f} K ended with the controller not in position "
                    f"({flag.pvname} = 0, readback {reading:.2f} K)")

        status = _outer(self, inner, f"move to {target:.2f} K", expected, verify)
        if wait:
            status.wait()
        return status


def temperature_device(section: dict, timing: DeviceTiming | None = None) -> EpicsTemperature:
    """An ``EpicsTemperature`` from a beamline file's ``[temperature]`` section, with the optional PVs it names
    (``in_position``, ``ramp_rate``, ``settle_time``) as components."""
    extra = {}
    if "in_position" in section:
        extra["in_position"] = Cpt(EpicsSignalRO, section["in_position"], auto_monitor=False, kind=Kind.normal)
    if "ramp_rate" in section:
        extra["ramp_rate_k_s"] = Cpt(EpicsSignalRO, section["ramp_rate"], kind=Kind.config)
        extra["settle_time_s"] = Cpt(EpicsSignalRO, section["settle_time"], kind=Kind.config)
    cls = type("EpicsTemperature", (EpicsTemperature,), extra) if extra else EpicsTemperature
    return cls(setpoint_pv=section["setpoint"], readback_pv=section["readback"],
               max_move_s=float(section.get("max_move_s", 7200.0)), timing=timing, name=section["name"])


def _outer(device, inner, what: str, expected_s: float, verify: Callable[[], str] | None = None) -> FaultStatus:
    """A ``FaultStatus`` that follows ophyd's ``inner`` move status: it fails, saying why, when ``inner``
    fails or times out, or when ``verify()`` (run once ``inner`` is done) returns a problem, which then
    says why (e.g. a refused move whose DMOV blink a client missed ends by the timeout, and ``verify``
    names the refusal). Its own timeout, half a second after ``inner``'s, is a backstop should ``inner``
    never report."""
    status = FaultStatus(device, what, expected_s, None if inner.timeout is None else inner.timeout + 0.5)

    def done(st):
        if not st.success:
            exc = st.exception()
            try:
                problem = verify() if verify is not None else ""
            except Exception:  # reading back failed too: the move's own failure stands
                problem = ""
            if problem:
                status.fail(problem)
            elif isinstance(exc, StatusTimeoutError):
                status.fail(f"{device.name}: {what} did not finish within its timeout of {st.timeout:.3g} s "
                            f"(expected {expected_s:.3g} s)")
            else:
                status.fail(f"{device.name}: {what} failed ({type(exc).__name__}: {exc})")
        elif verify is None:
            status.succeed()
        else:  # a status callback thread of its own: reading back over CA is fine here
            try:
                problem = verify()
            except Exception as exc:
                problem = f"{device.name}: could not read the {what} back ({type(exc).__name__}: {exc})"
            status.fail(problem) if problem else status.succeed()

    inner.add_callback(done)
    return status


class EnergyMotor(EpicsMotor):
    """Stock ``EpicsMotor`` whose moves time out (settle ``.DLY`` + |Δ|/``.VELO`` + 2 ``.ACCL``,
    doubled, plus the timing's floor) and fail when the motor record refused them (``.LVIO`` = 1: it
    accepts a put outside its soft limits, restores ``.VAL`` and does not move, and ophyd alone calls
    that a success) or they ended off target (``.RDBD``)."""

    limit_violation = Cpt(EpicsSignalRO, ".LVIO", kind=Kind.omitted)
    readback_delay = Cpt(EpicsSignalRO, ".DLY", kind=Kind.config)  # the record's settle time (s)
    retry_deadband = Cpt(EpicsSignalRO, ".RDBD", kind=Kind.config)

    def __init__(self, *args, timing: DeviceTiming | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.timing = timing or DeviceTiming()

    @property
    def limits(self) -> tuple[float, float]:
        """The record's soft limits (.LLM, .HLM, eV) as monitored. ``EpicsMotor`` returns the control limits of
        .VAL, which it refreshes from a .LLM/.HLM change while .VAL's own monitor events carry the limits of the
        moment each was queued: under load a stale one can land after the refresh and keep an old limit."""
        return float(self.low_limit_travel.get()), float(self.high_limit_travel.get())

    def check_value(self, pos):
        """``LimitError`` for a position (eV) outside ``limits`` (equal limits: none, as the motor record has it)."""
        if pos is None or not math.isfinite(float(pos)):
            raise ValueError(f"{self.name}: a position must be a finite number, got {pos!r}")
        lo, hi = self.limits
        if lo < hi and not lo <= float(pos) <= hi:
            raise LimitError(f"{self.name}: value {pos} outside of range: [{lo}, {hi}]")

    def expected_move_s(self, target: float) -> float:
        """Beamtime (s) a move to ``target`` takes: settle + distance/speed + acceleration at both ends."""
        velo, accl = float(self.velocity.get()), float(self.acceleration.get())
        travel = abs(float(target) - float(self.position)) / velo if velo > 0 else 0.0
        return float(self.readback_delay.get()) + travel + 2 * max(accl, 0.0)

    def move(self, position, wait=True, timeout=None, **kwargs):
        target = float(position)
        expected = self.expected_move_s(target)
        timeout = self.timing.timeout(expected) if timeout is None else timeout
        inner = super().move(target, wait=False, timeout=timeout, **kwargs)
        egu = self.egu

        def verify() -> str:
            lvio = int(self.limit_violation.get(use_monitor=False))
            if lvio:
                lo, hi = self.low_limit_travel.get(use_monitor=False), self.high_limit_travel.get(use_monitor=False)
                return (f"{self.name}: the motor record refused the move to {target:g} {egu} (.LVIO = 1: outside its "
                        f"soft limits {lo:g}-{hi:g} {egu}); nothing moved")
            rbv = float(self.user_readback.get(use_monitor=False))
            tol = max(float(self.retry_deadband.get(use_monitor=False)), 1e-9 * max(1.0, abs(target)))
            if abs(rbv - target) > tol:
                return f"{self.name}: the move to {target:g} {egu} ended at {rbv:g} {egu} (deadband {tol:g})"
            return ""

        status = _outer(self, inner, f"move to {target:g} {egu}", expected, verify)
        if wait:
            status.wait()
        return status


class ScalerGate:
    """The one count of a scaler record shared by its chamber devices: a trigger starts a count
    unless the current one is still running (or ended less than ``join_s`` wall seconds ago) and
    this chamber has not read it yet, in which case it joins it. So ``trigger_and_read([i0, it])``
    counts once (one dwell of beamtime), however fast the record answers. The count's fault is
    reported once, by the status of the chamber that started it; a chamber that joined gets a status
    of its own that completes when the count ends, either way (two failed statuses in one bluesky wait
    would throw the fault into the plan twice, the second time past the plan's handler)."""

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
            joined = FaultStatus(chamber, "count (joined)", float(getattr(st, "expected_s", 0.0)), None)
            st.add_callback(lambda _: joined.succeed())
            return joined
        self.status, self.members, self._done_at = start(), {chamber.name}, np.inf
        self.status.add_callback(self._finished)
        return self.status


class IonChamberScaler(EpicsScaler):
    """``EpicsScaler`` whose reading is one channel (``.S<channel>``), named ``<name>_counts`` and
    hinted, as the simulated ion chambers read, and the count's own elapsed time (``.T``) as
    ``<name>_elapsed_s``; the other channels are omitted. A put to ``.CNT`` counts ``.TP`` s (the
    plan's dwell) and completes when done; the count must prove it is fresh (``fresh_count``) and
    times out otherwise (then ``.CNT`` = 0 aborts it). Chambers on one record share a ``ScalerGate``
    so that, triggered together, they count once."""

    def __init__(self, prefix, *, channel: int, gate: ScalerGate | None = None, timing: DeviceTiming | None = None,
                 **kwargs):
        super().__init__(prefix, **kwargs)
        for n in range(1, 33):
            getattr(self.channels, f"chan{n}").kind = Kind.omitted
        chan = getattr(self.channels, f"chan{int(channel)}")
        chan.name = f"{self.name}_counts"
        chan.kind = Kind.hinted
        self.time.name = f"{self.name}_elapsed_s"  # the stock .T signal, read with every count
        self.time.kind = Kind.normal
        self.channel = int(channel)
        self.gate = gate
        self.timing = timing or DeviceTiming()

    def _start_count(self):
        chan = getattr(self.channels, f"chan{self.channel}")
        return fresh_count(self, preset=self.preset_time, elapsed=self.time, data=[chan],
                           start=lambda done: self.count.put(1, wait=False, callback=done, use_complete=True))

    def trigger(self):
        return self._start_count() if self.gate is None else self.gate.trigger(self, self._start_count)

    def stop(self, *, success=False):
        """Abort the count in progress (the scaler record stops on ``.CNT`` = 0)."""
        self.count.put(0, wait=False)


@dataclass
class EpicsBeamline:
    """The connected devices of one beamline configuration (``None`` where an end station is absent)."""

    config: BeamlineConfig
    ge: ComptonMCA | None
    magnet: EpicsMagnet | None
    ring: EpicsRingCurrent
    beamtime: EpicsSignalRO | None
    faults: dict[str, EpicsSignal]
    mono: EpicsMotor | None = None
    i0: IonChamberScaler | None = None
    it: IonChamberScaler | None = None
    gate: WriteGate | None = None
    timing: DeviceTiming = field(default_factory=DeviceTiming)
    sample_temp: EpicsTemperature | None = None
    fly: Device | None = None  # bayesbeam.epics_fly.EpicsFlyScaler

    def devices(self) -> dict:
        out = {"ge": self.ge, "magnet": self.magnet, "sample_temp": self.sample_temp, "mono": self.mono,
               "i0": self.i0, "it": self.it, "fly": self.fly, "ring": self.ring, "beamtime": self.beamtime,
               **self.faults}
        return {k: v for k, v in out.items() if v is not None}

    def armed_faults(self) -> list[str]:
        """One line per fault armed on the IOC now (a fault PV that is not 0): an armed fault survives
        from one run into the next, so a session says so at start. Empty: none (or no fault PVs)."""
        lines = []
        for key, sig in self.faults.items():
            value = sig.get(use_monitor=False)
            if value:
                meaning = SCHEMA["faults"].get(key.removeprefix("fault_"), (None, None, None, ""))[3]
                lines.append(f"{sig.pvname} = {value:g} ({meaning.removeprefix('simulation only: ')})")
        return lines


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
    """Build the configured devices from stock ophyd EPICS classes and wait for every PV. Once they are
    connected, the devices get their ``DeviceTiming`` (the file's floor, a simulated IOC's time scale),
    the file's ``WriteGate`` becomes the process's, and the faults armed on the IOC are logged (and
    ``EpicsBeamline.armed_faults`` lists them, as the session banner does)."""
    from bayesbeam import pyepics_fixes

    pyepics_fixes.install()  # a read libca refused (IOC restart) must not block its PV for good
    timeout_s = config.timeout_s() if timeout_s is None else float(timeout_s)
    deadline = time.monotonic() + timeout_s
    ge = magnet = temp = mono = i0 = it = fly = None
    if config.has("magnetic Compton"):
        det, mag = config.data["detector"], config.data["magnet"]
        ge = ComptonMCA(det["mca"], monitor_pv=det["monitor"], name=det["name"])
        ge.incident_energy.put(float(det["incident_energy_kev"]))
        ge.scattering_angle.put(float(det["scattering_angle_deg"]))
        ge.flipping_factor.put(float(det["flipping_factor"]))
        for key in GEOMETRY_KEYS:
            if key in det:
                getattr(ge, key).put(float(det[key]))
        magnet = EpicsMagnet(setpoint_pv=mag["setpoint"], readback_pv=mag["readback"],
                             max_field_t=float(mag["max_field_t"]), flip_time_s=float(mag.get("flip_time_s", 60.0)),
                             name=mag["name"])
        if config.section("temperature"):
            temp = temperature_device(config.data["temperature"])
    if config.has("XAS"):
        dcm, ic = config.data["mono"], config.data["ion_chambers"]
        mono = EnergyMotor(dcm["motor"], name=dcm["name"])
        gate = ScalerGate()
        i0 = IonChamberScaler(ic["scaler"], channel=ic["i0_channel"], gate=gate, name=ic["i0_name"])
        # It shares i0's pyepics PV objects (one scaler record). A PV joined while its first connection
        # callback is running can miss that callback for good (pyepics appends to the list being
        # iterated), so It is built once i0's channels are up.
        _wait_connected(_signals(i0), deadline)
        it = IonChamberScaler(ic["scaler"], channel=ic["it_channel"], gate=gate, name=ic["it_name"])
        if config.section("fly"):
            from bayesbeam.epics_fly import EpicsFlyScaler

            f = config.data["fly"]
            fly = EpicsFlyScaler(mcs=f["mcs"], pulse_step_pv=f["pulse_step"], mono=mono, name=f["name"],
                                 channels={k: f[f"{k}_channel"] for k in ("clock", "i0", "it", "ring", "encoder")},
                                 max_speed_eV_s=float(f.get("max_speed_eV_s", 20.0)), clock_hz=float(f["clock_hz"]),
                                 ring_hz_per_ma=float(f["ring_hz_per_ma"]),
                                 encoder_ev_per_count=float(f["encoder_ev_per_count"]))
    ring = config.data["ring"]
    current = EpicsRingCurrent(ring["current"], name=ring["name"], max_gap_s=ring.get("max_gap_s", DEFAULT_MAX_GAP_S))
    bt = config.section("beamtime")
    beamtime = EpicsSignalRO(bt["pv"], name=bt["name"], auto_monitor=False) if bt else None
    faults = {f"fault_{k}": EpicsSignal(pv, name=f"fault_{k}") for k, pv in (config.section("faults") or {}).items()}
    scale_pv = (bt or {}).get("time_scale")
    scale = EpicsSignalRO(scale_pv, name="time_scale") if scale_pv else None
    bl = EpicsBeamline(config, ge, magnet, current, beamtime, faults, mono, i0, it, gate=WriteGate(config),
                       sample_temp=temp, fly=fly)
    stray = sorted(pv for pv in writable_pvs(bl.devices().values()) if not bl.gate.allows(pv))
    if stray:
        raise BeamlineConnectionError(f"devices would write to PVs not in {config.path}: {stray}")
    wait_for_pvs(config, [*bl.devices().values(), *([scale] if scale is not None else [])], timeout_s, deadline)
    time_scale = float(scale.get()) if scale is not None else 1.0
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise BeamlineConnectionError(f"{scale_pv} ([beamtime] time_scale in {config.path.name}) reads {time_scale!r}: "
                                      "a simulated IOC's time scale must be a positive number")
    bl.timing = DeviceTiming(time_scale=time_scale, floor_s=config.timeout_floor_s())
    for dev in (ge, magnet, temp, mono, i0, it, fly):
        if dev is not None:
            dev.timing = bl.timing
    for sig in (sig for dev in bl.devices().values() for sig in _signals(dev)):
        if isinstance(sig, EpicsSignal) and sig.write_timeout is None:
            # EpicsSignal.set() (bps.mv of a preset time …) waits for its readback; never for ever
            sig._write_timeout = bl.timing.floor_s
        if isinstance(sig, EpicsSignalBase) and (sig.timeout or 0.0) < bl.timing.floor_s:
            # a read (bps.rd of the field readback …) waits up to the floor, not ophyd's 2 s: a loaded host
            # answered a read after 2 s and the run was aborted (ReadTimeoutError)
            sig._timeout = bl.timing.floor_s
    bl.gate.activate()
    for line in bl.armed_faults():
        log.warning("fault armed on the IOC of %s: %s", config.name, line)
    return bl
