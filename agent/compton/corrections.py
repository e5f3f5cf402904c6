"""Spectrometer physics of magnetic Compton scattering, shared by the simulator's truth and the analysis
(DESIGN §4.1): cross-sections across the spectrum, self-absorption, Ge efficiency and K escape, dead time
and the multiple-scattering shape. numpy + xraylib only; energies in keV, angles in degrees, p_z in a.u.,
vectorised over channel energies.

Sources: Ribberfors, PRB 12, 2067 (1975) (impulse-approximation charge cross-section); Lipps & Tolhoek,
Physica 20, 85 & 395 (1954) as written in M. J. Cooper, Rep. Prog. Phys. 48, 415 (1985) (spin term);
xraylib (attenuation, fluorescence yields, radiative rates, line energies, densities).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xraylib
from scipy.sparse import csr_matrix

from agent.compton.profiles import ALPHA_INV, MC2_KEV, compton_peak_kev, element_z, gaussian_kernel, pz_from_energy

R0_CM = 2.8179403262e-13  # classical electron radius (cm), CODATA 2018
AVOGADRO = 6.02214076e23
BARN_CM2 = 1e-24
GE_Z = 32


def _q_kev(e2, e1, phi_deg):
    """|k₁ − k₂| in energy units (keV)."""
    c = np.cos(np.deg2rad(phi_deg))
    return np.sqrt(e1**2 + e2**2 - 2.0 * e1 * e2 * c)


def pz_jacobian(e2_kev, e1_kev: float, phi_deg: float) -> np.ndarray:
    """dp_z/dE₂ (a.u. per keV) of ``agent.compton.profiles.pz_from_energy`` (exact derivative)."""
    e2 = np.asarray(e2_kev, dtype=float)
    c = np.cos(np.deg2rad(phi_deg))
    num = e2 - e1_kev + e1_kev * e2 * (1.0 - c) / MC2_KEV
    den = _q_kev(e2, e1_kev, phi_deg)
    dnum = 1.0 + e1_kev * (1.0 - c) / MC2_KEV
    dden = (e2 - e1_kev * c) / den
    return ALPHA_INV * (dnum * den - num * dden) / den**2


def _kinematic(e2, e1, phi_deg):
    """(r₀²/2)(E₂/E₁)·(dp_z/dE₂ of Ribberfors' m/q)/(exact dp_z/dE₂): the factor common to the charge and
    spin terms per unit p_z (cm² sr⁻¹ per electron per unit J)."""
    return 0.5 * R0_CM**2 * (e2 / e1) * (ALPHA_INV / _q_kev(e2, e1, phi_deg)) / pz_jacobian(e2, e1, phi_deg)


def _ribberfors_x(e2, e1, phi_deg):
    """Ribberfors' X(R, R') with p ≈ p_z (his approximation): R = E₁(√(m²c⁴+p_z²c²) + (E₁ − E₂cosφ)p_zc/q),
    R' = R − E₁E₂(1 − cosφ), X = R/R' + R'/R + 2m²c⁴(1/R − 1/R') + m⁴c⁸(1/R − 1/R')². At p_z = 0 it is the
    Klein–Nishina bracket E₁/E₂ + E₂/E₁ − sin²φ."""
    c = np.cos(np.deg2rad(phi_deg))
    pc = pz_from_energy(e2, e1, phi_deg) * MC2_KEV / ALPHA_INV  # p_z·c (keV)
    r = e1 * (np.sqrt(MC2_KEV**2 + pc**2) + (e1 - e2 * c) * pc / _q_kev(e2, e1, phi_deg))
    rp = r - e1 * e2 * (1.0 - c)
    d = 1.0 / r - 1.0 / rp
    return r / rp + rp / r + 2.0 * MC2_KEV**2 * d + MC2_KEV**4 * d**2


def charge_ddcs(e2_kev, e1_kev: float, phi_deg: float) -> np.ndarray:
    """Absolute charge double-differential cross-section per electron per unit p_z and per unit J(p_z)
    (cm² sr⁻¹): Ribberfors (1975) d²σ/dΩdE₂ = (r₀²/2)(m/q)(E₂/E₁)X J(p_z), turned per unit p_z with the exact
    Jacobian of the channel widths. At the Compton peak it equals Klein–Nishina dσ/dΩ (xraylib DCS_KN)."""
    e2 = np.asarray(e2_kev, dtype=float)
    return _kinematic(e2, e1_kev, phi_deg) * _ribberfors_x(e2, e1_kev, phi_deg)


def spin_ddcs(e2_kev, e1_kev: float, phi_deg: float) -> np.ndarray:
    """Absolute spin-dependent term per electron of unit spin polarisation, per unit circular polarisation
    P_c and per unit p_z and J_mag (cm² sr⁻¹), magnetisation parallel to the incident beam. Lipps–Tolhoek
    (Cooper 1985): dσ/dΩ = (r₀²/2)(E₂/E₁)²[Φ₀ + P_c Φ_c], Φ_c = −(1 − cosφ)(k₁cosφ + k₂)·σ̂/mc², which for σ̂ ∥ k̂₁
    is −(1 − cosφ)(E₁ + E₂)cosφ/mc². Across the profile Φ_c is evaluated at the channel's E₂ with the same
    kinematic factor as ``charge_ddcs`` (a free-electron form in the impulse approximation: an approximation,
    unverified against a relativistic spin IA treatment)."""
    e2 = np.asarray(e2_kev, dtype=float)
    c = np.cos(np.deg2rad(phi_deg))
    phi_c = -(1.0 - c) * (e1_kev + e2) * c / MC2_KEV
    return _kinematic(e2, e1_kev, phi_deg) * phi_c


def charge_cross_section(e2_kev, e1_kev: float = 175.0, phi_deg: float = 178.0) -> np.ndarray:
    """``charge_ddcs`` relative to its value at the Compton peak (dimensionless, 1 at p_z = 0)."""
    peak = compton_peak_kev(e1_kev, phi_deg)
    return charge_ddcs(e2_kev, e1_kev, phi_deg) / float(charge_ddcs(peak, e1_kev, phi_deg))


def spin_cross_section(e2_kev, e1_kev: float = 175.0, phi_deg: float = 178.0) -> np.ndarray:
    """``spin_ddcs`` in the normalisation of ``charge_cross_section`` (divided by the charge term at the peak),
    so κ = P_c·spin/charge."""
    peak = compton_peak_kev(e1_kev, phi_deg)
    return spin_ddcs(e2_kev, e1_kev, phi_deg) / float(charge_ddcs(peak, e1_kev, phi_deg))


def spin_to_charge(e2_kev, e1_kev: float = 175.0, phi_deg: float = 178.0) -> np.ndarray:
    """spin/charge cross-section ratio per unit P_c (dimensionless); at the peak κ = P_c × this."""
    return spin_ddcs(e2_kev, e1_kev, phi_deg) / charge_ddcs(e2_kev, e1_kev, phi_deg)


def flipping_ratio_shape(e2_kev, e1_kev: float = 175.0, phi_deg: float = 178.0) -> np.ndarray:
    """(spin/charge)(E₂) / (spin/charge at the Compton peak): 1 at the peak."""
    peak = compton_peak_kev(e1_kev, phi_deg)
    return spin_to_charge(e2_kev, e1_kev, phi_deg) / float(spin_to_charge(peak, e1_kev, phi_deg))


def resolution_fwhm_au(e2_kev, e1_kev: float, phi_deg: float, const_kev2: float, fano_kev: float) -> np.ndarray:
    """Resolution FWHM in p_z (a.u.) at each scattered energy: the detector's energy FWHM √(c + f·E₂) (keV; c the
    noise and angular terms in keV², f = 2.355²·F·w the Fano term in keV) times |dp_z/dE₂|. It grows across the
    window with E₂ and the Jacobian, so the resolution differs between p_z < 0 and p_z > 0."""
    e2 = np.asarray(e2_kev, dtype=float)
    return np.sqrt(const_kev2 + fano_kev * e2) * np.abs(pz_jacobian(e2, e1_kev, phi_deg))


def density(element: str, density_g_cm3: float | None = None) -> float:
    """``density_g_cm3`` or xraylib's ElementDensity (g/cm³)."""
    return float(density_g_cm3) if density_g_cm3 is not None else float(xraylib.ElementDensity(element_z(element)))


