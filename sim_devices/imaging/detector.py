"""Full-field transmission XAS imaging detector (scintillator + sCMOS, issue 15): images, flats and darks of an
``ImagingSample`` as pure numpy, tile by tile.

Per pixel x and energy E: A(E, x) = b(x)·(E/7112 eV)^−2.8 + t(x)·Σ_p f_p(x)·μ_p(E) (μ_p: the library's
normalised spectra), shifted by the energy's registration error (a Lanczos-3 translation, sample fields only: the
beam and the detector do not move; a bilinear shift would also blur by a variance f(1 − f) px² that changes with
each energy's fractional shift f, a spectral distortion at grain edges that a stage drift does not cause);
N = n0·P(x)·exp(−A) photons; ADU = gain·PSF⊛(N + √N·z) + D(x) + σ_r·z′. The photon noise is the Gaussian
approximation of Poisson (accurate for N ≳ 20; the default N is 10³-10⁴). Flats: the same with
A = 0, averaged over ``n_flat`` frames (so √N → √(N/n_flat), σ_r → σ_r/√n_flat: exactly the distribution of the
mean of n_flat frames, the PSF being linear); darks: D + σ_r·z′/√n_dark.

Reproducibility: the noise of a tile is hash-seeded by (seed, kind, energy index, pass index, tile origin), so
tiles are independent and reproducible, and statistically identical to a whole-image generation except that the
PSF's noise correlation does not cross tile edges (each tile blurs noise drawn on its own margin). The flat
pattern P(x), the dark's fixed pattern D(x) (per aligned ``FPN_BLOCK_PX`` block) and the registration shifts are
hash-seeded in global coordinates and agree across tilings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from sim_devices.imaging.sample import ImagingSample, sample_tile, smooth_field

E_REF_EV = 7112.0  # Fe K edge (eV): the background's reference energy
BACKGROUND_EXPONENT = -2.8  # b·(E/7112)^−2.8: photoabsorption of the matrix below its own edges
FLAT_WAVELENGTH_PX = (100.0, 1000.0)  # wavelengths (px) of the flat pattern (beam and scintillator structure)
FPN_BLOCK_PX = 256  # the dark's fixed pattern is drawn per aligned block of this side (global px)
REGISTRATION_CLIP = 5.0  # registration shifts are clipped at 5 σ per axis (probability 6·10⁻⁷)
LANCZOS_A = 3  # lobes of the Lanczos kernel of the registration shift (taps −2 … +3 about the floor)
_OFFSET = 1 << 40
_IMAGE, _FLAT, _DARK, _SHIFT, _FPN, _PATTERN = 21, 22, 23, 24, 25, 26


@dataclass(frozen=True)
class DetectorModel:
    """The imaging detector and beam. ``n0``: incident photons per pixel per image (sample out, P = 1; the spec's
    default, 1e3 is the low-dose case); ``gain``: ADU per X-ray photon (scintillator light yield × optics ×
    sCMOS conversion; unverified, plausible); ``read_noise``: ADU rms per pixel per frame (sCMOS ~1-2 e⁻;
    unverified); ``dark``: ADU offset; ``dark_fpn``: ADU rms fixed pattern of the offset (unverified);
    ``psf_sigma_px``: Gaussian PSF σ (px) of scintillator + optics, blurring signal and photon noise
    (unverified: ~1 µm at 1.6 µm pixels); ``registration_sigma_px``: rms sub-pixel shift (px per axis) of each
    energy's image relative to the first's (stage and beam drift after a monochromator move; unverified);
    ``n_flat``, ``n_dark``: frames averaged per flat (per energy) and per dark; ``flat_pattern``: range of the
    flat pattern P(x)."""

    n0: float = 1e4
    gain: float = 1.5
    read_noise: float = 2.0
    dark: float = 100.0
    dark_fpn: float = 3.0
    psf_sigma_px: float = 0.6
    registration_sigma_px: float = 0.15
    n_flat: int = 10
    n_dark: int = 10
    flat_pattern: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self):
        object.__setattr__(self, "flat_pattern", tuple(float(v) for v in self.flat_pattern))
        if not (self.n0 > 0 and self.gain > 0 and self.read_noise >= 0 and self.dark_fpn >= 0
                and self.psf_sigma_px >= 0 and self.registration_sigma_px >= 0 and self.n_flat >= 1
                and self.n_dark >= 1 and 0 < self.flat_pattern[0] <= self.flat_pattern[1]):
            raise ValueError(f"invalid detector model: {self}")

    @property
    def psf_weights(self) -> np.ndarray:
        """The 1-D PSF weights (float32, sum 1); the 2-D PSF is their outer product."""
        return psf_weights(self.psf_sigma_px)

    @property
    def g_eff(self) -> float:
        """Effective gain (ADU per ADU of signal) of one image's noise: var(ADU − D) = g_eff·(ADU − D) + σ_r²."""
        return self.gain * psf_variance_factor(self.psf_sigma_px)

    @property
    def margin_px(self) -> int:
        """Pixels of sample fields needed around a tile: the PSF radius, the largest registration shift, 1."""
        return len(self.psf_weights) // 2 + math.ceil(REGISTRATION_CLIP * self.registration_sigma_px) + LANCZOS_A


