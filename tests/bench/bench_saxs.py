"""SAXS benchmarks, issue 14 (run on request: ``python tests/bench/bench_saxs.py [--n 200] [--n-drift 100]
[--seed 0] [--jobs 2] [--json out.json]``). The protocol below was fixed before any of its results were seen;
a reviewer changes the seed base, N and the number of processes (never the protocol).

Driven directly (no RunEngine, DESIGN §8): the simulator's fast path (``sim_devices.saxs.samples``:
``SAXSSample.frame``) and the agent (``agent.saxs.SAXSAgent``) with its own stop rule disabled
(``Budget(cycles=10**9)``); the stop rules are evaluated on the agent's history after every frame. The agent
is calibrated as the plan does it (``plans.saxs.frames.calibrate_from_cell`` from the stage's
``sim_devices.saxs.stage.cell_contents``). Detector ``pilatus-300k`` (``agent.saxs.geometry.GEOMETRIES``).

Beamtime (s), for every strategy alike: each frame its exposure + the detector's ``overhead_s``; each change of
cell slot ``settle_s`` + |Δx|/``speed_mm_s`` (``presets.toml`` ``[detector]``, ``[cell]``), the stage starting
on the sample slot (the simulated stage's default); the calibration frames and their moves are counted.

1. [stop] Presets ``silica-50nm`` and ``silica-pmma-core-shell``; frame exposures 1.0 s (the rehearsal default)
   and 0.01 s (fast framing); N (``--n``, default 200) measurements each, measurement i on the noise stream
   ``default_rng([seed + i, 0])``. A measurement: one frame each of empty, standard, buffer, then frames where
   ``agent.suggest(1)`` says. After each frame: KDE rule = ``KDEConverged(precision=0.01)``, posterior rule =
   ``all_of(ModelDecided(0.99), TargetStd("radius", 0.2))`` (nm); the first frame at which each fires is its
   stop (cap 200 frames in all, calibration included; a rule that never fires stops at the cap, counted).
   The measurement goes on until both fired. At each stop: frames (sample, buffer, total; measured, flagged ones
   included), beamtime, radius and pd intervals (68 %, 95 %), std, the leading model.
2. [conventional] The same N seeds, noise stream ``default_rng([seed + i, 1])``: empty, standard, then n_s sample
   and n_s buffer frames (1:1, one move between them: beamtime 2 + 2 n_s frames + moves sample→empty→standard→
   sample→buffer), analysed by the same agent. The data at n_s are ingested as sample/buffer pairs (the sums are
   the same as n_s sample frames followed by n_s buffer frames); std(radius) recorded after each n_s from 1 until
   1 beyond the first n_s at which it is ≤ 0.2 nm (cap 200). The smallest-n_s figures below need each curve only
   up to its first passage, provided std stays ≤ 0.2 nm afterwards: the extra point checks that (violations
   printed); where the answer is n_s = 1 it is observed directly, with no assumption. Conventional fixed
   exposure n* = the smallest n_s with median std ≤ 0.2 nm over the N measurements; n*95 = the smallest with
   ≥ 95 % of them ≤ 0.2 nm. Ratios: median agent frames (beamtime) to stop / the conventional protocol's at n*
   and at n*95, per rule.
3. [honesty] At each rule's stop over the N measurements: coverage of the 68 % and 95 % intervals of the radius
   (the sphere's radius, the core-shell's outer radius: ``truth()["radius_nm"]``) and of pd (only where the
   leading model reports it: the sphere; counted), with the binomial two-sided p-value against the nominal;
   the fraction of KDE stops with std(radius) > 0.2 nm there; the fraction where the posterior rule fired
   strictly before the KDE rule; the median ratio KDE frames / posterior frames (total frames); the
   model-decision accuracy (truth: sphere for silica-50nm, core_shell for the core-shell preset).
4. [drift] Preset ``silica-50nm-aggregating``, 1.0 s frames, ``--n-drift`` (default 100) measurements, stream
   ``default_rng([seed + i, 2])``; rules KDE (as above) and ``FramesConsistent(k=3)`` (the agent's default),
   measured until both fired (cap 200). "Converged on a changed pattern", two definitions, both reported:
   (a) the true aggregated fraction (``truth()``) at the end of the measurement minus that at the KDE stop
   ≥ 0.01 (≥ 1 % of the particles aggregated after the KDE rule declared the pattern converged), and the
   aggregated fraction at the KDE stop; (b) the radius 95 % interval at the KDE stop not covering the
   free-particle radius 25 nm. Also: how often ``FramesConsistent`` fired first (strictly before the KDE rule,
   or the KDE rule never fired), and the frames to each.
5. [cost] ``pilatus-1m``, silica-50nm, 1.0 s frames, one core (OMP/OpenBLAS/MKL threads 1 set before numpy and
   pyFAI are imported, and ``threadpool_limits(1)``), each in a fresh Python process (this script with
   ``--cost-worker``), twice: with the user's sasmodels compiled-model cache as it is, and with an empty one
   (``SAS_DLL_PATH`` a new directory: the C compilation included). Cold costs: imports, agent construction
   (reduction setup, the form-factor tables from sasmodels), the first frame's ingest (pyFAI CSR setup), the first
   sample frame's ingest (first posterior: global grid). Then frames where the agent says until 50 more sample
   frames: median and 95th percentile of ``agent.ingest`` per sample frame, and pyFAI ``integrate1d`` alone on
   the same frame right after it (the agent's integrator, bins and keywords: ``agent.red``); target ≤ 50 ms.

Every attempt is counted (no retries, no best-of). Parallel: ``--jobs`` processes (multiprocessing) over the
measurements, seed by seed (all configurations of seed i before seed i + 1); each finished measurement is
appended to ``--partial`` (JSON lines) at once, so an interrupted run can be summarised with
``--summarise FILE``: only the longest complete prefix of seeds (every configuration of seeds 0..k−1 done) is
used, i.e. exactly what ``--n k`` would have given; the N used is printed. The cost processes run alone, first.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

_T_START = time.perf_counter()

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(1)

PRESETS = ("silica-50nm", "silica-pmma-core-shell")
TRUE_MODEL = {"silica-50nm": "sphere", "silica-pmma-core-shell": "core_shell"}
EXPOSURES = (1.0, 0.01)
DETECTOR = "pilatus-300k"
COST_DETECTOR = "pilatus-1m"
DRIFT_PRESET = "silica-50nm-aggregating"
DRIFT_EXPOSURE = 1.0
FREE_RADIUS_NM = 25.0
CAP = 200
TARGET_NM = 0.2
KDE_PRECISION = 0.01
P_MODEL = 0.99
CALIBRATION = ("empty", "standard", "buffer")
COST_FRAMES = 50
COST_TARGET_MS = 50.0
STATS = ("mean", "std", "lo68", "hi68", "lo95", "hi95")


# ---------------------------------------------------------------------------------------------------------
# one simulated measurement
# ---------------------------------------------------------------------------------------------------------
_SAMPLES: dict = {}


def _sample(name):
    """One SAXSSample per preset and process (its expected-image cache kept), its dose reset per measurement."""
    from sim_devices.saxs.samples import saxs_sample

    if name not in _SAMPLES:
        _SAMPLES[name] = saxs_sample(name)
    s = _SAMPLES[name]
    s.reset()
    return s


class _Cell:
    """What ``calibrate_from_cell`` reads from the stage: its ``contents``."""

    def __init__(self, contents):
        self.contents = contents


class Measurement:
    """The agent, the simulated sample and the beamtime bookkeeping of one measurement."""

    def __init__(self, preset, exposure, rng, geometry=DETECTOR):
        from agent.core.stopping import Budget
        from agent.saxs import SAXSAgent
        from agent.saxs.geometry import GEOMETRIES
        from plans.saxs.frames import calibrate_from_cell
        from sim_devices.saxs.samples import SLOTS, presets
        from sim_devices.saxs.stage import cell_contents

        self.geo = GEOMETRIES[geometry]
        self.sample = _sample(preset)
        self.rng = rng
        self.t = float(exposure)
        self.agent = SAXSAgent(Budget(cycles=10**9), geometry=self.geo.config(), precision=KDE_PRECISION,
                               exposure_s=self.t, quantity="radius")
        calibrate_from_cell(self.agent, _Cell(cell_contents(preset, self.sample.buffer)))
        cell = presets()["cell"]
        self.slots, self.speed, self.settle = SLOTS, float(cell["speed_mm_s"]), float(cell["settle_s"])
        self.overhead = float(presets()["detector"]["overhead_s"])
        self.pos = "sample"
        self.beamtime = 0.0
        self.measured = {"sample": 0, "buffer": 0, "standard": 0, "empty": 0}
        self.n = 0

    def frame(self, kind):
        if kind != self.pos:
            self.beamtime += self.settle + abs(self.slots[kind] - self.slots[self.pos]) / self.speed
            self.pos = kind
        self.beamtime += self.t + self.overhead
        f = self.sample.frame(self.geo, kind, self.t, self.rng)
        self.n += 1
        self.measured[kind] += 1
        self.agent.ingest([{"_id": self.n, "kind": kind, "image": f.image, "exposure_s": self.t, "i0": f.i0,
                            "transmitted": f.transmitted, "beamtime_s": self.beamtime}])
        return f

    def snapshot(self, fired):
        r = self.agent.history[-1]
        out = {"fired": bool(fired), "frames": self.n, "sample_frames": self.measured["sample"],
               "buffer_frames": self.measured["buffer"], "accepted_sample": r["sample_frames"],
               "accepted_buffer": r["buffer_frames"], "flagged": r["flagged_frames"], "beamtime_s": self.beamtime,
               "model_best": r["model_best"], "model_prob_max": r["model_prob_max"],
               "aggregated_fraction": self.sample.truth()["aggregated_fraction"]}
        for q in ("radius", "pd"):
            for st in STATS:
                out[f"{q}_{st}"] = r[f"{q}_{st}"]
        return out


def adaptive_run(task):
    """Section 1 (or 4): one measurement with the agent choosing, both rules watched, until both fired."""
    from agent.core.stopping import ModelDecided, TargetStd, all_of
    from agent.saxs import FramesConsistent, KDEConverged

    preset, exposure, seed, stream = task
    m = Measurement(preset, exposure, np.random.default_rng([seed, stream]))
    if stream == 2:
        rules = {"kde": KDEConverged(precision=KDE_PRECISION), "drift": FramesConsistent(3)}
    else:
        rules = {"kde": KDEConverged(precision=KDE_PRECISION),
                 "posterior": all_of(ModelDecided(P_MODEL), TargetStd("radius", TARGET_NM))}
    stops = {}
    for k in range(CAP):
        kind = CALIBRATION[k] if k < len(CALIBRATION) else m.agent.suggest(1)[0]["cell"]
        m.frame(kind)
        for name, rule in rules.items():
            if name not in stops and rule.check(m.agent.history) is not None:
                stops[name] = m.snapshot(True)
        if len(stops) == len(rules):
            break
    for name in rules:
        stops.setdefault(name, m.snapshot(False))
    truth = m.sample.truth()
    return {"preset": preset, "exposure_s": exposure, "seed": seed, "stops": stops,
            "end_aggregated_fraction": truth["aggregated_fraction"], "end_frames": m.n,
            "truth": {"radius_nm": truth["radius_nm"], "pd": truth["pd"], "model": truth["model"]}}


def conventional_run(task):
    """Section 2: empty, standard, then sample/buffer pairs; std(radius) after each n_s."""
    preset, exposure, seed = task
    m = Measurement(preset, exposure, np.random.default_rng([seed, 1]))
    m.frame("empty")
    m.frame("standard")
    stds, models, first = [], [], None
    for n_s in range(1, CAP + 1):
        m.frame("sample")
        m.frame("buffer")
        r = m.agent.history[-1]
        stds.append(float(r["radius_std"]))
        models.append(r["model_best"])
        if first is None and stds[-1] <= TARGET_NM:
            first = n_s
        if first is not None and n_s >= first + 1:
            break
    return {"preset": preset, "exposure_s": exposure, "seed": seed, "stds": stds, "models": models,
            "first": first}


def conventional_beamtime(n_s, exposure):
    """Beamtime (s) of empty, standard, n_s sample, n_s buffer frames, moves from the sample slot included."""
    from sim_devices.saxs.samples import SLOTS, presets

    cell, det = presets()["cell"], presets()["detector"]
    path = ["sample", "empty", "standard", "sample", "buffer"]
    moves = sum(cell["settle_s"] + abs(SLOTS[b] - SLOTS[a]) / cell["speed_mm_s"]
                for a, b in zip(path, path[1:], strict=False))
    return (2 + 2 * n_s) * (exposure + det["overhead_s"]) + moves


def work(task):
    kind, index, rest = task[0], task[1], task[2:]
    t0 = time.perf_counter()
    out = conventional_run(rest) if kind == "conv" else adaptive_run(rest)
    out["kind"], out["index"], out["wall_s"] = kind, index, time.perf_counter() - t0
    return out


def make_tasks(seed, n, n_drift):
    tasks = []
    for i in range(max(n, n_drift)):
        if i < n:
            tasks += [("adaptive", i, p, e, seed + i, 0) for p in PRESETS for e in EXPOSURES]
            tasks += [("conv", i, p, e, seed + i) for p in PRESETS for e in EXPOSURES]
        if i < n_drift:
            tasks.append(("drift", i, DRIFT_PRESET, DRIFT_EXPOSURE, seed + i, 2))
    return tasks


def complete_prefix(res):
    """(results of the longest complete seed prefix, its N, its N drift)."""
    per = len(PRESETS) * len(EXPOSURES) * 2
    main, drift = {}, {}
    for r in res:
        (drift if r["kind"] == "drift" else main).setdefault(r["index"], []).append(r)
    k = 0
    while len(main.get(k, [])) == per:
        k += 1
    kd = 0
    while len(drift.get(kd, [])) == 1:
        kd += 1
    keep = [r for r in res
            if (r["kind"] != "drift" and r["index"] < k) or (r["kind"] == "drift" and r["index"] < kd)]
    return keep, k, kd


def git_state():
    """The code measured: HEAD and a hash of the uncommitted diff of agent/, sim_devices/, plans/."""
    import hashlib

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "agent", "sim_devices", "plans"], cwd=root,
                              capture_output=True, text=True).stdout
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "agent", "sim_devices",
                                    "plans"], cwd=root, capture_output=True, text=True).stdout.split()
        h = hashlib.sha256(diff.encode())
        for f in sorted(untracked):
            h.update(f.encode() + (root / f).read_bytes())
        return {"head": head, "dirty": bool(diff or untracked), "diff_sha256": h.hexdigest()[:16],
                "untracked": untracked}
    except OSError as exc:
        return {"error": str(exc)}


# ---------------------------------------------------------------------------------------------------------
# section 5: per-frame cost in a fresh process
# ---------------------------------------------------------------------------------------------------------
def cost_worker(seed):
    """Runs in a fresh process (``--cost-worker``); prints one JSON line."""
    out = {"import_numpy_s": time.perf_counter() - _T_START}
    t = time.perf_counter()
    from agent.core.stopping import Budget
    from agent.saxs import SAXSAgent
    from agent.saxs.geometry import GEOMETRIES
    from plans.saxs.frames import calibrate_from_cell
    from sim_devices.saxs.samples import saxs_sample
    from sim_devices.saxs.stage import cell_contents

    out["import_agent_s"] = time.perf_counter() - t
    geo = GEOMETRIES[COST_DETECTOR]
    s = saxs_sample("silica-50nm")
    rng = np.random.default_rng([seed, 3])
    t = time.perf_counter()
    agent = SAXSAgent(Budget(cycles=10**9), geometry=geo.config(), precision=KDE_PRECISION, exposure_s=1.0)
    out["construct_s"] = time.perf_counter() - t
    calibrate_from_cell(agent, _Cell(cell_contents("silica-50nm", s.buffer)))
    red = agent.red
    out["detector"] = {"name": geo.name, "shape": list(geo.shape), "pixels": int(geo.shape[0] * geo.shape[1]),
                       "active_pixels": int((~red.mask).sum()), "n_fine": red.n_fine, "group": red.group,
                       "method": list(red._kw["method"]), "unit": red._kw["unit"]}
    n, sample_ms, buffer_ms, pyfai_ms, sim_s = 0, [], [], [], []

    def ingest(kind):
        nonlocal n
        t = time.perf_counter()
        f = s.frame(geo, kind, 1.0, rng)
        sim_s.append(time.perf_counter() - t)
        n += 1
        t = time.perf_counter()
        agent.ingest([{"_id": n, "kind": kind, "image": f.image, "exposure_s": 1.0, "i0": f.i0,
                       "transmitted": f.transmitted, "beamtime_s": float(n)}])
        return f, time.perf_counter() - t

    for kind in CALIBRATION:
        _, dt = ingest(kind)
        out[f"first_{kind}_ingest_s"] = dt
    _, out["first_sample_ingest_s"] = ingest("sample")
    while len(sample_ms) < COST_FRAMES:
        kind = agent.suggest(1)[0]["cell"]
        f, dt = ingest(kind)
        (sample_ms if kind == "sample" else buffer_ms).append(1e3 * dt)
        if kind == "sample":
            t = time.perf_counter()
            red._ai.integrate1d(f.image, red.n_fine, normalization_factor=float(f.i0), **red._kw)
            pyfai_ms.append(1e3 * (time.perf_counter() - t))
    out.update(sample_ingest_ms=sample_ms, buffer_ingest_ms=buffer_ms, pyfai_ms=pyfai_ms,
               simulate_frame_median_s=float(np.median(sim_s)), frames=n)
    print(json.dumps(out, default=float))


def bench_cost(seed):
    """Two fresh processes: the user's sasmodels compiled-model cache as it is, then an empty one."""
    results = {}
    for label in ("sasmodels cache as is", "empty sasmodels cache"):
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as tmp:
            if label.startswith("empty"):
                env["SAS_DLL_PATH"] = tmp
            t = time.perf_counter()
            run = subprocess.run([sys.executable, __file__, "--cost-worker", "--seed", str(seed)], env=env,
                                 capture_output=True, text=True)
            wall = time.perf_counter() - t
        if run.returncode != 0:
            print(f"[cost] {label}: the worker failed:\n{run.stderr[-3000:]}")
            results[label] = {"error": run.stderr[-3000:]}
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        r["process_wall_s"] = wall
        results[label] = r
    for label, r in results.items():
        if "error" in r:
            continue
        d = r["detector"]
        print(f"[cost] {label}: fresh process {r['process_wall_s']:.1f} s wall; {d['name']} {d['shape'][0]}×"
              f"{d['shape'][1]} ({d['active_pixels']} active px), pyFAI {tuple(d['method'])} {d['unit']}, "
              f"{d['n_fine']} bins")
        print(f"[cost]   cold: import numpy+threadpoolctl {r['import_numpy_s']:.2f} s, import agent/sim "
              f"{r['import_agent_s']:.2f} s, construct agent (reduction, sasmodels tables) {r['construct_s']:.2f} s, "
              f"first frame ingest (empty: pyFAI CSR setup) {r['first_empty_ingest_s']:.2f} s, standard "
              f"{r['first_standard_ingest_s']:.3f} s, buffer {r['first_buffer_ingest_s']:.3f} s, first sample "
              f"frame (first posterior) {r['first_sample_ingest_s']:.2f} s")
    warm = results.get("sasmodels cache as is", {})
    if "sample_ingest_ms" in warm:
        ing, pf = np.array(warm["sample_ingest_ms"]), np.array(warm["pyfai_ms"])
        buf = np.array(warm["buffer_ingest_ms"])
        rows = [("agent.ingest, sample frame", ing), ("pyFAI integrate1d alone", pf)]
        if buf.size:
            rows.append(("agent.ingest, buffer frame", buf))
        print(f"[cost] warm, {len(ing)} sample frames ({warm['frames']} frames in all; simulating a frame "
              f"{1e3 * warm['simulate_frame_median_s']:.0f} ms, not counted):")
        print("[cost]   what                          |   n | median ms | 95th pct ms")
        for name, a in rows:
            print(f"[cost]   {name:29s} | {a.size:3d} | {np.median(a):9.1f} | {np.percentile(a, 95):11.1f}")
        print(f"[cost]   ratio agent.ingest / pyFAI alone (medians) {np.median(ing) / np.median(pf):.1f}; "
              f"agent.ingest median / target {COST_TARGET_MS:g} ms = {np.median(ing) / COST_TARGET_MS:.2f} "
              f"({'meets' if np.median(ing) <= COST_TARGET_MS else 'MISSES'} the target; 95th pct "
              f"{np.percentile(ing, 95) / COST_TARGET_MS:.2f}×)")
    return results


