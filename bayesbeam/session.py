"""A RunEngine wired to the catalog: the ``nslsii.configure_base`` role, without the facility bits.

Every document goes first to a local journal of its run, then, from a writer thread, into the catalog
(``CatalogWriter``): the measurement never waits for the catalog (another writer's lock, a slow or dead
server) and a catalog failure never aborts it. A run whose catalog write failed goes on in its journal;
``bayesbeam catalog load-backup`` (``bayesbeam.catalog.load_backup``) puts it into the catalog later.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import socket
import threading
import time

from bluesky import RunEngine

from bayesbeam.catalog import HEARTBEAT_S, Journal, backup_directory, sample_key

logger = logging.getLogger(__name__)

#: At a run's stop document the RunEngine waits for the writer thread to have stored the run (so ``catalog[uid]``
#: right after ``RE(...)`` is whole), for as long as the writer keeps storing documents; if it stores none for
#: this long (s), the RunEngine goes on, the writer goes on in the background and the journal keeps everything.
#: The same wait holds the interpreter's exit until the writer is done.
STOP_WAIT_S = 120.0


def normalise_start_md(md) -> dict:
    """The RunEngine's ``md_normalizer``: the start document keeps ``sample`` as typed (``La2O3``) and
    gains ``sample_key`` (``la2o3``), which ``find_runs`` searches. It sees the metadata of every source
    (``RE.md``, the plan's ``md``, ``RE(plan, sample=...)``), after validation."""
    md = dict(md)
    if (key := sample_key(md.get("sample"))) is not None:
        md["sample_key"] = key
    return md


def catalog_scan_ids(client):
    """A ``scan_id_source``: one more than the larger of ``RE.md["scan_id"]`` and the newest stored run's,
    so scan ids keep counting across processes writing to one catalog (as a persistent ``RE.md`` does at
    a facility) and ``catalog[6]`` names one run. If the catalog cannot be read, ``RE.md``'s count goes on."""

    def next_scan_id(md) -> int:
        try:
            stored = client.values()[-1].metadata["start"].get("scan_id")
        except IndexError:  # an empty catalog
            stored = None
        except Exception as exc:  # the catalog is down: the run is not held up for a scan id
            logger.warning("catalog: could not read the newest scan id (%s); counting from RE.md", exc)
            stored = None
        return max(md.get("scan_id") or 0, stored if isinstance(stored, int) else 0) + 1

    return next_scan_id


class _Run:
    """One run seen by a ``CatalogWriter``: its journal, its TiledWriter, and what became of its catalog copy."""

    def __init__(self, owner: CatalogWriter, start: dict):
        from bluesky_tiled_plugins import TiledWriter

        self.owner, self.uid = owner, start["uid"]
        self.failed: str | None = None  # why the catalog copy was given up, if it was
        self.done = threading.Event()  # set once the stop document is dealt with (stored, or journal kept)
        self.stop_seen = False  # the RunEngine emitted the stop document
        self.node = None  # the run's catalog node, for heartbeats
        self.journal: Journal | None = None
        try:
            self.journal = Journal.create(owner.backup_dir, self.uid)
        except OSError as exc:
            logger.error("catalog: cannot journal run %s in %s (%s): it is written to the catalog only",
                         self.uid[:8], owner.backup_dir, exc)
        self.tiled = TiledWriter(owner.client, batch_size=owner.batch_size)

    # RunEngine thread -----------------------------------------------------------------------------------
    def emit(self, name: str, doc: dict) -> None:
        self.stop_seen = self.stop_seen or name == "stop"
        if self.journal is not None:
            try:
                self.journal.append(name, doc)
            except (OSError, TypeError, ValueError) as exc:
                logger.error("catalog: journal of run %s failed (%s); the catalog copy goes on", self.uid[:8], exc)
                self.journal = None
        self.owner._queue.put((self, name, doc))

    # writer thread ----------------------------------------------------------------------------------------
    def store(self, name: str, doc: dict) -> None:
        if self.failed is None:
            try:
                self.tiled(name, doc)
            except Exception as exc:
                self.fail(exc, name)
            if name == "start":
                self.beat()
        if name == "stop":
            self.finish()

    def fail(self, exc: BaseException, name: str) -> None:
        text = " ".join(str(exc).split())[:300]
        self.failed = f"{type(exc).__name__}: {text}"
        where = f"its documents are all in {self.journal.path}" if self.journal else "and it has no journal"
        logger.warning("catalog: storing %s %s document of run %s failed (%s); the run goes on, %s; "
                       "`bayesbeam catalog load-backup` puts it into the catalog later",
                       "an" if name[:1] in "aeiou" else "a", name, self.uid[:8], self.failed, where)

    def beat(self) -> None:
        """``heartbeat``, a failure of which loses no data (the next document's write says if the catalog is gone)."""
        try:
            self.heartbeat()
        except Exception as exc:
            logger.debug("catalog: heartbeat of run %s failed: %s", self.uid[:8], exc)

    def heartbeat(self) -> None:
        """Mark the run as alive in its metadata (see ``bayesbeam.catalog.run_status``)."""
        if self.failed is not None or self.done.is_set():
            return
        if self.node is None:
            self.node = self.owner.client[self.uid]
        self.node.update_metadata({"writer": {"heartbeat": time.time(), "interval_s": self.owner.heartbeat_s,
                                              "host": socket.gethostname(), "pid": os.getpid()}},
                                  drop_revision=True)

    def finish(self) -> None:
        self.owner._runs.pop(self.uid, None)
        if self.journal is not None:
            try:
                self.journal.close(remove=self.failed is None)  # kept if the catalog lacks documents
            except OSError as exc:
                logger.error("catalog: closing the journal of run %s: %s", self.uid[:8], exc)
        self.done.set()


class CatalogWriter:
    """RunEngine subscriber storing every run in the catalog ``client`` through bluesky-tiled-plugins'
    ``TiledWriter`` (``batch_size``: 1, each event as it comes, so whatever was counted is stored).

    - Each document is first appended to the run's journal in ``backup_dir`` (default
      ``bayesbeam.catalog.backup_directory(client)``), then queued for a writer thread: the RunEngine never
      waits for the catalog, except at a stop document (up to ``stop_wait_s``), so that the run is whole in the
      catalog when ``RE(...)`` returns.
    - A document the catalog refuses (locked longer than the busy timeout, read-only, server gone) ends the
      run's catalog copy, as bluesky-tiled-plugins' backup mode does (a partial run must not look whole): one
      warning line, the run goes on, its journal is kept for ``load_backup``. The journal of a run the catalog
      holds whole is deleted.
    - While a run is open its metadata gets a heartbeat every ``heartbeat_s`` s (``writer.heartbeat``), and
      the writing process holds a lock on its journal: ``run_status`` tells a live run from one whose writer
      died.
    - Calls never raise into the RunEngine.
    """

    def __init__(self, client, backup_dir=None, *, heartbeat_s: float = HEARTBEAT_S, stop_wait_s: float = STOP_WAIT_S,
                 batch_size: int = 1):
        self.client = client
        self.backup_dir = backup_dir if backup_dir is not None else backup_directory(client)
        self.heartbeat_s, self.stop_wait_s, self.batch_size = float(heartbeat_s), float(stop_wait_s), batch_size
        self._queue: queue.Queue = queue.Queue()
        self._runs: dict[str, _Run] = {}  # open runs, by uid
        self._by_doc: dict[str, _Run] = {}  # descriptor / resource uid -> run
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._progress = time.monotonic()  # when the writer thread last stored a document
        atexit.register(self._drain)

    def __call__(self, name: str, doc: dict) -> None:
        try:
            run = self._route(name, doc)
            if run is not None:
                run.emit(name, doc)
                if name == "stop":
                    self._wait(run.done)
        except Exception:  # nothing here may abort a measurement
            logger.exception("catalog: the writer failed on a %s document", name)

    def _wait(self, done: threading.Event) -> bool:
        """Until ``done`` is set, or the writer thread has stored nothing for ``stop_wait_s``."""
        self._progress = max(self._progress, time.monotonic())
        while not done.wait(0.2):
            if time.monotonic() - self._progress > self.stop_wait_s:
                logger.warning("catalog: the writer stored nothing for %g s; it goes on in the background, and the "
                               "journals in %s keep every document", self.stop_wait_s, self.backup_dir)
                return False
        return True

    def _drain(self) -> None:
        """At exit: let the writer thread finish the runs it holds (their journals have them anyway)."""
        for run in list(self._runs.values()):
            if run.stop_seen:
                self._wait(run.done)

    def _route(self, name: str, doc: dict) -> _Run | None:
        if name == "start":
            self._start_thread()
            run = self._runs[doc["uid"]] = _Run(self, doc)
            return run
        key = {"descriptor": "run_start", "stop": "run_start", "resource": "run_start",
               "stream_resource": "run_start"}.get(name)
        if key is not None:
            run = self._runs.get(doc.get(key))
            if run is not None and name != "stop":
                self._by_doc[doc["uid"]] = run
            elif run is not None:  # the run's last document: forget its descriptors and resources
                for uid in [uid for uid, other in self._by_doc.items() if other is run]:
                    del self._by_doc[uid]
            return run
        ref = {"event": "descriptor", "event_page": "descriptor", "stream_datum": "descriptor",
               "datum": "resource", "datum_page": "resource"}.get(name)
        run = self._by_doc.get(doc.get(ref)) if ref else None
        if run is None:
            logger.error("catalog: a %s document of no open run was not stored", name)
        return run

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="catalog-writer", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_beat - time.monotonic()))
            except queue.Empty:
                item = None
            if item is not None:
                run, name, doc = item
                try:
                    run.store(name, doc)
                except Exception:
                    logger.exception("catalog: the writer thread failed on a %s document", name)
                self._progress = time.monotonic()
            if time.monotonic() >= next_beat:
                for run in list(self._runs.values()):
                    run.beat()
                next_beat = time.monotonic() + self.heartbeat_s


def make_run_engine(client=None, md: dict | None = None, *, backup_dir=None) -> RunEngine:
    """A RunEngine writing every document to ``client`` (a tiled client) as it is emitted, through a
    ``CatalogWriter`` (journal in ``backup_dir``, default beside the catalog): whatever was counted is stored
    even if the run aborts, and a catalog failure never aborts the run. Start documents get ``sample_key``
    (``normalise_start_md``) and, with a catalog, scan ids continuing its newest run's."""
    if client is None:
        return RunEngine(md or {}, md_normalizer=normalise_start_md)
    RE = RunEngine(md or {}, md_normalizer=normalise_start_md, scan_id_source=catalog_scan_ids(client))
    RE.subscribe(CatalogWriter(client, backup_dir))
    return RE