def attenuation_per_cm(element: str, e_kev, density_g_cm3: float | None = None) -> np.ndarray:
    """Linear attenuation coefficient μ (1/cm): xraylib CS_Total (cm²/g) × density."""
    z = element_z(element)
    e = np.atleast_1d(np.asarray(e_kev, dtype=float))
    mu = np.array([xraylib.CS_Total(z, float(x)) for x in e.ravel()]).reshape(e.shape)
    return (mu * density(element, density_g_cm3)).reshape(np.shape(e_kev))


def exit_angle_deg(phi_deg: float, incidence_deg: float = 90.0) -> float:
    """Angle (deg) of the scattered ray to the surface in reflection, beam at ``incidence_deg`` to the surface,
    both rays in one plane with the surface normal: β = φ − α; ``ValueError`` if the ray does not leave the
    front face."""
    beta = phi_deg - incidence_deg
    if not 0.0 < beta < 180.0:
        raise ValueError(f"scattering angle {phi_deg:g}° at incidence {incidence_deg:g}° does not leave the "
                         "front face (reflection geometry)")
    return beta


def self_absorption(e2_kev, e1_kev: float, phi_deg: float, element: str, thickness_mm: float,
                    incidence_deg: float = 90.0, density_g_cm3: float | None = None) -> np.ndarray:
    """Effective scattering thickness (cm) of a flat sample in reflection: ∫₀ᵗ exp(−(μ₁/sinα + μ₂/sinβ)x) dx/sinα,
    x the depth, α the incidence and β the exit angle to the surface, μ₁ at E₁ and μ₂ at E₂ (xraylib CS_Total ×
    density). ``thickness_mm`` 0: ones (the correction off)."""
    e2 = np.asarray(e2_kev, dtype=float)
    if thickness_mm <= 0:
        return np.ones_like(e2)
    sa = np.sin(np.deg2rad(incidence_deg))
    sb = np.sin(np.deg2rad(exit_angle_deg(phi_deg, incidence_deg)))
    mu1 = float(attenuation_per_cm(element, e1_kev, density_g_cm3))
    mu = mu1 / sa + attenuation_per_cm(element, e2, density_g_cm3) / sb
    t = thickness_mm / 10.0
    return -np.expm1(-mu * t) / (mu * sa)