def psf_weights(sigma_px: float) -> np.ndarray:
    """1-D Gaussian weights of σ ``sigma_px`` (px) on integer offsets |i| ≤ int(4σ + 0.5), normalised (float32)."""
    if sigma_px <= 0:
        return np.ones(1, np.float32)
    r = int(4.0 * sigma_px + 0.5)
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    return (w / w.sum()).astype(np.float32)


def psf_variance_factor(sigma_px: float) -> float:
    """Σw² of the discrete 2-D PSF (the variance of blurred white noise over the unblurred one): (Σ w₁²)²."""
    w = psf_weights(sigma_px).astype(float)
    return float(np.sum(w ** 2) ** 2)


@lru_cache(maxsize=1)
def spectra_library():
    """The measured Fe K-edge standards (``agent.xas.prior.SpectraLibrary.from_csv()``), read once per process."""
    from agent.xas.prior import SpectraLibrary

    return SpectraLibrary.from_csv()


@lru_cache(maxsize=64)
def _mu(names: tuple[str, ...], energies: tuple[float, ...]) -> np.ndarray:
    return spectra_library().only(list(names)).on(np.asarray(energies)).astype(np.float32)  # (k, C)


def phase_spectra(names, energies_eV) -> np.ndarray:
    """Normalised library spectra μ_p(E) (k, C) float32 of the phases ``names`` at ``energies_eV``."""
    return _mu(tuple(names), tuple(float(e) for e in np.atleast_1d(energies_eV)))


def _noise_rng(seed: int, kind: int, energy_index: int, pass_index: int, y0: int, x0: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), kind, int(energy_index), int(pass_index), int(y0) + _OFFSET,
                                  int(x0) + _OFFSET])


def registration_shift(detector: DetectorModel, energy_index: int, seed: int = 0) -> tuple[float, float]:
    """The (dy, dx) sub-pixel shift (px) of the sample in the images of energy number ``energy_index``; (0, 0)
    for the first energy (the reference), N(0, σ²) per axis clipped at ``REGISTRATION_CLIP`` σ otherwise."""
    if energy_index == 0 or detector.registration_sigma_px == 0:
        return 0.0, 0.0
    z = np.random.default_rng([int(seed), _SHIFT, int(energy_index)]).standard_normal(2)
    dy, dx = np.clip(z, -REGISTRATION_CLIP, REGISTRATION_CLIP) * detector.registration_sigma_px
    return float(dy), float(dx)


