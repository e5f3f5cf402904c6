"""Form factors for the SAXS posterior: sasmodels curves precomputed once on a lattice uniform in ln(qR).

Both candidate models are scale-free at a fixed volume fraction φ: I(q; R, u) = φ·R³·G(qR; u) (cm⁻¹, R in
nm), R the outer radius and u the shape parameter (the sphere's polydispersity; the core-shell's core
fraction). sasmodels returns scale·(Δρ)²·⟨V²P⟩/⟨V⟩·1e-4 cm⁻¹ with scale = volume fraction, so with the
stated SLDs the linear amplitude of the posterior is the volume fraction φ and G is tabulated once at
R_ref = 1 nm: G(x; u) = I_sasmodels(q = x/R_ref; R_ref, u, scale=1, background=0) / R_ref³.

The table lives on ln x_i = LNX0 + i·LN_STEP. If the reduction's q bins are uniform in ln q with a step
that is a multiple m of LN_STEP and the radii lie on the lattice ln R_j = LNX0 − ln q_0 + j·LN_STEP, then
x(q_f, R_j) = x_{m·f + j}: a model curve is an exact table lookup, no interpolation in x. Only u is
interpolated (4-point Lagrange cubic between table nodes).

- sphere: sasmodels ``sphere`` with Schulz polydispersity (radius_pd_type="schulz", sasmodels' default
  35-point quadrature over ±3σ), u = pd ∈ [0, 0.3].
- core_shell: sasmodels ``core_shell_sphere`` (monodisperse curves, core radius ρR, shell (1 − ρ)R),
  made polydisperse self-similarly (core and shell scaled together, Schulz in the overall size s with
  relative std ``pd``, number-weighted, volume-fraction normalised: G_pd(x) = Σ w_s s⁶ G(xs) / Σ w_s s³),
  a convolution in ln x done by FFT; u = ρ = core radius / outer radius ∈ [0.2, 0.95], pd stated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammaln

LN_STEP = 5e-4  # ln x lattice step: radii on the lattice are 0.05 % apart
LNX0 = float(np.log(1e-2))  # smallest tabulated x = qR
LNX1 = float(np.log(3e3))  # largest
N_X = int(np.floor((LNX1 - LNX0) / LN_STEP)) + 1
PD_N, PD_NSIGMA = 35, 3.0  # sasmodels' GUI defaults for the polydispersity quadrature
SLD = {"silica": 18.8, "water": 9.47, "pmma": 10.8}  # 1e-6 Å⁻², X-ray (ρ_e·r_e; PMMA 1.18 g/cm³)


def lattice_x() -> np.ndarray:
    """The table's x = qR values (dimensionless)."""
    return np.exp(LNX0 + LN_STEP * np.arange(N_X))


