"""XPS model-decision stop under checking after every sweep (issue 16): false-decision rate over ambiguous
simulated runs, sweeps to decision, against the earlier fixed-2σ allowance and no allowance.

Protocol (fixed before any result was looked at; nothing is tuned afterwards)
-----------------------------------------------------------------------------
- Truths are the two candidate models themselves (the setting in which the stop's guarantee is stated):
  draw k = 0, 1, … uses ``default_rng([seed, k])``; even k the 3-level model, odd k the 2-level model, every
  parameter drawn from its prior in ``agent.xps.agent.XPS_PRIORS``; the sample's default count rates
  (``sim_devices.xps.samples.XPSSample``), the default window, ``--dwell`` s per channel (default 0.01 s,
  a tenth of the simulated analyser's 0.1 s, so that ambiguous truths are common: at 0.1 s, 2 of 24
  screened draws were).
- Ambiguous (the issue's definition: expected |ΔF| ≤ 1 nat per sweep): both models fitted (``fit_xps``, a
  short sampler: 200 sweeps, 100 burn-in, 1 run, seed 0) to the expected counts of 10 sweeps rounded to
  integers; |ΔF|/10 ≤ 1 nat keeps the truth. Draws continue until ``--runs`` truths are kept, both models
  as drawn (``--max-draws`` caps the screening; the number screened is printed).
- Each kept truth is run as the agent runs: Poisson sweeps (``default_rng([seed, k, 1])``), after every
  sweep both models refitted by ``XPSAgent`` (its default sampler) and the decision checked, up to
  ``--max-sweeps`` sweeps. The stop is ``ModelDecided(p)`` alone (``--p``, default 0.99, the agent's), so that the model
  decision is what ends a run. A decision for the model that did not generate the data is false.
- From the same free-energy histories, the earlier allowance (|ΔF| − 2·err at every look) and none (|ΔF|)
  are evaluated as well: same data, same fits.
- Reported per rule: false decisions / runs with the Clopper–Pearson 95 % upper bound, decided and
  undecided fractions, median sweeps to a decision; target from the issue: false ≤ 5 %. Wall time counts
  screening and compilation.

``--analysis poisson`` (the same protocol for the Poisson analysis, agent.xps.likelihood; fixed before it was run):

- Truths are the two Poisson candidates: parameters of ``POISSON_PARAMS[model]`` drawn from ``POISSON_PRIORS``
  (the cluster parameters, Γ, multiplet width, charging shift, Shirley step, and the log-uniform peak counts
  per sweep A ∈ [1e2, 1e7] and background b ∈ [1e-2, 1e4] per channel per sweep, so the count level is part of
  the draw and ``--dwell`` does not apply); element Ce; the window −25…+30 eV in 0.4 eV channels (138).
- Screening: both models (``fit_poisson``, the same short sampler) on the 10-sweep expected counts rounded to
  integers; the same 1 nat/sweep cut. Runs: Poisson sweeps of the truth's expected counts per sweep,
  ``XPSAgent(ModelDecided(p), analysis="poisson")`` with its default sampler; the rest as above.

Measured (2-core machine, 2 processes; ``--seed 0``):
- 0.1 analysis, 100 runs × ≤ 10 sweeps: 448 draws screened, 100 ambiguous (37 3-level); false 0/100 for every rule
  (95 % upper 0.036); decided 30 / 36 / 42 % (spent / fixed 2σ / none), median 8 / 8 / 7 sweeps; 7 min.
- Poisson analysis, reduced for time to 30 runs × ≤ 5 sweeps (fixed before it ran): 112 draws screened, 30
  ambiguous (12 3-level); false 0/30 for every rule (95 % upper 0.116); decided 10 / 10 / 17 %, median 5 / 4 / 4
  sweeps; 63 min (screening 28 min: ≈ 30 s per draw, both models).

Run: python tests/bench/bench_xps_stop.py [--runs 100] [--seed 0] [--jobs 2] [--max-sweeps 10] [--p 0.99]
[--analysis 0.1|poisson]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parallel import pool_map  # noqa: E402

from agent.core.model_decision import look_z  # noqa: E402
from agent.core.stopping import ModelDecided  # noqa: E402
from agent.xps.agent import MODELS, XPS_PRIORS, XPSAgent, fit_xps  # noqa: E402
from agent.xps.likelihood import POISSON_PARAMS, POISSON_PRIORS, expected_counts, fit_poisson, poisson_args  # noqa: E402
from sim_devices.xps.samples import DEFAULT_ENERGIES, XPSSample  # noqa: E402

POISSON_ENERGIES = np.round(np.arange(-25.0, 30.0001, 0.4), 10)

SCREEN_SWEEPS = 10
AMBIGUOUS_NATS_PER_SWEEP = 1.0
SCREEN_SAMPLER = {"n_sweeps": 200, "n_burn": 100, "n_runs": 1}


def prior_draw(prior, rng: np.random.Generator) -> float:
    """One draw of a ``Param`` prior: uniform on its bounds, or its Gaussian truncated to them."""
    if prior.mean is None:
        return float(rng.uniform(prior.lower, prior.upper))
    a, b = (prior.lower - prior.mean) / prior.sd, (prior.upper - prior.mean) / prior.sd
    return float(stats.truncnorm.rvs(a, b, loc=prior.mean, scale=prior.sd, random_state=rng))


def truth(seed: int, k: int) -> XPSSample:
    """Draw ``k``: a candidate model (3-level for even k) with its parameters uniform over the priors (eV)."""
    rng = np.random.default_rng([seed, k])
    model = "3-level" if k % 2 == 0 else "2-level"
    names = MODELS[model][1]
    params = {n: prior_draw(XPS_PRIORS[n], rng) for n in names}
    return XPSSample(f"draw{k}", model, params)


class PoissonTruth:
    """Draw ``k`` of the Poisson candidates (3-level for even k): expected counts per sweep on POISSON_ENERGIES."""

    def __init__(self, seed: int, k: int):
        rng = np.random.default_rng([seed, k])
        self.model = "3-level" if k % 2 == 0 else "2-level"
        theta = np.array([prior_draw(POISSON_PRIORS[n], rng) for n in POISSON_PARAMS[self.model]])
        e = POISSON_ENERGIES
        self.mu = expected_counts(theta, poisson_args(e, np.zeros_like(e), self.model, 1))

    def sweep(self, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(self.mu).astype(float)


def screen(args) -> tuple[int, float]:
    """(k, expected |ΔF| per sweep, nats) from both models fitted to 10 sweeps' expected counts."""
    seed, k, dwell, analysis = args
    if analysis == "poisson":
        y = np.round(PoissonTruth(seed, k).mu * SCREEN_SWEEPS)
        f = {m: fit_poisson(POISSON_ENERGIES, y, m, SCREEN_SWEEPS, seed=0, **SCREEN_SAMPLER).free_energy
             for m in MODELS}
    else:
        y = np.round(truth(seed, k).rate(DEFAULT_ENERGIES) * dwell * SCREEN_SWEEPS)
        f = {m: fit_xps(DEFAULT_ENERGIES, y, m, seed=0, **SCREEN_SAMPLER).free_energy for m in MODELS}
    return k, abs(f["3-level"] - f["2-level"]) / SCREEN_SWEEPS