def _ge(fn, e):
    e = np.atleast_1d(np.asarray(e, dtype=float))
    return np.array([fn(GE_Z, float(x)) for x in e.ravel()]).reshape(e.shape)


def ge_interaction(e_kev, thickness_mm: float) -> np.ndarray:
    """Probability that a photon entering the Ge crystal at normal incidence interacts at all:
    1 − exp(−μ_tot ρ t) (xraylib CS_Total, ElementDensity). Thickness 0: ones."""
    e = np.asarray(e_kev, dtype=float)
    if thickness_mm <= 0:
        return np.ones_like(e)
    mu = _ge(xraylib.CS_Total, e).reshape(e.shape) * xraylib.ElementDensity(GE_Z)
    return -np.expm1(-mu * thickness_mm / 10.0)


def ge_efficiency(e_kev, thickness_mm: float) -> np.ndarray:
    """Probability that a photon entering the Ge crystal (normal incidence) deposits its full energy
    (K escapes included: ``escape_matrix`` moves them): interaction probability × CS_Photo/CS_Total (xraylib).
    Approximation: a Compton or Rayleigh first interaction never ends in the full-energy peak (it
    underestimates the efficiency somewhat, smoothly in energy); no dead layer, no window. Thickness 0: ones."""
    e = np.asarray(e_kev, dtype=float)
    if thickness_mm <= 0:
        return np.ones_like(e)
    share = (_ge(xraylib.CS_Photo, e) / _ge(xraylib.CS_Total, e)).reshape(e.shape)
    return ge_interaction(e, thickness_mm) * share


