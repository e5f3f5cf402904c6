"""3d XPS sweep agent: Hamiltonian selection between 2- and 3-level cluster models (DESIGN §4.3).

After every analyser sweep the accumulated counts are fitted with both cluster models by exchange
Monte Carlo; each model's free energy F (nats) gives posterior model probabilities
P(m) ∝ exp(−F_m) (equal prior odds). ``model_prob_max`` is computed from |ΔF| − z_n·err(ΔF) at the
n-th sweep (agent.core.model_decision), so that a decision checked after every sweep is wrong with
probability ≤ (1 − p)/p + 1 % under the two models, Monte-Carlo error of F included. The reported parameters
``<q>_mean/_std/_lo95/_hi95`` (eV) are those of the leading model; U_ff is NaN while the 2-level
model leads (it has none). ``delta_f`` = Δ − U_fc (eV), the final-state charge-transfer energy, is
derived from the samples: the 2-level model (pure f⁰ initial state) fixes only Δ_f and V, not Δ and
U_fc separately, so the default stop targets are on Δ_f and V, identifiable in both models.

Two analyses (``analysis``):

* ``"poisson"`` (default): the Poisson likelihood of the counts under the measured line shape (3d₃/₂ partner, Voigt,
  multiplet width, Shirley step from the model's peaks, transmission, charging shift), the intensity scale and
  background sampled as parameters with fixed log-uniform priors (agent.xps.likelihood, where every prior is
  stated); F includes them. ``element`` ("Ce", "La") sets the spin-orbit splitting. About 10⁶ likelihood
  evaluations per model and sweep (≈ 45 temperatures × 10 parameters, 4–6 µs each on 138 channels): measured
  6 / 11 s (2- / 3-level) per fit on 138 channels and 10 / 19 s on 276 on an idle 2-core machine, about the
  beamtime of one 276-channel sweep at 0.1 s per channel.
* ``"0.1"`` (the release-0.1 analysis the stored runs were decided with, and the analysis of checkpoints that
  name none): the seed's line shape on the narrow window of the simulated SimElectronAnalyser.

Sweep consistency (both analyses): after each sweep, a test that the K sweeps share one expected
spectrum against a smooth drift with the sweep index (:func:`sweep_consistency`) gives
``sweep_consistency_p``, its p-value: small when the sample changes across sweeps (e.g. beam-induced
Ce⁴⁺→Ce³⁺ reduction), which accumulating the sweeps assumes it does not. It is reported; the stop rule does not use it.

Likelihood of the 0.1 analysis: Gaussian on the accumulated counts with σ² = (counts averaged over ±0.2 eV) + 1,
the local mean, so that downward fluctuations get no extra weight (Neyman's χ², σ² = counts, is
biased low); an unknown intensity scale and flat background are marginalised analytically
(agent.core.nonlinear ``linear="scale+offset"``, uniform priors a ∈ [0, 3·Σy·ΔE], b ∈ [0, max y]:
data-dependent, identical for both models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.stats import chi2

from agent.core.model_decision import model_probabilities
from agent.core.nonlinear import Dataset, Param, Posterior, fit
from agent.core.protocol import BayesAgent
from agent.core.stopping import Budget, ModelDecided, StopRule, TargetStd, all_of, any_of
from agent.xps.cluster_models import CLUSTER_PRIORS, SPIN_ORBIT_EV, XPS2_PARAMS, XPS3_PARAMS, xps2, xps3
from agent.xps.likelihood import (
    POISSON_PARAMS,
    POISSON_PRIORS,
    expected_counts,
    fit_poisson,
    poisson_args,
)

MODELS = {"2-level": (xps2, XPS2_PARAMS), "3-level": (xps3, XPS3_PARAMS)}

XPS_PRIORS = CLUSTER_PRIORS  #: the cluster parameters' priors (eV), agent.xps.cluster_models

SMOOTH_EV = 0.4  # width (eV) of the running mean that estimates the count variance
SAMPLER_DEFAULTS = {"n_sweeps": 800, "n_burn": 400, "n_runs": 2}
ANALYSES = ("poisson", "0.1")  # the default first


def xps_dataset(energies, counts, model: str) -> Dataset:
    """Dataset of accumulated ``counts`` at binding energies ``energies`` (eV) for ``model``."""
    f, names = MODELS[model]
    e = np.asarray(energies, dtype=float)
    y = np.asarray(counts, dtype=float)
    if y.shape != e.shape:
        raise ValueError(f"counts shape {y.shape} does not match energies {e.shape}")
    if not np.all(np.isfinite(y)) or np.any(y < 0):
        raise ValueError("counts must be finite and >= 0")
    step = float(np.mean(np.abs(np.diff(e)))) if e.size > 1 else 1.0
    width = max(1, int(round(SMOOTH_EV / step))) | 1
    variance = uniform_filter1d(y, width, mode="nearest") + 1.0
    return Dataset(f, e, y, np.sqrt(variance), names, name=model, linear="scale+offset",
                   scale_max=3.0 * max(y.sum(), 1.0) * step, offset_range=(0.0, max(y.max(), 1.0)))


def fit_xps(energies, counts, model: str, priors: Mapping[str, Param] = XPS_PRIORS, **sampler) -> Posterior:
    """Posterior of one cluster ``model`` ("2-level"/"3-level") given accumulated counts."""
    ds = xps_dataset(energies, counts, model)
    return fit([priors[n] for n in ds.params], ds, **{**SAMPLER_DEFAULTS, **sampler})


def _with_delta_f(post: Posterior) -> dict[str, float]:
    """``post.summary()`` plus ``delta_f_mean/_std/_lo95/_hi95`` of Δ_f = Δ − U_fc (eV)."""
    out = post.summary()
    d = post.samples[:, post.names.index("delta")] - post.samples[:, post.names.index("U_fc")]
    out.update(delta_f_mean=float(d.mean()), delta_f_std=float(d.std(ddof=1)),
               delta_f_lo95=float(np.quantile(d, 0.025)), delta_f_hi95=float(np.quantile(d, 0.975)))
    return out


TREND_WIDTH_EV = 1.0  # σ (eV) of the smooth bumps the sweep-trend test projects on (≈ a line's width)


def sweep_consistency(sweeps: np.ndarray, energies: np.ndarray) -> float:
    """p-value of the test that the sweeps (K, N_ch) share one expected spectrum, against a drift linear in
    the sweep index that is smooth in energy; NaN for K < 2. Per channel z_i = Σ_k (k − k̄) y_ik / √(ȳ_i Σ_k
    (k − k̄)²), N(0, 1) under a constant Poisson spectrum; projected on Gaussian bumps (σ TREND_WIDTH_EV, every
    1.5σ, orthonormalised) q = Bᵀz, and |q|² is χ² with rank(B) degrees of freedom."""
    y = np.asarray(sweeps, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2:
        return float("nan")
    e = np.asarray(energies, dtype=float)
    mean = y.mean(axis=0)
    keep = mean > 0
    k = np.arange(y.shape[0]) - 0.5 * (y.shape[0] - 1)
    z = (k @ y[:, keep]) / np.sqrt(mean[keep] * np.sum(k * k))
    centres = np.arange(e.min(), e.max() + 1e-9, 1.5 * TREND_WIDTH_EV)
    bumps = np.exp(-0.5 * ((e[keep, None] - centres[None, :]) / TREND_WIDTH_EV) ** 2)
    q, r = np.linalg.qr(bumps)
    q = q[:, np.abs(np.diag(r)) > 1e-8 * np.abs(r).max()]
    proj = q.T @ z
    return float(chi2.sf(float(proj @ proj), q.shape[1]))


def default_stop_rule(p: float = 0.99, targets: Mapping[str, float] | None = None) -> StopRule:
    """``all_of(ModelDecided(p), TargetStd(q, t) for each target)``; targets in eV
    (default std(Δ_f) ≤ 0.1, std(V) ≤ 0.01)."""
    targets = {"delta_f": 0.1, "V": 0.01} if targets is None else targets
    return all_of(ModelDecided(p), *(TargetStd(q, t) for q, t in targets.items()))


class XPSAgent(BayesAgent):
    """Repeated 3d XPS sweeps; posterior and free energy of the 2- and 3-level models after each.

    ``ingest`` points: ``counts`` (one sweep, per channel), ``energies`` (binding energies, eV;
    the same every sweep), optional ``beamtime_s`` (beamtime at the end of the sweep, s), ``_id``.
    ``analysis``: "0.1" or "poisson" (module docstring); ``element``: the spin-orbit splitting of "poisson";
    ``priors``: the "poisson" priors (default agent.xps.likelihood.POISSON_PRIORS).
    """

    quantities = ("delta", "V", "U_ff", "U_fc", "gamma", "delta_f")

    def __init__(self, stop_rule: StopRule | None = None, seed: int = 0, checkpoint_path=None,
                 analysis: str = "poisson", element: str = "Ce", priors: Mapping[str, Param] | None = None, **sampler):
        super().__init__(stop_rule or default_stop_rule(), checkpoint_path)
        if analysis not in ANALYSES:
            raise ValueError(f"analysis must be one of {ANALYSES}, got {analysis!r}")
        if element not in SPIN_ORBIT_EV:
            raise ValueError(f"element must be one of {sorted(SPIN_ORBIT_EV)}, got {element!r}")
        self.analysis, self.element = analysis, element
        self.priors = dict(POISSON_PRIORS if priors is None else priors)
        self.seed = int(seed)
        self.sampler = {**SAMPLER_DEFAULTS, **sampler}
        self.energies: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.sweep_counts: list[np.ndarray] = []
        self.sweeps = 0
        self.beamtime_s = 0.0
        self.posteriors: dict[str, Posterior] = {}

    def _ingest_one(self, point: Mapping) -> None:
        counts = np.asarray(point["counts"], dtype=float)
        energies = np.asarray(point["energies"], dtype=float)
        if counts.shape != energies.shape or not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("sweep counts must be finite, >= 0 and match the energies")
        if self.energies is None:
            self.energies, self.counts = energies.copy(), np.zeros_like(energies)
        elif energies.shape != self.energies.shape or not np.allclose(energies, self.energies):
            raise ValueError("sweep energies differ from the first sweep's")
        self.counts += counts
        self.sweep_counts.append(counts.copy())
        self.sweeps += 1
        self.beamtime_s = float(point.get("beamtime_s", self.beamtime_s))
        self._update()

    def _update(self) -> None:
        for i, model in enumerate(MODELS):
            seed = self.seed + 2 * self.sweeps + i
            if self.analysis == "poisson":
                self.posteriors[model] = fit_poisson(self.energies, self.counts, model, self.sweeps, self.element,
                                                     self.priors, seed=seed, **self.sampler)
            else:
                self.posteriors[model] = fit_xps(self.energies, self.counts, model, seed=seed, **self.sampler)

    def model_probabilities(self) -> dict[str, float]:
        f = {m: p.free_energy for m, p in self.posteriors.items()}
        err = {m: p.free_energy_err for m, p in self.posteriors.items()}
        return model_probabilities(f, err, look=max(self.sweeps, 1))

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """The next settings: simply more sweeps of the same window."""
        return [{"sweep": self.sweeps + i + 1, "_id": self.sweeps + i + 1} for i in range(num_points)]

    def posterior(self) -> dict[str, Any]:
        return {"models": dict(self.posteriors), "probabilities": self.model_probabilities()}

    def _summary(self) -> Mapping[str, Any]:
        """Always the same keys (NaN and model_best "none" before the first sweep), so that the
        run's ``posterior`` stream keeps one schema."""
        nan = float("nan")
        out: dict[str, Any] = {"sweeps": self.sweeps, "cycles": self.sweeps, "beamtime_s": self.beamtime_s,
                               "model_best": "none", "model_prob_max": nan}
        probs = self.model_probabilities() if self.posteriors else {}
        if probs:
            best = max(probs, key=probs.get)
            out.update(model_best=best, model_prob_max=probs[best])
        for m in MODELS:
            tag = m.replace("-", "")
            post = self.posteriors.get(m)
            out[f"F_{tag}"] = post.free_energy if post else nan
            out[f"F_{tag}_err"] = post.free_energy_err if post else nan
            out[f"p_{tag}"] = probs.get(m, nan)
            out[f"rhat_max_{tag}"] = post.summary()["rhat_max"] if post else nan
        out["dF_3level_minus_2level"] = out["F_3level"] - out["F_2level"]
        out["sweep_consistency_p"] = sweep_consistency(self.sweep_counts, self.energies)
        summ = _with_delta_f(self.posteriors[out["model_best"]]) if probs else {}
        for q in self.quantities:
            for s in ("mean", "std", "lo95", "hi95"):
                out[f"{q}_{s}"] = summ.get(f"{q}_{s}", nan)
        return out

    def fitted_spectrum(self, model: str | None = None) -> np.ndarray:
        """Accumulated-count prediction of ``model`` (default: the leading one) at the posterior-mean θ̄:
        "poisson": μ(θ̄); "0.1": a·I(E; θ̄) + b, a, b the weighted least-squares scale and background."""
        model = model or self.report()["model_best"]
        post = self.posteriors[model]
        if self.analysis == "poisson":
            theta = np.array([post.mean[n] for n in POISSON_PARAMS[model]])
            return expected_counts(theta, poisson_args(self.energies, self.counts, model, self.sweeps, self.element))
        f, names = MODELS[model]
        shape = f(np.array([post.mean[n] for n in names]), self.energies)
        w = 1.0 / (self.counts + 1.0)
        design = np.stack([shape, np.ones_like(shape)], axis=1) * np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(design, self.counts * np.sqrt(w), rcond=None)
        return coef[0] * shape + coef[1]

    def config(self) -> dict[str, Any]:
        """The analysis, element, seed and exchange-MC settings (arrays as lists): what decided the run, in its
        start document."""
        sampler = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.sampler.items()}
        return {"analysis": self.analysis, "element": self.element, "seed": self.seed, "sampler": sampler}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {} if self.counts is None else {"energies": self.energies, "counts": self.counts,
                                                 "sweep_counts": np.array(self.sweep_counts)}
        return arrays, {"sweeps": self.sweeps, "beamtime_s": self.beamtime_s, "seed": self.seed,
                        "analysis": self.analysis, "element": self.element}

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.sweeps = int(meta["sweeps"])
        self.beamtime_s = float(meta["beamtime_s"])
        self.seed = int(meta["seed"])
        self.analysis, self.element = meta.get("analysis", "0.1"), meta.get("element", "Ce")
        if "counts" in arrays:
            self.energies = np.asarray(arrays["energies"], float)
            self.counts = np.asarray(arrays["counts"], float)
            self.sweep_counts = list(np.asarray(arrays["sweep_counts"], float)) if "sweep_counts" in arrays else []
            self._update()


def xps_agent(p_model: float = 0.99, target_delta_f: float = 0.1, target_v: float = 0.01, max_sweeps: int = 20,
              seed: int = 0, analysis: str = "poisson", element: str = "Ce", **sampler) -> XPSAgent:
    """The XPS agent a user configures: stop when one model's probability reaches ``p_model`` and
    std(Δ − U_fc), std(V) reach ``target_delta_f``, ``target_v`` (eV), or after ``max_sweeps`` sweeps.
    ``analysis``, ``element``: as XPSAgent; ``sampler``: exchange-MC settings (``n_sweeps``, ``n_burn`` …)."""
    if int(max_sweeps) < 1:
        raise ValueError(f"max_sweeps must be >= 1, got {max_sweeps!r}")
    rule = any_of(default_stop_rule(p_model, {"delta_f": target_delta_f, "V": target_v}), Budget(cycles=max_sweeps))
    return XPSAgent(rule, seed=seed, analysis=analysis, element=element, **sampler)
