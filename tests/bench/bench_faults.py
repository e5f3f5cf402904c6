"""Fault soak (issue 9): adaptive Compton and XAS runs over Channel Access with faults injected at random, and an
audit of the catalog afterwards. Run on request (not part of the default suite)::

    python tests/bench/bench_faults.py                    # 50 runs, seed 9
    python tests/bench/bench_faults.py --runs 4 --seed 1  # a quick look

Real processes throughout: the simulated beamline IOC (``bayesbeam ioc --faults``, ``tests/caioc.py``) on
127.0.0.1, a worker process running the epics profile (``profiles/epics``: stock ophyd EPICS devices, the
RunEngine with its journal + catalog-writer thread on the embedded catalog, the beam-dump suspender) that measures
the runs one after the other, and this process, which injects the faults a process outside the session would
(kills), and audits the catalog.

Protocol (fixed before any result was looked at)
-------------------------------------------------
Runs alternate: even-numbered runs are ``adaptive_compton([ge], magnet, spin_moment_agent(0.012, max_cycles=8))``
(Fe, 60 s counts, ring and beamtime stored), odd-numbered ones ``adaptive_xas([i0, it], mono,
xas_agent(target_rmse=0.02, max_points=60))`` (Fe3O4 on the IOC, excluded from the prior). Each run installs the
ring-current suspender (10 mA floor, resume at 90 mA after 1 s) with probability 1/2. Each fault kind is then drawn
independently per run with the probability below and put at a distinct random slot ``n`` (after the run's n-th
stored ``primary`` event; n in 1..7 for Compton, 1..10 for XAS); the kills come last in a run. Every fault is
injected once and counted where it was injected; nothing is retried until it works. A fault whose slot the run
never reaches (it stopped first) is not injected and not counted.

- beam dump (p = 0.35): ``FAULT:DumpMidCount`` (the next count loses the beam half-way) for U(200, 1500) s of
  beamtime; with a suspender, half of them are ``FAULT:BeamDump`` instead (the beam goes now, between counts).
- magnet trip in a pause (Compton, p = 0.35): the RunEngine is paused during the plan's (n+1)-th count (a
  ``pause`` message right after the detector's trigger, as ``tests/test_validity.py`` does), the magnet is put to
  0 T over CA (``magnet.set(0)``), and, with probability 1/2, ``FAULT:MagnetStuck`` = 1 (the field does not come
  back on the next move); then ``RE.resume()``. XAS runs get the analogue (p = 0.35): the monochromator moved by
  U(1, 5) eV during the pause.
- refused count (p = 0.35): ``FAULT:DetectorRefuse`` / ``FAULT:ScalerRefuse`` = 1 (the IOC acknowledges the
  next count without counting; the record keeps the previous count's fields).
- IOC kill and restart (p = 0.12): this process SIGKILLs the IOC and starts it again on the same port (new
  random seed; every PV back at its start value).
- writer kill (p = 0.15): this process SIGKILLs the worker U(0, 0.3) s after it reported event n; a new worker
  continues the run with ``bayesbeam.resume.resume_compton`` (``resume_xas`` for XAS if it exists).
- second concurrent writer (p = 0.15): another process (``tests/test_catalog_integrity.py write``, a simulated
  4-cycle Compton rehearsal) opens its run on the same embedded catalog before this run starts, and writes its
  remaining cycles from slot n on, concurrently.

After an IOC restart the worker waits until every PV is connected again, then reads every PV of its devices
afresh (a health probe); if some connected PV cannot be read, the session is wedged: this is counted and reported,
and the worker (the session) is restarted, as an operator would have to. A run that did not reach its agent's stop
rule (failed, aborted, interrupted) is continued once (``resume_*`` in the worker, after all that).

After each run its chain (the run and its continuation) is
audited from the catalog alone, with ``agent.feeders`` (``cycle_problem``, ``xas_point_problem``): every stored
spectrum/point is judged from its stored readings; a spectrum is *fed but not justified* if an agent ingested it
(recorded in the worker by wrapping ``BayesAgent.ingest``, live and in the rebuild from the catalog) and it is not
in a justified stored cycle/point, or not stored at all; *recounted* if one agent ingested it twice; a
*completed measurement missing from the catalog* is a ``primary`` event the RunEngine emitted (reported by the
worker after the journal got it) that ``run["primary"].read()`` does not return (after ``load_backup``, the
documented recovery, for runs whose catalog copy was given up or whose writer was killed). The final agent of each
chain must have been fed every justified measurement of the chain (*justified, not fed*).

Time to detect (wall clock, s, from the injection to the first record of it): beam dump: the suspension
(``RE.request_suspend``) or the stored event whose ring minimum fails the rule; magnet trip / mono moved: the first
document after the resume that records the interruption (the re-counted event with its ``interruptions`` count
up, or the discarded cycle); refused count: the discarded cycle whose reason says the count was stale (Compton),
the attempt stored without a ``primary`` event (XAS); IOC kill: the first record of trouble of any kind (an
invalid stored count, a discarded cycle or lost point, a suspension, a failed run); writer kill: ``run_status``
saying ``interrupted`` in this process. A second writer is not a fault to detect: it must change nothing.

Exit status 1 if a "must be 0" figure (fed but not justified, recounted, missing) is not 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # a 2-core machine shared with other work

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import caioc  # noqa: E402

KINDS = ["beam dump", "magnet trip in pause", "mono moved in pause", "refused count", "IOC kill+restart",
         "writer kill", "second writer"]
PROBABILITY = {"beam dump": 0.35, "pause": 0.35, "refused count": 0.35, "IOC kill+restart": 0.12,
               "writer kill": 0.15, "second writer": 0.15}
SLOTS = {"compton": 7, "xas": 10}
COMPTON_TARGET, COMPTON_MAX_CYCLES = 0.012, 8
XAS_TARGET, XAS_MAX_POINTS = 0.02, 60
SAMPLES = {"compton": "fe", "xas": "Fe3O4"}
BEAM_POLL_S = 0.05
QUIET_LIMIT_S = 180.0  # a command that reports nothing for this long (wall s) is hung: the worker is killed
MARK = "@@ "


def spectrum_hash(values) -> str:
    import numpy as np

    return hashlib.sha1(np.ascontiguousarray(np.asarray(values, dtype=float)).tobytes()).hexdigest()[:16]


def point_hash(energy, i0, it) -> str:
    return f"{float(energy)!r}|{float(i0)!r}|{float(it)!r}"


def mono_key(start: dict) -> str:
    return start["hints"]["dimensions"][0][0][0]


# ======================================================================================================
# The protocol
# ======================================================================================================
def draw_protocol(runs: int, seed: int) -> list[dict]:
    """Every run's technique, suspender and faults (kind, slot, parameters), drawn before anything runs."""
    rng = random.Random(seed)
    plans = []
    for i in range(runs):
        tech = "compton" if i % 2 == 0 else "xas"
        suspender = rng.random() < 0.5
        kinds = [k for k in ("beam dump", "pause", "refused count") if rng.random() < PROBABILITY[k]]
        if rng.random() < PROBABILITY["second writer"]:
            kinds.append("second writer")
        rng.shuffle(kinds)
        for k in ("IOC kill+restart", "writer kill"):  # the kills come last
            if rng.random() < PROBABILITY[k]:
                kinds.append(k)
        slots = sorted(rng.sample(range(1, SLOTS[tech] + 1), len(kinds)))
        faults = []
        for kind, slot in zip(kinds, slots, strict=True):
            f = {"kind": kind, "at": slot}
            if kind == "beam dump":
                f["variant"] = "now" if suspender and rng.random() < 0.5 else "mid-count"
                f["dump_s"] = round(rng.uniform(200.0, 1500.0), 1)
            elif kind == "pause":
                f["kind"] = "magnet trip in pause" if tech == "compton" else "mono moved in pause"
                f["stuck"] = tech == "compton" and rng.random() < 0.5
                f["offset_ev"] = round(rng.uniform(1.0, 5.0), 2)
            elif kind == "writer kill":
                f["delay_s"] = round(rng.uniform(0.0, 0.3), 3)
            faults.append(f)
        plans.append({"run": i, "technique": tech, "suspender": suspender, "faults": faults,
                      "seed": rng.randrange(1 << 30)})
    return plans


