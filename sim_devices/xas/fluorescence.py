"""A simulated fluorescence detector for a dilute Fe sample (self-absorption, background, dead time).

``FluorescenceModel``: Fe (weight fraction ``fe_fraction``) in a ``matrix`` (a formula xraylib
parses, default cellulose C6H10O5) pressed to ``density_g_cm3``, ``thickness_cm`` thick, the beam at
``incidence_deg`` φ to the surface, the detector at ``exit_deg`` θ. Attenuation (cm²/g) from xraylib:
matrix ``CS_Total_CP``; Fe below its K edge μ_pre(E) = CS_Total(Fe, 7.10 keV)·(7100 eV/E)³; Fe K-shell
part μ_K(E) = J·μ_norm(E), J = xraylib's K-edge jump of CS_Total (cm²/g), μ_norm the sample's normalised
standard (no post-edge E⁻³ decline: ~4 % over 100 eV, left out); the Fe Kα line (KL3) energy E_f and
Fe's CS_Total there. Linear attenuation μ_tot(E) = ρ[(1−w)μ_matrix + w(μ_pre + μ_K)] (1/cm). Counts:

    F(E)  = N0 · ``efficiency`` · ρ w μ_K(E) / (μ_tot(E) + μ_tot(E_f) sinφ/sinθ)
            · (1 − exp(−(μ_tot(E)/sinφ + μ_tot(E_f)/sinθ) d))
    n     = (F + ``background_rate`` · dwell · N0/N0_ref) / dwell          (true rate, 1/s)
    If    ~ Poisson(n · exp(−n τ) · dwell)                                  (paralysable dead time τ)

N0 = ``photon_rate`` (photons/s at 100 mA, before the beam model) · dwell · current/100 mA · the beam
model's relative flux (glitches included). ``efficiency`` = Ω/4π × ω_K × Kα share × detector
efficiency. Harmonic photons are not counted as exciting fluorescence (left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from ophyd import Component as Cpt
from ophyd import Kind, Signal

from sim_devices.xas.beam import BeamModel
from sim_devices.xas.ion_chambers import REFERENCE_CURRENT_MA, SimIonChamber

FE_Z = 26


@dataclass(frozen=True)
class FluorescenceModel:
    """Dilute-sample fluorescence physics (module docstring); energies in eV, τ in s."""

    fe_fraction: float = 0.01
    matrix: str = "C6H10O5"
    density_g_cm3: float = 1.0
    thickness_cm: float = 0.05
    incidence_deg: float = 45.0
    exit_deg: float = 45.0
    efficiency: float = 0.005
    photon_rate: float = 1e8
    background_rate: float = 2000.0
    dead_time_s: float = 1e-6

    def __post_init__(self):
        if not (0 < self.fe_fraction < 1 and self.density_g_cm3 > 0 and self.thickness_cm > 0
                and 0 < self.incidence_deg <= 90 and 0 < self.exit_deg <= 90 and self.efficiency > 0
                and self.photon_rate > 0 and self.background_rate >= 0 and self.dead_time_s >= 0):
            raise ValueError(f"invalid fluorescence model {self}")

    @cached_property
    def _constants(self) -> dict:
        import xraylib

        line_kev = xraylib.LineEnergy(FE_Z, xraylib.KL3_LINE)
        edge_kev = xraylib.EdgeEnergy(FE_Z, xraylib.K_SHELL)
        jump = xraylib.CS_Total(FE_Z, edge_kev + 1e-4) - xraylib.CS_Total(FE_Z, edge_kev - 1e-4)
        return {"line_eV": 1e3 * line_kev, "jump": jump, "fe_pre_7100": xraylib.CS_Total(FE_Z, 7.10),
                "mu_f": (1 - self.fe_fraction) * xraylib.CS_Total_CP(self.matrix, line_kev)
                + self.fe_fraction * xraylib.CS_Total(FE_Z, line_kev)}

    def matrix_mass_att(self, energy_eV) -> np.ndarray:
        """The matrix's CS_Total (cm²/g) at ``energy_eV``."""
        import xraylib

        e = np.atleast_1d(np.asarray(energy_eV, float))
        return np.array([xraylib.CS_Total_CP(self.matrix, x / 1e3) for x in e.ravel()]).reshape(e.shape)

    def linear_att(self, energy_eV, mu_norm) -> tuple[np.ndarray, np.ndarray]:
        """(μ_tot(E), ρ w μ_K(E)) in 1/cm for the normalised Fe spectrum ``mu_norm`` at ``energy_eV``."""
        c, w, rho = self._constants, self.fe_fraction, self.density_g_cm3
        e = np.asarray(energy_eV, float)
        mu_k = c["jump"] * np.asarray(mu_norm, float)
        mu_pre = c["fe_pre_7100"] * (7100.0 / e) ** 3
        return rho * ((1 - w) * self.matrix_mass_att(e).reshape(e.shape) + w * (mu_pre + mu_k)), rho * w * mu_k

    def expected(self, energy_eV, mu_norm, dwell_s: float, current_ma: float = REFERENCE_CURRENT_MA,
                 beam: BeamModel | None = None) -> np.ndarray:
        """Mean recorded counts (dead time applied) in ``dwell_s`` s at ``current_ma`` mA."""
        n0 = self.photon_rate * dwell_s * current_ma / REFERENCE_CURRENT_MA
        flux = 1.0 if beam is None else beam.flux(energy_eV)
        mu_tot, mu_fe = self.linear_att(energy_eV, mu_norm)
        sin_in, sin_out = np.sin(np.radians(self.incidence_deg)), np.sin(np.radians(self.exit_deg))
        mu_f = self.density_g_cm3 * self._constants["mu_f"]
        depth = 1 - np.exp(-(mu_tot / sin_in + mu_f / sin_out) * self.thickness_cm)
        fluor = n0 * flux * self.efficiency * mu_fe / (mu_tot + mu_f * sin_in / sin_out) * depth
        true_rate = (fluor + self.background_rate * dwell_s * flux * current_ma / REFERENCE_CURRENT_MA) / dwell_s
        return true_rate * np.exp(-true_rate * self.dead_time_s) * dwell_s


class SimFluorescenceDetector(SimIonChamber):
    """A fluorescence detector (counts If) with SimIonChamber's trigger/dwell/fault interface and scaler
    gate, counting at the photons' energy the ``FluorescenceModel`` ``model`` of the sample's standard.
    ``dead_time_s`` (configuration, s): the paralysable dead time it states, the model's."""

    dead_time_s = Cpt(Signal, value=0.0, kind=Kind.config)

    def __init__(self, *args, model: FluorescenceModel | None = None, **kwargs):
        kwargs.setdefault("transmitted", True)
        super().__init__(*args, **kwargs)
        self.model = model or FluorescenceModel()
        self.dead_time_s.put(float(self.model.dead_time_s))

    def expected_counts(self, energy_eV: float, dwell_s: float, current_ma: float = REFERENCE_CURRENT_MA) -> float:
        """Mean recorded If at the photons' energy ``energy_eV`` (eV), dead time included."""
        mu = self.sample.mu(energy_eV, hold=True)
        return float(self.model.expected(energy_eV, mu, dwell_s, current_ma, self.beam))
