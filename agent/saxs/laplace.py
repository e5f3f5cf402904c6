"""Core-shell posterior by the Laplace approximation on direct sasmodels curves (DESIGN §4.4).

The model is sasmodels' ``core_shell_sphere`` as a core-shell latex or coated silica is: a Schulz distribution
of the core radius R_c (relative std ``pd``) under a shell of uniform thickness t, so the curve is not
scale-free in one radius and the lattice tables of ``agent.saxs.form_factors`` cannot hold it; each curve is
one sasmodels call (~1 ms on the reduction's fine bins). I(q) = a·I_cs(q; R_c, t, pd) + b with the SLDs
stated, a the volume fraction, b a flat background (cm⁻¹), both marginalised exactly as the grid models do
(``agent.saxs.posterior``: flat priors over the whole plane). Nonlinear θ = (ln R_c, ln t, pd), uniform
priors ln R_c ∈ [ln R_min, ln R_max] (the agent's radius prior, nm), ln t ∈ [ln 2, ln 50] (nm), pd ∈ [0.02, 0.3].

Laplace: θ* maximises ln p(θ | y) (Gauss-Newton from the previous update's θ*; at the first, L-BFGS-B from the
self-similar lattice model's estimate, then Gauss-Newton); H the Gauss-Newton precision at θ* (the Fisher
matrix of (θ, a, b) with (a, b) profiled out: exact for a model linear in θ over the posterior's width, and
the −½ ln det of the linear integral's θ-dependence neglected); ln Z = ln p(θ*, y) + (3/2) ln 2π − ½ ln det H. The
posterior of θ is N(θ*, H⁻¹): the outer radius R = R_c + t and the others by the delta method (moments and
Gaussian intervals). Valid while the posterior is well inside the prior box and close to Gaussian, as it is
once a frame of 10⁵+ photons is in (``tests/test_saxs_agent.py`` checks it against a brute-force grid); the
conditional (a, b) Gaussians are taken at θ* (their spread over θ is neglected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize

from agent.saxs.form_factors import sasmodels_intensity
from agent.saxs.posterior import Data

SHELL_PRIOR_NM = (2.0, 50.0)  # nm: a shell thinner than ~2 nm (a surface layer) is the sphere candidate
SUBSAMPLE = 2  # fine bins per sasmodels point
GN_STEP = 1e-4  # forward-difference step of the Gauss-Newton Jacobian (ln R_c, ln t: relative; pd: absolute)
PD_PRIOR = (0.02, 0.3)  # below 2 % the spline between sasmodels points fails at the zeros (and no colloid is)
Z = {"lo68": -0.9944578832, "hi68": 0.9944578832, "lo95": -1.959963985, "hi95": 1.959963985}  # LEVELS as normal z


@dataclass(frozen=True)
class Point:
    """θ* = (ln R_c, ln t, pd): where the next update starts, and (``as_list``) what a checkpoint stores."""

    theta: tuple[float, float, float]

    def as_list(self) -> list:
        return list(self.theta)

    @classmethod
    def from_list(cls, values) -> Point:
        return cls(tuple(float(x) for x in values))


class LaplaceCoreShell:
    """The core-shell candidate on the reduction's fine bins ``q_fine`` (nm⁻¹)."""

    def __init__(self, q_fine: np.ndarray, sld_core: float, sld_shell: float, sld_solvent: float,
                 r_prior=(2.0, 150.0), a_max: float = 1.0, b_max: float = 1.0, ln_q_var=None):
        """``q_fine``: where each fine bin's curve is taken (its pixels' mean q, nm⁻¹); ``ln_q_var``: the variance
        of ln q over its pixels, for the ½·var·I'' term (reduction._pixel_moments)."""
        self.q_fine = np.asarray(q_fine, float)
        self.half_var = np.zeros(self.q_fine.size) if ln_q_var is None else 0.5 * np.asarray(ln_q_var, float)
        # sasmodels is called on every SUBSAMPLE-th fine bin (and the last), I·q⁴ interpolated by a cubic spline in
        # ln q between them: ~4× fewer curve points (see ``fine_curve``)
        self._sub = np.unique(np.r_[np.arange(0, self.q_fine.size, SUBSAMPLE), self.q_fine.size - 1])
        self._ln_q = np.log(self.q_fine)
        self.slds = {"sld_core": float(sld_core), "sld_shell": float(sld_shell), "sld_solvent": float(sld_solvent)}
        self.bounds = [(float(np.log(r_prior[0])), float(np.log(r_prior[1]))),
                       tuple(float(np.log(v)) for v in SHELL_PRIOR_NM), PD_PRIOR]
        self.log_prior_theta = -float(sum(np.log(hi - lo) for lo, hi in self.bounds))
        self.log_prior_lin = -float(np.log(a_max * 2.0 * b_max))

    def fine_curve(self, theta) -> np.ndarray:
        """I_cs on the fine bins (cm⁻¹ per volume fraction) at θ = (ln R_c, ln t, pd): sasmodels on every
        ``SUBSAMPLE``-th fine bin, the Porod-flattened I·q⁴ by a cubic spline in ln q between (smooth through a
        monodisperse curve's zeros, where ln I is not; tests check it against sasmodels on every bin)."""
        ln_rc, ln_t, pd = (float(v) for v in theta)
        pars = {"radius": float(np.exp(ln_rc)), "thickness": float(np.exp(ln_t)), **self.slds}
        if pd > 0:
            pars.update(radius_pd=pd, radius_pd_type="schulz")
        q4 = self.q_fine**4
        nodes = sasmodels_intensity("core_shell_sphere", self.q_fine[self._sub], **pars) * q4[self._sub]
        spline = CubicSpline(self._ln_q[self._sub], nodes)
        s0, s1, s2 = spline(self._ln_q), spline(self._ln_q, 1), spline(self._ln_q, 2)
        return (s0 + self.half_var * (s2 - 8.0 * s1 + 16.0 * s0)) / q4  # I = S/q⁴: I'' = (S'' − 8S' + 16S)/q⁴

    def coarse_curve(self, theta, data: Data) -> np.ndarray:
        """The coarse-bin model (pixel-weight average of the fine bins, as the reduction averages pixels) on the
        used bins."""
        c = (self.fine_curve(theta) * data.fine_w).reshape(-1, data.group).sum(axis=1)
        return c[data.use]

    def log_post(self, theta, data: Data) -> tuple[float, float, float, float, float, float, float]:
        """(ln p(θ, y) with (a, b) integrated out, a, b, var a, var b, cov ab, χ²_min) at θ."""
        m = self.coarse_curve(theta, data)
        y, var = data.y[data.use], data.var[data.use]
        iw = 1.0 / var
        smm, sm, smy = float((m * m) @ iw), float(m @ iw), float(m @ (iw * y))
        sw, sy, syy = float(iw.sum()), float(iw @ y), float(iw @ (y * y))
        det = smm * sw - sm * sm
        if not det > 0:
            return -np.inf, np.nan, np.nan, np.nan, np.nan, np.nan, np.inf
        a = (smy * sw - sm * sy) / det
        b = (sy * smm - sm * smy) / det
        chi2 = syy - a * smy - b * sy
        lp = (-0.5 * chi2 + np.log(2 * np.pi) - 0.5 * np.log(det) - 0.5 * float(np.sum(np.log(2 * np.pi * var)))
              + self.log_prior_lin + self.log_prior_theta)
        return float(lp), a, b, sw / det, smm / det, -sm / det, float(chi2)

    def _clip(self, theta) -> np.ndarray:
        return np.array([min(max(v, lo), hi) for v, (lo, hi) in zip(theta, self.bounds, strict=True)])

    def fit(self, data: Data, start, optimise: bool = True) -> LaplaceResult:
        """The Laplace posterior from ``start``: a ``Point`` (the previous update's θ*: Gauss-Newton from there) or θ
        (a first guess: L-BFGS-B first); ``optimise`` False: at ``start`` itself (a restored checkpoint's θ*)."""
        warm = isinstance(start, Point)
        theta = self._clip(np.array(start.theta if warm else start, float))
        h = None
        if optimise:
            found = self._newton(theta, data) if warm else None
            if found is None:
                opt = minimize(lambda t: -self.log_post(t, data)[0], theta, method="L-BFGS-B", bounds=self.bounds,
                               options={"ftol": 1e-12, "gtol": 1e-8, "maxiter": 200})
                found = self._newton(self._clip(opt.x), data) if np.isfinite(opt.fun) else None
                found = (self._clip(opt.x), None) if found is None else found
            theta, h = found
        if h is None:
            h, _ = self._gauss_newton(theta, data)
        lp, a, b, va, vb, cab, chi2 = self.log_post(theta, data)
        sign, logdet = np.linalg.slogdet(h)
        log_z = lp + 1.5 * np.log(2 * np.pi) - 0.5 * logdet if sign > 0 else -np.inf
        cov = np.linalg.inv(h) if sign > 0 else np.full((3, 3), np.nan)
        return LaplaceResult(self, Point(tuple(float(v) for v in theta)), cov, a, b, va, vb, cab, float(log_z), chi2,
                             int(data.use.sum()), data)

    def _gauss_newton(self, theta, data: Data) -> tuple[np.ndarray, np.ndarray]:
        """(S, g): the Gauss-Newton precision of θ with (a, b) profiled out (the Schur complement of the Fisher
        matrix of (θ, a, b)) and the gradient of −χ²/2 along θ at the conditional (a, b), from 4 curves (forward
        differences of ``GN_STEP``)."""
        m0 = self.coarse_curve(theta, data)
        jac = np.stack([(self.coarse_curve(theta + e, data) - m0) / GN_STEP for e in GN_STEP * np.eye(3)], axis=1)
        y, iw = data.y[data.use], 1.0 / data.var[data.use]
        lin = np.column_stack([m0, np.ones_like(m0)])
        a, b = np.linalg.solve(lin.T @ (iw[:, None] * lin), lin.T @ (iw * y))
        full = np.column_stack([a * jac, lin])
        f = full.T @ (iw[:, None] * full)
        schur = f[:3, :3] - f[:3, 3:] @ np.linalg.solve(f[3:, 3:], f[3:, :3])
        return schur, (a * jac).T @ (iw * (y - a * m0 - b))

    def _newton(self, theta: np.ndarray, data: Data) -> tuple[np.ndarray, np.ndarray | None] | None:
        """θ* by Gauss-Newton steps (halved while ln p falls; a coordinate at its prior bound that a step pushes
        out held there) until a step is < 0.01 std (a proposed one: no line search then; a taken one), or a proposed
        step < 0.1 std that no halving can take (ln p's rounding at χ² ~ 10⁵: θ* is within 0.1 std); from the
        previous update's θ* one or two steps, 5 curves each. (θ*, its precision if computed there, else None);
        ``None`` if it does not converge in 8."""
        lp0 = self.log_post(theta, data)[0]
        lo, hi = np.array(self.bounds).T
        for _ in range(8):
            s, g = self._gauss_newton(theta, data)
            free = np.ones(3, bool)
            try:
                for _active in range(3):  # a coordinate at its prior bound that the step pushes out stays there
                    d = np.zeros(3)
                    d[free] = np.linalg.solve(s[np.ix_(free, free)], g[free])
                    out = free & (((theta <= lo) & (d < 0)) | ((theta >= hi) & (d > 0)))
                    if not out.any():
                        break
                    free &= ~out
            except np.linalg.LinAlgError:
                return None
            sd = _sd(s)
            proposed = float(np.max(np.abs(d) / sd))
            if proposed < 0.01:  # at θ* already: a step this small is below ln p's rounding at χ² ~ 10⁵
                return theta, s
            for _halving in range(5):
                trial = self._clip(theta + d)
                lp1 = self.log_post(trial, data)[0]
                if lp1 >= lp0 - 1e-9:
                    break
                d = 0.5 * d
            else:  # no step raised ln p: rounding if the step was < 0.1 std (θ* within 0.1 std), else no convergence
                return (theta, s) if proposed < 0.1 else None
            step = np.abs(trial - theta) / sd
            theta, lp0 = trial, lp1
            if np.max(step) < 0.01:
                return theta, None
        return None


