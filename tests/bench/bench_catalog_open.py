"""How long opening the embedded catalog takes, and where the time goes.

Protocol, fixed before looking: REPS fresh Python processes per case, the median (and the range of all
repetitions, none dropped) of each phase. Cases:

- cold: a new directory (the catalog database is created and stamped on first use);
- warm, fresh process: an existing directory, as a new ``bayesbeam`` command or IPython session sees it;
- warm, same process: a second ``open_catalog`` of the same directory in the process of the warm case.

Phases are timed around the real ``bayesbeam.catalog.open_catalog`` path (its tiled calls are wrapped
in the child process, nothing is re-implemented): imports of tiled's client, bluesky-tiled-plugins,
tiled's catalog and server modules; creating the database (``init``: in-process, or tiled's
``init_if_not_exists`` subprocess); the catalog adapter; ``build_app``; ``Context.from_app`` (app
start-up); ``from_context`` (the first request, the root's metadata); ``len(client)`` (a first query).
``python start-up`` / ``python exit``: from launch to the child's first line, and from its last line to
the parent seeing it end (interpreter finalisation of the imported stack); ``process wall``: all of it.
For comparison, tiled's own ``init_if_not_exists`` subprocess is timed on other new directories.

    python tests/bench/bench_catalog_open.py            # REPS = 5, about two minutes on 2 cores
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPS = 5
PHASES = ["import tiled.client", "import bluesky_tiled_plugins", "import tiled.catalog", "import tiled.server.app",
          "init", "catalog adapter", "build_app", "Context.from_app", "from_context", "len(client)", "other",
          "open_catalog + len", "python start-up", "python exit", "process wall"]


def child(mode: str, location: str) -> dict:
    """One process: imports, one open (phases), and for the warm case a second open (phases)."""
    import importlib

    t = {}
    for name in PHASES[:4]:
        t0 = time.perf_counter()
        importlib.import_module(name.split()[1])
        t[name] = time.perf_counter() - t0

    import subprocess as sp

    import tiled.catalog
    import tiled.client
    import tiled.client.context
    import tiled.server.app

    import bayesbeam.catalog as bc

    spent: dict[str, float] = {}

    def wrap(owner, attr, label):
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, staticmethod(timed) if isinstance(owner, type) else timed)

    wrap(sp, "run", "init")  # tiled's init_if_not_exists subprocess (inside the adapter call)
    if hasattr(bc, "_init_catalog"):
        wrap(bc, "_init_catalog", "init")  # the in-process initialisation
    wrap(tiled.catalog, "from_uri", "catalog adapter")
    wrap(tiled.server.app, "build_app", "build_app")
    wrap(tiled.client.context.Context, "from_app", "Context.from_app")
    wrap(tiled.client, "from_context", "from_context")

    def one_open():
        spent.clear()
        t0 = time.perf_counter()
        client = bc.open_catalog(location)
        t1 = time.perf_counter()
        len(client)
        spent["len(client)"] = time.perf_counter() - t1
        total = time.perf_counter() - t0
        if "catalog adapter" in spent and "init" in spent and spent["init"] <= spent["catalog adapter"]:
            spent["catalog adapter"] -= spent["init"]  # the subprocess ran inside tiled's from_uri
        out = {k: spent.get(k, 0.0) for k in PHASES[4:10]}
        out["other"] = total - sum(out.values())
        out["open_catalog + len"] = total
        return out

    if mode == "tiled-init":  # tiled's own initialisation of a new database, for comparison
        spent.clear()
        Path(location).mkdir()
        tiled.catalog.from_uri(f"sqlite:///{Path(location) / 'catalog.db'}", init_if_not_exists=True)
        return {"first": {"init": spent["init"]}}
    result = {"first": {**t, **one_open()}}
    if mode == "warm":
        result["second"] = one_open()
    return result


def run_child(mode: str, location: Path) -> dict:
    """Run one child; add the interpreter's start-up (to the child's first line) and exit (after its last)."""
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(location)], capture_output=True, text=True,
                         check=True, timeout=600)
    t1 = time.time()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["first"]["python start-up"] = result.pop("child_start") - t0
    result["first"]["python exit"] = t1 - result.pop("child_end")
    result["first"]["process wall"] = t1 - t0
    return result


def summary(label: str, rows: list[dict]) -> None:
    print(f"\n{label}  (median [min-max] of {len(rows)}, ms)")
    for phase in PHASES:
        values = [1000 * r[phase] for r in rows if phase in r]
        if values and max(values) >= 0.5:
            print(f"  {phase:30s} {statistics.median(values):8.0f}  [{min(values):.0f}-{max(values):.0f}]")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_catalog_") as tmp:
        tmp = Path(tmp)
        cold = [run_child("cold", tmp / f"cold{i}") for i in range(REPS)]
        tiled_init = [run_child("tiled-init", tmp / f"tiled{i}") for i in range(REPS)]
        warm_dir = tmp / "warm"
        run_child("first-use", warm_dir)  # create it once, untimed
        warm = [run_child("warm", warm_dir) for _ in range(REPS)]
    summary("cold: new directory, fresh process", [r["first"] for r in cold])
    summary("for comparison: tiled's init_if_not_exists subprocess on a new directory",
            [{"init": r["first"]["init"]} for r in tiled_init])
    summary("warm: existing directory, fresh process", [r["first"] for r in warm])
    summary("warm: second open in the same process", [r["second"] for r in warm])


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        start = time.time()
        result = child(sys.argv[2], sys.argv[3])
        print(json.dumps({**result, "child_start": start, "child_end": time.time()}), flush=True)
    else:
        main()
