"""The catalog never aborts or loses a measurement, and tells a crashed run from a live one (issue 9, part B).

Real processes throughout: writers and readers are subprocesses of this file (``python
tests/test_catalog_integrity.py write|read ...``) running the adaptive Compton plan on the simulated beamline;
writers are killed with SIGKILL mid-run; the catalog is locked by another connection; a tiled server backed by
PostgreSQL is written by two processes and read by a third during their runs. Processes synchronise through
files (polled; no wall-clock margins): a writer holds at a chosen cycle until the other processes have done what
the test needs. After each fault the catalog's content is checked: every event, every completed event
readable with ``run[stream].read()``, stop documents and ``run_status``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import adbc_driver_sqlite.dbapi
import numpy as np
import pytest

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
NO_TARGET = 1e-6  # a target std no run reaches: runs stop on their cycle budget, a known number of cycles


# -- the processes ------------------------------------------------------------------------------------
def _wait_for(path: Path, *procs: subprocess.Popen) -> None:
    """Until ``path`` exists; fails if one of ``procs`` ends first."""
    while not path.exists():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"process ended (exit {proc.returncode}) before {path.name}: {_stderr(proc)}")
        time.sleep(0.02)


def _write(path: Path, text: str) -> None:
    """Whole or not at all, for a process waiting on ``path``."""
    path.with_name(path.name + ".tmp").write_text(text)
    path.with_name(path.name + ".tmp").replace(path)


def child_write(args) -> None:
    """One adaptive Compton rehearsal of ``--cycles`` cycles into ``catalog``; prints ``cycle <n> <uid>`` after
    each cycle's posterior event. ``--hold N`` (repeatable): after cycle N, create ``<sync>/held-<name>-<N>`` (the
    run's uid) and wait for ``<sync>/go-<name>-<N>``. ``--stall-at-row K``: the catalog write of primary event K
    stops after its spectrum (a zarr array) is stored and before its table row is (the worst place to die), and
    says so in ``<sync>/stalled-<name>``: the test kills the process there."""
    from bayesbeam.catalog import open_catalog
    from bayesbeam.rehearsal.compton.options import ComptonOptions
    from bayesbeam.rehearsal.compton.rehearse import rehearse_run
    from bayesbeam.session import make_run_engine

    sync = Path(args.sync)
    if args.stall_at_row:
        from tiled.client.dataframe import DataFrameClient

        append, rows = DataFrameClient.append_partition, {"n": 0}

        def append_or_stall(self, partition, data):
            if "/primary/" in self.uri:
                rows["n"] += 1
                if rows["n"] == args.stall_at_row:
                    _write(sync / f"stalled-{args.name}", str(rows["n"]))
                    threading.Event().wait()  # until killed
            return append(self, partition, data)

        DataFrameClient.append_partition = append_or_stall
    RE = make_run_engine(open_catalog(args.catalog))
    streams, state = {}, {"uid": None}

    def progress(name, doc):
        if name == "start":
            state["uid"] = doc["uid"]
        elif name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams.get(doc["descriptor"]) == "posterior":
            cycle = doc["seq_num"]
            print(f"cycle {cycle} {state['uid']}", flush=True)
            if cycle in args.hold:
                _write(sync / f"held-{args.name}-{cycle}", state["uid"])
                _wait_for(sync / f"go-{args.name}-{cycle}")

    RE.subscribe(progress)
    result = rehearse_run(RE, ComptonOptions("fe", target_std=NO_TARGET, max_cycles=args.cycles, seed=args.seed,
                                             time_scale=float("inf")))
    print(f"done {result.uid}", flush=True)


def frame(seq_num: int) -> np.ndarray:
    """The detector frame of event ``seq_num`` in ``child_frames`` (512² float32, 1 MB), reproducible."""
    return np.random.default_rng(seq_num).random((512, 512), dtype=np.float32)


def child_frames(args) -> None:
    """A run's documents journalled as a ``CatalogWriter`` journals them, in ``<catalog>/backup``: start, a
    descriptor of a 512² float32 detector image, then events with ``frame(seq_num)`` as fast as they can be
    written, printing ``event <n>`` after each; it runs until it is killed."""
    from event_model import compose_run

    from bayesbeam.catalog import Journal

    run = compose_run(metadata={"plan_name": "frames"})
    journal = Journal.create(Path(args.catalog) / "backup", run.start_doc["uid"])
    journal.append("start", run.start_doc)
    keys = {"image": {"source": "sim", "dtype": "array", "shape": [512, 512], "dtype_numpy": "<f4"},
            "n": {"source": "sim", "dtype": "integer", "shape": []}}
    desc = run.compose_descriptor(name="primary", data_keys=keys)
    journal.append("descriptor", desc.descriptor_doc)
    print("uid", run.start_doc["uid"], flush=True)
    for n in range(1, 100_000):
        journal.append("event", desc.compose_event(data={"image": frame(n), "n": n},
                                                   timestamps={"image": time.time(), "n": time.time()}, seq_num=n))
        print("event", n, flush=True)


def child_read(args) -> None:
    """Read the catalog while it is written: every run without a stop document (a live one), ``primary`` and
    ``posterior`` read whole with ``run[stream].read()``; each read checked (equal lengths, every spectrum row
    counted, cycles in order). Creates ``<sync>/seen-<uid>`` once a live run was read. After ``<sync>/stop-reader``
    appears, reads once more and prints a JSON summary (live reads, errors, runs seen live)."""
    from bayesbeam.catalog import open_catalog

    sync = Path(args.sync)
    client = open_catalog(args.catalog, writable=False) if "://" not in args.catalog else open_catalog(args.catalog)
    live_reads, errors, seen = 0, [], set()
    while True:
        last = (sync / "stop-reader").exists()
        for run in client.values():
            md = run.metadata
            if md.get("stop"):
                continue
            uid = md["start"]["uid"]
            try:
                if "primary" not in run:
                    continue
                # posterior first: the events of a cycle's primary stream precede its posterior event
                posterior = run["posterior"].read().sizes.get("time", 0) if "posterior" in run else 0
                primary = run["primary"].read()
                n = primary.sizes.get("time", 0)
                assert posterior <= n // 4, f"{posterior} posterior events, {n} primary"
                if n == 0:  # the stream's first event is not stored yet
                    assert "ge_spectrum" not in primary or primary["ge_spectrum"].shape[0] == 0
                    continue
                spectra = primary["ge_spectrum"].values
                assert spectra.shape == (n, 1024), spectra.shape
                assert np.all(spectra.sum(axis=1) > 0), "a spectrum row that was never counted"
                assert list(primary["cycle"].values) == [1 + i // 4 for i in range(n)], "cycles out of order"
                live_reads += 1
                if uid not in seen:
                    (sync / f"seen-{uid}").touch()
                    seen.add(uid)
            except Exception as exc:
                errors.append(f"{uid[:8]}: {type(exc).__name__}: {exc}"[:500])
        if last:
            break
        time.sleep(0.02)
    print(json.dumps({"live_reads": live_reads, "errors": errors, "seen": sorted(seen)}), flush=True)


def _python(*args, env=None, log: Path) -> subprocess.Popen:
    """This file run as a process: its output piped (a few lines), its stderr (warnings, tracebacks) to ``log``,
    which is never a pipe that could fill up and block it."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(HERE), *map(str, args)], stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    proc.log = log
    return proc


