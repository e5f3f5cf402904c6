"""Fly-scan XAS (issue 13): beamtime to a target std of the edge position (0.05 eV) for the designed speed
profile (``FlyXASAgent``) against the constant-speed fly scan reconstructed with the same model, leave-one-out
over Fe K standards.

Protocol (fixed before looking at any result):
* For each of the first ``--standards`` standards (its own spectrum left out of the prior), one adaptive fly
  run on the simulated end station (``SimFlyScaler``: the chambers' physics integrated over each 0.1 eV bin,
  Poisson, seed = ``--seed`` + index), sweeps always upward 7076.2-7181.2 eV, return moves and settles
  counted, until std(edge_position) <= 0.05 eV or ``MAX_SWEEPS`` sweeps.
* Baseline, judged by the same model: the agent's final posterior (its amplitude, edge shift, prior scale,
  noise) conditioned from scratch on a constant-speed sweep of the same bins (``agent.xas.baselines.fly_scan``),
  its speed chosen by bisection so the quantity's delta-method std at the final posterior mean just reaches the
  target (``beamtime_to``: one sweep + one settle). A run that did not stop on its target counts as inf.
* Also printed: |mean - truth| / std at the stop (the truth: the quantity of the true spectrum).
Run: OPENBLAS_NUM_THREADS=1 python tests/bench/bench_xas_fly.py [--standards 10] [--seed 0] [--jobs 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from parallel import pool_map  # noqa: E402  (tests/bench/parallel.py: the script's folder is on the path)

from agent.xas.baselines import beamtime_to, fly_scan  # noqa: E402
from agent.xas.fly import fly_xas_agent  # noqa: E402
from agent.xas.prior import SpectraLibrary  # noqa: E402
from sim_devices.core.clock import SimClock  # noqa: E402
from sim_devices.xas import make_xas_endstation  # noqa: E402
from sim_devices.xas.fly import fly_scaler  # noqa: E402

TARGET = 0.05
MAX_SWEEPS = 30


def one(args):
    name, seed = args
    t0 = time.perf_counter()
    es = make_xas_endstation(name, SimClock(float("inf")), seed=seed)
    fly = fly_scaler(es)
    agent = fly_xas_agent(exclude=name, quantity="edge_position", target_std=TARGET, max_sweeps=MAX_SWEEPS)
    truth = float(agent.quantity.values(es.sample.mu(agent.post.energy)[None, :])[0, 0])
    if not np.isfinite(truth):
        return {"name": name, "skipped": True}
    agent.at(es.mono.position)
    while not agent.should_stop()[0]:
        (s,) = agent.suggest(1)
        es.mono.set(s["start"])
        fly.start_eV.put(s["start"])
        fly.bin_eV.put(s["bin_eV"])
        fly.segments.put([x for seg in s["segments"] for x in seg])
        st = fly.trigger()
        st.wait(60)
        agent.ingest([{"_id": s["_id"], "energies": fly.energy.get(), "i0": fly.i0.get(), "it": fly.it.get(),
                       "dwell": fly.dwell.get()}])
    rep, reason = agent.report(), agent.should_stop()[1]
    reached = reason.startswith("target_std")
    weights, floor = agent.quantity.evaluate(agent.post.mean)[1], float(agent.quantity.floor_std.max())
    scale, base = beamtime_to(agent.post, agent.noise, agent.cost, fly_scan(agent.post.energy), TARGET, weights, floor)
    assert abs(rep["beamtime_s"] - es.mono.clock.now) < 1e-6 * max(1.0, es.mono.clock.now)
    return {"name": name, "skipped": False, "beamtime": rep["beamtime_s"] if reached else np.inf, "base": base,
            "const_speed": 0.1 / scale if np.isfinite(scale) else 0.0, "sweeps": rep["sweeps"],
            "z": (rep["edge_position_mean"] - truth) / rep["edge_position_std"], "wall": time.perf_counter() - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--standards", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    names = SpectraLibrary.from_csv().names[: args.standards]
    work = [(n, args.seed + i) for i, n in enumerate(names)]
    res, wall = pool_map(one, work, args.jobs)
    print(f"{len(work)} standards in {wall:.0f} s wall, seed {args.seed}, "
          f"target std(edge_position) {TARGET} eV")
    print(f"{'standard':24s} {'fly designed s':>14s} {'sweeps':>6s} {'const-speed s':>13s} {'(eV/s)':>7s} "
          f"{'ratio':>6s} {'z':>6s}")
    rs = [r for r in res if not r["skipped"]]
    for r in rs:
        print(f"{r['name']:24s} {r['beamtime']:14.1f} {r['sweeps']:6d} {r['base']:13.1f} {r['const_speed']:7.3f} "
              f"{r['beamtime'] / r['base']:6.3f} {r['z']:+6.2f}")
    ratio = np.array([r["beamtime"] / r["base"] for r in rs])
    bt = np.array([r["beamtime"] for r in rs])
    cover = np.mean(np.abs([r["z"] for r in rs]) <= 1.96)
    print(f"reached {np.isfinite(bt).sum()}/{len(rs)}; designed / constant-speed beamtime: median "
          f"{np.median(ratio):.3f} (range {ratio.min():.3f}-{ratio.max():.3f}); |z| <= 1.96 in {cover:.0%}; "
          f"skipped {len(res) - len(rs)}")


if __name__ == "__main__":
    main()
