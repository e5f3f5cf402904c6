"""Simulated ion chambers I0 (incident) and It (transmitted) for XAS in transmission (DESIGN §5).

Each trigger counts for ``dwell_s`` seconds of beamtime at the monochromator's energy:
I0 ~ Poisson(rate * dwell * current/100 mA), It ~ Poisson(same * exp(-mu*t(E))), mu*t from the sample.
Chambers sharing a ``ScalerGate`` count in the same gate window when triggered together (as scaler
channels do), so I0 and It of one point take one dwell of beamtime, not two.
"""

from __future__ import annotations

import threading

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import Status

from sim_devices.core.clock import SimClock
from sim_devices.core.faults import FaultQueue
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample

REFERENCE_CURRENT_MA = 100.0


class ScalerGate:
    """A scaler's common gate: a chamber triggered while the current window (same energy and dwell,
    clock not advanced by anything else) has not counted it yet joins that window."""

    def __init__(self, clock: SimClock):
        self.clock = clock
        self.window: dict | None = None
        self._lock = threading.Lock()  # the window's end runs on the clock's timer thread

    def count(self, chamber, energy: float, dwell: float, on_done) -> Status:
        with self._lock:
            w, now = self.window, self.clock.now
            joins = (w is not None and chamber.name not in w["members"] and w["key"] == (energy, dwell)
                     and now in (w["t0"], w["t1"]))
            if joins:
                w["members"].add(chamber.name)
                if not w["ended"]:
                    w["callbacks"].append(on_done)
                    return w["status"]
        if joins:  # the window already ended: read this chamber's counts of it now
            st = Status(obj=chamber)
            try:
                on_done(w["t0"], w["t1"])
            except Exception as exc:
                st.set_exception(exc)
                return st
            st.set_finished()
            return st
        w = {"key": (energy, dwell), "members": {chamber.name}, "callbacks": [on_done], "t0": now,
             "t1": now + dwell, "ended": False}

        def done(t0, t1):  # on the clock's timer thread: no chamber may join once the callbacks are taken
            with self._lock:
                w["ended"] = True
                callbacks = list(w["callbacks"])
            for cb in callbacks:
                cb(t0, t1)

        w["status"] = self.clock.action(dwell, on_done=done, obj=chamber)
        with self._lock:
            self.window = w
        return w["status"]


class SimIonChamber(Device):
    """Ion chamber + scaler. ``transmitted`` False: I0 (before the sample); True: It (after it).
    ``fail_next(mode)``: ``"nan"`` (a corrupted reading) or ``"timeout"`` (the count never ends)."""

    counts = Cpt(Signal, value=0.0, kind=Kind.hinted)
    dwell_s = Cpt(Signal, value=1.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, mono: SimMonochromator, sample: XASSample,
                 transmitted: bool, ring=None, gate: ScalerGate | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.mono, self.sample, self.ring = clock, mono, sample, ring
        self.gate = gate or ScalerGate(clock)
        self.transmitted = bool(transmitted)
        self._faults = FaultQueue("ion chamber", ("nan", "timeout"))

    def fail_next(self, mode: str = "nan", n: int = 1) -> None:
        """Make the next ``n`` counts fail: ``"nan"`` (NaN counts) or ``"timeout"`` (the status fails)."""
        self._faults.add(mode, n)

    def expected_counts(self, energy_eV: float, dwell_s: float, current_ma: float = REFERENCE_CURRENT_MA) -> float:
        lam = self.sample.i0_rate * dwell_s * current_ma / REFERENCE_CURRENT_MA
        return float(lam * np.exp(-self.sample.mut(energy_eV))) if self.transmitted else float(lam)

    def trigger(self):
        dwell = float(self.dwell_s.get())
        if not dwell > 0:
            raise ValueError(f"{self.name}: dwell time must be > 0 s, got {dwell!r}")
        energy = self.mono.position
        failure = self._faults.pop()

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: scaler did not report the end of the count")
            current = self.ring.mean_current(t0, t1) if self.ring is not None else REFERENCE_CURRENT_MA
            value = float(self.sample.rng.poisson(self.expected_counts(energy, dwell, current)))
            self.counts.put(np.nan if failure == "nan" else value)

        return self.gate.count(self, energy, dwell, done)


def ion_chambers(clock: SimClock, mono: SimMonochromator, sample: XASSample, ring=None,
                 dwell_s: float = 1.0) -> tuple[SimIonChamber, SimIonChamber]:
    """The (i0, it) pair on one sample and monochromator, gated together."""
    gate = ScalerGate(clock)
    i0 = SimIonChamber(name="i0", clock=clock, mono=mono, sample=sample, transmitted=False, ring=ring, gate=gate)
    it = SimIonChamber(name="it", clock=clock, mono=mono, sample=sample, transmitted=True, ring=ring, gate=gate)
    for d in (i0, it):
        d.dwell_s.put(float(dwell_s))
    return i0, it


class SharedDwell(Signal):
    """A settable 'dwell' (s) that sets the count time of several ion chambers at once: the
    actuator named in suggestions ``{"dwell": s}`` when a generic plan (``optimize_in_run``) drives them."""

    def __init__(self, chambers, **kwargs):
        super().__init__(value=float(chambers[0].dwell_s.get()), **kwargs)
        self._chambers = tuple(chambers)

    def put(self, value, **kwargs):
        if not float(value) > 0:
            raise ValueError(f"dwell must be > 0 s, got {value!r}")
        for c in self._chambers:
            c.dwell_s.put(float(value))
        super().put(float(value), **kwargs)