def run(args) -> dict:
    """One sequential run of truth ``k``: the free energies and errors after every sweep, and the decision."""
    seed, k, dwell, max_sweeps, p, analysis = args
    rng = np.random.default_rng([seed, k, 1])
    if analysis == "poisson":
        s = PoissonTruth(seed, k)
        energies, sweep = POISSON_ENERGIES, lambda: s.sweep(rng)
    else:
        s = truth(seed, k)
        energies, sweep = DEFAULT_ENERGIES, lambda: s.sweep(DEFAULT_ENERGIES, dwell, rng)
    agent = XPSAgent(ModelDecided(p), seed=k, analysis=analysis)
    hist = []
    reason = None
    while reason is None and agent.sweeps < max_sweeps:
        agent.ingest([{"counts": sweep(), "energies": energies}])
        post = agent.posteriors
        hist.append({m: (post[m].free_energy, post[m].free_energy_err) for m in MODELS})
        stop, reason = agent.should_stop()
        reason = reason if stop else None
    return {"k": k, "truth": s.model, "hist": hist}


def decide(hist: list[dict], p: float, allowance) -> tuple[str, int]:
    """The model a rule decides first and at which sweep ("", 0 if none): ``allowance(look, err)`` (nats)."""
    c = np.log(p / (1 - p))
    for n, h in enumerate(hist, start=1):
        (f2, e2), (f3, e3) = h["2-level"], h["3-level"]
        if abs(f2 - f3) - allowance(n, np.hypot(e2, e3)) >= c:
            return ("2-level" if f2 < f3 else "3-level"), n
    return "", 0


