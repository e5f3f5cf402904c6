"""Continuous (fly) monochromator scans whose speed profile is the design: slow where the quantity of
interest is decided, fast elsewhere (DESIGN §4.2, a sweep as the unit of measurement).

A sweep from ``lo`` to ``hi`` eV counts into bins of ``bin_eV``; bin b (centre E_b) gets dwell d_b = bin/v(E_b),
v_min ≤ v ≤ v_max, and is one measurement of y(E_b) with counting noise var = c_b / d_b
(``CountingNoise.var``: exactly ∝ 1/dwell). The information of a profile, Σ_b d_b h_b h_bᵀ / c_b, is linear
in the dwells, so adding δ seconds to a bin that already has some is an independent second measurement of
variance c_b/δ: the posterior is the same as one measurement of the summed dwell.

Algorithm (``design_sweep``): every bin first gets the floor bin/v_max (it has to be crossed), the
posterior is conditioned on that base at once; then the remaining time is spent in ``increments`` equal
steps δ (a step that would pass a bin's cap bin/v_min gives it only what is left), each on the bin of the
largest exact reduction per second of the criterion (trace Cov(Wμ), W the quantity's
weights, or the design target's trace: ``XASPosterior.functional_gain`` / ``gain_terms``) on the fantasised
posterior. This is the greedy (Wynn–Fedorov vertex-direction) method with a
fixed step: the criterion is convex in the dwells and the step small (≈ 1/increments of the time), so it
lands near the continuous optimum; it is exact at every step (no linearisation of the criterion), which a
multiplicative algorithm would not be for a prior-dominated, box-constrained design, and costs O(K²) per
step in the bins' own space (the covariances H S Hᵀ and W S Hᵀ are kept and rank-1 updated, never S).
The per-bin dwells are then merged into at most ``max_segments`` constant-speed segments of at least
``min_segment_eV`` (optimal least-squares segmentation of the dwell sequence by dynamic programming; each
segment's dwell the mean of its bins, so the sweep time is kept exactly) and the predicted criterion of the
segmented profile is recomputed exactly: a controller takes a few velocity changes per sweep, not 1000.

``FlyXASAgent`` plans one such sweep at a time (always upward: see its doc) and ingests a whole sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg

from agent.core.stopping import Budget, StopRule, TargetStd, leaf_rules
from agent.xas.agent import TargetRMSE, XASAgent, xas_agent
from agent.xas.design import CountingNoise, XASPosterior
from agent.xas.prior import GaussianPrior

FLY_BIN_EV = 0.1
FLY_V_MAX = 20.0  # eV/s
FLY_V_MIN = 0.05  # eV/s
MAX_SEGMENTS = 30
MIN_SEGMENT_EV = 0.5
INCREMENTS = 300
FIRST_SWEEP_S = 20.0  # s of counting in the first sweep (at least twice the fastest crossing)
TARGET_MARGIN = 0.8  # a sweep is sized to reach this fraction of the target variance: a sweep falling just
# short costs another whole one (≈ 11 s fixed: the crossing at top speed and the return), a margin costs less


@dataclass(frozen=True)
class FlyProfile:
    """One designed sweep: bin ``centres`` (eV), ``dwell`` per bin (s, piecewise constant over ``segments``
    [[e0, e1, speed eV/s], ...]), ``sweep_s`` = Σ dwell, the predicted criterion (trace Cov(Wμ) or the
    target's trace) before (``trace0``), after the per-bin greedy profile (``trace_raw``) and after the
    segmented one (``trace``); ``reached``: the greedy stopped early at the target criterion."""

    centres: np.ndarray
    dwell: np.ndarray
    segments: list[list[float]]
    sweep_s: float
    trace0: float
    trace_raw: float
    trace: float
    reached: bool = False


def fly_bins(lo_eV: float, hi_eV: float, bin_eV: float = FLY_BIN_EV) -> np.ndarray:
    """Bin centres (eV) of a sweep ``lo_eV``→``hi_eV`` in ``bin_eV`` bins; ``ValueError`` (one line) for an empty
    or non-finite range or a bin that does not divide it."""
    lo, hi, b = float(lo_eV), float(hi_eV), float(bin_eV)
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(b) and b > 0):
        raise ValueError(f"fly range {lo_eV!r}-{hi_eV!r} eV and bin {bin_eV!r} eV must be finite, bin > 0")
    k = int(round((hi - lo) / b))
    if k < 1 or hi <= lo:
        raise ValueError(f"empty fly range {lo:.3f}-{hi:.3f} eV (bin {b:g} eV): need hi > lo by at least one bin")
    if abs(k * b - (hi - lo)) > 1e-6 * max(1.0, b):
        raise ValueError(f"fly range {lo:.3f}-{hi:.3f} eV is not a whole number of {b:g} eV bins")
    return lo + b * (np.arange(k) + 0.5)


def _check_speeds(v_max: float, v_min: float) -> None:
    if not (np.isfinite(v_max) and np.isfinite(v_min) and 0 < v_min < v_max):
        raise ValueError(f"speeds must satisfy 0 < v_min < v_max eV/s, got v_min={v_min!r}, v_max={v_max!r}")


def _bin_space(post: XASPosterior, weights: np.ndarray | None, centres: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """(Q = H S Hᵀ (K, K), A = L S Hᵀ (r, K), trace L S Lᵀ) for the bins' rows H; L = W's state-space
    weights, or the design target's map [I, T]. Uses the sparsity of H (two grid entries + nuisances)."""
    n, s = post.n, post.S
    j, w = post._locate(centres)
    c1, c2 = post.amp_lin * (1 - w), post.amp_lin * w
    h = post.rows(centres)
    ht = h[:, n:]
    g = s[:, j] * c1 + s[:, j + 1] * c2 + s[:, n:] @ ht.T  # S Hᵀ (N, K)
    q = g[j] * c1[:, None] + g[j + 1] * c2[:, None] + ht @ g[n:]
    q = 0.5 * (q + q.T)
    if weights is None:
        a = g[:n] + post.T @ g[n:]
        tr = float(post.target_var.sum())
    else:
        lw = post.mu_weights(weights)
        a = lw @ g
        tr = float(np.trace(post.functional_moments(weights)[1]))
    return q, a, tr


def _condition(q: np.ndarray, a: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(Q, A, reduction of the trace) after measuring every bin once with noise variances ``var``."""
    c = linalg.cho_factor(q + np.diag(var), lower=True)
    qa = linalg.cho_solve(c, np.hstack([q, a.T]))
    k = q.shape[0]
    red = float(np.einsum("ij,ji->", a, qa[:, k:]))
    return q - q @ qa[:, :k], a - a @ qa[:, :k], red


def profile_trace(post: XASPosterior, noise: CountingNoise, weights: np.ndarray | None, centres: np.ndarray,
                  dwell: np.ndarray) -> float:
    """Predicted criterion (trace Cov(Wμ), or the target's trace) of ``post`` after one sweep of ``dwell`` (s)
    per bin at ``centres`` (eV), noise from the posterior mean absorbance."""
    q, a, tr = _bin_space(post, weights, centres)
    c = noise.var(np.interp(centres, post.energy, post.y_pred()), 1.0)
    return tr - _condition(q, a, c / np.asarray(dwell, float))[2]


def segment(dwell: np.ndarray, max_segments: int = MAX_SEGMENTS, min_bins: int = 1) -> np.ndarray:
    """Boundaries (bin indices, 0 … K) of the least-squares best piecewise-constant fit of ``dwell`` with at
    most ``max_segments`` segments of at least ``min_bins`` bins (dynamic programming, O(S K²))."""
    d = np.asarray(dwell, float)
    k = d.size
    m = max(1, min(int(min_bins), k))
    s_max = max(1, min(int(max_segments), k // m))
    c1 = np.concatenate([[0.0], np.cumsum(d)])
    c2 = np.concatenate([[0.0], np.cumsum(d * d)])
    i, j = np.arange(k + 1)[:, None], np.arange(k + 1)[None, :]
    length = j - i
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = c2[None, :] - c2[:, None] - (c1[None, :] - c1[:, None]) ** 2 / length
    sse = np.where(length >= m, np.maximum(sse, 0.0), np.inf)
    cost = sse[0].copy()  # one segment 0..j
    back = [np.zeros(k + 1, int)]
    best_cost, best_s = cost[k], 1
    for _ in range(2, s_max + 1):
        tot = cost[:, None] + sse
        arg = np.argmin(tot, axis=0)
        cost = tot[arg, np.arange(k + 1)]
        back.append(arg)
        if cost[k] < best_cost - 1e-15 * max(1.0, best_cost):
            best_cost, best_s = cost[k], len(back)
    bounds, end = [k], k
    for s in range(best_s - 1, 0, -1):
        end = int(back[s][end])
        bounds.append(end)
    return np.array([0] + bounds[::-1])


def design_sweep(post: XASPosterior, noise: CountingNoise, weights: np.ndarray | None, sweep_s: float,
                 lo_eV: float, hi_eV: float, bin_eV: float = FLY_BIN_EV, v_max_eV_s: float = FLY_V_MAX,
                 v_min_eV_s: float = FLY_V_MIN, *, max_segments: int | None = MAX_SEGMENTS,
                 min_segment_eV: float = MIN_SEGMENT_EV, increments: int = INCREMENTS,
                 target_trace: float | None = None) -> FlyProfile:
    """The designed sweep (module doc) of at most ``sweep_s`` seconds of counting; with ``target_trace`` the
    greedy stops as soon as the predicted criterion reaches it (a shorter sweep). ``max_segments`` None: the
    per-bin greedy profile unsegmented. ``ValueError`` (one line) for an empty range, bad speeds, or a
    ``sweep_s`` outside [K bin/v_max, K bin/v_min]."""
    _check_speeds(float(v_max_eV_s), float(v_min_eV_s))
    centres = fly_bins(lo_eV, hi_eV, bin_eV)
    b, k = float(bin_eV), centres.size
    d_min, d_max = b / float(v_max_eV_s), b / float(v_min_eV_s)
    t_min, t_max = k * d_min, k * d_max
    if not (np.isfinite(sweep_s) and t_min * (1 - 1e-9) <= sweep_s <= t_max * (1 + 1e-9)):
        raise ValueError(f"sweep time {sweep_s!r} s outside [{t_min:.4g}, {t_max:.4g}] s for {k} bins of {b:g} eV "
                         f"at {v_min_eV_s:g}-{v_max_eV_s:g} eV/s")
    if int(increments) < 1:
        raise ValueError(f"increments must be >= 1, got {increments!r}")
    q, a, tr0 = _bin_space(post, weights, centres)
    c = noise.var(np.interp(centres, post.energy, post.y_pred()), 1.0)  # var at 1 s; var(d) = c / d
    q, a, red = _condition(q, a, c / d_min)
    tr = tr0 - red
    dwell = np.full(k, d_min)
    extra = max(0.0, float(sweep_s) - t_min)
    reached = target_trace is not None and tr <= target_trace
    if extra > 0 and not reached:
        step, left = extra / int(increments), extra
        num = np.einsum("ij,ij->j", a, a)
        while left > 1e-9 * extra:  # at most ``increments`` + K steps: a step either is whole or caps its bin
            room = np.minimum(min(step, left), d_max - dwell)
            ok = room > 1e-12 * d_max
            if not ok.any():
                break
            delta = np.where(ok, room, 1.0)
            v = c / delta
            score = np.where(ok, num / (np.diag(q) + v) / delta, -np.inf)  # reduction per second of dwell
            j = int(np.argmax(score))
            s = q[j, j] + v[j]
            qj, aj = q[:, j].copy(), a[:, j].copy()
            q -= np.outer(qj, qj / s)
            a -= np.outer(aj, qj / s)
            num = np.einsum("ij,ij->j", a, a)
            tr -= float(aj @ aj) / s
            dwell[j] += delta[j]
            left -= delta[j]
            if target_trace is not None and tr <= target_trace:
                reached = True
                break
    trace_raw = tr
    if max_segments is None:
        seg_dwell = dwell
        bounds = np.flatnonzero(np.r_[True, np.diff(dwell) != 0, True])
        trace = trace_raw
    else:
        bounds = segment(dwell, max_segments, int(round(float(min_segment_eV) / b)))
        seg_dwell = np.empty(k)
        for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True):
            seg_dwell[i0:i1] = dwell[i0:i1].mean()
        seg_dwell = np.clip(seg_dwell, d_min, d_max)
        trace = profile_trace(post, noise, weights, centres, seg_dwell)
    lo = float(lo_eV)
    segments = [[lo + b * int(i0), lo + b * int(i1), b / float(seg_dwell[i0])]
                for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True)]
    return FlyProfile(centres, seg_dwell, segments, float(seg_dwell.sum()), tr0, trace_raw, trace, bool(reached))


def fly_profile(post: XASPosterior, noise: CountingNoise, weights: np.ndarray | None, sweep_s: float,
                lo_eV: float, hi_eV: float, bin_eV: float = FLY_BIN_EV, v_max_eV_s: float = FLY_V_MAX,
                v_min_eV_s: float = FLY_V_MIN, **options) -> np.ndarray:
    """Per-bin dwell (s, Σ = ``sweep_s``, each ≥ bin/v_max, ≤ bin/v_min, piecewise constant in ≤ 30
    segments) of one continuous sweep ``lo_eV``→``hi_eV`` that maximises the expected reduction of trace
    Cov(Wμ) (``weights`` W (q, n) on the grid; None: the design target's trace); ``design_sweep`` for the
    segments and predicted criteria, and ``options``."""
    return design_sweep(post, noise, weights, sweep_s, lo_eV, hi_eV, bin_eV, v_max_eV_s, v_min_eV_s,
                        **options).dwell


def segment_dwell(segments, bin_eV: float = FLY_BIN_EV) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres eV, dwell s per bin) of contiguous segments [[e0, e1, speed eV/s], ...]; ``ValueError``
    (one line) for gaps, empty or non-monotonic segments or non-positive speeds."""
    segs = np.asarray(segments, float).reshape(-1, 3) if len(segments) else np.zeros((0, 3))
    if segs.shape[0] == 0:
        raise ValueError("a sweep needs at least one segment [e0, e1, speed eV/s]")
    if not np.all(np.isfinite(segs)) or np.any(segs[:, 2] <= 0):
        raise ValueError("segment energies must be finite and speeds > 0 eV/s")
    if np.any(np.abs(segs[1:, 0] - segs[:-1, 1]) > 1e-6):
        raise ValueError("segments must be contiguous (each starts where the previous one ends)")
    centres, dwell = [], []
    for e0, e1, v in segs:
        lo, hi = min(e0, e1), max(e0, e1)
        c = fly_bins(lo, hi, bin_eV)
        centres.append(c if e1 > e0 else c[::-1])
        dwell.append(np.full(c.size, float(bin_eV) / v))
    centres, dwell = np.concatenate(centres), np.concatenate(dwell)
    if not (np.all(np.diff(centres) > 0) or np.all(np.diff(centres) < 0)):
        raise ValueError("segments must all run the same way")
    return centres, dwell


class FlyXASAgent(XASAgent):
    """XAS by continuous sweeps whose speed profile is designed (``design_sweep``) on the current posterior.

    ``suggest()`` → ``[{"start": eV, "stop": eV, "segments": [[e0, e1, speed eV/s], ...], "bin_eV": b,
    "dwell_s": sweep s, "_id": k}]``; ``ingest([{"_id", "energies": bin centres eV, "i0", "it", "dwell": s
    [, "problems": [str per bin]]}])``: one whole sweep, bins with a problem (a feeder's reason), non-finite or
    non-positive counts (or dwell, or energy off the grid) skipped and registered as failures.
    Sweeps always run upward over ``energy_limits``: a return move costs ~(hi−lo)/slew + settle (≈ 5.6 s for
    105 eV at 20 eV/s), but every bin is approached from below, so the monochromator's backlash and the
    crystals' lash (invisible in the readback) never bias a downward sweep's energies; for an edge position
    aimed at 0.05 eV that is worth more than the return. Beamtime of a sweep = Σ dwell + the move to its start
    (``MoveCost``: settle, travel, backlash on the way down), at least one settle.
    Sweep time grows geometrically: the first ``first_sweep_s`` s, each next one ``growth`` × the beamtime
    so far, but never longer than the greedy needs to reach the stop target (TargetStd of the quantity, less
    its floor, or TargetRMSE; scaled by the excess of the reported std over the design's, when the posterior
    draws see more spread than the linearisation), so the design re-plans from real data and the last sweep
    is not oversized.
    Data are stored aggregated per bin energy (precision-weighted: exact for the linear-Gaussian model), so a
    re-solve costs O(K³) with K bins, however many sweeps; the model is refitted (``adapt``) after each sweep.
    ``report`` adds ``sweeps`` (= ``cycles``, for ``Budget(cycles=…)``), ``bins`` (ingested) and ``sweep_s``
    (the last sweep's counting time, s); ``next_dwell`` is the next sweep's planned counting time (s)."""

    def __init__(self, prior: GaussianPrior, stop_rule: StopRule, *, bin_eV: float = FLY_BIN_EV,
                 v_max_eV_s: float = FLY_V_MAX, v_min_eV_s: float = FLY_V_MIN, first_sweep_s: float = FIRST_SWEEP_S,
                 growth: float = 1.0, max_segments: int = MAX_SEGMENTS, min_segment_eV: float = MIN_SEGMENT_EV,
                 increments: int = INCREMENTS, **kwargs):
        super().__init__(prior, stop_rule, **kwargs)
        _check_speeds(float(v_max_eV_s), float(v_min_eV_s))
        if not (first_sweep_s > 0 and growth > 0 and int(max_segments) >= 1 and int(increments) >= 1):
            raise ValueError("first_sweep_s and growth must be > 0, max_segments and increments >= 1")
        lo, hi = self.energy_limits
        self.bin_eV, self.v_max, self.v_min = float(bin_eV), float(v_max_eV_s), float(v_min_eV_s)
        self.fly_range = (lo, lo + self.bin_eV * int(np.floor((hi - lo) / self.bin_eV + 1e-9)))
        self.centres = fly_bins(*self.fly_range, self.bin_eV)
        self.first_sweep_s, self.growth = float(first_sweep_s), float(growth)
        self.max_segments, self.min_segment_eV = int(max_segments), float(min_segment_eV)
        self.increments = int(increments)
        self.sweeps, self.bins, self.last_sweep_s = 0, 0, float("nan")
        self.last_profile: FlyProfile | None = None
        self._sweeps: dict[int, FlyProfile] = {}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "bin_eV": self.bin_eV, "v_max_eV_s": self.v_max, "v_min_eV_s": self.v_min,
                "first_sweep_s": self.first_sweep_s, "growth": self.growth, "max_segments": self.max_segments,
                "min_segment_eV": self.min_segment_eV, "increments": self.increments}

    def target_trace(self, weights: np.ndarray | None) -> float | None:
        """The criterion at which the stop target is predicted reached (None: no std/RMSE target)."""
        if self.quantity is not None and weights is not None:
            t = self.quantity_target()
            if t is None:
                return None
            return max(t**2 - float(np.max(self.quantity.floor_std)) ** 2, 0.0)
        rmse = [r.target for r in leaf_rules(self.stop_rule) if isinstance(r, TargetRMSE)]
        return self.post.n * min(rmse) ** 2 if rmse and self.quantity is None else None

    def plan(self) -> FlyProfile:
        """The next sweep's profile (module doc), without suggesting it."""
        k = self.centres.size
        t_min, t_max = k * self.bin_eV / self.v_max, k * self.bin_eV / self.v_min
        want = self.first_sweep_s if self.sweeps == 0 else self.growth * self.beamtime_s
        sweep_s = float(np.clip(want, t_min, t_max))
        weights = self.quantity_weights()
        target = self.target_trace(weights)
        if target is not None and self.quantity is not None and self.history:
            # the stop judges the reported std (for a nonlinear quantity checked against posterior draws, which
            # may see two candidate edges the linearisation does not): scale the design's target by its excess
            q = self.quantity
            std = self.history[-1].get("fractions_std" if q.name == "fractions" else f"{q.name}_std", np.nan)
            now = float(np.trace(self.post.functional_moments(weights)[1]))
            excess = (std**2 - float(np.max(q.floor_std)) ** 2) / now if now > 0 else np.nan
            target = target / max(1.0, excess) if np.isfinite(excess) else None
        return design_sweep(self.post, self.noise, weights, sweep_s, *self.fly_range, self.bin_eV, self.v_max,
                            self.v_min, max_segments=self.max_segments, min_segment_eV=self.min_segment_eV,
                            increments=self.increments, target_trace=None if target is None else TARGET_MARGIN * target)

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """One sweep (``num_points`` is ignored beyond 1: the next sweep is planned from its data)."""
        prof = self.plan()
        self.last_profile = prof
        sid = self._next_id
        self._next_id += 1
        self._sweeps[sid] = prof
        lo, hi = self.fly_range
        self._last = {"next_energy": lo, "next_dwell": prof.sweep_s, "next_score": 0.0}
        return [{"start": lo, "stop": hi, "segments": [list(map(float, s)) for s in prof.segments],
                 "bin_eV": self.bin_eV, "dwell_s": prof.sweep_s, "_id": sid}]

    def _ingest_one(self, sweep: Mapping) -> None:
        e = np.asarray(sweep["energies"], float).ravel()
        i0, it = np.asarray(sweep["i0"], float).ravel(), np.asarray(sweep["it"], float).ravel()
        dwell = np.broadcast_to(np.asarray(sweep.get("dwell", np.nan), float), e.shape).ravel()
        if not (i0.shape == it.shape == e.shape):
            raise ValueError(f"a sweep needs as many i0, it as energies, got {i0.size}, {it.size}, {e.size}")
        g = self.post.energy
        ok = (np.isfinite(e) & (e >= g[0] - 1e-6) & (e <= g[-1] + 1e-6) & np.isfinite(i0) & np.isfinite(it)
              & (i0 > 0) & (it > 0) & np.isfinite(dwell) & (dwell > 0))
        problems = list(sweep.get("problems") or [""] * e.size)
        if len(problems) != e.size:
            raise ValueError(f"a sweep's problems must name each of its {e.size} bins, got {len(problems)}")
        ok &= np.array([not p for p in problems], bool)
        sid = sweep.get("_id")
        for k in np.flatnonzero(~ok):
            self.failures.append({"_id": sid, "energy": float(e[k]), "i0": float(i0[k]), "it": float(it[k]),
                                  "dwell": float(dwell[k]),
                                  "reason": problems[k] or "bin counts, dwell or energy not usable"})
        prof = self._sweeps.pop(sid, None)
        lo, hi = (self.fly_range if prof is None else (float(prof.centres[0] - self.bin_eV / 2),
                                                       float(prof.centres[-1] + self.bin_eV / 2)))
        if prof is None and np.isfinite(e).any():
            lo, hi = float(np.nanmin(e)) - self.bin_eV / 2, float(np.nanmax(e)) + self.bin_eV / 2
        move = float(self.cost.time(self.current_eV, lo)) if self.current_eV is not None else 0.0
        self.beamtime_s += float(np.nansum(np.where(np.isfinite(dwell), dwell, 0.0))) + max(move, self.cost.settle_s)
        self.current_eV = hi
        self.sweeps += 1
        self.last_sweep_s = float(np.nansum(np.where(np.isfinite(dwell), dwell, 0.0)))
        if not ok.any():
            return
        y = np.log(i0[ok] / it[ok])
        var = self.noise.gain * (1.0 / i0[ok] + 1.0 / it[ok])
        self._add_data(e[ok], y, var)
        self.dwells.extend(map(float, dwell[ok]))
        self.bins += int(ok.sum())
        if self.adapt and len(self.post.data_e) >= 10:
            self.refit()
        else:
            self.post.resolve()

    def _add_data(self, e: np.ndarray, y: np.ndarray, var: np.ndarray) -> None:
        """Merge measurements into the posterior's data, one precision-weighted entry per energy (1e-4 eV)."""
        p = self.post
        all_e = np.concatenate([np.asarray(p.data_e, float), e])
        all_w = np.concatenate([1.0 / np.asarray(p.data_var, float), 1.0 / var])
        all_y = np.concatenate([np.asarray(p.data_y, float), y])
        key, inv = np.unique(np.round(all_e, 4), return_inverse=True)
        w = np.bincount(inv, all_w)
        p.data_e = [float(x) for x in np.bincount(inv, all_w * all_e) / w]
        p.data_y = [float(x) for x in np.bincount(inv, all_w * all_y) / w]
        p.data_var = [float(x) for x in 1.0 / w]

    def _summary(self) -> dict[str, float]:
        return {**super()._summary(), "sweeps": self.sweeps, "cycles": self.sweeps, "bins": self.bins,
                "sweep_s": self.last_sweep_s}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().state()
        return arrays, {**meta, "sweeps": self.sweeps, "bins": self.bins}

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        super().load_state(arrays, meta)
        self.sweeps, self.bins = int(meta.get("sweeps", 0)), int(meta.get("bins", 0))


def fly_xas_agent(prior: GaussianPrior | str | None = None, target_rmse: float | None = None,
                  stop_rule: StopRule | None = None, exclude: str | None = None, max_sweeps: int | None = 30,
                  quantity=None, target_std: float | None = None, components=None, **kwargs) -> FlyXASAgent:
    """A ``FlyXASAgent`` built as ``agent.xas.xas_agent`` builds an ``XASAgent`` (prior, quantity, targets, the
    same one-line errors), stopping also after ``max_sweeps`` sweeps (``Budget(cycles=…)``) instead of a
    point budget. ``kwargs``: ``FlyXASAgent`` / ``XASAgent`` settings."""
    rules = [r for r in (stop_rule, Budget(cycles=int(max_sweeps)) if max_sweeps is not None else None)
             if r is not None]
    base = xas_agent(prior, target_rmse, None, exclude, 10**12, quantity, target_std, components,
                     strategy="sweep", adapt=False)
    leaves = [r for r in leaf_rules(base.stop_rule) if isinstance(r, (TargetRMSE, TargetStd))]
    from agent.core.stopping import any_of

    return FlyXASAgent(base.post.prior0, any_of(*leaves, *rules) if leaves or rules else Budget(cycles=30),
                       quantity=base.quantity, **kwargs)
