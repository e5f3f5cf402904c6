"""The simulated BL08W-style magnetic-Compton spectrometer: the truth's absolute count rate and spectrum
(DESIGN §4.1), from ``instrument.toml`` (every number with its source) and the sample preset.

Per element, per second, before dead time, the full-energy counts in channel i of energy Eᵢ are
    Φ·A·(I/I_ref) · n·t_eff(Eᵢ) · ΔΩ · ε(Eᵢ) · Δpᵢ · [σ_c(Eᵢ)(J_tot⊗G)(pᵢ) ± P_c σ_s(Eᵢ)(J_mag⊗G)(pᵢ)·s]
Φ the flux at 100 mA, A the attenuation setting the operating point, n the atom density, t_eff the
self-absorbed thickness (cm), ΔΩ the element's solid angle, ε the Ge full-energy efficiency, σ_c and σ_s the
charge and spin cross-sections per electron per unit p_z (``agent.compton.corrections``), G the resolution,
s the magnetic scale (μs(T, B)/μs(0)). Added: double scattering (charge and a depolarised magnetic part, both
convolved with a broad Gaussian), Ge K escape (M @ …), Pb K fluorescence and a flat room background, then a
paralyzable dead time: the input rate counts everything the crystal sees (the elastic line at E₁, the whole
profile outside the MCA's range, backgrounds), counts and live time scale with exp(−ρτ). The resolution varies
across the spectrum (Ge noise ⊕ Fano ⊕ divergence in energy, times dp_z/dE₂: 0.49 → 0.44 a.u. over the window).
Not modelled: sample fluorescence (stopped before the detector, assumed), a p_z calibration error (the truth's
calibration is exact; the analysis reports its stated uncertainty as a systematic), pile-up sums, the Ge dead
layer and window, double scattering's real (Monte Carlo) shape.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import xraylib

from agent.compton import corrections as cx
from agent.compton.model import ComptonGeometry
from agent.compton.profiles import (
    compton_peak_kev,
    convolve_at,
    convolve_varying,
    element_z,
    fine_grid,
    pz_from_energy,
    total_profile,
)

INSTRUMENT_FILE = Path(__file__).with_name("instrument.toml")
WINDOW_AU = 10.0
_PB_LINES = ("KA1_LINE", "KA2_LINE", "KB1_LINE", "KB2_LINE")


def _at(profile_grid, pz):
    """A fine-grid profile read at ``pz`` (a.u.), zero beyond the grid."""
    return np.interp(pz, fine_grid(), profile_grid, left=0.0, right=0.0)


def _smooth(profile_grid, fwhm):
    return convolve_at(profile_grid, fwhm, fine_grid())


@dataclass(frozen=True, eq=False)
class Instrument:
    """The spectrometer of ``instrument.toml`` (fields named as its keys, units in the names). ``escape``,
    ``dead_time_losses``: switches of the truth (off only in tests); ``source``: the file."""

    incident_kev: float
    scattering_angle_deg: float
    flux_ph_s: float
    circular_polarisation: float
    reference_current_ma: float
    incidence_deg: float
    elements: int
    element_area_cm2: float
    distance_cm: float
    crystal_thickness_mm: float
    dead_time_s: float
    max_dead_fraction: float
    noise_fwhm_kev: float
    fano: float
    pair_energy_ev: float
    divergence_fwhm_deg: float
    n_channels: int
    calib_offset_kev: float
    calib_slope_kev: float
    pb_k_fraction: float
    room_cps_per_kev: float
    ms_fraction: float
    ms_fwhm_au: float
    ms_depolarisation: float
    ms_fraction_rel_std: float
    kappa_reference: str
    kappa_rel_std: float
    resolution_rel_std: float
    energy_offset_std_kev: float
    incident_std_kev: float
    escape: bool = True
    dead_time_losses: bool = True
    cross_section: bool = True
    source: str = ""

    @classmethod
    def from_file(cls, path: str | Path = INSTRUMENT_FILE) -> Instrument:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        src, det, mca, bg, ms, cal = (raw[k] for k in ("source", "detector", "mca", "background",
                                                          "multiple_scattering", "calibration"))
        return cls(**src, **det, **mca, **bg,
                   ms_fraction=ms["fraction"], ms_fwhm_au=ms["fwhm_au"], ms_depolarisation=ms["depolarisation"],
                   ms_fraction_rel_std=ms["fraction_rel_std"], **cal, source=str(path))

    def ideal(self, corrections: bool = True) -> Instrument:
        """This instrument without backgrounds, multiple scattering, Ge escape and dead-time losses (the count
        rate unchanged); with ``corrections=False`` also without the cross-sections' energy dependence,
        self-absorption and efficiency variation, so the truth is exactly the free-atom model family."""
        return dataclasses.replace(self, pb_k_fraction=0.0, room_cps_per_kev=0.0, ms_fraction=0.0, escape=False,
                                   dead_time_losses=False, cross_section=corrections,
                                   source=f"{self.source} (ideal{'' if corrections else ', uncorrected'})")

    # -- derived constants --------------------------------------------------------------------------
    @property
    def peak_kev(self) -> float:
        return compton_peak_kev(self.incident_kev, self.scattering_angle_deg)

    @property
    def solid_angle_sr(self) -> float:
        """Solid angle of one element (sr): area / distance² (small-angle)."""
        return self.element_area_cm2 / self.distance_cm**2

    @cached_property
    def kappa(self) -> float:
        """True flipping factor κ at the Compton peak: P_c × spin/charge (dimensionless)."""
        return float(self.circular_polarisation * cx.spin_to_charge(self.peak_kev, self.incident_kev,
                                                                     self.scattering_angle_deg))

    def detector_fwhm_kev(self, e_kev) -> np.ndarray:
        """Ge energy resolution FWHM (keV): noise ⊕ 2.355√(F·w·E)."""
        w = self.pair_energy_ev * 1e-3
        return np.sqrt(self.noise_fwhm_kev**2 + (2.3548 ** 2) * self.fano * w * np.asarray(e_kev, dtype=float))

    @cached_property
    def resolution_terms_kev(self) -> tuple[float, float]:
        """(c, f) of the energy resolution FWHM² = c + f·E₂ (keV², keV): c the electronic noise² plus the angular
        divergence's spread of the Compton energy (|dE_C/dφ|·Δφ at the peak)², f = 2.355²·F·w the Fano term."""
        e1, phi = self.incident_kev, self.scattering_angle_deg
        d = np.deg2rad(self.divergence_fwhm_deg)
        de_dphi = abs(compton_peak_kev(e1, phi + 0.01) - compton_peak_kev(e1, phi - 0.01)) / np.deg2rad(0.02)
        fano_kev = 2.3548**2 * self.fano * self.pair_energy_ev * 1e-3
        return float(self.noise_fwhm_kev**2 + (de_dphi * d) ** 2), float(fano_kev)

    def resolution_au(self, e_kev) -> np.ndarray:
        """Resolution FWHM in p_z (a.u.) at the scattered energies ``e_kev``."""
        return cx.resolution_fwhm_au(e_kev, self.incident_kev, self.scattering_angle_deg, *self.resolution_terms_kev)

    @cached_property
    def resolution_fwhm_au(self) -> float:
        """Resolution FWHM in p_z at the Compton peak (a.u.): the Ge resolution ⊕ the angular divergence's spread
        of the Compton energy, |dE_C/dφ|·Δφ, turned into p_z by dp_z/dE₂ (``resolution_au`` at the peak)."""
        return float(self.resolution_au(self.peak_kev))

    def geometry_settings(self, sample, calibration_error: float = 0.0) -> dict[str, float]:
        """The ``ComptonGeometry`` fields the detector's configuration reports for ``sample`` (the calibrated
        κ = true κ × (1 + ``calibration_error``), relative)."""
        return {"incident_kev": self.incident_kev, "angle_deg": self.scattering_angle_deg,
                "flipping_factor": self.kappa * (1.0 + float(calibration_error)),
                "flipping_factor_rel_std": self.kappa_rel_std, "sample_thickness_mm": sample.thickness_mm,
                "incidence_deg": self.incidence_deg, "ge_thickness_mm": self.crystal_thickness_mm,
                "cross_section": 1.0, "ms_fraction": self.ms_fraction, "ms_fwhm_au": self.ms_fwhm_au,
                "ms_fraction_rel_std": self.ms_fraction_rel_std, "ms_depolarisation": self.ms_depolarisation,
                "resolution_fwhm_au": self.resolution_fwhm_au,
                "background_cps_per_kev": self.elements * self.room_cps_per_kev,
                "energy_offset_std_kev": self.energy_offset_std_kev, "incident_std_kev": self.incident_std_kev,
                "resolution_const_kev2": self.resolution_terms_kev[0],
                "resolution_fano_kev": self.resolution_terms_kev[1],
                "resolution_rel_std": self.resolution_rel_std}

    def default_geometry(self, sample) -> ComptonGeometry:
        return ComptonGeometry.from_calibration(self.n_channels, self.calib_offset_kev, self.calib_slope_kev,
                                                **self.geometry_settings(sample))

    @cached_property
    def operating_rate_cps(self) -> float:
        return cx.operating_rate(self.dead_time_s, self.max_dead_fraction)

    # -- the truth ------------------------------------------------------------------------------------
    def _scatter(self, sample, energy_kev, efficiency) -> dict[str, np.ndarray]:
        """Per element and second at the reference current without attenuation: the charge and magnetic
        (P_c included, field +, s = 1) single- and double-scattering counts per channel of ``energy_kev``,
        weighted by ``efficiency(E)``."""
        e = np.asarray(energy_kev, dtype=float)
        e1, phi = self.incident_kev, self.scattering_angle_deg
        pz = pz_from_energy(e, e1, phi)
        dp = np.abs(np.gradient(pz))
        z = element_z(sample.element)
        n_atoms = cx.density(sample.element, sample.density_g_cm3) * cx.AVOGADRO / xraylib.AtomicWeight(z)
        t_eff = cx.self_absorption(e, e1, phi, sample.element, sample.thickness_mm, self.incidence_deg,
                                   sample.density_g_cm3)
        common = self.flux_ph_s * n_atoms * t_eff * self.solid_angle_sr * efficiency(e) * dp
        if self.cross_section:
            sig_c, sig_s = cx.charge_ddcs(e, e1, phi), cx.spin_ddcs(e, e1, phi)
        else:  # constant: the values at the peak
            sig_c = np.full_like(e, float(cx.charge_ddcs(self.peak_kev, e1, phi)))
            sig_s = np.full_like(e, float(cx.spin_ddcs(self.peak_kev, e1, phi)))
        gamma = self.resolution_fwhm_au
        jc, jm = _smooth(total_profile(sample.element), gamma), _smooth(sample.magnetic_profile(), gamma)
        # Single scattering at each channel's own resolution (it varies across the spectrum); the broad double
        # scattering below from the constant-resolution profiles.
        width = self.resolution_au(e)
        out = {"charge": common * sig_c * convolve_varying(total_profile(sample.element), width, pz),
               "magnetic": common * self.circular_polarisation * sig_s * convolve_varying(sample.magnetic_profile(),
                                                                                          width, pz)}
        if self.ms_fraction > 0:
            jc_ms = cx.multiple_scattering_shape(jc, self.ms_fwhm_au)
            jm_ms = cx.multiple_scattering_shape(jm, self.ms_fwhm_au)
            inside = np.abs(fine_grid()) <= WINDOW_AU
            norm = self.ms_fraction * jc[inside].sum() / jc_ms[inside].sum()
            out["ms_charge"] = common * sig_c * norm * _at(jc_ms, pz)
            out["ms_magnetic"] = (common * self.circular_polarisation * sig_s * norm * (1.0 - self.ms_depolarisation)
                                  * _at(jm_ms, pz))
        else:
            out["ms_charge"] = out["ms_magnetic"] = np.zeros_like(e)
        return out

    def _input_rates(self, sample) -> tuple[float, float]:
        """(charge, magnetic) scattered input rate per element (counts/s, reference current, no attenuation):
        every photon the crystal stops, the whole profile and the elastic line at E₁, Pb K included."""
        peak = self.peak_kev
        e = np.arange(max(5.0, peak - 70.0), min(self.incident_kev - 0.5, peak + 70.0), 0.05)
        stop = lambda x: cx.ge_interaction(x, self.crystal_thickness_mm)  # noqa: E731
        parts = self._scatter(sample, e, stop)
        charge = float(parts["charge"].sum() + parts["ms_charge"].sum())
        magnetic = float(parts["magnetic"].sum() + parts["ms_magnetic"].sum())
        z = element_z(sample.element)
        n_atoms = cx.density(sample.element, sample.density_g_cm3) * cx.AVOGADRO / xraylib.AtomicWeight(z)
        t1 = float(cx.self_absorption(self.incident_kev, self.incident_kev, self.scattering_angle_deg,
                                      sample.element, sample.thickness_mm, self.incidence_deg, sample.density_g_cm3))
        rayleigh = (self.flux_ph_s * n_atoms * t1 * self.solid_angle_sr * float(stop(self.incident_kev))
                    * xraylib.DCSb_Rayl(z, self.incident_kev, np.deg2rad(self.scattering_angle_deg)) * cx.BARN_CM2)
        return (charge + rayleigh) * (1.0 + self.pb_k_fraction), magnetic * (1.0 + self.pb_k_fraction)

    @property
    def room_rate_cps(self) -> float:
        """Room background per element (counts/s), flat over 0 … E₁."""
        return self.room_cps_per_kev * self.incident_kev

    def attenuation(self, sample) -> float:
        """Beam transmission the beamline sets for ``sample`` so that each element's input rate at the reference
        current is at most the operating rate (1: no attenuation needed)."""
        charge, _ = self._input_rates(sample)
        return float(min(1.0, max(self.operating_rate_cps - self.room_rate_cps, 0.0) / charge))

    @lru_cache(maxsize=16)  # noqa: B019 - a handful of (sample, calibration) pairs per process
    def _channels(self, sample, geometry: ComptonGeometry):
        e = np.asarray(geometry.energy_kev, dtype=float)
        full = lambda x: cx.ge_efficiency(x, self.crystal_thickness_mm)  # noqa: E731
        parts = self._scatter(sample, e, full)
        m = cx.escape_matrix(e, self.crystal_thickness_mm if self.escape else 0.0)
        charge = m @ (parts["charge"] + parts["ms_charge"])
        magnetic = m @ (parts["magnetic"] + parts["ms_magnetic"])
        in_charge, in_magnetic = self._input_rates(sample)
        att = self.attenuation(sample)
        # Pb K lines (xraylib energies and radiative rates), Gaussian of the Ge resolution, counted per channel.
        slope = float(np.median(np.abs(np.diff(e)))) if e.size > 1 else 1.0
        pb = np.zeros_like(e)
        if self.pb_k_fraction > 0:
            lines = [(xraylib.LineEnergy(82, getattr(xraylib, k)), xraylib.RadRate(82, getattr(xraylib, k)))
                     for k in _PB_LINES]
            total = sum(r for _, r in lines)
            scattered = in_charge / (1.0 + self.pb_k_fraction)
            for energy, rate in lines:
                sigma = float(self.detector_fwhm_kev(energy)) / 2.3548
                g = np.exp(-0.5 * ((e - energy) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)) * slope
                pb += self.pb_k_fraction * scattered * rate / total * g
        room = np.full_like(e, self.room_cps_per_kev * slope)
        return att * charge, att * magnetic, att * pb, room, att * in_charge, att * in_magnetic

    def expected_counts(self, sample, geometry: ComptonGeometry, field_sign: float, count_time_s: float,
                        current_ma: float | None = None, magnetic_scale: float | None = None
                        ) -> tuple[np.ndarray, float]:
        """(mean counts per channel summed over the elements, live time s) of one count of ``count_time_s`` s of
        real time at the mean ring current ``current_ma`` (mA; default the reference), field sign ± and
        ``magnetic_scale`` (None: 1)."""
        charge, magnetic, pb, room, in_c, in_m = self._channels(sample, geometry)
        current = self.reference_current_ma if current_ma is None else float(current_ma)
        beam = current / self.reference_current_ma
        s = np.sign(field_sign) * (1.0 if magnetic_scale is None else float(magnetic_scale))
        rho = beam * (in_c + s * in_m) + self.room_rate_cps
        live = float(count_time_s) * (float(cx.live_fraction(rho, self.dead_time_s)) if self.dead_time_losses else 1.0)
        rate = beam * (charge + s * magnetic + pb) + room
        return self.elements * live * rate, live

    def count_rate_breakdown(self, sample, geometry: ComptonGeometry | None = None) -> dict[str, float]:
        """The derived count rate of ``sample`` at the reference current, field-averaged: per element the input
        rate before/after attenuation, dead fraction and output rate, all elements' output rate and their
        recorded rate inside |p_z| ≤ 10 a.u. (single-scattering Compton alone and everything), κ, escape and
        multiple-scattering fractions and the resolution."""
        g = geometry or self.default_geometry(sample)
        charge, magnetic, pb, room, in_c, _ = self._channels(sample, g)
        att = self.attenuation(sample)
        rho = in_c + self.room_rate_cps
        live = float(cx.live_fraction(rho, self.dead_time_s))
        inside = np.abs(g.pz) <= WINDOW_AU
        single = self._scatter(sample, g.energy_kev, lambda x: cx.ge_efficiency(x, self.crystal_thickness_mm))
        m = cx.escape_matrix(g.energy_kev, self.crystal_thickness_mm if self.escape else 0.0)
        fa, fb = cx.escape_fraction(self.peak_kev, self.crystal_thickness_mm if self.escape else 0.0)
        return {
            "elements": float(self.elements), "solid_angle_sr_per_element": self.solid_angle_sr,
            "input_rate_unattenuated_cps_per_element": in_c / att + self.room_rate_cps, "attenuation": att,
            "input_rate_cps_per_element": rho, "operating_rate_cps_per_element": self.operating_rate_cps,
            "dead_fraction": 1.0 - live, "output_rate_cps_per_element": rho * live,
            "output_rate_cps": self.elements * rho * live,
            "window_compton_cps": self.elements * live * att * float((m @ single["charge"])[inside].sum()),
            "window_total_cps": self.elements * live * float((charge + pb + room)[inside].sum()),
            "window_magnetic_cps": self.elements * live * float(magnetic[inside].sum()),
            "kappa_peak": self.kappa, "escape_fraction_peak": float(fa + fb), "ms_fraction": self.ms_fraction,
            "resolution_fwhm_au": self.resolution_fwhm_au,
        }


@lru_cache(maxsize=4)
def instrument(path: str | Path = INSTRUMENT_FILE) -> Instrument:
    """The instrument of ``path`` (default the packaged BL08W-style file), read once."""
    return Instrument.from_file(path)
