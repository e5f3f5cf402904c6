"""Exact posterior of a linear-Gaussian model with grid-marginalised nuisance parameters.

Model: y = X(γ) a + ε,  a ~ N(m0, S0), with γ a shape parameter on a grid (e.g. the resolution width Γ,
which enters X) and s a factor on a log grid in one of two roles:

- noise scale: ε ~ N(0, s² diag(v)) (a white inflation of the known variances);
- prior scale of a block of amplitudes (``scaled``): ε ~ N(0, diag(v)) with v known, and the prior std of
  the scaled amplitudes multiplied by s, S0(s) = D S0 D with D = diag(s on the block, 1 elsewhere). With
  the block a set of discrepancy basis functions this is a structured-misfit model whose size s the data
  decide (a reduced-rank Gaussian-process discrepancy, marginalised exactly).

For each (γ, s) the posterior of the amplitudes ``a`` is Gaussian and the evidence closed-form; the grid
prior is uniform over the s cells and ``gamma_log_prior`` (default uniform) over γ. The posterior of ``a``
is therefore an exact Gaussian mixture: no sampling, no fitting iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import ndtr, ndtri

LOG_2PI = np.log(2.0 * np.pi)


@dataclass(frozen=True, eq=False)
class Mixture1D:
    """1-D Gaussian mixtures sharing their weights: the exact marginal posteriors of one linear
    quantity (``means``/``variances`` of shape (M,)) or of several at once (shape (Q, M))."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def mean(self):
        m = self.means @ self.weights
        return float(m) if m.ndim == 0 else m

    @property
    def std(self):
        m = self.means @ self.weights
        var = (self.variances + (self.means - m[..., None]) ** 2) @ self.weights
        sd = np.sqrt(np.maximum(var, 0.0))
        return float(sd) if sd.ndim == 0 else sd

    def _z(self, x):
        x = np.asarray(x, dtype=float)
        sd = np.sqrt(self.variances)[..., None, :]
        return (x[..., None] - self.means[..., None, :]) / sd, sd

    def cdf(self, x) -> np.ndarray:
        """P(q ≤ x); ``x`` of shape (P,) or (Q, P) for Q quantities."""
        z, _ = self._z(x)
        return ndtr(z) @ self.weights

    def pdf(self, x) -> np.ndarray:
        z, sd = self._z(x)
        return (np.exp(-0.5 * z * z) / (sd * np.sqrt(2 * np.pi))) @ self.weights

    def quantiles(self, probs, tol: float = 1e-9) -> np.ndarray:
        """Quantiles (shape (P,) or (Q, P)): Newton steps on the mixture CDF from the moment-matched
        normal guess, kept inside a bisection bracket so they cannot diverge (|CDF − p| < ``tol``)."""
        probs = np.asarray(probs, dtype=float)
        sd = np.sqrt(self.variances)
        shape = self.means.shape[:-1] + probs.shape
        lo = np.broadcast_to(np.min(self.means - 12 * sd, axis=-1)[..., None], shape)
        hi = np.broadcast_to(np.max(self.means + 12 * sd, axis=-1)[..., None], shape)
        x = np.clip(np.asarray(self.mean)[..., None] + np.asarray(self.std)[..., None] * ndtri(probs), lo, hi)
        for _ in range(100):
            f = self.cdf(x) - probs
            done = np.abs(f) < tol
            if np.all(done):
                break
            lo, hi = np.where(f < 0, x, lo), np.where(f < 0, hi, x)
            step = x - f / np.maximum(self.pdf(x), 1e-300)
            # Converged elements stay put (a step onto the bracket's edge would otherwise fall back to bisection).
            x = np.where(done, x, np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi)))
        return x

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Central credible interval at ``level`` (one quantity)."""
        lo, hi = self.quantiles([(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)


@dataclass(frozen=True, eq=False)
class GridPosterior:
    """Result of ``LinearGridPosterior.fit``: per-cell weights, Gaussian means and covariances."""

    weights: np.ndarray  # (G, S), sums to 1
    means: np.ndarray  # (G, S, k)
    covs: np.ndarray  # (G, S, k, k)
    log_evidence: float  # log p(y), nats
    gamma_grid: np.ndarray
    scale_grid: np.ndarray

    @cached_property
    def _keep(self) -> np.ndarray:
        """Cells kept in marginals: all but the lightest ones holding a total mass below 1e-12
        (an error of that order in any probability)."""
        flat = self.weights.ravel()
        order = np.argsort(flat)
        keep = np.zeros(flat.size, bool)
        keep[order[np.cumsum(flat[order]) > 1e-12]] = True
        return keep.reshape(self.weights.shape)

    def marginal(self, coeffs) -> Mixture1D:
        """Exact posterior of the linear quantity ``coeffs · a`` (amplitudes' units); ``coeffs`` of
        shape (Q, k) gives Q quantities at once."""
        c = np.asarray(coeffs, dtype=float)
        keep = self._keep
        w = self.weights[keep]
        means = np.moveaxis(self.means[keep] @ c.T, -1, 0) if c.ndim == 2 else self.means[keep] @ c
        var = np.einsum("...i,nij,...j->...n", c, self.covs[keep], c)
        return Mixture1D(w / w.sum(), means, var)

    def grid_marginal(self, axis: str) -> tuple[float, float]:
        """Posterior mean and std of ``"gamma"`` or ``"scale"`` (their grid marginals)."""
        if axis == "gamma":
            w, x = self.weights.sum(axis=1), self.gamma_grid
        elif axis == "scale":
            w, x = self.weights.sum(axis=0), self.scale_grid
        else:
            raise ValueError(f"unknown grid axis {axis!r}")
        m = float(w @ x)
        return m, float(np.sqrt(max(w @ (x - m) ** 2, 0.0)))


def _log_weights(log_prior, grid: np.ndarray, name: str) -> np.ndarray:
    """Normalised log weights of a grid's cells (uniform when ``log_prior`` is None)."""
    lw = np.zeros(grid.size) if log_prior is None else np.asarray(log_prior, dtype=float)
    if lw.shape != grid.shape or not np.all(np.isfinite(lw)):
        raise ValueError(f"{name}_log_prior must give a finite log weight per {name} grid value")
    peak = lw.max()
    return lw - peak - np.log(np.exp(lw - peak).sum())


class LinearGridPosterior:
    """Exact posterior for y = X(γ)a + ε on a (γ, s) grid; ``fit(y, var)`` is O(G·n·k²).

    ``design``: (G, n, k) design matrices, one per γ in ``gamma_grid``; ``scale_grid``: factors s
    (dimensionless); ``prior_mean``/``prior_cov``: Gaussian prior of the amplitudes. ``scaled``: None (s
    scales the noise) or a boolean mask (k,) of the amplitudes whose prior std s scales (the noise is then
    known). ``gamma_log_prior``, ``scale_log_prior``: log prior weights (G,), (S,) of the γ and s grids
    (normalised here; default uniform over the cells).
    """

    def __init__(self, design, gamma_grid, scale_grid, prior_mean, prior_cov, scaled=None, gamma_log_prior=None,
                 scale_log_prior=None):
        self.design = np.ascontiguousarray(design, dtype=float)
        if self.design.ndim != 3:
            raise ValueError("design must have shape (n_gamma, n_points, n_amplitudes)")
        self.gamma_grid = np.asarray(gamma_grid, dtype=float)
        self.scale_grid = np.asarray(scale_grid, dtype=float)
        if self.gamma_grid.shape != (self.design.shape[0],):
            raise ValueError("gamma_grid must have one value per design matrix")
        if np.any(self.scale_grid <= 0):
            raise ValueError("noise scale factors must be positive")
        self.prior_mean = np.asarray(prior_mean, dtype=float)
        self.prior_cov = np.asarray(prior_cov, dtype=float)
        k = self.design.shape[2]
        if self.prior_mean.shape != (k,) or self.prior_cov.shape != (k, k):
            raise ValueError(f"prior must have mean shape ({k},) and covariance ({k}, {k})")
        self.prior_prec = np.linalg.inv(self.prior_cov)
        self._p0m0 = self.prior_prec @ self.prior_mean
        self._m0p0m0 = float(self.prior_mean @ self._p0m0)
        self._logdet_s0 = float(np.linalg.slogdet(self.prior_cov)[1])
        self.scaled = None if scaled is None else np.asarray(scaled, dtype=bool)
        if self.scaled is not None and self.scaled.shape != (k,):
            raise ValueError(f"scaled must be a boolean mask of the {k} amplitudes")
        self._log_cell_prior = _log_weights(gamma_log_prior, self.gamma_grid, "gamma")[:, None] \
            + _log_weights(scale_log_prior, self.scale_grid, "scale")[None, :]
        if self.scaled is not None:  # D⁻¹ P0 D⁻¹ per s: inverse std factors r = 1/s on the scaled block
            r = np.where(self.scaled[None, :], 1.0 / self.scale_grid[:, None], 1.0)  # (S, k)
            self._prior_prec_s = self.prior_prec[None] * r[:, :, None] * r[:, None, :]
            self._p0m0_s = np.einsum("sij,j->si", self._prior_prec_s, self.prior_mean)
            self._m0p0m0_s = self._p0m0_s @ self.prior_mean
            self._logdet_s0_s = self._logdet_s0 + 2.0 * self.scaled.sum() * np.log(self.scale_grid)
            self._block = self._block_prior()
        g, n, k = self.design.shape
        self._cols = np.ascontiguousarray(self.design.transpose(0, 2, 1)).reshape(g * k, n)
        # For two or three amplitudes, products x_i x_j per point make XᵀWX one matrix–vector product; beyond,
        # that table (G k² × n) costs more memory traffic than G small weighted matrix products.
        self._pairs = (np.einsum("gni,gnj->gijn", self.design, self.design).reshape(g * k * k, n) if k <= 3
                       else None)

    def statistics(self, y, var):
        """Sufficient statistics of data ``y`` with variances ``var``: XᵀWX, XᵀWy, yᵀWy, Σlog v, n."""
        y = np.asarray(y, dtype=float)
        var = np.asarray(var, dtype=float)
        if y.shape != (self.design.shape[1],) or var.shape != y.shape:
            raise ValueError(f"data must have shape ({self.design.shape[1]},), got {y.shape} and {var.shape}")
        if not (np.all(np.isfinite(y)) and np.all(var > 0) and np.all(np.isfinite(var))):
            raise ValueError("data must be finite with positive finite variances")
        g, _, k = self.design.shape
        w = 1.0 / var
        if self._pairs is not None:
            xtwx = (self._pairs @ w).reshape(g, k, k)
        else:
            xtwx = self._cols.reshape(g, k, -1) * w @ self.design
        xtwy = (self._cols @ (w * y)).reshape(g, k)
        return xtwx, xtwy, float(w @ (y * y)), float(np.log(var).sum()), y.size

    def fit(self, y, var) -> GridPosterior:
        """Posterior given data ``y`` (n,) with known variances ``var`` (n,) before the scale s²."""
        return self.fit_statistics(*self.statistics(y, var))

    def _block_prior(self):
        """For the prior-scale role with the scaled block uncorrelated with the rest and of zero prior mean:
        (a, d) index arrays, the unscaled block's prior precision, and R⁻¹ of the scaled block's prior precision
        Q = R Rᵀ; None otherwise (the general path then serves)."""
        d, a = np.flatnonzero(self.scaled), np.flatnonzero(~self.scaled)
        if d.size == 0 or np.any(self.prior_cov[np.ix_(a, d)] != 0) or np.any(self.prior_mean[d] != 0):
            return None
        q = self.prior_prec[np.ix_(d, d)]
        return a, d, self.prior_prec[np.ix_(a, a)], np.linalg.inv(np.linalg.cholesky(q)), float(np.linalg.slogdet(q)[1])

    def _fit_block(self, xtwx, xtwy):
        """Precision Π(γ, s) = XᵀWX + P0(s) solved through the scaled block's eigenbasis: with Q = R Rᵀ and
        R⁻¹ A_dd R⁻ᵀ = V Λ Vᵀ, U = R⁻ᵀ V makes that block Λ + I/s² (diagonal) for every s, leaving a k × k Schur
        complement per cell (k unscaled amplitudes): O(G m³ + G S (k² m + m²)) instead of G S (k + m)³.
        Returns covs, means (in the original order), bᵀΠ⁻¹b and log det Π, for b = P0(s) m0 + XᵀWy."""
        a, d, p_a, r_inv, logdet_q = self._block
        lam = 1.0 / self.scale_grid**2  # (S,)
        a_aa = xtwx[:, a[:, None], a[None, :]]
        a_ad = xtwx[:, a[:, None], d[None, :]]
        lam_e, v = np.linalg.eigh(r_inv @ xtwx[:, d[:, None], d[None, :]] @ r_inv.T)  # (G, m), (G, m, m)
        u = r_inv.T @ v  # (G, m, m): Uᵀ A_dd U = Λ, Uᵀ Q U = I
        a_ae = a_ad @ u  # (G, k, m)
        b_a = (p_a @ self.prior_mean[a])[None, :] + xtwy[:, a]  # (G, k)
        b_e = np.einsum("gji,gj->gi", u, xtwy[:, d])  # (G, m)
        dd = 1.0 / (lam_e[:, None, :] + lam[None, :, None])  # (G, S, m)
        a_ae_d = a_ae[:, None] * dd[:, :, None, :]  # (G, S, k, m): A_ae diag(D)
        schur = (a_aa + p_a)[:, None] - a_ae_d @ np.swapaxes(a_ae, -1, -2)[:, None]
        s_inv = np.linalg.inv(schur)  # (G, S, k, k)
        rhs = b_a[:, None] - (a_ae_d @ b_e[:, None, :, None])[..., 0]
        z_a = (s_inv @ rhs[..., None])[..., 0]
        z_e = dd * (b_e[:, None] - (z_a[..., None, :] @ a_ae[:, None])[..., 0, :])
        quad = (z_a * b_a[:, None]).sum(-1) + (z_e * b_e[:, None]).sum(-1)
        logdet = np.linalg.slogdet(schur)[1] - np.log(dd).sum(-1) + logdet_q
        c_ae = -(s_inv @ a_ae_d)  # (G, S, k, m)
        c_ee = dd[..., :, None] * (np.eye(dd.shape[-1]) - np.swapaxes(a_ae, -1, -2)[:, None] @ c_ae)
        c_ad = c_ae @ np.swapaxes(u, -1, -2)[:, None]
        c_dd = u[:, None] @ c_ee @ np.swapaxes(u, -1, -2)[:, None]
        covs = np.concatenate([np.concatenate([s_inv, c_ad], -1),
                               np.concatenate([np.swapaxes(c_ad, -1, -2), c_dd], -1)], -2)
        means = np.concatenate([z_a, (u[:, None] @ z_e[..., None])[..., 0]], -1)
        order = np.argsort(np.r_[a, d])  # back from (unscaled, scaled) to the amplitudes' own order
        if np.any(order != np.arange(order.size)):
            covs, means = covs[..., order[:, None], order[None, :]], means[..., order]
        return covs, means, quad, logdet

    def fit_statistics(self, xtwx, xtwy, ytwy, sum_log_var, n) -> GridPosterior:
        if self.scaled is not None and self._block is not None:
            covs, means, quad, logdet_p = self._fit_block(xtwx, xtwy)
            const = (ytwy + self._m0p0m0_s + self._logdet_s0_s)[None, :]
            log_z = -0.5 * (n * LOG_2PI + sum_log_var + const - quad + logdet_p)
            return self._posterior(log_z, means, covs)
        if self.scaled is None:
            s2 = self.scale_grid**2
            prec = self.prior_prec + xtwx[:, None] / s2[None, :, None, None]
            b = self._p0m0 + xtwy[:, None, :] / s2[None, :, None]
            const = (n * np.log(s2)[None, :] + ytwy / s2[None, :] + self._m0p0m0 + self._logdet_s0)
        else:
            prec = self._prior_prec_s[None] + xtwx[:, None]
            b = self._p0m0_s[None] + xtwy[:, None, :]
            const = (ytwy + self._m0p0m0_s + self._logdet_s0_s)[None, :]
        if prec.shape[-1] == 2:  # closed form: batched LAPACK calls dominate for 2 × 2 blocks
            det = prec[..., 0, 0] * prec[..., 1, 1] - prec[..., 0, 1] * prec[..., 1, 0]
            covs = np.stack([np.stack([prec[..., 1, 1], -prec[..., 0, 1]], -1),
                             np.stack([-prec[..., 1, 0], prec[..., 0, 0]], -1)], -2) / det[..., None, None]
            logdet_p = np.log(det)
        else:
            covs = np.linalg.inv(prec)
            logdet_p = np.linalg.slogdet(prec)[1]
        means = np.einsum("gsij,gsj->gsi", covs, b)
        log_z = -0.5 * (n * LOG_2PI + sum_log_var + const - np.einsum("gsi,gsi->gs", b, means) + logdet_p)
        return self._posterior(log_z, means, covs)

    def _posterior(self, log_z, means, covs) -> GridPosterior:
        log_post = log_z + self._log_cell_prior
        peak = log_post.max()
        log_ev = float(peak + np.log(np.exp(log_post - peak).sum()))
        return GridPosterior(np.exp(log_post - log_ev), means, covs, log_ev, self.gamma_grid, self.scale_grid)
