"""Simulated ion chambers I0 (incident), It (transmitted) and Iref (after a reference foil) for XAS in
transmission (DESIGN §5).

Each trigger counts for ``dwell_s`` seconds of beamtime at the photons' energy E (the monochromator's
``photon_energy`` at the middle of the gate window: its readback unless a calibration offset or lag is set):
I0 ~ Poisson(N0), N0 = rate * dwell * current/100 mA, It ~ Poisson(N0 * exp(-mu*t(E))), mu*t from the
sample; Iref ~ Poisson(N0 * exp(-mu*t(E)) * exp(-mu_foil*t(E))), the foil an ``XASSample`` (its
amplitude a_f and offset b_f). With a ``BeamModel`` (``sim_devices.xas.beam``), N0 also carries the flux
spectrum and the glitches, and the transmitted chambers its harmonic and glitch terms.
Chambers sharing a ``ScalerGate`` count in the same gate window when triggered together (as scaler
channels do), so I0 and It of one point take one dwell of beamtime, not two.
"""

from __future__ import annotations

import threading

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import Status

from agent.core.words import plain
from sim_devices.core.clock import SimClock, refused
from sim_devices.core.faults import FaultQueue
from sim_devices.core.signals import CountsSignal, ElapsedSignal
from sim_devices.xas.beam import BeamModel
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample

REFERENCE_CURRENT_MA = 100.0


def _value(x):
    """A float for a 0-d result, else the array."""
    return float(x) if np.ndim(x) == 0 else np.asarray(x, float)


class ScalerGate:
    """A scaler's common gate: a chamber triggered while the current window (same energy and dwell,
    clock not advanced by anything else) has not counted it yet joins that window. The window's fault
    is reported once, by the status of the chamber that opened it; a chamber that joined gets a status
    of its own that completes when the window ends, either way (two failed statuses in one bluesky
    wait would throw the fault into the plan twice, the second time past the plan's handler)."""

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
                    joined = Status(obj=chamber)
                    w["status"].add_callback(lambda _: joined.set_finished())
                    return joined
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

        w["status"] = self.clock.action(dwell, on_done=done, obj=chamber, what="count")
        with self._lock:
            self.window = w
        return w["status"]


