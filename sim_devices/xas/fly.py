"""A simulated fly-scan scaler: the monochromator swept continuously through constant-speed segments while
a multichannel scaler advances one channel per energy bin (gated on the encoder), counting I0 and It.

Physics is the end station's own: each bin's counts are those of ``SimIonChamber.expected_counts`` of the
i0 and it chambers (sample, beam model, reference foil if any) integrated over the bin (``SUBSAMPLES``
midpoints, each at the photons' energy ``SimMonochromator.photon_energy`` at its time: calibration offset,
drift and the crystals' lash included), times the ring's mean current over the bin, then Poisson. The sweep
takes its duration (Σ bin/speed) of beamtime on the clock, ends with the monochromator at the stop energy,
and stores per bin the encoder readback at the bin's centre (``energy``), the requested centre
(``energy_requested``), ``i0``, ``it``, the gate time ``dwell`` (s) and the ring's mean current over it
(``ring_current``, mA). The bin integration (``subsamples``, ``photon_energies``, ``expected_bin_counts``) is
shared with the IOC's multichannel scaler (``sim_devices.xas.mcs``).
"""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal

from agent.xas.fly import segment_dwell
from sim_devices.core.clock import refused
from sim_devices.xas.ion_chambers import REFERENCE_CURRENT_MA, SimIonChamber

SUBSAMPLES = 4


def subsamples(lo_eV, width_eV, m: int = SUBSAMPLES) -> np.ndarray:
    """(K, m) encoder readbacks (eV) at the midpoints of ``m`` equal parts of each bin [lo, lo + width]."""
    lo, w = np.asarray(lo_eV, float), np.broadcast_to(np.asarray(width_eV, float), np.shape(lo_eV))
    return lo[:, None] + w[:, None] * ((np.arange(m) + 0.5) / m)[None, :]


def photon_energies(mono, readback: np.ndarray, times: np.ndarray, crystal_eV: float) -> tuple[np.ndarray, float]:
    """The photons' energy (eV) at each subsample of a sweep: the monochromator's ``photon_energy`` at beamtime
    ``times`` (s) and encoder ``readback`` (eV, same shape, in sweep order), the crystals dragged through the
    lash from ``crystal_eV`` (their position as the sweep starts: readback + lag); returns (photon, the crystals'
    position at the end)."""
    lash = float(getattr(mono, "lash_eV", 0.0))
    r = np.asarray(readback, float).ravel()
    crystal = np.empty_like(r)
    c = float(crystal_eV)
    if r.size and np.all(np.diff(r) >= 0):  # upward: once the play is taken up the crystals follow the readback
        c = min(max(c, r[0]), r[0] + lash)
        crystal[:] = np.maximum.accumulate(np.concatenate([[c], r[1:]]))
    else:
        for k, x in enumerate(r):
            c = min(max(c, x), x + lash)  # the crystals dragged through the play
            crystal[k] = c
    photon = np.asarray(mono.photon_energy(np.asarray(times, float).ravel(), r, crystal - r), float)
    return np.broadcast_to(photon, r.shape).reshape(np.shape(readback)).copy(), (float(crystal[-1]) if r.size else c)


def expected_bin_counts(chambers, photon: np.ndarray, dwell, current) -> list[np.ndarray]:
    """Mean counts per bin of each chamber (``SimIonChamber.expected_counts``): the (K, m) subsample photon
    energies (eV) each counted ``dwell``/m s (K,) at the bin's mean ring ``current`` (mA, (K,)), summed per bin."""
    m = photon.shape[1]
    d = (np.asarray(dwell, float) / m)[:, None]
    cur = np.asarray(current, float)[:, None]
    return [np.broadcast_to(ch.expected_counts(photon, d, cur), photon.shape).sum(1) for ch in chambers]


