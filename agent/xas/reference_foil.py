"""The reference-foil channel: the monochromator's energy offset from a foil measured with the sample.

The chamber Iref behind a reference foil (after It) gives y_f = ln(It/Iref) = a_f μ_foil(E + ε) + b_f at
each readback E (eV): ε (eV) is the monochromator calibration offset (photons at E + ε), a_f the foil's
edge step, b_f its offset. μ_foil is the Fe-foil standard of the library: the foil is a KNOWN reference
(the same foil type as every beamline's calibration foil), so using its tabulated spectrum in the
analysis is legitimate; the library's axis is the reference axis ε is measured on.

A harmonic (a fraction η of I0's photons at 3E, almost unattenuated) is enriched behind the sample: its share
of It is s = η_f q, q = I0/It of each point's own counts, so It/Iref = (1 − s) e^{−y₀} + s and
y_f = −ln((1 − s) e^{−y₀} + s), y₀ = a_f μ_foil(E + ε) + b_f (fitted exactly: s(e^{y₀} − 1) reaches 0.1, where
its first order is 6 % off). The coefficient η_f is η times the I0/It chambers' efficiency ratio: its prior sd
is ``GAIN_SPREAD`` × the harmonic prior sd. At 0.5 % behind a sample of post-edge μt 2.2 the term biases ε by
~0.4 eV if left out (s ≈ 5 % compresses the foil's edge); on noise-free counts the fit with it recovers ε.

``ReferenceFoil``: Gaussian prior on (ε, a_f, b_f[, η_f]), Poisson noise var(y_f) = 1/It + 1/Iref (delta method,
observed counts), the MAP by a profile grid over ε (a_f, b_f solved linearly at each ε) refined by
damped Gauss-Newton, and the Laplace covariance at the MAP (η_f only with a harmonic prior sd > 0). The It
counts enter both ln(I0/It) (the sample) and ln(It/Iref) (the foil): their noises correlate, cov = −1/It
(``noise_correlation``). This module does not model it: the foil posterior is fitted on its own and the sample's
is not told about ε (only the harmonic: ``XASAgent._harmonic_prior``); a joint fit of the sample's edge shift
with ε would have to. The foil's E0 is its first inflection
(``agent.xas.quantities.first_inflection``, the same definition as the sample's edge position).
"""

from __future__ import annotations

import numpy as np

from agent.xas.quantities import first_inflection

GAIN_SPREAD = 3.0  # the I0 and It chambers' efficiency ratio, known to a factor ~3 (gases, fills)


def noise_correlation(i0, it, iref) -> np.ndarray:
    """Correlation of the counting noises of ln(I0/It) and ln(It/Iref): −(1/It)/√((1/I0+1/It)(1/It+1/Iref))."""
    i0, it, iref = (np.asarray(x, float) for x in (i0, it, iref))
    return -(1 / it) / np.sqrt((1 / i0 + 1 / it) * (1 / it + 1 / iref))


