"""Wall time of an adaptive run with and without the live views (run on request:
``python tests/bench/bench_live.py [--repeats N] [--techniques compton xas]``).

Protocol, fixed before looking: each technique's rehearsal run (Compton: Fe to σ(μs) ≤ 0.01 μB, seed 4;
XAS: Fe-foil to predicted RMSE ≤ 0.012, seed 2) at the profiles' default time scale (1e4 simulated s per
wall s), through a RunEngine writing to one embedded catalog, ``N`` repetitions of each condition,
alternating which goes first (with, without / without, with …). "With": ``bayesbeam.live.LiveViews`` with
every throttled frame rendered (Agg, ``draw_frames=True``, what a screen costs) plus the final frame;
"without": no live view. Every run counts (the first, cold, included; compilation and imports are paid
before the first timed run by one untimed warm-up of each technique, reported). Printed: every time, the
median of each condition, their ratio, the frames drawn, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import matplotlib

matplotlib.use("Agg")


def one_run(RE, technique: str, live: bool) -> tuple[float, int]:
    """(wall s, frames drawn) of one rehearsal run."""
    from bayesbeam.live import LiveViews

    views = LiveViews(draw_frames=True, show=False) if live else None
    token = RE.subscribe(views) if live else None
    t = time.perf_counter()
    try:
        if technique == "compton":
            from bayesbeam.rehearsal.compton.rehearse import ComptonOptions, rehearse_run

            r = rehearse_run(RE, ComptonOptions("fe", target_std=0.01, seed=4, time_scale=1e4))
        else:
            from bayesbeam.rehearsal.xas.rehearse import XASOptions, rehearse_xas_run

            r = rehearse_xas_run(RE, XASOptions("Fe-foil", target_rmse=0.012, seed=2, time_scale=1e4))
        wall = time.perf_counter() - t
    finally:
        if token is not None:
            RE.unsubscribe(token)
    return wall, (views.views[r.uid].redraws + 1 if live else 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--techniques", nargs="+", default=["compton", "xas"])
    args = ap.parse_args()
    from bayesbeam.catalog import open_catalog
    from bayesbeam.session import make_run_engine

    print(f"load before: {os.getloadavg()}")
    RE = make_run_engine(open_catalog(tempfile.mkdtemp() + "/catalog"))
    for technique in args.techniques:
        warm, _ = one_run(RE, technique, live=True)
        print(f"{technique}: untimed warm-up {warm:.2f} s")
        times: dict[bool, list[float]] = {True: [], False: []}
        frames = []
        for rep in range(args.repeats):
            for live in ((True, False) if rep % 2 == 0 else (False, True)):
                wall, n = one_run(RE, technique, live)
                times[live].append(wall)
                if live:
                    frames.append(n)
        med_with, med_without = statistics.median(times[True]), statistics.median(times[False])
        print(f"{technique}: with live views {[round(t, 2) for t in times[True]]} s (frames {frames}); "
              f"without {[round(t, 2) for t in times[False]]} s")
        print(f"{technique}: median with {med_with:.2f} s, without {med_without:.2f} s, "
              f"ratio {med_with / med_without:.3f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
