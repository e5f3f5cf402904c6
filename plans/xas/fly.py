"""The adaptive fly-scan XAS run: each sweep's speed profile designed by a ``FlyXASAgent`` on the posterior so
far (``agent.xas.fly``), flown by a fly scaler (monochromator through constant-speed segments, a scaler
channel per energy bin), stored, fed back, repeated until the agent stops the run.

Streams: ``primary`` (one event per sweep, array fields: per bin the encoder readback at its centre, the
requested centre, I0, It and the gate time; the sweep's id, start, stop, segments and planned time, and the
run's beamtime), ``posterior`` (the agent's report after each sweep, the bins not used and why, and the stop
decision with its reason). The stop reason goes into the stop document's ``reason``. A bin is fed to the
agent only if its stored readings prove it (``agent.feeders.fly_bin_problems``; keys and tolerance in the
start document's ``validity``), by the same feeder live and in replay (``agent.feeders.FlyXASFeeder``).
"""

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable

from agent.feeders import FLY_BEAM_FRACTION, FLY_XAS_RULE, FlyXASFeeder
from agent.xas.fly import FlyXASAgent, fly_xas_agent, segment_dwell
from plans.core import (
    DEVICE_FAULTS,
    RunBeamtime,
    ValuesReadable,
    agent_arg,
    detectors_then_motor,
    plan_agent,
    plan_devices,
    start_md,
    watched_fields,
)
from plans.xas.energy_points import _check_range


def _check_sweep(flyer, mono, sweep) -> tuple[float, float, list[float]]:
    """(start, stop, flat segments) of a suggested sweep; ``ValueError`` (one line) before any motion for an
    empty or broken trajectory, a speed above the fly controller's maximum, or energies outside the mono's range."""
    segs = [list(map(float, s)) for s in sweep["segments"]]
    segment_dwell(segs, float(sweep["bin_eV"]))  # contiguous, monotonic, speeds > 0, whole bins
    vmax = float(flyer.max_speed_eV_s.get())
    top = max(s[2] for s in segs)
    if top > vmax * (1 + 1e-9):
        raise ValueError(f"sweep speed {top:g} eV/s above the fly controller's maximum {vmax:g} eV/s")
    start, stop = float(sweep["start"]), float(sweep["stop"])
    if abs(segs[0][0] - start) > 1e-6 or abs(segs[-1][1] - stop) > 1e-6:
        raise ValueError(f"segments run {segs[0][0]:g}-{segs[-1][1]:g} eV, not the sweep's {start:g}-{stop:g} eV")
    _check_range(mono, [start, stop])
    return start, stop, [x for s in segs for x in s]


