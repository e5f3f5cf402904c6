"""Registration of the images of a stack: the sample (or the beam) moves by a fraction of a pixel between
energies (monochromator heat load, stage drift), and at a grain boundary a 0.15-px shift changes a pixel's
mixture by more than its counting noise, so the spectrum no longer belongs to any phase or pair of phases.

Shifts are estimated as a beamline does, by cross-correlating images: each energy against the next one up (their
contrasts are alike), on the gradient magnitude of ln(flat/image) (edges of domains whatever their contrast sign),
the peak refined to a sub-pixel by a parabola and then by Gauss-Newton on those edge images, chained from the
first energy. A pair whose correlation peak does
not stand out (a pre-edge image shows only smooth thickness) gets no relative shift: a smooth image needs none.
``RegisteredSource`` shifts each tile's images back by cubic-spline interpolation and tells the noise model how
much that interpolation reduced their variance. Not bilinear: a bilinear shift by a fractional f also blurs by a
variance f(1 − f) px², different at each energy, which at a 3-px grain distorts the spectrum as the shift did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MAX_SHIFT_PX = 3.0   # larger estimates are refused (set to 0): a stage jump is not a registration error
PEAK_CONTRAST = 5.0  # the correlation peak must exceed the map's median by this many robust σ


def _edges(a: np.ndarray) -> np.ndarray:
    g = np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))
    return g - g.mean()


def _peak_shift(ref: np.ndarray, img: np.ndarray) -> tuple[float, float] | None:
    """(dy, dx) px by which ``img`` is displaced relative to ``ref`` (None: no clear correlation peak)."""
    f = np.fft.fft2(ref) * np.conj(np.fft.fft2(img))
    cc = np.real(np.fft.ifft2(f / np.maximum(np.abs(f), 1e-12)))
    cc = np.fft.fftshift(cc)
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    med = np.median(cc)
    mad = np.median(np.abs(cc - med)) * 1.4826
    if not cc[iy, ix] - med > PEAK_CONTRAST * max(mad, 1e-300) or iy in (0, cc.shape[0] - 1) or \
            ix in (0, cc.shape[1] - 1):
        return None

    def vertex(m, c, p):
        den = m - 2 * c + p
        return 0.0 if den == 0 else 0.5 * (m - p) / den

    dy = iy - cc.shape[0] // 2 + vertex(cc[iy - 1, ix], cc[iy, ix], cc[iy + 1, ix])
    dx = ix - cc.shape[1] // 2 + vertex(cc[iy, ix - 1], cc[iy, ix], cc[iy, ix + 1])
    return -float(dy), -float(dx)


def _refine(ref: np.ndarray, img: np.ndarray, d: tuple[float, float], iterations: int = 6, crop: int = 8):
    """Gauss-Newton refinement (Lucas-Kanade) of the displacement d of ``img`` against ``ref``, with the model
    ref ≈ α·img(x + d) + c (the two energies' edge contrasts differ in scale): the parabola's sub-pixel peak is
    biased towards whole pixels, this is not."""
    d = np.array(d, float)
    sl = (slice(crop, -crop), slice(crop, -crop))
    r = ref[sl].ravel()
    for _ in range(iterations):
        moved = ndimage.shift(img, -d, order=3, mode="nearest")
        gy, gx = np.gradient(moved)
        x = np.stack([moved[sl].ravel(), np.ones(r.size), gy[sl].ravel(), gx[sl].ravel()], axis=1)
        (alpha, _, p, q), *_ = np.linalg.lstsq(x, r, rcond=None)
        if abs(alpha) < 1e-12:
            break
        step = np.array([p, q]) / alpha
        d = d + step
        if np.max(np.abs(step)) < 1e-3:
            break
    return float(d[0]), float(d[1])


def estimate_shifts(source, window: int = 512) -> np.ndarray:
    """(k, 2) shifts (dy, dx) px of each energy's images relative to the first, from a central window."""
    hh, ww = source.shape
    h, w = min(window, hh), min(window, ww)
    images, flats, dark = source.read((hh - h) // 2, (ww - w) // 2, h, w)
    p = source.passes
    a = np.log(np.maximum(flats - dark, 1.0) * p) - np.log(np.maximum(images - p * dark, 1.0))
    edges = [_edges(ndimage.gaussian_filter(x.astype(np.float64), 1.0)) for x in a]
    shifts = np.zeros((len(a), 2))
    for e in range(1, len(a)):
        s = _peak_shift(edges[e - 1], edges[e])
        if s is not None:
            s = _refine(edges[e - 1], edges[e], s)
        if s is None or max(abs(s[0]), abs(s[1])) > MAX_SHIFT_PX:
            s = (0.0, 0.0)
        shifts[e] = shifts[e - 1] + s
    return shifts


SPLINE_ORDER = 3
SPLINE_MARGIN_PX = 8  # extra pixels read around a tile: the spline prefilter's reach decays as 0.27ⁿ


def _spline_variance_1d(frac: float) -> float:
    impulse = np.zeros(65)
    impulse[32] = 1.0
    return float(np.sum(ndimage.shift(impulse, frac, order=SPLINE_ORDER, mode="constant") ** 2))


def spline_variance_factor(shift: np.ndarray) -> np.ndarray:
    """Variance of white noise after a cubic-spline shift by ``shift`` (k, 2) px, relative to before: the product
    over the axes of the sum of the squared effective interpolation weights (1 at a whole-pixel shift)."""
    s = np.atleast_2d(np.asarray(shift, float))
    return np.array([np.prod([_spline_variance_1d(v % 1.0) for v in row]) for row in s])


@dataclass
class RegisteredSource:
    """``source`` with each energy's images shifted back by ``shifts`` (k, 2) px (cubic spline; flats and dark
    as they are: the sample moved, not the beam); ``image_variance_factor`` (k) for the noise model."""

    source: object
    shifts: np.ndarray

    @property
    def shape(self):
        return self.source.shape

    @property
    def energies_eV(self):
        return self.source.energies_eV

    @property
    def passes(self):
        return self.source.passes

    @property
    def image_variance_factor(self) -> np.ndarray:
        return spline_variance_factor(self.shifts)

    def read(self, y0: int, x0: int, h: int, w: int):
        hh, ww = self.shape
        m = int(np.ceil(np.abs(self.shifts).max())) + SPLINE_MARGIN_PX
        wy0, wx0 = max(y0 - m, 0), max(x0 - m, 0)
        wy1, wx1 = min(y0 + h + m, hh), min(x0 + w + m, ww)
        images, flats, dark = self.source.read(wy0, wx0, wy1 - wy0, wx1 - wx0)
        cy, cx = y0 - wy0, x0 - wx0
        out = np.empty((len(images), h, w), np.float32)
        for e, img in enumerate(images):
            dy, dx = self.shifts[e]
            moved = ndimage.shift(img, (-dy, -dx), order=SPLINE_ORDER, mode="nearest") if dy or dx else img
            out[e] = moved[cy:cy + h, cx:cx + w]
        return out, flats[:, cy:cy + h, cx:cx + w], dark[cy:cy + h, cx:cx + w]
