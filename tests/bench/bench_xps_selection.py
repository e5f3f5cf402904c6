"""Study (issue 16): what the Poisson free energy selects for 3-level-like truths across Δ, and how ΔF depends on
the prior width of U_ff (only the 3-level model has it).

Truths (sim_devices.xps.samples.full_sample; U_ff 10.5, U_fc 12.5, V 0.76 eV as CeO₂, Γ 0.7 eV, charging shift
0.8 eV, Shirley step 0.05 eV⁻¹, peak 400 cps, background 30 cps):

* ``exact``: the 3-level candidate itself (3 configurations, no multiplet doublets, the multiplet width a
  Gaussian 0.4 eV per √(4f electron)): what the selection says when the 3-level model is right;
* ``full``: the richer truth (4 configurations, multiplet doublets 1.2 eV per 4f electron): both candidates
  are approximations.

Each truth: ``--sweeps`` accumulated sweeps of ``--dwell`` s per channel on −25…+30 eV in ``--step`` eV channels;
both models fitted by exchange MC (agent.xps.likelihood.fit_poisson, ``--mc-sweeps`` kept sweeps, 2 runs).
Printed per Δ: F (nats) of both models with errors, ΔF = F_2level − F_3level (> 0 favours 3-level), P(3-level)
(conservative, agent.xps.agent.model_probabilities), and the 3-level posterior Δ, U_ff (eV).
Prior sensitivity (``--part prior``): ΔF for U_ff uniform on 10.5 ± w/2 eV, w = 2, 5, 10, 20 (lower bound
clipped at 0.5 eV), at Δ = 6 and 12, the ``exact`` truth.

``--calibrated``: no charging shift in the truth and a shift prior of ±0.02 eV (the axis the 0.1 analysis
assumed), to see what the charging nuisance does to the selection.

Run: ``python tests/bench/bench_xps_selection.py --part delta`` (≈ 6 min per kind on one busy core) and
``--part prior`` (≈ 6 min).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agent.core.nonlinear import Param
from agent.xps.agent import model_probabilities
from agent.xps.likelihood import POISSON_PRIORS, fit_poisson
from sim_devices.xps.samples import full_sample


def truth(kind: str, delta: float, shift: float = 0.8):
    if kind == "exact":
        return full_sample(delta, n_conf=3, mult_split=0.0, shift=shift)
    return full_sample(delta, shift=shift)


def counts(sample, e, sweeps, dwell, seed):
    rng = np.random.default_rng(seed)
    return sum(sample.sweep(e, dwell, rng) for _ in range(sweeps)).astype(float)


def fit_both(e, y, sweeps, seed, mc, priors=POISSON_PRIORS, models=("2-level", "3-level")):
    kw = dict(n_sweeps=mc, n_burn=max(mc // 2, 100), n_runs=2)
    return {m: fit_poisson(e, y, m, sweeps, "Ce", priors, seed=seed + i, **kw)
            for i, m in enumerate(("2-level", "3-level")) if m in models}


def line(label, posts):
    f = {m: p.free_energy for m, p in posts.items()}
    err = {m: p.free_energy_err for m, p in posts.items()}
    p3 = model_probabilities(f, err)["3-level"]
    d_f = f["2-level"] - f["3-level"]
    p = posts["3-level"]
    return (f"{label:>14} {f['2-level']:9.2f}±{err['2-level']:.2f} {f['3-level']:9.2f}±{err['3-level']:.2f} "
            f"{d_f:8.2f}±{np.hypot(*err.values()):.2f} {p3:7.4f}  Δ {p.mean['delta']:5.2f}±{p.std['delta']:.2f} "
            f"U_ff {p.mean['U_ff']:5.2f}±{p.std['U_ff']:.2f}")


HEADER = f"{'':>14} {'F_2level':>14} {'F_3level':>14} {'ΔF=F2−F3':>13} {'P(3)':>7}  3-level posterior"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("delta", "prior", "all"), default="all")
    ap.add_argument("--deltas", type=float, nargs="+", default=[6, 8, 10, 12, 14])
    ap.add_argument("--kinds", nargs="+", default=["exact", "full"])
    ap.add_argument("--sweeps", type=int, default=1)
    ap.add_argument("--dwell", type=float, default=0.2)
    ap.add_argument("--step", type=float, default=0.4)
    ap.add_argument("--mc-sweeps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrated", action="store_true",
                    help="no charging: truth shift 0, shift prior ±0.02 eV (the 0.1 analysis's calibrated axis)")
    a = ap.parse_args()
    shift = 0.0 if a.calibrated else 0.8
    base = {**POISSON_PRIORS, "shift": Param("shift", -0.02, 0.02)} if a.calibrated else POISSON_PRIORS
    e = np.round(np.arange(-25.0, 30.0001, a.step), 10)
    print(f"{e.size} channels of {a.step} eV, {a.sweeps} sweep(s) of {a.dwell} s/channel, mc_sweeps {a.mc_sweeps}, "
          f"seed {a.seed}{', calibrated axis' if a.calibrated else ''}")
    t0 = time.perf_counter()
    if a.part in ("delta", "all"):
        print(HEADER)
        for kind in a.kinds:
            for delta in a.deltas:
                y = counts(truth(kind, delta, shift), e, a.sweeps, a.dwell, a.seed + int(delta))
                print(line(f"{kind} Δ={delta:g}", fit_both(e, y, a.sweeps, a.seed, a.mc_sweeps, base)), flush=True)
    if a.part in ("prior", "all"):
        print("prior sensitivity: U_ff uniform on 10.5 ± w/2 eV")
        print(HEADER)
        for delta in (6.0, 12.0):
            y = counts(truth("exact", delta, shift), e, a.sweeps, a.dwell, a.seed + int(delta))
            two = fit_both(e, y, a.sweeps, a.seed, a.mc_sweeps, base, models=("2-level",))  # it has no U_ff
            for w in (2.0, 5.0, 10.0, 20.0):
                priors = {**base, "U_ff": Param("U_ff", max(10.5 - w / 2, 0.5), 10.5 + w / 2)}
                three = fit_both(e, y, a.sweeps, a.seed, a.mc_sweeps, priors, models=("3-level",))
                print(line(f"Δ={delta:g} w={w:g}", {**two, **three}), flush=True)
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