# ---------------------------------------------------------------------------------------------------------
# statistics and tables
# ---------------------------------------------------------------------------------------------------------
def binom_p(k, n, p):
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), p).pvalue) if n else float("nan")


def covers(s, q, truth, level):
    lo, hi = s[f"{q}_lo{level}"], s[f"{q}_hi{level}"]
    return bool(lo <= truth <= hi)


def stop_table(runs, conv_fig, label):
    """Sections 1–3 figures for one (preset, exposure)."""
    out = {}
    truth = runs[0]["truth"]
    for rule in ("kde", "posterior"):
        st = [r["stops"][rule] for r in runs]
        col = {k: np.array([s[k] for s in st], float) for k in ("frames", "sample_frames", "buffer_frames",
                                                              "beamtime_s", "radius_std", "flagged")}
        never = sum(not s["fired"] for s in st)
        cov = {}
        for q, tv in (("radius", truth["radius_nm"]), ("pd", truth["pd"])):
            has = [s for s in st if np.isfinite(s[f"{q}_lo68"])]
            for lv, nominal in ((68, 0.6827), (95, 0.95)):
                k = sum(covers(s, q, tv, lv) for s in has)
                cov[f"{q}{lv}"] = {"n": len(has), "covered": k, "rate": k / len(has) if has else float("nan"),
                                   "p_binom": binom_p(k, len(has), nominal)}
            z = np.array([(s[f"{q}_mean"] - tv) / s[f"{q}_std"] for s in has]) if has else np.array([])
            cov[f"{q}_z_mean"] = float(z.mean()) if z.size else float("nan")
            cov[f"{q}_z_sd"] = float(z.std()) if z.size else float("nan")
            cov[f"{q}_mean_median"] = float(np.median([s[f"{q}_mean"] for s in has])) if has else float("nan")
        models = [s["model_best"] for s in st]
        acc = float(np.mean([mb == TRUE_MODEL[runs[0]["preset"]] for mb in models]))
        out[rule] = {"n": len(st), "never_fired": never,
                     **{f"median_{k}": float(np.median(v)) for k, v in col.items()},
                     "iqr_frames": [float(np.percentile(col["frames"], 25)), float(np.percentile(col["frames"], 75))],
                     "max_frames": float(col["frames"].max()), "coverage": cov, "model_accuracy": acc,
                     "models": {m: models.count(m) for m in sorted(set(models))},
                     "frames_list": col["frames"].tolist()}
        for key in ("n_star", "n_star95"):
            ns = conv_fig[key]
            if ns is None:
                out[rule][f"ratio_frames_{key}"] = out[rule][f"ratio_beamtime_{key}"] = float("nan")
                continue
            out[rule][f"ratio_frames_{key}"] = out[rule]["median_frames"] / (2 + 2 * ns)
            out[rule][f"ratio_beamtime_{key}"] = out[rule]["median_beamtime_s"] / conv_fig[f"{key}_beamtime_s"]
    kde, post = [r["stops"]["kde"] for r in runs], [r["stops"]["posterior"] for r in runs]
    out["kde_std_above_target"] = float(np.mean([s["radius_std"] > TARGET_NM for s in kde]))
    out["kde_std_nan"] = int(sum(not np.isfinite(s["radius_std"]) for s in kde))
    out["posterior_strictly_first"] = float(np.mean([p["frames"] < k["frames"]
                                                     for p, k in zip(post, kde, strict=True)]))
    out["same_frame"] = float(np.mean([p["frames"] == k["frames"] for p, k in zip(post, kde, strict=True)]))
    out["median_ratio_kde_over_posterior_frames"] = float(np.median([k["frames"] / p["frames"]
                                                                    for p, k in zip(post, kde, strict=True)]))
    return out


