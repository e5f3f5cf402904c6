"""XAS-imaging rehearsal: one ``adaptive_xas_imaging`` run of ``ImagingOptions`` through the RunEngine into the
catalog on the simulated full-field end station (``sim_devices.imaging``), the minority phase kept out of the
library, then the class map scored against the simulation's truth labels."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bayesbeam.rehearsal.common import run_plan
from bayesbeam.rehearsal.imaging.options import ImagingOptions
from bayesbeam.rehearsal.imaging.stack import side_of


@dataclass
class ImagingRehearsal:
    """Outcome of one rehearsal: the end station, the agent, the truth labels (H, W) with their phase ``names``,
    the stop reason, beamtime (s, simulated) and wall time (s)."""

    station: object
    agent: object
    truth: np.ndarray
    names: list
    stop_reason: str
    beamtime_s: float
    uid: str | None
    options: ImagingOptions
    wall_s: float


def confusion(labels: np.ndarray, truth: np.ndarray, n_classes: int, n_truth: int) -> np.ndarray:
    """(C + 1, n_truth) pixel counts: rows the classes then unclassified (label −1), columns the true phases."""
    rows = np.where(labels >= 0, labels, n_classes).astype(np.int64).ravel()
    return np.bincount(rows * n_truth + truth.astype(np.int64).ravel(),
                       minlength=(n_classes + 1) * n_truth).reshape(n_classes + 1, n_truth)


def rehearse_imaging_run(RE, options: ImagingOptions, md: dict | None = None, station=None) -> ImagingRehearsal:
    """One adaptive imaging run of ``options`` through ``RE`` (``station``: an end station to use, e.g. with
    faults armed). The options are checked before anything moves."""
    from plans.imaging import adaptive_xas_imaging
    from sim_devices.core.clock import BeamtimeSignal, SimClock
    from sim_devices.core.ring import RingCurrent
    from sim_devices.imaging import DetectorModel, make_imaging_endstation, sample_tile

    options.validate()
    sample = options.sample()
    side = side_of(options.pixels)
    if station is None:
        clock = SimClock(time_scale=options.time_scale)
        ring = RingCurrent(name="ring", clock=clock)
        station = make_imaging_endstation(sample, clock, ring=ring, shape=(side, side), seed=options.seed or 0,
                                          detector=DetectorModel(n0=options.n0, n_flat=options.n_flat,
                                                                 n_dark=options.n_dark))
    beamtime = BeamtimeSignal(station.clock, name="beamtime")
    run_md = {"sample": "+".join(sample.phases), "purpose": "rehearsal", "seed": options.seed,
              "truth": {"phases": list(sample.phases), "minority": sample.minority,
                        "minority_fraction": sample.minority_fraction}, **(md or {})}
    plan = adaptive_xas_imaging(station.detectors, station.mono, energies=list(options.energies) if options.energies
                                else None, library=list(options.library) if options.library else None,
                                exclude=[sample.minority] if sample.minority else None, n0=options.n0,
                                target_error=options.target_error, decided=options.decided,
                                max_passes=options.max_passes, n_flat=options.n_flat, n_dark=options.n_dark,
                                scheduler=options.scheduler, psf_sigma_px=station.model.psf_sigma_px,
                                stage=station.stage, shutter=station.shutter,
                                ring=station.ring, beamtime=beamtime, beam_poll_s=0.0, md=run_md)
    agents = []
    plan = capture_agent(plan, agents)
    t0 = time.perf_counter()
    bt0 = station.clock.now
    uid, interruption = run_plan(RE, plan)
    wall = time.perf_counter() - t0
    agent = agents[0] if agents else None
    _, reason = agent.should_stop() if agent is not None else (True, "")
    truth = sample_tile(sample, 0, 0, side, side)["label"]
    return ImagingRehearsal(station, agent, truth, list(sample.names),
                            f"aborted: {interruption}" if interruption else reason or "", station.clock.now - bt0,
                            uid, options, wall)


def capture_agent(plan, agents: list):
    """``plan`` with the agent its feeder feeds noted in ``agents`` (the plan builds it from plain values)."""
    from bluesky.preprocessors import msg_mutator

    def note(msg):
        if msg.command == "subscribe" and not agents:
            feeder = msg.args[0] if msg.args else None
            agent = getattr(feeder, "agent", None)
            if agent is not None:
                agents.append(agent)
        return msg

    return msg_mutator(plan, note)
