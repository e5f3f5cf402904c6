"""The geometry of a flat photon-counting pixel detector (Pilatus-like) normal to the beam, as pyFAI sees it.

Conventions (pyFAI's, so a ``DetectorGeometry`` is a poni file): arrays are (rows, cols) = (slow, fast) =
pyFAI's (dim1, dim2); pixel ``i`` covers [i, i + 1) in pixel coordinates, so its centre is at i + 0.5 and
the beam centre ``(row, col)`` is pyFAI's PONI / pixel size (Fit2D's centre y, x) for an untilted detector.
Distances in m, wavelength in nm, q in nm⁻¹. Masks are bool arrays, True = masked (pyFAI's convention). A
Pilatus writes −1 in module-gap pixels (and −2 in dead ones): a reduction masks ``frame < 0`` as well.

The module layout is the Pilatus one: modules of ``module_shape`` pixels tiled from the (0, 0) corner with
``gap_px`` dead rows / columns between neighbours (Pilatus 300K: 3 × 1 modules of 195 × 487 px, 17-row
gaps → 619 × 487; Pilatus 1M: 5 × 2 modules → 1043 × 981, 7-column gap), the layout of pyFAI's
``Pilatus300k`` / ``Pilatus1M`` detector masks. The beam stop is a disc of ``beamstop_radius_px`` about the
beam centre with, when ``beamstop_arm_width_px`` > 0, its holding arm: a strip of that width from the centre
along +col to the detector's edge.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class DetectorGeometry:
    """A flat photon-counting pixel detector normal to the beam (Pilatus-like), as pyFAI sees it: ``shape``
    (rows, cols) of ``pixel_m`` (m) square pixels, modules of ``module_shape`` px separated by ``gap_px``
    (rows, cols) dead pixels, ``distance_m`` (m) from the sample, the direct beam at ``beam_center_px``
    (row, col; pyFAI pixel coordinates, module docstring), X-rays of ``wavelength_nm`` (nm), a round beam
    stop of ``beamstop_radius_px`` (px) on an arm ``beamstop_arm_width_px`` (px) wide along +col, and the
    beam's ``polarisation_factor`` (pyFAI's ``polarization_factor``: 1 = fully polarised along the cols
    axis, i.e. horizontally; 0 = unpolarised)."""

    name: str
    shape: tuple[int, int]
    pixel_m: float
    module_shape: tuple[int, int]
    gap_px: tuple[int, int]
    distance_m: float
    beam_center_px: tuple[float, float]
    wavelength_nm: float
    beamstop_radius_px: float
    beamstop_arm_width_px: float = 0.0
    polarisation_factor: float = 0.95

    def __post_init__(self):
        rows, cols = self.shape
        mr, mc = self.module_shape
        gr, gc = self.gap_px
        ok = (rows > 0 and cols > 0 and mr > 0 and mc > 0 and gr >= 0 and gc >= 0
              and self.pixel_m > 0 and self.distance_m > 0 and self.wavelength_nm > 0
              and self.beamstop_radius_px >= 0 and self.beamstop_arm_width_px >= 0
              and -1.0 <= self.polarisation_factor <= 1.0
              and all(math.isfinite(float(c)) for c in self.beam_center_px))
        if not ok:
            raise ValueError(f"invalid detector geometry {self.name!r}: {self.config()}")
        if (rows + gr) % (mr + gr) or (cols + gc) % (mc + gc):
            raise ValueError(f"detector geometry {self.name!r}: shape {self.shape} is not a whole number of "
                             f"{self.module_shape} modules with {self.gap_px} gaps")

    @property
    def modules(self) -> tuple[int, int]:
        """Modules along (rows, cols)."""
        return ((self.shape[0] + self.gap_px[0]) // (self.module_shape[0] + self.gap_px[0]),
                (self.shape[1] + self.gap_px[1]) // (self.module_shape[1] + self.gap_px[1]))

    @property
    def wavelength_m(self) -> float:
        """Wavelength (m), pyFAI's unit."""
        return self.wavelength_nm * 1e-9

    @property
    def energy_keV(self) -> float:
        """Photon energy (keV): hc/λ."""
        return 1.239841984 / self.wavelength_nm

    def gap_mask(self) -> np.ndarray:
        """bool (rows, cols), True = no pixel (a gap between modules). Each call a writable copy of the cached mask."""
        return _gap_mask(self).copy()

    def beamstop_mask(self) -> np.ndarray:
        """bool (rows, cols), True = behind the beam stop (disc and arm). Each call a writable copy."""
        return _beamstop_mask(self).copy()

    def static_mask(self) -> np.ndarray:
        """bool (rows, cols), True = masked: module gaps and beam stop (with its arm). Each call a writable copy
        (pyFAI refuses read-only masks)."""
        return _static_mask(self).copy()

    def integrator(self):
        """The pyFAI ``AzimuthalIntegrator`` of this geometry (its detector's mask: the module gaps), one per
        geometry (cached): share it, do not change it."""
        return _integrator(self)

    def q_map(self) -> np.ndarray:
        """q (nm⁻¹) at each pixel centre, (rows, cols), from pyFAI (``array_from_unit``). Each call a writable copy."""
        return _q_map(self).copy()

    def solid_angle(self) -> np.ndarray:
        """Solid angle (sr) of each pixel, (rows, cols): pyFAI's ``solidAngleArray(absolute=True)``, i.e.
        pixel²/distance² · cos³(2θ). Each call a writable copy."""
        return _solid_angle(self).copy()

    def polarisation(self) -> np.ndarray:
        """pyFAI's polarisation factor of each pixel for ``polarisation_factor`` (≤ 1, 1 on the beam axis).
        Each call a writable copy."""
        return _polarisation(self).copy()

    def q_limits(self, mask: np.ndarray | None = None) -> tuple[float, float]:
        """(min, max) q (nm⁻¹) of the centres of the pixels neither in ``static_mask()`` nor in ``mask`` (bool,
        True = masked); ``ValueError`` if nothing is left."""
        masked = _static_mask(self)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.shape:
                raise ValueError(f"mask of shape {mask.shape} for a {self.shape[0]} × {self.shape[1]} detector")
            masked = masked | mask
        q = _q_map(self)[~masked]
        if q.size == 0:
            raise ValueError(f"{self.name}: every pixel is masked")
        return float(q.min()), float(q.max())

    def poni(self) -> dict:
        """pyFAI's PONI parameters (m, rad): dist, poni1, poni2, rot1–3, wavelength, pixel1, pixel2."""
        return {"dist": self.distance_m, "poni1": self.beam_center_px[0] * self.pixel_m,
                "poni2": self.beam_center_px[1] * self.pixel_m, "rot1": 0.0, "rot2": 0.0, "rot3": 0.0,
                "wavelength": self.wavelength_m, "pixel1": self.pixel_m, "pixel2": self.pixel_m}

    def config(self) -> dict:
        """Plain JSON values (tuples as lists); ``DetectorGeometry.from_config`` rebuilds the geometry."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict) -> DetectorGeometry:
        """The geometry of ``config()`` (lists or tuples); ``ValueError`` naming unknown or missing keys."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown detector geometry keys {unknown}; known: {sorted(names)}")
        values = dict(config)
        try:
            for key, kind in (("shape", int), ("module_shape", int), ("gap_px", int), ("beam_center_px", float)):
                values[key] = tuple(kind(v) for v in values[key])
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete detector geometry config: {exc}") from None


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=16)
def _gap_mask(g: DetectorGeometry) -> np.ndarray:
    def axis(n, module, gap):
        return (np.arange(n) % (module + gap)) >= module

    rows = axis(g.shape[0], g.module_shape[0], g.gap_px[0])
    cols = axis(g.shape[1], g.module_shape[1], g.gap_px[1])
    return _readonly(rows[:, None] | cols[None, :])


