"""Simulated hemispherical electron analyser (fixed-window sweep mode) for 3d XPS (DESIGN §5).

Each trigger records one sweep over ``n_points`` binding energies (eV, relative to the bare core
level) with ``dwell_time`` seconds per channel: Poisson counts from the sample physics
(sim_devices.xps.samples), scaled by the mean ring current over the sweep when a ring is given.
A sweep occupies n_points·dwell_time + sweep_overhead seconds of beamtime on the shared clock.
:class:`SimWideAnalyser`: the same over FULL_ENERGIES (−25…+30 eV, 0.2 eV), for the full-line-shape samples
(sim_devices.xps.samples.FullXPSSample), which it tells the index of each sweep (beam-induced reduction).
"""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal

from sim_devices.core.clock import SimClock, refused
from sim_devices.core.faults import FaultQueue
from sim_devices.core.signals import ArraySignal, ElapsedSignal
from sim_devices.xps.samples import DEFAULT_ENERGIES, FULL_ENERGIES, FullXPSSample, XPSSample

REFERENCE_CURRENT_MA = 100.0


class SimElectronAnalyser(Device):
    """Electron analyser on the simulated clock. ``fail_next(mode)``: ``"nan"`` (corrupted sweep),
    ``"timeout"`` (the sweep ends reporting a failure) or ``"hang"`` (the sweep never reports done:
    its status fails by its timeout). ``elapsed_s`` (read as ``<name>_elapsed_s``) is the sweep's own
    elapsed time (s); ``total`` (hinted) the sweep's counts summed (NaN for a corrupted sweep), the scalar a
    live table or plot shows (the spectrum itself is an array, which BestEffortCallback cannot plot)."""

    n_points = DEFAULT_ENERGIES.size
    counts = Cpt(ArraySignal, length=DEFAULT_ENERGIES.size, dtype="<f8", kind=Kind.normal)
    total = Cpt(Signal, value=0.0, kind=Kind.hinted)  # counts of the sweep summed: what a live plot can show
    energies = Cpt(ArraySignal, length=DEFAULT_ENERGIES.size, dtype="<f8", kind=Kind.normal)
    elapsed_s = Cpt(ElapsedSignal, kind=Kind.normal)
    dwell_time = Cpt(Signal, value=0.1, kind=Kind.config)
    sweep_overhead = Cpt(Signal, value=2.0, kind=Kind.config)
    pass_energy = Cpt(Signal, value=50.0, kind=Kind.config)

    window = DEFAULT_ENERGIES

    def __init__(self, *args, clock: SimClock, sample: XPSSample | FullXPSSample, ring=None, seed: int | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.sample, self.ring = clock, sample, ring
        self.rng = np.random.default_rng(seed)
        self.energies.put(self.window.copy())
        self.sweeps_done = 0  # sweeps the sample has been exposed to (a full sample's reduction follows it)
        self._faults = FaultQueue("analyser", ("nan", "timeout", "hang"))

    def fail_next(self, mode: str = "nan", n: int = 1, after: int = 0) -> None:
        """Make ``n`` sweeps fail after ``after`` good ones: ``"nan"`` (NaN counts), ``"timeout"`` (the
        status fails at the end of the sweep) or ``"hang"`` (the sweep never ends; the status times out)."""
        self._faults.add(mode, n, after)

    def sweep_duration(self) -> float:
        """Beamtime of one sweep (s)."""
        return self.n_points * float(self.dwell_time.get()) + float(self.sweep_overhead.get())

    def trigger(self):
        dwell = float(self.dwell_time.get())
        if not (np.isfinite(dwell) and dwell > 0):
            return refused(self, "sweep", f"{self.name}: dwell time {dwell:g} s is not positive; refused before "
                                          "sweeping")
        failure = self._faults.pop()
        energies = np.asarray(self.energies.get(), dtype=float)
        self.elapsed_s.put(0.0)

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: analyser did not report the end of the sweep")
            scale = 1.0 if self.ring is None else self.ring.mean_current(t0, t1) / REFERENCE_CURRENT_MA
            if isinstance(self.sample, FullXPSSample):
                rate = self.sample.rate(energies, self.sweeps_done)
            else:
                rate = self.sample.rate(energies)
            self.sweeps_done += 1
            counts = self.rng.poisson(rate * dwell * scale).astype(float)
            if failure == "nan":
                counts[self.rng.integers(0, counts.size, 8)] = np.nan
            self.counts.put(counts)
            self.total.put(float(np.sum(counts)))
            self.elapsed_s.put(t1 - t0)

        return self.clock.action(self.sweep_duration(), on_done=done, obj=self, what="sweep",
                                 hang=failure == "hang")


class SimWideAnalyser(SimElectronAnalyser):
    """The analyser over FULL_ENERGIES (both 3d spin-orbit halves), for the full-line-shape samples."""

    n_points = FULL_ENERGIES.size
    window = FULL_ENERGIES
    counts = Cpt(ArraySignal, length=FULL_ENERGIES.size, dtype="<f8", kind=Kind.normal)
    energies = Cpt(ArraySignal, length=FULL_ENERGIES.size, dtype="<f8", kind=Kind.normal)


def analyser_for(sample: XPSSample | FullXPSSample, **kw) -> SimElectronAnalyser:
    """The simulated analyser a sample is measured with: SimWideAnalyser for a full-line-shape sample (both
    spin-orbit halves, for the Poisson analysis), SimElectronAnalyser for the seed's line shape; ``kw``: the
    device's (name, clock, seed …)."""
    return (SimWideAnalyser if isinstance(sample, FullXPSSample) else SimElectronAnalyser)(sample=sample, **kw)
