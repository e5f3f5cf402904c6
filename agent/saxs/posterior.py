"""Grid posterior of a form-factor model I(q) = a·φ-normalised curve(q; R, u) + b with a, b marginalised exactly.

Likelihood: Gaussian on the coarse-bin subtracted dΣ/dΩ y_c ± σ_c (reduction.subtracted); the model in a
coarse bin is the pixel-weight average of the fine-bin curves (weights = the sample's Σ normalisation per
fine bin), as the reduction averages the pixels. Linear part: flat priors a ∈ [0, a_max] (the volume
fraction when the SLDs are right; a_max = 1), b ∈ [−b_max, b_max] (cm⁻¹, b_max = 1); the Gaussian integral
over (a, b) is taken over the whole plane (exact when the posterior lies well inside the box):
ln ∫∫ L = −χ²_min/2 + ln 2π − ½ ln det A − Σ ln √(2πσ²) − ln(a_max·2b_max), A the 2 × 2 normal matrix.
Nonlinear part: ln R uniform on [ln R_min, ln R_max] (R in nm, default 2–150), u uniform on the table's
range; a grid in (ln R, u) over the posterior mean ± 6 std, re-centred at each update (and zoomed from a
global grid at the first one) so that the spacing stays ≤ 0.6 std; between the table's ln x lattice
points the curves are interpolated linearly in ln x (a posterior far narrower than the lattice step, as
10⁷-photon frames give, is then still resolved); moments by the midpoint rule, quantiles from the
cell-wise CDF. Free energy F = −ln Z (nats), Z the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, ndtr

from agent.saxs.form_factors import LN_STEP, LNX0, N_X, FormFactorTable

N_R, N_U = 41, 31
SPAN = 6.0
LEVELS = {"lo68": 0.15865525, "hi68": 0.84134475, "lo95": 0.025, "hi95": 0.975}


@dataclass
class Data:
    """Coarse data y ± √var on fine bins: ``fine_w`` (n_fine, normalised within each coarse bin),
    ``use`` (coarse bins used)."""

    y: np.ndarray
    var: np.ndarray
    fine_w: np.ndarray
    use: np.ndarray
    group: int


@dataclass
class Window:
    """Grid: ln R at (fractional) lattice positions j0 + step·k (k < n_r) and u nodes u0 + du·k (k < n_u)."""

    j0: float
    step: float
    n_r: int
    u0: float
    du: float
    n_u: int

    def as_list(self) -> list:
        return [self.j0, self.step, self.n_r, self.u0, self.du, self.n_u]


class GridModel:
    """One candidate model on the reduction's fine ln-q bins (first centre ``ln_q0``, step m·LN_STEP)."""

    def __init__(self, table: FormFactorTable, ln_q0: float, m: int, n_fine: int, r_prior=(2.0, 150.0),
                 a_max: float = 1.0, b_max: float = 1.0, ln_q_mean=None, ln_q_var=None):
        self.table, self.m, self.n_fine = table, int(m), int(n_fine)
        self.ln_r_lat0 = LNX0 - ln_q0
        # each fine bin's curve is taken at its pixels' mean ln q, plus ½·var·I'' (reduction._pixel_moments);
        # default: the bin centres, no variance
        mean = ln_q0 + LN_STEP * self.m * np.arange(self.n_fine) if ln_q_mean is None else np.asarray(ln_q_mean)
        self.offset = (mean - ln_q0) / LN_STEP  # lattice steps from the first centre
        self.half_var = np.zeros(self.n_fine) if ln_q_var is None else 0.5 * np.asarray(ln_q_var, float)
        j_lo = int(np.ceil((np.log(r_prior[0]) - self.ln_r_lat0) / LN_STEP))
        j_hi = int(np.floor((np.log(r_prior[1]) - self.ln_r_lat0) / LN_STEP))
        self.j_range = (max(j_lo, 1), min(j_hi, N_X - 3 - int(np.ceil(self.offset.max()))))
        if self.j_range[0] >= self.j_range[1]:
            raise ValueError(f"radius prior {r_prior} nm outside the form-factor table for this q range")
        self.u_range = table.u_range
        self.log_prior_theta = -np.log((self.j_range[1] - self.j_range[0]) * LN_STEP) - np.log(
            self.u_range[1] - self.u_range[0])
        self.log_prior_lin = -np.log(a_max * 2.0 * b_max)

    def radius(self, j) -> np.ndarray:
        return np.exp(self.ln_r_lat0 + LN_STEP * np.asarray(j, float))

    def global_window(self) -> Window:
        step = 40
        n_r = (self.j_range[1] - self.j_range[0]) // step + 1
        du = (self.u_range[1] - self.u_range[0]) / 12
        return Window(self.j_range[0], step, n_r, self.u_range[0] + du / 2, du, 12)

    def window(self, ln_r_mean: float, ln_r_std: float, u_mean: float, u_std: float) -> Window:
        """Mean ± 6 std in ln R (on the lattice) and u, clipped to the prior."""
        lo = max(ln_r_mean - SPAN * ln_r_std, self.ln_r_lat0 + LN_STEP * self.j_range[0])
        hi = min(ln_r_mean + SPAN * ln_r_std, self.ln_r_lat0 + LN_STEP * self.j_range[1])
        step = max((hi - lo) / N_R / LN_STEP, 1e-4)
        j0 = (lo - self.ln_r_lat0) / LN_STEP
        n_r = max(2, min(N_R, int((self.j_range[1] - j0) // step) + 1))
        ulo = max(u_mean - SPAN * u_std, self.u_range[0])
        uhi = min(u_mean + SPAN * u_std, self.u_range[1])
        du = max((uhi - ulo) / N_U, 1e-5)
        return Window(j0, step, n_r, ulo + du / 2, du, N_U)

    def curves(self, w: Window, data: Data) -> np.ndarray:
        """Coarse model curves (n_u, n_r, n_used) at a = 1, b = 0 (cm⁻¹ per volume fraction)."""
        j = w.j0 + w.step * np.arange(w.n_r)
        u = w.u0 + w.du * np.arange(w.n_u)
        fine_use = np.repeat(data.use, data.group) & (data.fine_w > 0)
        f = np.flatnonzero(fine_use)
        idx, wt = self.table.u_weights(u)
        nodes = np.unique(idx)
        wu = np.zeros((len(u), len(nodes)))
        np.add.at(wu, (np.repeat(np.arange(len(u)), 4), np.searchsorted(nodes, idx.ravel())), wt.ravel())
        xi = j[:, None] + self.offset[f][None, :]
        i0 = np.floor(xi).astype(np.int64)
        frac = xi - i0
        rows = self.table.table[nodes]
        g = rows[:, i0] * (1.0 - frac) + rows[:, i0 + 1] * frac
        if np.any(self.half_var[f] > 0):  # + ½·var·G'' (second difference along ln x at the lower node)
            d2 = (rows[:, i0 + 1] - 2.0 * rows[:, i0] + rows[:, i0 - 1]) / LN_STEP**2
            g = g + d2 * self.half_var[f]
        c = np.tensordot(wu, g, axes=(1, 0)) * (self.radius(j) ** 3)[None, :, None] * data.fine_w[f]
        starts = np.searchsorted(f, np.flatnonzero(data.use) * data.group)
        return np.add.reduceat(c, starts, axis=2)

    def evaluate(self, w: Window, data: Data) -> GridResult:
        m = self.curves(w, data)
        y, var = data.y[data.use], data.var[data.use]
        iw = 1.0 / var
        smm, sm, smy = (m * m) @ iw, m @ iw, m @ (iw * y)
        sw, sy, syy = iw.sum(), iw @ y, iw @ (y * y)
        det = smm * sw - sm * sm
        a = (smy * sw - sm * sy) / det
        b = (sy * smm - sm * smy) / det
        chi2 = syy - a * smy - b * sy
        log_l = (-0.5 * chi2 + np.log(2 * np.pi) - 0.5 * np.log(det) - 0.5 * np.sum(np.log(2 * np.pi * var))
                 + self.log_prior_lin)
        log_post = log_l + self.log_prior_theta
        log_z = float(logsumexp(log_post) + np.log(w.step * LN_STEP * w.du))
        p = np.exp(log_post - log_post.max())
        p /= p.sum()
        return GridResult(self, w, p, a, b, sw / det, smm / det, -sm / det, log_z, m, float(np.min(chi2)),
                          int(data.use.sum()))

    def fit(self, data: Data, start: Window | None = None, max_iter: int = 6) -> GridResult:
        """Posterior from ``start`` (default the global grid), re-centred until the grid resolves it."""
        w = start or self.global_window()
        res = self.evaluate(w, data)
        for _ in range(max_iter):
            if res.resolved():
                break
            w = res.next_window()
            res = self.evaluate(w, data)
        return res


@dataclass
class GridResult:
    """Posterior weights ``p`` (n_u, n_r) and the conditional (a, b) Gaussians at each node."""

    model: GridModel
    window: Window
    p: np.ndarray
    a: np.ndarray
    b: np.ndarray
    var_a: np.ndarray
    var_b: np.ndarray
    cov_ab: np.ndarray
    log_z: float
    curves: np.ndarray
    chi2_min: float
    n_data: int

    @property
    def free_energy(self) -> float:
        return -self.log_z

    @property
    def j(self) -> np.ndarray:
        return self.window.j0 + self.window.step * np.arange(self.window.n_r)

    @property
    def u(self) -> np.ndarray:
        return self.window.u0 + self.window.du * np.arange(self.window.n_u)

    def _ln_r_moments(self) -> tuple[float, float]:
        ln_r = np.log(self.model.radius(self.j))
        pr = self.p.sum(axis=0)
        mu = float(pr @ ln_r)
        return mu, float(np.sqrt(max(pr @ (ln_r - mu) ** 2, 0.0)))

    def _u_moments(self) -> tuple[float, float]:
        pu = self.p.sum(axis=1)
        mu = float(pu @ self.u)
        return mu, float(np.sqrt(max(pu @ (self.u - mu) ** 2, 0.0)))

    def resolved(self) -> bool:
        """Spacing ≤ 0.6 std (or at the lattice/prior limit) and < 1e-3 of the mass on the grid's edges
        (unless at the prior's bounds)."""
        _, s_r = self._ln_r_moments()
        _, s_u = self._u_moments()
        w, mdl = self.window, self.model
        fine_r = w.step * LN_STEP <= 0.6 * s_r or w.step <= 1e-4
        fine_u = w.du <= 0.6 * s_u or w.du <= 1e-5
        pr, pu = self.p.sum(axis=0), self.p.sum(axis=1)
        edge_r = (pr[0] < 1e-3 or w.j0 <= mdl.j_range[0]) and (pr[-1] < 1e-3 or self.j[-1] >= mdl.j_range[1] - w.step)
        edge_u = ((pu[0] < 1e-3 or self.u[0] - w.du <= mdl.u_range[0])
                  and (pu[-1] < 1e-3 or self.u[-1] + w.du >= mdl.u_range[1]))
        return fine_r and fine_u and edge_r and edge_u

    def next_window(self, widen: float = 1.0) -> Window:
        m_r, s_r = self._ln_r_moments()
        m_u, s_u = self._u_moments()
        w = self.window
        s_r = max(s_r, 0.25 * w.step * LN_STEP) * widen
        s_u = max(s_u, 0.25 * w.du) * widen
        return self.model.window(m_r, s_r, m_u, s_u)

    def summary(self, names=("radius", "u", "scale", "background")) -> dict[str, float]:
        """``<q>_mean/_std/_lo68/_hi68/_lo95/_hi95`` of R (nm), u, a, b."""
        out = {}
        r = self.model.radius(self.j)
        half = 0.5 * self.window.step * LN_STEP
        out.update(_cells(names[0], self.p.sum(axis=0), r, r * np.exp(-half), r * np.exp(half)))
        u, du = self.u, self.window.du
        out.update(_cells(names[1], self.p.sum(axis=1), u, u - du / 2, u + du / 2))
        out.update(_mixture(names[2], self.p.ravel(), self.a.ravel(), self.var_a.ravel()))
        out.update(_mixture(names[3], self.p.ravel(), self.b.ravel(), self.var_b.ravel()))
        return out

    def mean_curve(self) -> np.ndarray:
        """Posterior-mean coarse model curve (cm⁻¹) on the used bins."""
        return np.einsum("ur,urc->c", self.p * self.a, self.curves) + float(np.sum(self.p * self.b))

    def jacobian(self) -> np.ndarray:
        """∂model/∂(R, u, a, b) on the used bins at the posterior's best node (finite differences between
        neighbouring nodes), for the design."""
        iu, ir = np.unravel_index(np.argmax(self.p), self.p.shape)
        r = self.model.radius(self.j)
        c = self.curves
        a = self.a[iu, ir]
        r_lo, r_hi = max(ir - 1, 0), min(ir + 1, len(r) - 1)
        u_lo, u_hi = max(iu - 1, 0), min(iu + 1, len(self.u) - 1)
        d_r = a * (c[iu, r_hi] - c[iu, r_lo]) / max(r[r_hi] - r[r_lo], 1e-12)
        d_u = a * (c[u_hi, ir] - c[u_lo, ir]) / max(self.u[u_hi] - self.u[u_lo], 1e-12)
        return np.stack([d_r, d_u, c[iu, ir], np.ones_like(d_r)], axis=1)


def _quantiles(edges_lo, edges_hi, p) -> dict[str, float]:
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    x = np.concatenate([[edges_lo[0]], edges_hi])
    return {k: float(np.interp(v, cdf, x)) for k, v in LEVELS.items()}


def _cells(name, p, x, lo, hi) -> dict[str, float]:
    mean = float(p @ x)
    std = float(np.sqrt(max(p @ (x - mean) ** 2 + np.sum(p * (hi - lo) ** 2) / 12.0, 0.0)))
    return {f"{name}_mean": mean, f"{name}_std": std, **{f"{name}_{k}": v for k, v in _quantiles(lo, hi, p).items()}}


def _mixture(name, p, mu, var) -> dict[str, float]:
    keep = p > 1e-6 * p.max()
    p, mu, sd = p[keep] / p[keep].sum(), mu[keep], np.sqrt(var[keep])
    mean = float(p @ mu)
    std = float(np.sqrt(max(p @ (var[keep] + mu**2) - mean**2, 0.0)))
    grid = np.linspace(mean - 6 * std, mean + 6 * std, 601) if std > 0 else np.array([mean - 1, mean + 1])
    cdf = ndtr((grid[:, None] - mu[None, :]) / sd[None, :]) @ p
    q = {k: float(np.interp(v, cdf, grid)) for k, v in LEVELS.items()}
    return {f"{name}_mean": mean, f"{name}_std": std, **{f"{name}_{k}": v for k, v in q.items()}}