class FlyScalerInterface(Device):
    """What ``plans.xas.fly.adaptive_fly_xas`` sets and reads of a fly scaler, shared by the simulated one and the
    EPICS one (``bayesbeam.epics_fly.EpicsFlyScaler``): set ``start_eV`` (eV), ``bin_eV`` (eV), ``segments`` (flat
    [e0, e1, speed eV/s, ...]); ``max_speed_eV_s`` the controller's top speed; a sweep reads, per bin, ``energy``
    (the encoder readback at the bin's centre, eV), ``energy_requested`` (eV), ``i0``, ``it`` (counts), ``dwell``
    (the gate time, s) and ``ring_current`` (the ring's mean current over the gate, mA)."""

    energy = Cpt(Signal, value=np.zeros(0), kind=Kind.normal)
    energy_requested = Cpt(Signal, value=np.zeros(0), kind=Kind.normal)
    i0 = Cpt(Signal, value=np.zeros(0), kind=Kind.normal)
    it = Cpt(Signal, value=np.zeros(0), kind=Kind.normal)
    dwell = Cpt(Signal, value=np.zeros(0), kind=Kind.normal)
    ring_current = Cpt(Signal, value=np.zeros(0), kind=Kind.normal)
    total_i0 = Cpt(Signal, value=0.0, kind=Kind.hinted)
    start_eV = Cpt(Signal, value=np.nan, kind=Kind.config)
    bin_eV = Cpt(Signal, value=0.1, kind=Kind.config)
    segments = Cpt(Signal, value=[], kind=Kind.omitted)
    max_speed_eV_s = Cpt(Signal, value=20.0, kind=Kind.config)

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin centres eV, planned dwell s) of the set segments; ``ValueError`` for a bad trajectory."""
        segs = np.asarray(self.segments.get(), float).reshape(-1, 3)
        start = float(self.start_eV.get())
        if segs.size == 0 or not abs(segs[0, 0] - start) <= 1e-6:
            raise ValueError(f"{self.name}: the segments must start at start_eV = {start:g} eV")
        vmax = float(self.max_speed_eV_s.get())
        if np.any(segs[:, 2] > vmax * (1 + 1e-9)):
            raise ValueError(f"{self.name}: speed {segs[:, 2].max():g} eV/s above the controller's {vmax:g} eV/s")
        return segment_dwell(segs.tolist(), float(self.bin_eV.get()))


class SimFlyScaler(FlyScalerInterface):
    """Fly scan of ``mono`` counting the chambers ``i0``, ``it`` (``SimIonChamber``: their physics, sample rng and
    ring). Set ``start_eV``, ``bin_eV`` and ``segments`` (flat [e0, e1, speed eV/s, ...]), then ``trigger()``:
    refused (failed status, no beamtime) unless the monochromator is at ``start_eV`` (within half a bin), the
    segments start there and are contiguous, and every speed is in (0, ``max_speed_eV_s``]. ``fail_next(mode,
    bins)`` for the next sweep: ``"readback"`` (those bins' stored readback off by ``offset_eV``: an encoder
    glitch), ``"nan"`` (their counts NaN) or ``"timeout"`` (the sweep's status fails at its end)."""

    def __init__(self, *args, i0: SimIonChamber, it: SimIonChamber, max_speed_eV_s: float = 20.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.chambers = (i0, it)
        self.mono, self.clock = i0.mono, i0.clock
        self.max_speed_eV_s.put(float(max_speed_eV_s))
        self._fault: tuple[str, np.ndarray, float] | None = None
        self.sweeps = 0

    def fail_next(self, mode: str, bins=(), offset_eV: float = 0.5) -> None:
        """The next sweep's fault (class doc); ``bins``: indices of the affected bins."""
        if mode not in ("readback", "nan", "timeout"):
            raise ValueError(f"fly fault must be 'readback', 'nan' or 'timeout', got {mode!r}")
        self._fault = (mode, np.asarray(bins, int), float(offset_eV))

    def trigger(self):
        try:
            centres, dwell = self.trajectory()
            self.mono.check_value([centres[0], centres[-1]])
        except Exception as exc:
            return refused(self, "fly", str(exc))
        b = float(self.bin_eV.get())
        start = float(self.start_eV.get())
        if abs(self.mono.position - start) > b / 2:
            return refused(self, "fly", f"{self.name}: monochromator at {self.mono.position:.3f} eV, not at the sweep "
                                        f"start {start:.3f} eV")
        step = np.sign(centres[-1] - centres[0]) if centres.size > 1 else 1.0
        stop = float(centres[-1] + step * b / 2)
        fault, self._fault = self._fault, None
        lag0 = float(getattr(self.mono, "lag_eV", 0.0))

        def done(t0, t1):
            if fault is not None and fault[0] == "timeout":
                raise TimeoutError(f"{self.name}: the scaler did not report the end of the sweep")
            edges = t0 + np.concatenate([[0.0], np.cumsum(dwell)])
            readback = subsamples(centres - step * b / 2, step * b)  # (K, m) encoder
            times = edges[:-1, None] + dwell[:, None] * ((np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES)[None, :]
            photon, crystal = photon_energies(self.mono, readback, times, readback[0, 0] + lag0)
            ring = self.chambers[0].ring
            current = (np.array([ring.mean_current(a, z) for a, z in zip(edges[:-1], edges[1:], strict=True)])
                       if ring is not None else np.full(centres.size, REFERENCE_CURRENT_MA))
            counts = [ch.sample.rng.poisson(lam).astype(float)
                      for ch, lam in zip(self.chambers, expected_bin_counts(self.chambers, photon, dwell, current),
                                         strict=True)]
            stored = centres.copy()
            if fault is not None and fault[0] == "readback":
                stored[fault[1]] += fault[2]
            if fault is not None and fault[0] == "nan":
                counts[0][fault[1]] = np.nan
            self.energy_requested.put(centres)
            self.energy.put(stored)
            self.i0.put(counts[0])
            self.it.put(counts[1])
            self.dwell.put(dwell.copy())
            self.ring_current.put(current)
            self.total_i0.put(float(np.nansum(counts[0])))
            self.mono.lag_eV = crystal - stop
            self.mono.setpoint.put(stop)
            self.mono.energy.put(stop)
            self.sweeps += 1

        return self.clock.action(float(dwell.sum()), on_done=done, obj=self, what=f"fly {start:.1f}-{stop:.1f} eV")


def fly_scaler(endstation, name: str = "fly", max_speed_eV_s: float = 20.0) -> SimFlyScaler:
    """The fly scaler of an ``XASEndStation`` (its i0, it chambers and monochromator)."""
    return SimFlyScaler(name=name, i0=endstation.i0, it=endstation.it, max_speed_eV_s=max_speed_eV_s)