def conventional_figures(conv, exposure):
    """n* (median std ≤ target) and n*95 (≥ 95 % ≤ target) from the per-measurement curves."""
    n = len(conv)
    longest = max(len(c["stds"]) for c in conv)
    mat = np.full((n, longest), np.nan)
    for i, c in enumerate(conv):
        mat[i, : len(c["stds"])] = c["stds"]
    # after a curve's end (first passage + 2 or the cap): assumed ≤ target if it ended below, else above
    reached = np.zeros((n, longest), bool)
    violations = 0
    for i, c in enumerate(conv):
        k = len(c["stds"])
        reached[i, :k] = mat[i, :k] <= TARGET_NM
        if c["first"] is not None:
            reached[i, k:] = True
            violations += int(np.sum(mat[i, c["first"] - 1: k] > TARGET_NM))
    frac = reached.mean(axis=0)
    n_star = next((j + 1 for j in range(longest) if frac[j] >= 0.5), None)
    n_star95 = next((j + 1 for j in range(longest) if frac[j] >= 0.95), None)
    med1 = float(np.nanmedian(mat[:, 0]))
    out = {"n": n, "n_star": n_star, "n_star95": n_star95, "never_reached": sum(c["first"] is None for c in conv),
           "violations_after_first_passage": violations, "median_std_at_1": med1,
           "p95_std_at_1": float(np.nanpercentile(mat[:, 0], 95)), "fraction_reached_at": frac[:5].tolist(),
           "first_passage_median": float(np.median([c["first"] or np.inf for c in conv]))}
    for key in ("n_star", "n_star95"):
        ns = out[key]
        out[f"{key}_frames"] = None if ns is None else 2 + 2 * ns
        out[f"{key}_beamtime_s"] = None if ns is None else conventional_beamtime(ns, exposure)
        if ns is not None:
            col = mat[:, ns - 1]
            out[f"{key}_median_std"] = float(np.nanmedian(col))
    return out


