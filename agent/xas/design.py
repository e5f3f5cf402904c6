"""Sequential and batch A-optimal design of XAS energy points (DESIGN §4.2).

Measurement model (transmission): y = ln(I0/It) = mu*t = a * mu(E) + b + c3 (E_ref/E)^3 + c4 (E_ref/E)^4
- eta (exp(y_lin(E)) - 1), with mu ~ GaussianPrior. The last term is a harmonic: a fraction eta of I0's photons
(at 3E) that pass the sample almost unattenuated, It/I0 = (1-eta) e^-y + eta, so ln(I0/It) ~= y - eta (e^y - 1)
to first order in eta (the second order, (eta e^y)^2/2, is ~1e-3 at eta = 0.5 %, mu*t = 2.2), with y_lin the
absorbance the model is linearised about; its prior sd ``Nuisance.harmonic_sd`` is 0 (no harmonic) by default,
and the agent replaces its prior by the reference foil's measurement of it (``XASAgent._harmonic_prior``).
The amplitude a (edge step) and a rigid edge shift delta (mu(E) = mu_lib(E - delta)) are linearised about
(a_lin, delta_lin), which makes the state x = [r (n grid values), delta, a, b, c3, c4, eta] jointly Gaussian
with mu = m + r - m' delta and y linear in x. Each measurement is a rank-1 update of the
posterior covariance S; alongside S we keep M = L S H^T, L = [I, T] the map from x to the design target
(``TARGETS``: mu itself, or the measured mu*t in edge-step units, (a_lin r + theta x_nuisance) / a_lin) and H the
measurement rows of the grid energies, so the expected reduction of trace(L S L^T) from candidate j,
|M[:, j]|^2 / (h_j^T S h_j + noise), costs O(n^2) for all n candidates. (Keeping S L^T L S instead would be
O(n p), but its rank-1 recursion loses the small reductions of a long run to rounding: the nuisance prior
variances are ~25.) ``set_linearisation`` moves (a_lin, delta_lin) and re-solves from scratch.

Why the default target is the measured spectrum: inside the 105 eV window the edge step is known to no
better than ~0.5 % whatever is measured (the post-edge level of normalised standards varies by 3 % here;
the normalisation is fixed by data far outside the window), so the RMSE of normalised mu has a floor no
scan can pass, and a design for it spends beamtime on that floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.linalg import blas

from agent.xas.prior import E_REF_EV, GaussianPrior

N_NUISANCE = 6  # delta, a, b, c3, c4, eta
TARGETS = {
    "absorbance": "the measured mu*t(E) in units of the edge step (mu*t / a): the spectrum the scan determines",
    "mu": "the normalised mu(E): also carries the edge-step (normalisation) uncertainty of a 105 eV window",
}


@dataclass(frozen=True)
class CountingNoise:
    """Counting statistics of transmission: I0 ~ Poisson(rate*dwell), It ~ Poisson(rate*dwell*exp(-y)).

    ``i0_rate`` counts/s in I0; ``gain`` variance per count (1 for photon counting)."""

    i0_rate: float = 23760.0
    gain: float = 1.0

    def __post_init__(self):
        if not (self.i0_rate > 0 and self.gain > 0):
            raise ValueError(f"i0_rate and gain must be > 0, got {self.i0_rate!r}, {self.gain!r}")

    def var(self, y: np.ndarray, dwell_s: float | np.ndarray) -> np.ndarray:
        """Variance of y = ln(I0/It) expected at absorbance ``y`` after ``dwell_s`` seconds."""
        n0 = self.i0_rate * np.asarray(dwell_s, float)
        return self.gain * (1.0 / n0 + np.exp(np.clip(y, -5, 12)) / n0)

    def from_counts(self, i0: float, it: float) -> tuple[float, float]:
        """(y, var y) from measured counts; raises ValueError for non-positive or non-finite counts."""
        if not (np.isfinite(i0) and np.isfinite(it) and i0 > 0 and it > 0):
            raise ValueError(f"counts must be positive and finite, got i0={i0!r}, it={it!r}")
        return float(np.log(i0 / it)), float(self.gain * (1.0 / i0 + 1.0 / it))


@dataclass(frozen=True)
class MoveCost:
    """Monochromator move time (s) = settle + |dE|/speed (+ 2*backlash/speed when moving down)."""

    settle_s: float = 0.3
    speed_eV_s: float = 20.0
    backlash_eV: float = 0.0

    def __post_init__(self):
        if not (self.settle_s >= 0 and self.speed_eV_s > 0 and self.backlash_eV >= 0):
            raise ValueError(f"invalid move cost {self!r}")

    def time(self, e_from: float | None, e_to: np.ndarray | float) -> np.ndarray:
        """Seconds to move from ``e_from`` (eV; None = not yet positioned: settle only) to ``e_to``."""
        e_to = np.asarray(e_to, float)
        if e_from is None:
            return np.full(e_to.shape, self.settle_s)
        d = e_to - e_from
        extra = np.where(d < 0, 2 * self.backlash_eV, 0.0)
        return np.where(d == 0, 0.0, self.settle_s + (np.abs(d) + extra) / self.speed_eV_s)


@dataclass(frozen=True)
class Nuisance:
    """Gaussian priors of the nuisance parameters: amplitude a (edge step), edge shift delta (eV),
    offset b, background coefficients c3, c4 (reference: amplitude 1.75 +- 5, backgrounds +- 5) and the
    harmonic fraction eta of I0 (mean 0, sd ``harmonic_sd``; 0: harmonic rejection taken as complete)."""

    amp_mean: float = 1.5
    amp_sd: float = 1.0
    shift_sd_eV: float = 1.0
    offset_mean: float = 0.0
    offset_sd: float = 5.0
    bg_sd: float = 5.0
    harmonic_sd: float = 0.0

    def __post_init__(self):
        if not (self.amp_mean > 0 and self.amp_sd > 0 and self.shift_sd_eV > 0 and self.offset_sd > 0
                and self.bg_sd > 0 and self.harmonic_sd >= 0):
            raise ValueError(f"invalid nuisance prior {self!r}")

    def prior(self, post) -> tuple[np.ndarray, np.ndarray]:
        """(means (6,), variances (6,)) of [delta, a, b, c3, c4, eta] for ``post`` (an ``XASPosterior`` or
        ``BasisPosterior``: its ``shift_lin`` and ``harmonic_prior``). ``post.harmonic_prior`` (mean, sd), when set
        (the reference foil's measurement of the harmonic), replaces eta's prior N(0, ``harmonic_sd``²)."""
        eta_mean, eta_sd = getattr(post, "harmonic_prior", None) or (0.0, self.harmonic_sd)
        mean = np.array([-post.shift_lin, self.amp_mean, self.offset_mean, 0.0, 0.0, eta_mean])
        var = np.array([self.shift_sd_eV, self.amp_sd, self.offset_sd, self.bg_sd, self.bg_sd, eta_sd]) ** 2
        return mean, var


def draw_states(mean: np.ndarray, cov: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` draws (p, k) of a Gaussian state: Cholesky with a 1e-12 relative jitter, or, where rank-1
    downdates have left S indefinite by rounding, its eigen-decomposition with the negative part clipped."""
    s = 0.5 * (cov + cov.T)
    try:
        root = np.linalg.cholesky(s + np.eye(len(s)) * 1e-12 * np.trace(s) / len(s))
    except np.linalg.LinAlgError:
        lam, vec = np.linalg.eigh(s)
        root = vec * np.sqrt(np.clip(lam, 0, None))
    return mean[:, None] + root @ rng.standard_normal((len(s), k))


class XASPosterior:
    """Linear-Gaussian posterior of mu on the prior's grid, with rank-1 updates (see module doc).
    ``target`` (see ``TARGETS``) is the spectrum whose summed posterior variance the design reduces
    and ``rmse_pred`` reports."""

    def __init__(self, prior: GaussianPrior, nuisance: Nuisance = Nuisance(), shift_lin_eV: float = 0.0,
                 amp_lin: float | None = None, kernel_scale: float = 1.0, target: str = "absorbance",
                 measurement=None):
        self._start(prior, nuisance, target, measurement)
        self.set_linearisation(shift_lin_eV, nuisance.amp_mean if amp_lin is None else amp_lin, kernel_scale)

    def _start(self, prior, nuisance: Nuisance, target: str, measurement=None) -> None:
        """The parts every posterior of μ on a grid shares (this one and ``agent.xas.basis.BasisPosterior``).
        ``measurement``: None (transmission) or an object whose ``on(energy)`` gives the response μ → (F, ∂F/∂μ)
        on the grid (``agent.xas.fluorescence.FluorescenceSample``)."""
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.prior0, self.nuisance, self.target = prior, nuisance, target
        self.energy = np.asarray(prior.energy, float)
        self.n = self.energy.size
        self.u = E_REF_EV / self.energy
        self.measurement = measurement
        self.response = None if measurement is None else measurement.on(self.energy)
        self.mu_lin: np.ndarray | None = None
        self.data_e: list[float] = []
        self.data_y: list[float] = []
        self.data_var: list[float] = []

    # -- model pieces --------------------------------------------------------------------------
    def set_linearisation(self, shift_eV: float, amp: float, kernel_scale: float, full: bool = True,
                          y_lin: np.ndarray | None = None, mu_lin: np.ndarray | None = None) -> None:
        """Linearise about (``amp``, ``shift_eV``) with prior covariance x ``kernel_scale``, the harmonic term about
        the absorbance ``y_lin`` on the grid (default: amp m + offset of the prior) and, for a nonlinear
        measurement, about ``mu_lin`` (μ on the grid; default the prior mean); re-solve (``full=False``: the mean
        only)."""
        self.shift_lin, self.amp_lin, self.kernel_scale = float(shift_eV), float(amp), float(kernel_scale)
        p = self.prior0.shifted(self.shift_lin) if self.shift_lin else self.prior0
        self.m = p.mean
        self.K = p.cov * self.kernel_scale
        self._set_y_lin(y_lin)
        self._linearise(mu_lin)
        self.x0 = np.concatenate([np.zeros(self.n), self.nuisance_mean])
        self.resolve(full)

    def _set_y_lin(self, y_lin: np.ndarray | None) -> None:
        """The absorbance (n,) the harmonic term is linearised about: ``y_lin``, else amp m + offset."""
        default = self.amp_lin * self.m + self.nuisance.offset_mean
        self.y_lin = default if y_lin is None else np.asarray(y_lin, float).copy()
        if self.y_lin.shape != (self.n,):
            raise ValueError(f"y_lin has shape {self.y_lin.shape}, the grid {self.n} energies")

    def y_fundamental(self) -> np.ndarray:
        """Posterior mean of the fundamental's absorbance on the grid (y without the harmonic term): the
        next ``y_lin``."""
        return self.y_pred() - self.theta[:, -1] * self.x[-1]

    def _linearise(self, mu_lin: np.ndarray | None) -> None:
        """The measurement rows about the linearisation, shared with ``BasisPosterior`` (``self.m``, ``y_lin`` set):
        y ≈ A F(μ̄) + gain (μ − μ̄) + B + c3 u³ + c4 u⁴ − η (e^{y_lin} − 1), μ = m + r − m' δ, gain = A_lin F'(μ̄);
        for transmission F(μ) = μ, μ̄ = m (fluorescence has no harmonic term: its column is 0). Sets ``gain`` (n,),
        ``theta`` (n, 6: the δ, A, B, c3, c4, η columns), ``offset`` = gain (m − μ̄) (n,, known, taken from the
        data), the target map ``T`` and the nuisances' prior ``nuisance_mean``, ``theta_var``."""
        n, a = self.n, self.amp_lin
        self.dm = np.gradient(self.m, self.energy)
        transmission = np.stack([-a * self.dm, self.m, np.ones(n), self.u**3, self.u**4,
                                 -np.expm1(np.clip(self.y_lin, -5, 12))], axis=1)
        if self.response is None:
            self.gain, self.offset, self.theta = np.full(n, a), np.zeros(n), transmission
        else:
            self.mu_lin = self.m.copy() if mu_lin is None else np.asarray(mu_lin, float).copy()
            f, df = self.response(self.mu_lin)
            self.gain = a * df
            self.offset = self.gain * (self.m - self.mu_lin)
            self.theta = np.stack([-self.gain * self.dm, f, np.ones(n), self.u**3, self.u**4, np.zeros(n)], axis=1)
        if self.target == "mu":
            self.T = np.zeros((n, N_NUISANCE))
            self.T[:, 0] = -self.dm
        else:  # the measured spectrum (fluorescence: corrected for self-absorption) in edge-step units
            self.T = transmission / a
        self.nuisance_mean, self.theta_var = self.nuisance.prior(self)

    def offset_at(self, energies) -> np.ndarray:
        """The linearisation's known offset (``_linearise``) at ``energies`` (eV), interpolated as the rows are."""
        j, w = self._locate(np.atleast_1d(np.asarray(energies, float)))
        return self.offset[j] * (1 - w) + self.offset[j + 1] * w

    def y_data(self) -> np.ndarray:
        """The stored data less the linearisation's offset: what the linear rows predict."""
        return np.asarray(self.data_y, float) - self.offset_at(self.data_e) if self.data_e else np.zeros(0)

    def prior_cov(self) -> np.ndarray:
        s0 = np.zeros((self.n + N_NUISANCE,) * 2, order="F")
        s0[: self.n, : self.n] = self.K
        s0[self.n:, self.n:] = np.diag(self.theta_var)
        return s0

    def rows(self, energies) -> np.ndarray:
        """Dense measurement rows H (k, n+p) for energies (eV) inside the grid (linear interpolation)."""
        e = np.atleast_1d(np.asarray(energies, float))
        j, w = self._locate(e)
        h = np.zeros((e.size, self.n + N_NUISANCE))
        r = np.arange(e.size)
        h[r, j] = self.gain[j] * (1 - w)
        h[r, j + 1] += self.gain[j + 1] * w
        h[:, self.n:] = self.theta[j] * (1 - w)[:, None] + self.theta[j + 1] * w[:, None]
        return h

    def _locate(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = self.energy
        tol = 1e-6 + 0.5 * (g[1] - g[0])
        if np.any(e < g[0] - tol) or np.any(e > g[-1] + tol):
            raise ValueError(f"energy {e.min():.2f}-{e.max():.2f} eV outside the model grid "
                             f"{g[0]:.2f}-{g[-1]:.2f} eV")
        e = np.clip(e, g[0], g[-1])
        j = np.clip(np.searchsorted(g, e) - 1, 0, self.n - 2)
        return j, (e - g[j]) / (g[j + 1] - g[j])

    def _recompute_m(self) -> None:
        """M = L S H_grid^T: covariance of the target (rows) with a noiseless measurement at each grid
        energy (columns)."""
        ls = self.S[: self.n] + self.T @ self.S[self.n:]
        self.M = np.asfortranarray(ls[:, : self.n] * self.gain + ls[:, self.n:] @ self.theta.T)

    # -- inference -----------------------------------------------------------------------------
    def data_terms(self, energies=None, var=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For the stored data (or ``energies`` eV with noise ``var``): H (k, n+p), S0 H^T,
        H_r K H_r^T and H_t Var(theta) H_t^T + R (sparse in the grid part: O(n k))."""
        e = np.asarray(self.data_e if energies is None else energies, float)
        var = np.asarray(self.data_var if energies is None else var, float)
        j, w = self._locate(e)
        h = self.rows(e)
        c1, c2 = self.gain[j] * (1 - w), self.gain[j + 1] * w
        sh = np.empty((self.n + N_NUISANCE, e.size))
        sh[: self.n] = self.K[:, j] * c1 + self.K[:, j + 1] * c2
        ht = h[:, self.n:]
        sh[self.n:] = self.theta_var[:, None] * ht.T
        ck = sh[: self.n][j] * c1[:, None] + sh[: self.n][j + 1] * c2[:, None]
        cn = ht @ sh[self.n:] + np.diag(var)
        return h, sh, ck, cn

    def design_rmse(self, energies, var) -> float:
        """Predicted RMSE of mu (prior + a design of ``energies`` eV with noise variances ``var``,
        ignoring the stored data) at the current linearisation."""
        _, sh, ck, cn = self.data_terms(energies, np.broadcast_to(var, np.shape(energies)))
        lsh = sh[: self.n] + self.T @ sh[self.n:]
        prior_var = np.diag(self.K) + (self.T**2) @ self.theta_var
        c = linalg.cho_factor(ck + cn, lower=True)
        post_var = prior_var - np.einsum("ik,ki->i", lsh, linalg.cho_solve(c, lsh.T))
        return float(np.sqrt(np.clip(post_var, 0, None).mean()))

    def mu_weights(self, weights: np.ndarray) -> np.ndarray:
        """State-space weights w (q, n+p) of the linear functionals ``weights`` (q, n) of normalised μ on
        the grid: W μ = W m + w x (μ = m + r − m' δ)."""
        wts = np.atleast_2d(np.asarray(weights, float))
        return np.hstack([wts, -(wts @ self.dm)[:, None], np.zeros((wts.shape[0], N_NUISANCE - 1))])

    def functional_moments(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean (q,), cov (q, q)) of W μ under the posterior, ``weights`` W (q, n) on the grid."""
        wts = np.atleast_2d(np.asarray(weights, float))
        w = self.mu_weights(wts)
        return wts @ self.mean, w @ self.S @ w.T

    def functional_gain(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every grid candidate j: (Σ_k (w_k S h_j)², h_jᵀ S h_j), so that a measurement of noise
        variance v at j reduces trace Cov(W μ) by num_j / (s_j + v_j). O(q n²)."""
        c = self.S @ self.mu_weights(weights).T  # (n+p, q)
        hc = self.gain[:, None] * c[: self.n] + self.theta @ c[self.n:]
        _, s = self.gain_terms()
        return np.einsum("jk,jk->j", hc, hc), s

    def design_functional_cov(self, weights: np.ndarray, energies, var) -> np.ndarray:
        """Cov(W μ) (q, q) after a design of ``energies`` (eV) with noise variances ``var``, from the prior
        alone (the stored data ignored) at the current linearisation: what a fixed scan would give."""
        w = self.mu_weights(weights)
        _, sh, ck, cn = self.data_terms(energies, np.broadcast_to(var, np.shape(energies)))
        wsh = w @ sh
        c = linalg.cho_factor(ck + cn, lower=True)
        return w @ self.prior_cov() @ w.T - wsh @ linalg.cho_solve(c, wsh.T)

    def resolve(self, full: bool = True) -> None:
        """Condition the prior on all stored data at once (from scratch); ``full=False`` updates
        only the mean x (the covariances are then stale until the next full solve)."""
        if not self.data_e:
            self.x, self.S = self.x0.copy(), self.prior_cov()
        else:
            h, sh, ck, cn = self.data_terms()
            c = linalg.cho_factor(ck + cn, lower=True)
            self.x = self.x0 + sh @ linalg.cho_solve(c, self.y_data() - h @ self.x0)
            if not full:
                return
            self.S = np.asfortranarray(self.prior_cov() - sh @ linalg.cho_solve(c, sh.T))
        self._recompute_m()

    def update(self, energy_eV: float, y: float, var: float) -> None:
        """Rank-1 update with one measurement y (absorbance, or fluorescence) of variance ``var`` at ``energy_eV``."""
        if not (np.isfinite(y) and var > 0):
            raise ValueError(f"need finite y and var > 0, got y={y!r}, var={var!r}")
        h = self.rows([energy_eV])[0]
        self._rank1(h, y - float(self.offset_at(energy_eV)[0]), var)
        self.data_e.append(float(energy_eV))
        self.data_y.append(float(y))
        self.data_var.append(float(var))

    def _rank1(self, h: np.ndarray, y: float | None, var: float) -> None:
        nz = np.flatnonzero(h[: self.n])
        g = self.S[:, nz] @ h[nz] + self.S[:, self.n:] @ h[self.n:]
        s = float(h @ g) + var
        if y is not None:
            self.x = self.x + g * ((y - h @ self.x) / s)
        n = self.n
        lg = g[:n] + self.T @ g[n:]
        hg = self.gain * g[:n] + self.theta @ g[n:]
        self.S = blas.dger(-1.0 / s, g, g, a=self.S, overwrite_a=1)
        self.M = blas.dger(-1.0 / s, lg, hg, a=self.M, overwrite_a=1)

    def fantasise(self, energy_eV: float, var: float) -> None:
        """Covariance-only update (the mean does not change the design of a Gaussian model)."""
        self._rank1(self.rows([energy_eV])[0], None, var)

    def sample_mu(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` posterior draws (k, n) of normalised μ on the grid."""
        x = draw_states(self.x, self.S, k, rng)
        return (self.m[:, None] + x[: self.n] - self.dm[:, None] * x[self.n][None, :]).T

    def copy(self) -> XASPosterior:
        new = object.__new__(XASPosterior)
        new.__dict__.update(self.__dict__)
        new.S, new.M, new.x = self.S.copy(order="F"), self.M.copy(order="F"), self.x.copy()
        new.data_e, new.data_y, new.data_var = list(self.data_e), list(self.data_y), list(self.data_var)
        return new

    # -- summaries -----------------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        """Posterior mean of mu on the grid."""
        return self.m + self.x[: self.n] - self.dm * self.x[self.n]

    @property
    def var(self) -> np.ndarray:
        """Posterior variance of mu on the grid."""
        n, s = self.n, self.S
        return np.clip(np.diag(s)[:n] - 2 * self.dm * s[n, :n] + self.dm**2 * s[n, n], 0, None)

    @property
    def target_mean(self) -> np.ndarray:
        """Posterior mean of the design target on the grid (mu, or mu*t / a_lin: see ``TARGETS``)."""
        base = self.m if self.target == "mu" else 0.0
        return base + self.x[: self.n] + self.T @ self.x[self.n:]

    def target_of(self, mu: np.ndarray, amplitude: float, offset: float) -> np.ndarray:
        """The design target of a known spectrum ``mu`` on the grid measured as amplitude*mu + offset."""
        mu = np.asarray(mu, float)
        return mu if self.target == "mu" else (amplitude * mu + offset) / self.amp_lin

    @property
    def target_var(self) -> np.ndarray:
        """Posterior variance of the design target on the grid: diag(L S L^T)."""
        n, s, t = self.n, self.S, self.T
        return np.clip(np.diag(s)[:n] + 2 * np.einsum("ij,ji->i", t, s[n:, :n])
                       + np.einsum("ij,jk,ik->i", t, s[n:, n:], t), 0, None)

    @property
    def rmse_pred(self) -> float:
        """Predicted RMSE of the design target over the grid: sqrt(trace(L S L^T) / n)."""
        return float(np.sqrt(self.target_var.mean()))

    @property
    def shift(self) -> tuple[float, float]:
        """Posterior (mean, sd) of the rigid edge shift (eV)."""
        return self.shift_lin + float(self.x[self.n]), float(np.sqrt(max(self.S[self.n, self.n], 0)))

    @property
    def amplitude(self) -> tuple[float, float]:
        """Posterior (mean, sd) of the amplitude (edge step in mu*t)."""
        i = self.n + 1
        return float(self.x[i]), float(np.sqrt(max(self.S[i, i], 0)))

    def y_pred(self) -> np.ndarray:
        """Posterior mean of the measured y on the grid (for the noise model)."""
        return self.gain * self.x[: self.n] + self.theta @ self.x[self.n:] + self.offset

    def gain_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """For every grid candidate j: (|L S h_j|^2, h_j^T S h_j), the numerator of the trace reduction
        (a column norm of M: a sum of squares, so it cannot lose its sign to rounding) and the predictive
        variance of y without noise. O(n^2)."""
        n, a, t = self.n, self.gain, self.theta
        d_s = np.diag(self.S)[:n]
        q = np.einsum("ij,ij->j", self.M, self.M)
        s = a * a * d_s + 2 * a * np.einsum("ij,ij->i", self.S[:n, n:], t) + np.einsum(
            "ij,jk,ik->i", t, self.S[n:, n:], t)
        return np.clip(q, 0, None), np.clip(s, 0, None)


def expected_reduction(post: XASPosterior, noise: CountingNoise, dwell_s: np.ndarray,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """Expected reduction, for each (dwell, grid candidate), of the trace of the design target's
    covariance, or with ``weights`` W (q, n) of trace Cov(W μ) (a quantity's linearisation); shape
    (len(dwell), n)."""
    q, s = post.gain_terms() if weights is None else post.functional_gain(weights)
    v = noise.var(post.y_pred()[None, :], np.asarray(dwell_s, float)[:, None])
    return q[None, :] / (s[None, :] + v)


def choose_next(post: XASPosterior, noise: CountingNoise, cost: MoveCost, current_eV: float | None,
                dwell_s=(1.0,), candidates: np.ndarray | None = None, move_s: np.ndarray | None = None,
                weights: np.ndarray | None = None, extra: np.ndarray | None = None) -> tuple[int, float, float]:
    """Best (grid index, dwell s, score) by expected trace reduction (``expected_reduction``: of the
    design target, or of Cov(W μ) with ``weights``; plus ``extra`` (dwell, n), another channel's
    reduction in the same units) per second of beamtime (dwell + move from ``current_eV``, or
    ``move_s`` per grid energy when given). ``candidates``: boolean mask over the grid (default all)."""
    dwell = np.asarray(dwell_s, float)
    move = cost.time(current_eV, post.energy) if move_s is None else np.asarray(move_s, float)
    gain = expected_reduction(post, noise, dwell, weights)
    score = (gain if extra is None else gain + extra) / (dwell[:, None] + move[None, :])
    if candidates is not None:
        score = np.where(candidates[None, :], score, -np.inf)
    k, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(j), float(dwell[k]), float(score[k, j])


def greedy_batch(post: XASPosterior, noise: CountingNoise, n_points: int, dwell_s: float = 1.0,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Offline Ito-style greedy A-optimal design: ``n_points`` energies (eV, in selection order) that
    each maximise the trace reduction (of the design target, or of Cov(W μ) with ``weights`` W fixed
    before the run), noise from the prior-mean absorbance; returns (energies, predicted RMSE of the
    target, or the root of trace Cov(W μ), after each point). ``post`` is not modified."""
    if int(n_points) < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points!r}")
    p = post.copy()
    v_all = noise.var(p.y_pred(), dwell_s)
    chosen, rmse = [], []
    for _ in range(int(n_points)):
        q, s = p.gain_terms() if weights is None else p.functional_gain(weights)
        j = int(np.argmax(q / (s + v_all)))
        p.fantasise(p.energy[j], float(v_all[j]))
        chosen.append(p.energy[j])
        rmse.append(p.rmse_pred if weights is None else float(np.sqrt(np.trace(p.functional_moments(weights)[1]))))
    return np.array(chosen), np.array(rmse)


def scan_time(energies_eV: np.ndarray, dwell_s: float | np.ndarray, cost: MoveCost,
              start_eV: float | None = None) -> float:
    """Beamtime (s) to measure ``energies_eV`` in the given order: dwell + moves."""
    e = np.asarray(energies_eV, float)
    prev = np.concatenate([[np.nan], e[:-1]])
    moves = np.array([cost.time(None if np.isnan(a) else a, b) for a, b in zip(prev, e, strict=True)])
    if start_eV is not None and e.size:
        moves[0] = cost.time(start_eV, e[0])
    return float(np.sum(np.broadcast_to(dwell_s, e.shape)) + moves.sum())
