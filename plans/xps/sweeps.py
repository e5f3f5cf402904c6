"""Adaptive 3d XPS plan: repeated analyser sweeps until the XPS agent decides the model.

Streams: ``primary`` (one event per sweep: counts, energies, ``sweep`` number, the run's beamtime), ``sweeps``
(bookkeeping: valid or discarded and why, beamtime; the only record of a sweep a device fault lost),
``posterior`` (the agent's report after each sweep: free energies, model probabilities, parameters of the
leading model, with the stop decision). The stop reason goes into the stop document's ``reason``. The agent is
fed from this run's own documents through ``agent.feeders.XPSFeeder``: a sweep is ingested only if its stored
reading proves it (``agent.feeders.sweep_problem``; keys in the start document's ``validity``).
"""

import itertools
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable

from agent.feeders import XPS_RULE, XPSFeeder, sweep_problem
from agent.xps import XPSAgent, xps_agent
from plans.core import (
    DEVICE_FAULTS,
    RunBeamtime,
    ValuesReadable,
    agent_arg,
    device_list,
    plan_agent,
    record_decision,
    start_md,
    watched_fields,
)
from plans.registry import optional_device


def adaptive_xps(detectors: Sequence[Readable] = ("analyser",), agent: XPSAgent | None = None, *,
                 p_model: float | None = None, target_delta_f: float | None = None, target_v: float | None = None,
                 max_sweeps: int | None = None, seed: int | None = None, analysis: str | None = None,
                 element: str | None = None, beamtime: Readable | None = "beamtime",
                 max_consecutive_failures: int = 3, continue_from: str | None = None,
                 md: dict[str, Any] | None = None):
    """Sweeps of the analyser ``detectors[0]`` (fields ``<name>_counts``, ``<name>_energies``; the
    others are read with it; devices or their names, ``plans.registry``) until the agent stops the run,
    fed through ``XPSFeeder`` from this run's documents. The agent: ``agent``, an ``XPSAgent`` object (an
    IPython session's); or, as a queued plan gives it, its parameters: stop when one model's probability
    reaches ``p_model`` (default 0.99) and std(Δ − U_fc), std(V) reach ``target_delta_f``, ``target_v`` (eV,
    defaults 0.1, 0.01), or after ``max_sweeps`` (default 20); ``seed`` of its exchange Monte Carlo;
    ``analysis`` ("poisson", the default, or "0.1") and ``element`` ("Ce", the default, or "La": the spin-orbit
    splitting) as ``agent.xps_agent``. ``beamtime``: readable of the elapsed beamtime (s), recorded as beamtime since
    the run's start (NaN if unreadable). Discarded sweeps (device fault, non-finite counts) are not
    accumulated; ``max_consecutive_failures`` in a row abort the run."""
    detectors = device_list(detectors, "adaptive_xps")
    beamtime = optional_device(beamtime, "adaptive_xps beamtime", "beamtime", detectors)
    params = {"p_model": p_model, "target_delta_f": target_delta_f, "target_v": target_v, "max_sweeps": max_sweeps,
              "seed": seed, "analysis": analysis, "element": element}
    agent, continue_from = plan_agent("adaptive_xps", agent, continue_from, xps_agent, params)
    analyser = detectors[0]
    if int(max_consecutive_failures) < 1:
        raise ValueError("max_consecutive_failures must be >= 1")
    plan_args = {"detectors": list(map(repr, detectors)), "agent": agent_arg(agent), **params,
                 "beamtime": repr(beamtime) if beamtime is not None else None,
                 "max_consecutive_failures": max_consecutive_failures, "continue_from": continue_from}
    run_bt = RunBeamtime(beamtime) if beamtime is not None else None
    counts_key = f"{analyser.name}_counts"
    spec = {"rule": XPS_RULE, "counts": counts_key, "energies": f"{analyser.name}_energies",
            "beamtime": run_bt.name if run_bt is not None else None}
    _md = start_md("adaptive_xps", detectors, [], plan_args, ["sweep"], agent=agent, continue_from=continue_from,
                   md=md, validity=spec)
    sweep_state: dict[str, Any] = {"sweep": 0, "valid": True, "reason": "", "beamtime_s": 0.0}
    current = {"sweep": 1}  # the sweep being measured, in each primary event
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "next_sweep": 1}
    status = ValuesReadable("sweeps", lambda: sweep_state)
    index = ValuesReadable("sweep", lambda: {"sweep": current["sweep"]}, hints=("sweep",))
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision}, hints=watched_fields(agent))
    readables = [*detectors, index] + ([run_bt] if run_bt is not None else [])

    def run():
        yield from bps.open_run(md=_md)
        if run_bt is not None:
            yield from bps.rd(run_bt)  # the zero of the run's beamtime
        failures, reason = 0, None
        for sweep in itertools.count(1):
            valid, why = True, ""
            current["sweep"] = sweep
            try:
                reading = yield from bps.trigger_and_read(readables)  # XPSFeeder judges and ingests it here
            except DEVICE_FAULTS as exc:
                valid, why, reading = False, f"analyser fault ({type(exc).__name__}: {exc})", None
            if reading is not None:
                why = sweep_problem({k: v["value"] for k, v in reading.items()}, spec)  # as XPSFeeder
                valid = not why
                bt = float(reading[run_bt.name]["value"]) if run_bt is not None else float("nan")
            else:
                bt = float((yield from bps.rd(run_bt))) if run_bt is not None else float("nan")  # never raises
            sweep_state.update(sweep=sweep, valid=valid, reason=why, beamtime_s=bt)
            yield from bps.trigger_and_read([status], name="sweeps")
            failures = 0 if valid else failures + 1
            stop, reason = yield from record_decision(agent, report, decision, next_sweep=sweep + 1)
            if stop:
                break
            if failures >= max_consecutive_failures:
                raise RuntimeError(f"{failures} consecutive sweeps discarded; last: {why}")
        yield from bps.close_run(exit_status="success", reason=reason)
        return reason

    return (yield from bpp.subs_wrapper(run(), XPSFeeder(agent, analyser=analyser.name)))
