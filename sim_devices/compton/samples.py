"""Sample physics of magnetic Compton scattering for the simulator (DESIGN §4.1).

Counts per channel for field direction ± are Poisson with the mean the instrument gives
(``sim_devices.compton.instrument``: flux, polarisation, cross-sections, self-absorption in the sample's
thickness, resolution, efficiency, escape, multiple scattering, backgrounds and dead time); the sample gives
its element, thickness, density and true magnetic profile J_mag. The true magnetic profile deliberately
differs from the free-atom analysis model (see presets/fe.toml). Presets are data: adding a sample is a
TOML file in ``presets/`` or in the user's folder (``$BAYESBEAM_PRESETS``), read and checked by
``sim_devices.compton.preset_files``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from agent.compton.model import ComptonGeometry
from agent.compton.profiles import fine_grid, orbital_profile
from agent.core.words import one_of
from sim_devices.compton.preset_files import PRESETS_DIR, PRESETS_ENV, PresetError, PresetOverride, read_presets

__all__ = ["PRESETS_DIR", "PRESETS_ENV", "REFERENCE_CURRENT_MA", "ComptonSample", "PresetError", "PresetOverride",
           "compton_presets", "compton_sample"]
REFERENCE_CURRENT_MA = 100.0


def _gaussian(p, fwhm):
    """Unit-area Gaussian of FWHM ``fwhm`` (a.u.) at ``p`` (a.u.)."""
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    return np.exp(-0.5 * (p / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


@dataclass(frozen=True, eq=False)
class ComptonSample:
    """A simulated ferromagnet: the truth behind the Ge detector's spectra (``source``: its preset file)."""

    name: str
    description: str
    element: str
    orbitals: tuple[str, ...]
    amplitudes_mub: tuple[float, ...]
    pz_broadening: tuple[float, ...]
    diffuse_area_mub: float
    diffuse_fwhm_au: float
    band_terms: tuple[tuple[float, float, float], ...]
    thickness_mm: float
    density_g_cm3: float | None = None
    source: str = ""

    @property
    def spin_moment_mub(self) -> float:
        """True spin moment μ_s = ∫J_mag dp_z (μB)."""
        return float(sum(self.amplitudes_mub) + self.diffuse_area_mub)

    def magnetic_profile(self) -> np.ndarray:
        """True J_mag on the fine p_z grid (μB per a.u.), before resolution."""
        p = fine_grid()
        j = sum(a * orbital_profile(self.element, o, scale=s)
                for a, o, s in zip(self.amplitudes_mub, self.orbitals, self.pz_broadening, strict=True))
        j = j + self.diffuse_area_mub * _gaussian(p, self.diffuse_fwhm_au)
        for amp, lobe, width in self.band_terms:  # zero-area oscillations near the Fermi momentum
            j = j + amp * (_gaussian(p, width) - 0.5 * _gaussian(p - lobe, width) - 0.5 * _gaussian(p + lobe, width))
        return j

    def expected_counts_live(self, geometry: ComptonGeometry, field_sign: float, count_time_s: float,
                             current_ma: float = REFERENCE_CURRENT_MA, magnetic_scale: float | None = None,
                             instrument=None) -> tuple[np.ndarray, float]:
        """(mean counts per channel, live time s) of one spectrum of ``count_time_s`` s of real time
        (``current_ma``: mean ring current, mA) on ``instrument`` (default the BL08W-style one,
        ``sim_devices.compton.instrument``). ``magnetic_scale``: μs(T, B)/μs(0) of a sample with a temperature
        (the magnetic profile scales with the moment); None for a sample without one."""
        from sim_devices.compton.instrument import instrument as default_instrument

        inst = instrument or default_instrument()
        return inst.expected_counts(self, geometry, field_sign, count_time_s, current_ma, magnetic_scale)

    def expected_counts(self, geometry: ComptonGeometry, field_sign: float, count_time_s: float,
                        current_ma: float = REFERENCE_CURRENT_MA, magnetic_scale: float | None = None,
                        instrument=None) -> np.ndarray:
        """Mean counts per channel of ``expected_counts_live`` (its live time dropped)."""
        return self.expected_counts_live(geometry, field_sign, count_time_s, current_ma, magnetic_scale, instrument)[0]


def compton_presets(folder: str | os.PathLike | None = None) -> dict[str, ComptonSample]:
    """All presets, keyed by lower-case name: the packaged folder's and the user's ``folder`` (default
    ``$BAYESBEAM_PRESETS``), whose tables replace packaged ones of the same name; ``PresetError`` (one line
    naming file, table and key) for a bad file."""
    return {name: _sample(**fields) for name, fields in read_presets(folder).items()}


@lru_cache(maxsize=64)
def _sample(**fields) -> ComptonSample:  # the same object while its file is unchanged (its rates are cached)
    return ComptonSample(**fields)


def compton_sample(name: str, folder: str | os.PathLike | None = None) -> ComptonSample:
    """The preset called ``name`` (any case) of ``compton_presets(folder)``; ``ValueError`` suggesting the close
    names (else all)."""
    presets = compton_presets(folder)
    return presets[one_of(name, sorted(presets), "sample")]
