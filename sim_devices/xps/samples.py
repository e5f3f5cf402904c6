"""Ce/La oxide 3d XPS sample physics for the simulated electron analyser (DESIGN §4.3).

Truth: La₂O₃ follows the 2-level (pure f⁰ initial state, seed 002) and CeO₂ the 3-level
Anderson-impurity cluster model (agent.xps.cluster_models) with the DESIGN parameters, on a flat
background. Energies are binding energies relative to the bare 3d₅/₂ core level (eV), assumed
calibrated; rates are counts/s per analyser channel.

Window: −20…+20 eV in 0.1 eV steps (401 channels), a 3d₅/₂ detail region wide enough to hold every
line either model can put there with the prior ranges of agent.xps.agent (CeO₂'s poorly screened
line near −13 eV; a 3-level model of La₂O₃-like data puts its f²L̲²-like line at ≈ U_ff + 1 eV,
i.e. +5…+16 eV for U_ff 4–14 eV), so the data can penalise intensity a model predicts there.
Simplifications of these two (the seed's truths, kept for the 0.1 analysis and its tests): no 3d₃/₂ partner,
no Shirley background, no analyser transmission function.

Full truths (:class:`FullXPSSample`, presets ``CeO2-full``, ``La2O3-full``; :func:`full_sample` for any Δ): a
model richer than both candidate cluster models, so that both are approximations. Four configurations
{f⁰, f¹L̲, f²L̲², f³L̲³} (hopping √((n+1)(N_f − n))·V, diagonal nΔ + n(n−1)/2·U_ff − n·U_fc in the final state),
a hybridised initial state for La₂O₃ too (≈ 3 % f¹L̲ at Δ = 12.5 eV, as the cluster model gives it), and
the final-state 3d⁹4fⁿ multiplet as discrete structure: each final state splits into two equal lines
± ``mult_split``·n_j/2 (n_j its 4f occupation) with a residual Gaussian ``w_mult``·√n_j, on the measured line
shape of agent.xps.cluster_models.xps_line_shape (3d₃/₂ partner, Voigt, Shirley step, transmission, a
charging shift), window FULL_ENERGIES (−25…+30 eV, 0.2 eV steps) holding both spin-orbit halves.
Beam-induced reduction (``reduction_per_sweep`` r): in sweep k (0, 1, …) a fraction 1 − (1 − r)^(k+½) of the
probed Ce⁴⁺ is Ce³⁺, whose 3d₅/₂ lines v₀, v′ lie 1.9 eV below and 2.8 eV above CeO₂'s v (Ce₂O₃: 880.6, 885.3 eV
against CeO₂ 882.5 eV; Bêche et al., Surf. Interface Anal. 40, 264 (2008)), areas 0.35 : 0.65, same line shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.core.words import one_of
from agent.xps.cluster_models import (
    CEO2,
    CORE_LEVEL_EV,
    LA2O3,
    N_F,
    SPIN_ORBIT_EV,
    XPS2_PARAMS,
    XPS3_PARAMS,
    dense_lines,
    theta_of,
    xps2,
    xps3,
    xps_line_shape,
)

DEFAULT_ENERGIES = np.linspace(-20.0, 20.0, 401)
FULL_ENERGIES = np.round(np.arange(-25.0, 30.0001, 0.2), 10)


@dataclass(frozen=True)
class XPSSample:
    """A sample: cluster ``model`` ("2-level"/"3-level"), its parameters (eV), the count rate at
    the highest point of the spectrum and the flat background rate (counts/s per channel)."""

    name: str
    model: str
    params: dict = field(hash=False)
    peak_rate_cps: float = 400.0
    background_cps: float = 30.0

    def shape(self, energies: np.ndarray) -> np.ndarray:
        """Area-normalised cluster-model spectrum (eV⁻¹)."""
        e = np.ascontiguousarray(energies, dtype=float)
        if self.model == "2-level":
            return xps2(theta_of(self.params, XPS2_PARAMS), e)
        return xps3(theta_of(self.params, XPS3_PARAMS), e)

    def rate(self, energies: np.ndarray) -> np.ndarray:
        """Expected count rate (counts/s) at binding energies ``energies`` (eV)."""
        e = np.asarray(energies, dtype=float)
        peak = self.shape(np.linspace(e.min(), e.max(), 4001)).max()
        return self.peak_rate_cps * self.shape(e) / peak + self.background_cps

    def sweep(self, energies: np.ndarray, dwell_s: float, rng: np.random.Generator) -> np.ndarray:
        """Poisson counts of one sweep with ``dwell_s`` seconds per channel."""
        return rng.poisson(self.rate(energies) * dwell_s).astype(np.int64)


def cluster_hamiltonians(delta: float, v: float, uff: float, ufc: float, n_conf: int = 4):
    """Initial and final (3d core hole) Hamiltonians (eV) in {f⁰, f¹L̲, …, f^{n−1}L̲^{n−1}}."""
    n = np.arange(n_conf)
    diag = n * delta + 0.5 * n * (n - 1) * uff
    hop = np.sqrt((n[:-1] + 1) * (N_F - n[:-1])) * v
    hi = np.diag(diag) + np.diag(hop, 1) + np.diag(hop, -1)
    return hi, hi - np.diag(n * ufc)


def final_states(delta: float, v: float, uff: float, ufc: float, n_conf: int = 4):
    """(positions ε_j, weights w_j, 4f occupations n_j) of the 3d XPS final states (eV), by ``numpy.linalg.eigh``."""
    hi, hf = cluster_hamiltonians(delta, v, uff, ufc, n_conf)
    pos, w = dense_lines(hi, hf)
    _, vf = np.linalg.eigh(hf)
    return pos, w, (vf**2).T @ np.arange(n_conf)


@dataclass(frozen=True)
class FullXPSSample:
    """A full-line-shape truth (see the module docstring): cluster ``params`` (eV: delta, V, U_ff, U_fc), the
    line-shape parameters gamma (Lorentzian HWHM), w_mult (residual Gaussian σ per √(4f electron)),
    mult_split (multiplet doublet splitting per 4f electron), shift (charging), k_sh (Shirley step, eV⁻¹),
    the ``element`` (spin-orbit splitting), the peak rate and flat background (counts/s per channel) and the
    configurations kept (``n_conf``)."""

    name: str
    params: dict = field(hash=False)
    element: str = "Ce"
    peak_rate_cps: float = 400.0
    background_cps: float = 30.0
    n_conf: int = 4
    energies: np.ndarray = field(default_factory=FULL_ENERGIES.copy, hash=False, repr=False)
    model: str = "full"
    reduction_per_sweep: float = 0.0

    def lines(self):
        """Expanded lines (positions, weights, 4f occupations) with the multiplet doublets."""
        p = self.params
        pos, w, nf = final_states(p["delta"], p["V"], p["U_ff"], p["U_fc"], self.n_conf)
        half = 0.5 * p.get("mult_split", 0.0) * nf
        return np.concatenate([pos - half, pos + half]), np.concatenate([w, w]) / 2, np.concatenate([nf, nf])

    def ce3_fraction(self, index: int) -> float:
        """Fraction of Ce³⁺ during sweep ``index`` (0, 1, …)."""
        return 1.0 - (1.0 - self.reduction_per_sweep) ** (index + 0.5) if self.reduction_per_sweep > 0 else 0.0

    def shape(self, energies: np.ndarray, index: int = 0) -> np.ndarray:
        """Line shape (eV⁻¹; peaks of unit area, Shirley step, transmission) during sweep ``index``."""
        p = self.params
        pos, w, nf = self.lines()
        x = self.ce3_fraction(index)
        if x > 0:
            v = final_states(p["delta"], p["V"], p["U_ff"], p["U_fc"], self.n_conf)[0].min()  # CeO₂'s v
            pos = np.concatenate([pos, v + np.array([-1.9, 2.8])])
            w = np.concatenate([(1.0 - x) * w, x * np.array([0.35, 0.65])])
            nf = np.concatenate([nf, [1.0, 2.0]])
        e = np.ascontiguousarray(energies, dtype=float)
        return xps_line_shape(e, pos, w, nf, p["gamma"], p["w_mult"], p["shift"], p["k_sh"],
                              SPIN_ORBIT_EV[self.element], CORE_LEVEL_EV[self.element])

    def rate(self, energies: np.ndarray, index: int = 0) -> np.ndarray:
        """Expected count rate (counts/s) at binding energies ``energies`` (eV) during sweep ``index``; the
        scale is set by the unreduced sample's highest point."""
        e = np.asarray(energies, dtype=float)
        peak = self.shape(np.linspace(e.min(), e.max(), 4001)).max()
        return self.peak_rate_cps * self.shape(e, index) / peak + self.background_cps

    def sweep(self, energies: np.ndarray, dwell_s: float, rng: np.random.Generator, index: int = 0) -> np.ndarray:
        """Poisson counts of sweep ``index`` with ``dwell_s`` seconds per channel."""
        return rng.poisson(self.rate(energies, index) * dwell_s).astype(np.int64)


