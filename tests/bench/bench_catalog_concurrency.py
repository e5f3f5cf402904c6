"""Several programs on one embedded catalog: how the SQLite settings decide whether runs get stored whole.

Protocol, fixed before looking: for each configuration and each number of writers K (1, 2, 4), a fresh catalog;
K writer processes and one reader process start together. Each writer runs bluesky's ``count`` of EVENTS events
of a 1024-channel spectrum and a scalar through ``bayesbeam.session.make_run_engine`` (journal + writer thread)
and times every document its writer thread stores. The reader reads ``run["primary"].read()`` of every run
without a stop document until the writers are done. Reported per cell: runs stored whole (stop document, every
event) out of K, catalog copies given up (the run went on in its journal), the reader's reads and failed reads,
the store time per document (median, 99th percentile, maximum; ms) and the wall time until the last writer ended.
Nothing is repeated or dropped. Configurations:

- ``as before``: what tiled gives (rollback-journal databases, ADBC's table connections without a busy timeout,
  aiosqlite's default 5 s on the catalog database), i.e. before this change, but with the journal fallback;
- ``busy timeout``: every connection waits up to 20 s for a lock; rollback journal;
- ``WAL + busy timeout, deferred``: write-ahead log, busy timeout, the table storage's transactions deferred
  (as ADBC opens them);
- ``WAL + busy timeout``: the default now (``bayesbeam.catalog.open_catalog``): the same, and each use of a
  table-storage connection of a writer one ``BEGIN IMMEDIATE`` transaction.

    python tests/bench/bench_catalog_concurrency.py        # EVENTS = 150, a few minutes on 2 cores
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENTS = 150
CONFIGS = ["as before", "busy timeout", "WAL + busy timeout, deferred", "WAL + busy timeout"]
WRITERS = [1, 2, 4]


def configure(config: str) -> None:
    import bayesbeam.catalog as bc

    if "WAL" not in config:
        bc._use_wal = lambda path, timeout: None
    if config == "as before":
        bc._wait_for_locks = lambda catalog, timeout, writer=True: None
    if "deferred" in config:
        wait = bc._wait_for_locks
        bc._wait_for_locks = lambda catalog, timeout, writer=True: wait(catalog, timeout, writer=False)


def child_write(config: str, location: str, start_file: str) -> None:
    import numpy as np
    import ophyd.sim
    from bluesky.plans import count

    import bayesbeam.session as session
    from bayesbeam.catalog import open_catalog

    configure(config)
    times = []
    store = session._Run.store

    def timed(self, name, doc):
        t0 = time.perf_counter()
        store(self, name, doc)
        times.append(time.perf_counter() - t0)

    session._Run.store = timed

    class Spectrum(ophyd.sim.SynSignal):
        def describe(self):
            d = super().describe()
            d[self.name].update(dtype="array", shape=[1024], dtype_numpy="<f8")
            return d

    rng = np.random.default_rng()
    spectrum = Spectrum(func=lambda: rng.poisson(100, 1024).astype(float), name="spectrum")
    RE = session.make_run_engine(open_catalog(location))
    while not Path(start_file).exists():  # all writers start together
        time.sleep(0.01)
    RE(count([spectrum, ophyd.sim.det], num=EVENTS))
    print(json.dumps({"times": times}), flush=True)


def child_read(config: str, location: str, done_file: str) -> None:
    from bayesbeam.catalog import open_catalog

    configure(config)
    client = open_catalog(location, writable=False)
    reads, errors = 0, []
    while not Path(done_file).exists():
        for run in client.values():
            if run.metadata.get("stop") or "primary" not in run:
                continue
            try:
                run["primary"].read()
                reads += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:80]}")
    print(json.dumps({"reads": reads, "errors": errors}), flush=True)


def cell(config: str, writers: int, base: Path) -> dict:
    location, start, done = base / "catalog", base / "start", base / "done"
    subprocess.run([sys.executable, __file__, "--make", config, str(location)], check=True, capture_output=True)
    procs = [subprocess.Popen([sys.executable, __file__, "--write", config, str(location), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(writers)]
    reader = subprocess.Popen([sys.executable, __file__, "--read", config, str(location), str(done)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(8)  # let every process open the catalog (not timed)
    t0 = time.perf_counter()
    start.touch()
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    done.touch()
    read = json.loads(reader.communicate()[0].strip().splitlines()[-1])
    times = [t for out in outs if out.strip() for t in json.loads(out.strip().splitlines()[-1])["times"]]
    from bayesbeam.catalog import open_catalog

    client = open_catalog(location)
    whole = sum(1 for run in client.values() if run.metadata.get("stop")
                and run["primary"].read().sizes.get("time", 0) == EVENTS)
    given_up = len(list((location / "backup").glob("*.jsonl")))
    ms = sorted(1000 * t for t in times) or [float("nan")]
    return {"whole": whole, "given_up": given_up, "crashed": sum(p.returncode != 0 for p in procs),
            "reads": read["reads"], "read_errors": len(read["errors"]), "first_error": (read["errors"] or [""])[0],
            "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "max": ms[-1],
            "wall": wall}


def main() -> None:
    print(f"{'configuration':30s} {'K':>2s} {'whole':>6s} {'given up':>9s} {'reads':>6s} {'failed':>7s} "
          f"{'store ms p50':>12s} {'p99':>7s} {'max':>7s} {'wall s':>7s}  first failed read")
    for config in CONFIGS:
        for k in WRITERS:
            with tempfile.TemporaryDirectory(prefix="bench_concurrency_") as tmp:
                r = cell(config, k, Path(tmp))
            print(f"{config:30s} {k:2d} {r['whole']:3d}/{k:<2d} {r['given_up']:9d} {r['reads']:6d} "
                  f"{r['read_errors']:7d} {r['p50']:12.1f} {r['p99']:7.1f} {r['max']:7.1f} {r['wall']:7.1f}  "
                  f"{r['first_error'][:60]}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        configure(sys.argv[2])
        from bayesbeam.catalog import open_catalog

        open_catalog(sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--write":
        child_write(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--read":
        child_read(*sys.argv[2:5])
    else:
        main()