@dataclass
class LaplaceResult:
    """N(θ*, cov) over θ = (ln R_c, ln t, pd) and the conditional (a, b) at θ*."""

    model: LaplaceCoreShell
    window: Point
    cov: np.ndarray
    a: float
    b: float
    var_a: float
    var_b: float
    cov_ab: float
    log_z: float
    chi2_min: float
    n_data: int
    data: Data

    @property
    def free_energy(self) -> float:
        return -self.log_z

    def next_window(self) -> Point:
        return self.window

    def summary(self) -> dict[str, float]:
        """``<q>_mean/_std/_lo68/_hi68/_lo95/_hi95`` of the outer radius ``radius``, ``core_radius``, ``shell``
        (nm), ``pd``, ``scale`` (volume fraction) and ``background`` (cm⁻¹), Gaussian by the delta method."""
        ln_rc, ln_t, pd = self.window.theta
        rc, t = np.exp(ln_rc), np.exp(ln_t)
        grads = {"radius": (rc + t, np.array([rc, t, 0.0])), "core_radius": (rc, np.array([rc, 0.0, 0.0])),
                 "shell": (t, np.array([0.0, t, 0.0])), "pd": (pd, np.array([0.0, 0.0, 1.0]))}
        out: dict[str, float] = {}
        for name, (mean, g) in grads.items():
            out.update(_gaussian(name, float(mean), float(np.sqrt(max(g @ self.cov @ g, 0.0)))))
        out.update(_gaussian("scale", self.a, float(np.sqrt(max(self.var_a, 0.0)))))
        out.update(_gaussian("background", self.b, float(np.sqrt(max(self.var_b, 0.0)))))
        return out

    def mean_curve(self) -> np.ndarray:
        """The model at θ* (cm⁻¹) on the used coarse bins."""
        return self.a * self.model.coarse_curve(self.window.theta, self.data) + self.b

    def jacobian(self) -> np.ndarray:
        """∂model/∂(R, pd, a, b) on the used bins at θ*, R the outer radius varied with the core fraction fixed,
        for the design (finite differences)."""
        theta = np.array(self.window.theta)
        c = self.model.coarse_curve(theta, self.data)
        eps = 1e-4
        grow = self.model.coarse_curve(theta + np.array([eps, eps, 0.0]), self.data)
        r = float(np.exp(theta[0]) + np.exp(theta[1]))
        d_r = self.a * (grow - c) / (r * eps)
        d_pd = self.a * (self.model.coarse_curve(theta + np.array([0.0, 0.0, 1e-3]), self.data) - c) / 1e-3
        return np.stack([d_r, d_pd, c, np.ones_like(c)], axis=1)


def _gaussian(name: str, mean: float, std: float) -> dict[str, float]:
    return {f"{name}_mean": mean, f"{name}_std": std, **{f"{name}_{k}": mean + z * std for k, z in Z.items()}}


def _sd(h: np.ndarray) -> np.ndarray:
    """Marginal std of N(·, h⁻¹) (floored at 1e-8: a direction the data do not constrain keeps a finite step)."""
    return np.sqrt(np.clip(np.diag(np.linalg.pinv(h)), 1e-16, None))
