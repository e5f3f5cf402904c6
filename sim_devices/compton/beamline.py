"""A simulated BL08W-style magnetic-Compton beamline: clock, ring, magnet and Ge detector."""

from __future__ import annotations

from dataclasses import dataclass

from sim_devices.compton.ge_detector import SimGeMCA
from sim_devices.compton.magnet import SimMagnet
from sim_devices.compton.samples import ComptonSample, compton_sample
from sim_devices.core.clock import SimClock
from sim_devices.core.ring import RingCurrent


@dataclass
class ComptonBeamline:
    clock: SimClock
    ring: RingCurrent
    magnet: SimMagnet
    ge: SimGeMCA
    sample: ComptonSample


def make_compton_beamline(sample: str = "fe", time_scale: float = 1e4, seed: int | None = None,
                          count_time_s: float = 60.0) -> ComptonBeamline:
    """Build the devices for ``sample`` (a preset name; ``ValueError`` if unknown), counting
    ``count_time_s`` seconds per spectrum, on a clock running ``time_scale`` × real time."""
    if not count_time_s > 0:
        raise ValueError(f"count time must be positive, got {count_time_s!r} s")
    s = compton_sample(sample)
    clock = SimClock(time_scale)
    ring = RingCurrent(name="ring", clock=clock)
    magnet = SimMagnet(name="magnet", clock=clock)
    ge = SimGeMCA(name="ge", clock=clock, sample=s, magnet=magnet, ring=ring, seed=seed)
    ge.preset_time.put(float(count_time_s))
    return ComptonBeamline(clock, ring, magnet, ge, s)
