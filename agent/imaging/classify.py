"""Per-pixel class posteriors: the profile likelihood of each class spectrum under the pixel's own noise.

A class c is a spectrum m_c (k energies, known up to an affine map: the partition's z point). A pixel's
absorbances A (k) with variances V are A = b·β(E) + t·m_c + noise, β(E) = (E/7112 eV)^−2.8 the shape of the
absorption of everything but the Fe K edge (photoabsorption below other edges falls about as E^−2.8 to E^−3, a
1.5 % change over a XANES range, ~1 σ of a pixel at 10⁴ photons); profiling b and t by weighted least squares
gives χ²_c, and the Laplace approximation of the flat-prior integral over (b, t) adds −½ ln det S_c (S_c: the
2×2 normal matrix of that fit), so ln p(c | A) = ln π_c − χ²_c/2 − ½ ln det S_c + const. Every quantity is a
weighted sum over energies, so all classes of a chunk are a few matrix products: O(N·C·k).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

#: Posterior class probability above which a pixel's class is decided (the stop rule's per-pixel threshold).
DECIDED_P = 0.99
#: Tail probability of χ²_min below which a pixel is unexplained by every class (an unknown phase, a defect).
UNEXPLAINED_P = 1e-4
#: χ² a two-class mixture must gain over the best single class to label a pixel by its dominant class (the
#: 0.999 quantile of χ² with the one more parameter's degree of freedom).
MIXTURE_GAIN = float(chi2.ppf(0.999, 1))


#: Exponent of the background's energy dependence (E/E_REF_EV)^BACKGROUND_POWER.
BACKGROUND_POWER = -2.8
E_REF_EV = 7112.0


def background_shape(energies_eV) -> np.ndarray:
    """β(E) = (E/7112 eV)^−2.8 at ``energies_eV``: the energy dependence of the non-edge absorbance."""
    return (np.asarray(energies_eV, float) / E_REF_EV) ** BACKGROUND_POWER


def background_sums(a: np.ndarray, var: np.ndarray, spectra: np.ndarray, bg: np.ndarray | None = None):
    """The float64 arrays of a weighted fit of absorbances ``a`` (k, n) with variances ``var`` on class ``spectra``
    (C, k) plus background shape ``bg`` (k; default constant): (w = 1/var, m, bg, wa = w·a, s0 = Σwβ², y0 = Σwβa,
    yy = Σwa²)."""
    a = np.asarray(a, np.float64)
    w = 1.0 / np.asarray(var, np.float64)
    m = np.asarray(spectra, np.float64)
    bg = np.ones(a.shape[0]) if bg is None else np.asarray(bg, float)
    wa = w * a
    return w, m, bg, wa, (bg * bg) @ w, bg @ wa, (wa * a).sum(0)


def class_loglik(a: np.ndarray, var: np.ndarray, spectra: np.ndarray, log_prior: np.ndarray | None = None,
                 bg: np.ndarray | None = None):
    """(ln p (C, n) up to a constant per pixel, χ² (C, n), t̂ (C, n)) of absorbances ``a`` and variances
    ``var`` (k, n) for class ``spectra`` (C, k), background shape ``bg`` (k; default constant). A fit with
    t̂ ≤ 0 (the class's edge upside down) gets the background-only χ², i.e. no credit for the class's shape."""
    w, m, bg, wa, s0, y0, yy = background_sums(a, var, spectra, bg)
    s1, s2, y1 = (m * bg) @ w, (m * m) @ w, m @ wa
    det = s0 * s2 - s1 * s1
    t = (s0 * y1 - s1 * y0) / det
    fitted = (s2 * y0 * y0 - 2 * s1 * y0 * y1 + s0 * y1 * y1) / det
    x2 = np.where(t > 0, yy - fitted, yy - y0 * y0 / s0)
    logp = -0.5 * x2 - 0.5 * np.log(np.maximum(det, 1e-300))
    if log_prior is not None:
        logp = logp + np.asarray(log_prior)[:, None]
    return logp, x2, t


def softmax(logp: np.ndarray, axis: int = 0) -> np.ndarray:
    """Normalised probabilities of log-probabilities along ``axis``."""
    q = np.exp(logp - logp.max(axis=axis, keepdims=True))
    return q / q.sum(axis=axis, keepdims=True)


def unexplained_threshold(k: int) -> float:
    """χ²_min above which a pixel is unexplained: the 1 − ``UNEXPLAINED_P`` quantile of χ² with k − 2 dof."""
    return float(chi2.ppf(1.0 - UNEXPLAINED_P, max(k - 2, 1)))


def pair_chi2(a: np.ndarray, var: np.ndarray, spectra: np.ndarray, bg: np.ndarray | None = None):
    """(χ² (n), dominant class (n)) of the best two-class mixture A = b·β + t_a·m_a + t_b·m_b with t_a, t_b ≥ 0
    over all pairs of class ``spectra`` (C, k) (χ² inf and class −1 where no pair fits with both weights
    non-negative, or C < 2); the dominant class is the one of the larger weight (the truth's "majority
    fraction"). A pixel on a grain boundary, or in a grain smaller than the point-spread function, is a
    mixture. Weighted least squares per pixel, 3 × 3 normal equations solved in batch."""
    a = np.asarray(a, np.float64)
    w = 1.0 / np.asarray(var, np.float64)
    m = np.asarray(spectra, np.float64)
    k, n = a.shape
    bg = np.ones(k) if bg is None else np.asarray(bg, float)
    best = np.full(n, np.inf)
    dominant = np.full(n, -1)
    yy = (w * a * a).sum(0)
    for i in range(len(m)):
        for j in range(i + 1, len(m)):
            x = np.stack([bg, m[i], m[j]])  # (3, k)
            g = np.einsum("pk,qk,kn->npq", x, x, w)
            h = np.einsum("pk,kn->np", x, w * a)
            ok = np.abs(np.linalg.det(g)) > 1e-300
            coef = np.zeros((n, 3))
            coef[ok] = np.linalg.solve(g[ok], h[ok][..., None])[..., 0]
            x2 = yy - (coef * h).sum(1)
            better = ok & (coef[:, 1] >= 0) & (coef[:, 2] >= 0) & (x2 < best)
            best = np.where(better, x2, best)
            dominant = np.where(better, np.where(coef[:, 1] >= coef[:, 2], i, j), dominant)
    return best, dominant