class SimIonChamber(Device):
    """Ion chamber + scaler. ``transmitted`` False: I0 (before the sample); True: It (after it), or,
    with a ``foil`` (an ``XASSample``: the reference foil, its μt(3E) ``foil_mut_3e``), Iref after the
    sample and the foil. ``beam``: the incident ``BeamModel`` (None: flat flux, no glitch, no harmonic).
    ``fail_next(mode)``: ``"nan"`` (a corrupted reading), ``"timeout"`` (the count ends reporting a
    failure) or ``"hang"`` (this chamber's count never ends: its status fails by its timeout).
    ``elapsed_s`` (read as ``<name>_elapsed_s``) is the count's own elapsed time (s), as a scaler's ``.T``."""

    counts = Cpt(CountsSignal, value=0.0, kind=Kind.hinted)
    elapsed_s = Cpt(ElapsedSignal, kind=Kind.normal)
    dwell_s = Cpt(Signal, value=1.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, mono: SimMonochromator, sample: XASSample,
                 transmitted: bool, ring=None, gate: ScalerGate | None = None, beam: BeamModel | None = None,
                 foil: XASSample | None = None, foil_mut_3e: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.mono, self.sample, self.ring = clock, mono, sample, ring
        self.beam, self.foil, self.foil_mut_3e = beam, foil, float(foil_mut_3e)
        if foil is not None and not transmitted:
            raise ValueError(f"{self.name}: a chamber behind a reference foil is a transmitted chamber")
        self.gate = gate or ScalerGate(clock)
        self.transmitted = bool(transmitted)
        self._faults = FaultQueue("ion chamber", ("nan", "timeout", "hang"))

    def fail_next(self, mode: str = "nan", n: int = 1, after: int = 0) -> None:
        """Make ``n`` counts fail after ``after`` good ones: ``"nan"`` (NaN counts), ``"timeout"`` (the
        status fails at the end of the count) or ``"hang"`` (the count never ends; the status times out)."""
        self._faults.add(mode, n, after)

    def expected_counts(self, energy_eV, dwell_s, current_ma=REFERENCE_CURRENT_MA):
        """Mean counts at the photons' energy ``energy_eV`` (eV) in ``dwell_s`` s at ``current_ma`` mA; a float,
        or an array for array arguments (broadcast)."""
        lam = self.sample.i0_rate * np.asarray(dwell_s, float) * np.asarray(current_ma, float) / REFERENCE_CURRENT_MA
        if self.beam is None and self.foil is None:  # the original truth, bit for bit
            return _value(lam * np.exp(-self.sample.mut(energy_eV, hold=True)) if self.transmitted
                          else lam * np.ones_like(np.asarray(energy_eV, float)))
        beam = self.beam or BeamModel()
        lam = lam * beam.flux(energy_eV)
        if not self.transmitted:
            return _value(lam)
        mut = self.sample.mut(energy_eV, hold=True)
        mut_3e = 0.0
        if self.foil is not None:
            mut, mut_3e = mut + self.foil.mut(energy_eV, hold=True), self.foil_mut_3e
        return _value(lam * beam.transmitted(mut, mut_3e, energy_eV))

    def trigger(self):
        dwell = float(self.dwell_s.get())
        if not (np.isfinite(dwell) and dwell > 0):
            return refused(self, "count", f"{self.name}: dwell time {dwell:g} s is not positive; refused before "
                                          "counting")
        energy = self.mono.position  # the readback: the gate's key
        lag = getattr(self.mono, "lag_eV", 0.0)  # the crystals' lag as the count starts
        failure = self._faults.pop()
        self.elapsed_s.put(0.0)
        if failure == "hang":  # this chamber never reports; it joins no gate window
            return self.clock.action(dwell, obj=self, what="count", hang=True)

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: scaler did not report the end of the count")
            current = self.ring.mean_current(t0, t1) if self.ring is not None else REFERENCE_CURRENT_MA
            photon = self.mono.photon_energy(0.5 * (t0 + t1), energy, lag) if hasattr(self.mono, "photon_energy") \
                else energy  # at the middle of the gate's window (a chamber may join it after it ended)
            value = float(self.sample.rng.poisson(self.expected_counts(photon, dwell, current)))
            self.counts.put(np.nan if failure == "nan" else value)
            self.elapsed_s.put(t1 - t0)

        return self.gate.count(self, energy, dwell, done)


def ion_chambers(clock: SimClock, mono: SimMonochromator, sample: XASSample, ring=None,
                 dwell_s: float = 1.0, beam: BeamModel | None = None, foil: XASSample | None = None,
                 foil_mut_3e: float = 0.0) -> tuple[SimIonChamber, ...]:
    """The (i0, it) pair on one sample and monochromator, gated together; with a ``foil`` (the
    reference foil, an ``XASSample``) the triple (i0, it, iref), all in one scaler gate."""
    gate = ScalerGate(clock)
    common = {"clock": clock, "mono": mono, "sample": sample, "ring": ring, "gate": gate, "beam": beam}
    chambers = [SimIonChamber(name="i0", transmitted=False, **common),
                SimIonChamber(name="it", transmitted=True, **common)]
    if foil is not None:
        chambers.append(SimIonChamber(name="iref", transmitted=True, foil=foil, foil_mut_3e=foil_mut_3e, **common))
    for d in chambers:
        d.dwell_s.put(float(dwell_s))
    return tuple(chambers)


class SharedDwell(Signal):
    """A settable 'dwell' (s) that sets the count time of several ion chambers at once: the
    actuator named in suggestions ``{"dwell": s}`` when a generic plan (``optimize_in_run``) drives them."""

    def __init__(self, chambers, **kwargs):
        super().__init__(value=float(chambers[0].dwell_s.get()), **kwargs)
        self._chambers = tuple(chambers)

    def put(self, value, **kwargs):
        if not float(value) > 0:
            raise ValueError(f"dwell must be > 0 s, got {plain(value)}")
        for c in self._chambers:
            c.dwell_s.put(float(value))
        super().put(float(value), **kwargs)
