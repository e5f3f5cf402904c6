"""Fluorescence-mode XAS of a dilute Fe sample: the measurement row the one posterior of μ(E) uses
(``agent.xas.design.XASPosterior``), the dead-time correction and the counting noise.

Data: y = N_f / I0 / ``unit``: N_f the fluorescence counts corrected for the detector's paralysable dead time
τ (its stated value; recorded m = n e^(−nτ) inverted as n = −W₀(−mτ)/τ, rates in 1/s), I0 the incident
chamber's counts, ``unit`` (If/I0 per unit of y) a scale the agent fixes from its first points: the detector's
solid angle and gains are unknown, so the edge step of y is made ~1 (``XASAgent``).

Model, for Fe (weight fraction w) in a ``matrix``, the beam at φ = ``incidence_deg`` to the surface and the
detector at θ = ``exit_deg`` (g = sin φ / sin θ), mass attenuations (cm²/g) from xraylib:

    y = A · F(μ(E), E) + B + c3 u³ + c4 u⁴,          u = E_ref/E, E_ref = 7110.8 eV
    F(μ, E) = P(μ, E) / P(1, E_ref),   P(μ, E) = wJμ / (μ_b(E) + wJμ + g μ_f) · D(μ, E)

μ the normalised Fe K spectrum, J the jump of Fe's CS_Total at its K edge, μ_b(E) = (1 − w) μ_matrix(E) +
w μ_Fe,pre(E) (Fe below its K edge, CS_Total at 7.10 keV × (7100 eV/E)³) everything but the Fe K shell, μ_f
the sample's attenuation at Fe Kα (KL3). D = 1 is the thick-sample limit (``thickness_cm=None``), valid when
ρd (μ_t/sin φ + μ_f/sin θ) ≥ 5 at every energy (μ_t = μ_b + wJμ; the neglected e^(−that) ≤ 0.7 %); a stated
``thickness_cm`` d and ``density_g_cm3`` ρ give D = 1 − exp(−ρd (μ_t/sin φ + μ_f/sin θ)) (a thinner pellet).
Self-absorption is the wJμ in the denominator: its strength k = wJ/(μ_b + g μ_f) (``self_absorption``) is
~0.13 for 1 wt% Fe in cellulose at 45°/45°, ~1 for 10 wt%; k → 0 (the dilute limit) gives F ∝ μ. A and B
(edge step and background, in y's unit) are the posterior's amplitude and offset; the design linearises F
about the current posterior mean of μ (``agent.xas.design``). Left out: the post-edge E⁻³ decline of μ_K
(as in the simulator), harmonics, scatter inside the detector's energy window beyond B + c3 u³ + c4 u⁴,
the detector's energy resolution (the window is assumed to take all of Kα and nothing of Kβ).

Why the stated τ and not τ as a nuisance: If/I0 alone hardly identifies τ. Its error δτ distorts y by
≈ (1 + n δτ), n the count rate, which follows the spectrum itself and flattens the white line as
self-absorption does; only varying the flux separates them, and a run does not. So τ comes from the detector's
own calibration (its ``dead_time_s``), and its error is systematic: 10 % of τ at nτ = 0.06 is 0.6 % of y
at the white line, about half of the self-absorption of 1 wt% Fe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import lambertw

from agent.xas.prior import E_REF_EV

FE_Z = 26


@dataclass(frozen=True)
class FluorescenceSample:
    """What the user states of a fluorescence sample: Fe weight fraction ``fe_fraction`` in ``matrix`` (a formula
    xraylib parses), angles (degrees to the surface) of the beam ``incidence_deg`` and the detector ``exit_deg``;
    ``thickness_cm`` (None: the thick-sample limit, module doc) with ``density_g_cm3`` (g/cm³, needed with it)."""

    fe_fraction: float = 0.01
    matrix: str = "C6H10O5"
    incidence_deg: float = 45.0
    exit_deg: float = 45.0
    thickness_cm: float | None = None
    density_g_cm3: float | None = None

    def __post_init__(self):
        ok = (0 < self.fe_fraction < 1 and 0 < self.incidence_deg <= 90 and 0 < self.exit_deg <= 90
              and (self.thickness_cm is None or (self.thickness_cm > 0 and (self.density_g_cm3 or 0) > 0)))
        if not ok:
            raise ValueError(f"invalid fluorescence sample {self} (0 < fe_fraction < 1, angles in (0, 90] deg, a "
                             f"thickness needs a density)")
        _ = self._constants  # an unknown matrix fails here, in one line

    @cached_property
    def _constants(self) -> dict[str, float]:
        import xraylib

        try:
            xraylib.CS_Total_CP(self.matrix, 7.0)
        except ValueError:
            raise ValueError(f"matrix {self.matrix!r} is not a chemical formula xraylib can parse") from None
        edge, line = xraylib.EdgeEnergy(FE_Z, xraylib.K_SHELL), xraylib.LineEnergy(FE_Z, xraylib.KL3_LINE)
        w = self.fe_fraction
        return {"wj": w * (xraylib.CS_Total(FE_Z, edge + 1e-4) - xraylib.CS_Total(FE_Z, edge - 1e-4)),
                "pre": w * xraylib.CS_Total(FE_Z, 7.10),
                "mu_f": (1 - w) * xraylib.CS_Total_CP(self.matrix, line) + w * xraylib.CS_Total(FE_Z, line),
                "sin_in": math.sin(math.radians(self.incidence_deg)), "sin_out": math.sin(math.radians(self.exit_deg))}

    def background_attenuation(self, energy_eV) -> np.ndarray:
        """μ_b(E) (cm²/g): the sample's attenuation at ``energy_eV`` without the Fe K shell."""
        import xraylib

        e = np.atleast_1d(np.asarray(energy_eV, float))
        matrix = np.array([xraylib.CS_Total_CP(self.matrix, x / 1e3) for x in e])
        return (1 - self.fe_fraction) * matrix + self._constants["pre"] * (7100.0 / e) ** 3

    @property
    def self_absorption(self) -> float:
        """k = wJ / (μ_b + g μ_f) at E_ref: the self-absorption strength (0: the dilute limit)."""
        c = self._constants
        return float(c["wj"] / (self.background_attenuation(E_REF_EV)[0] + c["mu_f"] * c["sin_in"] / c["sin_out"]))

    def on(self, energy_eV) -> FluorescenceRow:
        """The response F(μ, E) on the grid ``energy_eV`` (eV)."""
        return FluorescenceRow(self, np.asarray(energy_eV, float))