def print_stop(preset, exposure, fig, conv):
    tag = f"{preset} {exposure:g} s"
    print(f"\n[stop] {tag}: N = {fig['kde']['n']}; frames to stop (total, calibration included), median [IQR]; "
          f"beamtime median")
    print("[stop]   rule      | never fired | frames med [IQR]   | max | sample | buffer | flagged | beamtime s |"
          " std(R) nm med")
    for rule in ("kde", "posterior"):
        f = fig[rule]
        print(f"[stop]   {rule:9s} | {f['never_fired']:11d} | {f['median_frames']:5.1f} [{f['iqr_frames'][0]:4.0f}–"
              f"{f['iqr_frames'][1]:4.0f}] | {f['max_frames']:3.0f} | {f['median_sample_frames']:6.1f} | "
              f"{f['median_buffer_frames']:6.1f} | {f['median_flagged']:7.1f} | {f['median_beamtime_s']:10.2f} | "
              f"{f['median_radius_std']:.4g}")
    c = conv
    print(f"[conventional] {tag}: std(radius) at n_s = 1: median {c['median_std_at_1']:.4g} nm (95th pct "
          f"{c['p95_std_at_1']:.4g}); fraction ≤ {TARGET_NM} nm at n_s = 1..{len(c['fraction_reached_at'])}: "
          + ", ".join(f"{v:.3f}" for v in c["fraction_reached_at"])
          + f"; never reached within {CAP}: {c['never_reached']}; back above the target after the first passage: "
          f"{c['violations_after_first_passage']}")
    for key, what in (("n_star", f"median ≤ {TARGET_NM} nm"), ("n_star95", f"≥ 95 % ≤ {TARGET_NM} nm")):
        if c[key] is None:
            print(f"[conventional]   {what}: not reached within {CAP} pairs")
            continue
        print(f"[conventional]   {what}: n_s = {c[key]} → {c[f'{key}_frames']} frames, "
              f"{c[f'{key}_beamtime_s']:.2f} s beamtime")
    print("[ratio]   rule      | frames / conv(n*) | beamtime / conv(n*) | frames / conv(n*95) | beamtime / conv(n*95)")
    for rule in ("kde", "posterior"):
        f = fig[rule]
        print(f"[ratio]   {rule:9s} | {f['ratio_frames_n_star']:17.2f} | {f['ratio_beamtime_n_star']:19.2f} | "
              f"{f['ratio_frames_n_star95']:19.2f} | {f['ratio_beamtime_n_star95']:21.2f}")
    print("[honesty]   rule      | quantity | n   | cov68 (p binom) | cov95 (p binom) | mean z (sd z) | median est. | "
          "model accuracy")
    for rule in ("kde", "posterior"):
        f = fig[rule]
        for q in ("radius", "pd"):
            cv = f["coverage"]
            a, b = cv[f"{q}68"], cv[f"{q}95"]
            print(f"[honesty]   {rule:9s} | {q:8s} | {a['n']:3d} | {a['rate']:.3f} ({a['p_binom']:.2g})"
                  f"{'':3s} | {b['rate']:.3f} ({b['p_binom']:.2g}){'':3s} | {cv[f'{q}_z_mean']:+.2f} "
                  f"({cv[f'{q}_z_sd']:.2f}) | {cv[f'{q}_mean_median']:.4g} | "
                  + (f"{f['model_accuracy']:.3f} {f['models']}" if q == "radius" else ""))
    print(f"[honesty]   KDE stops with std(radius) > {TARGET_NM} nm there: {fig['kde_std_above_target']:.3f} "
          f"(NaN std: {fig['kde_std_nan']}); posterior rule strictly before the KDE rule: "
          f"{fig['posterior_strictly_first']:.3f} (same frame {fig['same_frame']:.3f}); median KDE frames / posterior "
          f"frames {fig['median_ratio_kde_over_posterior_frames']:.2f}")