def describe_fault(f: dict) -> str:
    extra = {"beam dump": lambda: f" {f['variant']} {f['dump_s']:g} s",
             "magnet trip in pause": lambda: " +stuck" if f.get("stuck") else "",
             "mono moved in pause": lambda: f" {f['offset_ev']:+g} eV",
             "writer kill": lambda: f" +{f['delay_s']:g} s"}.get(f["kind"], lambda: "")()
    return f"{f['kind']}@{f['at']}{extra}"


# ======================================================================================================
# The worker: the epics profile, measuring runs on command
# ======================================================================================================
class Emitter:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, msg: dict) -> None:
        msg.setdefault("t", time.time())
        line = MARK + json.dumps(msg, default=lambda v: v.item() if hasattr(v, "item") else str(v))
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def worker_main(args) -> None:
    os.environ.update({"BAYESBEAM_CATALOG": args.catalog, "BAYESBEAM_PLOTS": "0",
                       "BAYESBEAM_CONNECTION_TIMEOUT_S": "60", "EPICS_CA_ADDR_LIST": f"127.0.0.1:{args.port}",
                       "EPICS_CA_AUTO_ADDR_LIST": "NO"})
    import itertools

    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp
    import numpy as np
    from bluesky.utils import RunEngineInterrupted

    import agent.core.protocol as protocol
    from agent.feeders import ComptonFeeder, XASFeeder, spectrum_problem, xas_point_problem

    emit = Emitter()
    state = {"ctx": None, "last_agent": None}
    keys = itertools.count(1)

    # -- what every agent of this process is fed, live and when rebuilt from the catalog ----------------
    init, ingest = protocol.BayesAgent.__init__, protocol.BayesAgent.ingest

    def agent_init(self, *a, **k):
        init(self, *a, **k)
        self._bench_key = f"{os.getpid()}-{next(keys)}"
        state["last_agent"] = self

    def used(agent) -> int:
        return len(agent.post.data_e) if hasattr(agent, "post") else int(agent.cycles)

    def agent_ingest(self, points):
        for p in points:
            before = used(self)
            ingest(self, [p])
            if used(self) > before:
                if "spectra" in p:
                    hashes = [spectrum_hash(s) for s in np.asarray(p["spectra"], float)]
                else:
                    hashes = [point_hash(p["energy"], p["i0"], p["it"])]
                emit({"fed": self._bench_key, "ctx": state["ctx"], "id": p.get("_id"), "h": hashes})

    protocol.BayesAgent.__init__, protocol.BayesAgent.ingest = agent_init, agent_ingest
    for cls in (ComptonFeeder, XASFeeder):
        def start(self, doc, _orig=cls.start):
            state["ctx"] = doc["uid"]  # the run whose documents this feeder is given (live or replayed)
            return _orig(self, doc)
        cls.start = start

    ns = caioc.run_startup(ROOT / "profiles" / "epics")
    ns["bec"].disable_table()
    RE, faults = ns["RE"], ns["faults"]
    ge, magnet, mono, i0, it, ring, beamtime = (ns[k] for k in ("ge", "magnet", "mono", "i0", "it", "ring",
                                                                  "beamtime"))

    request_suspend = RE.request_suspend

    def suspend(*a, **k):
        emit({"suspend": time.time()})
        return request_suspend(*a, **k)

    RE.request_suspend = suspend

    # -- every document, summarised (after the catalog writer's journal has it: it subscribed first) -----
    runs: dict[str, dict] = {}
    descriptors: dict[str, tuple[str, str]] = {}

    def reporter(name, doc):
        if name == "start":
            runs[doc["uid"]] = {"spec": doc.get("validity") or {}, "plan": doc.get("plan_name"),
                                "mono": mono_key(doc) if doc.get("plan_name") == "adaptive_xas" else None}
            emit({"start": doc["uid"], "plan": doc.get("plan_name"), "continue_from": doc.get("continue_from"),
                  "t": doc["time"]})
        elif name == "descriptor":
            descriptors[doc["uid"]] = (doc["name"], doc["run_start"])
        elif name == "event":
            stream, uid = descriptors.get(doc["descriptor"], (None, None))
            run, d = runs.get(uid), doc["data"]
            msg = {"ev": stream, "uid": uid, "seq": doc["seq_num"], "t": doc["time"]}
            if stream == "primary" and run is not None:
                spec = run["spec"]
                if run["plan"] == "adaptive_compton":
                    msg.update(h=spectrum_hash(d[spec["spectrum"]]), cycle=d.get("cycle"), flip=d.get("flip"),
                               problem=spectrum_problem(d, spec))
                else:
                    msg.update(h=point_hash(d[run["mono"]], d[spec["counts"][0]], d[spec["counts"][1]]),
                               point=d.get("point"), problem=xas_point_problem(d, spec))
                msg["interruptions"] = d.get("interruptions")
            elif stream == "cycles":
                msg.update(cycle=d.get("cycle"), valid=bool(d.get("valid")), reason=d.get("reason"))
            elif stream == "posterior":
                msg.update(n=d.get("points", d.get("cycles")), stop=bool(d.get("stop")))
            emit(msg)
        elif name == "stop":
            emit({"stopdoc": doc["run_start"], "exit_status": doc.get("exit_status"), "reason": doc.get("reason"),
                  "t": doc["time"]})

    RE.subscribe(reporter)

    def injector(cmd_faults, det_name):
        """Puts the fault PVs at their slots (after the n-th primary event of the command's first run)."""
        own = {"uid": None, "n": 0}

        def callback(name, doc):
            if name == "start" and own["uid"] is None:
                own["uid"] = doc["uid"]
            elif name == "event" and descriptors.get(doc["descriptor"]) == ("primary", own["uid"]):
                own["n"] += 1
                for f in cmd_faults:
                    if f["at"] != own["n"]:
                        continue
                    t = time.time()
                    if f["kind"] == "beam dump":
                        pv = "fault_beam_dump" if f["variant"] == "now" else "fault_dump_mid_count"
                        faults[pv].put(float(f["dump_s"]))
                    elif f["kind"] == "refused count":
                        faults["fault_detector_refuse" if det_name == "ge" else "fault_scaler_refuse"].put(1)
                    else:
                        continue
                    emit({"inject": f["kind"], "t": t, "at": own["n"]})
        return callback

    def pause_in_count(plan, det, k):
        """``plan`` with a pause right after the plan's own k-th trigger of ``det`` (a count in progress)."""
        seen = [0]

        def proc(msg):
            if msg.command == "trigger" and msg.obj is det:
                seen[0] += 1
                if seen[0] == k:
                    return None, bps.pause()
            return None, None

        return bpp.plan_mutator(plan, proc)

    def execute(plan, pause_fault=None) -> str:
        """Run ``plan``; at a pause, do what the pause fault says, then resume. Returns the exception, if any."""
        try:
            try:
                RE(plan)
            except RunEngineInterrupted:
                while RE.state == "paused":
                    if pause_fault is not None:
                        t = time.time()
                        if pause_fault["kind"] == "magnet trip in pause":
                            magnet.set(0.0).wait(60)
                            if pause_fault.get("stuck"):
                                faults["fault_magnet_stuck"].put(1)
                        else:
                            mono.set(float(mono.position) + pause_fault["offset_ev"]).wait(60)
                        emit({"inject": pause_fault["kind"], "t": t, "at": pause_fault["at"]})
                        pause_fault = None
                    try:
                        RE.resume()
                    except RunEngineInterrupted:
                        continue
            return ""
        except Exception as exc:
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        finally:
            if RE.state != "idle":
                try:
                    RE.abort("bench: the run could not go on")
                except Exception:
                    pass

    def done(cmd, error, extra=None):
        agent = state["last_agent"]
        stop = agent.should_stop() if agent is not None else (False, None)
        emit({"done": cmd["id"], "error": error, "agent": getattr(agent, "_bench_key", None),
              "stopped": bool(stop[0]), "stop_reason": stop[1], **(extra or {})})

    def run_cmd(cmd):
        from agent import spin_moment_agent, xas_agent
        from plans import adaptive_compton, adaptive_xas

        RE.clear_suspenders()
        if cmd["suspender"]:
            RE.install_suspender(ns["ring_suspender"])
        md = {"sample": SAMPLES[cmd["technique"]], "bench_run": cmd["run"]}
        if cmd["technique"] == "compton":
            agent = spin_moment_agent(COMPTON_TARGET, element="Fe", max_cycles=COMPTON_MAX_CYCLES)
            plan = adaptive_compton([ge], magnet, agent, ring=ring, beamtime=beamtime, beam_poll_s=BEAM_POLL_S, md=md)
            det = ge
        else:
            agent = xas_agent(target_rmse=XAS_TARGET, exclude=SAMPLES["xas"], max_points=XAS_MAX_POINTS)
            plan = adaptive_xas([i0, it], mono, agent, beamtime=beamtime, ring=ring, beam_poll_s=BEAM_POLL_S, md=md)
            det = i0
        pause = next((f for f in cmd["faults"] if "pause" in f["kind"]), None)
        if pause is not None:
            plan = pause_in_count(plan, det, pause["at"] + 1)
        token = RE.subscribe(injector(cmd["faults"], det.name))
        try:
            error = execute(plan, pause)
        finally:
            RE.unsubscribe(token)
            RE.clear_suspenders()
        done(cmd, error)

    def resume_cmd(cmd):
        from bayesbeam import resume as resume_module

        RE.clear_suspenders()
        RE.install_suspender(ns["ring_suspender"])
        state["last_agent"] = None
        try:
            if cmd["technique"] == "compton":
                plan = resume_module.resume_compton(ns["catalog"], cmd["uid"], [ge], magnet, ring=ring,
                                                    beamtime=beamtime)
            elif hasattr(resume_module, "resume_xas"):
                plan = resume_module.resume_xas(ns["catalog"], cmd["uid"], [i0, it], mono, ring=ring,
                                                beamtime=beamtime)
            else:
                done(cmd, "not resumable: bayesbeam.resume has no resume_xas yet", {"resumable": False})
                return
            error = execute(plan)
        finally:
            RE.clear_suspenders()
        done(cmd, error, {"resumable": True})

    def connected_cmd(cmd):
        from bayesbeam.epics_devices import wait_for_pvs

        t0 = time.monotonic()
        try:
            wait_for_pvs(ns["beamline"], list(ns["epics_bl"].devices().values()), timeout_s=300)
            error = ""
        except Exception as exc:
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        emit({"done": cmd["id"], "error": error, "waited_s": time.monotonic() - t0})

    def probe_cmd(cmd):
        """Read every PV of the session's devices afresh (a CA get, not a monitor's cache): which cannot be read."""
        from bayesbeam.epics_devices import _signals

        t0, bad, n = time.monotonic(), [], 0
        for dev in ns["epics_bl"].devices().values():
            for sig in _signals(dev):
                n += 1
                try:
                    if sig.get(use_monitor=False, timeout=2.0) is None:
                        bad.append(sig.pvname)
                except Exception:
                    bad.append(sig.pvname)
        emit({"done": cmd["id"], "error": "", "probed": n, "unreadable": sorted(set(bad)),
              "probe_s": time.monotonic() - t0})

    emit({"ready": os.getpid(), "t": time.time()})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        {"run": run_cmd, "resume": resume_cmd, "wait_connected": connected_cmd, "probe": probe_cmd}[cmd["cmd"]](cmd)


