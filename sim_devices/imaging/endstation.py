"""Simulated full-field XAS-imaging end station (issue 15) on the simulated clock: the XAS monochromator, a
sample stage that moves the sample out of the field of view for flats, a fast shutter closed for darks, and a
scintillator + sCMOS area detector imaging a fixed field of view of an ``ImagingSample``.

What a frame is follows from where the hardware is, as at a beamline: shutter closed → a dark frame; shutter open,
stage at the sample-out position (|x − in| ≥ ``SAMPLE_HALF_WIDTH_MM``) → a flat; otherwise an image of the sample.
Each trigger is one frame (the plan averages ``n_flat`` flats and ``n_dark`` darks). Photons per pixel =
``n0`` × exposure × (the ring's mean current over the exposure / 100 mA) × P(x).

Noise indices: the energies are numbered in the order the detector first sees them (rounded to 1 meV); energy 0
is the registration reference. Each frame's noise is keyed by (seed, kind, energy number, repeat number of that
kind at that energy), so the same sequence of frames reproduces the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.utils import LimitError

from sim_devices.core.clock import SimClock, refused
from sim_devices.core.faults import FaultQueue
from sim_devices.core.signals import ElapsedSignal, ImageSignal
from sim_devices.imaging.detector import DetectorModel, TileFields, spectra_library
from sim_devices.imaging.sample import ImagingSample
from sim_devices.xas.monochromator import SimMonochromator

REFERENCE_CURRENT_MA = 100.0
SAMPLE_HALF_WIDTH_MM = 2.0  # the sample covers the field of view within ±2 mm of the stage's "in" position
CORRUPT_ROWS = 0.05  # share of the rows a "corrupt" frame reads as 0 ADU (lost packets)


class SimSampleStage(Device):
    """Sample stage (mm) on the simulated clock. ``set(x)`` takes mm or ``"in"``/``"out"`` (the ``in_mm`` and
    ``out_mm`` positions) and ``settle_s`` + |Δx|/``speed_mm_s`` s of beamtime; positions outside the limits raise
    ``LimitError`` before any motion. ``readback`` (hinted, mm); ``sample_in``: the sample fills the field of view.
    ``fail_next(mode)``: ``"stall"`` (the move stops halfway and reports done) or ``"hang"`` (never done)."""

    readback = Cpt(Signal, value=0.0, kind=Kind.hinted)
    setpoint = Cpt(Signal, value=0.0, kind=Kind.normal)
    in_mm = Cpt(Signal, value=0.0, kind=Kind.config)
    out_mm = Cpt(Signal, value=10.0, kind=Kind.config)
    speed_mm_s = Cpt(Signal, value=5.0, kind=Kind.config)
    settle_s = Cpt(Signal, value=0.2, kind=Kind.config)
    low_limit_mm = Cpt(Signal, value=-15.0, kind=Kind.config)
    high_limit_mm = Cpt(Signal, value=15.0, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.moves, self.move_time_s = 0, 0.0
        self._faults = FaultQueue("sample stage", ("stall", "hang"))

    @property
    def position(self) -> float:
        return float(self.readback.get())

    @property
    def sample_in(self) -> bool:
        """True when the sample fills the field of view (|x − in_mm| < ``SAMPLE_HALF_WIDTH_MM``)."""
        return abs(self.position - float(self.in_mm.get())) < SAMPLE_HALF_WIDTH_MM

    def target(self, value: float | str) -> float:
        """The position (mm) of ``value``: ``"in"``, ``"out"`` or mm."""
        if isinstance(value, str):
            if value.lower() not in ("in", "out"):
                raise ValueError(f"{self.name}: unknown position {value!r} (known: in, out)")
            return float((self.in_mm if value.lower() == "in" else self.out_mm).get())
        return float(value)

    def check_value(self, value) -> None:
        """Raise ``LimitError`` if the position (mm) is outside the limits or not finite."""
        x = self.target(value)
        lo, hi = float(self.low_limit_mm.get()), float(self.high_limit_mm.get())
        if not (np.isfinite(x) and lo <= x <= hi):
            raise LimitError(f"{self.name}: position {x:g} mm outside the range {lo:g}-{hi:g} mm")

    def fail_next(self, mode: str = "stall", n: int = 1, after: int = 0) -> None:
        """Make ``n`` moves fail after ``after`` good ones: ``"stall"`` or ``"hang"`` (class docstring)."""
        self._faults.add(mode, n, after)

    def move_time(self, target: float | str) -> float:
        """Seconds of beamtime to move from here to ``target``."""
        d = abs(self.target(target) - self.position)
        return 0.0 if d == 0 else float(self.settle_s.get()) + d / float(self.speed_mm_s.get())

    def set(self, value):
        x = self.target(value)
        self.check_value(x)
        failure = self._faults.pop()
        self.setpoint.put(x)
        duration = self.move_time(x)
        self.moves += duration > 0
        self.move_time_s += duration
        end = self.position + 0.5 * (x - self.position) if failure == "stall" else x
        return self.clock.action(duration, on_done=lambda t0, t1: self.readback.put(end), obj=self,
                                 what=f"move to {x:g} mm", hang=failure == "hang")


class SimShutter(Device):
    """Fast shutter: ``set("open" | "closed")`` takes ``move_s`` s of beamtime; ``state`` (hinted) reads it."""

    state = Cpt(Signal, value="open", kind=Kind.hinted)
    move_s = Cpt(Signal, value=0.05, kind=Kind.config)

    def __init__(self, *args, clock: SimClock, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock

    @property
    def is_open(self) -> bool:
        return self.state.get() == "open"

    def set(self, value):
        value = str(value).lower()
        if value not in ("open", "closed"):
            raise ValueError(f"{self.name}: unknown state {value!r} (known: open, closed)")
        duration = 0.0 if value == self.state.get() else float(self.move_s.get())
        return self.clock.action(duration, on_done=lambda t0, t1: self.state.put(value), obj=self,
                                 what=f"{value[:-1] if value == 'closed' else value}")


class SimFullFieldDetector(Device):
    """Scintillator + sCMOS area detector on the simulated clock, imaging the field of view ``origin`` (global
    px) + ``shape`` of the sample. Readings: ``image`` (float32 ADU, rows × cols; normal, as an area detector's
    array), ``mean`` (hinted: the frame's mean ADU), ``frame_type`` ("image", "flat" or "dark"), ``energy`` (eV,
    the photons' energy from the monochromator at the exposure's start), ``energy_index`` and ``repeat`` (the
    frame's noise indices, module docstring), ``incident`` (photons per pixel before the pattern and the sample),
    ``elapsed_s``. Configuration: ``exposure_s`` (s), ``n0`` (photons per pixel per second at 100 mA),
    ``readout_s`` (s of beamtime per frame besides the exposure), ``shape``, ``origin`` (JSON), ``model`` (JSON of
    the ``DetectorModel``). ``trigger()`` completes after exposure + readout on the clock. ``fail_next(mode)``:
    ``"corrupt"`` (5 % of the rows read 0 ADU), ``"timeout"`` (the frame ends reporting a failure) or ``"hang"``
    (never done: the status fails by its timeout)."""

    image = Cpt(ImageSignal, value=np.zeros((1, 1), np.float32), kind=Kind.normal)
    mean = Cpt(Signal, value=0.0, kind=Kind.hinted)
    frame_type = Cpt(Signal, value="", kind=Kind.normal)
    energy = Cpt(Signal, value=0.0, kind=Kind.normal)
    energy_index = Cpt(Signal, value=-1, kind=Kind.normal)
    repeat = Cpt(Signal, value=-1, kind=Kind.normal)
    incident = Cpt(Signal, value=0.0, kind=Kind.normal)
    elapsed_s = Cpt(ElapsedSignal, kind=Kind.normal)
    exposure_s = Cpt(Signal, value=1.0, kind=Kind.config)
    n0 = Cpt(Signal, value=1e4, kind=Kind.config)
    readout_s = Cpt(Signal, value=0.02, kind=Kind.config)
    shape = Cpt(Signal, value="[]", kind=Kind.config)
    origin = Cpt(Signal, value="[0, 0]", kind=Kind.config)
    model = Cpt(Signal, value="{}", kind=Kind.config)

    def __init__(self, *args, clock: SimClock, mono: SimMonochromator, sample: ImagingSample,
                 stage: SimSampleStage | None = None, shutter: SimShutter | None = None, ring=None,
                 shape: tuple[int, int] = (1000, 1000), origin: tuple[int, int] = (0, 0),
                 detector: DetectorModel | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.mono, self.sample, self.sample_stage, self.shutter, self.ring = clock, mono, sample, stage, \
            shutter, ring
        self.detector_model = detector or DetectorModel()
        self.frame_shape = tuple(int(s) for s in shape)
        self.frame_origin = tuple(int(o) for o in origin)
        self.seed = int(seed)
        self.shape.put(json.dumps(list(self.frame_shape)))
        self.origin.put(json.dumps(list(self.frame_origin)))
        self.model.put(json.dumps({k: getattr(self.detector_model, k) for k in self.detector_model.__annotations__}))
        self.n0.put(float(self.detector_model.n0))
        self.image.put(np.zeros(self.frame_shape, np.float32))
        self._fields: TileFields | None = None
        self._energies: dict[int, int] = {}  # energy (meV) → energy number
        self._repeats: dict[tuple[str, int], int] = {}
        self.frames = 0  # frames triggered
        self._faults = FaultQueue("imaging detector", ("corrupt", "timeout", "hang"))

    def fail_next(self, mode: str = "corrupt", n: int = 1, after: int = 0) -> None:
        """Make ``n`` frames fail after ``after`` good ones: ``"corrupt"``, ``"timeout"`` or ``"hang"``."""
        self._faults.add(mode, n, after)

    @property
    def fields(self) -> TileFields:
        """The field of view's fixed fields (built at the first frame: ~1 s per 10⁶ px)."""
        if self._fields is None:
            self._fields = TileFields(self.sample, self.detector_model, *self.frame_origin, *self.frame_shape,
                                      seed=self.seed)
        return self._fields

    def frame_duration(self) -> float:
        """Beamtime of one frame (s): exposure + readout."""
        return float(self.exposure_s.get()) + float(self.readout_s.get())

    def current_kind(self) -> str:
        """What a frame now would be: "dark" (shutter closed), "flat" (sample out) or "image"."""
        if self.shutter is not None and not self.shutter.is_open:
            return "dark"
        return "flat" if self.sample_stage is not None and not self.sample_stage.sample_in else "image"

    def _energy_number(self, energy_eV: float) -> int:
        return self._energies.setdefault(int(round(energy_eV * 1000)), len(self._energies))

    def _corrupt(self, image: np.ndarray) -> None:
        rows = max(1, int(image.shape[0] * CORRUPT_ROWS))
        r = np.random.default_rng([self.seed, 99, self.frames]).integers(0, image.shape[0] - rows + 1)
        image[r:r + rows] = 0.0

    def trigger(self):
        t = float(self.exposure_s.get())
        if not (np.isfinite(t) and t > 0):
            return refused(self, "exposure", f"{self.name}: exposure time {t:g} s is not positive; refused before "
                                             "exposing")
        energy = float(self.mono.photon_energy())
        lib = spectra_library()
        if not lib.energy[0] <= energy <= lib.energy[-1]:
            return refused(self, "exposure", f"{self.name}: photon energy {energy:.2f} eV outside the sample's "
                                             f"tabulated range {lib.energy[0]:.2f}-{lib.energy[-1]:.2f} eV")
        failure = self._faults.pop()
        kind = self.current_kind()
        index = self._energy_number(energy)
        repeat = self._repeats.get((kind, index), 0)
        self._repeats[(kind, index)] = repeat + 1
        self.frames += 1
        self.elapsed_s.put(0.0)

        def done(t0, t1):
            if failure == "timeout":
                raise TimeoutError(f"{self.name}: detector did not report the end of the frame")
            current = REFERENCE_CURRENT_MA if self.ring is None else self.ring.mean_current(t0, t0 + t)
            n0 = float(self.n0.get()) * t * current / REFERENCE_CURRENT_MA
            f = self.fields
            if kind == "dark":
                image = f.dark_frame(repeat, n_avg=1)
            elif kind == "flat":
                image = f.flat(index, range(repeat, repeat + 1), n_avg=1, n0=n0)
            else:
                image = f.image(energy, index, range(repeat, repeat + 1), n0=n0)
            if failure == "corrupt":
                self._corrupt(image)
            self.image.put(image)
            self.mean.put(float(image.mean(dtype=np.float64)))
            self.frame_type.put(kind)
            self.energy.put(energy)
            self.energy_index.put(index)
            self.repeat.put(repeat)
            self.incident.put(0.0 if kind == "dark" else n0)
            self.elapsed_s.put(t)

        return self.clock.action(self.frame_duration(), on_done=done, obj=self, what=f"{t:g} s exposure",
                                 hang=failure == "hang")


@dataclass
class ImagingEndStation:
    """The devices of the full-field XAS-imaging end station and the sample (the truth)."""

    clock: SimClock
    sample: ImagingSample
    mono: SimMonochromator
    detector: SimFullFieldDetector
    stage: SimSampleStage
    shutter: SimShutter
    ring: object = None

    @property
    def detectors(self) -> list[SimFullFieldDetector]:
        """[detector]: the plan's detectors."""
        return [self.detector]

    @property
    def model(self) -> DetectorModel:
        return self.detector.detector_model


def make_imaging_endstation(sample: ImagingSample, clock: SimClock, ring=None, shape: tuple[int, int] = (1000, 1000),
                            detector: DetectorModel | None = None, seed: int = 0, origin: tuple[int, int] = (0, 0),
                            exposure_s: float = 1.0, settle_s: float = 0.3, speed_eV_s: float = 20.0,
                            mono: SimMonochromator | None = None) -> ImagingEndStation:
    """The imaging devices on ``clock``: the monochromator ``mono`` over the library's range (eV, starting at its
    low end; the XAS end station's class), the sample stage ``sample_x`` (sample in), the shutter (open) and the
    detector ``imaging_det`` of ``shape`` px at ``origin`` (global px) with ``detector`` (default
    ``DetectorModel()``) and noise ``seed``, frames of ``exposure_s`` s (n0 = the model's n0 per
    ``exposure_s``); counts follow ``ring`` (mA) when given. ``mono``: the beamline's monochromator instead of a
    new one (a session's XAS end station and imaging share it); its limits must hold the library's range."""
    if not exposure_s > 0:
        raise ValueError(f"exposure must be positive, got {exposure_s!r} s")
    model = detector or DetectorModel()
    lib = spectra_library()
    lo, hi = float(lib.energy[0]), float(lib.energy[-1])
    if mono is None:
        mono = SimMonochromator(name="mono", clock=clock, limits_eV=(lo, hi), start_eV=lo, settle_time_s=settle_s,
                                speed_eV_s=speed_eV_s)
    elif not (mono.limits[0] <= lo and hi <= mono.limits[1]):
        raise ValueError(f"monochromator {mono.name} limits {mono.limits} eV do not hold the imaging library's "
                         f"{lo:g}-{hi:g} eV")
    stage = SimSampleStage(name="sample_x", clock=clock)
    shutter = SimShutter(name="shutter", clock=clock)
    det = SimFullFieldDetector(name="imaging_det", clock=clock, mono=mono, sample=sample, stage=stage,
                               shutter=shutter, ring=ring, shape=shape, origin=origin, detector=model, seed=seed)
    det.exposure_s.put(float(exposure_s))
    det.n0.put(float(model.n0) / float(exposure_s))
    return ImagingEndStation(clock, sample, mono, det, stage, shutter, ring)
