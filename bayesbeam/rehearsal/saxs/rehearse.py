"""SAXS rehearsal: one adaptive run (plans.saxs.frames.adaptive_saxs) of a ``SAXSOptions`` through the RunEngine
into the catalog on the simulated SAXS end station (``sim_devices.saxs``): the pixel detector, the sample cell
and the ring on one beamtime clock.

The agent reduces each frame with pyFAI, updates the KDE of the pattern and the form-factor posterior, and stops
when the KDE has converged (``--stop kde``) or the posterior std of the watched quantity reaches its target
(``--stop posterior``), or after ``max_frames``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bayesbeam.rehearsal.common import options_from, run_plan
from bayesbeam.rehearsal.saxs.options import SAXSOptions

if TYPE_CHECKING:  # the heavy imports (ophyd, pyFAI, sasmodels) wait until a rehearsal runs
    from agent.saxs import SAXSAgent
    from sim_devices.saxs import SAXSEndStation

__all__ = ["SAXSOptions", "SAXSRehearsal", "rehearse_saxs_run"]


@dataclass
class SAXSRehearsal:
    """Outcome of one SAXS rehearsal (beamtime in s, wall time in s)."""

    station: SAXSEndStation
    agent: SAXSAgent
    stop_reason: str
    beamtime_s: float
    uid: str | None
    options: SAXSOptions = field(default_factory=SAXSOptions)
    live: object = None  # the run's bayesbeam.live.LiveSAXS (headless): the figure and the frames' record
    wall_s: float = float("nan")

    @property
    def sample(self):
        return self.station.sample


def truth_params(truth: dict) -> dict[str, float]:
    """The simulated sample's true parameters under the agent's names (``radius``: outer radius, nm; ``pd``;
    ``core_radius``, ``thickness``, nm; ``volume_fraction``) from ``SAXSSample.truth()``."""
    return {"radius": truth["radius_nm"], "pd": truth["pd"], "core_radius": truth["core_radius_nm"],
            "thickness": truth["thickness_nm"], "volume_fraction": truth["volume_fraction"]}


def rehearse_saxs_run(RE, options: SAXSOptions | None = None, md: dict | None = None, agent: SAXSAgent | None = None,
                      station: SAXSEndStation | None = None) -> SAXSRehearsal:
    """One adaptive SAXS run of the simulated ``options.sample`` through ``RE``. ``agent``: one to use instead
    of ``options.agent()`` (other settings or stop rules; the options' stop targets then do not apply).
    ``station``: an end station to measure on (e.g. with faults armed) instead of a new one. The options are
    checked before anything moves."""
    from plans.saxs.frames import adaptive_saxs
    from sim_devices.core.clock import BeamtimeSignal
    from sim_devices.saxs import make_saxs_endstation

    options = options_from(SAXSOptions, options, {}, "rehearse_saxs_run")
    built = options.agent()  # checks the options, also when ``agent`` is given
    agent = agent or built
    if station is None:
        station = make_saxs_endstation(options.sample, detector=options.detector, seed=options.seed,
                                       time_scale=options.time_scale, exposure_s=options.exposure_s)
    options = replace(options, sample=station.sample.name)  # as the preset spells it
    beamtime = BeamtimeSignal(station.clock, name="beamtime")
    truth = station.sample.truth(dose_s=0.0)
    run_md = {"sample": station.sample.name, "purpose": "rehearsal", "seed": options.seed,
              "truth_model": truth["model"], "truth_params": truth_params(truth), **(md or {})}
    from bayesbeam.live import LiveSAXS

    sample = station.sample
    live = LiveSAXS(agent, show=False, truth=lambda q: sample.dsdo(q, dose_s=0.0) - sample.buffer_dsdo(q),
                    truth_params=run_md["truth_params"])
    token = RE.subscribe(live)
    t0 = time.perf_counter()
    try:
        uid, interruption = run_plan(RE, adaptive_saxs([station.det], station.cell, agent, ring=station.ring,
                                                       beamtime=beamtime, beam_poll_s=0.0, md=run_md))
    finally:
        RE.unsubscribe(token)
    wall = time.perf_counter() - t0
    _, reason = agent.should_stop()
    reason = f"aborted: {interruption}" if interruption else reason or ""
    return SAXSRehearsal(station, agent, reason, station.clock.now, uid, options, live, wall)
