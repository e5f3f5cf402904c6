"""Ce/La oxide 3d XPS sample physics for the simulated electron analyser (DESIGN §4.3).

Truth: La₂O₃ follows the 2-level (pure f⁰ initial state, seed 002) and CeO₂ the 3-level
Anderson-impurity cluster model (agent.xps.cluster_models) with the DESIGN parameters, on a flat
background. Energies are binding energies relative to the bare 3d₅/₂ core level (eV), assumed
calibrated; rates are counts/s per analyser channel.

Window: −20…+20 eV in 0.1 eV steps (401 channels), a 3d₅/₂ detail region wide enough to hold every
line either model can put there with the prior ranges of agent.xps.agent (CeO₂'s poorly screened
line near −13 eV; a 3-level model of La₂O₃-like data puts its f²L̲²-like line at ≈ U_ff + 1 eV,
i.e. +5…+16 eV for U_ff 4–14 eV), so the data can penalise intensity a model predicts there.
Simplifications: no 3d₃/₂ partner (it would sit at +17…+19 eV), no Shirley background, no
analyser transmission function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.core.words import one_of
from agent.xps.cluster_models import CEO2, LA2O3, XPS2_PARAMS, XPS3_PARAMS, theta_of, xps2, xps3

DEFAULT_ENERGIES = np.linspace(-20.0, 20.0, 401)


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


SAMPLES = {
    "la2o3": XPSSample("La2O3", "2-level", LA2O3),
    "ceo2": XPSSample("CeO2", "3-level", CEO2),
}


def sample(name: str) -> XPSSample:
    """The preset sample ``name``, in any case (La2O3, ceo2); ``ValueError`` suggesting the close names."""
    return SAMPLES[one_of(name, [s.name for s in SAMPLES.values()], "XPS sample").lower()]
