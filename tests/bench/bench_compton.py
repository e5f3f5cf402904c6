"""Magnetic-Compton benchmarks (run on request: ``python tests/bench/bench_compton.py [--beamtimes 1000]
[--seed 2026] [--sample fe]``). The protocol below was fixed before any of its results were seen; a reviewer
changes the seed, the sample (any preset, or one in ``$BAYESBEAM_PRESETS``) and the number of beamtimes.

1. [rate] The count rate the simulated instrument derives for the sample (``instrument.toml``): input and
   output rate per element, the attenuation to the Ge operating point, the rate inside |p_z| ≤ 10 a.u., κ.
2. [update] Posterior update per cycle (1024-channel detector): the agent's ``ingest`` (exact grid posterior
   plus the report the stop rules read) against a baseline in the same run: refitting all data from scratch
   with ``scipy.optimize.least_squares`` on (a3d, a4s, Γ) after every cycle. The first update (the model's
   design matrices) is counted apart.
3. [coverage] ``--beamtimes`` simulated beamtimes through the whole instrument (cross-sections, absorption,
   efficiency, Ge escape, multiple scattering, backgrounds, dead time; the sample's true profile is not the
   free-atom model), each counted until std(μs) ≤ the tightest target or 400 cycles. For each target in
   TARGETS the stop is the first cycle at or below it: what a run with that target does on the same counts.
   Per target: coverage of the 68 % and 95 % statistical intervals of μs against the binomial 99 % band of
   their nominal rate; the bias (μs − truth)/std with its standard error (goal |bias| < 0.1 σ); the beamtime
   at which the target is crossed (interpolated, ``agent.core.stopping.crossing_time``), median, and its
   ratio to 1/target² scaling from the first target (goal within 20 %).
   Baseline on the same counts: the conventional analysis, μs = the integrated MCP area inside the window
   after the same corrections, divided by the fraction of a free-atom 3d profile (single plus multiple
   scattering) inside it, with its Poisson std: its coverage, bias and crossing beamtime.
4. [plateau] ``--plateau-runs`` 136-cycle runs: the cycle from which std(a3d) stops improving (it improved by
   less than 5 % over the previous 5 cycles: the Plateau rule's definition); the seed reports about 20.
5. [systematic] The systematic budget of μs after 136 cycles (``SpinMomentAgent.systematics``) beside its
   statistical std: the floor under the total uncertainty, and its leading contributions.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import binom

from agent.compton.profiles import convolve_at, orbital_profile
from agent.core.stopping import Plateau, crossing_time
from bayesbeam.rehearsal.compton.rehearse import cycle_time_s, make_agent, simulated_cycles
from sim_devices.compton.beamline import make_compton_beamline
from sim_devices.compton.instrument import instrument

TARGETS = (0.01, 0.007, 0.005, 0.004, 0.003)  # μB
MAX_CYCLES = 400
COUNT_TIME_S = 60.0


def setup(sample: str):
    bl = make_compton_beamline(sample, time_scale=float("inf"), count_time_s=COUNT_TIME_S)
    return bl, bl.ge.geometry(), cycle_time_s(bl)


def bench_rate(sample: str):
    bl, geometry, cyc = setup(sample)
    b = instrument().count_rate_breakdown(bl.sample, geometry)
    print(f"[rate] {bl.sample.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in b.items()))
    print(f"[rate] one + − − + cycle = {cyc:.0f} s of beamtime ({COUNT_TIME_S:.0f} s per spectrum)")


def bench_update(sample: str, seed: int, n_cycles=136, repeats=3):
    bl, geometry, cyc = setup(sample)
    cycles = simulated_cycles(bl.sample, geometry, np.random.default_rng(seed), COUNT_TIME_S, cyc)
    points = [next(cycles) for _ in range(n_cycles)]
    times, first = [], []
    for _ in range(repeats):
        agent = make_agent(bl.sample, 1e-9, max_cycles=10_000)
        t = time.perf_counter()
        agent.configure(geometry)
        first.append(time.perf_counter() - t)
        for p in points:
            t = time.perf_counter()
            agent.ingest([p])
            times.append(time.perf_counter() - t)
    ours = np.median(times)
    model = agent.model
    j3d, j4s = (orbital_profile(bl.sample.element, o) for o in ("3d", "4s"))

    def resid(theta, y, sd):
        a3, a4, g = theta
        return (a3 * convolve_at(j3d, g, model.pz) + a4 * convolve_at(j4s, g, model.pz) - y) / sd

    base_times = []
    sums, exposure = np.zeros((4, geometry.energy_kev.size)), np.zeros(2)
    for p in points[: min(40, n_cycles)]:
        t = time.perf_counter()
        f = np.asarray(p["fields"])
        scale = p["monitors"].mean() / p["monitors"]
        sums[0] += scale[f > 0] @ p["spectra"][f > 0]
        sums[1] += scale[f < 0] @ p["spectra"][f < 0]
        sums[2] += scale[f > 0] ** 2 @ p["spectra"][f > 0]
        sums[3] += scale[f < 0] ** 2 @ p["spectra"][f < 0]
        exposure += (scale[f > 0] @ p["live_s"][f > 0], scale[f < 0] @ p["live_s"][f < 0])
        y, var = model.reduce(*sums, exposure)
        least_squares(resid, x0=[2.0, 0.0, 0.45], args=(y, np.sqrt(var)), bounds=([-10, -10, 0.1], [10, 10, 1.0]))
        base_times.append(time.perf_counter() - t)
    base = np.median(base_times)
    print(f"[update] exact posterior per cycle, 1024 channels ({model.channels.size} in window, "
          f"{agent.gamma_grid.size} Γ × {agent.misfit_grid.size} τ grid, {model.design.shape[-1]} amplitudes): median "
          f"{ours * 1e3:.3f} ms (p90 {np.percentile(times, 90) * 1e3:.3f} ms; target ≤ 1 ms); building the model "
          f"(first configure, then shared by agents of the same detector configuration) {first[0]:.2f} s")
    print(f"[update] baseline scipy least_squares refit from scratch (point estimate only, no misfit term): "
          f"median {base * 1e3:.2f} ms → ratio {base / ours:.2f}× (baseline time / ours)")


def area_baseline(agent):
    """The conventional μs: Σ J_mag Δp inside the window (the same corrected profile the agent fits) over the
    in-window fraction of a free-atom 3d profile (single + multiple scattering, as the model's 3d column),
    with its Poisson std (μB)."""
    model = agent.model
    y, var = agent.reduced()
    column = model.design[np.argmin(np.abs(model.gamma_grid - model.geometry.resolution_fwhm_au)), :, 0]
    inside = float(model.pz_width @ column)  # area of a unit-moment 3d column inside the window
    return float(model.pz_width @ y) / inside, float(np.sqrt((model.pz_width**2) @ var)) / inside


def bench_coverage(sample: str, seed: int, beamtimes: int):
    bl, geometry, cyc = setup(sample)
    truth = bl.sample.spin_moment_mub
    rng = np.random.default_rng(seed)
    rows = {m: {t: [] for t in TARGETS} for m in ("posterior", "area")}
    t0 = time.perf_counter()
    never = 0
    for _ in range(beamtimes):
        agent = make_agent(bl.sample, 1e-9, max_cycles=10_000)
        agent.configure(geometry)
        hist = {"posterior": [], "area": []}
        for point, _ in zip(simulated_cycles(bl.sample, geometry, rng, COUNT_TIME_S, cyc), range(MAX_CYCLES),
                            strict=False):
            agent.ingest([point])
            h = agent.history[-1]
            hist["posterior"].append((point["beamtime_s"], h["mu_s_mean"], h["mu_s_std"], h["mu_s_lo68"],
                                      h["mu_s_hi68"], h["mu_s_lo95"], h["mu_s_hi95"]))
            mean, sd = area_baseline(agent)
            hist["area"].append((point["beamtime_s"], mean, sd, mean - 0.994458 * sd, mean + 0.994458 * sd,
                                 mean - 1.959964 * sd, mean + 1.959964 * sd))
            if max(h["mu_s_std"], sd) <= TARGETS[-1]:
                break
        for method, hs in hist.items():
            a = np.array(hs)
            for target in TARGETS:
                hit = np.flatnonzero(a[:, 2] <= target)
                if hit.size == 0:
                    never += method == "posterior"
                    continue
                i = hit[0]
                rows[method][target].append((crossing_time(a[:, 0], a[:, 2], target), a[i, 1] - truth, a[i, 2],
                                             a[i, 3] <= truth <= a[i, 4], a[i, 5] <= truth <= a[i, 6]))
    wall = time.perf_counter() - t0
    print(f"[coverage] {beamtimes} {bl.sample.name} beamtimes (seed {seed}) in {wall:.0f} s wall; true μs "
          f"{truth:.4f} μB; {never} target crossings never reached within {MAX_CYCLES} cycles")
    ref = {}
    for method in ("posterior", "area"):
        label = "exact posterior (structured misfit, Γ prior)" if method == "posterior" else \
            "baseline: integrated MCP area with Poisson std"
        print(f"[coverage] {label}")
        print("[coverage]   target μB |    n |  cov68 [99 % band] |  cov95 [99 % band] | bias σ (se)  |"
              " crossing h (median) | × target²/first | pass")
        for target in TARGETS:
            a = np.array(rows[method][target], dtype=float)
            n = len(a)
            if n == 0:
                print(f"[coverage]   {target:9.3f} |    0 | never reached")
                continue
            bands = {lv: binom.interval(0.99, n, lv / 100) for lv in (68, 95)}
            cov = {68: a[:, 3].mean(), 95: a[:, 4].mean()}
            z = a[:, 1] / a[:, 2]
            hours = np.median(a[:, 0]) / 3600
            ref.setdefault(method, hours * TARGETS[0] ** 2 / target**2)
            ratio = hours / (ref[method] * TARGETS[0] ** 2 / target**2)
            ok = (all(bands[lv][0] <= cov[lv] * n <= bands[lv][1] for lv in (68, 95)) and abs(z.mean()) < 0.1
                  and abs(ratio - 1) <= 0.2)
            print(f"[coverage]   {target:9.3f} | {n:4d} | {100 * cov[68]:5.1f} [{100 * bands[68][0] / n:4.1f}–"
                  f"{100 * bands[68][1] / n:4.1f}] | {100 * cov[95]:5.1f} [{100 * bands[95][0] / n:4.1f}–"
                  f"{100 * bands[95][1] / n:4.1f}] | {z.mean():+.3f} ({z.std() / np.sqrt(n):.3f}) | "
                  f"{hours:8.3f} | {ratio:5.2f} | {'yes' if ok else 'NO'}")


def bench_plateau(sample: str, seed: int, runs: int):
    bl, geometry, cyc = setup(sample)
    rule = Plateau("a3d", k=5, rel=0.05)
    found = []
    for r in range(runs):
        agent = make_agent(bl.sample, 1e-9, max_cycles=10_000)
        agent.configure(geometry)
        at = None
        for point, _ in zip(simulated_cycles(bl.sample, geometry, np.random.default_rng([seed, 136, r]),
                                             COUNT_TIME_S, cyc), range(136), strict=False):
            agent.ingest([point])
            if at is None and rule.check(agent.history):
                at = agent.cycles
        found.append(at or 137)
        if r == 0:
            h = agent.history
            print("[plateau] one 136-cycle run, std(a3d) μB at cycles 2/6/10/20/40/80/136: " + ", ".join(
                f"{h[c - 1]['a3d_std']:.4f}" for c in (2, 6, 10, 20, 40, 80, 136)) +
                f"; std(μs) at 136: {h[-1]['mu_s_std']:.4f} μB, misfit τ {h[-1]['misfit_mean']:.4f} μB")
            sys = agent.systematics()
            print(f"[systematic] after 136 cycles: μs = {h[-1]['mu_s_mean']:.4f} ± {sys['statistical']:.4f} "
                  f"(statistical) ± {sys['total']:.4f} (systematic) μB; systematic contributions: κ calibration "
                  f"{sys['kappa']:.4f}, multiple scattering {sys['multiple_scattering']:.4f}, p_z calibration "
                  f"{sys['pz_calibration']:.4f} μB; the total uncertainty "
                  f"floors at {sys['total']:.4f} μB however long one counts")
    print(f"[plateau] std(a3d) stops improving (<5 % over 5 cycles) at cycle: median {np.median(found):.0f} "
          f"[10–90 %: {np.percentile(found, 10):.0f}–{np.percentile(found, 90):.0f}] over {runs} runs "
          f"(137 = not within 136; the seed: about 20)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beamtimes", type=int, default=1000, help="simulated beamtimes for the coverage table")
    ap.add_argument("--plateau-runs", type=int, default=20, help="136-cycle runs for the plateau figure")
    ap.add_argument("--seed", type=int, default=2026, help="random seed of the simulation")
    ap.add_argument("--sample", default="fe", help="sample preset")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    bench_rate(args.sample)
    bench_update(args.sample, args.seed)
    bench_coverage(args.sample, args.seed, args.beamtimes)
    bench_plateau(args.sample, args.seed, args.plateau_runs)