def adaptive_fly_xas(detectors: Sequence[Readable] = ("fly",), mono: Movable = "mono",
                     agent: FlyXASAgent | None = None, *, quantity: str | None = None, target_std: float | None = None,
                     components: list[str] | None = None, target_rmse: float | None = None, exclude: str | None = None,
                     max_sweeps: int | None = None, beamtime: Readable | None = "beamtime",
                     energy_tolerance_ev: float = 0.05, beam_floor_ma: float = 10.0, md: dict[str, Any] | None = None):
    """Plan a sweep, fly it, store it, feed it, ask again, until the agent stops the run.

    ``detectors``: ``[fly]``, the fly scaler (``sim_devices.xas.fly.SimFlyScaler``, or over EPICS
    ``bayesbeam.epics_fly.EpicsFlyScaler``: ``start_eV``, ``bin_eV``, ``segments``, ``max_speed_eV_s``; reads
    ``<fly>_energy``, ``_energy_requested``, ``_i0``, ``_it``, ``_dwell`` and, if it has one, ``_ring_current``
    arrays per bin). ``mono``: the monochromator energy (eV). Devices or their names
    (``plans.registry``). The agent: ``agent`` (a ``FlyXASAgent``, an IPython session's) or, as a queued plan
    gives it, its parameters (``agent.xas.fly.fly_xas_agent``): the design and the stop aimed at a
    ``quantity`` (``edge_position``, ``pre_edge_centroid``, ``pre_edge_area``, ``fractions`` of ``components``,
    ``valence``) until its posterior std reaches ``target_std``, or the spectrum until the predicted RMSE reaches
    ``target_rmse``, with the library prior minus ``exclude``, and at most ``max_sweeps`` sweeps (default 30).
    ``beamtime``: readable of elapsed beamtime (s), stored as beamtime since the run's start.
    A bin is fed only if its readback is within ``energy_tolerance_ev`` (eV) of its centre, the ring's mean
    current over its gate (when the fly scaler reads it) is at least ``beam_floor_ma`` (mA) and
    ``agent.feeders.FLY_BEAM_FRACTION`` of the sweep's median (a dump inside the bin), and its counts and gate
    time are finite and positive. Each sweep is checked before any motion (speeds ≤ the controller's
    maximum, contiguous segments, energies inside the mono's range). A checkpoint precedes each move to a
    sweep's start: a pause or a suspension during the sweep flies it again from its start.
    """
    detectors, mono = detectors_then_motor(detectors, mono, "adaptive_fly_xas")
    detectors, mono, _, beamtime = plan_devices("adaptive_fly_xas", detectors, mono, None, beamtime)
    if len(detectors) != 1:
        raise ValueError(f"adaptive_fly_xas needs one fly scaler as its detector, got {len(detectors)} detectors")
    (flyer,) = detectors
    params = {"quantity": quantity, "target_std": target_std, "target_rmse": target_rmse, "exclude": exclude,
              "components": components if components is None or isinstance(components, str) else list(components),
              "max_sweeps": max_sweeps}
    agent, _ = plan_agent("adaptive_fly_xas", agent, None, fly_xas_agent, params)
    if not isinstance(agent, FlyXASAgent):
        raise TypeError(f"adaptive_fly_xas needs a FlyXASAgent, got {type(agent).__name__}")
    if not energy_tolerance_ev > 0:
        raise ValueError(f"energy tolerance must be > 0 eV, got {energy_tolerance_ev!r}")
    if not beam_floor_ma >= 0:
        raise ValueError(f"beam floor must be >= 0 mA, got {beam_floor_ma!r}")
    vmax = float(flyer.max_speed_eV_s.get())
    if agent.v_max > vmax * (1 + 1e-9):
        raise ValueError(f"the agent's top speed {agent.v_max:g} eV/s is above the fly controller's {vmax:g} eV/s")
    _check_range(mono, agent.fly_range)
    name = flyer.name
    spec = {"rule": FLY_XAS_RULE, "detectors": [name], "energies": f"{name}_energy",
            "requested": f"{name}_energy_requested", "counts": [f"{name}_i0", f"{name}_it"], "dwell": f"{name}_dwell",
            "tolerance": float(energy_tolerance_ev), "unit": "eV", "label": "encoder readback at the bin centre",
            **({"ring": f"{name}_ring_current", "beam_floor_ma": float(beam_floor_ma),
                "beam_fraction": FLY_BEAM_FRACTION} if hasattr(flyer, "ring_current") else {})}
    plan_args = {"detectors": list(map(repr, detectors)), "mono": repr(mono), "agent": agent_arg(agent), **params,
                 "beamtime": repr(beamtime) if beamtime is not None else None,
                 "energy_tolerance_ev": energy_tolerance_ev, "beam_floor_ma": beam_floor_ma}
    _md = start_md("adaptive_fly_xas", detectors, [mono], plan_args, [f"{name}_energy"], agent=agent, md=md,
                   energy_limits=list(agent.fly_range), bin_eV=agent.bin_eV, validity=spec)
    sweep_info = {"sweep_id": -1, "sweep_start_ev": float("nan"), "sweep_stop_ev": float("nan"),
                  "sweep_planned_s": float("nan"), "segments": "[]"}
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "bins_unused": 0, "sweep_problem": ""}
    info = ValuesReadable("sweep", lambda: sweep_info)
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision}, hints=watched_fields(agent))
    run_bt = RunBeamtime(beamtime) if beamtime is not None else None
    readables = [flyer, mono, info] + ([run_bt] if run_bt is not None else [])

    def run():
        yield from bps.open_run(md=_md)
        if run_bt is not None:
            yield from bps.rd(run_bt)
        here = yield from bps.rd(mono)
        if here is not None and np.isfinite(here):
            agent.at(here)
        (sweep,) = agent.suggest(1)
        reason, failed = None, 0
        while True:
            start, stop, flat = _check_sweep(flyer, mono, sweep)
            sweep_info.update(sweep_id=int(sweep["_id"]), sweep_start_ev=start, sweep_stop_ev=stop,
                              sweep_planned_s=float(sweep.get("dwell_s", np.nan)),
                              segments=repr([[round(x, 6) for x in s] for s in sweep["segments"]]))
            failures_before = len(agent.failures)
            problem = ""
            try:
                yield from bps.checkpoint()  # a resume flies the sweep again from its start
                yield from bps.mv(mono, start)
                yield from bps.mv(flyer.start_eV, start, flyer.bin_eV, float(sweep["bin_eV"]))
                yield from bps.mv(flyer.segments, flat)
                yield from bps.trigger_and_read(readables)  # the feeder ingests the proven bins from this event
                yield from bps.checkpoint()  # never replay a saved event
            except DEVICE_FAULTS as exc:  # no event: the sweep is lost, the agent hears of it here
                problem = f"device fault in the sweep {start:.2f}-{stop:.2f} eV ({type(exc).__name__}: {exc})"
                agent.register_failures([{"_id": sweep["_id"], "reason": problem}])
            stop_now, reason = agent.should_stop()
            decision.update(stop=bool(stop_now), stop_reason=reason or "", sweep_problem=problem,
                            bins_unused=len(agent.failures) - failures_before)
            if not stop_now:
                (sweep,) = agent.suggest(1)
            yield from bps.trigger_and_read([report], name="posterior")
            yield from bps.checkpoint()
            if stop_now:
                break
            failed = failed + 1 if problem else 0
            if failed >= 3:
                raise RuntimeError(f"3 consecutive fly sweeps failed (last: {problem})")
        yield from bps.close_run(exit_status="success", reason=reason)
        return reason

    return (yield from bpp.subs_wrapper(run(), FlyXASFeeder(agent)))