def flat_pattern(detector: DetectorModel, y0: int, x0: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """The flat pattern P(x) (float32, (h, w)) in ``flat_pattern``'s range, smooth, in global coordinates."""
    lo, hi = detector.flat_pattern
    s = smooth_field(seed, _PATTERN, y0, x0, h, w, FLAT_WAVELENGTH_PX)
    return (lo + (hi - lo) * (0.5 + 0.5 * s)).astype(np.float32)


def dark_pattern(detector: DetectorModel, y0: int, x0: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """The dark's fixed pattern D(x) = dark + dark_fpn·z(x) (float32 ADU, (h, w)), z drawn per aligned
    ``FPN_BLOCK_PX`` block of global pixels."""
    B = FPN_BLOCK_PX
    by, bx = range(y0 // B, (y0 + h - 1) // B + 1), range(x0 // B, (x0 + w - 1) // B + 1)
    z = np.block([[np.random.default_rng([int(seed), _FPN, i + _OFFSET, j + _OFFSET])
                   .standard_normal((B, B), dtype=np.float32) for j in bx] for i in by])
    oy, ox = y0 - by[0] * B, x0 - bx[0] * B
    return np.float32(detector.dark) + np.float32(detector.dark_fpn) * z[oy:oy + h, ox:ox + w]


def _blur(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a`` (h + 2r, w + 2r) correlated with the separable PSF, cropped to the valid (h, w) part."""
    r = len(w) // 2
    if r == 0:
        return a
    a = ndimage.correlate1d(a, w, axis=0, mode="nearest")[r:-r]
    return ndimage.correlate1d(a, w, axis=1, mode="nearest")[:, r:-r]


def lanczos_weights(frac: float, a: int = LANCZOS_A) -> np.ndarray:
    """The 2a taps (float64, sum 1) at offsets −a+1 … a that sample a signal at ``frac`` ∈ [0, 1) past an integer:
    the Lanczos windowed sinc, an interpolating, nearly band-limited translation (no extra blur)."""
    x = frac - np.arange(-a + 1, a + 1)
    w = np.sinc(x) * np.sinc(x / a)
    return w / w.sum()


def _shifted(a: np.ndarray, dy: float, dx: float, m: int, r: int) -> np.ndarray:
    """``a`` (on a margin ``m``) with its content moved by (dy, dx) px (Lanczos-3, separable), on a margin ``r``,
    m ≥ r + |shift| + ``LANCZOS_A``. Local (6 taps per axis): overlapping tiles agree."""
    H, W = a.shape
    h, w = H - 2 * m + 2 * r, W - 2 * m + 2 * r
    iy, ix = math.floor(-dy), math.floor(-dx)
    wy, wx = lanczos_weights(-dy - iy).astype(np.float32), lanczos_weights(-dx - ix).astype(np.float32)
    y, x = m - r + iy, m - r + ix
    taps = range(-LANCZOS_A + 1, LANCZOS_A + 1)
    rows = sum(wy[i] * a[y + o:y + o + h, x - LANCZOS_A + 1:x + LANCZOS_A + w] for i, o in enumerate(taps))
    return sum(wx[i] * rows[:, o + LANCZOS_A - 1:o + LANCZOS_A - 1 + w] for i, o in enumerate(taps))


class TileFields:
    """The fixed fields of one tile [y0, y0+h) × [x0, x0+w): sample absorbance components on the margin
    ``detector.margin_px`` (t·f_p per phase, b), the flat pattern on the PSF margin and the dark pattern. Built
    once, they serve every energy and pass (``stack_tile``, the ophyd detector)."""

    def __init__(self, sample: ImagingSample | None, detector: DetectorModel, y0: int, x0: int, h: int, w: int,
                 seed: int = 0):
        if h <= 0 or w <= 0:
            raise ValueError(f"tile shape must be positive, got {h}×{w}")
        self.sample, self.detector, self.seed = sample, detector, int(seed)
        self.y0, self.x0, self.h, self.w = int(y0), int(x0), int(h), int(w)
        self.m, self.r = detector.margin_px, len(detector.psf_weights) // 2
        r = self.r
        self.pattern = flat_pattern(detector, y0 - r, x0 - r, h + 2 * r, w + 2 * r, seed)
        self.dark = dark_pattern(detector, y0, x0, h, w, seed)
        self.tf = self.background = None
        if sample is not None:
            s = sample_tile(sample, y0, x0, h, w, margin=self.m)
            self.tf = s["fractions"] * s["thickness"]
            self.background = s["background"]

    def absorbance(self, energy_eV: float, energy_index: int) -> np.ndarray:
        """A(E) (float32) on the PSF margin, the sample moved by the energy's registration shift."""
        mu = phase_spectra(self.sample.names, [energy_eV])[0]
        C = len(mu)
        a = (mu @ self.tf.reshape(C, -1)).reshape(self.tf.shape[1:])
        a += np.float32((energy_eV / E_REF_EV) ** BACKGROUND_EXPONENT) * self.background
        dy, dx = registration_shift(self.detector, energy_index, self.seed)
        return _shifted(a, dy, dx, self.m, self.r)

    def _frames(self, mean_photons: np.ndarray, kind: int, energy_index: int, passes: range, n_avg: int,
                combine: str) -> np.ndarray:
        """Σ (``combine`` "sum") or mean ("mean") over ``passes`` of the n_avg-frame average of frames of mean
        ``mean_photons`` (on the PSF margin), with the dark pattern."""
        d = self.detector
        z = zr = None
        for p in passes:
            rng = _noise_rng(self.seed, kind, energy_index, p, self.y0, self.x0)
            zp = rng.standard_normal(mean_photons.shape, dtype=np.float32)
            zrp = rng.standard_normal((self.h, self.w), dtype=np.float32)
            z, zr = (zp, zrp) if z is None else (z + zp, zr + zrp)
        k = len(passes)
        if combine == "mean":
            z *= np.float32(1 / k)
            zr *= np.float32(1 / k)
            k = 1
        photons = np.sqrt(mean_photons * np.float32(1 / n_avg))
        photons *= z
        photons += mean_photons if k == 1 else np.float32(k) * mean_photons
        adu = _blur(photons, d.psf_weights)
        adu *= np.float32(d.gain)
        adu += self.dark if k == 1 else np.float32(k) * self.dark
        zr *= np.float32(d.read_noise / math.sqrt(n_avg))
        adu += zr
        return adu

    def image(self, energy_eV: float, energy_index: int = 0, passes: range = range(1), n0: float | None = None
              ) -> np.ndarray:
        """Sample images (float32 ADU, (h, w)) at ``energy_eV``, summed over ``passes`` (pass indices)."""
        if self.sample is None:
            raise ValueError("these tile fields have no sample")
        n = np.exp(-self.absorbance(energy_eV, energy_index))
        n *= self.pattern
        n *= np.float32(self.detector.n0 if n0 is None else n0)
        return self._frames(n, _IMAGE, energy_index, passes, 1, "sum")

    def flat(self, energy_index: int = 0, passes: range = range(1), n_avg: int | None = None,
             n0: float | None = None) -> np.ndarray:
        """Averaged flat (float32 ADU, (h, w)): the mean of ``n_avg`` (default ``n_flat``) sample-out frames
        per pass, averaged over ``passes``."""
        n = np.float32(self.detector.n0 if n0 is None else n0) * self.pattern
        return self._frames(n, _FLAT, energy_index, passes, n_avg or self.detector.n_flat, "mean")

    def dark_frame(self, index: int = 0, n_avg: int | None = None) -> np.ndarray:
        """Averaged dark (float32 ADU, (h, w)): D(x) + σ_r·z/√n_avg (default ``n_dark``), shutter closed."""
        n_avg = n_avg or self.detector.n_dark
        z = _noise_rng(self.seed, _DARK, 0, index, self.y0, self.x0).standard_normal((self.h, self.w),
                                                                                     dtype=np.float32)
        return self.dark + np.float32(self.detector.read_noise / math.sqrt(n_avg)) * z


def image_tile(sample: ImagingSample, detector: DetectorModel, energy_eV: float, y0: int, x0: int, h: int, w: int,
               exposure_index: int = 0, *, energy_index: int = 0, seed: int = 0, n0: float | None = None
               ) -> np.ndarray:
    """One sample image (float32 ADU, (h, w)) at ``energy_eV`` (eV): pass ``exposure_index`` of energy number
    ``energy_index`` (its registration shift; 0 is the reference). ``n0``: photons per pixel (default the
    model's). Rebuilds the tile's fields: ``stack_tile`` or ``TileFields`` for many energies."""
    return TileFields(sample, detector, y0, x0, h, w, seed).image(energy_eV, energy_index,
                                                                  range(exposure_index, exposure_index + 1), n0)


def flat_tile(detector: DetectorModel, y0: int, x0: int, h: int, w: int, energy_index: int = 0,
              exposure_index: int = 0, *, seed: int = 0, n_avg: int | None = None, n0: float | None = None
              ) -> np.ndarray:
    """The averaged flat (float32 ADU, (h, w)) of ``n_avg`` frames (default ``n_flat``) at energy number
    ``energy_index``, pass ``exposure_index``."""
    return TileFields(None, detector, y0, x0, h, w, seed).flat(energy_index, range(exposure_index,
                                                                                   exposure_index + 1), n_avg, n0)


def dark_tile(detector: DetectorModel, y0: int, x0: int, h: int, w: int, exposure_index: int = 0, *, seed: int = 0,
              n_avg: int | None = None) -> np.ndarray:
    """The averaged dark (float32 ADU, (h, w)) of ``n_avg`` frames (default ``n_dark``)."""
    return TileFields(None, detector, y0, x0, h, w, seed).dark_frame(exposure_index, n_avg)


def stack_tile(sample: ImagingSample, detector: DetectorModel, energies, y0: int, x0: int, h: int, w: int,
               passes: int = 1, seed: int = 0, first_pass: int = 0) -> dict:
    """The measurement of one tile at ``energies`` (eV; energy i has registration shift number i): ``images``
    (k, h, w) float32 ADU summed over the passes ``first_pass`` … ``first_pass + passes − 1`` (one image per
    energy per pass at the model's n0; subtract ``passes``·dark), ``flats`` (k, h, w) the mean of the
    ``passes``·``n_flat`` flats per energy (``n_flat`` per energy per pass), ``dark`` (h, w) the mean of ``n_dark``
    dark frames (taken once), and ``passes``, ``n_flat`` (flat frames averaged per energy, all passes),
    ``n_dark``, ``energies``. Summing the images of passes one by one gives the same array (up to float32
    rounding): the noise of each pass is its own."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    energies = [float(e) for e in np.atleast_1d(energies)]
    f = TileFields(sample, detector, y0, x0, h, w, seed)
    runs = range(first_pass, first_pass + passes)
    images = np.empty((len(energies), h, w), np.float32)
    flats = np.empty_like(images)
    for i, e in enumerate(energies):
        images[i] = f.image(e, i, runs)
        flats[i] = f.flat(i, runs)
    return {"images": images, "flats": flats, "dark": f.dark_frame(), "passes": passes,
            "n_flat": passes * detector.n_flat, "n_dark": detector.n_dark, "energies": np.asarray(energies)}
