"""Simulated Ge solid-state detector with an MCA, for magnetic Compton scattering (DESIGN §5).

Each trigger counts one spectrum for ``preset_time`` seconds of beamtime: Poisson counts per
channel from the sample physics, the magnet's field at the time and the mean ring current over
the count; plus an incident-beam monitor count for normalisation. Channel energies follow the
linear calibration E = offset + slope·channel (keV), as an MCA record stores it. Given a sample
temperature (``SimTemperature``) and its magnetisation model, the magnetic signal scales with
μs(T, B)/μs(0) over each count (``magnetic_scale``); without one it is exactly the preset's.
The spectrum, its rate and the live time come from the instrument (``sim_devices.compton.instrument``);
the configuration reports every ``ComptonGeometry`` field the analysis needs (κ the calibrated one).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal

from agent.compton.model import ComptonGeometry
from sim_devices.compton.instrument import Instrument
from sim_devices.compton.instrument import instrument as default_instrument
from sim_devices.compton.magnet import SimMagnet
from sim_devices.compton.samples import REFERENCE_CURRENT_MA, ComptonSample
from sim_devices.core.clock import SimClock, refused
from sim_devices.core.faults import FaultQueue
from sim_devices.core.ring import RingCurrent
from sim_devices.core.signals import ArraySignal, CountsSignal, ElapsedSignal


class SimGeMCA(Device):
    """Ge detector + MCA on the simulated clock. ``fail_next(mode)``: ``"nan"`` (a corrupted
    readout), ``"timeout"`` (the count ends reporting a failure) or ``"hang"`` (the count never
    reports done: its status fails by its timeout). ``elapsed_s`` (read as ``<name>_elapsed_s``)
    is the count's own elapsed time (s), as an MCA record's ``.ERTM``; ``live_s`` (``<name>_live_s``) its live time
    (s, the dead time's ideal live-time clock), as ``.ELTM``. ``calibration_error``: relative error of the
    reported κ against the true one (0: exact)."""

    n_channels = 1024
    spectrum = Cpt(ArraySignal, length=1024, dtype="<f8", kind=Kind.normal)
    monitor = Cpt(CountsSignal, value=0.0, kind=Kind.hinted)  # incident-beam monitor: the live panel of a spectrum
    elapsed_s = Cpt(ElapsedSignal, kind=Kind.normal)
    live_s = Cpt(ElapsedSignal, kind=Kind.normal)
    preset_time = Cpt(Signal, value=60.0, kind=Kind.config)
    calib_offset = Cpt(Signal, value=86.0, kind=Kind.config)
    calib_slope = Cpt(Signal, value=0.036, kind=Kind.config)
    incident_energy = Cpt(Signal, value=175.0, kind=Kind.config)
    scattering_angle = Cpt(Signal, value=178.0, kind=Kind.config)
    flipping_factor = Cpt(Signal, value=0.12, kind=Kind.config)
    # The other ComptonGeometry fields, under their own names (set from the instrument in __init__).
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

    def __init__(self, *args, clock: SimClock, sample: ComptonSample, magnet: SimMagnet, ring: RingCurrent,
                 seed: int | None = None, monitor_rate_cps: float = 1.0e6, monitor_noise: float = 1e-6,
                 saturation_field_t: float = 0.5, temperature=None, moment_model=None,
                 instrument: Instrument | None = None, calibration_error: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if (temperature is None) != (moment_model is None):
            raise ValueError("a sample temperature needs its magnetisation model μs(T, B), and vice versa")
        self.clock, self.sample, self.magnet, self.ring = clock, sample, magnet, ring
        self.temperature, self.moment_model = temperature, moment_model
        self.rng = np.random.default_rng(seed)
        self.monitor_rate_cps = float(monitor_rate_cps)
        self.monitor_noise = float(monitor_noise)
        self.saturation_field_t = float(saturation_field_t)
        self._faults = FaultQueue("detector", ("nan", "timeout", "hang"))
        self._geometry: ComptonGeometry | None = None
        self.instrument = instrument or default_instrument()
        self.calibration_error = float(calibration_error)
        self.calib_offset.put(self.instrument.calib_offset_kev)
        self.calib_slope.put(self.instrument.calib_slope_kev)
        config = self.instrument.geometry_settings(sample, self.calibration_error)
        signals = {"incident_kev": "incident_energy", "angle_deg": "scattering_angle"}
        for key, value in config.items():
            getattr(self, signals.get(key, key)).put(float(value))

    def geometry(self) -> ComptonGeometry:
        """The calibration and scattering geometry in the configuration signals."""
        signals = {"incident_kev": "incident_energy", "angle_deg": "scattering_angle"}
        g = ComptonGeometry.from_calibration(
            self.n_channels, self.calib_offset.get(), self.calib_slope.get(),
            **{f.name: float(getattr(self, signals.get(f.name, f.name)).get())
               for f in fields(ComptonGeometry) if f.name != "energy_kev"})
        if self._geometry is None or not self._geometry.same_as(g):
            self._geometry = g
        return self._geometry

    def fail_next(self, mode: str = "nan", n: int = 1, after: int = 0) -> None:
        """Make ``n`` counts fail after ``after`` good ones: ``"nan"`` (NaN counts), ``"timeout"`` (the
        status fails at the end of the count) or ``"hang"`` (the count never ends; the status times out)."""
        self._faults.add(mode, n, after)

    def magnetisation(self) -> float:
        """Sample magnetisation direction (−1…1) from the magnet readback (linear below saturation)."""
        return float(np.clip(self.magnet.readback.get() / self.saturation_field_t, -1.0, 1.0))

    def magnetic_scale(self, t0_s: float, t1_s: float, field_t: float) -> float | None:
        """μs(T, |B|)/μs(0) averaged over the count [t0_s, t1_s] (s of beamtime) at the field ``field_t`` (T),
        from the true sample temperature (``SimTemperature.true_temperature``, not the noisy readback); None
        without a sample temperature (the magnetic signal is then the preset's, exactly as before)."""
        if self.temperature is None:
            return None
        times = np.linspace(t0_s, t1_s, 9) if t1_s > t0_s else np.array([t0_s])
        temps = np.asarray(self.temperature.true_temperature(times), dtype=float)
        return float(np.mean(self.moment_model.reduced(temps, field_t)))

    def trigger(self):
        t = float(self.preset_time.get())
        if not (np.isfinite(t) and t > 0):
            return refused(self, "count", f"{self.name}: preset time {t:g} s is not positive; refused before counting")
        failure = self._faults.pop()
        m = self.magnetisation()
        field = float(self.magnet.readback.get())
        self.elapsed_s.put(0.0)
        self.live_s.put(0.0)

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: MCA did not report the end of acquisition")
            current = self.ring.mean_current(t0, t1)
            scale = self.magnetic_scale(t0, t1, field)
            geometry = self.geometry()
            mean, live = self.instrument.expected_counts(self.sample, geometry, 1.0, t, current, scale)
            if m != 1.0:
                minus, live_minus = self.instrument.expected_counts(self.sample, geometry, -1.0, t, current, scale)
                mean = minus * (1 - m) / 2 + mean * (1 + m) / 2
                live = live_minus * (1 - m) / 2 + live * (1 + m) / 2
            counts = self.rng.poisson(mean).astype(float)
            if failure == "nan":
                counts[self.rng.integers(0, counts.size, 8)] = np.nan
            self.spectrum.put(counts)
            charge = self.monitor_rate_cps * t * current / REFERENCE_CURRENT_MA
            self.monitor.put(float(charge * (1.0 + self.monitor_noise * self.rng.standard_normal())))
            self.elapsed_s.put(t1 - t0)
            self.live_s.put(live * (t1 - t0) / t)  # the live fraction of the count's own elapsed time

        return self.clock.action(t, on_done=done, obj=self, what="count", hang=failure == "hang")
