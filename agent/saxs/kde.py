"""The KDE-convergence rule of seed 000 (BL40B2): stop when the density of the pattern has converged.

What is implemented (the seed is silent on all of it):
- Samples: the photons of the accepted *sample* frames, each at its pixel's ln q (q in nm⁻¹), binned on the
  reduction's fine grid uniform in ln q (pyFAI's ``sum_signal``: no extra pass over the image).
- Kernel: Gaussian in ln q of bandwidth h = 0.9·min(sd, IQR/1.34)·N₁^(−1/5) (Silverman's rule of thumb) on
  the first sample frame's N₁ photons, floored at two grid steps, then held fixed (a bandwidth shrinking
  with N would make successive densities differ by construction). Discrete kernel weights K_j on the grid
  over ±5h, Σ K_j = 1; density p̂ = K∗f / Σ(K∗f), f the histogram divided by its total N (linear
  convolution with zero padding, FFT; the kernel mass falling off the grid's ends is renormalised away).
- Divergence: D_n = KL(p̂_n ‖ p̂_{n−1}) = Σ_k p̂_n,k ln(p̂_n,k / p̂_{n−1,k}) between the densities after
  and before frame n (nats).
- Counting-noise expectation: p̂_n − p̂_{n−1} = (ΔN/N)(p̂_new − p̂_old) for the frame's ΔN photons and the
  N_old before (N = N_old + ΔN). With Poisson counts, Var(p̂_k) = [(K²∗p)_k / c² − p̂_k²]/N (c = Σ K∗f; the
  −p̂² term is the normalisation), and KL ≈ ½ Σ δ_k² / p̂_k to second order, so for an unchanged pattern
  E0_n = ½ (ΔN/N)² (1/ΔN + 1/N_old) K_eff = ½ K_eff ΔN / (N·N_old), K_eff = Σ_k (K²∗f)_k / (c·(K∗f)_k) − 1
  (≈ the number of resolution elements: grid span / (2√π h) for a smooth density), evaluated on the
  accumulated histogram before the frame (an unbiased estimate of K²∗p).
- Threshold: for a stated precision r (relative rms of the density per resolution element, the p̂-weighted
  mean relative variance K_eff/N = r²), ε_n = (r²/2)·ΔN/N_old. D_n ≤ ε_n ⟺ (at D_n = E0_n) N ≥ N* = K_eff/r²:
  the rule is equivalent to a total count of N* photons (reported, with K_eff). D_n fluctuates about E0_n by
  ≈ √(2/K_eff) relative, so it stops within that factor of N*; drift makes D_n > E0_n and delays it.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def silverman_bandwidth(x: np.ndarray, weights: np.ndarray, floor: float) -> float:
    """h = 0.9·min(sd, IQR/1.34)·N^(−1/5) of the values ``x`` with integer ``weights`` (photons per bin)."""
    w = np.asarray(weights, float)
    n = w.sum()
    if n <= 1:
        return float("nan")
    mean = np.sum(w * x) / n
    sd = np.sqrt(np.sum(w * (x - mean) ** 2) / n)
    cdf = np.cumsum(w) / n
    iqr = np.interp(0.75, cdf, x) - np.interp(0.25, cdf, x)
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    return float(max(0.9 * spread * n ** (-0.2), floor))


def gaussian_weights(h: float, step: float) -> np.ndarray:
    """Discrete Gaussian kernel of std ``h`` on a grid of ``step`` over ±5h, summing to 1."""
    half = int(np.ceil(5.0 * h / step))
    k = np.exp(-0.5 * (step * np.arange(-half, half + 1) / h) ** 2)
    return k / k.sum()


class LogQKDE:
    """Accumulated photon histogram on a uniform ln-q grid (``step``) and the divergence test of each frame."""

    def __init__(self, ln_q: np.ndarray, precision: float = 0.01):
        self.ln_q = np.asarray(ln_q, float)
        self.step = float(self.ln_q[1] - self.ln_q[0])
        self.precision = float(precision)
        self.hist = np.zeros_like(self.ln_q)
        self.bandwidth = float("nan")
        self._kernel = self._kernel2 = None

    @property
    def counts(self) -> float:
        return float(self.hist.sum())

    def set_bandwidth(self, h: float) -> None:
        self.bandwidth = float(h)
        self._kernel = gaussian_weights(h, self.step)
        self._kernel2 = self._kernel**2

    def density(self, hist: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(p̂ normalised on the grid, c = Σ K∗f) of ``hist`` (default: the accumulated one)."""
        hist = self.hist if hist is None else hist
        smooth = np.maximum(fftconvolve(hist / hist.sum(), self._kernel, mode="same"), 0.0)
        c = smooth.sum()
        return smooth / c, float(c)

    def k_eff(self, hist: np.ndarray | None = None) -> float:
        """K_eff = Σ (K²∗f)/(c·(K∗f)) − 1 of ``hist`` (module docstring)."""
        hist = self.hist if hist is None else hist
        f = hist / hist.sum()
        smooth = np.maximum(fftconvolve(f, self._kernel, mode="same"), 0.0)
        sq = np.maximum(fftconvolve(f, self._kernel2, mode="same"), 0.0)
        c = smooth.sum()
        ok = smooth > 1e-300
        return float(np.sum(sq[ok] / smooth[ok]) / c - 1.0)

    def add(self, frame_hist: np.ndarray) -> dict[str, float]:
        """Accumulate one accepted sample frame's photons per bin; the KDE numbers of the report (NaN
        divergence, expectation and threshold for the first frame)."""
        frame_hist = np.asarray(frame_hist, float)
        n_old, dn = self.counts, float(frame_hist.sum())
        if not np.isfinite(self.bandwidth):
            self.set_bandwidth(silverman_bandwidth(self.ln_q, frame_hist, 2.0 * self.step))
        nan = float("nan")
        out = {"kde_divergence": nan, "kde_expected": nan, "kde_threshold": nan}
        if n_old > 0 and dn > 0:
            p_old, _ = self.density()
            k_old = self.k_eff()
            new = self.hist + frame_hist
            p_new, _ = self.density(new)
            ok = p_new > 0
            d = float(np.sum(p_new[ok] * np.log(p_new[ok] / np.maximum(p_old[ok], 1e-300))))
            n = n_old + dn
            out.update(kde_divergence=d, kde_expected=0.5 * k_old * dn / (n * n_old),
                       kde_threshold=0.5 * self.precision**2 * dn / n_old)
        self.hist += frame_hist
        k = self.k_eff() if self.counts > 0 else nan
        out.update(kde_counts=self.counts, kde_frame_counts=dn, kde_bandwidth=self.bandwidth, kde_keff=k,
                   kde_equivalent_counts=k / self.precision**2)
        return out
