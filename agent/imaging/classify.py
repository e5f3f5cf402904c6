"""Per-pixel class posteriors: the profile likelihood of each class spectrum under the pixel's own noise.

A class c is a spectrum m_c (k energies, known up to an affine map: the partition's z point). A pixel's
absorbances A (k) with variances V are A = b + t·m_c + noise; profiling b and t by weighted least squares
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


def class_loglik(a: np.ndarray, var: np.ndarray, spectra: np.ndarray, log_prior: np.ndarray | None = None):
    """(ln p (C, n) up to a constant per pixel, χ² (C, n), t̂ (C, n)) of absorbances ``a`` and variances
    ``var`` (k, n) for class ``spectra`` (C, k). A fit with t̂ ≤ 0 (the class's edge upside down) gets the
    constant-only χ², i.e. no credit for the class's shape."""
    a = np.asarray(a, np.float64)
    w = 1.0 / np.asarray(var, np.float64)
    m = np.asarray(spectra, np.float64)
    wa = w * a
    s0, y0, yy = w.sum(0), wa.sum(0), (wa * a).sum(0)
    s1, s2, y1 = m @ w, (m * m) @ w, m @ wa
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
