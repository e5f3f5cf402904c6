"""Anderson-impurity cluster models of 4f-oxide core-level spectra (DESIGN §4.3), in numba.

Configurations f^n L̲^n (n ligand holes), N_f = 14, sudden approximation. Energies in eV.

* 3d XPS, 2-level basis {f⁰, f¹L̲} (seed 002): initial state pure |f⁰⟩ with E_g = 0 (DESIGN §4.3
  writes a hybridised H_i; the seed's 2-level model has none), H_f = [[0, √N_f V], [√N_f V, Δ − U_fc]].
  θ = (Δ, V, U_fc, Γ); Δ and U_fc enter only as the final-state charge-transfer energy
  Δ_f = Δ − U_fc, so the data fix Δ_f and V, and Δ, U_fc separately only through their priors.
* 3d XPS, 3-level basis {f⁰, f¹L̲, f²L̲²}: H_i tridiagonal with diagonal (0, Δ, 2Δ + U_ff) and
  hopping (√N_f V, √(2(N_f − 1)) V); H_f = H_i with diagonal (0, Δ − U_fc, 2Δ + U_ff − 2U_fc).
  The final state keeps the hybridisation, as in the 2-level model (DESIGN §4.3 writes H_f
  diagonal; with that, CeO₂'s f¹L̲ and f²L̲² final states lie 0.4 eV apart, the spectrum has two
  lines and no data can tell the 3-level from the 2-level model). θ = (Δ, V, U_ff, U_fc, Γ).
* Second spectroscopy for Bayesian integration: 3d→4f XAS (M₅-edge-like), same impurity model
  without multiplets or spin-orbit partner. Final configurations 3d⁹ f^{n+1} L̲^n with diagonal
  (0, Δ + U_ff − U_fc, 2Δ + 3U_ff − 2U_fc), hopping (√(N_f − 1) V, √(2(N_f − 2)) V), dipole
  amplitudes √(N_f − n) from f^n, uniform otherwise. It shares (Δ, V, U_ff, U_fc) with the XPS
  model and has its own Lorentzian width; its energy axis is relative to the bare 3d⁹f¹ final
  level (assumed calibrated, like the XPS axis). θ = (Δ, V, U_ff, U_fc, Γ_XAS).

Spectra: I(E) = Σ_j w_j (Γ/π)/((E − ε_j)² + Γ²) with Σ_j w_j = 1 (area-normalised), ε_j = E_fj − E_g
the removal (XPS, binding-energy-like) or excitation (XAS) energy relative to the core level, and
Γ the Lorentzian half width at half maximum: the seed's line shape (:func:`xps2`, :func:`xps3`), kept
for the 0.1 analysis. The measured line shape (:func:`xps_line_shape`, used by agent.xps.likelihood)
adds the 3d₃/₂ partner, Voigt broadening with a per-final-state multiplet width, a Shirley step
computed from the model's own peaks, the analyser transmission and a rigid (charging) shift.
Eigenproblems are solved in closed form (2×2 rotation; 3×3 trigonometric roots refined by Newton
steps, eigenvectors from cross products of rows of H − λ).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from agent.core.nonlinear import Param

N_F = 14

XPS2_PARAMS = ("delta", "V", "U_fc", "gamma")
XPS3_PARAMS = ("delta", "V", "U_ff", "U_fc", "gamma")
XAS3_PARAMS = ("delta", "V", "U_ff", "U_fc", "gamma_xas")

#: DESIGN §4.3 parameters (eV): Δ, V, U_ff, U_fc, Γ.
LA2O3 = {"delta": 12.5, "V": 0.57, "U_ff": 10.5, "U_fc": 12.7, "gamma": 0.5}
CEO2 = {"delta": 1.6, "V": 0.76, "U_ff": 10.5, "U_fc": 12.5, "gamma": 0.7}

#: Uniform priors (eV) of the cluster parameters, shared by both models (the 2-level parameters are a subset) and
#: both analyses: physically plausible ranges for 4f oxides (seed 002: Δ 1.6–12.5, V 0.6–0.8, U_ff 10.5,
#: U_fc 12.5–12.7).
CLUSTER_PRIORS = {
    "delta": Param("delta", -2.0, 16.0),
    "V": Param("V", 0.2, 1.5),
    "U_ff": Param("U_ff", 4.0, 14.0),
    "U_fc": Param("U_fc", 8.0, 16.0),
    "gamma": Param("gamma", 0.2, 1.5),
}


@njit(cache=True)
def eig2(a, b, c):
    """Symmetric [[a, b], [b, c]]: (λ_low, λ_high, v_low[0], v_low[1]); v_high = (−v_low[1], v_low[0])."""
    m = 0.5 * (a + c)
    r = np.sqrt(0.25 * (a - c) ** 2 + b * b)
    phi = 0.5 * np.arctan2(2.0 * b, a - c)
    return m - r, m + r, -np.sin(phi), np.cos(phi)


@njit(cache=True)
def _charpoly(lam, d0, d1, d2, e0, e1):
    a, b, c = d0 - lam, d1 - lam, d2 - lam
    p = a * (b * c - e1 * e1) - e0 * e0 * c
    dp = -(b * c - e1 * e1) - a * (b + c) + e0 * e0
    return p, dp


@njit(cache=True)
def eigvals3(d0, d1, d2, e0, e1):
    """Eigenvalues (ascending) of the symmetric tridiagonal [[d0,e0,0],[e0,d1,e1],[0,e1,d2]]."""
    q = (d0 + d1 + d2) / 3.0
    p2 = (d0 - q) ** 2 + (d1 - q) ** 2 + (d2 - q) ** 2 + 2.0 * (e0 * e0 + e1 * e1)
    out = np.empty(3)
    if p2 <= 1e-300:
        out[:] = q
        return out
    p = np.sqrt(p2 / 6.0)
    b0, b1, b2, f0, f1 = (d0 - q) / p, (d1 - q) / p, (d2 - q) / p, e0 / p, e1 / p
    r = 0.5 * (b0 * (b1 * b2 - f1 * f1) - f0 * f0 * b2)
    r = min(1.0, max(-1.0, r))
    phi = np.arccos(r) / 3.0
    out[2] = q + 2.0 * p * np.cos(phi)
    out[0] = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    out[1] = 3.0 * q - out[0] - out[2]
    for i in range(3):
        lam = out[i]
        for _ in range(2):
            f, df = _charpoly(lam, d0, d1, d2, e0, e1)
            if df != 0.0:
                lam -= f / df
        out[i] = lam
    return out


@njit(cache=True)
def eigvec3(lam, d0, d1, d2, e0, e1):
    """Unit eigenvector of the tridiagonal matrix for eigenvalue ``lam`` (largest row cross product)."""
    a, b, c = d0 - lam, d1 - lam, d2 - lam
    v = np.empty(3)
    x = np.array([e0 * c, -a * c, a * e1])  # rows 0 × 2
    y = np.array([e0 * e1, -a * e1, a * b - e0 * e0])  # rows 0 × 1
    z = np.array([b * c - e1 * e1, -e0 * c, e0 * e1])  # rows 1 × 2
    nx, ny, nz = np.sum(x * x), np.sum(y * y), np.sum(z * z)
    if nx >= ny and nx >= nz:
        v[:] = x / np.sqrt(nx)
    elif ny >= nz:
        v[:] = y / np.sqrt(ny)
    else:
        v[:] = z / np.sqrt(nz)
    return v


@njit(cache=True)
def xps2_lines(delta, v, ufc):
    """2-level 3d XPS from the pure |f⁰⟩ initial state (E_g = 0): (positions ε_j, weights w_j), eV."""
    pos, w, _ = xps2_states(delta, v, ufc)
    return pos, w


@njit(cache=True)
def _ground3(delta, v, uff):
    e0 = np.sqrt(N_F) * v
    e1 = np.sqrt(2.0 * (N_F - 1)) * v
    d2 = 2.0 * delta + uff
    eg = eigvals3(0.0, delta, d2, e0, e1)[0]
    return eg, eigvec3(eg, 0.0, delta, d2, e0, e1)


@njit(cache=True)
def xps3_lines(delta, v, uff, ufc):
    """3-level 3d XPS: (positions ε_j, weights w_j) of the three final states, eV."""
    pos, w, _ = xps3_states(delta, v, uff, ufc)
    return pos, w


@njit(cache=True)
def xas3_lines(delta, v, uff, ufc):
    """3-level 3d→4f XAS: (excitation energies, normalised weights), eV."""
    eg, g = _ground3(delta, v, uff)
    d1 = delta + uff - ufc
    d2 = 2.0 * delta + 3.0 * uff - 2.0 * ufc
    e0 = np.sqrt(N_F - 1.0) * v
    e1 = np.sqrt(2.0 * (N_F - 2)) * v
    lam = eigvals3(0.0, d1, d2, e0, e1)
    amp = np.array([np.sqrt(N_F) * g[0], np.sqrt(N_F - 1.0) * g[1], np.sqrt(N_F - 2.0) * g[2]])
    w = np.empty(3)
    for j in range(3):
        u = eigvec3(lam[j], 0.0, d1, d2, e0, e1)
        o = np.sum(u * amp)
        w[j] = o * o
    return lam - eg, w / np.sum(w)


@njit(cache=True)
def lorentzians(e, pos, w, gamma):
    """Σ_j w_j (Γ/π)/((E − ε_j)² + Γ²) on the energy grid ``e`` (eV⁻¹)."""
    out = np.zeros(e.size)
    g2 = gamma * gamma
    c = gamma / np.pi
    for i in range(e.size):
        s = 0.0
        for j in range(pos.size):
            dx = e[i] - pos[j]
            s += w[j] / (dx * dx + g2)
        out[i] = c * s
    return out


@njit(cache=True)
def xps2(theta, e):
    """2-level 3d XPS spectrum, θ = (Δ, V, U_fc, Γ) in eV, on binding energies ``e`` (eV)."""
    pos, w = xps2_lines(theta[0], theta[1], theta[2])
    return lorentzians(e, pos, w, theta[3])


@njit(cache=True)
def xps3(theta, e):
    """3-level 3d XPS spectrum, θ = (Δ, V, U_ff, U_fc, Γ) in eV."""
    pos, w = xps3_lines(theta[0], theta[1], theta[2], theta[3])
    return lorentzians(e, pos, w, theta[4])


@njit(cache=True)
def xas3(theta, e):
    """3-level 3d→4f XAS spectrum, θ = (Δ, V, U_ff, U_fc, Γ_XAS) in eV."""
    pos, w = xas3_lines(theta[0], theta[1], theta[2], theta[3])
    return lorentzians(e, pos, w, theta[4])


def dense_lines(h_initial: np.ndarray, h_final: np.ndarray, transition: np.ndarray | None = None):
    """Reference by ``numpy.linalg.eigh``: positions E_fj − E_g and normalised weights
    |⟨f_j|T|g⟩|² (T diagonal, identity by default)."""
    ei, vi = np.linalg.eigh(h_initial)
    ef, vf = np.linalg.eigh(h_final)
    g = vi[:, 0] * (1.0 if transition is None else transition)
    w = (vf.T @ g) ** 2
    return ef - ei[0], w / w.sum()


def theta_of(truth: dict, names: tuple[str, ...]) -> np.ndarray:
    """Parameter vector in the order ``names`` from a dict such as :data:`CEO2`."""
    return np.array([truth[n] for n in names], float)


# --- the measured line shape -------------------------------------------------------------------------------------

#: 3d spin-orbit splitting E(3d₃/₂) − E(3d₅/₂) (eV): Ce 18.6 (CeO₂, Bêche et al., Surf. Interface Anal. 40, 264
#: (2008); Burroughs et al., J. Chem. Soc. Dalton Trans. 1976, 1686), La 16.8 (Moulder et al., Handbook of X-ray
#: Photoelectron Spectroscopy, Perkin-Elmer 1992).
SPIN_ORBIT_EV = {"Ce": 18.6, "La": 16.8}
#: 3d₅/₂ binding energy of the bare core level (eV), only to place the window in kinetic energy for the
#: transmission: Ce ≈ 882, La ≈ 835 (Moulder et al. 1992).
CORE_LEVEL_EV = {"Ce": 882.0, "La": 835.0}
#: area ratio I(3d₃/₂)/I(3d₅/₂) = (2j+1) ratio 4/6 (statistical branching; the sudden approximation with
#: the same cluster Hamiltonian for both core holes, as in Kotani & Ogasawara, J. Electron Spectrosc. 60, 257 (1992)).
BRANCHING_32 = 4.0 / 6.0
PHOTON_EV = 1486.6  # photon energy (eV) of the kinetic-energy scale (Al Kα; a soft-X-ray beamline's is similar)
#: analyser transmission T(E_kin) ∝ E_kin^−n at fixed pass energy (hemispherical analyser, FAT mode; n ≈ 0.5–1,
#: Seah, J. Electron Spectrosc. 71, 191 (1995)); here n = 0.5, a calibrated constant, normalised to 1 at E = 0.
TRANSMISSION_N = 0.5
#: instrumental Gaussian σ (eV): photon bandwidth and analyser resolution combined, 0.5 eV FWHM, calibrated on a
#: Au Fermi edge (a known constant of the set-up, not fitted).
SIGMA_INSTR_EV = 0.5 / 2.3548

_SQRT_PI_INV = 0.5641895835477563
_SQRT_2PI = 2.5066282746310002


@njit(cache=True)
def _re_ratio(num, den):
    """Re(num/den) without complex division."""
    return (num.real * den.real + num.imag * den.imag) / (den.real * den.real + den.imag * den.imag)


@njit(cache=True)
def faddeeva_re(x, y):
    """Re w(z), w(z) = e^{−z²} erfc(−iz), z = x + iy, y ≥ 0: Humlíček's W4 rational approximation (J. Quant.
    Spectrosc. Radiat. Transfer 27, 437 (1982)), relative error ≲ 1e-4."""
    t = complex(y, -x)
    s = abs(x) + y
    if s >= 15.0:
        return _re_ratio(t * _SQRT_PI_INV, 0.5 + t * t)
    if s >= 5.5:
        u = t * t
        return _re_ratio(t * (1.410474 + u * _SQRT_PI_INV), 0.75 + u * (3.0 + u))
    if y >= 0.195 * abs(x) - 0.176:
        num = 16.4955 + t * (20.20933 + t * (11.96482 + t * (3.778987 + t * 0.5642236)))
        den = 16.4955 + t * (38.82363 + t * (39.27121 + t * (21.69274 + t * (6.699398 + t))))
        return _re_ratio(num, den)
    u = t * t
    num = t * (36183.31 - u * (3321.9905 - u * (1540.787 - u * (219.0313 - u * (35.76683 - u * (1.320522
                                                                                             - u * 0.56419))))))
    den = 32066.6 - u * (24322.84 - u * (9022.228 - u * (2186.181 - u * (364.2191 - u * (61.57037 - u * (1.841439
                                                                                                      - u))))))
    return np.exp(u.real) * np.cos(u.imag) - _re_ratio(num, den)


@njit(cache=True)
def voigt(x, sigma, gamma):
    """Area-normalised Voigt profile (eV⁻¹) at offset ``x`` (eV): Gaussian σ, Lorentzian HWHM γ (eV)."""
    c = 1.0 / (sigma * np.sqrt(2.0))
    return faddeeva_re(x * c, gamma * c) / (sigma * _SQRT_2PI)


@njit(cache=True)
def xps2_states(delta, v, ufc):
    """2-level final states: (positions ε_j, weights w_j, 4f occupations n_j), eV."""
    f0, f1, u0, u1 = eig2(0.0, np.sqrt(N_F) * v, delta - ufc)
    return np.array([f0, f1]), np.array([u0 * u0, u1 * u1]), np.array([u1 * u1, u0 * u0])


@njit(cache=True)
def xps3_states(delta, v, uff, ufc):
    """3-level final states: (positions ε_j, weights w_j, 4f occupations n_j), eV."""
    eg, g = _ground3(delta, v, uff)
    e0 = np.sqrt(N_F) * v
    e1 = np.sqrt(2.0 * (N_F - 1)) * v
    d1 = delta - ufc
    d2 = 2.0 * delta + uff - 2.0 * ufc
    lam = eigvals3(0.0, d1, d2, e0, e1)
    w = np.empty(3)
    nf = np.empty(3)
    for j in range(3):
        u = eigvec3(lam[j], 0.0, d1, d2, e0, e1)
        o = np.sum(u * g)
        w[j] = o * o
        nf[j] = u[1] * u[1] + 2.0 * u[2] * u[2]
    return lam - eg, w / np.sum(w), nf


@njit(cache=True)
def transmission(e, e_core):
    """Analyser transmission (E_kin/E_kin(E=0))^−n at binding energies ``e`` (eV), E_kin = PHOTON_EV − e_core − E
    (dimensionless, 1 at E = 0). A constant of the window: the likelihood computes it once per dataset."""
    ek0 = PHOTON_EV - e_core
    return ((ek0 - e) / ek0) ** (-TRANSMISSION_N)


@njit(cache=True)
def xps_emission(e, pos, w, nf, gamma, w_mult, shift, k_shirley, so_split):
    """Emitted 3d XPS shape (eV⁻¹) on binding energies ``e`` (eV, ascending, relative to the bare 3d₅/₂ level),
    before the analyser's transmission.

    Each final state j (position ε_j, weight w_j, 4f occupation n_j) gives a 3d₅/₂ line at ε_j + shift and a
    3d₃/₂ line ``so_split`` higher with BRANCHING_32 of its area; both Voigt, Lorentzian HWHM ``gamma`` (core-hole
    lifetime) and Gaussian σ_j² = SIGMA_INSTR_EV² + w_mult²·n_j: ``w_mult`` (eV) stands for the unresolved
    3d⁹4fⁿ multiplet (3d–4f Coulomb and exchange coupling), absent for the closed-shell 3d⁹4f⁰ final state
    and growing with the 4f occupation. The peaks P(E) have unit total area (eV⁻¹). Shirley step:
    ``k_shirley`` (eV⁻¹) × ∫_{−∞}^{E} P, the peak area at lower binding (higher kinetic) energy, whose
    electrons lose energy and appear at higher binding energy (trapezoid on the grid; the area below the
    first channel from the Lorentzian tails)."""
    n = e.size
    peaks = np.zeros(n)
    below = 0.0
    norm = 1.0 / (1.0 + BRANCHING_32)
    g0 = SIGMA_INSTR_EV * SIGMA_INSTR_EV
    for j in range(pos.size):
        sig = np.sqrt(g0 + w_mult * w_mult * nf[j])
        for h in range(2):
            p = pos[j] + shift + h * so_split
            a = w[j] * norm * (BRANCHING_32 if h else 1.0)
            below += a * (0.5 + np.arctan((e[0] - p) / gamma) / np.pi)
            for i in range(n):
                peaks[i] += a * voigt(e[i] - p, sig, gamma)
    out = np.empty(n)
    cum = below
    for i in range(n):
        if i > 0:
            cum += 0.5 * (peaks[i] + peaks[i - 1]) * (e[i] - e[i - 1])
        out[i] = peaks[i] + k_shirley * cum
    return out


@njit(cache=True)
def xps_line_shape(e, pos, w, nf, gamma, w_mult, shift, k_shirley, so_split, e_core):
    """Measured 3d XPS shape (eV⁻¹): :func:`xps_emission` × :func:`transmission`."""
    return transmission(e, e_core) * xps_emission(e, pos, w, nf, gamma, w_mult, shift, k_shirley, so_split)