def drift_figures(runs):
    kde = [r["stops"]["kde"] for r in runs]
    dr = [r["stops"]["drift"] for r in runs]
    n = len(runs)
    fired = [s["fired"] for s in kde]
    changed_a = [s["fired"] and r["end_aggregated_fraction"] - s["aggregated_fraction"] >= 0.01
                 for s, r in zip(kde, runs, strict=True)]
    not_cover = [s["fired"] and not covers(s, "radius", FREE_RADIUS_NM, 95) for s in kde]
    drift_first = [d["fired"] and (not k["fired"] or d["frames"] < k["frames"]) for k, d in zip(kde, dr, strict=True)]
    fk = [s["frames"] for s in kde if s["fired"]]
    fd = [s["frames"] for s in dr if s["fired"]]
    return {"n": n, "kde_fired": int(sum(fired)), "drift_fired": int(sum(d["fired"] for d in dr)),
            "kde_changed_pattern_a": float(np.mean(changed_a)), "kde_changed_a_count": int(sum(changed_a)),
            "kde_radius95_misses_free": float(np.mean(not_cover)), "kde_misses_count": int(sum(not_cover)),
            "agg_at_kde_stop_median": float(np.median([s["aggregated_fraction"] for s in kde if s["fired"]]))
            if fk else float("nan"),
            "agg_at_end_median": float(np.median([r["end_aggregated_fraction"] for r in runs])),
            "drift_first": float(np.mean(drift_first)), "drift_first_count": int(sum(drift_first)),
            "kde_frames_median": float(np.median(fk)) if fk else float("nan"),
            "kde_frames_iqr": [float(np.percentile(fk, 25)), float(np.percentile(fk, 75))] if fk else None,
            "drift_frames_median": float(np.median(fd)) if fd else float("nan"),
            "drift_frames_iqr": [float(np.percentile(fd, 25)), float(np.percentile(fd, 75))] if fd else None,
            "kde_radius_median": float(np.median([s["radius_mean"] for s in kde if s["fired"]])) if fk else
            float("nan"),
            "kde_sample_frames_median": float(np.median([s["sample_frames"] for s in kde if s["fired"]])) if fk else
            float("nan"),
            "flagged_at_drift_stop_median": float(np.median([d["flagged"] for d in dr]))}


