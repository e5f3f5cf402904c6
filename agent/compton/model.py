"""Magnetic-Compton forward model and count reduction (DESIGN §4.1, seed eq. 9).

f(p_z; a, b, Γ) = Σ_k a_k (J_k ⊗ G_Γ)(p_z) + Σ_j b_j (φ_j ⊗ G_Γ)(p_z), J_k the unit-area free-atom profiles
of the magnetic orbitals (e.g. Fe 3d and 4s), G_Γ the Gaussian resolution of FWHM Γ (a.u.), a_k in μB.
φ_j is the discrepancy basis: even pairs of unit-area Gaussians ½[g(p − c_j) + g(p + c_j)] at centres c_j
inside the valence region, the solid-state distortions a free-atom profile cannot describe; their prior
std is marginalised by the agent (``agent.core.linear_posterior``, prior-scale role), so the data decide
how large the misfit is. The spin moment is the whole area, μ_s = Σ_k a_k + Σ_j b_j. Data are reduced from
flipping-ratio counts to the magnetic Compton profile J_mag (μB per a.u.) with the charge-profile area as
the normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from agent.compton.corrections import channel_factors, escape_inverse, multiple_scattering_shape, resolution_fwhm_au
from agent.compton.profiles import (
    compton_peak_kev,
    convolve_at,
    convolve_varying,
    fine_grid,
    orbital_profile,
    pz_from_energy,
    total_profile,
)


@dataclass(frozen=True, eq=False)
class ComptonGeometry:
    """What the analysis needs to know of the spectrometer and sample; all of it is detector configuration.

    ``energy_kev``: channel-centre energies (keV); ``incident_kev``: E₁ (keV); ``angle_deg``: φ;
    ``flipping_factor``: κ at the Compton peak, the fraction of the magnetic profile seen in the ± difference
    (circular polarisation × spin/charge cross-section ratio, dimensionless), calibrated on a reference
    sample; ``flipping_factor_rel_std``: that calibration's relative standard uncertainty (a scale
    systematic of μs, reported beside its statistical std, never folded into the stop).
    Corrections (``agent.compton.corrections``; a zero turns one off, so old runs read as before):
    ``sample_thickness_mm`` (self-absorption in reflection, the beam at ``incidence_deg`` to the surface),
    ``ge_thickness_mm`` (Ge full-energy efficiency and K escape), ``cross_section`` (1: the energy dependence
    of the charge and spin cross-sections across the spectrum; 0: constant), ``ms_fraction`` and
    ``ms_fwhm_au`` (multiple scattering: its charge fraction of single scattering inside the window and the
    FWHM of its broad p_z shape, a.u.; ``ms_fraction_rel_std`` its relative uncertainty; ``ms_depolarisation``
    the fraction of the magnetic part lost in double scattering).
    ``resolution_fwhm_au`` and ``resolution_rel_std``: the instrument's resolution FWHM at the Compton peak
    (a.u.) and its relative uncertainty, the prior of Γ. ``background_cps_per_kev``: the detector's flat room
    background (counts/s/keV of live time, all elements; measured without beam), subtracted from the charge.
    ``energy_offset_std_kev`` and ``incident_std_kev``: the std of the MCA's energy offset and of E₁ (keV), the
    p_z calibration's uncertainty (a systematic of μs, ``SpinMomentAgent.systematics``).
    ``resolution_const_kev2``, ``resolution_fano_kev``: the detector's energy resolution FWHM² = c + f·E₂ (keV²;
    ``corrections.resolution_fwhm_au``): the resolution's variation across the window (both 0: constant).
    """

    energy_kev: np.ndarray
    incident_kev: float = 175.0
    angle_deg: float = 178.0
    flipping_factor: float = 0.12
    flipping_factor_rel_std: float = 0.0
    sample_thickness_mm: float = 0.0
    incidence_deg: float = 90.0
    ge_thickness_mm: float = 0.0
    cross_section: float = 0.0
    ms_fraction: float = 0.0
    ms_fwhm_au: float = 8.0
    ms_fraction_rel_std: float = 0.0
    ms_depolarisation: float = 0.0
    resolution_fwhm_au: float = 0.44
    resolution_rel_std: float = 0.0
    background_cps_per_kev: float = 0.0
    energy_offset_std_kev: float = 0.0
    incident_std_kev: float = 0.0
    resolution_const_kev2: float = 0.0
    resolution_fano_kev: float = 0.0

    @classmethod
    def from_calibration(cls, n_channels: int, offset_kev: float, slope_kev: float, **kw) -> ComptonGeometry:
        """Linear MCA calibration E = offset + slope·channel (keV), as an MCA record stores it."""
        return cls(offset_kev + slope_kev * np.arange(int(n_channels)), **kw)

    def same_as(self, other: ComptonGeometry) -> bool:
        """True if ``other`` describes the same calibration and scattering geometry."""
        return np.array_equal(self.energy_kev, other.energy_kev) and self.settings() == other.settings()

    def settings(self) -> dict[str, float]:
        """Every scalar field by name (what a run's configuration records)."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self) if f.name != "energy_kev"}

    @property
    def pz(self) -> np.ndarray:
        """Channel-centre momenta p_z (a.u.)."""
        return pz_from_energy(self.energy_kev, self.incident_kev, self.angle_deg)

    @property
    def resolution_shape(self) -> np.ndarray:
        """Resolution FWHM at each channel relative to the Compton peak's (ones when no variation is given)."""
        if not (self.resolution_const_kev2 > 0 or self.resolution_fano_kev > 0):
            return np.ones_like(self.energy_kev)
        args = (self.incident_kev, self.angle_deg, self.resolution_const_kev2, self.resolution_fano_kev)
        return resolution_fwhm_au(self.energy_kev, *args) / float(
            resolution_fwhm_au(compton_peak_kev(self.incident_kev, self.angle_deg), *args))

    @property
    def pz_width(self) -> np.ndarray:
        """Width of each channel in p_z (a.u.)."""
        return np.abs(np.gradient(self.pz))


def _pair_convolved(centre: float, width_fwhm: float, gamma_fwhm: float, pz: np.ndarray) -> np.ndarray:
    """½[g(p − c) + g(p + c)] ⊗ G_Γ at ``pz``: a Gaussian pair of FWHM √(w² + Γ²) (a.u.), unit area."""
    sigma = np.hypot(width_fwhm, gamma_fwhm) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    g = [np.exp(-0.5 * ((pz - c) / sigma) ** 2) for c in (centre, -centre)]
    return 0.5 * (g[0] + g[1]) / (sigma * np.sqrt(2.0 * np.pi))


class MCSModel:
    """Design matrices X(Γ) (G, n, k + m) on the channels with |p_z| ≤ ``pz_window`` (a.u.): the k orbitals,
    then the m discrepancy functions centred at ``misfit_centres`` (a.u.) of FWHM ``misfit_fwhm_au``.
    ``areas`` (k + m,): each column's area over all p_z, so μ_s = areas · (a, b).

    The corrections the geometry turns on (``agent.compton.corrections``): the Ge K escape is undone on the
    whole spectrum (the inverse escape matrix); each channel is divided by its charge factor (cross-section,
    self-absorption, Ge efficiency) for the charge area and by its magnetic factor (the same × the spin/charge
    ratio's energy dependence) for the profile; multiple scattering is fixed at the instrument's fraction
    (not fitted): its charge part joins the charge area the profile is normalised by, and its magnetic part,
    each column convolved with the broad multiple-scattering shape × fraction × (1 − depolarisation), joins
    every column, so the amplitudes stay single-scattering moments. The live time is the runs' (the monitors
    are scaled by it before the sums)."""

    def __init__(self, element: str, orbitals: Sequence[str], geometry: ComptonGeometry,
                 gamma_grid: Sequence[float], pz_window: float = 10.0, misfit_centres: Sequence[float] = (),
                 misfit_fwhm_au: float = 0.8, ms_fraction: float | None = None):
        if geometry.flipping_factor <= 0:
            raise ValueError("flipping factor κ must be positive")
        self.element = element
        self.orbitals = tuple(orbitals)
        self.geometry = geometry
        pz = geometry.pz
        self.channels = np.flatnonzero(np.abs(pz) <= pz_window)
        if self.channels.size < 3 * len(self.orbitals):
            raise ValueError(f"only {self.channels.size} channels inside |p_z| <= {pz_window} a.u.")
        self.pz = pz[self.channels]
        self.pz_width = geometry.pz_width[self.channels]
        self.gamma_grid = np.asarray(gamma_grid, dtype=float)
        self.misfit_centres = np.asarray(misfit_centres, dtype=float)
        self.misfit_fwhm_au = float(misfit_fwhm_au)
        self.ms_fraction = geometry.ms_fraction if ms_fraction is None else float(ms_fraction)
        charge_factor, magnetic_factor = channel_factors(geometry, element)
        self.charge_factor = charge_factor[self.channels]
        self.magnetic_factor = magnetic_factor[self.channels]
        self.escape_inverse = self.escape_inverse_sq = None
        if geometry.ge_thickness_mm > 0:
            self.escape_inverse, self.escape_inverse_sq = escape_inverse(geometry.energy_kev, geometry.ge_thickness_mm)
        # Multiple scattering: norm = fraction × (charge single / charge double-shape) inside the window.
        j_tot = total_profile(element)
        gamma0 = geometry.resolution_fwhm_au if geometry.resolution_rel_std > 0 else float(np.median(self.gamma_grid))
        single = convolve_at(j_tot, gamma0, fine_grid())
        inside = np.abs(fine_grid()) <= pz_window
        ms_norm = 0.0
        if self.ms_fraction > 0:
            double = multiple_scattering_shape(single, geometry.ms_fwhm_au)
            ms_norm = self.ms_fraction * single[inside].sum() / double[inside].sum()
        ms_mag = ms_norm * (1.0 - geometry.ms_depolarisation)
        profiles = [orbital_profile(element, o) for o in self.orbitals]
        ms_cols = [ms_mag * convolve_at(multiple_scattering_shape(j, geometry.ms_fwhm_au), gamma0, self.pz)
                   for j in profiles]
        ms_cols += [ms_mag * _pair_convolved(c, np.hypot(self.misfit_fwhm_au, geometry.ms_fwhm_au), gamma0, self.pz)
                    for c in self.misfit_centres]
        shape = geometry.resolution_shape[self.channels]  # Γ is the FWHM at the Compton peak
        self.design = np.stack(
            [np.stack([convolve_varying(j, g * shape, self.pz) for j in profiles]
                      + [_pair_convolved(c, self.misfit_fwhm_au, g * shape, self.pz) for c in self.misfit_centres],
                      axis=-1)
             for g in self.gamma_grid]
        ) + np.stack(ms_cols, axis=-1)[None]
        self.areas = np.ones(self.design.shape[-1])
        # Charge area inside the window: Σ Δp [(J_tot ⊗ G) + double scattering](p), Z electrons minus the tails.
        charge = convolve_at(j_tot, gamma0, self.pz)
        if ms_norm > 0:
            charge = charge + ms_norm * convolve_at(double, 0.0, self.pz)
        self.charge_area = float(self.pz_width @ charge)

    def reduce(self, sum_plus, sum_minus, var_plus, var_minus, exposure_s=(0.0, 0.0)):
        """Magnetic Compton profile J_mag (μB/a.u.) and its variance from monitor- and live-time-normalised count
        sums of the + and − field directions (full detector arrays) and their Poisson variances: the room
        background of ``exposure_s`` (the sums' live time per field sign, s, as scaled) subtracted, escape
        undone, charge and magnetic factors divided out, normalised by the charge area inside the window."""
        sums = [np.asarray(x, dtype=float) for x in (sum_plus, sum_minus, var_plus, var_minus)]
        if self.geometry.background_cps_per_kev > 0:  # flat, field-independent: it cancels in the difference
            per_s = self.geometry.background_cps_per_kev * np.abs(np.gradient(self.geometry.energy_kev))
            sums[0], sums[1] = sums[0] - per_s * exposure_s[0], sums[1] - per_s * exposure_s[1]
        if self.escape_inverse is not None:  # variances: the channels are independent; the map's squares
            inv, inv2 = self.escape_inverse, self.escape_inverse_sq
            sums = [inv @ sums[0], inv @ sums[1], inv2 @ sums[2], inv2 @ sums[3]]
        c = self.channels
        sp, sm, vp, vm = (x[c] for x in sums)
        charge = float(((sp + sm) / self.charge_factor).sum())
        if not charge > 0:
            raise ValueError("no charge-Compton counts inside the p_z window")
        norm = charge / self.charge_area * self.geometry.flipping_factor * self.pz_width * self.magnetic_factor
        var = (vp + vm) / norm**2
        if not np.all(var > 0):
            raise ValueError("empty channels inside the p_z window: count longer or narrow the window")
        return (sp - sm) / norm, var
