"""Channel Access overhead per magnetic-Compton cycle and per XAS point (run on request:
``python tests/bench/bench_ca_overhead.py [--cycles 10] [--points 20] [--repeats 3] [--time-scale 1e4]
[--catalog] [--only compton|xas]``).

The same plan (``adaptive_compton`` for a fixed number of ``+ − − +`` cycles, ``adaptive_xas`` for a
fixed number of points), agent and RunEngine: (a) the pure-simulation path (``sim_devices`` ophyd
objects in-process) and (b) the epics profile's devices (stock ophyd EPICS classes through pyepics:
EpicsMCA, EpicsMotor, EpicsScaler …) against the caproto IOC on 127.0.0.1, both on a clock running
``time-scale`` × real time. Runs alternate (a, b, a, b …) to share the noise of a busy host; the
overhead is the difference of the median wall time per cycle / point, measured in this run. For
XAS the agent's own time (design decisions, updates) is also measured and taken out, since it
differs between runs with the data and dominates a point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import caioc  # noqa: E402


def _run(RE, ge, magnet, ring, beamtime, cycles, beam_poll_s):
    from bayesbeam.rehearsal.compton.rehearse import make_agent
    from plans.compton.flip_cycles import adaptive_compton
    from sim_devices.compton.samples import compton_sample

    agent = make_agent(compton_sample("fe"), 1e-9, max_cycles=cycles)
    t = time.perf_counter()
    RE(adaptive_compton([ge], magnet, agent, ring=ring, beamtime=beamtime, beam_poll_s=beam_poll_s))
    assert agent.cycles == cycles, agent.should_stop()
    return (time.perf_counter() - t) / cycles


XAS_SAMPLE = "Fe3O4"  # the IOC's default XAS sample; left out of the agent's prior


class _TimedAgent:
    """The agent with the time spent in its protocol methods summed in ``spent`` (s)."""

    _TIMED = {"suggest", "ingest", "should_stop", "report", "register_failures", "at"}

    def __init__(self, agent):
        self._agent = agent
        self.spent = 0.0

    def __getattr__(self, key):
        value = getattr(self._agent, key)
        if key not in self._TIMED:
            return value

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - t

        return timed


def _run_xas(RE, mono, i0, it, beamtime, points):
    """(wall s per point, wall s per point outside the agent) of one fixed-length adaptive XAS run."""
    from agent.xas.agent import xas_agent
    from plans.xas.energy_points import adaptive_xas

    agent = _TimedAgent(xas_agent(target_rmse=1e-9, exclude=XAS_SAMPLE, max_points=points))
    t = time.perf_counter()
    RE(adaptive_xas([i0, it], mono, agent, beamtime=beamtime))
    wall = time.perf_counter() - t
    assert agent.report()["points"] == points, agent.should_stop()
    return wall / points, (wall - agent.spent) / points


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--points", type=int, default=20, help="XAS points per run")
    ap.add_argument("--only", choices=("compton", "xas"), default=None, help="measure one technique only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-scale", type=float, default=1e4, help="simulated s per wall s, both paths")
    ap.add_argument("--catalog", action="store_true", help="also store every run in an embedded catalog")
    args = ap.parse_args()

    port = caioc.free_port()
    proc = caioc.start_ioc(port, time_scale=args.time_scale)
    try:
        os.environ.update({"EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}", "EPICS_CA_AUTO_ADDR_LIST": "NO"})
        from bayesbeam.beamline_config import load_beamline
        from bayesbeam.epics_devices import connect_beamline
        from bayesbeam.session import make_run_engine

        client = None
        if args.catalog:
            from bayesbeam.catalog import open_catalog

            client = open_catalog(tempfile.mkdtemp(prefix="bench_ca_"))
        RE = make_run_engine(client)
        ca = connect_beamline(load_beamline())
        print(f"[ca] clock ×{args.time_scale:g} on both paths, catalog {'on' if args.catalog else 'off'}, "
              f"{os.cpu_count()} cores, {args.repeats} runs per path")
        if args.only != "xas":
            _compton(args, RE, ca)
        if args.only != "compton":
            _xas(args, RE, ca)
    finally:
        caioc.stop(proc)


def _ms(values) -> str:
    return ", ".join(f"{x * 1e3:.0f}" for x in values)


def _compton(args, RE, ca):
    from bayesbeam.rehearsal.compton.rehearse import cycle_time_s
    from sim_devices.compton.beamline import make_compton_beamline
    from sim_devices.core.clock import BeamtimeSignal

    sim_t, ca_t = [], []
    for _ in range(args.repeats):
        sim = make_compton_beamline("fe", time_scale=args.time_scale, seed=1)
        sim_t.append(_run(RE, sim.ge, sim.magnet, sim.ring, BeamtimeSignal(sim.clock, name="beamtime"),
                          args.cycles, 0.0))
        ca_t.append(_run(RE, ca.ge, ca.magnet, ca.ring, ca.beamtime, args.cycles, 1.0))
    beam_s = cycle_time_s(sim) / args.time_scale
    s, c = statistics.median(sim_t), statistics.median(ca_t)
    print(f"[ca] Compton: {args.cycles} cycles per run (beamtime per cycle {cycle_time_s(sim):.0f} s = "
          f"{beam_s * 1e3:.1f} ms wall)")
    print(f"[ca] pure simulation: median {s * 1e3:.1f} ms/cycle  (runs: {_ms(sim_t)})")
    print(f"[ca] over Channel Access: median {c * 1e3:.1f} ms/cycle  (runs: {_ms(ca_t)})")
    print(f"[ca] CA overhead: {(c - s) * 1e3:.1f} ms per cycle ({(c - s) / 4 * 1e3:.1f} ms per spectrum), "
          f"ratio {c / s:.2f}×")


def _xas(args, RE, ca):
    from sim_devices.core.clock import BeamtimeSignal, SimClock
    from sim_devices.xas.endstation import make_xas_endstation

    runs: dict[str, list[tuple[float, float]]] = {"sim": [], "ca": []}
    for _ in range(args.repeats):
        sim = make_xas_endstation(XAS_SAMPLE, SimClock(args.time_scale), seed=1)
        runs["sim"].append(_run_xas(RE, sim.mono, sim.i0, sim.it, BeamtimeSignal(sim.mono.clock, name="beamtime"),
                                    args.points))
        runs["ca"].append(_run_xas(RE, ca.mono, ca.i0, ca.it, ca.beamtime, args.points))
    med = {k: [statistics.median(x[j] for x in v) for j in (0, 1)] for k, v in runs.items()}
    print(f"[ca] XAS: {args.points} points per run (sample {XAS_SAMPLE}; move + dwell ≈ 3-8 s of beamtime "
          f"= {3e3 / args.time_scale:.1f}-{8e3 / args.time_scale:.1f} ms wall per point)")
    for key, label in (("sim", "pure simulation"), ("ca", "over Channel Access")):
        total, plan = med[key]
        print(f"[ca] {label}: median {total * 1e3:.1f} ms/point, {plan * 1e3:.1f} ms/point outside the agent "
              f"(runs: {_ms(x[0] for x in runs[key])} / {_ms(x[1] for x in runs[key])})")
    d_total, d_plan = med["ca"][0] - med["sim"][0], med["ca"][1] - med["sim"][1]
    print(f"[ca] CA overhead: {d_plan * 1e3:.1f} ms per XAS point outside the agent "
          f"(ratio {med['ca'][1] / med['sim'][1]:.2f}×); {d_total * 1e3:.1f} ms per point in total wall time")


if __name__ == "__main__":
    main()
