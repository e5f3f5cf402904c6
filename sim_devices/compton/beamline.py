"""A simulated BL08W-style magnetic-Compton beamline: clock, ring, magnet and Ge detector, optionally a
sample temperature (``sample_temp``) with the sample's μs(T, B)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_devices.compton.ge_detector import SimGeMCA
from sim_devices.compton.magnet import SimMagnet
from sim_devices.compton.magnetisation import Magnetisation, magnetisation_model
from sim_devices.compton.samples import ComptonSample, compton_sample
from sim_devices.compton.temperature import SimTemperature
from sim_devices.core.clock import SimClock
from sim_devices.core.ring import RingCurrent


@dataclass
class ComptonBeamline:
    clock: SimClock
    ring: RingCurrent
    magnet: SimMagnet
    ge: SimGeMCA
    sample: ComptonSample
    sample_temp: SimTemperature | None = None
    magnetisation: Magnetisation | None = None

    def true_spin_moment_mub(self, temperature_k: float | None = None, field_t: float | None = None) -> float:
        """The simulation's true μs (μB) at ``temperature_k`` (K; default: the true sample temperature now)
        and ``field_t`` (T; default: the magnet readback); the preset's μs without a sample temperature."""
        if self.sample_temp is None:
            return self.sample.spin_moment_mub
        temp = self.sample_temp.true_temperature(self.clock.now) if temperature_k is None else temperature_k
        field = self.magnet.readback.get() if field_t is None else field_t
        return float(self.magnetisation.spin_moment(self.sample.spin_moment_mub, temp, field))


def make_compton_beamline(sample: str = "fe", time_scale: float = 1e4, seed: int | None = None,
                          count_time_s: float = 60.0, with_temperature: bool = False,
                          start_temperature_k: float = 295.0, calibration_error: float = 0.0) -> ComptonBeamline:
    """Build the devices for ``sample`` (a preset name; ``ValueError`` if unknown), counting
    ``count_time_s`` seconds per spectrum, on a clock running ``time_scale`` × real time. With
    ``with_temperature`` the sample sits in a temperature controller ``sample_temp`` (K) starting at
    ``start_temperature_k`` and its magnetic signal follows μs(T, B) (``ValueError`` for a sample without a
    magnetisation model: Fe only so far); without it nothing differs from before. ``calibration_error``:
    relative error of the detector's reported κ (the reference calibration's), 0 by default."""
    if not count_time_s > 0:
        raise ValueError(f"count time must be positive, got {count_time_s!r} s")
    s = compton_sample(sample)
    clock = SimClock(time_scale)
    ring = RingCurrent(name="ring", clock=clock)
    magnet = SimMagnet(name="magnet", clock=clock)
    temp = model = None
    if with_temperature:
        model = magnetisation_model(s.element)
        temp_seed = None if seed is None else np.random.SeedSequence([seed, 1043])
        temp = SimTemperature(name="sample_temp", clock=clock, start_k=start_temperature_k, seed=temp_seed)
    ge = SimGeMCA(name="ge", clock=clock, sample=s, magnet=magnet, ring=ring, seed=seed, temperature=temp,
                  moment_model=model, calibration_error=calibration_error)
    ge.preset_time.put(float(count_time_s))
    return ComptonBeamline(clock, ring, magnet, ge, s, temp, model)