def _stderr(proc: subprocess.Popen) -> str:
    return proc.log.read_text()[-4000:]


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{_stderr(proc)}"
    return out


def _writer(catalog, sync, name, seed, cycles, holds=(), stall_at_row=0, env=None):
    holds = [arg for n in holds for arg in ("--hold", n)]
    return _python("write", catalog, "--sync", sync, "--name", name, "--seed", seed, "--cycles", cycles, *holds,
                   "--stall-at-row", stall_at_row, env=env, log=sync / f"{name}.err")


def _reader(catalog, sync, env=None):
    return _python("read", catalog, "--sync", sync, env=env, log=sync / "reader.err")


def _held(sync: Path, name: str, cycle: int, *procs) -> str:
    """The uid of writer ``name``'s run, once it holds after ``cycle``."""
    _wait_for(sync / f"held-{name}-{cycle}", *procs)
    return (sync / f"held-{name}-{cycle}").read_text()


def _line(proc: subprocess.Popen, prefix: str) -> str:
    """The first line of ``proc``'s output starting with ``prefix`` (read as it comes)."""
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no {prefix!r} line; exit {proc.wait()}: {_stderr(proc)}")


# -- what a stored run must hold ----------------------------------------------------------------------
def check_complete_run(run, cycles: int) -> None:
    """A finished run of ``cycles`` valid cycles: stop document, every event of every stream, readable whole."""
    from bayesbeam.catalog import run_status

    assert run.metadata["stop"]["exit_status"] == "success" and run_status(run) == "success"
    assert run.metadata["stop"]["num_events"] == {"primary": 4 * cycles, "cycles": cycles, "posterior": cycles}
    primary = run["primary"].read()
    assert primary["ge_spectrum"].shape == (4 * cycles, 1024)
    assert list(primary["cycle"].values) == [1 + i // 4 for i in range(4 * cycles)]
    assert list(run["cycles"].read()["valid"].values) == [True] * cycles
    assert list(run["posterior"].read()["cycles"].values) == list(range(1, cycles + 1))


# -- defect 3 and 4 on the embedded catalog: two writers, a reader, one writer killed -------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """One embedded catalog, three processes at once: a reader reading every live run over and over; writer A (4
    cycles) and writer B (5 cycles). Both hold after cycle 2 until both are there and the reader has read each
    live run; then both write on, concurrently. B is killed with SIGKILL in the catalog write of its 10th primary
    event (cycle 3's second spectrum), once its RunEngine holds after cycle 3 (so its journal has three whole
    cycles); A finishes; the reader goes on reading B's dead run. What was seen along the way is returned
    (``status``: run_status while live, after the kill)."""
    from bayesbeam.catalog import open_catalog, run_status

    base = tmp_path_factory.mktemp("embedded")
    catalog, sync = base / "catalog", base / "sync"
    sync.mkdir()
    client = open_catalog(catalog)  # made before the reader opens it
    reader = _reader(catalog, sync)
    a = _writer(catalog, sync, "a", 1, 4, holds=[2])
    b = _writer(catalog, sync, "b", 2, 5, holds=[2, 3], stall_at_row=4 * 2 + 2)
    uids = {"a": _held(sync, "a", 2, reader, a, b), "b": _held(sync, "b", 2, reader, a, b)}
    for uid in uids.values():
        _wait_for(sync / f"seen-{uid}", reader, a, b)  # the reader has read this run while it was live
    status = {f"{name} live": run_status(client[uid]) for name, uid in uids.items()}
    for name in ("a", "b"):
        (sync / f"go-{name}-2").touch()
    _held(sync, "b", 3, reader, a, b)
    _wait_for(sync / "stalled-b", reader, a, b)
    b.send_signal(signal.SIGKILL)
    b.communicate(timeout=300)
    _finish(a)
    status["b killed"] = run_status(client[uids["b"]])
    (sync / "stop-reader").touch()
    summary = json.loads(_finish(reader).strip().splitlines()[-1])
    return {"catalog": catalog, "client": client, "uids": uids, "status": status, "reader": summary,
            "b exit": b.returncode}


def test_two_writers_and_a_reader_on_the_embedded_catalog(embedded):
    """Both writers store whole runs side by side; every read of a live run is consistent (no HTTP 500, no
    conflicting sizes), also of the run whose writer died; WAL mode; the journal of a whole run is deleted."""
    catalog, uids = embedded["catalog"], embedded["uids"]
    assert embedded["reader"]["errors"] == [] and set(uids.values()) <= set(embedded["reader"]["seen"])
    assert embedded["reader"]["live_reads"] >= 2
    check_complete_run(embedded["client"][uids["a"]], 4)
    assert embedded["status"]["a live"] == "running"
    assert [p.name for p in (catalog / "backup").iterdir()] == [f"{uids['b']}.jsonl"]
    # Each database through the SQLite library this process already uses on it (two libraries on one file in
    # one process drop each other's locks): Python's for the catalog, ADBC's for the table storage.
    with sqlite3.connect(catalog / "catalog.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with adbc_driver_sqlite.dbapi.connect(str(catalog / "tables.db")) as tables, tables.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


def test_a_killed_writer_leaves_an_interrupted_run_whose_complete_events_read_back(embedded):
    from bayesbeam.catalog import run_status

    run = embedded["client"][embedded["uids"]["b"]]
    assert embedded["b exit"] == -signal.SIGKILL
    assert embedded["status"]["b live"] == "running" and embedded["status"]["b killed"] == "interrupted"
    assert "stop" not in run.metadata and run_status(run) == "interrupted"
    from click.testing import CliRunner

    from bayesbeam.cli import main

    out = CliRunner().invoke(main, ["runs", "--catalog", str(embedded["catalog"]), "--last", "100"])
    status = {line.split()[1]: line.split()[5] for line in out.output.splitlines()[1:]}
    assert status[embedded["uids"]["b"][:8]] == "interrupted" and status[embedded["uids"]["a"][:8]] == "finished"
    # The half-written event: its spectrum is stored, its table row is not (the stock read() fails on this).
    assert run["primary"].base["ge_spectrum"].shape[0] == 10 and len(run["primary"].base["internal"].read()) == 9
    primary = run["primary"].read()  # the nine complete events, every field
    assert primary.sizes["time"] == 9 and list(primary["cycle"].values) == [1 + i // 4 for i in range(9)]
    assert np.all(primary["ge_spectrum"].values.sum(axis=1) > 0)
    assert run["posterior"].read().sizes["time"] == 2 and list(run["cycles"].read()["valid"].values) == [True] * 2


def test_resume_rebuilds_the_agent_from_the_catalog_and_counts_only_what_is_missing(embedded):
    """``bayesbeam resume`` loads the killed run's journal (three whole cycles; the catalog had two), rebuilds the
    agent from the catalog and goes on to the target (5 cycles) in a new run with ``continue_from``."""
    from click.testing import CliRunner

    from agent.feeders import ComptonFeeder
    from bayesbeam.catalog import replay, run_status
    from bayesbeam.catalog_cli import main
    from bayesbeam.resume import rebuild_agent

    catalog, client, old_uid = embedded["catalog"], embedded["client"], embedded["uids"]["b"]
    out = CliRunner().invoke(main, ["resume", old_uid[:8], "--catalog", str(catalog), "--element", "Xx"])
    assert out.exit_code == 1 and out.output.startswith("Error: ") and "unknown element 'Xx'" in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and len(client) == len(embedded["uids"])  # nothing ran
    out = CliRunner().invoke(main, ["resume", old_uid[:8], "--catalog", str(catalog), "--seed", "7",
                                    "--time-scale", "inf"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"run {client[-1].metadata['start']['uid'][:8]} continues {old_uid[:8]}: 3 valid "
                                 "cycles before, 2 now; stop: budget: cycles = 5 reached the limit 5"), out.output
    new, old = client[-1], client[old_uid]
    start = new.metadata["start"]
    assert start["continue_from"] == old_uid and start["sample"] == "fe" and start["plan_name"] == "adaptive_compton"
    assert new.metadata["stop"]["reason"] == "budget: cycles = 5 reached the limit 5"
    # The old run now holds its journal's documents: the three whole cycles its RunEngine emitted, still no stop.
    assert not (catalog / "backup" / f"{old_uid}.jsonl").exists() and run_status(old) == "interrupted"
    assert list(old["cycles"].read()["valid"].values) == [True] * 3 and old["primary"].read().sizes["time"] == 12
    assert new["cycles"].read().sizes["time"] == 2 and new["primary"].read().sizes["time"] == 8  # nothing twice
    assert list(new["posterior"].read()["cycles"].values) == [4, 5]
    # The continued posterior is the one of both runs' stored cycles together.
    rebuilt = rebuild_agent(client, start["uid"])
    assert [r.metadata["start"]["uid"] for r in rebuilt.runs] == [old_uid, start["uid"]] and rebuilt.agent.cycles == 5
    assert rebuilt.agent.report()["mu_s_std"] == pytest.approx(float(new["posterior"].read()["mu_s_std"][-1]))
    again = rebuild_agent(client, old_uid).agent
    replay(new, ComptonFeeder(again))
    assert again.report()["mu_s_mean"] == pytest.approx(rebuilt.agent.report()["mu_s_mean"])
    out = CliRunner().invoke(main, ["resume", start["uid"], "--catalog", str(catalog)])
    assert out.exit_code == 1 and "already reached its stop rule" in out.output


def test_resume_compton_continues_a_failed_run_in_a_session(catalog, RE):
    """The plan form, as in an IPython session: a run that failed after its second cycle (a callback raised) is
    continued on the same devices to its budget of four cycles."""
    from bayesbeam.catalog import run_status
    from bayesbeam.rehearsal.compton.options import ComptonOptions
    from bayesbeam.rehearsal.compton.rehearse import rehearse_run
    from bayesbeam.resume import resume_compton
    from sim_devices import BeamtimeSignal, make_compton_beamline

    def fail():
        raise RuntimeError("the operator's callback broke")

    beamline = make_compton_beamline("fe", time_scale=float("inf"), seed=11)
    token = RE.subscribe(_at_cycle(2, fail))
    with pytest.raises(RuntimeError, match="callback broke"):
        rehearse_run(RE, ComptonOptions("fe", target_std=NO_TARGET, max_cycles=4, seed=11, time_scale=float("inf")),
                     beamline=beamline)
    RE.unsubscribe(token)
    old = catalog[-1]
    assert run_status(old) == "fail" and old["cycles"].read().sizes["time"] == 2
    (uid,) = RE(resume_compton(catalog, old.metadata["start"]["uid"][:8], [beamline.ge], beamline.magnet,
                               ring=beamline.ring, beamtime=BeamtimeSignal(beamline.clock, name="beamtime")))
    new = catalog[uid]
    assert new.metadata["start"]["continue_from"] == old.metadata["start"]["uid"]
    assert new.metadata["stop"]["reason"] == "budget: cycles = 4 reached the limit 4"
    assert list(new["posterior"].read()["cycles"].values) == [3, 4]


def test_an_xas_run_that_failed_is_continued_from_the_catalog(catalog, RE):
    """An adaptive XAS run that failed after its 8th point (a callback raised) is continued by ``resume_run``: the
    agent is rebuilt from ``agent_config`` (its library prior from the recorded standards) and the stored points;
    the new run counts only the 6 points its budget of 14 still allows, and its posterior is the one of both
    runs' stored points together."""
    from agent.xas import XASAgent
    from bayesbeam.catalog import replay, run_status
    from bayesbeam.rehearsal.xas.options import XASOptions
    from bayesbeam.rehearsal.xas.rehearse import rehearse_xas_run
    from bayesbeam.resume import ResumeError, feeder_for, rebuild_agent, resume_run

    def fail():
        raise RuntimeError("the operator's callback broke")

    token = RE.subscribe(_at_cycle(8, fail))  # the posterior event of point 8
    with pytest.raises(RuntimeError, match="callback broke"):
        rehearse_xas_run(RE, XASOptions("Fe3O4", target_rmse=1e-6, max_points=14, seed=5, time_scale=float("inf")))
    RE.unsubscribe(token)
    old = catalog[-1]
    old_uid = old.metadata["start"]["uid"]
    assert run_status(old) == "fail" and old["primary"].read().sizes["time"] == 8
    live_rmse = float(old["posterior"].read()["rmse_pred"][-1])
    assert rebuild_agent(catalog, old_uid[:8]).agent.report()["rmse_pred"] == pytest.approx(live_rmse, rel=1e-9)
    result = resume_run(old_uid[:8], catalog, seed=6, time_scale=float("inf"), RE=RE)
    assert (result.before, result.now, result.unit) == (8, 6, "points")
    new = catalog[result.uid]
    start = new.metadata["start"]
    assert start["continue_from"] == old_uid and start["agent_config"] == old.metadata["start"]["agent_config"]
    assert new.metadata["stop"]["reason"] == "budget: points = 14 reached the limit 14"
    assert new["primary"].read().sizes["time"] == 6  # nothing counted twice
    assert list(new["posterior"].read()["points"].values) == list(range(9, 15))
    again = XASAgent.from_config(result.agent.stop_rule, start["agent_config"])
    for run in (old, new):
        replay(run, feeder_for(run.metadata["start"], again))
    assert again.report()["rmse_pred"] == pytest.approx(float(new["posterior"].read()["rmse_pred"][-1]), rel=1e-9)
    with pytest.raises(ResumeError, match="already reached its stop rule"):
        resume_run(result.uid, catalog, RE=RE)


