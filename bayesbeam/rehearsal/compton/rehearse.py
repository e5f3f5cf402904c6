"""Magnetic-Compton rehearsals on the simulated beamline.

``rehearse_run``: one full run through the RunEngine into the catalog (the record).
``rehearse_repeats``: the planning statistics over many simulated beamtimes; it drives the same
agent and the same sample physics without the RunEngine (DESIGN §8: the RunEngine manages a few
hundred events per second, too slow for hundreds of beamtimes), with the same cycle timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.compton.agent import SpinMomentAgent, spin_moment_agent
from plans.compton.flip_cycles import FLIP_PATTERN, adaptive_compton
from sim_devices.compton.beamline import ComptonBeamline, make_compton_beamline
from sim_devices.compton.samples import ComptonSample, compton_sample
from sim_devices.core.clock import BeamtimeSignal

CONVENTIONAL_CYCLES = 136  # the seed's fixed Fe measurement


@dataclass
class Rehearsal:
    """Outcome of one rehearsed beamtime."""

    sample: ComptonSample
    agent: SpinMomentAgent
    stop_reason: str
    beamtime_s: float
    cycle_time_s: float
    uid: str | None = None
    discarded: list[dict[str, Any]] = field(default_factory=list)

    @property
    def conventional_beamtime_s(self) -> float:
        """Beamtime (s) of the fixed 136-cycle measurement at the same cycle time."""
        return CONVENTIONAL_CYCLES * self.cycle_time_s


def make_agent(sample: ComptonSample, target_std: float, quantity: str = "mu_s",
               max_cycles: int = CONVENTIONAL_CYCLES, plateau=None) -> SpinMomentAgent:
    """The agent a user would configure for ``sample``; validates the arguments before anything moves."""
    return spin_moment_agent(target_std, quantity=quantity, max_cycles=max_cycles, plateau=plateau,
                             element=sample.element, orbitals=sample.orbitals)


def cycle_time_s(beamline: ComptonBeamline) -> float:
    """Beamtime of one ``+ − − +`` cycle after the first (s), as ``adaptive_compton`` spends it:
    four counts, two field reversals, two settles at an unchanged field, and one ring-current
    reading (its averaging time) before each count."""
    n = len(FLIP_PATTERN)
    reversals = sum(a != b for a, b in zip(FLIP_PATTERN, FLIP_PATTERN[1:] + FLIP_PATTERN[:1], strict=True))
    return (n * beamline.ge.preset_time.get() + reversals * beamline.magnet.flip_time_s.get()
            + (n - reversals) * beamline.magnet.settle_time_s.get() + n * beamline.ring.average_s.get())



def rehearse_run(RE, sample: str = "fe", target_std: float = 0.01, quantity: str = "mu_s",
                 max_cycles: int = CONVENTIONAL_CYCLES, count_time_s: float = 60.0, seed: int | None = None,
                 time_scale: float = 1e4, plateau=None, md: dict | None = None, beamline=None) -> Rehearsal:
    """One adaptive run through ``RE`` (whose subscriptions store it); returns its outcome."""
    s = compton_sample(sample)
    agent = make_agent(s, target_std, quantity, max_cycles, plateau)
    bl = beamline or make_compton_beamline(sample, time_scale=time_scale, seed=seed, count_time_s=count_time_s)
    beamtime = BeamtimeSignal(bl.clock, name="beamtime")
    run_md = {"sample": s.name, "sample_description": s.description, "purpose": "rehearsal",
              "target_std": target_std, "target_quantity": quantity, "seed": seed,
              "truth_spin_moment_mub": s.spin_moment_mub, **(md or {})}
    uids = RE(adaptive_compton([bl.ge], bl.magnet, agent, ring=bl.ring, beam_poll_s=0.0, beamtime=beamtime,
                               md=run_md))
    stop_ok, reason = agent.should_stop()
    return Rehearsal(s, agent, reason or "", bl.clock.now, cycle_time_s(bl), uids[0] if uids else None,
                     list(agent.failures))


def simulate_beamtime(sample: ComptonSample, agent: SpinMomentAgent, rng: np.random.Generator,
                      geometry, count_time_s: float, cycle_s: float, max_cycles: int) -> tuple[str, float]:
    """Cycles of Poisson spectra from the sample physics straight into ``agent`` until it stops;
    returns (stop reason, beamtime s)."""
    agent.configure(geometry)
    means = {sign: sample.expected_counts(geometry, sign, count_time_s) for sign in (1, -1)}
    for cycle in range(1, max_cycles + 1):
        spectra = np.stack([rng.poisson(means[sign]) for sign in FLIP_PATTERN]).astype(float)
        agent.ingest([{"_id": cycle, "spectra": spectra, "fields": FLIP_PATTERN,
                       "monitors": np.ones(len(FLIP_PATTERN)), "count_time_s": len(FLIP_PATTERN) * count_time_s,
                       "beamtime_s": cycle * cycle_s}])
        stop, reason = agent.should_stop()
        if stop:
            return reason, cycle * cycle_s
    return "budget: max cycles of the simulation", max_cycles * cycle_s


@dataclass
class RepeatStatistics:
    """Planning figures over many rehearsed beamtimes."""

    cycles: np.ndarray
    beamtime_s: np.ndarray
    covered68: np.ndarray
    covered95: np.ndarray
    reasons: list[str]
    truth: float
    cycle_time_s: float

    def summary(self) -> dict[str, float]:
        q10, q50, q90 = np.percentile(self.cycles, [10, 50, 90])
        return {"repeats": len(self.cycles), "cycles_median": float(q50), "cycles_p10": float(q10),
                "cycles_p90": float(q90), "hours_median": float(np.median(self.beamtime_s) / 3600),
                "hours_p10": float(np.percentile(self.beamtime_s, 10) / 3600),
                "hours_p90": float(np.percentile(self.beamtime_s, 90) / 3600),
                "coverage68": float(self.covered68.mean()), "coverage95": float(self.covered95.mean()),
                "reached_target": float(np.mean([r.startswith("target_std") for r in self.reasons])),
                "conventional_hours": CONVENTIONAL_CYCLES * self.cycle_time_s / 3600}


def rehearse_repeats(sample: str = "fe", target_std: float = 0.01, quantity: str = "mu_s", repeats: int = 200,
                     max_cycles: int = CONVENTIONAL_CYCLES, count_time_s: float = 60.0, seed: int | None = 0,
                     plateau=None, progress=None) -> RepeatStatistics:
    """Distribution of cycles/hours to the target and coverage of the stopped intervals of ``quantity``
    (coverage is only defined for ``mu_s``, the quantity with a model-free truth: the true area)."""
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    s = compton_sample(sample)
    make_agent(s, target_std, quantity, max_cycles, plateau)  # validate before any work
    bl = make_compton_beamline(sample, time_scale=float("inf"), count_time_s=count_time_s)
    geometry, cyc = bl.ge.geometry(), cycle_time_s(bl)
    rng = np.random.default_rng(seed)
    truth = s.spin_moment_mub
    cycles, times, c68, c95, reasons = [], [], [], [], []
    for _ in range(int(repeats)):
        agent = make_agent(s, target_std, quantity, max_cycles, plateau)
        reason, t = simulate_beamtime(s, agent, rng, geometry, count_time_s, cyc, max_cycles)
        rep = agent.history[-1]
        cycles.append(agent.cycles)
        times.append(t)
        reasons.append(reason)
        c68.append(rep["mu_s_lo68"] <= truth <= rep["mu_s_hi68"])
        c95.append(rep["mu_s_lo95"] <= truth <= rep["mu_s_hi95"])
        if progress is not None:
            progress()
    return RepeatStatistics(np.array(cycles), np.array(times), np.array(c68), np.array(c95), reasons, truth, cyc)
