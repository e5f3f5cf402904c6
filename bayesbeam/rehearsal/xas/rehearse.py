"""XAS rehearsal on the simulated beamline, and the offline design.

``rehearse_xas_run``: one adaptive run (an ``XASOptions``) through a RunEngine (stored in the
catalog) of a held-out standard, with the conventional-scan comparison. ``design_points``: the
offline (Ito-style greedy) point set for a fixed scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np

from agent.xas.agent import XASAgent
from agent.xas.baselines import beamtime_to, fly_scan, offline_design, step_scans
from agent.xas.design import CountingNoise, MoveCost, XASPosterior, greedy_batch, scan_time
from agent.xas.prior import E_REF_EV, SpectraLibrary
from bayesbeam.rehearsal.common import options_from, run_plan, stream_subscriber
from bayesbeam.rehearsal.xas.options import PRIORS, TARGET_LABEL, XASOptions, build_prior, make_agent
from plans.xas.energy_points import adaptive_xas
from sim_devices.core.clock import BeamtimeSignal, SimClock
from sim_devices.xas.beam import BeamModel
from sim_devices.xas.endstation import REALISTIC_BACKGROUND, REALISTIC_TRUTH, make_xas_endstation
from sim_devices.xas.samples import XASSample

__all__ = ["PRIORS", "TARGET_LABEL", "XASOptions", "XASRehearsal", "conventional", "design_points", "design_scan",
           "make_agent", "make_xas_beamline", "rehearse_xas_run"]


def make_xas_beamline(sample: str, time_scale: float = 1e4, seed: int | None = None, amplitude: float = 1.75,
                      offset: float = 0.45, shift_eV: float = 0.0, i0_rate: float = 23760.0,
                      cost: MoveCost | None = None, *, reference_foil: bool = False, beam: BeamModel | None = None,
                      c3: float = 0.0, c4: float = 0.0, calibration_offset_eV: float = 0.0,
                      calibration_drift_eV_h: float = 0.0, lash_eV: float = 0.0, extended_to_eV: float | None = None,
                      fluorescence: bool = False, **foil) -> SimpleNamespace:
    """Clock, sample, monochromator (limits = the tabulated truth), ion chambers, shared dwell, beamtime.
    Truth options (off by default; ``sim_devices.xas.make_xas_endstation``): ``reference_foil`` (a third
    chamber ``iref`` behind the Fe foil; ``foil_amplitude``, ``foil_offset``, ``foil_mut_3e`` in ``foil``),
    ``beam`` (``BeamModel``), the μt background ``c3``, ``c4``, the monochromator's hidden
    ``calibration_offset_eV`` (eV), ``calibration_drift_eV_h`` (eV/h) and ``lash_eV`` (eV).
    ``extended_to_eV``: the truth continued SYNTHETICALLY to this energy (the EXAFS range). ``fluorescence``: a
    fluorescence detector ``ifl`` on the standard as a dilute sample (``DILUTE_SAMPLE``).
    ``detectors``: [i0, it], [i0, it, iref], and ``ifl`` last, as ``adaptive_xas`` takes them."""
    cost = cost or MoveCost()
    clock = SimClock(time_scale)
    s = XASSample(sample, amplitude=amplitude, offset=offset, shift_eV=shift_eV, i0_rate=i0_rate, c3=c3, c4=c4,
                  seed=seed, extended_to_eV=extended_to_eV)
    x = make_xas_endstation(s, clock, settle_s=cost.settle_s, speed_eV_s=cost.speed_eV_s, backlash_eV=cost.backlash_eV,
                            reference_foil=reference_foil, beam=beam, calibration_offset_eV=calibration_offset_eV,
                            calibration_drift_eV_h=calibration_drift_eV_h, lash_eV=lash_eV, fluorescence=fluorescence,
                            **foil)
    return SimpleNamespace(clock=clock, sample=s, mono=x.mono, i0=x.i0, it=x.it, iref=x.iref, foil=x.foil, ifl=x.ifl,
                           detectors=x.detectors, dwell=x.dwell, beamtime=BeamtimeSignal(clock, name="beamtime"))


@dataclass
class XASRehearsal:
    """Outcome of one XAS rehearsal (beamtime in s)."""

    agent: XASAgent
    sample: XASSample
    stop_reason: str
    beamtime_s: float
    uid: str | None
    trajectory: np.ndarray  # (beamtime s, predicted RMSE, actual RMSE) after each point
    conventional: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (dwell scale, beamtime s)
    options: XASOptions = field(default_factory=XASOptions)
    live: object = None  # the run's bayesbeam.live.LiveXAS (headless): the figure
    fluorescence: object = None  # the FluorescenceModel of a fluorescence-mode run's detector

    def target_rmse(self) -> float:
        """Actual RMSE of the posterior mean of the design target against the truth (``actual_target_rmse``)."""
        return actual_target_rmse(self.agent, self.sample, self.fluorescence)


def target_truth(agent: XASAgent, sample: XASSample, fluorescence=None) -> np.ndarray:
    """The true design target of ``agent`` on its grid: in transmission with the sample's amplitude and offset; in
    fluorescence mode (``fluorescence``: the detector's ``FluorescenceModel``) with the true edge step and
    background of If/I0 (dead time removed; μ = 1 at E_ref) in the agent's data unit."""
    mu = sample.mu(agent.post.energy)
    if fluorescence is None or agent.mode != "fluorescence":
        return agent.post.target_of(mu, sample.amplitude, sample.offset)
    bare = replace(fluorescence, dead_time_s=0.0, background_rate=0.0)
    unit = agent.noise.unit * sample.i0_rate
    return agent.post.target_of(mu, float(bare.expected(E_REF_EV, 1.0, 1.0)) / unit,
                                fluorescence.background_rate / unit)


def actual_target_rmse(agent: XASAgent, sample: XASSample, fluorescence=None) -> float:
    """Actual RMSE of ``agent``'s design target (posterior mean) against ``target_truth``, in the target's units."""
    return float(np.sqrt(np.mean((agent.post.target_mean - target_truth(agent, sample, fluorescence)) ** 2)))


def conventional(agent: XASAgent, prior_post: XASPosterior, prior_weights) -> dict[str, tuple[float, float]]:
    """name: (dwell scale, beamtime s) of each baseline scan (``agent.xas.baselines``) to reach what the
    run reached (the predicted RMSE of its spectrum, or the std of its quantity), judged by the agent's
    final model; the offline designs are computed from ``prior_post`` (the agent's posterior before the
    run; ``prior_weights``: the quantity's design weights then) with 200 dwells of 1 s."""
    q = agent.quantity
    weights = None if q is None else agent.quantity_jacobian()
    if q is not None and weights is None:
        return {}  # the quantity is undefined at the posterior mean: no scan reaches a std of it
    rep = agent.report()
    reached = rep["rmse_pred"] if q is None else rep[f"{q.name}_std"]
    floor = 0.0 if q is None else float(np.max(q.floor_std))
    scans = step_scans(agent.post.energy) + [fly_scan(agent.post.energy),
                                             offline_design(prior_post, agent.noise, 200, "offline design (spectrum)")]
    if q is not None:
        scans.append(offline_design(prior_post, agent.noise, 200, f"offline design ({q.name})", prior_weights))
    return {sc.name: beamtime_to(agent.post, agent.noise, agent.cost, sc, reached, weights, floor) for sc in scans}


def rehearse_xas_run(RE, options: XASOptions | None = None, md: dict | None = None, **legacy) -> XASRehearsal:
    """One adaptive run through ``RE``; returns the agent, trajectory and conventional comparison.
    The options are checked before anything moves."""
    options = options_from(XASOptions, options, legacy, "rehearse_xas_run")
    agent = options.agent()
    truth = {**REALISTIC_TRUTH, **REALISTIC_BACKGROUND} if options.realistic else {}
    fluorescence = options.mode == "fluorescence"
    bl = make_xas_beamline(options.sample, time_scale=options.time_scale, seed=options.seed, cost=agent.cost,
                           extended_to_eV=float(agent.post.energy[-1]) if options.prior == "exafs" else None,
                           fluorescence=fluorescence, **truth)
    model = bl.ifl.model if fluorescence else None
    options = replace(options, sample=bl.sample.name)  # the library's spelling (fe3o4 is Fe3O4)
    prior_post, prior_weights = agent.post.copy(), agent.quantity_weights()
    traj: list[tuple[float, float, float]] = []
    token = RE.subscribe(stream_subscriber("posterior", lambda d: traj.append(
        (d["beamtime_s"], d["rmse_pred"], actual_target_rmse(agent, bl.sample, model)))))
    from bayesbeam.live import LiveXAS

    live = LiveXAS(agent, show=False)
    live_token = RE.subscribe(live)
    try:
        uid, interruption = run_plan(RE, adaptive_xas(
            bl.detectors, bl.mono, agent, beamtime=bl.beamtime,
            md={"sample": options.sample, "purpose": "rehearsal", "target_rmse": options.target_rmse,
                "target": options.target, "prior": options.prior, "seed": options.seed,
                "quantity": options.quantity, "target_std": options.target_std, "realistic": options.realistic,
                "mode": options.mode,
                **(md or {})}))
    finally:
        RE.unsubscribe(token)
        RE.unsubscribe(live_token)
    _, reason = agent.should_stop()
    reason = f"aborted: {interruption}" if interruption else reason
    return XASRehearsal(agent, bl.sample, reason or "", bl.clock.now, uid,
                        np.array(traj), conventional(agent, prior_post, prior_weights), options, live, model)


def design_points(points: int, dwell_s: float = 1.0, prior: str = "library", exclude: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Offline greedy design: (energies in selection order, predicted RMSE after each, scan time s).
    An energy chosen n times is n dwells of ``dwell_s`` there (see ``design_scan``). ``exclude``: a
    standard left out of the prior (any case); ``ValueError`` if the library has no such standard."""
    lib = SpectraLibrary.from_csv()
    p = build_prior(prior, lib.without(exclude) if exclude else lib)
    energies, rmse = greedy_batch(XASPosterior(p), CountingNoise(), points, dwell_s)
    scan, dwells = design_scan(energies, dwell_s)
    return energies, rmse, scan_time(scan, dwells, MoveCost())


def design_scan(energies: np.ndarray, dwell_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The fixed scan a design's ``energies`` (eV, each one dwell of ``dwell_s`` s) make: the distinct
    energies in increasing order and the dwell (s) at each, the sum of its repeats."""
    scan, repeats = np.unique(np.round(np.asarray(energies, float), 6), return_counts=True)
    return scan, repeats * float(dwell_s)