#: line-shape truths (eV; eV⁻¹ for k_sh): multiplet doublets 1.2 eV per 4f electron with 0.4 eV residual σ,
#: a 0.8 eV charging shift, a Shirley step 0.05 eV⁻¹ of the peak area (≈ 40 % of the peak height at the top).
FULL_LINE = {"w_mult": 0.4, "mult_split": 1.2, "shift": 0.8, "k_sh": 0.05}


def full_sample(delta: float, name: str | None = None, **kw) -> FullXPSSample:
    """A CeO₂-like full truth at charge-transfer energy ``delta`` (eV); other parameters as CEO2 and FULL_LINE
    unless given (cluster and line keys in ``kw`` go to ``params``, the rest to FullXPSSample)."""
    keys = set(CEO2) | set(FULL_LINE)
    params = {**CEO2, **FULL_LINE, "delta": float(delta), **{k: v for k, v in kw.items() if k in keys}}
    rest = {k: v for k, v in kw.items() if k not in keys}
    return FullXPSSample(name or f"Ce-delta{delta:g}", params, **rest)


SAMPLES = {
    "la2o3": XPSSample("La2O3", "2-level", LA2O3),
    "ceo2": XPSSample("CeO2", "3-level", CEO2),
    "la2o3-full": FullXPSSample("La2O3-full", {**LA2O3, **FULL_LINE}, element="La"),
    "ceo2-full": FullXPSSample("CeO2-full", {**CEO2, **FULL_LINE}),
}


def sample(name: str) -> XPSSample:
    """The preset sample ``name``, in any case (La2O3, ceo2); ``ValueError`` suggesting the close names."""
    return SAMPLES[one_of(name, [s.name for s in SAMPLES.values()], "XPS sample").lower()]