@lru_cache(maxsize=16)
def _beamstop_mask(g: DetectorGeometry) -> np.ndarray:
    r = np.arange(g.shape[0])[:, None] + 0.5 - g.beam_center_px[0]
    c = np.arange(g.shape[1])[None, :] + 0.5 - g.beam_center_px[1]
    mask = r**2 + c**2 <= g.beamstop_radius_px**2
    if g.beamstop_arm_width_px > 0:
        mask = mask | ((np.abs(r) <= g.beamstop_arm_width_px / 2) & (c >= 0))
    return _readonly(mask)


@lru_cache(maxsize=16)
def _static_mask(g: DetectorGeometry) -> np.ndarray:
    return _readonly(_gap_mask(g) | _beamstop_mask(g))


@lru_cache(maxsize=16)
def _integrator(g: DetectorGeometry):
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    detector = Detector(pixel1=g.pixel_m, pixel2=g.pixel_m, max_shape=g.shape)
    detector.mask = _gap_mask(g).astype(np.int8)
    p = g.poni()
    return AzimuthalIntegrator(dist=p["dist"], poni1=p["poni1"], poni2=p["poni2"], detector=detector,
                               wavelength=p["wavelength"])


@lru_cache(maxsize=16)
def _q_map(g: DetectorGeometry) -> np.ndarray:
    q = _integrator(g).array_from_unit(shape=g.shape, typ="center", unit="q_nm^-1", scale=True)
    return _readonly(np.ascontiguousarray(q, dtype=np.float64))


