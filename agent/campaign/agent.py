"""The Curie-temperature campaign agent: one point per finished Compton run, an exact grid posterior of the
analysis model (agent.campaign.model), and the next temperature and target std by experimental design.

Posterior. Each run i gives μs mean yᵢ ± σᵢ (μB) at temperature Tᵢ (K); yᵢ ~ N(M0·g(Tᵢ/T_c; θ), σᵢ² + σ_f²)
with σ_f a model-error floor (μB). θ = (β, γ, h, α) and T_c live on a product grid with a uniform prior
(h log-uniform); M0 has a Gaussian prior and, the model being linear in it, is integrated in closed form
per grid node from the sufficient statistics Σg²/v, Σgy/v, Σy²/v (additive over runs). Exact on the grid,
no sampling; T_c's density is taken piecewise constant over its grid cells (quantiles interpolate).

Design. For every candidate temperature T (K) and target std s (μB) of the next run:
    cost(T, s) = move(T_now → T) + n(s)·cycle_time + overhead     (s of beamtime)
    move = settle + |ΔT|/ramp rate (0 for no change), n(s) = ceil((σ₁/s)²) cycles (std after n cycles σ₁/√n)
    gain(T, s) = Cov(T_c, μ(T))² / (Var μ(T) + σ₁²/n(s) + σ_f²)      (K²)
gain is the expected reduction of Var(T_c) from that measurement in the linear-Gaussian approximation, with
the moments over draws from the current posterior; the choice maximises gain/cost (K² per second). σ₁ (μB,
std of μs after one cycle) is the configured value until runs report their cycles, then the median of
std·√cycles over them. Batches (``suggest(n)``) condition the joint covariance on each choice in turn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from agent.campaign.model import CurveTable
from agent.core.protocol import BayesAgent
from agent.core.stopping import Budget, StopRule, TargetStd, any_of

INTERVAL_LEVELS = (0.68, 0.95)
#: How far (K) a run's measured temperature (the mean readback over its counts) may lie outside ``limits_k``:
#: a run set at the limit reads a little above or below it.
READBACK_TOLERANCE_K = 2.0

DEFAULTS: dict[str, Any] = {
    "tc_range_k": (950.0, 1150.0), "tc_step_k": 1.5,
    "beta_grid": tuple(round(float(x), 4) for x in np.linspace(0.28, 0.46, 13)),
    "gamma_grid": (1.24, 1.32, 1.40),  # 3D Ising, XY, Heisenberg: the universality class is not assumed
    "log10_h_grid": tuple(round(float(x), 4) for x in np.linspace(-3.5, -1.5, 26)),
    "alpha_grid": (1.8, 2.0, 2.2, 2.4),
    "m0_prior_mub": (2.2, 0.5), "model_floor_mub": 0.003, "field_t": 2.0,
    "candidates_k": (300.0, 1200.0, 10.0), "target_stds_mub": (0.01, 0.015, 0.02, 0.03, 0.05),
    "ramp_rate_k_s": 0.2, "settle_time_s": 180.0, "cycle_time_s": 266.0, "sigma1_mub": 0.021,
    "run_overhead_s": 20.0, "start_temperature_k": 295.0, "limits_k": (10.0, 1200.0), "n_draws": 1000,
    "min_cycles": 1, "seed": 0,
}


@lru_cache(maxsize=2)
def _table(betas: tuple, gammas: tuple, log10_hs: tuple, alphas: tuple, tau_max: float) -> CurveTable:
    """One table per grid per process (building it takes ~0.5 s for the default grid)."""
    n_tau = int(math.ceil(tau_max / 0.001)) + 1
    return CurveTable(betas, gammas, 10.0 ** np.asarray(log10_hs), alphas, tau_max=tau_max, n_tau=n_tau)


def temperature_change_s(from_k: float, to_k: float, ramp_rate_k_s: float, settle_time_s: float) -> float:
    """Beamtime (s) of a temperature change: settle + |ΔT|/ramp rate, 0 for none (the ``SimTemperature`` model)."""
    d = abs(float(to_k) - float(from_k))
    return 0.0 if d == 0 else float(settle_time_s) + d / float(ramp_rate_k_s)


class CurieCampaign(BayesAgent):
    """Campaign-level agent for T_c (K) from μs(T) at one field; see the module docstring.

    ``ingest`` points, one per finished run: ``temperature_k`` (K, the mean readback over the run),
    ``mu_s_mean`` and ``mu_s_std`` (μB), ``beamtime_s`` (s, the run's beamtime, temperature change included
    if the caller counts it there), optional ``temperature_change_s`` (s, added to the total), ``cycles``
    (for σ₁), ``field_t`` (T, must equal ``field_t``) and ``_id``. ``suggest(n)``: the next settings
    ``{"temperature_k", "target_std", "_id"}``; the full decision (candidates, scores, chosen setting,
    reason) is in ``decisions`` and ``last_decision``."""

    quantities = ("tc", "beta", "gamma", "log10_h", "alpha", "m0")

    def __init__(self, stop_rule: StopRule, checkpoint_path=None, **settings):
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown campaign settings: {', '.join(sorted(unknown))}")
        super().__init__(stop_rule, checkpoint_path)
        cfg = {**DEFAULTS, **settings}
        self.settings = {k: (list(v) if isinstance(v, tuple | list | np.ndarray) else v) for k, v in cfg.items()}
        lo, hi = map(float, cfg["tc_range_k"])
        step = float(cfg["tc_step_k"])
        if not (0 < lo < hi and step > 0):
            raise ValueError(f"invalid T_c range {cfg['tc_range_k']} K / step {step} K")
        self.tc_grid = np.arange(lo, hi + 0.5 * step, step)
        self.tc_step = step
        self.limits = tuple(map(float, cfg["limits_k"]))
        c_lo, c_hi, c_step = map(float, cfg["candidates_k"])
        self.candidates = np.arange(c_lo, c_hi + 0.5 * c_step, c_step)
        if self.candidates.size == 0 or self.candidates[0] < self.limits[0] or self.candidates[-1] > self.limits[1]:
            raise ValueError(f"candidate temperatures {cfg['candidates_k']} must lie within the limits {self.limits} K")
        self.target_stds = np.asarray(cfg["target_stds_mub"], dtype=float)
        if self.target_stds.size == 0 or np.any(self.target_stds <= 0):
            raise ValueError("target stds must be positive (μB)")
        self.m0_mean, self.m0_sd = map(float, cfg["m0_prior_mub"])
        self.floor = float(cfg["model_floor_mub"])
        self.field_t = float(cfg["field_t"])
        for name in ("ramp_rate_k_s", "cycle_time_s", "sigma1_mub"):
            if not float(cfg[name]) > 0:
                raise ValueError(f"{name} must be positive, got {cfg[name]!r}")
        if not (self.m0_sd > 0 and self.floor >= 0):
            raise ValueError("the M0 prior sd must be positive and the model floor non-negative (μB)")
        tau_max = round(self.limits[1] / (lo - 0.5 * step) * 1.01, 3)  # draws spread T_c over its cells
        self.table = _table(*(tuple(map(float, cfg[k])) for k in ("beta_grid", "gamma_grid", "log10_h_grid",
                                                                  "alpha_grid")), tau_max)
        self.rng = np.random.default_rng(cfg["seed"])
        self.decisions: list[dict[str, Any]] = []
        self.last_decision: dict[str, Any] | None = None
        self._reset()

    # -- settings -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Every setting as JSON values (grids, priors, field T, candidates K, target stds μB, the cost model's
        ramp K/s, settle s, cycle s, σ₁ μB, overhead s, start K, limits K, draws, seed); ``from_config`` with
        the stop rule builds the same agent."""
        return {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in self.settings.items()}

    @classmethod
    def from_config(cls, stop_rule: StopRule, config: Mapping[str, Any]) -> CurieCampaign:
        return cls(stop_rule, **dict(config))

    def _reset(self) -> None:
        shape = (self.table.n_shapes, self.tc_grid.size)
        self._gg, self._gy = np.zeros(shape), np.zeros(shape)
        self._yy = 0.0
        self.runs: list[dict[str, float]] = []
        self.beamtime_s = 0.0
        self.temperature_k = float(self.settings["start_temperature_k"])
        self._post: dict[str, np.ndarray] | None = None

    # -- ingest ---------------------------------------------------------------------------------------
    def _ingest_one(self, point: Mapping) -> None:
        t = float(point["temperature_k"])
        y, s = float(point["mu_s_mean"]), float(point["mu_s_std"])
        if not (np.isfinite(t) and np.isfinite(y) and np.isfinite(s) and s > 0):
            raise ValueError(f"a run needs a finite temperature, μs mean and positive std, got {dict(point)}")
        if not self.limits[0] - READBACK_TOLERANCE_K <= t <= self.limits[1] + READBACK_TOLERANCE_K:
            raise ValueError(f"run temperature {t} K outside the limits {self.limits} K")
        field = point.get("field_t")
        if field is not None and abs(abs(float(field)) - self.field_t) > 1e-3:
            raise ValueError(f"run at {field} T: this campaign's model is for {self.field_t} T")
        cycles = point.get("cycles")
        run = {"temperature_k": t, "mu_s_mean": y, "mu_s_std": s, "beamtime_s": float(point.get("beamtime_s", 0.0)),
               "temperature_change_s": float(point.get("temperature_change_s", 0.0)),
               "cycles": float(cycles) if cycles is not None else math.nan}
        self._add(run)
        self.runs.append(run)
        self.beamtime_s += run["beamtime_s"] + run["temperature_change_s"]
        self.temperature_k = t
        self._post = None

    def _add(self, run: Mapping[str, float]) -> None:
        g = self.table(run["temperature_k"] / self.tc_grid)  # (shapes, T_c)
        v = run["mu_s_std"] ** 2 + self.floor**2
        self._gg += g * g / v
        self._gy += g * (run["mu_s_mean"] / v)
        self._yy += run["mu_s_mean"] ** 2 / v

    @property
    def sigma1(self) -> float:
        """Std of μs after one Compton cycle (μB): the median of std·√cycles over the runs, else configured."""
        est = [r["mu_s_std"] * math.sqrt(r["cycles"]) for r in self.runs if r["cycles"] == r["cycles"]
               and r["cycles"] > 0]
        return float(np.median(est)) if est else float(self.settings["sigma1_mub"])

    # -- posterior ---------------------------------------------------------------------------------------
    def _posterior(self) -> dict[str, np.ndarray]:
        if self._post is None:
            prec0 = 1.0 / self.m0_sd**2
            prec = self._gg + prec0
            b = self._gy + self.m0_mean * prec0
            logw = 0.5 * b * b / prec - 0.5 * np.log(prec / prec0)
            logw -= logw.max()
            w = np.exp(logw)
            w /= w.sum()
            self._post = {"w": w, "m0_mean": b / prec, "m0_var": 1.0 / prec}
        return self._post

    def log_evidence(self) -> float:
        """log p(data) (nats) under the grid prior, including the Gaussian normalisations."""
        prec0 = 1.0 / self.m0_sd**2
        prec = self._gg + prec0
        b = self._gy + self.m0_mean * prec0
        node = 0.5 * b * b / prec - 0.5 * np.log(prec / prec0)
        v = np.array([r["mu_s_std"] ** 2 + self.floor**2 for r in self.runs])
        const = -0.5 * self._yy - 0.5 * self.m0_mean**2 * prec0 - 0.5 * float(np.sum(np.log(2 * np.pi * v)))
        top = node.max()
        return float(top + np.log(np.mean(np.exp(node - top))) + const)

    def tc_marginal(self) -> np.ndarray:
        """Posterior probability of each T_c grid cell (sums to 1), on ``tc_grid`` (K)."""
        return self._posterior()["w"].sum(axis=0)

    def _shape_marginals(self) -> dict[str, tuple[float, float]]:
        w = self._posterior()["w"].sum(axis=1)
        t = self.table
        out = {}
        for q, values in (("beta", t.beta), ("gamma", t.gamma), ("log10_h", np.log10(t.h)), ("alpha", t.alpha)):
            mean = float(w @ values)
            out[q] = (mean, float(np.sqrt(max(w @ (values - mean) ** 2, 0.0))))
        return out

    def _tc_quantiles(self, probs: Sequence[float]) -> np.ndarray:
        p = self.tc_marginal()
        edges = np.concatenate([[self.tc_grid[0] - 0.5 * self.tc_step], self.tc_grid + 0.5 * self.tc_step])
        cdf = np.concatenate([[0.0], np.cumsum(p)])
        return np.interp(probs, cdf, edges)

    def posterior(self) -> dict[str, Any]:
        """T_c grid (K) and its cell probabilities, (mean, std) of every quantity, the log evidence (nats)."""
        rep = self.report()
        return {"tc_grid": self.tc_grid.copy(), "tc_prob": self.tc_marginal(),
                **{q: (rep[f"{q}_mean"], rep[f"{q}_std"]) for q in self.quantities},
                "log_evidence": self.log_evidence()}

    def _summary(self) -> dict[str, Any]:
        post = self._posterior()
        p = post["w"].sum(axis=0)
        mean = float(p @ self.tc_grid)
        var = float(p @ (self.tc_grid - mean) ** 2) + self.tc_step**2 / 12.0
        rep: dict[str, Any] = {"runs": len(self.runs), "points": len(self.runs), "beamtime_s": self.beamtime_s,
                               "temperature_k": self.temperature_k, "sigma1_mub": self.sigma1,
                               "tc_mean": mean, "tc_std": math.sqrt(var)}
        probs = [x for lv in INTERVAL_LEVELS for x in ((1 - lv) / 2, (1 + lv) / 2)]
        q = self._tc_quantiles(probs)
        for j, lv in enumerate(INTERVAL_LEVELS):
            rep[f"tc_lo{round(100 * lv)}"], rep[f"tc_hi{round(100 * lv)}"] = float(q[2 * j]), float(q[2 * j + 1])
        rep["tc_edge_prob"] = float(p[0] + p[-1])  # mass piling up at the grid's ends: the prior range is too narrow
        for k, (m, s) in self._shape_marginals().items():
            rep[f"{k}_mean"], rep[f"{k}_std"] = m, s
        w = post["w"]
        m0 = float(np.sum(w * post["m0_mean"]))
        rep["m0_mean"] = m0
        rep["m0_std"] = float(np.sqrt(max(np.sum(w * (post["m0_var"] + post["m0_mean"] ** 2)) - m0**2, 0.0)))
        return rep

    # -- design ---------------------------------------------------------------------------------------------
    def draws(self, n: int | None = None) -> dict[str, np.ndarray]:
        """``n`` draws from the posterior: T_c (K, uniform within its cell), shape index, M0 (μB)."""
        n = int(n or self.settings["n_draws"])
        post = self._posterior()
        flat = post["w"].ravel()
        idx = self.rng.choice(flat.size, size=n, p=flat)
        shape, tc_i = np.unravel_index(idx, post["w"].shape)
        tc = self.tc_grid[tc_i] + self.tc_step * (self.rng.random(n) - 0.5)
        m0 = post["m0_mean"].ravel()[idx] + np.sqrt(post["m0_var"].ravel()[idx]) * self.rng.standard_normal(n)
        return {"tc": tc, "shape": shape, "m0": m0}

    def predict(self, temperatures_k, draws: Mapping[str, np.ndarray]) -> np.ndarray:
        """μs (μB) of each draw (rows) at ``temperatures_k`` (columns)."""
        t = np.asarray(temperatures_k, dtype=float)
        tau = t[None, :] / draws["tc"][:, None]
        return draws["m0"][:, None] * self.table(tau, draws["shape"][:, None])

    def cycles_for(self, target_std) -> np.ndarray:
        """Cycles (integer ≥ min_cycles) for a run to reach ``target_std`` (μB): ceil((σ₁/target)²)."""
        n = np.ceil((self.sigma1 / np.asarray(target_std, dtype=float)) ** 2 - 1e-9)
        return np.maximum(n, int(self.settings["min_cycles"]))

    def cost_s(self, from_k: float, temperatures_k, target_stds) -> np.ndarray:
        """Beamtime (s) of a run at each temperature (rows) and target std (columns), from ``from_k``."""
        s = self.settings
        move = np.array([temperature_change_s(from_k, t, s["ramp_rate_k_s"], s["settle_time_s"])
                         for t in np.asarray(temperatures_k, dtype=float)])
        count = self.cycles_for(target_stds) * float(s["cycle_time_s"]) + float(s["run_overhead_s"])
        return move[:, None] + count[None, :]

    def decide(self, num_points: int = 1) -> list[dict[str, Any]]:
        """The next ``num_points`` runs by design (module docstring); each decision lists the candidates
        (temperature K, target std μB), their expected gain (K²), cost (s) and score (K²/s), the chosen
        setting and the reason, as flat JSON-ready values."""
        d = self.draws()
        x = np.column_stack([d["tc"], self.predict(self.candidates, d)])
        x -= x.mean(axis=0)
        x /= math.sqrt(x.shape[0] - 1)
        # The joint covariance of (T_c, μ(candidates)): only its first row and diagonal for one point.
        cov = x.T @ x if num_points > 1 else None
        n_cyc = self.cycles_for(self.target_stds)
        noise = self.sigma1**2 / n_cyc + self.floor**2
        here = self.temperature_k
        out = []
        for _ in range(int(num_points)):
            if cov is None:
                f = x[:, 1:]
                c, var_f, var_now = f.T @ x[:, 0], np.einsum("ij,ij->j", f, f), float(x[:, 0] @ x[:, 0])
            else:
                c, var_f, var_now = cov[0, 1:], np.diag(cov)[1:], float(cov[0, 0])
            gain = c[:, None] ** 2 / (var_f[:, None] + noise[None, :])
            cost = self.cost_s(here, self.candidates, self.target_stds)
            score = gain / cost
            i, j = np.unravel_index(int(np.argmax(score)), score.shape)
            after = math.sqrt(max(var_now - gain[i, j], 0.0))
            temp, target = float(self.candidates[i]), float(self.target_stds[j])
            move = temperature_change_s(here, temp, self.settings["ramp_rate_k_s"], self.settings["settle_time_s"])
            reason = (f"largest expected reduction of var(T_c) per second of beamtime: {gain[i, j]:.3g} K² in "
                      f"{cost[i, j]:.0f} s ({move:.0f} s temperature change + {int(n_cyc[j])} cycles) at "
                      f"{temp:.0f} K to ±{target:g} μB; std(T_c) {math.sqrt(var_now):.2f} → {after:.2f} K expected")
            decision = {
                "decision": len(self.decisions) + 1, "runs": len(self.runs), "temperature_k": temp,
                "target_std": target, "expected_cycles": int(n_cyc[j]), "expected_cost_s": float(cost[i, j]),
                "expected_gain_k2": float(gain[i, j]), "expected_tc_std_after": after, "tc_std_now": math.sqrt(var_now),
                "from_temperature_k": here, "sigma1_mub": self.sigma1, "reason": reason,
                "candidate_temperature_k": np.repeat(self.candidates, self.target_stds.size).tolist(),
                "candidate_target_std": np.tile(self.target_stds, self.candidates.size).tolist(),
                "gain_k2": gain.ravel().tolist(), "cost_s": cost.ravel().tolist(), "score": score.ravel().tolist(),
            }
            out.append(decision)
            self.decisions.append(decision)
            # Condition the joint (T_c, μ(candidates)) covariance on this measurement for the next of the batch.
            if cov is not None:
                k = i + 1
                cov = cov - np.outer(cov[:, k], cov[k, :]) / (cov[k, k] + noise[j])
            here = temp
        self.last_decision = out[-1]
        return out

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """bluesky-adaptive ``suggest``: ``[{"temperature_k": K, "target_std": μB, "_id": n}, ...]``."""
        return [{"temperature_k": d["temperature_k"], "target_std": d["target_std"], "_id": d["decision"]}
                for d in self.decide(num_points)]

    # -- checkpoint -------------------------------------------------------------------------------------------
    def state(self):
        keys = ("temperature_k", "mu_s_mean", "mu_s_std", "beamtime_s", "temperature_change_s", "cycles")
        arrays = {k: np.array([r[k] for r in self.runs], dtype=float) for k in keys}
        return arrays, {"start_temperature_k": self.settings["start_temperature_k"], "decisions": len(self.decisions)}

    def load_state(self, arrays, meta):
        self._reset()
        for row in zip(*(arrays[k] for k in ("temperature_k", "mu_s_mean", "mu_s_std", "beamtime_s",
                                             "temperature_change_s", "cycles")), strict=True):
            t, y, s, bt, move, cyc = map(float, row)
            run = {"temperature_k": t, "mu_s_mean": y, "mu_s_std": s, "beamtime_s": bt, "temperature_change_s": move,
                   "cycles": cyc}
            self._add(run)
            self.runs.append(run)
            self.beamtime_s += bt + move
            self.temperature_k = t


def curie_campaign(target_std_k: float = 5.0, max_runs: int | None = 40, max_beamtime_s: float | None = None,
                   **settings) -> CurieCampaign:
    """The default campaign: stop when std(T_c) ≤ ``target_std_k`` (K), after ``max_runs`` runs or
    ``max_beamtime_s`` seconds of beamtime; ``settings`` as ``DEFAULTS`` (``CurieCampaign.config``)."""
    rules: list[StopRule] = [TargetStd("tc", target_std_k)]
    if max_runs is not None or max_beamtime_s is not None:
        rules.append(Budget(runs=max_runs, beamtime_s=max_beamtime_s))
    return CurieCampaign(any_of(*rules), **settings)
