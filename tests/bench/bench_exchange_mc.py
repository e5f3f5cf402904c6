"""Benchmark (DESIGN §7): exchange MC on the 3-level 3d XPS cluster model, 500-point spectrum.

Prints (1) log-likelihood evaluations per second per core inside the sampler (one worker thread,
compile excluded; target ≥ 1e5) and (2) the free energy F = −log Z against an independent dynesty
nested-sampling run on the same likelihood and prior, with wall times and their ratio (target:
|ΔF| ≤ 0.3 nats at ≥ 5× less wall time). Run: ``python tests/bench/bench_exchange_mc.py [--seed N]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import dynesty
import numpy as np

from agent.core.exchange_mc import exchange_mc
from agent.core.nonlinear import Dataset, _dataset_loglike
from agent.xps.cluster_models import CEO2, XPS3_PARAMS, theta_of, xps3

LOWER = np.array([-2.0, 0.2, 6.0, 8.0, 0.2])
UPPER = np.array([16.0, 1.5, 14.0, 16.0, 1.5])


def problem(seed: int):
    """CeO2-like 3d XPS counts (10 sweeps, 500 points) and the 5-parameter log-likelihood."""
    e = np.linspace(-14.0, 8.0, 500)
    lam = xps3(theta_of(CEO2, XPS3_PARAMS), e)
    lam = 10 * (40.0 * lam / lam.max() + 3.0)
    y = np.random.default_rng(seed).poisson(lam).astype(float)
    ds = Dataset(xps3, e, y, np.sqrt(y + 1.0), XPS3_PARAMS, linear="scale+offset",
                 scale_max=3 * y.sum() * (e[1] - e[0]), offset_range=(0.0, y.max()))
    return _dataset_loglike(ds.jitted, 2), ds.args(np.arange(5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nlive", type=int, default=1000)
    opts = ap.parse_args()
    ll, args = problem(opts.seed)

    rate = exchange_mc(ll, args, LOWER, UPPER, n_runs=1, n_workers=1, n_sweeps=1500, n_burn=600)
    print(f"likelihood evaluations/s/core (3-level, 500 points, 1 thread): {rate.evals_per_s:.3g}")

    width = UPPER - LOWER
    t0 = time.perf_counter()
    sampler = dynesty.NestedSampler(lambda t: ll(t, args), lambda u: LOWER + u * width, 5,
                                    nlive=opts.nlive, rstate=np.random.default_rng(opts.seed))
    sampler.run_nested(dlogz=0.05, print_progress=False)
    t_dy = time.perf_counter() - t0
    res = sampler.results
    f_dy, f_dy_err = -res.logz[-1], res.logzerr[-1]
    print(f"dynesty ({opts.nlive} live points): F = {f_dy:.3f} ± {f_dy_err:.3f}, "
          f"{res.ncall.sum()} calls, {t_dy:.2f} s wall")

    t_hit = None
    for n_sweeps in (250, 500, 1000, 2000, 4000):
        t0 = time.perf_counter()
        rx = exchange_mc(ll, args, LOWER, UPPER, n_runs=2, n_workers=2, n_sweeps=n_sweeps,
                         n_burn=max(200, n_sweeps // 2), seed=opts.seed)
        t_rx = time.perf_counter() - t0
        diff = rx.free_energy - f_dy
        print(f"exchange MC {n_sweeps:5d} sweeps x 2 runs: F = {rx.free_energy:.3f} ± {rx.free_energy_err:.3f} "
              f"(TI {rx.free_energy_ti:.2f}), ΔF = {diff:+.3f}, {rx.betas.shape[1]} temperatures, "
              f"min swap acc. {rx.exchange_acceptance.min():.2f}, R-hat max {rx.rhat.max():.3f}, {t_rx:.2f} s")
        if t_hit is None and abs(diff) <= 0.3 and rx.free_energy_err <= 0.3:
            t_hit = t_rx
    if t_hit is None:
        print("exchange MC never came within 0.3 nats of dynesty")
    else:
        print(f"time to |ΔF| ≤ 0.3 nats: {t_hit:.2f} s; dynesty {t_dy:.2f} s; speed-up {t_dy / t_hit:.1f}x "
              "(target ≥ 5x)")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=UserWarning, module="dynesty")
    main()
