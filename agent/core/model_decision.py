"""Posterior model probabilities a stop may decide on after every update (DESIGN §4.3).

With free energies F_m = −log p(data | m) (nats) and equal prior odds, the Bayes factor of the leading
model over the other, B = exp(|ΔF|), is a non-negative martingale under the other model's prior predictive
distribution. Ville's inequality then bounds the chance that it *ever* reaches c, however often it is
looked at: P(sup_n B_n ≥ c) ≤ 1/c. A decision at P(lead) ≥ p, i.e. B ≥ p/(1 − p), is therefore wrong with
probability ≤ (1 − p)/p under the specified models and priors, checked after every sweep or frame.

What that guarantee does not cover is the Monte-Carlo error of ΔF (exchange MC estimates F with an error
bar; each update's fit is a new, independent estimate). At the n-th look |ΔF| is shrunk by z_n·err(ΔF)
with the error rate spent as α_n = mc_alpha·6/(π² n²) (Σ α_n = mc_alpha), so the chance that Monte-Carlo
error ever carries a look over the threshold is ≤ mc_alpha, over any number of looks. A fixed 2σ shrink
spends 2.3 % per look and has no such bound. Total false-decision rate ≤ (1 − p)/p + mc_alpha.

Neither bound covers misspecification: data from a model richer than both candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from scipy import stats

MC_ALPHA = 0.01  #: chance, over all looks, that the Monte-Carlo error of ΔF carries a decision


def look_alpha(look: int, mc_alpha: float = MC_ALPHA) -> float:
    """The Monte-Carlo error rate spent at look ``look`` (1, 2, …): mc_alpha·6/(π² n²)."""
    if int(look) < 1:
        raise ValueError(f"look number must be >= 1, got {look!r}")
    if not 0 < mc_alpha < 1:
        raise ValueError(f"mc_alpha must be in (0, 1), got {mc_alpha!r}")
    return mc_alpha * 6.0 / (np.pi**2 * int(look) ** 2)


@lru_cache(maxsize=1024)
def look_z(look: int, mc_alpha: float = MC_ALPHA) -> float:
    """One-sided normal quantile z_n of ``look_alpha``: 2.5 at the first look, 3.5 at the 5th, 4.2 at the 20th."""
    return float(stats.norm.isf(look_alpha(look, mc_alpha)))


def model_probabilities(free_energies: Mapping[str, float], errors: Mapping[str, float], look: int = 1,
                        mc_alpha: float = MC_ALPHA) -> dict[str, float]:
    """P(m) ∝ exp(−F_m) for two models (equal prior odds), |ΔF| shrunk by z_n·err(ΔF) at look ``look`` (the
    number of decisions made on this data so far, this one included; 1 for a single decision): the
    probabilities ``ModelDecided`` may stop on after every update (module docstring)."""
    if len(free_energies) != 2:
        raise ValueError(f"a model decision is between two models, got {len(free_energies)}")
    (m1, f1), (m2, f2) = free_energies.items()
    err = float(np.hypot(errors[m1], errors[m2]))
    gap = max(abs(f1 - f2) - look_z(look, mc_alpha) * err, 0.0)
    p_lead = 1.0 / (1.0 + np.exp(-gap))
    lead, other = (m1, m2) if f1 <= f2 else (m2, m1)
    return {lead: float(p_lead), other: float(1.0 - p_lead)}
