"""The reference-foil channel: the monochromator's energy offset from a foil measured with the sample.

The chamber Iref behind a reference foil (after It) gives y_f = ln(It/Iref) = a_f μ_foil(E + ε) + b_f at
each readback E (eV): ε (eV) is the monochromator calibration offset (photons at E + ε), a_f the foil's
edge step, b_f its offset. μ_foil is the Fe-foil standard of the library: the foil is a KNOWN reference
(the same foil type as every beamline's calibration foil), so using its tabulated spectrum in the
analysis is legitimate; the library's axis is the reference axis ε is measured on.

``ReferenceFoil``: Gaussian prior on (ε, a_f, b_f), Poisson noise var(y_f) = 1/It + 1/Iref (delta method,
observed counts), the MAP by a profile grid over ε (a_f, b_f solved linearly at each ε) refined by
damped Gauss-Newton, and the Laplace covariance at the MAP. The It counts enter both ln(I0/It) (the
sample) and ln(It/Iref) (the foil): their noises correlate, cov = −1/It (``noise_correlation``). This
module does not model it: the foil posterior is fitted on its own and the sample's is not told about ε;
a joint fit of the sample's edge shift with ε would have to. The foil's E0 is its first inflection
(``agent.xas.quantities.first_inflection``, the same definition as the sample's edge position).
"""

from __future__ import annotations

import numpy as np

from agent.xas.quantities import first_inflection


def noise_correlation(i0, it, iref) -> np.ndarray:
    """Correlation of the counting noises of ln(I0/It) and ln(It/Iref): −(1/It)/√((1/I0+1/It)(1/It+1/Iref))."""
    i0, it, iref = (np.asarray(x, float) for x in (i0, it, iref))
    return -(1 / it) / np.sqrt((1 / i0 + 1 / it) * (1 / it + 1 / iref))


class ReferenceFoil:
    """Posterior of the monochromator offset ε (eV), foil step a_f and offset b_f (module docstring).

    ``foil_energy``, ``foil_mu``: the foil's tabulated normalised μ (eV; held constant past the ends);
    priors ε ~ N(0, ``eps_sd``²) eV, a_f ~ N(``amp_prior``), b_f ~ N(``offset_prior``) (mean, sd)."""

    def __init__(self, foil_energy, foil_mu, eps_sd: float = 1.0, amp_prior: tuple[float, float] = (1.0, 10.0),
                 offset_prior: tuple[float, float] = (0.0, 10.0)):
        self.energy = np.asarray(foil_energy, float)
        self.mu = np.asarray(foil_mu, float)
        if self.energy.shape != self.mu.shape or self.energy.size < 3 or not eps_sd > 0:
            raise ValueError("foil_energy and foil_mu must be matching arrays and eps_sd > 0")
        self.dmu = np.gradient(self.mu, self.energy)
        self.prior_mean = np.array([0.0, float(amp_prior[0]), float(offset_prior[0])])
        self.prior_prec = np.diag(1.0 / np.array([eps_sd, amp_prior[1], offset_prior[1]], float) ** 2)
        self.eps_sd = float(eps_sd)
        self.data_e = np.empty(0)
        self.data_y = np.empty(0)
        self.data_var = np.empty(0)
        self.mean = self.prior_mean.copy()
        self.cov = np.linalg.inv(self.prior_prec)

    @classmethod
    def from_library(cls, library, name: str = "Fe-foil", **kwargs) -> ReferenceFoil:
        """The foil ``name`` of a ``SpectraLibrary`` (default: the Fe-foil standard)."""
        return cls(library.energy, library.spectra[:, library.index(name)], **kwargs)

    def mu_foil(self, energy_eV) -> np.ndarray:
        return np.interp(energy_eV, self.energy, self.mu)

    def predict(self, energy_eV, theta=None) -> np.ndarray:
        """Mean of ln(It/Iref) at readbacks ``energy_eV`` (eV) for θ = (ε, a_f, b_f) (default the MAP)."""
        eps, a, b = self.mean if theta is None else theta
        return a * self.mu_foil(np.asarray(energy_eV, float) + eps) + b

    def jacobian(self, energy_eV, theta=None) -> np.ndarray:
        """∂ ln(It/Iref)/∂(ε, a_f, b_f) at ``energy_eV``, shape (n, 3)."""
        eps, a, _ = self.mean if theta is None else theta
        e = np.atleast_1d(np.asarray(energy_eV, float)) + eps
        return np.column_stack([a * np.interp(e, self.energy, self.dmu), self.mu_foil(e), np.ones_like(e)])

    def _objective(self, theta) -> float:
        r = (self.data_y - self.predict(self.data_e, theta)) ** 2 / self.data_var
        p = theta - self.prior_mean
        return 0.5 * float(r.sum() + p @ self.prior_prec @ p)

    def _linear_ab(self, eps: float) -> np.ndarray:
        """(a_f, b_f) minimising the posterior objective at fixed ε."""
        x = np.column_stack([self.mu_foil(self.data_e + eps), np.ones_like(self.data_e)])
        w = 1.0 / self.data_var
        prec = self.prior_prec[1:, 1:]
        lhs = x.T @ (x * w[:, None]) + prec
        rhs = x.T @ (w * self.data_y) + prec @ self.prior_mean[1:]
        return np.linalg.solve(lhs, rhs)

    def update(self, energy_eV, it, iref) -> None:
        """Add points: readbacks ``energy_eV`` (eV) with counts ``it``, ``iref`` (scalars or arrays);
        points without finite positive counts are skipped. Refits the MAP and Laplace covariance."""
        e, it, iref = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, float)) for x in (energy_eV, it, iref)))
        ok = np.isfinite(e) & np.isfinite(it) & np.isfinite(iref) & (it > 0) & (iref > 0)
        if not ok.any():
            return
        self.data_e = np.concatenate([self.data_e, e[ok]])
        self.data_y = np.concatenate([self.data_y, np.log(it[ok] / iref[ok])])
        self.data_var = np.concatenate([self.data_var, 1.0 / it[ok] + 1.0 / iref[ok]])
        self._fit()

    def load(self, energy_eV, y, var) -> None:
        """Set the stored points (readbacks eV, ln(It/Iref), variances) at once, as a checkpoint holds them."""
        self.data_e, self.data_y, self.data_var = (np.asarray(x, float).copy() for x in (energy_eV, y, var))
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
        w = 1.0 / self.data_var
        for _ in range(iterations):  # damped Gauss-Newton from the grid's best
            j = self.jacobian(self.data_e, theta)
            r = self.data_y - self.predict(self.data_e, theta)
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
        j = self.jacobian(self.data_e, theta)
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
        n_ref = n_it * np.exp(-self.predict(e))
        var = 1.0 / n_it + 1.0 / n_ref
        j = self.jacobian(e)
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
        j = self.jacobian(energy_eV)[0]
        n_it = i0_rate * dwell_s * np.exp(-sample_mut)
        var = 1.0 / n_it + 1.0 / (n_it * np.exp(-float(self.predict(energy_eV))))
        sj = self.cov @ j
        self.cov = self.cov - np.outer(sj, sj) / (var + j @ sj)

    def copy(self) -> ReferenceFoil:
        new = object.__new__(ReferenceFoil)
        new.__dict__.update(self.__dict__)
        new.mean, new.cov = self.mean.copy(), self.cov.copy()
        return new
