"""Azimuthal reduction with pyFAI, accumulated over frames as sums, and the absolute, subtracted I(q).

One ``integrate1d`` call per frame (pyFAI's ``("no", "csr", "cython")`` engine: no pixel splitting, so each
pixel's counts go whole into one bin), in the radial unit ``log(q.nm)_None`` (ln q, q in nm⁻¹) on bins
uniform in ln q whose width is a whole multiple of the form-factor lattice step (agent.saxs.form_factors),
with the frame's incident monitor counts i0 as ``normalization_factor`` and pyFAI's solid-angle and
polarisation corrections. Per bin it keeps ``sum_signal`` (photons) and ``sum_normalization``
(Σ i0·ΔΩ_rel·P over the bin's pixels); these add over frames. Without pixel splitting the Poisson variance
of a bin's sum is its expected count, estimated by the counts themselves (Σ signal): pyFAI's
``error_model="poisson"`` uses max(counts, 1) per pixel, biased high where pixels see < 1 photon per frame,
so it is not used. Masked: the geometry's static mask ∪ the user's ∪ pixels < 0 in the frame (Pilatus gaps
−1, dead −2) and saturated pixels (pyFAI ``dummy``).

Per cell c the i0-normalised pattern is R_c = S_c / N_c = T_c·(d·dΣ_c/dΩ / k + R_empty): the parasitic
scattering of slits and windows (the empty beam's pattern R_empty) crosses the cell and is attenuated with
the beam, as the simulator and the usual reduction have it. T_c = (transmitted/i0)_c / (transmitted/i0)_empty,
d the thickness (cm), k the absolute scale (from the standard, else 1: relative units). So
dΣ_c/dΩ = k (R_c/T_c − R_empty)/d, and in sample − buffer the empty beam's pattern cancels.
Not propagated: errors of T, k and the thickness (they scale the amplitude, not the shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d

from agent.saxs.form_factors import LN_STEP
from agent.saxs.geometry import DetectorGeometry

METHOD = ("no", "csr", "cython")
UNIT = "log(q.nm)_None"
SATURATED = 2**31 - 1
KINDS = ("sample", "buffer", "standard", "empty")
SMOOTH_BINS = 5  # coarse bins over which the smooth buffer and empty-beam counts are averaged for their variance


@dataclass
class Sums:
    """Accumulated per-bin sums of one cell: photons ``signal`` and ``norm`` (Σ i0·ΔΩ·P), with the frame
    count, exposure (s), Σ i0 and Σ transmitted."""

    n_bins: int
    signal: np.ndarray = field(default=None)
    norm: np.ndarray = field(default=None)
    frames: int = 0
    exposure_s: float = 0.0
    i0: float = 0.0
    transmitted: float = 0.0

    def __post_init__(self):
        if self.signal is None:
            self.signal = np.zeros(self.n_bins)
            self.norm = np.zeros(self.n_bins)

    def add(self, signal, norm, exposure_s, i0, transmitted) -> None:
        self.signal += signal
        self.norm += norm
        self.frames += 1
        self.exposure_s += float(exposure_s)
        self.i0 += float(i0)
        self.transmitted += float(transmitted)

    def state(self, kind: str) -> tuple[dict, dict]:
        return ({f"{kind}_signal": self.signal, f"{kind}_norm": self.norm},
                {"frames": self.frames, "exposure_s": self.exposure_s, "i0": self.i0,
                 "transmitted": self.transmitted})

    @classmethod
    def from_state(cls, kind: str, arrays, meta) -> Sums:
        s = cls(len(arrays[f"{kind}_signal"]), np.array(arrays[f"{kind}_signal"], float),
                np.array(arrays[f"{kind}_norm"], float))
        s.frames, s.exposure_s, s.i0, s.transmitted = (int(meta["frames"]), float(meta["exposure_s"]),
                                                       float(meta["i0"]), float(meta["transmitted"]))
        return s


class Reduction:
    """pyFAI reduction of one geometry on ``n_fine`` ln-q bins (about; exactly a multiple of ``group``) over
    ``q_range`` (nm⁻¹; default the unmasked pixels' q range), grouped by ``group`` into coarse bins (the
    posterior's data points and the consistency test's cells)."""

    def __init__(self, geometry: DetectorGeometry, q_range=None, mask=None, n_fine: int = 1000, group: int = 10):
        self.geometry = geometry
        user = None if mask is None else np.asarray(mask, dtype=bool)
        if user is not None and user.shape != geometry.shape:
            raise ValueError(f"mask of shape {user.shape} for a {geometry.shape[0]} × {geometry.shape[1]} detector")
        self.mask = geometry.static_mask() if user is None else (geometry.static_mask() | user)
        if self.mask.all():
            raise ValueError("the mask leaves no pixel: every pixel is masked")
        q_lo, q_hi = geometry.q_limits(user)
        if q_range is None:
            q_range = (q_lo, q_hi)
        a, b = (float(v) for v in q_range)
        if not (0 < a < b) or a < q_lo * (1 - 1e-9) or b > q_hi * (1 + 1e-9):
            raise ValueError(f"q range ({a:.4g}, {b:.4g}) nm⁻¹ is outside the detector's unmasked "
                             f"({q_lo:.4g}, {q_hi:.4g}) nm⁻¹")
        span = np.log(b / a)
        self.m = max(1, int(round(span / (n_fine * LN_STEP))))
        self.step = self.m * LN_STEP
        self.group = int(group)
        self.n_fine = int(span / self.step) // self.group * self.group
        if self.n_fine < 2 * self.group:
            raise ValueError(f"q range ({a:.4g}, {b:.4g}) nm⁻¹ is too narrow")
        self.ln_q0 = float(np.log(a))
        self.ln_edges = self.ln_q0 + self.step * np.arange(self.n_fine + 1)
        self.ln_q = 0.5 * (self.ln_edges[1:] + self.ln_edges[:-1])
        self.q = np.exp(self.ln_q)
        self.q_coarse = np.exp(self.ln_q.reshape(-1, self.group).mean(axis=1))
        self.q_range = (a, float(np.exp(self.ln_edges[-1])))
        self._ai = geometry.integrator()
        self.ln_q_mean, self.ln_q_var = self._pixel_moments()
        self._kw = dict(unit=UNIT, method=METHOD, mask=self.mask, dummy=-1.0, delta_dummy=0.5,
                        polarization_factor=geometry.polarisation_factor, correctSolidAngle=True,
                        radial_range=(self.ln_edges[0], self.ln_edges[-1]))

    def _pixel_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per fine bin, the mean and variance of ln q over its unmasked pixels, weighted as pyFAI normalises them
        (solid angle × polarisation): where the bin's average of a curve lies. A model evaluated at the bin's
        centre instead misses it by ½·var·I'' and by the offset of the mean, near the beam stop (a few pixel
        rings per bin) by much more: with 10⁸-photon frames that biased the radius by 1e-3 nm, one std."""
        ok = ~self.mask
        ln_q = np.log(self.geometry.q_map()[ok])
        w = (self.geometry.solid_angle() * self.geometry.polarisation())[ok]
        idx = np.floor((ln_q - self.ln_edges[0]) / self.step).astype(np.int64)
        inside = (idx >= 0) & (idx < self.n_fine)
        idx, ln_q, w = idx[inside], ln_q[inside], w[inside]
        sw = np.bincount(idx, w, self.n_fine)
        s1 = np.bincount(idx, w * ln_q, self.n_fine)
        s2 = np.bincount(idx, w * ln_q**2, self.n_fine)
        has = sw > 0
        mean = np.where(has, s1 / np.where(has, sw, 1.0), self.ln_q)
        var = np.where(has, np.maximum(s2 / np.where(has, sw, 1.0) - mean**2, 0.0), 0.0)
        return mean, var

    def integrate(self, image: np.ndarray, i0: float) -> tuple[np.ndarray, np.ndarray]:
        """(photons, Σ i0·ΔΩ·P) per fine bin of one frame (float64), from one pyFAI call."""
        img = np.asarray(image)
        if img.shape != self.geometry.shape:
            raise ValueError(f"image of shape {img.shape} for a {self.geometry.shape} detector")
        if img.min() < 0 or img.max() >= SATURATED:
            img = np.where((img < 0) | (img >= SATURATED), -1, img)
        res = self._ai.integrate1d(img, self.n_fine, normalization_factor=float(i0), **self._kw)
        return np.asarray(res.sum_signal, dtype=np.float64), np.asarray(res.sum_normalization, dtype=np.float64)

    def coarse(self, fine: np.ndarray) -> np.ndarray:
        """Sums over the coarse bins (last axis)."""
        return fine.reshape(*fine.shape[:-1], -1, self.group).sum(axis=-1)

    def config(self) -> dict:
        return {"q_range": list(self.q_range), "n_fine": self.n_fine, "group": self.group}


