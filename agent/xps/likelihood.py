"""Poisson likelihood of accumulated 3d XPS counts under the measured line shape, and its fit (DESIGN §4.3).

Counts y_i of channel i, summed over n sweeps, are Poisson with mean
μ_i = n·[A·δE_i·S(E_i; θ) + b], S the line shape of agent.xps.cluster_models.xps_line_shape (peaks of unit
area, Shirley step, transmission), δE_i the channel width (eV), A the expected peak counts per sweep and
b the flat background per channel per sweep (detector dark counts and the smooth secondary-electron floor).
log L = Σ_i y_i log μ_i − μ_i − log y_i! (nats).

Parameters and priors (all uniform unless said; ranges from seed 002 and the XPS literature):

* Δ ∈ [−2, 16], V ∈ [0.2, 1.5], U_ff ∈ [4, 14] (3-level only), U_fc ∈ [8, 16] eV: the cluster model
  (seed 002: Δ 1.6–12.5, V 0.57–0.76, U_ff 10.5, U_fc 12.5–12.7 for CeO₂, La₂O₃).
* Γ ∈ [0.2, 1.5] eV: Lorentzian HWHM (3d core-hole lifetime plus unresolved final-state broadening).
* w_mult ∈ [0, 2] eV: Gaussian σ per 4f electron of the final state (the unresolved 3d⁹4fⁿ multiplet
  spreads over ≈ 2–5 eV, Thole et al., Phys. Rev. B 32, 5107 (1985)).
* shift ∈ [−3, 3] eV: rigid shift of the binding-energy scale (residual charging of an insulating oxide
  under a flood gun; its reference, e.g. adventitious C 1s, is uncertain by ~1 eV; a nuisance).
* k_sh ∈ [0, 0.3] eV⁻¹: Shirley step per unit peak area (measured Ce 3d steps are 0.05–0.15 eV⁻¹).
* log A, A ∈ [1e2, 1e7] counts per sweep, and log b, b ∈ [1e-2, 1e4] counts per channel per sweep:
  scale-invariant (log-uniform) priors on fixed ranges spanning analysers' count rates (10–1e5 cps at the
  peak) and dwell times (0.01–1 s per channel); fixed, not set from the data, identical for both models.

The free energy F = −log Z therefore includes A, b and every nuisance above.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit
from scipy.special import gammaln

from agent.core.exchange_mc import exchange_mc
from agent.core.nonlinear import Param, Posterior, prior_arrays
from agent.xps.cluster_models import (
    CLUSTER_PRIORS,
    CORE_LEVEL_EV,
    SPIN_ORBIT_EV,
    transmission,
    xps2_states,
    xps3_states,
    xps_emission,
)

NUISANCE = ("gamma", "w_mult", "shift", "k_sh", "log_A", "log_b")
POISSON_PARAMS = {
    "2-level": ("delta", "V", "U_fc", *NUISANCE),
    "3-level": ("delta", "V", "U_ff", "U_fc", *NUISANCE),
}
MODEL_CODE = {"2-level": 2, "3-level": 3}

POISSON_PRIORS = {
    **CLUSTER_PRIORS,
    "w_mult": Param("w_mult", 0.0, 2.0),
    "shift": Param("shift", -3.0, 3.0),
    "k_sh": Param("k_sh", 0.0, 0.3),
    "log_A": Param("log_A", np.log(1e2), np.log(1e7)),
    "log_b": Param("log_b", np.log(1e-2), np.log(1e4)),
}


@njit(cache=True)
def cluster_emission(theta, model, e, so_split):
    """Emitted line shape (eV⁻¹, before the transmission) of ``model`` (2 or 3) at θ laid out as POISSON_PARAMS."""
    if model == 2:
        pos, w, nf = xps2_states(theta[0], theta[1], theta[2])
        k = 3
    else:
        pos, w, nf = xps3_states(theta[0], theta[1], theta[2], theta[3])
        k = 4
    return xps_emission(e, pos, w, nf, theta[k], theta[k + 1], theta[k + 2], theta[k + 3], so_split)


@njit(cache=True)
def expected_counts(theta, args):
    """μ_i (counts) of the accumulated spectrum, n·(A·δE_i·T_i·S_emitted(E_i) + b), for ``args`` of
    :func:`poisson_args` (δE_i·T_i precomputed there, once per dataset)."""
    e, response, _, _, consts = args
    model = int(consts[0])
    k = 3 if model == 2 else 4
    a = np.exp(theta[k + 4])
    b = np.exp(theta[k + 5])
    s = cluster_emission(theta, model, e, consts[2])
    return consts[1] * (a * response * s + b)


@njit(cache=True)
def poisson_loglike(theta, args):
    """Σ y log μ − μ − log y! (nats); args of :func:`poisson_args`: (e, δE·T, y, Σ log y!, (model, n_sweeps,
    so_split))."""
    y, log_fact = args[2], args[3]
    mu = expected_counts(theta, args)
    out = -log_fact
    for i in range(y.size):
        m = mu[i]
        if not m > 0.0:
            return -np.inf
        out += y[i] * np.log(m) - m
    return out


def channel_widths(e: np.ndarray) -> np.ndarray:
    """Width (eV) of each channel of an ascending grid (half the distance to each neighbour)."""
    if e.size == 1:
        return np.ones(1)
    edges = np.concatenate([[1.5 * e[0] - 0.5 * e[1]], 0.5 * (e[1:] + e[:-1]), [1.5 * e[-1] - 0.5 * e[-2]]])
    return np.diff(edges)


def poisson_args(energies, counts, model: str, n_sweeps: int, element: str = "Ce") -> tuple:
    """Arguments of :func:`poisson_loglike` for accumulated ``counts`` over ``n_sweeps`` sweeps."""
    e = np.ascontiguousarray(energies, dtype=float)
    y = np.ascontiguousarray(counts, dtype=float)
    if y.shape != e.shape or e.ndim != 1:
        raise ValueError(f"counts shape {y.shape} does not match energies {e.shape}")
    if not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError("counts must be finite non-negative integers")
    if e.size > 1 and not np.all(np.diff(e) > 0):
        raise ValueError("energies must increase")
    if element not in SPIN_ORBIT_EV:
        raise ValueError(f"element must be one of {sorted(SPIN_ORBIT_EV)}, got {element!r}")
    if int(n_sweeps) < 1:
        raise ValueError(f"n_sweeps must be >= 1, got {n_sweeps!r}")
    consts = np.array([MODEL_CODE[model], int(n_sweeps), SPIN_ORBIT_EV[element]], float)
    response = channel_widths(e) * transmission(e, CORE_LEVEL_EV[element])
    return (e, response, y, float(np.sum(gammaln(y + 1.0))), consts)


def fit_poisson(energies, counts, model: str, sweeps: int = 1, element: str = "Ce",
                priors: Mapping[str, Param] = POISSON_PRIORS, **sampler) -> Posterior:
    """Posterior and free energy of cluster ``model`` ("2-level"/"3-level") for counts accumulated over
    ``sweeps`` sweeps; ``sampler``: keywords of agent.core.exchange_mc.exchange_mc."""
    names = POISSON_PARAMS[model]
    args = poisson_args(energies, counts, model, sweeps, element)
    lo, hi, mu, sd = prior_arrays([priors[n] for n in names])
    return Posterior(names, exchange_mc(poisson_loglike, args, lo, hi, mu, sd, **sampler))