class ReferenceFoil:
    """Posterior of the monochromator offset ε (eV), foil step a_f and offset b_f (module docstring).

    ``foil_energy``, ``foil_mu``: the foil's tabulated normalised μ (eV; held constant past the ends);
    priors ε ~ N(0, ``eps_sd``²) eV, a_f ~ N(``amp_prior``), b_f ~ N(``offset_prior``) (mean, sd), and with
    ``harmonic_sd`` > 0 (the sample's harmonic prior sd) η_f ~ N(0, (``GAIN_SPREAD`` harmonic_sd)²)."""

    def __init__(self, foil_energy, foil_mu, eps_sd: float = 1.0, amp_prior: tuple[float, float] = (1.0, 10.0),
                 offset_prior: tuple[float, float] = (0.0, 10.0), harmonic_sd: float = 0.0):
        self.energy = np.asarray(foil_energy, float)
        self.mu = np.asarray(foil_mu, float)
        if self.energy.shape != self.mu.shape or self.energy.size < 3 or not eps_sd > 0 or not harmonic_sd >= 0:
            raise ValueError("foil_energy and foil_mu must be matching arrays, eps_sd > 0 and harmonic_sd >= 0")
        self.dmu = np.gradient(self.mu, self.energy)
        sds = [eps_sd, amp_prior[1], offset_prior[1]] + ([GAIN_SPREAD * harmonic_sd] if harmonic_sd > 0 else [])
        self.prior_mean = np.array([0.0, float(amp_prior[0]), float(offset_prior[0]), 0.0][: len(sds)])
        self.prior_prec = np.diag(1.0 / np.array(sds, float) ** 2)
        self.eps_sd, self.harmonic_sd = float(eps_sd), float(harmonic_sd)
        self.data_e = np.empty(0)
        self.data_y = np.empty(0)
        self.data_var = np.empty(0)
        self.data_q = np.empty(0)
        self.mean = self.prior_mean.copy()
        self.cov = np.linalg.inv(self.prior_prec)

    @classmethod
    def from_library(cls, library, name: str = "Fe-foil", **kwargs) -> ReferenceFoil:
        """The foil ``name`` of a ``SpectraLibrary`` (default: the Fe-foil standard)."""
        return cls(library.energy, library.spectra[:, library.index(name)], **kwargs)

    def mu_foil(self, energy_eV) -> np.ndarray:
        return np.interp(energy_eV, self.energy, self.mu)

    @property
    def harmonic(self) -> bool:
        return self.prior_mean.size == 4

    def _parts(self, energy_eV, theta, q):
        """(y₀, s, D = (1 − s) e^{−y₀} + s) at readbacks ``energy_eV`` for θ and the points' I0/It ``q``."""
        theta = self.mean if theta is None else theta
        eps, a, b = theta[:3]
        y0 = a * self.mu_foil(np.atleast_1d(np.asarray(energy_eV, float)) + eps) + b
        s = theta[3] * np.asarray(q, float) if self.harmonic else np.zeros_like(y0)
        return y0, s, (1 - s) * np.exp(-y0) + s

    def predict(self, energy_eV, theta=None, q=1.0) -> np.ndarray:
        """Mean of ln(It/Iref) at readbacks ``energy_eV`` (eV) for θ = (ε, a_f, b_f[, η_f]) (default the MAP),
        the points' I0/It ratios ``q`` (module doc)."""
        y0, s, d = self._parts(energy_eV, theta, q)
        return -np.log(d) if self.harmonic else y0

    def jacobian(self, energy_eV, theta=None, q=1.0) -> np.ndarray:
        """∂ ln(It/Iref)/∂θ at ``energy_eV`` with I0/It ratios ``q``, shape (n, 3 or 4)."""
        theta = self.mean if theta is None else theta
        eps, a = theta[:2]
        e = np.atleast_1d(np.asarray(energy_eV, float)) + eps
        cols = np.column_stack([a * np.interp(e, self.energy, self.dmu), self.mu_foil(e), np.ones_like(e)])
        if not self.harmonic:
            return cols
        y0, s, d = self._parts(energy_eV, theta, q)
        g = (1 - s) * np.exp(-y0) / d  # ∂y_f/∂y₀
        dq = np.broadcast_to(np.asarray(q, float), e.shape)
        return np.column_stack([cols * g[:, None], -dq * (1 - np.exp(-y0)) / d])

    def _objective(self, theta) -> float:
        r = (self.data_y - self.predict(self.data_e, theta, self.data_q)) ** 2 / self.data_var
        p = theta - self.prior_mean
        return 0.5 * float(r.sum() + p @ self.prior_prec @ p)

    def _linear_ab(self, eps: float) -> np.ndarray:
        """(a_f, b_f[, η_f]) minimising the posterior objective at fixed ε, the harmonic to first order
        (y_f ≈ y₀ − η_f q (e^{y_f} − 1)): the start of the exact fit."""
        x = np.column_stack([self.mu_foil(self.data_e + eps), np.ones_like(self.data_e)]
                            + ([-self.data_q * np.expm1(self.data_y)] if self.harmonic else []))
        w = 1.0 / self.data_var
        prec = self.prior_prec[1:, 1:]
        lhs = x.T @ (x * w[:, None]) + prec
        rhs = x.T @ (w * self.data_y) + prec @ self.prior_mean[1:]
        return np.linalg.solve(lhs, rhs)

    def update(self, energy_eV, it, iref, i0=None) -> None:
        """Add points: readbacks ``energy_eV`` (eV) with counts ``it``, ``iref`` and ``i0`` (scalars or arrays;
        ``i0`` for the harmonic share, needed with a harmonic prior); points without finite positive counts
        are skipped. Refits the MAP and Laplace covariance."""
        if self.harmonic and i0 is None:
            raise ValueError("a foil with a harmonic prior needs the I0 counts of its points")
        i0 = it if i0 is None else i0
        e, it, iref, i0 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, float)) for x in (energy_eV, it, iref, i0)))
        ok = (np.isfinite(e) & np.isfinite(it) & np.isfinite(iref) & np.isfinite(i0) & (it > 0) & (iref > 0)
              & (i0 > 0))
        if not ok.any():
            return
        y = np.log(it[ok] / iref[ok])
        self.data_e = np.concatenate([self.data_e, e[ok]])
        self.data_y = np.concatenate([self.data_y, y])
        self.data_var = np.concatenate([self.data_var, 1.0 / it[ok] + 1.0 / iref[ok]])
        self.data_q = np.concatenate([self.data_q, i0[ok] / it[ok]])
        self._fit()

    def load(self, energy_eV, y, var, q=None) -> None:
        """Set the stored points (readbacks eV, ln(It/Iref), variances, I0/It ratios) at once, as a checkpoint
        holds them."""
        self.data_e, self.data_y, self.data_var = (np.asarray(x, float).copy() for x in (energy_eV, y, var))
        self.data_q = np.ones_like(self.data_e) if q is None else np.asarray(q, float).copy()
        self._fit()

    def _fit(self, iterations: int = 20) -> None:
        span = 4 * self.eps_sd
        best = None
        for eps in np.arange(-span, span + 1e-9, 0.05):  # the profile over ε: no local optimum of the edge
            theta = np.concatenate([[eps], self._linear_ab(eps)])
            f = self._objective(theta)
            if best is None or f < best[0]:
                best = (f, theta)
        f, theta = best
        w, q = 1.0 / self.data_var, self.data_q
        for _ in range(iterations):  # damped Gauss-Newton from the grid's best
            j = self.jacobian(self.data_e, theta, q)
            r = self.data_y - self.predict(self.data_e, theta, q)
            h = j.T @ (j * w[:, None]) + self.prior_prec
            g = j.T @ (w * r) - self.prior_prec @ (theta - self.prior_mean)
            step = np.linalg.solve(h, g)
            for _ in range(10):
                new = theta + step
                f_new = self._objective(new)
                if f_new <= f:
                    break
                step = step / 2
            else:
                break
            converged = abs(step[0]) < 1e-5
            theta, f = new, f_new
            if converged:
                break
        self.mean = theta
        j = self.jacobian(self.data_e, theta, q)
        self.cov = np.linalg.inv(j.T @ (j * w[:, None]) + self.prior_prec)

    @property
    def points(self) -> int:
        return int(self.data_e.size)

    @property
    def offset(self) -> tuple[float, float]:
        """(mean, sd) of the monochromator offset ε (eV): photons at readback + ε on the library's axis."""
        return float(self.mean[0]), float(np.sqrt(self.cov[0, 0]))

    def calibration(self, e0_foil_eV: float = 7112.0, sigma_eV: float = 0.5) -> tuple[float, float]:
        """(mean, sd) of the additive correction c (eV) that puts readbacks on the axis where the foil's
        first inflection (``first_inflection``) is ``e0_foil_eV``: E_true = readback + c,
        c = ε + e0_foil_eV − E0(library foil)."""
        eps, sd = self.offset
        return eps + e0_foil_eV - first_inflection(self.energy, self.mu, sigma_eV)[0], sd

    def expected_information(self, energy_eV, dwell_s, i0_rate, sample_mut=0.0) -> np.ndarray:
        """Fisher information on ε (1/eV²) one point at each readback ``energy_eV`` would add to the
        current posterior (the gain in 1/var(ε) after a rank-one update, a_f and b_f marginalised),
        counting ``dwell_s`` s with ``i0_rate`` counts/s incident on a sample of μt ``sample_mut``
        (0: ``i0_rate`` is the It rate), the foil at the current MAP, Poisson noise 1/It + 1/Iref."""
        e = np.atleast_1d(np.asarray(energy_eV, float))
        n_it = np.broadcast_to(np.asarray(i0_rate, float) * np.asarray(dwell_s, float)
                               * np.exp(-np.asarray(sample_mut, float)), e.shape)
        q = np.exp(np.asarray(sample_mut, float))
        n_ref = n_it * np.exp(-self.predict(e, q=q))
        var = 1.0 / n_it + 1.0 / n_ref
        j = self.jacobian(e, q=q)
        sj = j @ self.cov  # (n, 3): S j for each candidate
        quad = np.einsum("ij,ij->i", sj, j)
        post_var = self.cov[0, 0] - sj[:, 0] ** 2 / (var + quad)
        return 1.0 / post_var - 1.0 / self.cov[0, 0]

    def variance_reduction(self, energy_eV, dwell_s, i0_rate, sample_mut=0.0) -> np.ndarray:
        """Expected reduction of var(ε) (eV²) by one point at each readback ``energy_eV`` (see
        ``expected_information``): what the foil channel adds to a sample point's value."""
        info = self.expected_information(energy_eV, dwell_s, i0_rate, sample_mut)
        v = self.cov[0, 0]
        return v - 1.0 / (1.0 / v + info)

    def fantasise(self, energy_eV: float, dwell_s: float, i0_rate: float, sample_mut: float = 0.0) -> None:
        """Covariance-only update for a point not yet measured (the design's look-ahead)."""
        j = self.jacobian(energy_eV, q=np.exp(sample_mut))[0]
        n_it = i0_rate * dwell_s * np.exp(-sample_mut)
        var = 1.0 / n_it + 1.0 / (n_it * np.exp(-float(self.predict(energy_eV, q=np.exp(sample_mut))[0])))
        sj = self.cov @ j
        self.cov = self.cov - np.outer(sj, sj) / (var + j @ sj)

    def copy(self) -> ReferenceFoil:
        new = object.__new__(ReferenceFoil)
        new.__dict__.update(self.__dict__)
        new.mean, new.cov = self.mean.copy(), self.cov.copy()
        return new
