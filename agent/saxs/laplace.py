"""Core-shell posterior by the Laplace approximation on direct sasmodels curves (DESIGN §4.4).

The model is sasmodels' ``core_shell_sphere`` as a core-shell latex or coated silica is: a Schulz distribution
of the core radius R_c (relative std ``pd``) under a shell of uniform thickness t, so the curve is not
scale-free in one radius and the lattice tables of ``agent.saxs.form_factors`` cannot hold it; each curve is
one sasmodels call (~1 ms on the reduction's fine bins). I(q) = a·I_cs(q; R_c, t, pd) + b with the SLDs
stated, a the volume fraction, b a flat background (cm⁻¹), both marginalised exactly as the grid models do
(``agent.saxs.posterior``: flat priors over the whole plane). Nonlinear θ = (ln R_c, ln t, pd), uniform
priors ln R_c ∈ [ln R_min, ln R_max] (the agent's radius prior, nm), ln t ∈ [ln 2, ln 50] (nm), pd ∈ [0.02, 0.3].

Laplace: θ* maximises ln p(θ | y) (L-BFGS-B from the previous update's θ*, or from the self-similar lattice
model's estimate at the first); H the Hessian of −ln p at θ* by central differences with steps of 0.1
posterior std (two passes: the first sets the steps); ln Z = ln p(θ*, y) + (3/2) ln 2π − ½ ln det H. The
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
PD_PRIOR = (0.02, 0.3)  # below 2 % the spline between sasmodels points fails at the zeros (and no colloid is)
Z = {"lo68": -0.9944578832, "hi68": 0.9944578832, "lo95": -1.959963985, "hi95": 1.959963985}  # LEVELS as normal z


@dataclass(frozen=True)
class Point:
    """θ* = (ln R_c, ln t, pd), the finite-difference ``step`` its Hessian was taken with, that Hessian ``hess``
    (row-major) and the data's total weight Σ 1/σ² then: where the next update starts, and (``as_list`` /
    ``from_list``) what a checkpoint stores to give the same numbers again."""

    theta: tuple[float, float, float]
    step: tuple[float, float, float] | None = None
    hess: tuple[float, ...] | None = None
    weight: float = float("nan")

    def as_list(self) -> list:
        return [*self.theta, *(self.step or ()), *(self.hess or ()), self.weight] if self.step else list(self.theta)

    @classmethod
    def from_list(cls, values) -> Point:
        v = [float(x) for x in values]
        if len(v) == 3:
            return cls(tuple(v))
        return cls(tuple(v[:3]), tuple(v[3:6]), tuple(v[6:15]), v[15])


class LaplaceCoreShell:
    """The core-shell candidate on the reduction's fine bins ``q_fine`` (nm⁻¹)."""

    def __init__(self, q_fine: np.ndarray, sld_core: float, sld_shell: float, sld_solvent: float,
                 r_prior=(2.0, 150.0), a_max: float = 1.0, b_max: float = 1.0):
        self.q_fine = np.asarray(q_fine, float)
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
        return CubicSpline(self._ln_q[self._sub], nodes)(self._ln_q) / q4

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
        """The Laplace posterior from ``start`` (θ or a ``Point``); ``optimise`` False: at ``start`` itself, with its
        stored step (a restored checkpoint's θ*: the same numbers again)."""
        point = start if isinstance(start, Point) else Point(tuple(float(v) for v in start))
        theta = self._clip(np.array(point.theta, float))
        weight = float(np.sum(1.0 / data.var[data.use]))
        if optimise:
            theta = self._maximise(theta, point, weight, data)
        step = np.array(point.step) if point.step else None
        if step is None:  # first time: a pass with small steps sets the scale of the posterior
            step = 0.1 * _sd(self._hessian(theta, data, np.full(3, 1e-3)))
        h = self._hessian(theta, data, step)
        lp, a, b, va, vb, cab, chi2 = self.log_post(theta, data)
        sign, logdet = np.linalg.slogdet(h)
        log_z = lp + 1.5 * np.log(2 * np.pi) - 0.5 * logdet if sign > 0 else -np.inf
        cov = np.linalg.inv(h) if sign > 0 else np.full((3, 3), np.nan)
        theta_t = tuple(float(v) for v in theta)
        used = Point(theta_t, tuple(float(v) for v in step), tuple(h.ravel().tolist()), weight)
        following = Point(theta_t, tuple((0.1 * _sd(h)).tolist()), used.hess, weight)
        return LaplaceResult(self, used, cov, a, b, va, vb, cab, float(log_z), chi2, int(data.use.sum()), data,
                             following)

    def _maximise(self, theta: np.ndarray, point: Point, weight: float, data: Data) -> np.ndarray:
        """θ* by Newton steps on the previous update's Hessian scaled by the data's weight (a frame more changes the
        posterior little: one or two steps of 6 curves each, converging by ~10× per step), else by L-BFGS-B."""
        f = lambda t: -self.log_post(t, data)[0]  # noqa: E731 - a local shorthand
        if point.hess is not None and np.isfinite(point.weight) and point.weight > 0:
            h = np.array(point.hess).reshape(3, 3) * (weight / point.weight)
            step = np.array(point.step)
            sd = _sd(h)
            f0 = f(theta)
            for _ in range(4):
                g = np.array([(f(theta + e) - f(theta - e)) / (2 * e[i]) for i, e in enumerate(np.diag(step))])
                d = -np.linalg.solve(h, g)
                trial = self._clip(theta + d)
                if np.max(np.abs(trial - theta) / sd) < 0.15:  # the Hessian's scaling is ~10 % off: a step this
                    return trial  # small leaves < 0.02 std to go
                f1 = f(trial)
                if not f1 < f0:
                    break
                theta, f0 = trial, f1
            else:
                return theta
        opt = minimize(f, theta, method="L-BFGS-B", bounds=self.bounds,
                       options={"ftol": 1e-12, "gtol": 1e-8, "maxiter": 200})
        return self._clip(opt.x)

    def _hessian(self, theta, data: Data, step) -> np.ndarray:
        """Central-difference Hessian of −ln p at θ (steps kept inside the prior box)."""
        f = lambda t: -self.log_post(t, data)[0]  # noqa: E731 - a local shorthand
        n = len(theta)
        h = np.zeros((n, n))
        step = np.array([min(s, 0.25 * (hi - lo)) for s, (lo, hi) in zip(step, self.bounds, strict=True)])
        centre = np.array([min(max(v, lo + s), hi - s)
                           for v, s, (lo, hi) in zip(theta, step, self.bounds, strict=True)])
        f0 = f(centre)
        for i in range(n):
            e_i = np.zeros(n)
            e_i[i] = step[i]
            h[i, i] = (f(centre + e_i) - 2 * f0 + f(centre - e_i)) / step[i] ** 2
            for j in range(i):
                e_j = np.zeros(n)
                e_j[j] = step[j]
                h[i, j] = h[j, i] = (f(centre + e_i + e_j) - f(centre + e_i - e_j) - f(centre - e_i + e_j)
                                     + f(centre - e_i - e_j)) / (4 * step[i] * step[j])
        return h


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
    following: Point

    @property
    def free_energy(self) -> float:
        return -self.log_z

    def next_window(self) -> Point:
        """Where the next update starts: θ*, this Hessian, and steps of 0.1 of this posterior's std."""
        return self.following

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
