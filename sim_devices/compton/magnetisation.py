"""The simulator's truth for the temperature and field dependence of the spin moment, μs(T, B).

Reduced moment m = μs(T, B)/μs(0) with τ = T/T_c and h = B/B₁ solves an Arrott–Noakes-type equation of
state (Arrott & Noakes, PRL 19, 786 (1967)) whose zero-field branch is Kuz'min's interpolation:

    m^{1/β} − τ^{3/2}·(h/m)^{1/γ} = Φ(τ),    Φ(τ) = 1 − s·τ^{3/2} − (1 − s)·τ^p

- Zero field: m = Φ(τ)^β below T_c, 0 above. This is Kuz'min's formula (PRL 94, 107204 (2005)) with the
  exponent 1/3 replaced by β: low T, m ≈ 1 − βs·τ^{3/2} (Bloch's law); near T_c, m ∝ (1 − τ)^β.
- β = 0.3689, γ = 1.3960: the 3D-Heisenberg exponents (Campostrini et al., PRB 65, 144520 (2002)); Fe's
  measured β is ≈ 0.34–0.39. Critical isotherm m ∝ h^{1/δ}, δ = 1 + γ/β; above T_c, m ≈ h/(−Φ)^γ.
- s: Kuz'min fitted s = 0.35 for Fe with the exponent 1/3 and p = 5/2; we keep his Bloch coefficient
  βs/T_c^{3/2} = 3.46e-6 K^-3/2 by taking s = 0.35·(1/3)/β = 0.316, and his p = 5/2.
- T_c = 1043 K (bcc Fe).
- B₁ = 935 T (a model choice): with μs(0) = 2.2 μB it puts the 2 T moment at 1.1 T_c on the Curie–Weiss
  value p_eff²·μB·B/(3k_B(T − T_c)) for p_eff = 3.2 μB (paramagnetic Fe); at T_c, 2 T gives m ≈ 0.28.

Not physical: the factor τ^{3/2} on the field term is a device that switches the field-induced part off as
T → 0 like the spin-wave population (so μs(0, B) = μs(0) exactly, m < 1 and falling with T at every
field); Φ far above T_c decays
faster than Curie–Weiss (the 2 T tail at 1.15 T_c is 0.9 of it); the field is the applied field
(no demagnetisation); one moment per atom, no magnetovolume or structural (α→γ at 1185 K) effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FE_CURIE_K = 1043.0
HEISENBERG_BETA = 0.3689  # Campostrini et al., PRB 65, 144520 (2002)
HEISENBERG_GAMMA = 1.3960
KUZMIN_FE_S = 0.35  # Kuz'min, PRL 94, 107204 (2005), fitted with exponent 1/3 and p = 5/2
KUZMIN_P = 2.5
_BISECTIONS = 56  # on ln m in [-35, ln 2]: width 2^-56 · 36 ≈ 5e-16


@dataclass(frozen=True)
class Magnetisation:
    """μs(T, B)/μs(0) for one ferromagnet (module docstring). Temperatures K, fields T (the sign of B is
    the direction: the moment depends on |B|)."""

    curie_k: float = FE_CURIE_K
    beta: float = HEISENBERG_BETA
    gamma: float = HEISENBERG_GAMMA
    shape_s: float = KUZMIN_FE_S * (1.0 / 3.0) / HEISENBERG_BETA
    shape_p: float = KUZMIN_P
    field_scale_t: float = 935.0

    def __post_init__(self):
        if not (self.curie_k > 0 and 0 < self.beta < 1 and self.gamma > 0 and 0 <= self.shape_s <= 1
                and self.shape_p > 1.5 and self.field_scale_t > 0):
            raise ValueError(f"invalid magnetisation model {self!r}")

    @property
    def bloch_coefficient(self) -> float:
        """B in m = 1 − B·T^{3/2} at low T and zero field (K^-3/2)."""
        return self.beta * self.shape_s / self.curie_k**1.5

    @property
    def delta(self) -> float:
        """Critical-isotherm exponent δ = 1 + γ/β (m ∝ B^{1/δ} at T_c)."""
        return 1.0 + self.gamma / self.beta

    def phi(self, tau) -> np.ndarray:
        """Φ(τ) = 1 − s τ^{3/2} − (1 − s) τ^p: m^{1/β} at zero field below T_c, negative above."""
        tau = np.asarray(tau, dtype=float)
        return 1.0 - self.shape_s * tau**1.5 - (1.0 - self.shape_s) * tau**self.shape_p

    def reduced(self, temperature_k, field_t=0.0) -> np.ndarray:
        """m = μs(T, B)/μs(0) (dimensionless, 0…1), broadcast over ``temperature_k`` (K) and ``field_t`` (T)."""
        tau, h = np.broadcast_arrays(np.maximum(np.asarray(temperature_k, dtype=float), 0.0) / self.curie_k,
                                     np.abs(np.asarray(field_t, dtype=float)) / self.field_scale_t)
        phi = self.phi(tau)
        zero_field = np.maximum(phi, 0.0) ** self.beta
        if not np.any(h > 0):
            return zero_field
        # m^{1/β} − τ^{3/2} (h/m)^{1/γ} − Φ increases with m: bisection on ln m, every element at once.
        lo, hi = np.full(tau.shape, -35.0), np.full(tau.shape, np.log(2.0))
        field_term = tau**1.5 * h ** (1.0 / self.gamma)
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = np.exp(mid / self.beta) - field_term * np.exp(-mid / self.gamma) < phi
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return np.where(field_term > 0, np.exp(0.5 * (lo + hi)), zero_field)

    def spin_moment(self, mu0_mub: float, temperature_k, field_t=0.0) -> np.ndarray:
        """μs(T, B) (μB) for a spin moment ``mu0_mub`` (μB) at T = 0."""
        return float(mu0_mub) * self.reduced(temperature_k, field_t)


FE = Magnetisation()
MODELS = {"Fe": FE}


def magnetisation_model(element: str) -> Magnetisation:
    """The μs(T, B) model of ``element`` (``ValueError`` if there is none; only Fe so far)."""
    try:
        return MODELS[element]
    except KeyError:
        raise ValueError(f"no temperature-dependent magnetisation model for {element!r} "
                         f"(known: {', '.join(sorted(MODELS))})") from None
