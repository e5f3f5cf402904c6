"""Magnetic-Compton rehearsals on the simulated beamline.

``rehearse_run``: one full run through the RunEngine into the catalog (the record).
``rehearse_repeats``: the planning statistics over many simulated beamtimes; it drives the same
agent and the same sample physics without the RunEngine (DESIGN §8: the RunEngine manages a few
hundred events per second, too slow for hundreds of beamtimes), with the same cycle timing.
Both take a ``ComptonOptions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.compton.agent import SpinMomentAgent
from agent.core.stopping import crossing_time
from agent.core.words import plain
from bayesbeam.rehearsal.common import options_from, require, run_plan, whole
from bayesbeam.rehearsal.compton.options import CONVENTIONAL_CYCLES, ComptonOptions, make_agent
from plans.compton.flip_cycles import FLIP_PATTERN, adaptive_compton
from sim_devices.compton.beamline import ComptonBeamline, make_compton_beamline
from sim_devices.compton.samples import ComptonSample, compton_sample
from sim_devices.core.clock import BeamtimeSignal

__all__ = ["CONVENTIONAL_CYCLES", "ComptonOptions", "Rehearsal", "RepeatStatistics", "cycle_time_s", "make_agent",
           "rehearse_repeats", "rehearse_run", "simulate_beamtime", "simulated_cycles"]


@dataclass
class Rehearsal:
    """Outcome of one rehearsed beamtime (beamtimes in s)."""

    sample: ComptonSample
    agent: SpinMomentAgent
    stop_reason: str
    beamtime_s: float
    cycle_time_s: float
    uid: str | None = None
    discarded: list[dict[str, Any]] = field(default_factory=list)
    options: ComptonOptions = field(default_factory=ComptonOptions)
    live: Any = None  # the run's bayesbeam.live.LiveCompton (headless): the figure

    @property
    def conventional_beamtime_s(self) -> float:
        """Beamtime (s) of the fixed 136-cycle measurement at the same cycle time."""
        return CONVENTIONAL_CYCLES * self.cycle_time_s


def cycle_time_s(beamline: ComptonBeamline) -> float:
    """Beamtime of one ``+ − − +`` cycle after the first (s), as ``adaptive_compton`` spends it:
    four counts, two field reversals, two settles at an unchanged field, and one ring-current
    reading (its averaging time) before each count."""
    n = len(FLIP_PATTERN)
    reversals = sum(a != b for a, b in zip(FLIP_PATTERN, FLIP_PATTERN[1:] + FLIP_PATTERN[:1], strict=True))
    return (n * beamline.ge.preset_time.get() + reversals * beamline.magnet.flip_time_s.get()
            + (n - reversals) * beamline.magnet.settle_time_s.get() + n * beamline.ring.average_s.get())


def rehearse_run(RE, options: ComptonOptions | None = None, md: dict | None = None, beamline=None,
                 **legacy) -> Rehearsal:
    """One adaptive run through ``RE`` (whose subscriptions store it); returns its outcome.
    ``beamline``: devices to use instead of a fresh ``make_compton_beamline`` (then its own
    sample, seed, count time and clock apply). The options are checked before anything moves."""
    options = options_from(ComptonOptions, options, legacy, "rehearse_run")
    agent = options.agent()
    s = compton_sample(options.sample)
    bl = beamline or make_compton_beamline(options.sample, time_scale=options.time_scale, seed=options.seed,
                                           count_time_s=options.count_time_s)
    beamtime = BeamtimeSignal(bl.clock, name="beamtime")
    run_md = {"sample": s.name, "sample_description": s.description, "purpose": "rehearsal",
              "target_std": options.target_std, "target_quantity": options.quantity, "seed": options.seed,
              "truth_spin_moment_mub": s.spin_moment_mub, **(md or {})}
    from bayesbeam.live import LiveCompton

    live = LiveCompton(agent, show=False)
    token = RE.subscribe(live)
    try:
        uid, interruption = run_plan(RE, adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0.0,
                                                          beamtime=beamtime, md=run_md))
    finally:
        RE.unsubscribe(token)
    _, reason = agent.should_stop()
    reason = f"aborted: {interruption}" if interruption else reason or ""
    return Rehearsal(s, agent, reason, bl.clock.now, cycle_time_s(bl), uid, list(agent.failures), options, live)


def simulated_cycles(sample: ComptonSample, geometry, rng: np.random.Generator, count_time_s: float,
                     cycle_s: float):
    """Endless ``+ − − +`` cycles of Poisson spectra from the sample physics (the instrument's counts and live
    times at the reference current), as ``ingest`` points: the monitors are the live times (s), which is
    what the live-time-scaled monitor of a run is at a constant beam."""
    means = {sign: sample.expected_counts_live(geometry, sign, count_time_s) for sign in (1, -1)}
    live = np.array([means[sign][1] for sign in FLIP_PATTERN])
    cycle = 0
    while True:
        cycle += 1
        spectra = np.stack([rng.poisson(means[sign][0]) for sign in FLIP_PATTERN]).astype(float)
        yield {"_id": cycle, "spectra": spectra, "fields": FLIP_PATTERN, "monitors": live, "live_s": live,
               "count_time_s": len(FLIP_PATTERN) * count_time_s, "beamtime_s": cycle * cycle_s}


def simulate_beamtime(sample: ComptonSample, agent: SpinMomentAgent, rng: np.random.Generator,
                      geometry, count_time_s: float, cycle_s: float, max_cycles: int) -> tuple[str, float]:
    """Cycles of ``simulated_cycles`` straight into ``agent`` until it stops; returns (stop reason, beamtime s)."""
    agent.configure(geometry)
    for point, _ in zip(simulated_cycles(sample, geometry, rng, count_time_s, cycle_s), range(max_cycles),
                        strict=False):
        agent.ingest([point])
        stop, reason = agent.should_stop()
        if stop:
            return reason, point["beamtime_s"]
    return "budget: max cycles of the simulation", max_cycles * cycle_s


@dataclass
class RepeatStatistics:
    """Planning figures over many rehearsed beamtimes: per beamtime the valid cycles, beamtime (s),
    whether the stopped 68 % / 95 % intervals of μ_s cover the truth, the stop reason, the stopped posterior
    mean and std of μ_s (μB), the beamtime (s) at which the target std was crossed (interpolated between
    cycles, ``agent.core.stopping.crossing_time``; nan if never) and the systematic std of μ_s (μB,
    ``SpinMomentAgent.systematics``: κ calibration and multiple scattering)."""

    cycles: np.ndarray
    beamtime_s: np.ndarray
    covered68: np.ndarray
    covered95: np.ndarray
    reasons: list[str]
    truth: float
    cycle_time_s: float
    mu_s_mean: np.ndarray
    mu_s_std: np.ndarray
    crossing_s: np.ndarray
    sys_std: np.ndarray
    options: ComptonOptions = field(default_factory=ComptonOptions)

    def summary(self) -> dict[str, float]:
        """``repeats``; ``steps_median/_p10/_p90`` (valid cycles); ``hours_median/_p10/_p90`` and
        ``conventional_hours``; ``reached_fraction`` (stopped on the target std), ``coverage_68``,
        ``coverage_95`` (fractions 0–1 of beamtimes whose interval covers the true μ_s); ``bias``
        (μB, mean of stopped μ_s − truth) and ``bias_sigma`` (mean of (μ_s − truth) / std(μ_s)) with its standard
        error ``bias_sigma_se``; ``crossing_hours_median`` (the interpolated beamtime at the target, h);
        ``mu_s_sys_std_median`` (μB, systematic: κ calibration ⊕ multiple scattering, never in the stop)."""
        q10, q50, q90 = np.percentile(self.cycles, [10, 50, 90])
        h10, h50, h90 = np.percentile(self.beamtime_s, [10, 50, 90]) / 3600
        error = self.mu_s_mean - self.truth
        return {"repeats": len(self.cycles), "steps_median": float(q50), "steps_p10": float(q10),
                "steps_p90": float(q90), "hours_median": float(h50), "hours_p10": float(h10),
                "hours_p90": float(h90), "conventional_hours": CONVENTIONAL_CYCLES * self.cycle_time_s / 3600,
                "reached_fraction": float(np.mean([r.startswith("target_std") for r in self.reasons])),
                "coverage_68": float(self.covered68.mean()), "coverage_95": float(self.covered95.mean()),
                "bias": float(error.mean()), "bias_sigma": float(np.mean(error / self.mu_s_std)),
                "bias_sigma_se": float(np.std(error / self.mu_s_std) / np.sqrt(len(error))),
                "crossing_hours_median": float(np.nanmedian(self.crossing_s) / 3600) if np.any(np.isfinite(
                    self.crossing_s)) else float("nan"),
                "mu_s_sys_std_median": float(np.median(self.sys_std))}


def rehearse_repeats(options: ComptonOptions | None = None, repeats: int = 200, progress=None,
                     **legacy) -> RepeatStatistics:
    """Distribution of cycles/hours to the target over ``repeats`` simulated beamtimes, and coverage
    and bias of the stopped μ_s (the quantity with a model-free truth: the true area), whatever
    ``options.quantity`` the target is on. ``options.seed`` None means 0 (reproducible planning
    figures); ``options.time_scale`` is not used (no RunEngine, no waiting). ``progress()`` is called
    after each beamtime."""
    options = options_from(ComptonOptions, options, legacy, "rehearse_repeats")
    options.validate()
    require(whole(repeats, 1), f"repeats must be an integer >= 1, got {plain(repeats)}")
    s = compton_sample(options.sample)
    bl = make_compton_beamline(options.sample, time_scale=float("inf"), count_time_s=options.count_time_s)
    geometry, cyc = bl.ge.geometry(), cycle_time_s(bl)
    rng = np.random.default_rng(options.seed if options.seed is not None else 0)
    truth = s.spin_moment_mub
    cycles, times, c68, c95, reasons, means, stds, crossing, sys_std = [], [], [], [], [], [], [], [], []
    for _ in range(int(repeats)):
        agent = options.agent()
        reason, t = simulate_beamtime(s, agent, rng, geometry, options.count_time_s, cyc, options.max_cycles)
        rep = agent.history[-1]
        cycles.append(agent.cycles)
        times.append(t)
        reasons.append(reason)
        c68.append(rep["mu_s_lo68"] <= truth <= rep["mu_s_hi68"])
        c95.append(rep["mu_s_lo95"] <= truth <= rep["mu_s_hi95"])
        means.append(rep["mu_s_mean"])
        stds.append(rep["mu_s_std"])
        crossing.append(crossing_time([h["beamtime_s"] for h in agent.history],
                                      [h[f"{options.quantity}_std"] for h in agent.history], options.target_std))
        sys_std.append(agent.systematics()["total"])
        if progress is not None:
            progress()
    return RepeatStatistics(np.array(cycles), np.array(times), np.array(c68), np.array(c95), reasons, truth, cyc,
                            np.array(means), np.array(stds), np.array(crossing), np.array(sys_std), options)