def print_drift(d):
    print(f"\n[drift] {DRIFT_PRESET} {DRIFT_EXPOSURE:g} s frames, N = {d['n']}: KDE rule fired in {d['kde_fired']}, "
          f"FramesConsistent(3) in {d['drift_fired']} (cap {CAP} frames)")
    print("[drift]   rule              | fired | frames med [IQR]")
    for name, key in (("KDEConverged", "kde"), ("FramesConsistent", "drift")):
        iqr = d[f"{key}_frames_iqr"]
        print(f"[drift]   {name:17s} | {d[f'{key}_fired']:5d} | {d[f'{key}_frames_median']:.1f} "
              + (f"[{iqr[0]:.0f}–{iqr[1]:.0f}]" if iqr else ""))
    print(f"[drift]   KDE stops followed by ≥ 1 % more aggregation (def. a): {d['kde_changed_a_count']}/{d['n']} = "
          f"{d['kde_changed_pattern_a']:.3f}; aggregated fraction at the KDE stop median "
          f"{d['agg_at_kde_stop_median']:.4f}, at the end {d['agg_at_end_median']:.4f}")
    print(f"[drift]   KDE stops whose radius 95 % interval misses the free-particle 25 nm (def. b): "
          f"{d['kde_misses_count']}/{d['n']} = {d['kde_radius95_misses_free']:.3f}; radius at the KDE stop median "
          f"{d['kde_radius_median']:.4g} nm ({d['kde_sample_frames_median']:.0f} sample frames)")
    print(f"[drift]   FramesConsistent first (strictly before the KDE rule, or the KDE rule never fired): "
          f"{d['drift_first_count']}/{d['n']} = {d['drift_first']:.3f}; flagged frames at its stop median "
          f"{d['flagged_at_drift_stop_median']:.0f}")


