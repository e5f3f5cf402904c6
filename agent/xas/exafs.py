"""SYNTHETIC EXAFS extension of the measured Fe K standards (DESIGN §4.2; for scaling the design to EXAFS).

The measured library stops at 7196.85 eV (k ≈ 4.7 Å⁻¹). ``extended_library`` continues every standard to
``stop_eV`` (default 7660 eV, k ≈ 12 Å⁻¹) with a SYNTHETIC spectrum μ(E) = μ0(E) (1 + χ(k)),
k = sqrt(0.2625 (E - E0)) Å⁻¹, E0 = 7112 eV, and a few-shell EXAFS model

    χ(k) = Σ_shells N S0² |f(k)| / (k R²) exp(-2 k² σ²) exp(-2 R / λ(k)) sin(2 k R + φ(k)).

Everything below is APPROXIMATE (no FEFF): S0² = 0.85; |f(k)| a Gaussian bump in k per backscatterer class
(``_SCATTERERS``: light O/N, mid S/Cl/P, heavy Fe/3d), φ(k) = φ0 - 1.0 k rad, λ(k) = 3 + 0.4 k Å. It is a plausible
texture for a prior and a bench, not a reference spectrum. (larch/FEFF would give better amplitudes and phases;
not worth its weight here — the extension only has to be smooth, EXAFS-like and different per class — and
xraylarch is not among the packages this machine can install.)

Shells by a rule on the compound name (``shells_for``; first match wins):
  bcc metals  — ``Fe-foil``, ``Iron_chromium*``, ``SUS430``, ``SUS631``: 8 Fe at 2.48 Å, 6 Fe at 2.87 Å;
  fcc alloys  — ``SUS3*``, ``*Permalloy``, ``*Invar``, ``KOVAR``, ``Inconel*``, ``Hastelloy*``, ``HAVAR*``,
                ``mu-metal``: 12 Fe at 2.54 Å;
  O-bearing   — the element O in the name (an ``O`` not followed by a lower-case letter): N_O in {4, 5, 6} at
                1.9-2.1 Å + 4 Fe at 3.0-3.4 Å, drawn per compound from a CRC32 of its name (deterministic);
  sulfides    — the element S (``S`` not followed by a lower-case letter) and no O: 6 S at 2.26 Å;
  other       — (halides, FeSe, FeSi2, Fe3P, FeB, nitrides, phthalocyanine): 6 mid-Z neighbours at 2.30 Å.

The atomic background μ0(E) = α (E_end/E)³ (a Victoreen-like E⁻³ decay of the jump-normalised
absorption, -4.2e-4 α per eV at E_end) has α = the measured mean over the last 15 eV; the synthetic μ0 (1 + χ)
is then joined to the measurement by a C¹ cubic-Hermite correction over the first 15 eV beyond E_end that makes
value and slope at E_end equal to the measured ones (value: the last point; slope: a quadratic fit to the last
3 eV): no step, no kink.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from agent.xas.prior import SpectraLibrary

E0_EV = 7112.0
K_PER_EV = 0.2625  # k^2 (Å^-2) per eV above E0
S0_SQ = 0.85
BLEND_EV = 15.0  # the Hermite join and the background level window (eV)
SLOPE_FIT_EV = 3.0  # the measured end slope: quadratic over the last 3 eV
#: |f(k)| = amp exp(-(k - k_peak)^2 / (2 width^2)) Å and phase offset φ0 (rad) per backscatterer class (approximate)
_SCATTERERS = {"light": (0.5, 2.5, 3.0, 0.0), "mid": (0.6, 4.5, 4.0, 0.5), "heavy": (0.9, 7.0, 5.0, 1.0)}
_FCC = ("SUS3", "PERMALLOY", "INVAR", "KOVAR", "INCONEL", "HASTELLOY", "HAVAR", "MU-METAL")
_BCC = ("FE-FOIL", "IRON_CHROMIUM", "SUS430", "SUS631")


@dataclass(frozen=True)
class Shell:
    """One scattering shell: ``n`` neighbours of class ``scatterer`` at ``r`` Å, Debye-Waller σ² ``sigma2`` Å²."""

    n: float
    r: float
    sigma2: float
    scatterer: str


def k_of(energy_eV) -> np.ndarray:
    """Photoelectron wavenumber k (Å⁻¹) = sqrt(0.2625 (E - E0)), 0 below E0."""
    return np.sqrt(K_PER_EV * np.clip(np.asarray(energy_eV, float) - E0_EV, 0, None))


def energy_of(k) -> np.ndarray:
    """Energy (eV) of wavenumber ``k`` (Å⁻¹)."""
    return E0_EV + np.asarray(k, float) ** 2 / K_PER_EV


def shell_class(name: str) -> str:
    """``bcc``, ``fcc``, ``oxide``, ``sulfide`` or ``other`` by the name rule of the module doc."""
    up = name.upper()
    if any(t in up for t in _BCC):
        return "bcc"
    if any(t in up for t in _FCC):
        return "fcc"
    if re.search(r"O(?![a-z])", name):
        return "oxide"
    if re.search(r"S(?![a-z])", name):
        return "sulfide"
    return "other"


def shells_for(name: str) -> tuple[Shell, ...]:
    """The APPROXIMATE shells of standard ``name`` (module doc)."""
    cls = shell_class(name)
    if cls == "bcc":
        return Shell(8, 2.48, 0.005, "heavy"), Shell(6, 2.87, 0.006, "heavy")
    if cls == "fcc":
        return (Shell(12, 2.54, 0.006, "heavy"),)
    if cls == "oxide":
        u = np.random.default_rng(zlib.crc32(name.encode())).random(3)
        return (Shell(4 + int(3 * u[0]), 1.9 + 0.2 * u[1], 0.007, "light"),
                Shell(4, 3.0 + 0.4 * u[2], 0.012, "heavy"))
    if cls == "sulfide":
        return (Shell(6, 2.26, 0.008, "mid"),)
    return (Shell(6, 2.30, 0.008, "mid"),)


def chi(k, shells) -> np.ndarray:
    """APPROXIMATE χ(k) of ``shells`` (module doc); 0 at k = 0."""
    k = np.asarray(k, float)
    ks = np.where(k > 0, k, 1.0)
    lam = 3.0 + 0.4 * ks
    out = np.zeros_like(ks)
    for s in shells:
        amp, kp, w, phi0 = _SCATTERERS[s.scatterer]
        f = amp * np.exp(-((ks - kp) ** 2) / (2 * w * w))
        out += (s.n * S0_SQ * f / (ks * s.r**2) * np.exp(-2 * ks * ks * s.sigma2) * np.exp(-2 * s.r / lam)
                * np.sin(2 * ks * s.r + phi0 - 1.0 * ks))
    return np.where(k > 0, out, 0.0)


def _end_match(energy: np.ndarray, spectrum: np.ndarray) -> tuple[float, float, float]:
    """(value, slope per eV at the last energy, α the mean over the last ``BLEND_EV``) of a measured spectrum."""
    e_end = energy[-1]
    m = energy >= e_end - SLOPE_FIT_EV
    c = np.polyfit(energy[m] - e_end, spectrum[m], 2)
    return float(spectrum[-1]), float(c[1]), float(spectrum[energy >= e_end - BLEND_EV].mean())


def extension(energy: np.ndarray, spectrum: np.ndarray, name: str, at_eV) -> np.ndarray:
    """The SYNTHETIC continuation (normalised μ) of one measured spectrum (on ``energy`` eV) at ``at_eV``
    (all > energy[-1]): μ0 (1 + χ) plus the C¹ Hermite join over the first ``BLEND_EV`` (module doc)."""
    energy, spectrum = np.asarray(energy, float), np.asarray(spectrum, float)
    e = np.asarray(at_eV, float)
    if np.any(e <= energy[-1]):
        raise ValueError(f"the extension starts above {energy[-1]:.2f} eV, got {e.min():.2f} eV")
    e_end = energy[-1]
    value, slope, alpha = _end_match(energy, spectrum)
    shells = shells_for(name)

    def synth(x):
        return alpha * (e_end / x) ** 3 * (1 + chi(k_of(x), shells))

    h = 1e-3
    d0 = value - float(synth(np.array([e_end]))[0])
    d1 = slope - float((synth(np.array([e_end + h])) - synth(np.array([e_end - h])))[0] / (2 * h))
    t = np.clip((e - e_end) / BLEND_EV, 0, 1)
    corr = d0 * (2 * t**3 - 3 * t**2 + 1) + d1 * BLEND_EV * (t**3 - 2 * t**2 + t)  # Hermite: 0, 0 at t = 1
    return synth(e) + corr


@dataclass(frozen=True)
class ExtendedLibrary(SpectraLibrary):
    """A ``SpectraLibrary`` whose energies above ``synthetic_from_eV`` are SYNTHETIC (``agent.xas.exafs``)."""

    synthetic_from_eV: float = np.inf
    note: str = ""

    @property
    def synthetic(self) -> np.ndarray:
        """Boolean mask over ``energy``: True where the spectra are synthetic."""
        return self.energy > self.synthetic_from_eV

    def _same(self, lib: SpectraLibrary) -> ExtendedLibrary:
        return ExtendedLibrary(lib.energy, lib.spectra, lib.names, self.synthetic_from_eV, self.note)

    def without(self, name: str) -> ExtendedLibrary:
        return self._same(super().without(name))

    def only(self, names) -> ExtendedLibrary:
        return self._same(super().only(names))


def extended_library(library: SpectraLibrary, stop_eV: float = 7660.0, step_eV: float = 0.5) -> ExtendedLibrary:
    """``library`` continued SYNTHETICALLY from its last energy to ``stop_eV`` (included) in ``step_eV`` steps (eV).
    ``synthetic_from_eV`` = the last measured energy; energies above it are synthetic."""
    e_end = float(library.energy[-1])
    if not (stop_eV > e_end and step_eV > 0):
        raise ValueError(f"need stop_eV > {e_end:.2f} eV and step_eV > 0, got {stop_eV!r}, {step_eV!r}")
    extra = e_end + step_eV * np.arange(1, int(np.ceil((stop_eV - e_end) / step_eV - 1e-9)))
    extra = np.append(extra[extra < stop_eV - 1e-6], stop_eV)  # ends on stop_eV
    ext = np.stack([extension(library.energy, library.spectra[:, i], n, extra)
                    for i, n in enumerate(library.names)], axis=1)
    note = (f"SYNTHETIC above {e_end:.2f} eV: approximate few-shell EXAFS model (agent.xas.exafs), not measured")
    return ExtendedLibrary(np.concatenate([library.energy, extra]), np.vstack([library.spectra, ext]),
                           library.names, e_end, note)