class FluorescenceRow:
    """F(μ, E) and ∂F/∂μ on one grid (module doc), the attenuations computed once; called with μ on the grid."""

    def __init__(self, sample: FluorescenceSample, energy: np.ndarray):
        self.sample, c = sample, sample._constants
        self.wj, self.mu_f, self.sin_in, self.sin_out = c["wj"], c["mu_f"], c["sin_in"], c["sin_out"]
        self.mu_b = sample.background_attenuation(energy)
        self.norm = self._p(np.ones(1), sample.background_attenuation(E_REF_EV))[0][0]

    def _p(self, mu, mu_b) -> tuple[np.ndarray, np.ndarray]:
        """(P, ∂P/∂μ) for μ on the grid of ``mu_b``."""
        d0 = mu_b + self.mu_f * self.sin_in / self.sin_out
        den = d0 + self.wj * mu
        p, dp = self.wj * mu / den, self.wj * d0 / den**2
        s = self.sample
        if s.thickness_cm is None:
            return p, dp
        x = s.density_g_cm3 * s.thickness_cm * ((mu_b + self.wj * mu) / self.sin_in + self.mu_f / self.sin_out)
        depth = -np.expm1(-x)
        ddepth = np.exp(-x) * s.density_g_cm3 * s.thickness_cm * self.wj / self.sin_in
        return p * depth, dp * depth + p * ddepth

    def __call__(self, mu) -> tuple[np.ndarray, np.ndarray]:
        """(F, ∂F/∂μ) (n,) for ``mu`` (n,) normalised μ on the grid."""
        p, dp = self._p(np.asarray(mu, float), self.mu_b)
        return p / self.norm, dp / self.norm


def dead_time_corrected(counts: float, dwell_s: float, dead_time_s: float) -> tuple[float, float]:
    """(true counts N, dN/dm): ``counts`` m recorded in ``dwell_s`` s by a paralysable detector of dead time
    ``dead_time_s`` (s), m = N e^(−Nτ/t) inverted on its lower branch; ``ValueError`` past its maximum (mτ/t ≥ 1/e:
    saturated, no unique N)."""
    rate_tau = counts / dwell_s * dead_time_s
    if rate_tau <= 0:
        return float(counts), 1.0
    if rate_tau >= math.exp(-1):
        raise ValueError(f"{counts:.6g} counts in {dwell_s:g} s saturate a paralysable dead time of {dead_time_s:g} s")
    n_tau = float(-lambertw(-rate_tau).real)
    return n_tau / dead_time_s * dwell_s, math.exp(n_tau) / (1 - n_tau)


@dataclass(frozen=True)
class FluorescenceNoise:
    """Counting noise of y = N_f / I0 / ``unit``: I0 ~ Poisson(``i0_rate`` × dwell) with variance ``gain`` per count,
    the recorded fluorescence m ~ Poisson (photon counting), inflated by the dead-time correction (dN/dm)².
    ``dead_time_s``: the detector's stated paralysable τ (s); None until stated (the plan takes the detector's)."""

    i0_rate: float = 23760.0
    gain: float = 1.0
    dead_time_s: float | None = None
    unit: float = 1.0

    def __post_init__(self):
        if not (self.i0_rate > 0 and self.gain > 0 and self.unit > 0
                and (self.dead_time_s is None or self.dead_time_s >= 0)):
            raise ValueError(f"invalid fluorescence noise {self!r}")

    @property
    def tau(self) -> float:
        if self.dead_time_s is None:
            raise ValueError("the fluorescence detector's dead time is not stated (dead_time_s)")
        return float(self.dead_time_s)

    def var(self, y: np.ndarray, dwell_s: float | np.ndarray) -> np.ndarray:
        """Variance of y expected at ``y`` (its unit) after ``dwell_s`` seconds."""
        dwell = np.asarray(dwell_s, float)
        n0 = self.i0_rate * dwell
        n = np.clip(y, 1e-9, None) * self.unit * n0  # true fluorescence counts
        n_tau = np.clip(n / dwell * self.tau, 0, 0.9)
        var_n = n * np.exp(n_tau) / (1 - n_tau) ** 2  # m (dN/dm)², m = n e^(−nτ)
        return (var_n + self.gain * n * n / n0) / (n0 * self.unit) ** 2

    def from_counts(self, i0: float, counts: float, dwell_s: float) -> tuple[float, float]:
        """(y, var y) from the I0 and recorded fluorescence counts of ``dwell_s`` s; ``ValueError`` for counts not
        finite and positive, or saturating the dead time."""
        if not (np.isfinite(i0) and np.isfinite(counts) and i0 > 0 and counts > 0 and dwell_s > 0):
            raise ValueError(f"counts must be positive and finite, got i0={i0!r}, if={counts!r}")
        n, slope = dead_time_corrected(counts, dwell_s, self.tau)
        y = n / i0
        return y / self.unit, (counts * slope**2 / i0**2 + self.gain * y * y / i0) / self.unit**2
