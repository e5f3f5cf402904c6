"""Compton kinematics and Hartree–Fock free-atom Compton profiles (DESIGN §4.1).

Profiles come from xraylib's tables of Biggs, Mendelsohn & Mann (1975): per-electron partial
profiles J_nl(p_z), normalised here to unit area, and the total profile of an atom (area = Z
electrons). Momentum p_z in atomic units (a.u.), energies in keV.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xraylib

MC2_KEV = 510.99895
ALPHA_INV = 137.035999

# xraylib subshells holding each orbital label (both spin–orbit partners share one profile).
_ORBITAL_SHELLS = {
    "1s": ("K",), "2s": ("L1",), "2p": ("L2", "L3"), "3s": ("M1",), "3p": ("M2", "M3"),
    "3d": ("M4", "M5"), "4s": ("N1",), "4p": ("N2", "N3"), "4d": ("N4", "N5"), "4f": ("N6", "N7"),
    "5s": ("O1",), "5p": ("O2", "O3"), "5d": ("O4", "O5"), "6s": ("P1",),
}

# Uniform fine grid on which profiles are tabulated and convolved (a.u.).
PZ_STEP = 0.01
PZ_MAX = 40.0


def pz_from_energy(e2_kev, e1_kev: float = 175.0, phi_deg: float = 178.0):
    """Electron momentum p_z (a.u.) for scattered energy ``e2_kev`` (keV), incident ``e1_kev`` (keV)
    and scattering angle ``phi_deg`` (degrees); the relativistic impulse-approximation formula."""
    e2 = np.asarray(e2_kev, dtype=float)
    cphi = np.cos(np.deg2rad(phi_deg))
    num = e2 - e1_kev + e1_kev * e2 * (1.0 - cphi) / MC2_KEV
    den = np.sqrt(e1_kev**2 + e2**2 - 2.0 * e1_kev * e2 * cphi)
    return ALPHA_INV * num / den


def compton_peak_kev(e1_kev: float = 175.0, phi_deg: float = 178.0) -> float:
    """Energy (keV) of the Compton peak (p_z = 0) for a free electron at rest."""
    return e1_kev / (1.0 + e1_kev / MC2_KEV * (1.0 - np.cos(np.deg2rad(phi_deg))))


def element_z(element: str) -> int:
    """Atomic number of an element symbol (any case: ``fe``, ``Fe``); ``ValueError`` for an unknown symbol."""
    symbol = element.strip().capitalize() if isinstance(element, str) else element
    try:
        return int(xraylib.SymbolToAtomicNumber(symbol))
    except (ValueError, TypeError):
        raise ValueError(f"unknown element {element!r}: give a chemical symbol such as Fe, Co or Ni") from None


def checked_element(element: str, orbitals) -> str:
    """The symbol of ``element`` as xraylib spells it (``fe`` → ``Fe``), once xraylib has a Compton profile of
    each of its ``orbitals`` (``3d``, ``4s`` …); else a ``ValueError`` in those words."""
    z = element_z(element)
    symbol = xraylib.AtomicNumberToSymbol(z)
    for orbital in orbitals:
        if orbital not in _ORBITAL_SHELLS:
            raise ValueError(f"unknown orbital {orbital!r}; known: {', '.join(_ORBITAL_SHELLS)}")
        try:
            xraylib.ComptonProfile_Partial(z, getattr(xraylib, f"{_ORBITAL_SHELLS[orbital][0]}_SHELL"), 0.0)
        except ValueError:
            raise ValueError(f"{symbol} has no {orbital} electrons with a tabulated Compton profile") from None
    return symbol


def _grid() -> np.ndarray:
    n = int(round(PZ_MAX / PZ_STEP))
    return np.arange(-n, n + 1) * PZ_STEP


@lru_cache(maxsize=64)
def _orbital_profile_on_grid(element: str, orbital: str) -> np.ndarray:
    if orbital not in _ORBITAL_SHELLS:
        raise ValueError(f"unknown orbital {orbital!r}; known: {', '.join(_ORBITAL_SHELLS)}")
    z = element_z(element)
    shell = getattr(xraylib, f"{_ORBITAL_SHELLS[orbital][0]}_SHELL")
    p = np.abs(_grid())
    try:
        j = np.array([xraylib.ComptonProfile_Partial(z, shell, float(x)) for x in p])
    except ValueError as exc:
        raise ValueError(f"xraylib has no {orbital} Compton profile for {element}") from exc
    j /= j.sum() * PZ_STEP
    j.setflags(write=False)
    return j


@lru_cache(maxsize=64)
def _total_profile_on_grid(element: str) -> np.ndarray:
    z = element_z(element)
    j = np.array([xraylib.ComptonProfile(z, float(x)) for x in np.abs(_grid())])
    j.setflags(write=False)
    return j


def gaussian_kernel(fwhm: float) -> np.ndarray:
    """Unit-area Gaussian of FWHM ``fwhm`` (a.u.) sampled on the fine grid step."""
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    half = int(np.ceil(6 * sigma / PZ_STEP))
    x = np.arange(-half, half + 1) * PZ_STEP
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def convolve_at(profile_grid: np.ndarray, fwhm: float, pz) -> np.ndarray:
    """(J ⊗ G_fwhm)(pz): a fine-grid profile convolved with the resolution, read at ``pz`` (a.u.)."""
    smooth = np.convolve(profile_grid, gaussian_kernel(fwhm), mode="same") if fwhm > 0 else profile_grid
    return np.interp(pz, _grid(), smooth)


def convolve_varying(profile_grid: np.ndarray, fwhm, pz) -> np.ndarray:
    """(J ⊗ G)(p) at each ``pz`` (a.u.) with a resolution Gaussian of its own FWHM ``fwhm`` (a.u., one per point or
    one for all): the spectrometer's resolution where each point is measured. Each kernel is normalised on the
    fine grid (unit area), so it equals ``convolve_at`` for a constant width."""
    pz = np.atleast_1d(np.asarray(pz, dtype=float))
    sigma = np.broadcast_to(np.asarray(fwhm, dtype=float), pz.shape) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    if np.any(sigma <= 0):
        raise ValueError("resolution FWHM must be positive")
    half = int(np.ceil(6 * sigma.max() / PZ_STEP))
    grid = _grid()
    centre = np.rint((pz - grid[0]) / PZ_STEP).astype(int)
    idx = centre[:, None] + np.arange(-half, half + 1)[None, :]
    inside = (idx >= 0) & (idx < grid.size)
    idx = np.clip(idx, 0, grid.size - 1)
    w = np.exp(-0.5 * ((pz[:, None] - grid[idx]) / sigma[:, None]) ** 2) * inside
    w /= np.exp(-0.5 * ((np.arange(-half, half + 1) * PZ_STEP)[None, :] / sigma[:, None]) ** 2).sum(1, keepdims=True)
    return (profile_grid[idx] * w).sum(1)


def orbital_profile(element: str, orbital: str, pz=None, scale: float = 1.0) -> np.ndarray:
    """Unit-area free-atom profile J_nl (per a.u.); ``scale`` > 1 broadens it in p_z as
    J(p/scale)/scale (a contracted orbital in real space). On the fine grid unless ``pz`` is given."""
    j = _orbital_profile_on_grid(element, orbital)
    if scale != 1.0:
        j = np.interp(_grid() / scale, _grid(), j) / scale
    return j if pz is None else np.interp(pz, _grid(), j)


def total_profile(element: str, pz=None) -> np.ndarray:
    """Total free-atom profile (area = Z electrons, per a.u.) on the fine grid or at ``pz``."""
    j = _total_profile_on_grid(element)
    return j if pz is None else np.interp(pz, _grid(), j)


def fine_grid() -> np.ndarray:
    """The uniform p_z grid (a.u.) of the tabulated profiles."""
    return _grid()
