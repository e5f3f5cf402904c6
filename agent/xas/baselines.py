"""The scans a beamline runs without an agent, and the beamtime each needs to reach a target std of the
same quantity under the same model (moves and settles included), so an adaptive run is judged against
what is really done.

Each ``Scan`` is a set of energies (eV) with relative dwells; its beamtime at dwell scale f is
``time(f)``. Step scans pay settle + |ΔE|/speed per point (``MoveCost``) in one upward sweep; the fly
scan moves at constant speed through the window, counting into 0.1 eV bins (one settle, no stops),
its speed chosen so the target is just reached. ``beamtime_to`` bisects on f with the posterior's model
(its linearisation, prior scale and noise), the data of the run itself ignored: the scan measured
from scratch on the sample the run found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.xas.design import CountingNoise, MoveCost, XASPosterior, greedy_batch, scan_time

BMM_E0_EV = 7109.5  # Fe foil's first inflection on the library's (uncalibrated) axis


@dataclass(frozen=True)
class Scan:
    """``energies`` (eV, in measuring order), ``dwell`` (s per point at scale 1), ``fly``: a continuous
    scan (beamtime = the sweep at the speed that gives that dwell per bin, plus one settle)."""

    name: str
    energies: np.ndarray
    dwell: np.ndarray
    fly: bool = False

    def time(self, scale: float, cost: MoveCost) -> float:
        """Beamtime (s) at dwell ``scale``."""
        d = self.dwell * scale
        if self.fly:
            return float(d.sum() + cost.settle_s)
        return scan_time(self.energies, d, cost)


def _step(lo: float, hi: float, step: float) -> np.ndarray:
    return np.arange(lo, hi - 1e-9, step)


def step_scans(grid: np.ndarray) -> list[Scan]:
    """The step recipes over the window of ``grid`` (eV): uniform 0.25 eV, the region recipe
    2 / 0.25 / 1 eV and the BMM recipe (NSLS-II BMM's XANES defaults inside this window: 2 eV to
    E0 − 10, 0.3 eV to E0 + 15.5, then 1 eV), 1 s per point at scale 1."""
    lo, hi = float(grid[0]), float(grid[-1])
    e0 = BMM_E0_EV
    recipes = {
        "uniform 0.25 eV": _step(lo, hi + 1e-6, 0.25),
        "region 2/0.25/1 eV": np.concatenate([_step(lo, 7106.0, 2.0), _step(7106.0, 7136.0, 0.25),
                                              _step(7136.0, hi + 1e-6, 1.0)]),
        "BMM 2/0.3/1 eV": np.concatenate([_step(lo, e0 - 10, 2.0), _step(e0 - 10, e0 + 15.5, 0.3),
                                          _step(e0 + 15.5, hi + 1e-6, 1.0)]),
    }
    return [Scan(k, e[(e >= lo) & (e <= hi)], np.ones(np.sum((e >= lo) & (e <= hi)))) for k, e in recipes.items()]


def fly_scan(grid: np.ndarray, bin_eV: float = 0.1) -> Scan:
    """Constant-speed scan over the window of ``grid``, counting into ``bin_eV`` bins (dwell per bin
    = bin / speed; 1 s per bin at scale 1)."""
    e = _step(float(grid[0]) + bin_eV / 2, float(grid[-1]), bin_eV)
    return Scan("fly (constant speed)", e, np.ones(e.size), fly=True)


def offline_design(post: XASPosterior, noise: CountingNoise, picks: int, name: str,
                   weights: np.ndarray | None = None, dwell_s: float = 1.0) -> Scan:
    """The greedy design of ``picks`` dwells of ``dwell_s`` computed before the run from ``post``
    (``weights``: for a quantity's Jacobian fixed at the prior mean; none: the whole spectrum), as the
    sorted scan it makes (a point picked n times counts n dwells)."""
    energies, _ = greedy_batch(post, noise, picks, dwell_s, weights)
    scan, repeats = np.unique(np.round(energies, 6), return_counts=True)
    return Scan(name, scan, repeats * float(dwell_s))


def predicted_std(post: XASPosterior, noise: CountingNoise, scan: Scan, scale: float,
                  weights: np.ndarray | None, floor: float = 0.0) -> float:
    """Predicted std of the quantity (largest component; with ``weights`` None: the target spectrum's
    RMSE) after ``scan`` at dwell ``scale``, from the prior of ``post``'s model."""
    y = np.interp(scan.energies, post.energy, post.y_pred())
    var = noise.var(y, scan.dwell * scale)
    if weights is None:
        return post.design_rmse(scan.energies, var)
    cov = post.design_functional_cov(weights, scan.energies, var)
    return float(np.sqrt(np.max(np.clip(np.diag(cov), 0, None)) + floor**2))


def beamtime_to(post: XASPosterior, noise: CountingNoise, cost: MoveCost, scan: Scan, target: float,
                weights: np.ndarray | None = None, floor: float = 0.0, max_scale: float = 1e4
                ) -> tuple[float, float]:
    """(dwell scale, beamtime s) for ``scan`` to reach ``target`` (see ``predicted_std``) by bisection
    in log scale (20 steps: 0.1 % of the scale); (inf, inf) if even ``max_scale`` does not reach it."""
    if predicted_std(post, noise, scan, max_scale, weights, floor) > target:
        return np.inf, np.inf
    lo, hi = np.log(1e-4), np.log(max_scale)
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if predicted_std(post, noise, scan, np.exp(mid), weights, floor) > target else (lo, mid)
    return float(np.exp(hi)), scan.time(float(np.exp(hi)), cost)
