"""Bayesian design of the sample/buffer split: which cell's next frame shrinks the watched variance more.

The subtracted data's variance per coarse bin is u_s/t_s + u_b/t_b + e (u = current variance × current
exposure, the counting noise of each cell falling as 1/exposure; e the empty cell's part). The predicted
covariance after a frame of Δt on either cell is the inverse Fisher matrix Jᵀ diag(1/σ²) J of the model
linearised at the posterior's best node (J over R, u, a, b); frames of equal Δt on the two cells are
compared by the predicted posterior variance of the watched parameter (same beamtime, so per second too).
"""

from __future__ import annotations

import numpy as np


def predicted_variance(jac: np.ndarray, u_s, u_b, e, t_s: float, t_b: float, index: int) -> float:
    """Predicted posterior variance of parameter ``index`` with exposures t_s, t_b (s)."""
    var = u_s / t_s + (u_b / t_b if t_b > 0 else 0.0) + e
    fisher = jac.T @ (jac / var[:, None])
    try:
        return float(np.linalg.inv(fisher)[index, index])
    except np.linalg.LinAlgError:
        return float("inf")


def next_cell(jac, u_s, u_b, e, t_s: float, t_b: float, dt: float, index: int = 0) -> tuple[str, dict]:
    """("sample" | "buffer", {predicted variances}) for one more frame of ``dt`` s."""
    v_s = predicted_variance(jac, u_s, u_b, e, t_s + dt, t_b, index)
    v_b = predicted_variance(jac, u_s, u_b, e, t_s, t_b + dt, index)
    return ("sample" if v_s <= v_b else "buffer"), {"sample": v_s, "buffer": v_b}
