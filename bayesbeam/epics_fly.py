"""The fly-scan scaler of the epics profile: a Struck SIS3820 multichannel scaler (the SIS38XX PVs of synApps'
mca module) whose channel advances on the monochromator encoder, and the monochromator's motor record flying
the speed profile, with the interface of ``sim_devices.xas.fly.SimFlyScaler`` so that
``plans.xas.fly.adaptive_fly_xas`` runs alike in both profiles.

A sweep (``trigger()``): ``ChannelAdvance`` = External, ``NuseAll`` = the bins, the position-compare step
(``pulse_step`` PV, eV of encoder travel per channel advance) = ``bin_eV``; the encoder readback (``.RBV``, the
channel edges' origin) is read, ``EraseStart``; then per segment [e0, e1, v]: ``.VELO`` = v and ``.VAL`` = e1,
both with put-completion (one motor-record move per segment: the record takes a new ``.VELO`` only on its next move,
so the motor ramps down, stops, settles ``.DLY`` and ramps up again at every speed change; the MCS is gated
on motion, so the ramps are in the bins' gate times and the stops are not). The last channel advance ends
the acquisition (``Acquiring`` → 0); the arrays are read and ``.VELO`` restored (also when the sweep fails).

Per bin, from the hardware, not the request: ``energy`` = the encoder at the bin's centre (eV: origin + the
encoder counts of the MCS's encoder input, cumulated to the bin's middle), ``dwell`` = the gate time (s: clock
ticks / ``clock_hz``), ``i0``, ``it`` (counts), ``ring_current`` = the ring's mean current over the gate (mA:
the ring V/F input / (``ring_hz_per_ma`` × gate)); ``energy_requested`` = the planned centres. A sweep that
does not end fails its status after ``DeviceTiming.timeout`` of its planned beamtime (Σ |Δ|/v + ``.ACCL`` +
``.DLY`` per segment) plus ``PER_MOVE_WALL_S`` per segment (the client's turnaround), and is stopped
(``StopAll``, motor ``.STOP``); ``pause()`` (a suspension) stops it too, and the plan flies it again.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from ophyd import Component as Cpt
from ophyd import EpicsSignal, EpicsSignalRO, Kind, Signal
from ophyd import FormattedComponent as FCpt

from bayesbeam.epics_devices import DeviceTiming, FaultStatus
from sim_devices.xas.fly import FlyScalerInterface  # the interface the plan uses, shared with the simulator

PER_MOVE_WALL_S = 1.0  # wall seconds allowed per segment for the client's turnaround, on top of the timing
POLL_S = 0.005  # wall seconds between reads of Acquiring after the last move


class EpicsFlyScaler(FlyScalerInterface):
    """Fly scan of ``mono`` (an ``EpicsMotor``, eV) counted by the MCS at prefix ``mcs`` (module docstring).
    Set ``start_eV``, ``bin_eV``, ``segments`` (flat [e0, e1, speed eV/s, ...]), then ``trigger()``: refused (a
    failed status, nothing moved) unless the monochromator reads ``start_eV`` within half a bin, the segments
    start there and are contiguous whole bins, every speed is in (0, ``max_speed_eV_s``], the sweep is inside the
    motor's limits and has at most ``MaxChannels`` bins. ``channels``: the MCS inputs (1-based) of ``clock``,
    ``i0``, ``it``, ``ring``, ``encoder``."""

    clock_hz = Cpt(Signal, value=50e6, kind=Kind.config)
    ring_hz_per_ma = Cpt(Signal, value=2000.0, kind=Kind.config)
    encoder_ev_per_count = Cpt(Signal, value=1e-3, kind=Kind.config)

    erase_start = FCpt(EpicsSignal, "{self._mcs}EraseStart", kind=Kind.omitted)
    stop_all = FCpt(EpicsSignal, "{self._mcs}StopAll", kind=Kind.omitted)
    acquiring = FCpt(EpicsSignalRO, "{self._mcs}Acquiring", auto_monitor=False, kind=Kind.omitted)
    nuse_all = FCpt(EpicsSignal, "{self._mcs}NuseAll", kind=Kind.omitted)
    max_channels = FCpt(EpicsSignalRO, "{self._mcs}MaxChannels", kind=Kind.omitted)
    channel_advance = FCpt(EpicsSignal, "{self._mcs}ChannelAdvance", string=True, kind=Kind.omitted)
    current_channel = FCpt(EpicsSignalRO, "{self._mcs}CurrentChannel", auto_monitor=False, kind=Kind.omitted)
    pulse_step = FCpt(EpicsSignal, "{self._pulse_step_pv}", kind=Kind.omitted)
    mca_clock = FCpt(EpicsSignalRO, "{self._mcs}mca{self._channels[clock]}.VAL", auto_monitor=False,
                     kind=Kind.omitted)
    mca_i0 = FCpt(EpicsSignalRO, "{self._mcs}mca{self._channels[i0]}.VAL", auto_monitor=False, kind=Kind.omitted)
    mca_it = FCpt(EpicsSignalRO, "{self._mcs}mca{self._channels[it]}.VAL", auto_monitor=False, kind=Kind.omitted)
    mca_ring = FCpt(EpicsSignalRO, "{self._mcs}mca{self._channels[ring]}.VAL", auto_monitor=False, kind=Kind.omitted)
    mca_encoder = FCpt(EpicsSignalRO, "{self._mcs}mca{self._channels[encoder]}.VAL", auto_monitor=False,
                       kind=Kind.omitted)

    def __init__(self, *, mcs: str, pulse_step_pv: str, mono, channels: dict[str, int], max_speed_eV_s: float = 20.0,
                 clock_hz: float = 50e6, ring_hz_per_ma: float = 2000.0, encoder_ev_per_count: float = 1e-3,
                 timing: DeviceTiming | None = None, **kwargs):
        self._mcs, self._pulse_step_pv = mcs, pulse_step_pv
        self._channels = {k: int(channels[k]) for k in ("clock", "i0", "it", "ring", "encoder")}
        super().__init__("", **kwargs)
        self.mono = mono
        self.timing = timing or DeviceTiming()
        for sig, value in ((self.max_speed_eV_s, max_speed_eV_s), (self.clock_hz, clock_hz),
                           (self.ring_hz_per_ma, ring_hz_per_ma), (self.encoder_ev_per_count, encoder_ev_per_count)):
            sig.put(float(value))
        self._abort: threading.Event | None = None
        self.sweeps = 0
        self.speeds_flown: list[float] = []  # the .VELO of every segment move this device made (eV/s)

    def planned_s(self, segs) -> float:
        """Beamtime (s) the motor record takes to fly ``segs`` ([[e0, e1, v], ...]): per segment |Δ|/v + ``.ACCL``
        (an upper bound of the ramps) + ``.DLY``."""
        accl = max(float(self.mono.acceleration.get()), 0.0)
        dly = max(float(self.mono.readback_delay.get()), 0.0)
        return float(sum(abs(e1 - e0) / v + accl + dly for e0, e1, v in segs))

    def trigger(self):
        b, start = float(self.bin_eV.get()), float(self.start_eV.get())
        try:
            if self._abort is not None:
                raise RuntimeError(f"{self.name}: a sweep is in progress")
            centres, _ = self.trajectory()
            segs = np.asarray(self.segments.get(), float).reshape(-1, 3).tolist()
            if np.any(np.diff(centres) <= 0):
                raise ValueError(f"{self.name}: the MCS counts upward sweeps only")
            self.mono.check_value(centres[0] - b / 2)
            self.mono.check_value(centres[-1] + b / 2)
            most = int(self.max_channels.get())
            if centres.size > most:
                raise ValueError(f"{self.name}: {centres.size} bins, more than the MCS's {most} channels")
            rbv = float(self.mono.user_readback.get(use_monitor=False))
            if not abs(rbv - start) <= b / 2:
                raise ValueError(f"{self.name}: monochromator at {rbv:.3f} eV, not at the sweep start {start:.3f} eV")
        except Exception as exc:
            status = FaultStatus(self, "fly", 0.0, None)
            status.fail(f"{exc}; refused before any motion")
            return status
        planned = self.planned_s(segs)
        what = f"fly {centres[0] - b / 2:.1f}-{centres[-1] + b / 2:.1f} eV ({len(segs)} segments)"
        status = FaultStatus(self, what, planned, self.timing.timeout(planned) + PER_MOVE_WALL_S * len(segs))
        self._abort = abort = threading.Event()
        threading.Thread(target=self._fly, args=(status, abort, segs, centres, b), daemon=True,
                         name=f"{self.name}-sweep").start()
        return status

    def _fly(self, status: FaultStatus, abort: threading.Event, segs, centres: np.ndarray, b: float) -> None:
        """The sweep (module docstring), on a thread of its own; ``status`` fails saying why. ``.VELO`` is
        restored before the status completes, either way."""
        mono, k = self.mono, centres.size
        velo0 = float(mono.velocity.get(use_monitor=False))
        error, arrays = None, None
        try:
            self.stop_all.put(1, wait=True)  # nothing left acquiring from before
            self.channel_advance.put("External", wait=True)
            self.nuse_all.put(k, wait=True)
            self.pulse_step.put(b, wait=True)
            origin = float(mono.user_readback.get(use_monitor=False))
            self.mca_clock.get(use_monitor=False)
            before = float(self.mca_clock.timestamp)
            self.erase_start.put(1, wait=True)
            if int(self.acquiring.get(use_monitor=False)) != 1:
                raise RuntimeError(f"the MCS did not start ({self.acquiring.pvname} = 0 after EraseStart)")
            for e0, e1, v in segs:
                mono.velocity.put(float(v), wait=True)
                if not self._move(float(e0), float(e1), float(v), abort):
                    break
                self.speeds_flown.append(float(v))
            while not abort.is_set() and int(self.acquiring.get(use_monitor=False)) == 1:  # ended by the last bin
                time.sleep(POLL_S)
            if not abort.is_set():
                arrays = self._read_arrays(k, before)
        except Exception as exc:
            error = f"{self.name}: {status.what} failed ({type(exc).__name__}: {exc})"
            self._stop_hardware()
        finally:
            if self._abort is abort:
                self._abort = None
            self._restore(velo0)
        if error is not None:
            status.fail(error)
        elif arrays is None:
            status.fail(f"{self.name}: {status.what} stopped")
        else:
            self._store(centres, origin, *arrays)
            self.sweeps += 1
            status.succeed()

    def _move(self, e0: float, e1: float, v: float, abort: threading.Event) -> bool:
        """One segment: ``.VAL`` = ``e1`` with put-completion (the motor record completes the put when the move
        is done), timed out from |Δ|/v + ``.ACCL`` + ``.DLY``; the readback must then be at ``e1`` within
        ``.RDBD`` (a move the record refused, ``.LVIO``, is not). False: aborted."""
        mono, done = self.mono, threading.Event()
        expected = self.planned_s([[e0, e1, v]])
        timeout = self.timing.timeout(expected) + PER_MOVE_WALL_S
        limit = time.monotonic() + timeout
        mono.user_setpoint.put(e1, use_complete=True, callback=lambda **kwargs: done.set())
        while not done.wait(POLL_S):
            if abort.is_set():
                return False
            if time.monotonic() > limit:
                raise TimeoutError(f"the move to {e1:g} eV did not finish within {timeout:.3g} s "
                                   f"(expected {expected:.3g} s of beamtime)")
        rbv = float(mono.user_readback.get(use_monitor=False))
        tol = max(float(mono.retry_deadband.get()), 1e-9 * abs(e1))
        if not abs(rbv - e1) <= tol:
            lvio = mono.limit_violation.get(use_monitor=False)
            why = " (.LVIO = 1: outside the record's soft limits)" if lvio else ""
            raise RuntimeError(f"the move to {e1:g} eV ended at {rbv:g} eV{why}")
        return True

    def _read_arrays(self, k: int, before: float) -> tuple[np.ndarray, ...]:
        """The first ``k`` channels of the clock, I0, It, ring and encoder inputs, proven to be this sweep's."""
        n = int(self.current_channel.get(use_monitor=False))
        if n != k:
            raise RuntimeError(f"the MCS stopped after {n} of {k} channels")
        out = []
        for sig in (self.mca_clock, self.mca_i0, self.mca_it, self.mca_ring, self.mca_encoder):
            value = np.asarray(sig.get(use_monitor=False), float)
            if value.size < k or not float(sig.timestamp) > before:
                raise RuntimeError(f"stale or short MCS array {sig.pvname} ({value.size} channels)")
            out.append(value[:k])
        return tuple(out)

    def _store(self, centres, origin, ticks, i0, it, ring, encoder) -> None:
        """The per-bin readings from the arrays (module docstring)."""
        gate = ticks / float(self.clock_hz.get())
        with np.errstate(divide="ignore", invalid="ignore"):
            current = np.where(gate > 0, ring / (float(self.ring_hz_per_ma.get()) * gate), np.nan)
        travel = encoder * float(self.encoder_ev_per_count.get())
        self.energy_requested.put(np.asarray(centres, float))
        self.energy.put(origin + np.cumsum(travel) - travel / 2)
        self.i0.put(i0)
        self.it.put(it)
        self.dwell.put(gate)
        self.ring_current.put(current)
        self.total_i0.put(float(np.nansum(i0)))

    def _restore(self, velo: float) -> None:
        try:
            self.mono.velocity.put(velo, wait=True)
        except Exception:  # the sweep's own outcome stands; the next move's timeout derives from .VELO
            pass

    def _stop_hardware(self) -> None:
        for action in (lambda: self.stop_all.put(1, wait=False), lambda: self.mono.stop()):
            try:
                action()
            except Exception:
                pass

    def stop(self, *, success=False):
        """Abort the sweep in progress, if any: the MCS stops (``StopAll``) and so does the motor."""
        abort = self._abort
        if abort is not None and not abort.is_set():
            abort.set()
            self._stop_hardware()

    def pause(self):
        """A suspension (beam dump) stops the sweep; the plan flies it again from its start."""
        self.stop()
