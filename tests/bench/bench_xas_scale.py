"""XAS design at EXAFS scale: decision latency and memory of the basis posterior (agent.xas.basis) against the
dense XASPosterior, and whether the basis prior reconstructs XANES as well as the dense library prior.

The energies above 7196.85 eV are SYNTHETIC (agent.xas.exafs.extended_library: an approximate few-shell
EXAFS model joined to the measured standards), so the latency/memory figures are real but the EXAFS spectra
are not measurements.

Protocol (fixed before running):
* grids: n = 1000, 5000, 20 000 candidates uniform over 7076.2-7660 eV (k up to 12 Å⁻¹); prior from the 61
  standards minus Fe3O4, extended SYNTHETICALLY; truth = Fe3O4's SYNTHETIC extension, measured as
  y = 1.5 mu + 0.1 with counting noise (I0 = 23 760 /s, 2 s).
* a decision = update(the last point) + choose_next over ALL n candidates with dwell options (2, 4) s, as
  agent.xas.design.choose_next; 10 warm-up points, then ``--decisions`` timed (wall clock, perf_counter);
  median and 95th percentile. Dense only at 1000 and 5000: at 20 000 its S and M are 2 x 3.2 GB and building
  library_prior needs ~6 n x n temporaries (~19 GB) on a 24 GB machine shared by 4 agents: skipped.
* memory: tracemalloc peak (numpy allocations are traced) from building the posterior from its prior through
  the timed decisions, and the bytes the posterior holds afterwards; the prior's own size listed apart.
* XANES accuracy: leave-one-out expected log-likelihood per point (agent.xas.prior.leave_one_out) of each
  standard on the default 1051-point grid, dense library_prior vs basis_prior (all PCs, and 99 % of the
  variance), at (noise var 1e-4, stride 5) and (1e-6, stride 2); and the residual's closeness to the kernels.

Run: OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python tests/bench/bench_xas_scale.py [--decisions 50] [--no-loo]
     [--plot extension.png]  (a few standards with their SYNTHETIC extension, titled so)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402

from agent.xas.basis import XANES_TOP_EV, BasisPosterior, basis_prior, residual_error  # noqa: E402
from agent.xas.design import CountingNoise, MoveCost, XASPosterior, choose_next  # noqa: E402
from agent.xas.exafs import extended_library  # noqa: E402
from agent.xas.prior import SpectraLibrary, default_grid, leave_one_out, library_prior  # noqa: E402

NOISE, COST, DWELLS = CountingNoise(), MoveCost(), (2.0, 4.0)
SIZES = (1000, 5000, 20000)
DENSE_MAX = 5000


def held_bytes(obj) -> int:
    """Bytes of the numpy / scipy.sparse arrays an object holds (one level deep)."""
    total = 0
    for v in vars(obj).values():
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif sparse.issparse(v):
            total += v.data.nbytes + v.indices.nbytes + v.indptr.nbytes
    return total


def run(kind: str, n: int, ext, truth_name: str, n_dec: int, seed: int = 0) -> dict:
    grid = np.linspace(7076.2, 7660.0, n)
    lib = ext.without(truth_name)
    truth = ext.on(grid)[:, ext.index(truth_name)]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    prior = basis_prior(lib, grid) if kind == "basis" else library_prior(lib, grid)
    t_prior = time.perf_counter() - t0
    prior_bytes = held_bytes(prior) if kind == "basis" else prior.cov.nbytes + prior.mean.nbytes
    tracemalloc.start()
    t0 = time.perf_counter()
    post = BasisPosterior(prior) if kind == "basis" else XASPosterior(prior)
    t_build = time.perf_counter() - t0
    cur, times, cpu, j = None, [], [], int(rng.integers(n))
    for i in range(10 + n_dec):
        e = grid[j]
        y_true = 1.5 * truth[j] + 0.1
        var = float(NOISE.var(y_true, 2.0))
        y = y_true + rng.normal(0, np.sqrt(var))
        t0, c0 = time.perf_counter(), time.process_time()
        post.update(e, y, var)
        j, dwell, _ = choose_next(post, NOISE, COST, cur, DWELLS)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        cur = e
        if i >= 10:
            times.append(dt)
            cpu.append(dc)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t = np.array(times) * 1e3
    return {"kind": kind, "n": n, "r": getattr(post, "r", n), "median_ms": float(np.median(t)),
            "p95_ms": float(np.percentile(t, 95)),
            "cpu_ms": float(np.median(cpu)) * 1e3, "peak_MB": peak / 2**20, "held_MB": held_bytes(post) / 2**20,
            "prior_MB": prior_bytes / 2**20, "prior_s": t_prior, "build_s": t_build, "rmse_pred": post.rmse_pred}


def loo_table(lib: SpectraLibrary) -> None:
    grid = default_grid()
    builds = {"dense library_prior": lambda lb, g: library_prior(lb, g),
              "basis, all PCs": lambda lb, g: basis_prior(lb, g).to_gaussian(),
              "basis, PCs 99 % var": lambda lb, g: basis_prior(lb, g, pc_fraction=0.99).to_gaussian()}
    print("\nXANES reconstruction (measured data only, default 1051-point grid): leave-one-out expected "
          "log-likelihood per point (nats), 61 standards")
    print(f"{'prior':22s} {'noise var':>9s} {'stride':>6s} {'mean':>8s} {'median':>8s} {'worst':>8s} "
          f"{'worst std':>18s}")
    for nv, stride in ((1e-4, 5), (1e-6, 2)):
        for name, build in builds.items():
            s = leave_one_out(lib, build, grid, noise_var=nv, stride=stride)
            print(f"{name:22s} {nv:9.0e} {stride:6d} {s.mean():8.3f} {np.median(s):8.3f} {s.min():8.3f} "
                  f"{lib.names[int(np.argmin(s))]:>18s}")
    bp = basis_prior(lib, grid)
    print(f"basis prior on 1051 points: r = {bp.r} ({bp.r_pc} PCs + splines {bp.info['n_spline']})")
    for label, below in (("whole grid", np.inf), (f"E < {XANES_TOP_EV:.0f} eV", XANES_TOP_EV)):
        err = residual_error(bp, lib, below)
        print(f"  residual vs kernel terms, {label}: |dK|_F/|K|_F = {err['frobenius_rel']:.3f}, "
              f"max|dK|/max K = {err['max_rel']:.3f}")


def plot(ext, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, name in enumerate(("Fe-foil", "SUS304", "Fe3O4", "FeS2", "FeCl2")):
        mu = ext.spectra[:, ext.index(name)] + 0.3 * i
        ax.plot(ext.energy, np.where(ext.synthetic, np.nan, mu), "k", lw=0.8)
        ax.plot(ext.energy, np.where(ext.synthetic, mu, np.nan), lw=0.8, label=f"{name} (synthetic)")
    ax.axvline(ext.synthetic_from_eV, color="grey", ls=":")
    ax.set(xlabel="E (eV)", ylabel="normalised mu + offset",
           title=f"Fe K standards: measured (black) + SYNTHETIC EXAFS extension above {ext.synthetic_from_eV:.2f} eV")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure (SYNTHETIC extension): {path}")


def agent_loop(step_eV: float, quantity: str = "edge_position", target: float = 0.05, seed: int = 1) -> dict:
    """The whole agent on the exafs prior (Fe3O4 held out, its SYNTHETIC extension the truth): ms per point
    (ingest + suggest, sweep planning and the draws check included) until std(quantity) <= target."""
    from agent.xas.agent import xas_agent
    from agent.xas.prior import PRIORS
    from sim_devices.xas.samples import XASSample

    t0 = time.perf_counter()
    agent = xas_agent(PRIORS["exafs"](SpectraLibrary.from_csv().without("Fe3O4"), step_eV=step_eV), exclude="Fe3O4",
                      quantity=quantity, target_std=target)
    build = time.perf_counter() - t0
    sample, lat = XASSample("Fe3O4", seed=seed, extended_to_eV=7660.0), []
    while not agent.should_stop()[0]:
        t = time.perf_counter()
        (s,) = agent.suggest(1)
        i0, it = sample.counts(s["energy"], s["dwell"])
        agent.ingest([{**s, "i0": i0, "it": it}])
        lat.append(time.perf_counter() - t)
    return {"n": agent.post.n, "points": len(lat), "median_ms": 1e3 * np.median(lat),
            "p95_ms": 1e3 * np.percentile(lat, 95), "build_s": build, "reason": agent.should_stop()[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=50)
    ap.add_argument("--no-loo", action="store_true")
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    lib = SpectraLibrary.from_csv()
    ext = extended_library(lib)
    print(f"library: {len(lib)} standards, measured to {ext.synthetic_from_eV:.2f} eV; {ext.note}")
    la = os.getloadavg()
    print(f"host load average (1, 5, 15 min): {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores")
    if args.plot:
        plot(ext, args.plot)
    print(f"\nDecision = update + choose over all candidates, dwell {DWELLS} s; {args.decisions} timed after "
          "10 warm-up; grid 7076.2-7660 eV (SYNTHETIC above 7196.85 eV), truth Fe3O4 (SYNTHETIC EXAFS)")
    print("(wall clock; cpu ms = median process CPU time, less sensitive to other jobs on the host)")
    print(f"{'posterior':9s} {'n':>6s} {'r':>5s} {'median ms':>10s} {'p95 ms':>8s} {'cpu ms':>7s} {'peak MB':>9s} "
          f"{'held MB':>8s} "
          f"{'prior MB':>9s} {'prior s':>8s} {'build s':>8s} {'rmse_pred':>10s}")
    for n in SIZES:
        for kind in ("basis", "dense"):
            if kind == "dense" and n > DENSE_MAX:
                print(f"{'dense':9s} {n:6d}  skipped: S and M alone 2 x {(n + 5) ** 2 * 8 / 2**30:.1f} GB, "
                      f"library_prior ~6 n x n temporaries")
                continue
            nd = args.decisions if kind == "basis" or n <= 1000 else max(10, args.decisions // 3)
            o = run(kind, n, ext, "Fe3O4", nd)
            print(f"{o['kind']:9s} {o['n']:6d} {o['r']:5d} {o['median_ms']:10.2f} {o['p95_ms']:8.2f} "
                  f"{o['cpu_ms']:7.2f} "
                  f"{o['peak_MB']:9.1f} {o['held_MB']:8.1f} {o['prior_MB']:9.1f} {o['prior_s']:8.2f} "
                  f"{o['build_s']:8.2f} {o['rmse_pred']:10.4f}")
    print("\nThe agent on the exafs prior, per point (ingest + suggest: sweep planning amortised over its points, "
          "the posterior-draws check near the target included), edge position to 0.05 eV:")
    for step in (0.1, 0.029):
        o = agent_loop(step)
        print(f"  {o['n']:6d} candidates: median {o['median_ms']:.1f} ms, 95th pct {o['p95_ms']:.0f} ms over "
              f"{o['points']} points, prior + agent built in {o['build_s']:.1f} s; {o['reason']}")
    if not args.no_loo:
        loo_table(lib)


if __name__ == "__main__":
    main()