def summarise(res, n, n_drift, data):
    data["N"], data["N_drift"] = n, n_drift
    data["stop"], data["conventional"] = {}, {}
    for p in PRESETS:
        for e in EXPOSURES:
            key = f"{p} {e:g} s"
            runs = [r for r in res if r["kind"] == "adaptive" and r["preset"] == p and r["exposure_s"] == e]
            conv = [r for r in res if r["kind"] == "conv" and r["preset"] == p and r["exposure_s"] == e]
            if not runs:
                continue
            cf = conventional_figures(conv, e)
            fig = stop_table(runs, cf, key)
            print_stop(p, e, fig, cf)
            data["stop"][key], data["conventional"][key] = fig, cf
    drift = [r for r in res if r["kind"] == "drift"]
    if drift:
        data["drift"] = drift_figures(drift)
        print_drift(data["drift"])
    data["runs"] = res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="simulated measurements per preset and exposure")
    ap.add_argument("--n-drift", type=int, default=100, help="simulated measurements of the drifting preset")
    ap.add_argument("--seed", type=int, default=0, help="seed base: measurement i uses seed + i")
    ap.add_argument("--jobs", type=int, default=2, help="processes")
    ap.add_argument("--json", dest="json_file", default=None, help="also write the figures as JSON")
    ap.add_argument("--skip-cost", action="store_true", help="leave out section 5")
    ap.add_argument("--partial", default=None,
                    help="JSON-lines file of finished measurements (default: next to --json)")
    ap.add_argument("--summarise", default=None, help="summarise a --partial file of an interrupted run and exit")
    ap.add_argument("--protocol", choices=("v1", "v2"), default="v1",
                    help="v1: the issue's target (std(radius) 0.2 nm, KDE precision 0.01) at 1 s and 0.01 s frames; "
                         "v2, "
                         "fixed after v1 showed every rule stopping at its first possible frame: 0.01 s frames, "
                         "std(radius) 0.002 nm, KDE precision 0.001 (tens of frames to either stop)")
    ap.add_argument("--cost-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.protocol == "v2":  # module constants, read by the forked workers
        global EXPOSURES, TARGET_NM, KDE_PRECISION
        EXPOSURES, TARGET_NM, KDE_PRECISION = (0.01,), 0.002, 0.001
    if args.cost_worker:
        cost_worker(args.seed)
        return
    if args.summarise:
        res = [json.loads(line) for line in Path(args.summarise).read_text().splitlines() if line.strip()]
        keep, k, kd = complete_prefix(res)
        print(f"[summarise] {args.summarise}: {len(res)} measurements; complete seed prefix N = {k} "
              f"(of {args.n} asked), N drift = {kd} (of {args.n_drift}); {len(res) - len(keep)} later ones left out")
        data = {"args": vars(args), "protocol": __doc__, "code": git_state(), "partial": True}
        summarise(keep, k, kd, data)
        if args.json_file:
            Path(args.json_file).write_text(json.dumps(data, indent=1, default=float))
            print(f"[json] {args.json_file}")
        return
    from multiprocessing import Pool

    import pyFAI
    import sasmodels

    t_all = time.perf_counter()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}; Python {platform.python_version()}, numpy {np.__version__}, pyFAI "
          f"{pyFAI.version}, sasmodels {sasmodels.__version__}; seed base {args.seed}, N {args.n}, N drift "
          f"{args.n_drift}, jobs {args.jobs}")
    data = {"args": vars(args), "protocol": __doc__, "code": git_state()}
    print(f"code: {data['code']}")
    if not args.skip_cost:
        t = time.perf_counter()
        data["cost"] = bench_cost(args.seed)
        print(f"[cost] [{time.perf_counter() - t:.0f} s]")

    tasks = make_tasks(args.seed, args.n, args.n_drift)
    partial = Path(args.partial or (str(args.json_file or "/tmp/bench_saxs") + ".partial.jsonl"))
    partial.write_text("")
    print(f"[runs] {len(tasks)} measurements, each appended to {partial} when done", flush=True)
    t = time.perf_counter()
    res = []
    with Pool(args.jobs) as pool, partial.open("a") as fh:
        for r in pool.imap(work, tasks, chunksize=1):
            res.append(r)
            fh.write(json.dumps(r, default=float) + "\n")
            fh.flush()
            if len(res) % 100 == 0:
                print(f"[runs]   {len(res)}/{len(tasks)} [{time.perf_counter() - t:.0f} s]", flush=True)
    wall = time.perf_counter() - t
    cpu = sum(r["wall_s"] for r in res)
    print(f"\n[runs] {len(tasks)} simulated measurements in {wall:.0f} s wall ({cpu:.0f} s summed over the "
          f"{args.jobs} processes)")
    data["runs_wall_s"] = wall
    summarise(res, args.n, args.n_drift, data)
    data["wall_s"] = time.perf_counter() - t_all
    print(f"\n[total] {data['wall_s']:.0f} s wall")
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(data, indent=1, default=float))
        print(f"[json] {args.json_file}")


if __name__ == "__main__":
    main()
