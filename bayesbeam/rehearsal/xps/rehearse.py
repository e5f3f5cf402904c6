"""3d XPS Hamiltonian-selection rehearsal: one adaptive run (plans.xps.sweeps.adaptive_xps) of an
``XPSOptions`` through the RunEngine into the catalog on a simulated electron analyser.

The agent fits the 2- and 3-level cluster models after every sweep and stops when one model's
probability passes ``p_model`` and the leading model's stds of Δ_f = Δ − U_fc and V reach their
targets (the quantities both models identify; the 2-level model fixes Δ and U_fc only through their
difference), or after ``max_sweeps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bayesbeam.rehearsal.common import options_from, run_plan
from bayesbeam.rehearsal.xps.options import XPSOptions

if TYPE_CHECKING:  # the heavy imports (ophyd, numba) wait until a rehearsal runs
    from agent.xps.agent import XPSAgent
    from sim_devices.xps.samples import XPSSample

__all__ = ["XPSOptions", "XPSRehearsal", "rehearse_xps_run"]


@dataclass
class XPSRehearsal:
    """Outcome of one XPS rehearsal (beamtime in s)."""

    sample: XPSSample
    agent: XPSAgent
    stop_reason: str
    beamtime_s: float
    uid: str | None
    options: XPSOptions = field(default_factory=XPSOptions)
    live: object = None  # the run's bayesbeam.live.LiveXPS (headless): the figure


def rehearse_xps_run(RE, options: XPSOptions | None = None, md: dict | None = None, agent: XPSAgent | None = None,
                     **legacy) -> XPSRehearsal:
    """One adaptive XPS run of the simulated ``options.truth`` sample through ``RE``. ``agent``: one
    to use instead of ``options.agent()`` (other sampler settings or stop rules; the options' stop
    targets then do not apply). The options are checked before anything moves."""
    from plans.xps.sweeps import adaptive_xps
    from sim_devices.core.clock import BeamtimeSignal, SimClock
    from sim_devices.xps.electron_analyser import analyser_for

    options = options_from(XPSOptions, options, legacy, "rehearse_xps_run")
    built = options.agent()  # checks the options, also when ``agent`` is given
    agent = agent or built
    s = options.sample()
    options = replace(options, truth=s.name)  # as the sample spells it (ceo2 is CeO2; CeO2-full for "poisson")
    clock = SimClock(time_scale=options.time_scale)
    det = analyser_for(s, name="analyser", clock=clock, seed=options.seed)
    det.dwell_time.put(float(options.dwell_s))
    beamtime = BeamtimeSignal(clock, name="beamtime")
    run_md = {"sample": s.name, "purpose": "rehearsal", "truth_model": s.model, "truth_params": dict(s.params),
              "seed": options.seed, **(md or {})}
    from bayesbeam.live import LiveXPS

    live = LiveXPS(agent, show=False)
    token = RE.subscribe(live)
    try:
        uid, interruption = run_plan(RE, adaptive_xps([det], agent, beamtime=beamtime, md=run_md))
    finally:
        RE.unsubscribe(token)
    _, reason = agent.should_stop()
    reason = f"aborted: {interruption}" if interruption else reason or ""
    return XPSRehearsal(s, agent, reason, clock.now, uid, options, live)
