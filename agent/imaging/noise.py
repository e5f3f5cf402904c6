"""Per-pixel absorbance of a full-field XAS-imaging stack and its counting variance (seed 001).

A scintillator + sCMOS image in ADU, dark-subtracted, has variance g_eff·I + σ_r²: g_eff (ADU per ADU of
signal) is the conversion gain times the point-spread function's variance reduction Σw², σ_r the read noise
(ADU rms). Both are estimated from two flat fields and two darks as a beamline does (the photon-transfer
method), so the classifier needs no detector data sheet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Dark-subtracted ADU below which a pixel counts as dead (its absorbance is undefined): < 1 photon at gain 1.
MIN_SIGNAL_ADU = 1.0


@dataclass(frozen=True)
class NoiseModel:
    """var(image − dark) = ``gain``·(image − dark) + ``read_var`` (ADU², one image); flats are the mean of
    ``n_flat`` images, the dark the mean of ``n_dark``; ``passes`` images summed at each energy."""

    gain: float
    read_var: float
    n_flat: int = 10
    n_dark: int = 10

    def to_dict(self) -> dict:
        return {"gain": float(self.gain), "read_var": float(self.read_var), "n_flat": int(self.n_flat),
                "n_dark": int(self.n_dark)}


def estimate_gain(flat1: np.ndarray, flat2: np.ndarray, dark1: np.ndarray, dark2: np.ndarray) -> tuple[float, float]:
    """(g_eff, σ_r²) from two single flat fields of one energy and two single darks (ADU), the photon-transfer
    way: σ_r² = mean((D1 − D2)²)/2, g_eff = (mean((F1 − F2)²)/2 − σ_r²)/mean(F − D). Differences cancel the
    fixed pattern; the PSF's correlation of neighbours does not bias a per-pixel variance. ``ValueError`` if
    the flats carry no signal above the dark."""
    f1, f2 = np.asarray(flat1, np.float64), np.asarray(flat2, np.float64)
    d1, d2 = np.asarray(dark1, np.float64), np.asarray(dark2, np.float64)
    read_var = float(np.mean((d1 - d2) ** 2) / 2)
    signal = float(np.mean(0.5 * (f1 + f2) - 0.5 * (d1 + d2)))
    if not signal > 0:
        raise ValueError(f"the flat fields are not above the dark (mean signal {signal:.3g} ADU): no beam?")
    gain = (float(np.mean((f1 - f2) ** 2) / 2) - read_var) / signal
    return max(gain, 1e-6), read_var


def absorbance(images: np.ndarray, flats: np.ndarray, dark: np.ndarray, passes: int = 1) -> np.ndarray:
    """A = −ln((I − passes·D)/(passes·(F − D))) per energy and pixel (float32): ``images`` (k, ...) ADU summed
    over ``passes``, ``flats`` (k, ...) mean flat per energy, ``dark`` (...) mean dark. Dead pixels (signal
    below ``MIN_SIGNAL_ADU``) are clipped there; ``absorbance_variance`` gives them a huge variance."""
    i = np.asarray(images, np.float32) - np.float32(passes) * np.asarray(dark, np.float32)
    f = np.asarray(flats, np.float32) - np.asarray(dark, np.float32)
    lo = np.float32(MIN_SIGNAL_ADU)
    return np.log(np.maximum(f, lo) * np.float32(passes)) - np.log(np.maximum(i, lo))


def absorbance_variance(images: np.ndarray, flats: np.ndarray, dark: np.ndarray, noise: NoiseModel,
                        passes: int = 1, image_var_factor: np.ndarray | None = None) -> np.ndarray:
    """var(A) per energy and pixel (float32), delta method: var(I)/I² + var(F̄)/F̄², with var of a sum of
    ``passes`` images = g·I + passes·σ_r² and of the mean of n_flat flats (g·F + σ_r²)/n_flat; the dark's
    noise (mean of n_dark frames) enters both. ``image_var_factor`` (k): the images' variance after an
    interpolation (registration) relative to before. Dead pixels get variance 1e6 (no weight)."""
    g, r = np.float32(noise.gain), np.float32(noise.read_var)
    d_var = r / np.float32(noise.n_dark)
    i = np.asarray(images, np.float32) - np.float32(passes) * np.asarray(dark, np.float32)
    f = np.asarray(flats, np.float32) - np.asarray(dark, np.float32)
    lo = np.float32(MIN_SIGNAL_ADU)
    ic, fc = np.maximum(i, lo), np.maximum(f, lo)
    var_i = (g * ic + np.float32(passes) * r + np.float32(passes ** 2) * d_var) / (ic * ic)
    if image_var_factor is not None:
        shape = (-1,) + (1,) * (var_i.ndim - 1)
        var_i = var_i * np.asarray(image_var_factor, np.float32).reshape(shape)
    var_f = ((g * fc + r) / np.float32(noise.n_flat) + d_var) / (fc * fc)
    out = var_i + var_f
    return np.where((i < lo) | (f < lo), np.float32(1e6), out)
