"""Channel Access overhead per magnetic-Compton cycle (run on request:
``python tests/bench/bench_ca_overhead.py [--cycles 10] [--repeats 3] [--time-scale 1e4] [--catalog]``).

The same ``adaptive_compton`` plan, agent and RunEngine, for a fixed number of ``+ − − +`` cycles:
(a) the pure-simulation path (``sim_devices`` ophyd objects in-process) and (b) the epics profile's
devices (stock ophyd EPICS classes through pyepics) against the caproto IOC on 127.0.0.1, both on a
clock running ``time-scale`` × real time. Runs alternate (a, b, a, b …) to share the noise of a busy
host; the overhead is the difference of the median wall time per cycle, measured in this run.
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
    from bayesbeam.rehearse_compton import make_agent
    from plans.compton import adaptive_compton
    from sim_devices.compton_samples import compton_sample

    agent = make_agent(compton_sample("fe"), 1e-9, max_cycles=cycles)
    t = time.perf_counter()
    RE(adaptive_compton(ge, magnet, agent, ring=ring, beamtime=beamtime, beam_poll_s=beam_poll_s))
    assert agent.cycles == cycles, agent.should_stop()
    return (time.perf_counter() - t) / cycles


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=10)
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
        from bayesbeam.rehearse_compton import BeamtimeSignal, cycle_time_s
        from bayesbeam.session import make_run_engine
        from sim_devices.compton_beamline import make_compton_beamline

        client = None
        if args.catalog:
            from bayesbeam.catalog import open_catalog

            client = open_catalog(tempfile.mkdtemp(prefix="bench_ca_"))
        RE = make_run_engine(client)
        ca = connect_beamline(load_beamline())
        sim_t, ca_t = [], []
        for _ in range(args.repeats):
            sim = make_compton_beamline("fe", time_scale=args.time_scale, seed=1)
            sim_t.append(_run(RE, sim.ge, sim.magnet, sim.ring, BeamtimeSignal(sim.clock, name="beamtime"),
                              args.cycles, 0.0))
            ca_t.append(_run(RE, ca.ge, ca.magnet, ca.ring, ca.beamtime, args.cycles, 1.0))
        beam_s = cycle_time_s(sim) / args.time_scale
        s, c = statistics.median(sim_t), statistics.median(ca_t)
        print(f"[ca] {args.cycles} cycles × {args.repeats} runs per path, clock ×{args.time_scale:g} "
              f"(beamtime per cycle {cycle_time_s(sim):.0f} s = {beam_s * 1e3:.1f} ms wall), "
              f"catalog {'on' if args.catalog else 'off'}, {os.cpu_count()} cores")
        runs = {k: ", ".join(f"{x * 1e3:.0f}" for x in v) for k, v in (("sim", sim_t), ("ca", ca_t))}
        print(f"[ca] pure simulation: median {s * 1e3:.1f} ms/cycle  (runs: {runs['sim']})")
        print(f"[ca] over Channel Access: median {c * 1e3:.1f} ms/cycle  (runs: {runs['ca']})")
        print(f"[ca] CA overhead: {(c - s) * 1e3:.1f} ms per cycle ({(c - s) / 4 * 1e3:.1f} ms per spectrum), "
              f"ratio {c / s:.2f}×")
    finally:
        caioc.stop(proc)


if __name__ == "__main__":
    main()