@lru_cache(maxsize=16)
def _solid_angle(g: DetectorGeometry) -> np.ndarray:
    sa = _integrator(g).solidAngleArray(g.shape, absolute=True)
    return _readonly(np.ascontiguousarray(sa, dtype=np.float64))


@lru_cache(maxsize=16)
def _polarisation(g: DetectorGeometry) -> np.ndarray:
    p = _integrator(g).polarization(g.shape, factor=g.polarisation_factor)
    return _readonly(np.ascontiguousarray(p, dtype=np.float64))


# Presets. Pilatus module: 487 × 195 px of 172 µm with 7-px (column) and 17-px (row) gaps (DECTRIS data
# sheets; pyFAI's Pilatus300k/Pilatus1M masks). 12.4 keV, λ = 0.1 nm and 2–4 m camera lengths: SPring-8
# BL40B2's usual SAXS settings (beamline pages; the exact values here are choices, unverified). Beam stop
# ≈ 2 mm radius (12 px) on a 1.4 mm (8 px) arm: unverified, typical of a small-angle setup. Beam centres are
# choices inside a module (not in a gap), off-centre so that the arm is short and the q range long.
# Polarisation 0.95 horizontal: a bending-magnet beam near the orbit plane (unverified); at 2θ < 3° it
# changes intensities by < 0.1 %.
GEOMETRIES: dict[str, DetectorGeometry] = {
    "pilatus-300k": DetectorGeometry(
        name="pilatus-300k", shape=(619, 487), pixel_m=172e-6, module_shape=(195, 487), gap_px=(17, 7),
        distance_m=3.0, beam_center_px=(309.5, 340.0), wavelength_nm=0.1, beamstop_radius_px=12.0,
        beamstop_arm_width_px=8.0),
    "pilatus-1m": DetectorGeometry(
        name="pilatus-1m", shape=(1043, 981), pixel_m=172e-6, module_shape=(195, 487), gap_px=(17, 7),
        distance_m=3.0, beam_center_px=(521.5, 640.0), wavelength_nm=0.1, beamstop_radius_px=12.0,
        beamstop_arm_width_px=8.0),
}


def detector_geometry(name_or_config: str | dict | DetectorGeometry) -> DetectorGeometry:
    """A preset by name (any case; ``ValueError`` with the close names), a ``config()`` dict, or itself."""
    if isinstance(name_or_config, DetectorGeometry):
        return name_or_config
    if isinstance(name_or_config, dict):
        return DetectorGeometry.from_config(name_or_config)
    from agent.core.words import one_of

    return GEOMETRIES[one_of(name_or_config, GEOMETRIES, "detector")]