def escape_lines() -> tuple[tuple[float, float], tuple[float, float]]:
    """((E_Kα, share), (E_Kβ, share)) of Ge (keV; xraylib LineEnergy and RadRate of KA_LINE, KB_LINE)."""
    return ((float(xraylib.LineEnergy(GE_Z, xraylib.KA_LINE)), float(xraylib.RadRate(GE_Z, xraylib.KA_LINE))),
            (float(xraylib.LineEnergy(GE_Z, xraylib.KB_LINE)), float(xraylib.RadRate(GE_Z, xraylib.KB_LINE))))


def escape_fraction(e_kev, thickness_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Ge Kα and Kβ escape probabilities per full-energy (photoelectric) event, normal incidence on a
    semi-infinite slab: f = ½ ω_K P_K p_line [1 − (μ_f/μ_i) ln(1 + μ_i/μ_f)], ω_K the K fluorescence yield, P_K the
    K share of photoabsorption (CS_Photo_Partial/CS_Photo), p_line the line's radiative rate, μ_i and μ_f the
    attenuation at the incident and line energies (all xraylib). The formula is the standard slab result
    (e.g. Reed & Ware, J. Phys. E 5, 582 (1972)): transcription unverified; the back face is neglected.
    Zero below the K edge; thickness 0: zeros."""
    e = np.asarray(e_kev, dtype=float)
    if thickness_mm <= 0:
        return np.zeros_like(e), np.zeros_like(e)
    edge = xraylib.EdgeEnergy(GE_Z, xraylib.K_SHELL)
    above = e > edge
    ee = np.where(above, e, edge + 1.0)
    omega = xraylib.FluorYield(GE_Z, xraylib.K_SHELL)
    pk = (_ge(lambda z, x: xraylib.CS_Photo_Partial(z, xraylib.K_SHELL, x), ee) / _ge(xraylib.CS_Photo, ee))
    mu_i = _ge(xraylib.CS_Total, ee)
    out = []
    for line_kev, rate in escape_lines():
        x = mu_i / xraylib.CS_Total(GE_Z, line_kev)
        f = 0.5 * omega * pk.reshape(e.shape) * rate * (1.0 - np.log1p(x) / x).reshape(e.shape)
        out.append(np.where(above, f, 0.0))
    return out[0], out[1]


def escape_matrix(energy_kev, thickness_mm: float) -> np.ndarray:
    """(n, n) matrix M on the MCA's channel energies (uniform, keV): measured = M @ full-energy spectrum.
    Column j loses f_Kα + f_Kβ (``escape_fraction``) from channel j and puts them at E_j − E_Kα and E_j − E_Kβ
    (shared linearly between the two nearest channels). Column sums are 1 except where an escape peak falls
    below the first channel (those counts leave the spectrum). Thickness 0: the identity."""
    e = np.asarray(energy_kev, dtype=float)
    n = e.size
    m = np.eye(n)
    if thickness_mm <= 0 or n < 2:
        return m
    fa, fb = escape_fraction(e, thickness_mm)
    m[np.arange(n), np.arange(n)] -= fa + fb
    step = (e[-1] - e[0]) / (n - 1)
    cols = np.arange(n)
    for (line, _), f in zip(escape_lines(), (fa, fb), strict=True):
        x = (e - line - e[0]) / step  # fractional channel of the escape peak
        lo = np.floor(x).astype(int)
        w = x - lo
        for idx, wt in ((lo, 1.0 - w), (lo + 1, w)):
            ok = (idx >= 0) & (idx < n)
            np.add.at(m, (idx[ok], cols[ok]), (f * wt)[ok])
    return m


def escape_inverse(energy_kev, thickness_mm: float):
    """(M⁻¹, M⁻¹ squared elementwise) of ``escape_matrix`` as sparse CSR matrices (escapes shift by the Ge K line
    energies only, so the inverse has a few bands): full-energy spectrum = M⁻¹ @ measured, and the variances of
    independent channels map by the squares. Cached per calibration (uniform channels) and thickness."""
    e = np.asarray(energy_kev, dtype=float)
    step = (e[-1] - e[0]) / (e.size - 1) if e.size > 1 else 0.0
    return _escape_inverse(e.size, float(e[0]), float(step), float(thickness_mm))


@lru_cache(maxsize=8)
def _escape_inverse(n: int, e0: float, step: float, thickness_mm: float):
    inv = np.linalg.inv(escape_matrix(e0 + step * np.arange(n), thickness_mm))
    inv[np.abs(inv) < 1e-14] = 0.0
    return csr_matrix(inv), csr_matrix(inv**2)


def live_fraction(input_rate_cps, dead_time_s: float):
    """Live fraction of a paralyzable detector with an ideal live-time clock: exp(−ρτ) (live = real × this)."""
    return np.exp(-np.asarray(input_rate_cps, dtype=float) * dead_time_s)


def output_rate(input_rate_cps, dead_time_s: float):
    """Recorded rate of a paralyzable detector: ρ exp(−ρτ) (counts/s)."""
    rho = np.asarray(input_rate_cps, dtype=float)
    return rho * live_fraction(rho, dead_time_s)


def operating_rate(dead_time_s: float, max_dead_fraction: float) -> float:
    """Input rate (counts/s) at which the paralyzable dead fraction 1 − exp(−ρτ) equals ``max_dead_fraction``."""
    if not (0.0 < max_dead_fraction < 1.0 and dead_time_s > 0):
        raise ValueError("dead fraction must be in (0, 1) and the dead time positive")
    return float(-np.log1p(-max_dead_fraction) / dead_time_s)


def multiple_scattering_kernel(fwhm_au: float) -> np.ndarray:
    """Unit-area Gaussian (on the fine p_z grid of ``agent.compton.profiles``) of FWHM ``fwhm_au``: doubly
    scattered photons are modelled as the single-scattering profile convolved with it (a model choice, not a
    Monte Carlo: the real shape of double scattering is broad and slightly asymmetric)."""
    return gaussian_kernel(fwhm_au)


def multiple_scattering_shape(profile_grid: np.ndarray, fwhm_au: float) -> np.ndarray:
    """``profile_grid`` (fine grid) convolved with ``multiple_scattering_kernel(fwhm_au)`` (area kept)."""
    return np.convolve(profile_grid, multiple_scattering_kernel(fwhm_au), mode="same")


def channel_factors(geometry, element: str, density_g_cm3: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(charge_factor, magnetic_factor) per channel of ``geometry`` (``agent.compton.model.ComptonGeometry``),
    per unit p_z and relative (1 at the Compton peak): charge cross-section (``cross_section`` on) ×
    self-absorption (``sample_thickness_mm`` > 0) × Ge full-energy efficiency (``ge_thickness_mm`` > 0); the
    magnetic factor also × ``flipping_ratio_shape`` (so κ at the peak stays ``geometry.flipping_factor``).
    Every correction field zero: exactly ones."""
    e = np.asarray(geometry.energy_kev, dtype=float)
    e1, phi = geometry.incident_kev, geometry.angle_deg
    peak = compton_peak_kev(e1, phi)
    charge = np.ones_like(e)
    shape = np.ones_like(e)
    if geometry.cross_section:
        charge = charge * charge_cross_section(e, e1, phi)
        shape = flipping_ratio_shape(e, e1, phi)
    if geometry.sample_thickness_mm > 0:
        args = (e1, phi, element, geometry.sample_thickness_mm, geometry.incidence_deg, density_g_cm3)
        charge = charge * self_absorption(e, *args) / float(self_absorption(peak, *args))
    if geometry.ge_thickness_mm > 0:
        ge = geometry.ge_thickness_mm
        charge = charge * ge_efficiency(e, ge) / float(ge_efficiency(peak, ge))
    return charge, charge * shape
