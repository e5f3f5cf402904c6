"""A simulated SAXS end station (BL40B2-like) on a given or new clock and ring: the cell stage ``cell_x``, the
pixel detector ``saxs_det`` with its monitors, and the sample."""

from __future__ import annotations

from dataclasses import dataclass

from agent.saxs.geometry import DetectorGeometry, detector_geometry
from sim_devices.core.clock import SimClock
from sim_devices.core.ring import RingCurrent
from sim_devices.saxs.detector import SimPixelDetector
from sim_devices.saxs.samples import SAXSSample, presets, saxs_sample
from sim_devices.saxs.stage import SimCellStage, cell_contents


@dataclass
class SAXSEndStation:
    """The devices of a SAXS end station, the sample (the truth) and the presets they were built from."""

    clock: SimClock
    ring: RingCurrent
    det: SimPixelDetector
    cell: SimCellStage
    sample: SAXSSample
    presets: dict

    @property
    def geometry(self) -> DetectorGeometry:
        return self.det.detector_geometry

    @property
    def detectors(self) -> list[SimPixelDetector]:
        """[det]: the plan's detectors."""
        return [self.det]


def make_saxs_endstation(sample: str | SAXSSample = "silica-50nm", clock: SimClock | None = None,
                         ring: RingCurrent | None = None, detector: str | dict | DetectorGeometry = "pilatus-300k",
                         seed: int | None = None, time_scale: float = 1e4, exposure_s: float = 1.0,
                         attenuator: float = 1.0) -> SAXSEndStation:
    """The SAXS devices for ``sample`` (a preset name, ``ValueError`` with the close names if unknown, or a
    ``SAXSSample``, used as is) on ``clock`` (default: a new ``SimClock(time_scale)``) and ``ring`` (default: a new
    ``RingCurrent`` "ring" on that clock); ``detector``: a geometry preset name (``GEOMETRIES``), a geometry
    config or a ``DetectorGeometry``. The cell starts on the sample; frames of ``exposure_s`` s through filters
    of transmission ``attenuator``."""
    s = sample if isinstance(sample, SAXSSample) else saxs_sample(sample)
    geometry = detector_geometry(detector)
    if not exposure_s > 0:
        raise ValueError(f"exposure must be positive, got {exposure_s!r} s")
    if not 0 < attenuator <= 1:
        raise ValueError(f"attenuator transmission must be in (0, 1], got {attenuator!r}")
    clock = SimClock(time_scale) if clock is None else clock
    ring = RingCurrent(name="ring", clock=clock) if ring is None else ring
    cell = SimCellStage(name="cell_x", clock=clock, contents=cell_contents(s.name, s.buffer))
    det = SimPixelDetector(name="saxs_det", clock=clock, sample=s, geometry=geometry, cell=cell, ring=ring, seed=seed)
    det.exposure_time.put(float(exposure_s))
    det.attenuator.put(float(attenuator))
    return SAXSEndStation(clock, ring, det, cell, s, presets())