def transmission(cell: Sums, empty: Sums | None) -> float:
    """T = (transmitted/i0)_cell / (transmitted/i0)_empty (1 without an empty-cell measurement)."""
    if cell.i0 <= 0:
        return float("nan")
    if empty is None or empty.frames == 0 or empty.transmitted <= 0:
        return 1.0
    return (cell.transmitted / cell.i0) / (empty.transmitted / empty.i0)


def _rate(s: Sums, group: int, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Coarse R = S/N and its variance E[S]/N² (0 where N = 0), E[S] the counts themselves or, with
    ``smooth`` > 1, their running mean over that many coarse bins: the estimate for a smooth pattern (buffer,
    empty beam) of a few photons per bin, where the counts themselves would give a zero-count bin no variance
    and weight downward fluctuations (Neyman's χ² bias)."""
    sig = s.signal.reshape(-1, group).sum(axis=1)
    norm = s.norm.reshape(-1, group).sum(axis=1)
    ok = norm > 0
    expected = uniform_filter1d(sig, smooth, mode="nearest") if smooth > 1 else sig
    r = np.where(ok, sig / np.where(ok, norm, 1.0), 0.0)
    v = np.where(ok, expected / np.where(ok, norm, 1.0) ** 2, 0.0)
    return r, v


def absolute_scale(standard: Sums | None, empty: Sums | None, q: np.ndarray, group: int, dsdo,
                   thickness_cm: float) -> float:
    """k (cm⁻¹ per unit of R): least-squares ratio of the standard's known d·dΣ/dΩ(q) to its measured
    R_std/T_std − R_empty on the coarse bins (1 without a standard). ``dsdo``: a number (cm⁻¹, flat) or (q, I)
    pairs interpolated in q (nm⁻¹)."""
    if standard is None or standard.frames == 0 or dsdo is None:
        return 1.0
    t = transmission(standard, empty)
    r, v = _rate(standard, group)
    r, v = r / t, v / t**2
    if empty is not None and empty.frames:
        re, ve = _rate(empty, group)
        r, v = r - re, v + ve
    if np.ndim(dsdo) == 0:
        known = np.full_like(q, float(dsdo))
    else:
        qs, vals = np.asarray(dsdo, float)
        known = np.interp(q, qs, vals)
    model = thickness_cm * known
    ok = v > 0
    w = 1.0 / np.where(ok, v, np.inf)
    return float(np.sum(w * model * model) / np.sum(w * model * r))


def subtracted(sample: Sums, buffer: Sums | None, empty: Sums | None, k: float, thickness_cm: float,
               group: int) -> tuple[np.ndarray, np.ndarray]:
    """Coarse dΣ/dΩ_sample − dΣ/dΩ_buffer (cm⁻¹) and its variance (cm⁻²), propagating the Poisson
    variances (the empty beam's pattern cancels between them); without a buffer the sample alone, less the
    empty beam's pattern (its solvent's flat scattering then lies in the background)."""
    a_s = k / (transmission(sample, empty) * thickness_cm)
    r_s, v_s = _rate(sample, group, 3)
    y, var = a_s * r_s, a_s**2 * v_s
    if buffer is not None and buffer.frames:
        a_b = k / (transmission(buffer, empty) * thickness_cm)
        r_b, v_b = _rate(buffer, group, SMOOTH_BINS)
        y, var = y - a_b * r_b, var + a_b**2 * v_b
    elif empty is not None and empty.frames:
        r_e, v_e = _rate(empty, group, SMOOTH_BINS)
        y, var = y - k / thickness_cm * r_e, var + (k / thickness_cm) ** 2 * v_e
    return y, var
