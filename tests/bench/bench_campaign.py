"""Curie-temperature campaign benchmark (run on request: ``python tests/bench/bench_campaign.py``).

Beamtime, temperature changes included, to T_c ± 5 K: the campaign agent's own design against two grid
baselines, so that the gain of stopping each run and the gain of choosing temperatures are apart; then one
full campaign through the queue stack, timed, with the queue's per-item overheads.

Protocol (fixed before any result was looked at; nothing is tuned afterwards)
-----------------------------------------------------------------------------
Part 1: N simulated campaigns (default N = 100, seed 0; ``--campaigns N --seed S``; N ≥ 20 for reported
figures), without the queue (DESIGN §8): the campaign agent and the simulator's physics driven directly.

- Truth of campaign k: rng ``default_rng([S, k])`` draws T_c ~ U(1000, 1090) K and μs(0) ~ U(2.0, 2.3) μB;
  μs(T) = μs(0)·m(T, 2 T) with m the simulator's magnetisation model
  (``sim_devices.compton.magnetisation.Magnetisation(curie_k=T_c)``: Kuz'min zero-field curve, 3D-Heisenberg
  exponents, the field tail at the magnet's 2 T), which is not the campaign's analysis model.
- A run of n cycles at T returns μs(T) + (σ₁/√n)·N(0, 1) with reported std σ₁/√n (μB) and the temperature
  exactly as set. σ₁ is what the simulator gives, measured at the start of this script: the median over 16
  seeded one-cycle runs of the spin-moment agent (the inner loop's agent, on Poisson spectra from the Fe
  sample physics at 300 K, 2 T) of its std(μs) after that cycle. (Printed, with std·√n after 136 cycles
  at 300 K and at 1040 K for comparison; those do not enter the protocol.)
- Cost of every run, the same for all strategies: temperature change settle + |ΔT|/ramp (180 s, 0.2 K/s,
  the ``sample_temp`` positioner's; 0 without a change; the sample starts at 295 K) + n × 266 s (one
  ``+ − − +`` cycle of the simulated beamline) + 20 s per-run overhead (the campaign's ``run_overhead_s``).
- Analysis and stopping, the same for all: the campaign's posterior (``curie_campaign`` with the
  ``[design]`` settings of ``profiles/campaigns/fe_curie.toml``), ingesting each finished run; a strategy
  reaches the target when std(T_c) ≤ 5 K after a run (the file's ``target_tc_std_k``).
- Cap: 500 h of beamtime per strategy and campaign. A run that would take the total beyond the cap is not
  started: the campaign ends there, not reaching the target, and enters the beamtime statistics with the
  beamtime it used (flagged; then the median is a lower bound). (c) also ends, not reaching the target, at
  the file's ``max_runs`` (30).
- Strategies, each with its own noise stream ``default_rng([S, k, i])``:
  (c) campaign: ``suggest(1)`` → temperature and target std; the run self-stops at
      n = min(136, ceil((σ₁/target)²)) cycles (the file's ``max_cycles`` 136);
  (a) grid, fixed: 300, 350, …, 1150 K (18 temperatures, the campaign's candidate range), visited in
      increasing order, each a fixed 136-cycle run (the conventional measurement); after 1150 K another
      pass from 300 K (the cool-down counted), until std(T_c) ≤ 5 K or the cap;
  (b) grid, self-stopping: the same grid visited the same way, each run stopping at std(μs) ≤ 0.01 μB
      (the campaign's smallest option and the seed's Fe target): n = ceil((σ₁/0.01)²) cycles.
- Reported per strategy: median beamtime (h) and its interquartile range, fraction reaching the target,
  median runs and grid passes, median |T_c error|/std, coverage of the 68 % interval (both over the
  campaigns that reached the target), median error (K); ratios (a)/(c), (b)/(c), (a)/(b) of the medians and
  the medians of the paired per-campaign ratios: (b)/(c) is the gain of choosing temperatures (and targets),
  (a)/(b) the gain of stopping each run. Decision time of (c) (wall, each ``suggest(1)``; the shape table is
  built once before, its build time printed as the cold start).

Part 2: one full campaign through the queue (``--no-queue`` skips it). ``bayesbeam queue start --profile sim``
on free 127.0.0.1 ports in a temporary state directory and embedded catalog (default time scale of the sim
profile, ``$BAYESBEAM_TIME_SCALE`` or 1e4 simulated s per wall s), the worker environment opened and timed
(``environment_open`` → idle), then ``bayesbeam campaign run profiles/campaigns/fe_curie.toml`` timed end to
end (simulator truth T_c = 1043 K, μs(0) = 2.2 μB); ``bayesbeam queue stop --force`` at the end, whatever
happened. From the queue history (``time_start``/``time_stop``), the runs in the catalog (start and stop
documents, first primary event = the first count) and the campaign record (event times of its ``decisions``
and ``observations``), per item: item start → run start → first count (and the simulated clock's share of
it: the run's beamtime at its first count / time scale), run stop → observation recorded → next decision
recorded, item stop → next item start; medians and max.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.campaign import curie_campaign, temperature_change_s
from sim_devices.compton.magnetisation import Magnetisation

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from caioc import free_ports  # noqa: E402

CONFIG_FILE = ROOT / "profiles" / "campaigns" / "fe_curie.toml"
TC_RANGE_K = (1000.0, 1090.0)
M0_RANGE_MUB = (2.0, 2.3)
FIELD_T = 2.0
CYCLE_S = 266.0
OVERHEAD_S = 20.0
RAMP_K_S, SETTLE_S, START_K = 0.2, 180.0, 295.0
CAP_S = 500 * 3600.0
GRID_K = np.arange(300.0, 1150.0 + 1.0, 50.0)
FIXED_CYCLES = 136
GRID_TARGET_STD = 0.01
SIGMA1_RUNS = 16
STRATEGIES = (("c", "campaign"), ("a", "grid, 136-cycle runs"), ("b", f"grid, runs to ±{GRID_TARGET_STD:g} μB"))


# -- σ₁ from the simulator --------------------------------------------------------------------------------
def simulator_sigma1(seed: int) -> dict[str, float]:
    """std(μs) after one cycle (μB), median over ``SIGMA1_RUNS`` runs at 300 K, 2 T (the protocol's σ₁), and
    std·√n after 136 cycles at 300 K and 1040 K (for comparison only)."""
    from agent.compton.agent import spin_moment_agent
    from bayesbeam.rehearsal.compton.rehearse import cycle_time_s
    from plans.compton.flip_cycles import FLIP_PATTERN
    from sim_devices.compton.beamline import make_compton_beamline

    bl = make_compton_beamline("fe", time_scale=float("inf"), with_temperature=True)
    geometry, count_s = bl.ge.geometry(), float(bl.ge.preset_time.get())
    model = bl.magnetisation
    rng = np.random.default_rng([seed, 10**6])

    def run(temperature_k: float, cycles: int) -> float:
        scale = float(model.reduced(temperature_k, FIELD_T))
        means = {f: bl.sample.expected_counts(geometry, f, count_s, magnetic_scale=scale) for f in (1, -1)}
        agent = spin_moment_agent(1e-9, max_cycles=None, element="Fe")
        agent.configure(geometry)
        for c in range(1, cycles + 1):
            spectra = np.stack([rng.poisson(means[f]) for f in FLIP_PATTERN]).astype(float)
            agent.ingest([{"_id": c, "spectra": spectra, "fields": FLIP_PATTERN, "monitors": np.ones(len(FLIP_PATTERN)),
                           "count_time_s": len(FLIP_PATTERN) * count_s, "beamtime_s": c * CYCLE_S}])
        return float(agent.report()["mu_s_std"]) * math.sqrt(cycles)

    one = [run(300.0, 1) for _ in range(SIGMA1_RUNS)]
    return {"sigma1": float(np.median(one)), "sigma1_p10": float(np.percentile(one, 10)),
            "sigma1_p90": float(np.percentile(one, 90)), "at136_300k": run(300.0, FIXED_CYCLES),
            "at136_1040k": run(1040.0, FIXED_CYCLES), "cycle_time_s": cycle_time_s(bl)}


# -- part 1: simulated campaigns ---------------------------------------------------------------------------
def load_design() -> tuple[dict, float, int, int]:
    from bayesbeam.campaign.config import load_config

    config = load_config(CONFIG_FILE)
    return dict(config.design), float(config.target_tc_std_k), int(config.max_runs), int(config.max_cycles)


class Beamline:
    """One simulated campaign's beamtime and measurements for one strategy (module docstring)."""

    def __init__(self, truth: Magnetisation, m0: float, sigma1: float, rng: np.random.Generator):
        self.truth, self.m0, self.sigma1, self.rng = truth, m0, sigma1, rng
        self.here = START_K
        self.beamtime_s = self.move_s = self.count_s = 0.0
        self.runs = 0

    def cost_s(self, temperature_k: float, cycles: int) -> tuple[float, float]:
        move = temperature_change_s(self.here, temperature_k, RAMP_K_S, SETTLE_S)
        return move, move + cycles * CYCLE_S + OVERHEAD_S

    def fits(self, temperature_k: float, cycles: int) -> bool:
        return self.beamtime_s + self.cost_s(temperature_k, cycles)[1] <= CAP_S

    def measure(self, temperature_k: float, cycles: int) -> dict[str, float]:
        move, cost = self.cost_s(temperature_k, cycles)
        std = self.sigma1 / math.sqrt(cycles)
        mean = self.m0 * float(self.truth.reduced(temperature_k, FIELD_T)) + std * self.rng.standard_normal()
        self.here = temperature_k
        self.beamtime_s += cost
        self.move_s += move
        self.count_s += cycles * CYCLE_S
        self.runs += 1
        return {"temperature_k": temperature_k, "mu_s_mean": mean, "mu_s_std": std, "cycles": cycles,
                "beamtime_s": cost - move, "temperature_change_s": move, "field_t": FIELD_T}


def self_stopping_cycles(sigma1: float, target_std: float, max_cycles: int) -> int:
    return int(min(max_cycles, max(1, math.ceil((sigma1 / target_std) ** 2 - 1e-9))))


def outcome(agent, bl: Beamline, reached: bool, tc_true: float, end: str, **extra) -> dict:
    rep = agent.report()
    return {"beamtime_h": bl.beamtime_s / 3600, "move_h": bl.move_s / 3600, "count_h": bl.count_s / 3600,
            "runs": bl.runs, "reached": reached, "end": end, "tc_mean": rep["tc_mean"], "tc_std": rep["tc_std"],
            "tc_lo68": rep["tc_lo68"], "tc_hi68": rep["tc_hi68"], "error_k": rep["tc_mean"] - tc_true,
            "covered68": bool(rep["tc_lo68"] <= tc_true <= rep["tc_hi68"]),
            **extra}


def campaign_strategy(design, target_k, max_runs, max_cycles, truth, m0, sigma1, rng, agent_seed) -> dict:
    agent = curie_campaign(target_k, max_runs=max_runs, **{**design, "seed": agent_seed})
    bl = Beamline(truth, m0, sigma1, rng)
    decisions: list[float] = []
    while True:
        t0 = time.perf_counter()
        (s,) = agent.suggest(1)
        decisions.append(time.perf_counter() - t0)
        cycles = self_stopping_cycles(sigma1, s["target_std"], max_cycles)
        if not bl.fits(s["temperature_k"], cycles):
            return outcome(agent, bl, False, truth.curie_k, "cap", decisions=decisions)
        agent.ingest([{**bl.measure(s["temperature_k"], cycles), "_id": s["_id"]}])
        stop, reason = agent.should_stop()
        if stop:
            reached = reason.startswith("target_std")
            return outcome(agent, bl, reached, truth.curie_k, "target" if reached else "max_runs", decisions=decisions)


def grid_strategy(design, target_k, cycles, truth, m0, sigma1, rng) -> dict:
    agent = curie_campaign(target_k, max_runs=None, **design)
    bl = Beamline(truth, m0, sigma1, rng)
    passes = 0
    while True:
        passes += 1
        for temperature in GRID_K:
            if not bl.fits(float(temperature), cycles):
                return outcome(agent, bl, False, truth.curie_k, "cap", passes=passes)
            agent.ingest([bl.measure(float(temperature), cycles)])
            if agent.should_stop()[0]:
                return outcome(agent, bl, True, truth.curie_k, "target", passes=passes)


def simulate(n: int, seed: int, sigma1: float, progress=print) -> dict[str, list[dict]]:
    design, target_k, max_runs, max_cycles = load_design()
    b_cycles = self_stopping_cycles(sigma1, GRID_TARGET_STD, FIXED_CYCLES)
    results: dict[str, list[dict]] = {key: [] for key, _ in STRATEGIES}
    for k in range(n):
        truth_rng = np.random.default_rng([seed, k])
        tc = float(truth_rng.uniform(*TC_RANGE_K))
        m0 = float(truth_rng.uniform(*M0_RANGE_MUB))
        truth = Magnetisation(curie_k=tc)
        t0 = time.perf_counter()
        c = campaign_strategy(design, target_k, max_runs, max_cycles, truth, m0, sigma1,
                              np.random.default_rng([seed, k, 0]), agent_seed=seed * 100_003 + k)
        a = grid_strategy(design, target_k, FIXED_CYCLES, truth, m0, sigma1, np.random.default_rng([seed, k, 1]))
        b = grid_strategy(design, target_k, b_cycles, truth, m0, sigma1, np.random.default_rng([seed, k, 2]))
        for key, res in zip("cab", (c, a, b), strict=True):
            res.update(tc_true=tc, m0=m0)
            results[key].append(res)
        progress(f"  campaign {k + 1:2d}/{n}: T_c {tc:7.1f} K, μs(0) {m0:.3f} μB | "
                 + " | ".join(f"({key}) {r['beamtime_h']:6.1f} h {r['runs']:3d} runs {r['end']:6s}"
                              for key, r in zip("cab", (c, a, b), strict=True))
                 + f" | {time.perf_counter() - t0:.1f} s wall", flush=True)
    return results


def _q(values, q) -> float:
    values = [v for v in values if v == v]
    return float(np.percentile(values, q)) if values else math.nan


def summarise(results: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    out = {}
    for key, _ in STRATEGIES:
        rs = results[key]
        ok = [r for r in rs if r["reached"]]
        out[key] = {
            "beamtime_h_median": _q([r["beamtime_h"] for r in rs], 50),
            "beamtime_h_p25": _q([r["beamtime_h"] for r in rs], 25),
            "beamtime_h_p75": _q([r["beamtime_h"] for r in rs], 75),
            "move_h_median": _q([r["move_h"] for r in rs], 50), "count_h_median": _q([r["count_h"] for r in rs], 50),
            "reached_fraction": float(np.mean([r["reached"] for r in rs])),
            "runs_median": _q([r["runs"] for r in rs], 50),
            "passes_median": _q([r.get("passes", math.nan) for r in rs], 50),
            "z_median": _q([abs(r["error_k"]) / r["tc_std"] for r in ok], 50),
            "coverage68": float(np.mean([r["covered68"] for r in ok])) if ok else math.nan,
            "error_k_median": _q([r["error_k"] for r in ok], 50),
            "tc_std_median": _q([r["tc_std"] for r in ok], 50),
        }
    return out


def fmt(x, spec=".2f") -> str:
    return "—" if x is None or x != x else format(x, spec)


def print_part1(results, summary, n, seed, sigma1_info, wall_s, table_s) -> None:
    print(f"\nPart 1: {n} simulated campaigns, seed {seed}; σ₁ = {sigma1_info['sigma1']:.4f} μB "
          f"(10–90 %: {sigma1_info['sigma1_p10']:.4f}–{sigma1_info['sigma1_p90']:.4f}); cap {CAP_S / 3600:.0f} h; "
          f"grid {GRID_K[0]:.0f}–{GRID_K[-1]:.0f} K every {GRID_K[1] - GRID_K[0]:.0f} K ({GRID_K.size} runs a pass)")
    head = (f"{'strategy':32s} {'beamtime h':>10s} {'IQR h':>15s} {'moves h':>8s} {'count h':>8s} {'reached':>8s} "
            f"{'runs':>5s} {'passes':>6s} {'|err|/std':>9s} {'cov68':>6s} {'err K':>6s} {'std K':>6s}")
    print(head)
    print("-" * len(head))
    for key, name in STRATEGIES:
        s = summary[key]
        print(f"({key}) {name:28s} {fmt(s['beamtime_h_median'], '10.1f')} "
              f"{fmt(s['beamtime_h_p25'], '7.1f')}–{fmt(s['beamtime_h_p75'], '<7.1f')} "
              f"{fmt(s['move_h_median'], '8.2f')} {fmt(s['count_h_median'], '8.1f')} "
              f"{fmt(s['reached_fraction'], '8.2f')} {fmt(s['runs_median'], '5.0f')} {fmt(s['passes_median'], '6.1f')} "
              f"{fmt(s['z_median'], '9.2f')} {fmt(s['coverage68'], '6.2f')} {fmt(s['error_k_median'], '+6.1f')} "
              f"{fmt(s['tc_std_median'], '6.2f')}")
    capped = {key: sum(not r["reached"] for r in results[key]) for key, _ in STRATEGIES}
    if any(capped.values()):
        print("not reaching the target (beamtime counted as used, so the median is a lower bound): "
              + ", ".join(f"({k}) {v}" for k, v in capped.items() if v))
    print(f"\n{'ratio':34s} {'of medians':>10s} {'median of paired':>17s} {'paired IQR':>15s}")
    for num, den, what in (("a", "c", "grid 136-cycle / campaign (both gains)"),
                           ("b", "c", "grid self-stopping / campaign (choosing temperatures)"),
                           ("a", "b", "grid 136-cycle / grid self-stopping (stopping each run)")):
        paired = [x["beamtime_h"] / y["beamtime_h"] for x, y in zip(results[num], results[den], strict=True)]
        label = f"({num})/({den})"
        print(f"{label:34s} {fmt(summary[num]['beamtime_h_median'] / summary[den]['beamtime_h_median'], '10.2f')} "
              f"{fmt(_q(paired, 50), '17.2f')} {fmt(_q(paired, 25), '7.2f')}–{fmt(_q(paired, 75), '<7.2f')}  {what}")
    dec = np.array([d for r in results["c"] for d in r["decisions"]]) * 1e3
    per_campaign = [sum(r["decisions"]) for r in results["c"]]
    print(f"\n(c) decision time (wall, suggest(1), {dec.size} decisions): median {np.median(dec):.1f} ms, "
          f"p90 {np.percentile(dec, 90):.1f} ms, max {dec.max():.1f} ms; per campaign median "
          f"{np.median(per_campaign):.2f} s; cold start (shape table build) {table_s:.2f} s")
    print(f"simulator check (not in the protocol): std·√n after 136 cycles {sigma1_info['at136_300k']:.4f} μB at "
          f"300 K, {sigma1_info['at136_1040k']:.4f} μB at 1040 K (σ₁ after one cycle {sigma1_info['sigma1']:.4f}); "
          f"cycle time of the simulated beamline {sigma1_info['cycle_time_s']:.0f} s")
    print(f"part 1 wall time {wall_s:.0f} s")


# -- part 2: one campaign through the queue -------------------------------------------------------------------
def _bayesbeam() -> list[str]:
    exe = Path(sys.executable).with_name("bayesbeam")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from bayesbeam.cli import main; main()"]


def _stats(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return f"{'—':>8s} {'—':>8s} {'—':>4s}"
    return f"{np.median(values):8.3f} {max(values):8.3f} {len(values):4d}"


def _times(run, stream: str) -> np.ndarray:
    return np.asarray(run[stream].read()["time"].values, dtype=float)


def queue_campaign(keep: bool) -> dict:
    from bayesbeam.catalog import find_runs, open_catalog
    from bayesbeam.queue.stack import QueueStack

    work = Path(tempfile.mkdtemp(prefix="bench_campaign_"))
    state, catalog_dir, out = work / "state", work / "catalog", work / "curie.json"
    redis_port, control_port, info_port = free_ports(3)
    cli = _bayesbeam()
    env = dict(os.environ, MPLBACKEND="Agg")
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        start = subprocess.run([*cli, "queue", "start", "--profile", "sim", "--state-dir", str(state),
                                "--catalog", str(catalog_dir), "--redis-addr", f"127.0.0.1:{redis_port}",
                                "--zmq-control-addr", f"tcp://127.0.0.1:{control_port}",
                                "--zmq-info-addr", f"tcp://127.0.0.1:{info_port}", "--timeout", "300"],
                               capture_output=True, text=True, env=env)
        timings["stack_start_s"] = time.perf_counter() - t0
        if start.returncode != 0:
            raise RuntimeError(f"queue start failed:\n{start.stdout}\n{start.stderr}")
        stack = QueueStack(state)
        t0 = time.perf_counter()
        stack.open_environment(timeout=300)
        timings["environment_open_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = subprocess.run([*cli, "campaign", "run", str(CONFIG_FILE), "--state-dir", str(state), "--json",
                              str(out)], capture_output=True, text=True, env=env)
        timings["campaign_wall_s"] = time.perf_counter() - t0
        if run.returncode != 0:
            raise RuntimeError(f"campaign run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        result = json.loads(out.read_text())
        api = stack.api()
        try:
            history = api.history_get()["items"]
        finally:
            api.close()
        catalog = open_catalog(str(catalog_dir))
        record = catalog[result["record_uid"]]
        decisions, observations = record["decisions"].read(), record["observations"].read()
        runs = {r.metadata["start"]["uid"]: r for r in
                find_runs(catalog, campaign="fe_curie", plan_name="adaptive_compton").values()}
        time_scale = float(os.environ.get("BAYESBEAM_TIME_SCALE", "1e4"))
        items = []
        dec_t = np.asarray(decisions["time"].values, float)
        dec_uid = [str(u) for u in decisions["agent_suggestion_uid"].values]
        obs_t = np.asarray(observations["time"].values, float)
        obs_uid = [str(u) for u in observations["run_uid"].values]
        ours = [h for h in history if ((h.get("kwargs") or {}).get("md") or {}).get("campaign") == "fe_curie"]
        nan = math.nan
        for i, item in enumerate(ours):
            res = item["result"]
            (uid,) = res["run_uids"]
            r = runs[uid]
            start_doc, stop_doc = r.metadata["start"], r.metadata["stop"]
            primary = r["primary"].read()
            first = float(np.asarray(primary["time"].values, float)[0])
            beamtime = np.asarray(primary["beamtime"].values, float)
            post = r["posterior"].read()
            j = dec_uid.index(item["kwargs"]["md"]["agent_suggestion_uid"])
            obs = obs_t[obs_uid.index(uid)] if uid in obs_uid else nan
            nxt = dec_t[j + 1] if j + 1 < dec_t.size else nan
            row = {"temperature_k": float(start_doc.get("sample_temperature_k", nan)),
                   "target_std": float(start_doc["plan_args"]["target_std"]),
                   "cycles": int(post["cycles"].values[-1]), "mu_s_std": float(post["mu_s_std"].values[-1]),
                   "expected_cycles": int(decisions["expected_cycles"].values[j]), "beamtime_s": float(beamtime[-1]),
                   "decision_to_item_start": res["time_start"] - dec_t[j],
                   "item_to_run_start": start_doc["time"] - res["time_start"],
                   "run_start_to_first_count": first - start_doc["time"],
                   "item_to_first_count": first - res["time_start"],
                   "clock_share_first_count": float(beamtime[0]) / time_scale,
                   "run_stop_to_item_stop": res["time_stop"] - stop_doc["time"],
                   "stop_to_observation": obs - stop_doc["time"], "observation_to_next_decision": nxt - obs,
                   "stop_to_next_decision": nxt - stop_doc["time"],
                   "item_stop_to_next_item_start": (ours[i + 1]["result"]["time_start"] - res["time_stop"]
                                                    if i + 1 < len(ours) else nan)}
            row["item_to_first_count_minus_clock"] = row["item_to_first_count"] - row["clock_share_first_count"]
            items.append(row)
        return {"result": result, "timings": timings, "items": items, "time_scale": time_scale,
                "campaign_tail": run.stdout.strip().splitlines()[-1:], "work": str(work)}
    finally:
        t0 = time.perf_counter()
        stop = subprocess.run([*cli, "queue", "stop", "--state-dir", str(state), "--force"], capture_output=True,
                              text=True, env=env)
        timings["stack_stop_s"] = time.perf_counter() - t0
        if stop.returncode != 0:
            print(f"queue stop: {stop.stdout}\n{stop.stderr}", file=sys.stderr)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def print_part2(q: dict) -> None:
    res, t = q["result"], q["timings"]
    print(f"\nPart 2: one campaign through the queue (sim profile, clock ×{q['time_scale']:g}; truth T_c 1043 K)")
    print(f"T_c = {res['tc_mean']:.1f} ± {res['tc_std']:.2f} K (error {res['tc_mean'] - 1043.0:+.1f} K) after "
          f"{res['runs']} runs, {res['beamtime_s'] / 3600:.2f} h of beamtime; stop: {res['stop_reason']}")
    print(f"wall: stack start {t['stack_start_s']:.1f} s, environment open {t['environment_open_s']:.1f} s, "
          f"campaign end to end {t['campaign_wall_s']:.1f} s, stack stop {t.get('stack_stop_s', math.nan):.1f} s")
    print(f"\n{'item':>4s} {'T K':>7s} {'target':>7s} {'cycles':>6s} {'expected':>8s} {'std μB':>7s} "
          f"{'beamtime h':>10s} {'start→1st count s':>17s} {'stop→next decision s':>20s}")
    for i, r in enumerate(q["items"], 1):
        print(f"{i:4d} {r['temperature_k']:7.1f} {r['target_std']:7.3f} {r['cycles']:6d} {r['expected_cycles']:8d} "
              f"{r['mu_s_std']:7.4f} {r['beamtime_s'] / 3600:10.2f} {r['item_to_first_count']:17.3f} "
              f"{fmt(r['stop_to_next_decision'], '20.3f')}")
    print(f"\n{'per-item overhead (wall s)':56s} {'median':>8s} {'max':>8s} {'n':>4s}")
    for key, what in (("decision_to_item_start", "decision recorded → item start (item_add, queue start)"),
                      ("item_to_run_start", "item start → run start document"),
                      ("run_start_to_first_count", "run start → first count (first primary event)"),
                      ("item_to_first_count", "item start → first count"),
                      ("clock_share_first_count", "  of which the simulated clock (move + count)/scale"),
                      ("item_to_first_count_minus_clock", "  item start → first count, beyond the clock"),
                      ("run_stop_to_item_stop", "run stop → item stop (the manager's time_stop)"),
                      ("stop_to_observation", "run stop → observation recorded (campaign learnt it)"),
                      ("observation_to_next_decision", "observation → next decision recorded"),
                      ("stop_to_next_decision", "run stop → next decision recorded"),
                      ("item_stop_to_next_item_start", "item stop → next item start")):
        print(f"{what:56s} {_stats([r[key] for r in q['items']])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=100, help="simulated campaigns (≥ 20 for reported figures)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-queue", action="store_true", help="skip part 2 (the campaign through the queue)")
    ap.add_argument("--keep", action="store_true", help="keep part 2's state directory and catalog")
    ap.add_argument("--json", dest="json_file", default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    wall0 = time.perf_counter()
    print(f"bench_campaign: python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; rerun: python tests/bench/bench_campaign.py --campaigns {args.campaigns} "
          f"--seed {args.seed}" + (" --no-queue" if args.no_queue else ""))
    if args.campaigns < 20:
        print(f"note: {args.campaigns} < 20 campaigns: not the reported protocol")
    t0 = time.perf_counter()
    sigma1_info = simulator_sigma1(args.seed)
    print(f"σ₁ from the simulator: {sigma1_info['sigma1']:.4f} μB ({time.perf_counter() - t0:.1f} s)", flush=True)
    t0 = time.perf_counter()
    design = load_design()[0]
    curie_campaign(5.0, **design)  # builds (and caches) the shape table: the cold start
    table_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = simulate(args.campaigns, args.seed, sigma1_info["sigma1"])
    summary = summarise(results)
    print_part1(results, summary, args.campaigns, args.seed, sigma1_info, time.perf_counter() - t0, table_s)
    queue = None
    if not args.no_queue:
        print("\nPart 2: starting the queue stack ...", flush=True)
        queue = queue_campaign(args.keep)
        print_part2(queue)
        if args.keep:
            print(f"kept: {queue['work']}")
    print(f"\ntotal wall time {time.perf_counter() - wall0:.0f} s")
    if args.json_file:
        data = {"campaigns": args.campaigns, "seed": args.seed, "sigma1": sigma1_info, "summary": summary,
                "per_campaign": {k: [{kk: vv for kk, vv in r.items() if kk != "decisions"} for r in v]
                                 for k, v in results.items()},
                "queue": queue}
        Path(args.json_file).write_text(json.dumps(data, indent=2, default=float))


if __name__ == "__main__":
    main()