# ======================================================================================================
# This process: the IOC, the workers, the kills, the second writers, the audit
# ======================================================================================================
class IOC:
    def __init__(self, port: int, time_scale: float, seed: int):
        self.port, self.time_scale, self.seed, self.starts = port, time_scale, seed, 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        self.starts += 1
        last = None
        for _ in range(5):  # the port may take a moment to be free again after a kill
            try:
                return caioc.start_ioc(self.port, time_scale=self.time_scale, seed=self.seed + 1000 * self.starts,
                                       timeout_s=120)
            except RuntimeError as exc:
                last = exc
                time.sleep(1.0)
        raise RuntimeError(f"the IOC did not restart on port {self.port}: {last}")

    def kill_and_restart(self) -> float:
        """SIGKILL, then start again on the same port; returns the wall time (s) until it served again."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)
        self.proc = self._start()
        return time.monotonic() - t0

    def stop(self) -> None:
        caioc.stop(self.proc)


class Worker:
    """A worker process (``bench_faults.py worker``); its ``@@`` lines arrive in ``self.q``."""

    def __init__(self, catalog: Path, port: int, logdir: Path, number: int):
        self.log = logdir / f"worker-{number}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(HERE), "worker", "--catalog", str(catalog),
                                          "--port", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, cwd=ROOT, env=env)
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ids = 0
        msg = self.get(300)
        if "ready" not in msg:
            raise RuntimeError(f"worker did not start: {msg}; {self.log.read_text()[-3000:]}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                try:
                    self.q.put(json.loads(line[len(MARK):]))
                except json.JSONDecodeError:  # a line cut short by a kill
                    pass
        self.q.put({"eof": True, "t": time.time()})

    def get(self, timeout: float) -> dict:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return {"quiet": True, "t": time.time()}

    def send(self, cmd: dict) -> int:
        self.ids += 1
        cmd = {**cmd, "id": self.ids}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.ids

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(120)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


class SecondWriter:
    """``tests/test_catalog_integrity.py write``: a simulated 4-cycle rehearsal on the same catalog that holds
    after its first cycle (its run open) until released."""

    def __init__(self, catalog: Path, sync: Path, name: str, seed: int):
        self.sync, self.name = sync, name
        self.out = sync / f"{name}.out"
        with open(self.out, "w") as out, open(sync / f"{name}.err", "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "test_catalog_integrity.py"), "write",
                                          str(catalog), "--sync", str(sync), "--name", name, "--seed", str(seed),
                                          "--cycles", "4", "--hold", "1"], stdout=out, stderr=err, cwd=ROOT)
        held = sync / f"held-{name}-1"
        deadline = time.monotonic() + 300
        while not held.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"second writer did not start: {(sync / f'{name}.err').read_text()[-2000:]}")
            time.sleep(0.05)
        self.uid = held.read_text().strip()
        self.released = None

    def release(self) -> float:
        if self.released is None:
            self.released = time.time()
            (self.sync / f"go-{self.name}-1").touch()
        return self.released

    def finish(self) -> int:
        self.release()
        try:
            return self.proc.wait(300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(60)


class Soak:
    def __init__(self, args):
        from bayesbeam.catalog import open_catalog

        self.args = args
        base = Path(args.catalog).resolve() if args.catalog else Path(tempfile.mkdtemp(prefix="bench-faults-"))
        self.catalog = base / "catalog" if not args.catalog else base
        self.sync = (base.parent if args.catalog else base) / f"bench-faults-sync-{os.getpid()}"
        self.sync.mkdir(parents=True, exist_ok=True)
        self.client = open_catalog(self.catalog)
        self.port = caioc.free_port()
        self.ioc = IOC(self.port, args.time_scale, args.seed)
        self.workers = 0
        self.worker = self._new_worker()
        self.notes: list[str] = []
        self.reconnect_s: list[float] = []
        self.ioc_restart_s: list[float] = []
        self.wedged: list[tuple[int, list[str]]] = []

    def _new_worker(self) -> Worker:
        self.workers += 1
        return Worker(self.catalog, self.port, self.sync, self.workers)

    def close(self) -> None:
        self.worker.quit()
        self.ioc.stop()

    # -- one command, with the kills this process does ----------------------------------------------------
    def command(self, cmd: dict, rec: dict, orchestrated=(), w2: SecondWriter | None = None) -> dict:
        """Send ``cmd`` and collect its messages into ``rec["msgs"]`` until it is done; inject the faults of
        ``orchestrated`` at their slots (primary events of the command's first run). Returns the end message."""
        cmd_id = self.worker.send(cmd)
        own, n = None, 0
        todo = sorted(orchestrated, key=lambda f: f["at"])
        while True:
            msg = self.worker.get(QUIET_LIMIT_S)
            if msg.get("quiet"):
                rec["problems"].append(f"no message for {QUIET_LIMIT_S:g} s during {cmd['cmd']}: worker killed (hung)")
                self.worker.kill()
                self.worker = self._new_worker()
                return {"hung": True}
            if msg.get("eof"):
                rec["problems"].append(f"worker died during {cmd['cmd']}: {self.worker.log.read_text()[-1500:]}")
                self.worker = self._new_worker()
                return {"eof": True}
            rec["msgs"].append(msg)
            if "start" in msg and own is None:
                own = msg["start"]
            if msg.get("ev") == "primary" and msg.get("uid") == own:
                n += 1
                while todo and todo[0]["at"] <= n:
                    f = todo.pop(0)
                    if f["kind"] == "IOC kill+restart":
                        t = time.time()
                        rec["msgs"].append({"inject": f["kind"], "t": t, "at": n})
                        self.ioc_restart_s.append(self.ioc.kill_and_restart())
                    elif f["kind"] == "second writer":
                        rec["msgs"].append({"inject": f["kind"], "t": w2.release(), "at": n})
                    elif f["kind"] == "writer kill":
                        time.sleep(f["delay_s"])
                        t = time.time()
                        self.worker.kill()
                        rec["msgs"].append({"inject": f["kind"], "t": t, "at": n})
                        rec["killed"] = own
                        rec["msgs"].append({"interrupted_seen": self._wait_interrupted(own), "t": t})
                        while True:  # the lines it wrote before it died
                            rest = self.worker.get(5)
                            if rest.get("eof") or rest.get("quiet"):
                                break
                            rec["msgs"].append(rest)
                        self.worker = self._new_worker()
                        return {"killed": True}
            if msg.get("done") == cmd_id:
                return msg

    def _wait_interrupted(self, uid: str) -> float | None:
        """Wall time (s, from now) until ``run_status`` says the killed writer's run is interrupted."""
        from bayesbeam.catalog import run_status

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if run_status(self.client[uid]) == "interrupted":
                    return time.time()
            except KeyError:  # the catalog copy had not even the start document yet: it is in the journal
                pass
            time.sleep(0.05)
        return None

    # -- one run of the protocol ------------------------------------------------------------------------
    def run(self, plan: dict) -> dict:
        rec = {"plan": plan, "msgs": [], "problems": [], "t0": time.monotonic()}
        faults = plan["faults"]
        kinds = {f["kind"] for f in faults}
        w2 = None
        if "second writer" in kinds:
            w2 = SecondWriter(self.catalog, self.sync, f"w2-run{plan['run']}", plan["seed"] % 1000)
            rec["w2"] = w2.uid
        worker_faults = [f for f in faults if f["kind"] in ("beam dump", "refused count") or "pause" in f["kind"]]
        orchestrated = [f for f in faults if f["kind"] in ("IOC kill+restart", "writer kill", "second writer")]
        end = self.command({"cmd": "run", "run": plan["run"], "technique": plan["technique"],
                            "suspender": plan["suspender"], "faults": worker_faults}, rec, orchestrated, w2)
        rec["first_end"] = end
        if w2 is not None:
            rec["w2_exit"] = w2.finish()
        first = next((m["start"] for m in rec["msgs"] if "start" in m), None)
        rec["first"] = first
        if any(m.get("inject") == "IOC kill+restart" for m in rec["msgs"]) and self.worker.alive():
            waited = self.command({"cmd": "wait_connected"}, rec)
            self.reconnect_s.append(waited.get("waited_s", float("nan")))
            probe = self.command({"cmd": "probe"}, rec)
            if probe.get("unreadable"):  # the session cannot read these PVs any more although they are connected
                rec["wedged"] = probe["unreadable"]
                self.wedged.append((plan["run"], probe["unreadable"]))
                self.worker.quit()
                self.worker = self._new_worker()
        if first is not None and not end.get("stopped"):
            resumed = self.command({"cmd": "resume", "technique": plan["technique"], "uid": first}, rec)
            rec["resume_end"] = resumed
        rec["wall_s"] = time.monotonic() - rec["t0"]
        return rec


# ======================================================================================================
# The audit: from the catalog alone
# ======================================================================================================
def stored_rows(run) -> list[dict]:
    if "primary" not in run:
        return []
    ds = run["primary"].read()
    n = ds.sizes.get("time", 0)
    cols = {k: ds[k].values for k in ds.data_vars}
    return [{k: cols[k][j] for k in cols} for j in range(n)]


def audit(soak: Soak, rec: dict) -> dict:
    from agent.feeders import cycle_problem, xas_point_problem
    from bayesbeam.catalog import journal_is_live, load_backup

    client, msgs = soak.client, rec["msgs"]
    chain = [m["start"] for m in msgs if "start" in m]
    out = {"chain": chain, "stored": 0, "unjustified": [], "recounted": [], "missing": [], "not_fed": [],
           "given_up": 0, "stops": {}, "duplicates": 0}
    justified_all: set[str] = set()
    fed_by: dict[tuple[str, str], int] = {}
    for uid in chain:
        journal = soak.catalog / "backup" / f"{uid}.jsonl"
        if journal.exists() and journal_is_live(journal) is False:
            try:
                if client[uid].metadata.get("stop"):
                    out["given_up"] += 1  # the catalog copy was given up although the run ended
            except KeyError:
                pass
            load_backup(client, uids=[uid])  # the documented recovery (`bayesbeam catalog load-backup`)
        run = client[uid]
        start = run.metadata["start"]
        out["stops"][uid] = (run.metadata.get("stop") or {})
        spec = start.get("validity") or {}
        rows = stored_rows(run)
        out["stored"] += len(rows)
        verdict: dict[str, tuple[str, str]] = {}  # hash -> (problem, where)
        if start["plan_name"] == "adaptive_compton":
            cycles: dict[int, list[dict]] = {}
            for row in rows:
                cycles.setdefault(int(row["cycle"]), []).append(row)
            for c, events in cycles.items():
                problem = cycle_problem(events, spec)
                for row in events:
                    verdict[spectrum_hash(row[spec["spectrum"]])] = (problem, f"cycle {c} flip {int(row['flip'])}")
        else:
            mk = mono_key(start)
            for row in rows:
                h = point_hash(row[mk], row[spec["counts"][0]], row[spec["counts"][1]])
                verdict[h] = (xas_point_problem(row, spec), f"point {int(row['point'])} at {float(row[mk]):.2f} eV")
        hashes = [spectrum_hash(row[spec["spectrum"]]) if start["plan_name"] == "adaptive_compton" else
                  point_hash(row[mono_key(start)], row[spec["counts"][0]], row[spec["counts"][1]]) for row in rows]
        for h in {h for h in hashes if hashes.count(h) > 1}:
            verdict[h] = ("the same reading stored twice (a stale count stored as new)", verdict[h][1])
            out["duplicates"] += hashes.count(h) - 1
        justified = {h for h, (p, _) in verdict.items() if not p}
        justified_all |= justified
        for m in msgs:
            if m.get("ev") == "primary" and m.get("uid") == uid and m["h"] not in verdict:
                out["missing"].append(f"run {uid[:8]} primary event {m['seq']}")
            if "fed" in m and m.get("ctx") == uid:
                for h in m["h"]:
                    key = (m["fed"], h)
                    fed_by[key] = fed_by.get(key, 0) + 1
                    if fed_by[key] == 2:
                        out["recounted"].append(f"run {uid[:8]} {verdict.get(h, ('', 'unstored'))[1]} (agent "
                                                f"{m['fed']})")
                    if h not in verdict:
                        out["unjustified"].append(f"run {uid[:8]} id {m['id']}: fed a spectrum that is not stored")
                    elif verdict[h][0]:
                        out["unjustified"].append(f"run {uid[:8]} {verdict[h][1]}: {verdict[h][0]} (agent {m['fed']})")
        if start["plan_name"] == "adaptive_compton":  # a fed cycle is one stored cycle
            for m in msgs:
                if "fed" in m and m.get("ctx") == uid and len({verdict.get(h, ("", "?"))[1].split(" flip")[0]
                                                               for h in m["h"]}) != 1:
                    out["unjustified"].append(f"run {uid[:8]} id {m['id']}: spectra of different cycles fed as one")
    final = None
    for end in (rec.get("resume_end"), rec.get("first_end")):
        if end and end.get("done") is not None and end.get("agent") and end.get("resumable", True):
            final = end["agent"]
            break
    if final is not None:
        fed_final = {h for (agent, h) in fed_by if agent == final}
        out["not_fed"] = sorted(justified_all - fed_final)
    out["final_agent"] = final
    if rec.get("w2"):
        try:
            run = client[rec["w2"]]
            n = len(stored_rows(run))
            stop = run.metadata.get("stop") or {}
            whole = stop.get("exit_status") == "success" and stop.get("num_events", {}).get("primary") == n == 16
            journal = (soak.catalog / "backup" / f"{rec['w2']}.jsonl").exists()
            out["w2"] = {"whole": whole and not journal, "events": n, "journal_left": journal,
                         "exit": rec.get("w2_exit")}
        except KeyError:
            out["w2"] = {"whole": False, "events": 0, "journal_left": None, "exit": rec.get("w2_exit")}
    return out


# ======================================================================================================
# Detection and outcome
# ======================================================================================================
def detections(rec: dict) -> list[dict]:
    """One entry per injected fault: kind, injection time, detection time (None: not detected) and by what."""
    msgs = rec["msgs"]
    technique = rec["plan"]["technique"]
    result = []
    for i, m in enumerate(msgs):
        if "inject" not in m:
            continue
        kind, t0 = m["inject"], m["t"]
        after = [x for x in msgs[i + 1:] if x.get("t", 0) >= t0 or "interrupted_seen" in x]
        found, how = None, None
        if kind == "writer kill":
            seen = next((x["interrupted_seen"] for x in msgs[i + 1:] if "interrupted_seen" in x), None)
            found, how = seen, "run_status interrupted"
        elif kind == "second writer":
            found, how = None, "n/a"
        else:
            points_seen: dict[str, set] = {}
            last_interruptions: dict[str, int] = {}
            for x in msgs[:i + 1]:
                if x.get("ev") == "primary":
                    last_interruptions[x["uid"]] = x.get("interruptions") or 0
            for x in msgs:
                if x.get("ev") == "primary" and x.get("point") is not None:
                    points_seen.setdefault(x["uid"], set()).add(int(x["point"]))
            for x in after:
                t = x.get("t", 0)
                ev = x.get("ev")
                what = None
                if "suspend" in x and kind in ("beam dump", "IOC kill+restart"):
                    what = "suspension"
                elif ev == "primary" and x.get("problem") and (kind == "IOC kill+restart" or (
                        kind == "beam dump" and ("beam" in x["problem"]))):
                    what = f"stored count invalid ({x['problem'][:60]})"
                elif ev == "primary" and "pause" in kind and (x.get("interruptions") or 0) > last_interruptions.get(
                        x["uid"], 0):
                    what = "re-counted event with its interruption stored" + (
                        f", stored invalid ({x['problem'][:60]})" if x.get("problem") else ", valid")
                elif ev == "cycles" and not x.get("valid") and (
                        (kind == "IOC kill+restart" and not any(
                            y.get("ev") == "primary" and y.get("uid") == x.get("uid") and y.get("cycle") == x.get(
                                "cycle") and y.get("problem") for y in msgs))
                        or "pause" in kind
                        or (kind == "refused count" and "stale" in str(x.get("reason")))
                        or (kind == "beam dump" and "beam" in str(x.get("reason")))):
                    what = f"cycle discarded ({str(x.get('reason'))[:60]})"
                elif ev == "posterior" and technique == "xas" and kind in ("refused count", "IOC kill+restart") \
                        and x["seq"] not in points_seen.get(x["uid"], set()):
                    what = "XAS attempt stored without its point"
                elif "stopdoc" in x and x.get("exit_status") != "success" and kind == "IOC kill+restart":
                    what = f"run ended {x.get('exit_status')} ({str(x.get('reason'))[:60]})"
                elif "done" in x and x.get("error") and kind == "IOC kill+restart":
                    what = f"plan raised ({x['error'][:60]})"
                if what is not None:
                    found, how = t, what
                    break
        result.append({"kind": kind, "t0": t0, "t": found, "dt": None if found is None else found - t0, "how": how})
    return result


def outcome(rec: dict, audit_out: dict) -> dict:
    chain, stops = audit_out["chain"], audit_out["stops"]
    target = "target" if rec["plan"]["technique"] == "compton" else "target_rmse"

    def to_target(uid):
        stop = stops.get(uid) or {}
        return stop.get("exit_status") == "success" and str(stop.get("reason") or "").startswith(target)

    first = chain[0] if chain else None
    res = {"finished": bool(first and to_target(first)), "resumed": False, "how": ""}
    if len(chain) > 1:
        res["resumed"] = to_target(chain[-1])
    if not res["finished"]:
        stop = stops.get(first) or {}
        resumed = f"; resume: {(rec.get('resume_end') or {}).get('error') or 'ok'}" if "resume_end" in rec else ""
        res["how"] = (f"first run {stop.get('exit_status') or 'interrupted'}: {str(stop.get('reason') or '')[:80]}"
                      + resumed)
    return res


# ======================================================================================================
# Report
# ======================================================================================================
def table(records: list[dict]) -> tuple[str, dict]:
    rows = []
    totals = {"inj": 0, "det": 0, "dts": [], "runs": set(), "fin": set(), "res": set(), "stored": 0, "unj": 0,
              "rec": 0, "miss": 0}
    for kind in KINDS + ["none (control)"]:
        dets = [d for r in records for d in r["det"] if d["kind"] == kind]
        if kind == "none (control)":
            rs = [r for r in records if not r["det"]]
        else:
            rs = [r for r in records if any(d["kind"] == kind for d in r["det"])]
        if not rs and kind != "none (control)":
            rows.append((kind, 0, "", "", "", 0, 0, 0, 0, 0, 0, 0))
            continue
        dts = [d["dt"] for d in dets if d["dt"] is not None]
        na = kind in ("second writer", "none (control)")
        row = (kind, len(dets), "n/a" if na else sum(d["dt"] is not None for d in dets),
               f"{statistics.median(dts):.2f}" if dts else ("n/a" if na else "-"),
               f"{max(dts):.2f}" if dts else ("n/a" if na else "-"), len(rs),
               sum(r["out"]["finished"] for r in rs), sum(r["out"]["resumed"] for r in rs),
               sum(r["audit"]["stored"] for r in rs), sum(len(r["audit"]["unjustified"]) for r in rs),
               sum(len(r["audit"]["recounted"]) for r in rs), sum(len(r["audit"]["missing"]) for r in rs))
        rows.append(row)
        if kind not in ("none (control)", "second writer"):
            totals["inj"] += len(dets)
            totals["det"] += sum(d["dt"] is not None for d in dets if d["kind"] != "second writer")
            totals["dts"] += dts
    rows.append(("total (detectable faults; each run once)", totals["inj"], totals["det"],
                 f"{statistics.median(totals['dts']):.2f}" if totals["dts"] else "-",
                 f"{max(totals['dts']):.2f}" if totals["dts"] else "-", len(records),
                 sum(r["out"]["finished"] for r in records), sum(r["out"]["resumed"] for r in records),
                 sum(r["audit"]["stored"] for r in records), sum(len(r["audit"]["unjustified"]) for r in records),
                 sum(len(r["audit"]["recounted"]) for r in records), sum(len(r["audit"]["missing"]) for r in records)))
    head = ("fault kind", "injected", "detected", "t_det med (s)", "t_det max (s)", "runs", "to target",
            "resumed to target", "spectra/points stored", "fed, not justified (must be 0)", "recounted (must be 0)",
            "completed, missing from catalog (must be 0)")
    short = ("fault kind", "inj", "det", "t_det med", "t_det max", "runs", "to target", "resumed",
             "stored", "fed!just", "recount", "missing")
    widths = [max(len(str(x)) for x in col) for col in zip(short, *rows, strict=True)]
    lines = ["  ".join(str(x).rjust(w) if j else str(x).ljust(w) for j, (x, w) in enumerate(zip(r, widths,
                                                                                                   strict=True)))
             for r in [short, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = "columns: " + "; ".join(f"{s} = {h}" for s, h in zip(short, head, strict=True) if s != h)
    bad = rows[-1][9] + rows[-1][10] + rows[-1][11]
    return "\n".join(lines) + "\n" + legend, {"bad": bad}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="soak", choices=["soak", "worker"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--catalog", default=None, help="embedded catalog directory (default: a fresh temp dir)")
    parser.add_argument("--time-scale", type=float, default=2e3, help="IOC beamtime s per wall s")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "worker":
        worker_main(args)
        return 0

    wall0 = time.monotonic()
    command = (f"python tests/bench/bench_faults.py --runs {args.runs} --seed {args.seed} "
               f"--time-scale {args.time_scale:g}" + (f" --catalog {args.catalog}" if args.catalog else ""))
    plans = draw_protocol(args.runs, args.seed)
    print(f"fault soak: {args.runs} runs, seed {args.seed}, IOC time scale {args.time_scale:g}")
    for p in plans:
        print(f"  run {p['run']:2d} {p['technique']:7s} suspender {'yes' if p['suspender'] else 'no ':3s}  "
              + (", ".join(describe_fault(f) for f in p["faults"]) or "no fault"), flush=True)
    soak = Soak(args)
    print(f"catalog {soak.catalog}; IOC on 127.0.0.1:{soak.port}; logs in {soak.sync}", flush=True)
    records = []
    try:
        for p in plans:
            rec = soak.run(p)
            rec["audit"] = audit(soak, rec)
            rec["det"] = detections(rec)
            rec["out"] = outcome(rec, rec["audit"])
            records.append(rec)
            a, o = rec["audit"], rec["out"]
            flag = " !" if a["unjustified"] or a["recounted"] or a["missing"] else ""
            print(f"run {p['run']:2d} {p['technique']:7s} {rec['wall_s']:6.1f} s  "
                  f"{'to target' if o['finished'] else ('resumed to target' if o['resumed'] else 'NOT to target')}"
                  f"  stored {a['stored']}  fed!just {len(a['unjustified'])}  recount {len(a['recounted'])}  "
                  f"missing {len(a['missing'])}  not fed {len(a['not_fed'])}{flag}  "
                  + "; ".join(f"{d['kind']}: " + (f"{d['dt']:.2f} s by {d['how']}" if d["dt"] is not None else
                                                   ("n/a" if d["kind"] == "second writer" else "NOT detected"))
                              for d in rec["det"]), flush=True)
            for line in a["unjustified"] + a["recounted"] + a["missing"] + rec["problems"]:
                print(f"    {line}", flush=True)
    finally:
        soak.close()
    with open(soak.sync / "records.json", "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "t0"} for r in records], f, default=str, indent=1)
    text, summary = table(records)
    print()
    print(text)
    notes = []
    for kind in KINDS:
        dets = [d for r in records for d in r["det"] if d["kind"] == kind and kind != "second writer"]
        hows: dict[str, int] = {}
        for d in dets:
            label = "not detected" if d["dt"] is None else d["how"].split(" (")[0]
            hows[label] = hows.get(label, 0) + 1
        if hows:
            notes.append(f"{kind}: detected by " + ", ".join(f"{k} {v}" for k, v in sorted(hows.items())))
    for r in records:
        if not (r["out"]["finished"] or r["out"]["resumed"]):
            notes.append(f"run {r['plan']['run']} ({r['plan']['technique']}; "
                         + ", ".join(describe_fault(f) for f in r["plan"]["faults"]) + ") not to target: "
                         + r["out"]["how"])
    not_fed = [(r["plan"]["run"], len(r["audit"]["not_fed"])) for r in records if r["audit"]["not_fed"]]
    notes.append("justified but not fed to the run's final agent: "
                 + (", ".join(f"run {i}: {n}" for i, n in not_fed) if not_fed else "none"))
    given_up = sum(r["audit"]["given_up"] for r in records)
    notes.append(f"catalog copies given up (run ended, journal kept; recovered with load_backup): {given_up}")
    w2 = [r["audit"]["w2"] for r in records if "w2" in r["audit"]]
    if w2:
        notes.append(f"second-writer runs stored whole: {sum(w['whole'] for w in w2)} of {len(w2)}")
    if soak.ioc_restart_s:
        notes.append(f"IOC kill -> serving again: median {statistics.median(soak.ioc_restart_s):.1f} s; worker "
                     f"reconnected after the run: median {statistics.median(soak.reconnect_s or [float('nan')]):.1f} s")
    dup = sum(r["audit"]["duplicates"] for r in records)
    notes.append(f"readings stored twice in a run (stale counts stored as new): {dup}")
    started = sum(1 for r in records if r.get("w2"))
    notes.append(f"second writers started: {started}; released during the run (counted as injected): "
                 f"{sum(d['kind'] == 'second writer' for r in records for d in r['det'])}")
    for run, pvs in soak.wedged:
        notes.append(f"run {run}: after the IOC restart the session could not read {len(pvs)} connected PV(s) "
                     f"({', '.join(pvs[:4])}{' …' if len(pvs) > 4 else ''}): session restarted")
    notes.append(f"worker processes started: {soak.workers}; IOC starts: {soak.ioc.starts}")
    for note in notes:
        print(f"  {note}")
    print(f"total wall time {time.monotonic() - wall0:.0f} s")
    print(f"rerun: {command}")
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