# -- defect 3: a catalog failure never aborts a measurement --------------------------------------------
def _capture(RE):
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, json.loads(json.dumps(doc, default=lambda v: v.tolist())))))
    return docs


def _at_cycle(n: int, action):
    """A RunEngine subscriber calling ``action()`` at the posterior event of cycle ``n`` (XAS: point ``n``)."""
    streams = {}

    def callback(name, doc):
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams[doc["descriptor"]] == "posterior" and doc["seq_num"] == n:
            action()

    return callback


def _compare_with_emitted(run, docs) -> None:
    """``run`` holds every event that was emitted (``docs``), field by field."""
    descriptors = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    for stream in set(descriptors.values()):
        events = [d for n, d in docs if n == "event" and descriptors[d["descriptor"]] == stream]
        stored = run[stream].read()
        assert stored.sizes["time"] == len(events), stream
        for key in events[0]["data"]:
            values = np.array([e["data"][key] for e in events])
            assert np.array_equal(stored[key].values, values), (stream, key)


def test_catalog_locked_mid_run_the_run_completes_in_its_journal_and_loads(tmp_path, monkeypatch):
    """Another connection holds the catalog's table database locked for longer than the busy timeout from cycle 2
    to the end: the run completes, its journal holds every document, the catalog copy is given up (no stop
    document: ``interrupted``), and ``bayesbeam catalog load-backup`` puts every event in."""
    from click.testing import CliRunner

    from bayesbeam.catalog import open_catalog, read_journal, run_status
    from bayesbeam.catalog_cli import main
    from bayesbeam.rehearsal.compton.options import ComptonOptions
    from bayesbeam.rehearsal.compton.rehearse import rehearse_run
    from bayesbeam.session import make_run_engine

    monkeypatch.setenv("BAYESBEAM_CATALOG_BUSY_TIMEOUT_S", "0.2")
    location = tmp_path / "catalog"
    client = open_catalog(location)
    RE = make_run_engine(client)
    docs = _capture(RE)
    locker = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); sys.stdin.readline();"
        "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"), str(location / "tables.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def lock():  # the other connection takes its lock now, until the run has ended
        locker.stdin.write("lock\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"

    RE.subscribe(_at_cycle(2, lock))
    try:
        result = rehearse_run(RE, ComptonOptions("fe", target_std=NO_TARGET, max_cycles=4, seed=4,
                                                 time_scale=float("inf")))
        run = client[result.uid]
        journal = location / "backup" / f"{result.uid}.jsonl"
        assert result.agent.cycles == 4 and docs[-1][1]["exit_status"] == "success"  # the measurement went on
        assert [(n, d.get("uid")) for n, d in read_journal(journal)] == [(n, d.get("uid")) for n, d in docs]
        assert "stop" not in run.metadata and run_status(run) == "interrupted"
        assert run["primary"].read().sizes["time"] < 16  # the catalog copy stopped at the lock
    finally:
        locker.stdin.close()
        locker.wait(timeout=60)
    out = CliRunner().invoke(main, ["catalog", "load-backup", "--catalog", str(location)])
    assert out.exit_code == 0, out.output
    assert out.output.split()[:4] == [result.uid[:8], str(sum(n == "event" for n, _ in docs)), "events", "replaced"]
    assert not journal.exists()
    run = open_catalog(location)[result.uid]
    check_complete_run(run, 4)
    _compare_with_emitted(run, docs)


def test_opening_the_catalog_again_keeps_this_process_s_sqlite_locks(tmp_path):
    """A process that holds a write lock on either database and opens the catalog once more (a session that
    rehearses, a test) still holds it afterwards: another process cannot write. Opening or closing a database file
    by any other route (a plain ``open``, or a second SQLite library: ADBC carries its own) drops every POSIX lock
    the process holds on it, and two writers then corrupt the database ("database disk image is malformed",
    seen with a session and a rehearsal on the default catalog)."""
    from bayesbeam.catalog import open_catalog

    location = tmp_path / "catalog"
    open_catalog(location)
    try_write = ("import sqlite3, sys\n"
                 "db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
                 "try:\n    db.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError as exc:\n    print(exc)\n"
                 "else:\n    print('wrote')\n")
    # Each database through the library this process's catalog uses on it: ADBC's for the tables, Python's else.
    tables = adbc_driver_sqlite.dbapi.connect(str(location / "tables.db"), autocommit=True)
    catalog = sqlite3.connect(location / "catalog.db", isolation_level=None)
    try:
        with tables.cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE")
        catalog.execute("BEGIN IMMEDIATE")
        open_catalog(location)
        for name in ("tables.db", "catalog.db"):
            out = subprocess.run([sys.executable, "-c", try_write, str(location / name)], capture_output=True,
                                 text=True, timeout=120)
            assert out.stdout.strip() == "database is locked", (name, out.stdout, out.stderr)
    finally:
        catalog.close()
        tables.close()


# -- the scale-out path: a tiled server backed by PostgreSQL -------------------------------------------
def test_two_writers_and_a_reader_on_a_postgresql_tiled_server(pg_tiled_server, tmp_path, monkeypatch):
    """Two writer processes and a reader process on the server at once: the writers hold after cycle 2 until both
    are there and the reader has read each live run, then write to the end concurrently."""
    from bayesbeam.catalog import open_catalog

    uri, env = pg_tiled_server["uri"], pg_tiled_server["env"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sync = tmp_path / "sync"
    sync.mkdir()
    reader = _reader(uri, sync, env=env)
    writers = [_writer(uri, sync, name, seed, 3, holds=[2], env=env) for name, seed in (("a", 1), ("b", 2))]
    uids = [_held(sync, name, 2, reader, *writers) for name in ("a", "b")]
    for uid in uids:
        _wait_for(sync / f"seen-{uid}", reader, *writers)
    for name in ("a", "b"):
        (sync / f"go-{name}-2").touch()
    for proc in writers:
        _finish(proc)
    (sync / "stop-reader").touch()
    summary = json.loads(_finish(reader).strip().splitlines()[-1])
    assert summary["errors"] == [] and summary["live_reads"] >= 2 and set(uids) <= set(summary["seen"])
    client = open_catalog(uri)
    for uid in uids:
        check_complete_run(client[uid], 3)


def test_tiled_server_killed_mid_run(pg_tiled_server, tmp_path, monkeypatch):
    """The tiled server (PostgreSQL-backed) is killed during a run: the run completes, its journal holds every
    document; with the server back, ``load_backup`` puts every event in. (tiled's client retries a lost server
    for up to 45 s before the writer gives up: cut to two quick attempts here.)"""
    import tiled.client.utils

    from bayesbeam.catalog import load_backup, open_catalog, read_journal
    from bayesbeam.rehearsal.compton.options import ComptonOptions
    from bayesbeam.rehearsal.compton.rehearse import rehearse_run
    from bayesbeam.session import make_run_engine

    server = pg_tiled_server["server"]
    retries = tiled.client.utils.TILED_RETRY_ATTEMPTS, tiled.client.utils.TILED_RETRY_TIMEOUT
    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 2)  # the writer gives up on the dead server soon
    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", 1.0)
    monkeypatch.setenv("TILED_API_KEY", server.env["TILED_API_KEY"])
    backup = tmp_path / "backup"
    RE = make_run_engine(open_catalog(server.uri), backup_dir=backup)
    docs = _capture(RE)
    RE.subscribe(_at_cycle(2, server.kill))
    try:
        result = rehearse_run(RE, ComptonOptions("fe", target_std=NO_TARGET, max_cycles=3, seed=5,
                                                 time_scale=float("inf")))
    finally:
        server.start()  # the same databases, on the same port
        # the recovery talks to the restarted server as any client does (a loaded host answers slowly at first)
        monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", retries[0])
        monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", retries[1])
    assert result.agent.cycles == 3 and docs[-1][1]["exit_status"] == "success"
    journal = backup / f"{result.uid}.jsonl"
    assert [(n, d.get("uid")) for n, d in read_journal(journal)] == [(n, d.get("uid")) for n, d in docs]
    client = open_catalog(server.uri)
    assert "stop" not in client[result.uid].metadata
    (row,) = load_backup(client, backup)
    assert row["action"] == "replaced" and not journal.exists(), row
    check_complete_run(client[result.uid], 3)
    _compare_with_emitted(client[result.uid], docs)


def test_a_journal_keeps_detector_frames_in_a_binary_sidecar_that_survives_a_kill(tmp_path):
    """Frames go to the journal's raw sidecar, not its JSON lines (a 4 MB frame was 20 MB of text and 1 s);
    a writer killed with SIGKILL mid-stream leaves a journal whose every complete line has its frame, bit for
    bit, and ``load_backup`` puts them in the catalog, where ``read()`` gives them back."""
    from bayesbeam.catalog import load_backup, open_catalog, read_journal, sidecar_path

    catalog = tmp_path / "catalog"
    client = open_catalog(catalog)
    proc = subprocess.Popen([sys.executable, str(HERE), "frames", str(catalog), "--sync", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    uid = proc.stdout.readline().split()[1]
    while not proc.stdout.readline().startswith("event 8"):
        assert proc.poll() is None, _stderr(proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    journal = catalog / "backup" / f"{uid}.jsonl"
    docs = read_journal(journal)
    events = [d for name, d in docs if name == "event"]
    assert len(events) >= 8 and [e["seq_num"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        image = e["data"]["image"]
        assert image.dtype == np.float32 and np.array_equal(image, frame(e["seq_num"]))
    assert journal.stat().st_size < 2_000 * (len(events) + 2) < sidecar_path(journal).stat().st_size / 100
    (row,) = load_backup(client)
    assert row["action"] == "loaded" and row["events"] == len(events), row
    assert not journal.exists() and not sidecar_path(journal).exists()
    stored = client[uid]["primary"].read()
    assert list(stored["n"].values) == list(range(1, len(events) + 1))
    assert np.array_equal(stored["image"].values[-1], frame(len(events)))


def test_run_status_rule():
    """``run_status`` without a journal to look at: the stop document, else the last sign of life."""
    from bayesbeam.catalog import INTERRUPTED_AFTER_S, run_status

    class Run:
        context = None

        def __init__(self, **md):
            self.metadata = md

    t = 1_000_000.0
    assert run_status(Run(start={"time": t}, stop={"exit_status": "abort"})) == "abort"
    assert run_status(Run(start={"time": t}), now=t + INTERRUPTED_AFTER_S) == "running"
    assert run_status(Run(start={"time": t}), now=t + INTERRUPTED_AFTER_S + 1) == "interrupted"
    beat = {"heartbeat": t + 500, "interval_s": 10}
    assert run_status(Run(start={"time": t}, writer=beat), now=t + 550) == "running"
    assert run_status(Run(start={"time": t}, writer=beat), now=t + 561) == "interrupted"
    slow = {"heartbeat": t, "interval_s": 30}  # six missed heartbeats, if that is longer than a minute
    assert run_status(Run(start={"time": t}, writer=slow), now=t + 179) == "running"
    assert run_status(Run(start={"time": t}, writer={"loaded_from_backup": "x.jsonl"}), now=t) == "interrupted"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "read", "frames"])
    parser.add_argument("catalog")
    parser.add_argument("--sync", required=True)
    parser.add_argument("--name", default="w")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--hold", type=int, action="append", default=[])
    parser.add_argument("--stall-at-row", type=int, default=0)
    arguments = parser.parse_args()
    {"write": child_write, "read": child_read, "frames": child_frames}[arguments.mode](arguments)
