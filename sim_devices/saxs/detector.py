"""Simulated Pilatus-like photon-counting pixel detector for SAXS, with its beam monitors (DESIGN §5).

Each trigger exposes one frame of ``exposure_time`` seconds at the cell position the stage reads at the start
(``SAXSSample.frame``, the benchmarks' fast path, makes the counts), scaled by the ring's mean current over the
exposure when a ring is given; the frame occupies exposure + ``overhead_s`` seconds of beamtime on the clock.
Module gaps read −1, as a Pilatus writes them; a valid frame has no other negative pixel.
"""

from __future__ import annotations

import json

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal

from agent.saxs.geometry import DetectorGeometry
from sim_devices.core.clock import SimClock, refused
from sim_devices.core.faults import FaultQueue
from sim_devices.core.signals import CountsSignal, ElapsedSignal, ImageSignal
from sim_devices.saxs.samples import ExpectedFrame, SAXSSample, presets

CORRUPT_FRACTION = 0.02  # share of the active pixels a "corrupt" frame fills with negative garbage


class SimPixelDetector(Device):
    """Pixel detector on the simulated clock. ``image`` (int32, rows × cols), ``total`` (hinted: the frame's
    counts in its non-negative pixels), ``i0`` (upstream monitor counts over the frame), ``transmitted``
    (beam-stop photodiode counts over the frame), ``elapsed_s`` (the frame's exposure once done, 0 while it runs or
    after a failure). Configuration: ``exposure_time`` (s), ``overhead_s`` (s of beamtime per frame besides the
    exposure), ``attenuator`` (transmission of the beamline filters, 1 = none) and ``geometry`` (JSON of
    ``DetectorGeometry.config()``; ``DetectorGeometry.from_config(json.loads(...))`` rebuilds it).
    ``fail_next(mode)``: ``"corrupt"`` (a block of active pixels holds negative garbage), ``"timeout"`` (the frame
    ends reporting a failure) or ``"hang"`` (the frame never reports done: its status fails by its timeout)."""

    image = Cpt(ImageSignal, value=np.zeros((1, 1), dtype=np.int32), kind=Kind.normal)
    total = Cpt(CountsSignal, value=0.0, kind=Kind.hinted)
    i0 = Cpt(CountsSignal, value=0.0, kind=Kind.normal)
    transmitted = Cpt(CountsSignal, value=0.0, kind=Kind.normal)
    elapsed_s = Cpt(ElapsedSignal, kind=Kind.normal)
    exposure_time = Cpt(Signal, value=1.0, kind=Kind.config)
    overhead_s = Cpt(Signal, value=0.05, kind=Kind.config)
    attenuator = Cpt(Signal, value=1.0, kind=Kind.config)
    geometry = Cpt(Signal, value="{}", kind=Kind.config)

    def __init__(self, *args, clock: SimClock, sample: SAXSSample, geometry: DetectorGeometry, cell=None, ring=None,
                 seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.sample, self.cell, self.ring = clock, sample, cell, ring
        self.detector_geometry = geometry
        self.rng = np.random.default_rng(seed)
        self.geometry.put(json.dumps(geometry.config()))
        self.overhead_s.put(float(presets()["detector"]["overhead_s"]))
        self.image.put(geometry.gap_mask().astype(np.int32) * -1)
        self._faults = FaultQueue("pixel detector", ("corrupt", "timeout", "hang"))

    def fail_next(self, mode: str = "corrupt", n: int = 1, after: int = 0) -> None:
        """Make ``n`` frames fail after ``after`` good ones: ``"corrupt"``, ``"timeout"`` or ``"hang"`` (class
        docstring)."""
        self._faults.add(mode, n, after)

    def cell_position(self) -> float | str:
        """Where the cell is (mm; ``"sample"`` when the detector has no stage)."""
        return "sample" if self.cell is None else self.cell.position

    def frame_duration(self) -> float:
        """Beamtime of one frame (s): exposure + overhead."""
        return float(self.exposure_time.get()) + float(self.overhead_s.get())

    def expected(self) -> ExpectedFrame:
        """The expected counts of a frame now (cell position, exposure, attenuator; the reference current)."""
        return self.sample.expected_frame(self.detector_geometry, self.cell_position(),
                                          float(self.exposure_time.get()), attenuator=float(self.attenuator.get()))

    def _corrupt(self, image: np.ndarray) -> None:
        rows, cols = image.shape
        h, w = max(1, int(rows * CORRUPT_FRACTION ** 0.5)), max(1, int(cols * CORRUPT_FRACTION ** 0.5))
        r, c = self.rng.integers(0, rows - h + 1), self.rng.integers(0, cols - w + 1)
        block = image[r:r + h, c:c + w]
        block[:] = np.where(block < 0, block, self.rng.integers(-2**31, -1, size=block.shape, dtype=np.int32))

    def trigger(self):
        t = float(self.exposure_time.get())
        if not (np.isfinite(t) and t > 0):
            return refused(self, "exposure", f"{self.name}: exposure time {t:g} s is not positive; refused before "
                                             "exposing")
        attenuator = float(self.attenuator.get())
        if not (np.isfinite(attenuator) and 0 < attenuator <= 1):
            return refused(self, "exposure", f"{self.name}: attenuator transmission {attenuator:g} is not in (0, 1]; "
                                             "refused before exposing")
        failure = self._faults.pop()
        position = self.cell_position()
        self.elapsed_s.put(0.0)

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: detector did not report the end of the frame")
            current = None if self.ring is None else self.ring.mean_current(t0, t0 + t)
            frame = self.sample.frame(self.detector_geometry, position, t, self.rng, current_ma=current,
                                      attenuator=attenuator)
            image = frame.image
            if failure == "corrupt":
                self._corrupt(image)
            self.image.put(image)
            self.total.put(float(image[image >= 0].sum(dtype=np.int64)))
            self.i0.put(frame.i0)
            self.transmitted.put(frame.transmitted)
            self.elapsed_s.put(t)

        return self.clock.action(self.frame_duration(), on_done=done, obj=self, what=f"{t:g} s exposure",
                                 hang=failure == "hang")