RULES = {"spent (new)": lambda n, e: look_z(n) * e, "fixed 2σ (old)": lambda n, e: 2.0 * e, "none": lambda n, e: 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--dwell", type=float, default=0.01)
    ap.add_argument("--max-sweeps", type=int, default=10)
    ap.add_argument("--max-draws", type=int, default=1000)
    ap.add_argument("--p", type=float, default=0.99)
    ap.add_argument("--analysis", choices=("0.1", "poisson"), default="0.1")
    a = ap.parse_args()
    t0 = time.perf_counter()
    kept, screened, k = [], 0, 0
    while len(kept) < a.runs and k < a.max_draws:
        batch = list(range(k, min(k + 2 * a.jobs * 4, a.max_draws)))
        res, _ = pool_map(screen, [(a.seed, j, a.dwell, a.analysis) for j in batch], a.jobs)
        screened += len(batch)
        kept += [j for j, d in res if d <= AMBIGUOUS_NATS_PER_SWEEP]
        k = batch[-1] + 1
    kept = kept[:a.runs]
    t_screen = time.perf_counter() - t0
    print(f"screened {screened} draws, {len(kept)} ambiguous (|ΔF| ≤ {AMBIGUOUS_NATS_PER_SWEEP} nat/sweep), "
          f"{sum(j % 2 == 0 for j in kept)} of them 3-level truths; {t_screen:.0f} s")
    runs, t_runs = pool_map(run, [(a.seed, j, a.dwell, a.max_sweeps, a.p, a.analysis) for j in kept], a.jobs)
    n = len(runs)
    if not n:
        raise SystemExit("no ambiguous truth among the screened draws: raise --max-draws or lower --dwell")
    level = "counts drawn with the truth" if a.analysis == "poisson" else f"{a.dwell} s/channel"
    print(f"{n} runs, analysis {a.analysis}, ≤ {a.max_sweeps} sweeps, ModelDecided(p = {a.p}), {level}; {t_runs:.0f} s "
          f"({a.jobs} processes); total wall {time.perf_counter() - t0:.0f} s")
    print(f"{'rule':16s} {'false':>7s} {'(95 % upper)':>13s} {'decided':>8s} {'undecided':>10s} {'sweeps med':>11s}")
    for name, allowance in RULES.items():
        dec = [decide(r["hist"], a.p, allowance) for r in runs]
        false = sum(m not in ("", r["truth"]) for (m, _), r in zip(dec, runs, strict=True))
        decided = [s for m, s in dec if m]
        upper = stats.beta.ppf(0.975, false + 1, n - false) if n else float("nan")
        print(f"{name:16s} {false / n:7.3f} {upper:13.3f} {len(decided) / n:8.2f} {1 - len(decided) / n:10.2f} "
              f"{np.median(decided) if decided else float('nan'):11.1f}")
    print(f"bound of the new rule under the two models: (1 − p)/p + 0.01 = {(1 - a.p) / a.p + 0.01:.3f}; "
          "issue target: ≤ 0.05")


if __name__ == "__main__":
    main()