def schulz_weights(pd: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(ln s, w): a Schulz number distribution of the relative size s (mean 1, relative std ``pd``) sampled
    at ln s = k·``step`` over ±6 std, weights w ∝ pdf(s)·s (d s = s d ln s), summing to 1."""
    z = 1.0 / pd**2 - 1.0
    half = int(np.ceil(6.0 * pd / step)) + 1
    ln_s = step * np.arange(-half, half + 1)
    s = np.exp(ln_s)
    log_pdf = (z + 1) * np.log(z + 1) + z * np.log(s) - (z + 1) * s - gammaln(z + 1)
    w = np.exp(log_pdf + ln_s)
    return ln_s, w / w.sum()


@dataclass(frozen=True)
class FormFactorTable:
    """G(x_i; u_k) on the ln-x lattice (rows: u nodes ``u_nodes``; cm⁻¹ per volume fraction at R = 1 nm)."""

    name: str
    shape_param: str
    u_nodes: np.ndarray
    table: np.ndarray

    @property
    def u_range(self) -> tuple[float, float]:
        return float(self.u_nodes[0]), float(self.u_nodes[-1])

    def u_weights(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(node indices (n_u, 4), weights (n_u, 4)) of 4-point Lagrange cubic interpolation in u."""
        u = np.asarray(u, dtype=float)
        du = self.u_nodes[1] - self.u_nodes[0]
        t = (u - self.u_nodes[0]) / du
        i0 = np.clip(np.floor(t).astype(int) - 1, 0, len(self.u_nodes) - 4)
        idx = i0[:, None] + np.arange(4)[None, :]
        w = np.stack([np.prod([(t - i0 - j) / (k - j) for j in range(4) if j != k], axis=0)
                      for k in range(4)], axis=1)
        return idx, w

    def curve(self, q_nm: np.ndarray, radius_nm: float, u: float) -> np.ndarray:
        """I(q) (cm⁻¹ per volume fraction) at any q (nm⁻¹), R (nm), u: linear interpolation in ln x (for
        plots and design; the posterior uses exact lattice lookups)."""
        lnx = np.log(np.asarray(q_nm, dtype=float) * radius_nm)
        idx, w = self.u_weights(np.array([u]))
        g = w[0] @ self.table[idx[0]]
        return radius_nm**3 * np.interp(lnx, LNX0 + LN_STEP * np.arange(N_X), g)


def sasmodels_intensity(model: str, q_nm, **pars) -> np.ndarray:
    """Direct sasmodels call: I(q) (cm⁻¹) at q (nm⁻¹) with lengths in nm (converted to sasmodels' Å). A
    ``<p>_pd`` gets ``<p>_pd_n`` = 35 points over ±3σ unless given: sasmodels' call_kernel defaults
    ``_pd_n`` to 0, which silently ignores the polydispersity."""
    from sasmodels.direct_model import call_kernel

    q_nm = np.asarray(q_nm, dtype=float)
    q_a = q_nm.ravel() / 10.0
    pars = {k: (10.0 * v if k in ("radius", "thickness") else v) for k, v in pars.items()}
    for key in [k for k in pars if k.endswith("_pd")]:
        pars.setdefault(f"{key}_n", PD_N)
        pars.setdefault(f"{key}_nsigma", PD_NSIGMA)
    kernel = _load(model).make_kernel([q_a])
    return np.asarray(call_kernel(kernel, {"scale": 1.0, "background": 0.0, **pars}), dtype=float).reshape(q_nm.shape)


@lru_cache(maxsize=4)
def _load(model: str):
    from sasmodels.core import load_model

    return load_model(model)


@lru_cache(maxsize=4)
def sphere_table(sld: float = SLD["silica"], sld_solvent: float = SLD["water"]) -> FormFactorTable:
    """The sphere's G(x; pd) for pd = 0, 0.005, …, 0.30 (sasmodels, Schulz, 35 points over ±3σ)."""
    x = lattice_x()
    u = np.round(np.arange(0.0, 0.3 + 1e-9, 0.005), 10)
    rows = [sasmodels_intensity("sphere", x, radius=1.0, radius_pd=float(pd), radius_pd_type="schulz",
                                sld=sld, sld_solvent=sld_solvent) for pd in u]
    return FormFactorTable("sphere", "pd", u, _readonly(np.array(rows)))


@lru_cache(maxsize=4)
def core_shell_table(pd: float = 0.1, sld_core: float = SLD["silica"], sld_shell: float = SLD["pmma"],
                     sld_solvent: float = SLD["water"]) -> FormFactorTable:
    """The core-shell's G(x; ρ) for ρ = 0.20, 0.225, …, 0.95 at self-similar Schulz polydispersity ``pd``."""
    u = np.round(np.arange(0.2, 0.95 + 1e-9, 0.025), 10)
    ln_s, w = schulz_weights(pd, LN_STEP) if pd > 0 else (np.zeros(1), np.ones(1))
    pad = int(np.abs(ln_s).max() / LN_STEP + 0.5)
    x = np.exp(LNX0 + LN_STEP * np.arange(-pad, N_X + pad))
    kernel = (w * np.exp(6.0 * ln_s))[::-1] / np.sum(w * np.exp(3.0 * ln_s))
    rows = []
    for rho in u:
        mono = sasmodels_intensity("core_shell_sphere", x, radius=float(rho), thickness=float(1.0 - rho),
                                   sld_core=sld_core, sld_shell=sld_shell, sld_solvent=sld_solvent)
        rows.append(fftconvolve(mono, kernel, mode="valid") if pd > 0 else mono)
    return FormFactorTable("core_shell", "core_frac", u, _readonly(np.array(rows)))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
