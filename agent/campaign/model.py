"""The campaign's analysis model of the spin moment against temperature at a fixed field (numpy only).

    μs(T) = M0 · g(T/T_c),    g^{1/β} − (h/g)^{1/γ} = 1 − τ^α,    τ = T/T_c

an Arrott–Noakes equation of state (Arrott & Noakes, PRL 19, 786 (1967)) with the simplest zero-field
branch g = (1 − τ^α)^β: M0 (μB) the moment at T → 0, T_c (K) the zero-field Curie temperature, β the
critical exponent, α the shape of the fall below T_c (no separate Bloch term), h the reduced field, which
rounds the transition and gives the moment above T_c (g ≈ h/(τ^α − 1)^γ there), γ the susceptibility
exponent. At one field h is a free parameter; nothing else is known about it.

This is deliberately not the simulator's model (sim_devices/compton/magnetisation.py: Kuz'min's two-term
zero-field curve, a field term that vanishes at T → 0, fixed exponents); the campaign has to cope with the
difference. A piecewise power law M0(1 − T/T_c)^β + constant tail cannot: at 2 T the field rounds Fe's
transition over tens of kelvin; fitted to 13 noiseless points of the simulator's curve (300–1200 K, weighted
as ±0.02 μB) it gives χ² ≈ 240 and T_c 5 K high, and a power law with a smooth rounding puts T_c 10–15 K high.
"""

from __future__ import annotations

import numpy as np

_BISECTIONS = 56


def curve(tau, beta, gamma, h, alpha) -> np.ndarray:
    """g(τ) by direct root finding (bisection on ln g), broadcast over all arguments. The reference the
    table (``CurveTable``) is checked against; slow, for tests and brute-force integration."""
    tau, beta, gamma, h, alpha = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (tau, beta, gamma, h,
                                                                                              alpha)))
    rhs = 1.0 - np.maximum(tau, 0.0) ** alpha
    field = h ** (1.0 / gamma)
    lo, hi = np.full(tau.shape, -40.0), np.full(tau.shape, np.log(2.0))
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        below = np.exp(mid / beta) - field * np.exp(-mid / gamma) < rhs
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.exp(0.5 * (lo + hi))


class CurveTable:
    """g(τ) on a uniform τ grid [0, ``tau_max``] (``n_tau`` points) for every shape of the product grid
    ``betas`` × ``gammas`` × ``hs`` × ``alphas`` (flattened in that order, C order), built once from the
    explicit inverse τ(g) = (1 − g^{1/β} + (h/g)^{1/γ})^{1/α} (monotone), so no root finding per shape."""

    def __init__(self, betas, gammas, hs, alphas, tau_max: float = 1.4, n_tau: int = 1401):
        axes = [np.asarray(a, dtype=float).ravel() for a in (betas, gammas, hs, alphas)]
        if any(a.size == 0 for a in axes) or not (np.all(axes[0] > 0) and np.all(axes[0] < 1)
                                                  and np.all(axes[1] > 0) and np.all(axes[2] > 0)
                                                  and np.all(axes[3] > 0)):
            raise ValueError("shape grids must be non-empty with 0 < β < 1 and γ, h, α > 0")
        self.axes = axes
        mesh = np.meshgrid(*axes, indexing="ij")
        self.beta, self.gamma, self.h, self.alpha = (m.ravel() for m in mesh)
        self.tau_max, self.n_tau = float(tau_max), int(n_tau)
        self.dtau = self.tau_max / (self.n_tau - 1)
        self.tau = np.linspace(0.0, self.tau_max, self.n_tau)
        self.values = self._build()

    @property
    def n_shapes(self) -> int:
        return self.beta.size

    def _build(self) -> np.ndarray:
        beta, gamma, h, alpha = (a[:, None] for a in (self.beta, self.gamma, self.h, self.alpha))
        g_max = curve(0.0, beta, gamma, h, alpha)  # the moment at τ = 0 (slightly above 1 in a field)
        u = np.unique(np.concatenate([np.geomspace(1e-7, 0.5, 1500), 1.0 - np.geomspace(1e-10, 0.5, 2500)]))
        out = np.empty((self.n_shapes, self.n_tau), dtype=np.float32)  # interpolation error ~3e-4 ≫ float32's
        for start in range(0, self.n_shapes, 512):
            sl = slice(start, start + 512)
            g = g_max[sl] * u[None, :]
            bracket = 1.0 - g ** (1.0 / beta[sl]) + (h[sl] / g) ** (1.0 / gamma[sl])
            tau_of_g = np.maximum(bracket, 0.0) ** (1.0 / alpha[sl])
            for i, k in enumerate(range(sl.start, min(sl.stop, self.n_shapes))):
                out[k] = np.interp(self.tau, tau_of_g[i, ::-1], g[i, ::-1])
        return out

    def __call__(self, tau, shapes=None) -> np.ndarray:
        """g at ``tau`` (linear interpolation in the table). ``shapes`` None: every shape, result
        (n_shapes, *tau.shape); else an index array broadcast against ``tau``. τ beyond ``tau_max`` raises."""
        tau = np.asarray(tau, dtype=float)
        if np.any(tau < 0) or np.any(tau > self.tau_max):
            raise ValueError(f"reduced temperature outside the table [0, {self.tau_max:g}]")
        x = tau / self.dtau
        i0 = np.minimum(x.astype(np.int64), self.n_tau - 2)
        w = x - i0
        if shapes is None:
            return self.values[:, i0] * (1.0 - w) + self.values[:, i0 + 1] * w
        return self.values[shapes, i0] * (1.0 - w) + self.values[shapes, i0 + 1] * w
