"""Where runs are stored: an embedded SQLite-backed tiled catalog (no server), or a tiled server.

Location, first found: the ``location`` argument, ``$BAYESBEAM_CATALOG``, then
``$XDG_DATA_HOME/bayesbeam/catalog`` (``~/.local/share/bayesbeam/catalog``). A directory means the
embedded catalog (created on first use by a writer); an ``http(s)://`` URI means a tiled server
(API key from ``$TILED_API_KEY``). ``open_catalog`` checks the location before anything moves and
says in one line (``CatalogError``) what is wrong: a directory that cannot be written, a catalog that
does not exist (for readers), a server that does not answer.

Either way the client is a bluesky-tiled-plugins ``CatalogOfBlueskyRuns`` (see ``RunCatalog``), indexed as
databroker 2 users do: ``catalog[-1]`` (latest run), ``catalog[-3:]`` (last three, oldest first),
``catalog[6]`` (latest run with scan id 6), ``catalog["a1b2c3d4"]`` (partial uid, as BEC prints it) and
``catalog[full_uid]``. Start documents carry ``sample`` as typed and ``sample_key``, its lower-case form,
which ``find_runs`` searches. ``run[stream].read()`` returns the complete events only: those whose every
field is stored (a run being written, or one whose writer died, can have one field a row ahead).

Several programs may use one embedded catalog at once (readers and writers, e.g. an IPython session and
``bayesbeam rehearse``): both SQLite databases run in WAL mode (readers never wait, nor block a writer)
and every connection waits up to ``$BAYESBEAM_CATALOG_BUSY_TIMEOUT_S`` (default 20 s) for another
writer's lock instead of failing at once. Writers also keep a local journal of every run (see
``bayesbeam.session.CatalogWriter``): a catalog failure never aborts a measurement, and
``load_backup`` puts journalled runs into the catalog afterwards. ``run_status`` tells a running run
from a finished, aborted or interrupted one.

tiled and bluesky-tiled-plugins are imported on first use, not on import (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import copy
import errno
import functools
import json
import logging
import os
import socket
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import click

logger = logging.getLogger(__name__)

RUNS_SPEC = {"name": "CatalogOfBlueskyRuns", "version": "3.0"}  # 3.x: SQL-backed (queries by LIKE, not Mongo)

#: How long a connection to the embedded catalog waits for another writer's lock (s); then the write fails
#: and the run goes on into its journal. ``$BAYESBEAM_CATALOG_BUSY_TIMEOUT_S`` overrides it.
BUSY_TIMEOUT_S = 20.0
#: How long ``open_catalog`` waits for a tiled server to accept a connection and answer (s).
SERVER_TIMEOUT_S = 5.0
#: A writer records a heartbeat in its run's metadata this often (s) while the run is open.
HEARTBEAT_S = 10.0
#: A run without a stop document whose last sign of life (start or heartbeat) is older than this, or
#: ``HEARTBEAT_MISSED`` heartbeat intervals, whichever is longer, is ``interrupted`` (see ``run_status``).
INTERRUPTED_AFTER_S = 60.0
HEARTBEAT_MISSED = 6
BACKUP_DIR = "backup"  # the journals of an embedded catalog's runs: <catalog>/backup/<uid>.jsonl


class CatalogError(click.ClickException):
    """The catalog cannot be used as asked: one line saying why (a command prints ``Error: <line>``
    and exits 1, without a traceback)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def busy_timeout_s() -> float:
    """``$BAYESBEAM_CATALOG_BUSY_TIMEOUT_S`` or ``BUSY_TIMEOUT_S``."""
    value = os.environ.get("BAYESBEAM_CATALOG_BUSY_TIMEOUT_S")
    try:
        return float(value) if value else BUSY_TIMEOUT_S
    except ValueError:
        raise CatalogError(f"BAYESBEAM_CATALOG_BUSY_TIMEOUT_S must be a number of seconds, got {value!r}") from None


def default_catalog_location() -> str:
    """The catalog used when none is given (see module docstring)."""
    if env := os.environ.get("BAYESBEAM_CATALOG"):
        return env
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "bayesbeam" / "catalog")


def is_server_uri(location: str) -> bool:
    return str(location).startswith(("http://", "https://"))


def sample_key(sample) -> str | None:
    """The form a sample name is searched by: stripped and lower-case (``" La2O3"`` → ``"la2o3"``).
    A dict sample (bluesky allows one) is keyed by its ``name``; ``None`` when there is no name."""
    if isinstance(sample, Mapping):
        sample = sample.get("name")
    if not isinstance(sample, str) or not sample.strip():
        return None
    return sample.strip().lower()


@functools.cache
def _run_catalog_class():
    from bluesky_tiled_plugins import CatalogOfBlueskyRuns

    class RunCatalog(CatalogOfBlueskyRuns):
        """``CatalogOfBlueskyRuns`` that also indexes a plain tiled server and slices as databroker did.

        - ``catalog[-3:]``, ``catalog[-5:-2]``: a list of runs, oldest first, as a Python list slices
          (the plugin hands these to tiled, which refuses a negative start with step 1);
        - a root without the ``CatalogOfBlueskyRuns`` spec (``tiled serve catalog`` sets none) is taken
          as SQL-backed, so partial uids are looked up by ``LIKE`` (the plugin would send a Mongo-era
          query such a server does not know).
        """

        @property
        def is_sql(self) -> bool:
            versions = [spec.version or "" for spec in self.specs if spec.name == RUNS_SPEC["name"]]
            return not versions or versions[0].startswith("3.")

        def __getitem__(self, key):
            if isinstance(key, slice) and key.start is not None and key.start < 0 and key.step in (None, 1):
                return self._negative_slice(key)
            return super().__getitem__(key)

        def _negative_slice(self, key: slice) -> list:
            if key.stop is not None and key.stop >= 0:  # e.g. [-5:3]: needs the length
                begin, end, _ = key.indices(len(self))
                return self.values()[begin:end] if end > begin else []
            first, last = -key.start, 0 if key.stop is None else -key.stop  # counted back from the newest
            if last >= first:
                return []
            return list(reversed(self.values()[-1 - last:-1 - first:-1]))  # newest first, one request

    return RunCatalog


@functools.cache
def _event_stream_class():
    from bluesky_tiled_plugins.clients.bluesky_event_stream import DATAVALUES, TIMESTAMPS, BlueskyEventStreamV3

    class CompleteEventStream(BlueskyEventStreamV3):
        """A stream whose ``read()`` returns its complete events: the rows every field of the stream has.

        bluesky-tiled-plugins' TiledWriter stores an event's array fields (one zarr array per field, e.g. a
        spectrum) before its row of the stream's table (scalars, ``seq_num``, ``time``), one request each.
        While a run is written, or after its writer died between those requests, an array can be a row
        ahead of the table, and the stock ``read()`` fails (``conflicting sizes for dimension 'time'``).
        Here the table is read first and every field is cut to the rows all of them have: a consistent
        snapshot of a live run, and every completed event of an interrupted one. Other layouts (external
        files, ragged arrays) are read as bluesky-tiled-plugins does. Arrays are read by slice, which also avoids
        the stock whole-array read's HTTP 500 when the writer extends the array during the read."""

        def read(self, variables=(DATAVALUES,), dim0=None):
            import numpy as np
            import xarray
            from tiled.structures.core import StructureFamily

            contents = self.get_contents()  # one snapshot of the stream's parts: the fields come from it too
            families = {part: item["attributes"]["structure_family"] for part, item in contents.items()}
            if any(family not in (StructureFamily.table, StructureFamily.array) for family in families.values()):
                return super().read(variables=variables, dim0=dim0)
            keys = {part for part, family in families.items() if family == StructureFamily.array}
            for part, family in families.items():
                if family == StructureFamily.table:
                    keys.update(contents[part]["attributes"]["structure"]["columns"])
            variables = set(variables)
            if DATAVALUES in variables:
                variables |= {k for k in keys if not k.startswith("ts_") and k != "seq_num"}
            if TIMESTAMPS in variables:
                variables |= {k for k in keys if k.startswith("ts_")}
            variables -= {DATAVALUES, TIMESTAMPS}
            dim0 = dim0 or "time"
            columns, arrays, rows = {}, {}, []
            for part, family in families.items():  # the table(s) first: its rows are the events stored whole
                if family == StructureFamily.table:
                    table = self.base[part]
                    wanted = sorted(variables.intersection(table.columns))
                    frame = table.read(wanted) if wanted else table.read(["seq_num"])
                    rows.append(len(frame))
                    columns.update({name: frame[name].to_numpy() for name in wanted})
            for part, family in families.items():
                if family == StructureFamily.array:
                    array = self.base[part]
                    rows.append(array.shape[0])
                    if part in variables:
                        arrays[part] = array
            # Every stream TiledWriter stores has a table (seq_num, time): no table yet, no complete event yet.
            has_table = StructureFamily.table in families.values()
            n = min(rows) if rows and has_table else 0
            data_vars = {}
            for name, values in columns.items():
                values = values[:n]
                if values.dtype == object and n and isinstance(values[0], str):
                    values = values.astype("U")
                data_vars[name] = ((dim0,) + tuple(f"{name}_dim{i + 1}" for i in range(values.ndim - 1)), values)
            for name, array in arrays.items():
                # Always a slice: a whole-array read checks the server's zarr array against the shape this
                # client was told, and fails (HTTP 500) if the writer extended it in between.
                values = array[:n] if n else np.empty((0, *array.shape[1:]), dtype=array.dtype)
                dims = tuple(array.dims) if array.dims else (dim0,) + tuple(
                    f"{name}_dim{i + 1}" for i in range(values.ndim - 1))
                data_vars[name] = (dims, values)
            return xarray.Dataset(data_vars=data_vars)

    return CompleteEventStream


def __getattr__(name):
    if name == "RunCatalog":  # the class, without importing tiled on ``import bayesbeam.catalog``
        return _run_catalog_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _structure_clients(base):
    """``base`` (a tiled structure-client map) with ``CompleteEventStream`` for bluesky event streams; a copy
    (the default map is shared by every tiled client of the process)."""
    from tiled.utils import OneShotCachedMap

    factories = {key: functools.partial(base.__getitem__, key) for key in base.keys()}
    factories["BlueskyEventStream"] = _event_stream_class
    return OneShotCachedMap(factories)


def as_run_catalog(client):
    """``client`` (a tiled container client) as a ``RunCatalog`` on the same connection; no request."""
    if client.item["attributes"]["structure_family"] != "container":
        raise ValueError(f"{client.uri} is a {client.item['attributes']['structure_family']}, not a catalog of runs")
    return _run_catalog_class()(client.context, item=client.item,
                                structure_clients=_structure_clients(client.structure_clients))


def _init_catalog(uri: str) -> None:
    """Create and stamp a new catalog database, as ``tiled catalog init --if-not-exists`` does, but in this
    process: tiled's ``init_if_not_exists`` runs that command in a subprocess that imports tiled again
    (2-6 s). tiled's steps call ``asyncio.run``, so they run in a thread of their own (safe under a running
    event loop, e.g. Jupyter); alembic's ``prepend_sys_path`` would leave ``.`` on ``sys.path``: restored."""
    import asyncio
    import sys
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    try:
        from sqlalchemy.ext.asyncio import create_async_engine
        from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
        from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
        from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database
        from tiled.utils import ensure_specified_sql_driver
    except ImportError:  # another tiled layout: tiled's own (subprocess) way
        from tiled.catalog import from_uri

        from_uri(uri, init_if_not_exists=True)
        return
    uri = ensure_specified_sql_driver(uri)

    async def create_tables() -> bool:
        engine = create_async_engine(uri)
        try:
            await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            return False
        except UninitializedDatabase:
            await initialize_database(engine)
            return True
        finally:
            await engine.dispose()

    def init() -> None:
        if asyncio.run(create_tables()):
            saved = list(sys.path)
            try:
                with warnings.catch_warnings():  # tiled's alembic.ini template predates alembic's path_separator
                    warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
                    stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
            finally:
                sys.path[:] = saved

    with ThreadPoolExecutor(1, thread_name_prefix="catalog-init") as pool:
        pool.submit(init).result()


#: Embedded catalogs opened in this process: tiled client context -> the catalog's directory (for
#: ``catalog_directory``, ``run_status`` and the writers' journals).
_EMBEDDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def open_catalog(location: str | os.PathLike | None = None, *, writable: bool = True):
    """A ``RunCatalog`` client for the catalog at ``location`` (directory or tiled URI; default
    ``default_catalog_location()``).

    ``writable`` (default): for a writer. A missing directory is created (its parent must exist, except for
    the default location) and the catalog must be writable. ``writable=False``: for a reader (e.g. ``bayesbeam
    runs``): the catalog must exist; nothing is created. Any problem is a ``CatalogError`` with one line, raised
    within seconds and before anything moves: a directory that cannot be created or written, a read-only
    catalog, a catalog that does not exist, a server that refuses or does not answer.

    An embedded catalog's root carries the ``CatalogOfBlueskyRuns`` spec (tiled takes a root's specs
    from the adapter's configuration, not the database, so directories made before have it too)."""
    explicit = location is not None
    location = str(location or default_catalog_location())
    if is_server_uri(location):
        return _open_server(location)
    root = Path(location).expanduser().resolve()
    db = root / "catalog.db"
    _check_directory(root, db, writable=writable, make_parents=not explicit)
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.media_type_registration import default_serialization_registry
    from tiled.server.app import build_app

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("container", "application/json-seq", json_seq_exporter)  # run.documents()
    if writable:
        (root / "data").mkdir(exist_ok=True)
        (root / BACKUP_DIR).mkdir(exist_ok=True)
    if not db.exists():
        try:
            _init_catalog(f"sqlite:///{db}")
        except BaseException:  # a half-made database would be taken as made next time
            for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                path.unlink(missing_ok=True)
            raise
    timeout = busy_timeout_s()
    if writable:
        _use_wal(db, timeout)
        _use_wal(root / "tables.db", timeout, adbc=True)
    catalog = catalog_from_uri(f"sqlite:///{db}", specs=[RUNS_SPEC],
                               writable_storage=[f"file://{root / 'data'}", f"sqlite:///{root / 'tables.db'}"])
    _wait_for_locks(catalog, timeout, writer=writable)
    context = Context.from_app(build_app(catalog, serialization_registry=registry))
    _close_at_exit_within(context.http_client, float(os.environ.get("BAYESBEAM_CLOSE_AT_EXIT_S", CLOSE_AT_EXIT_S)))
    client = as_run_catalog(from_context(context))
    _EMBEDDED[client.context] = root
    return client


#: Wall s an embedded catalog's in-process server may take to close when the program ends
#: (``$BAYESBEAM_CLOSE_AT_EXIT_S`` overrides it).
CLOSE_AT_EXIT_S = 10.0


def _close_at_exit_within(test_client, timeout_s: float) -> None:
    """Close the in-process server of an embedded catalog when the program ends, but give up after
    ``timeout_s``. tiled closes it at thread shutdown and waits for every task of its event loop; one task that
    never ends (seen after runs that failed mid-request) made the program hang at exit for good. This callback
    runs before tiled's own (threading's exit callbacks run last-registered first); after it, tiled's finds
    nothing left to close. Everything the catalog stored is on disk by then (SQLite commits as it goes)."""
    import sys
    import threading

    def close() -> None:
        closer = threading.Thread(target=test_client.__exit__, name="catalog-close", daemon=True)
        closer.start()
        closer.join(timeout_s)
        if closer.is_alive():
            print(f"bayesbeam: an embedded catalog's server did not close within {timeout_s:g} s; exiting without it",
                  file=sys.stderr)

    threading._register_atexit(close)  # the layer tiled uses: before the interpreter's own atexit


def catalog_directory(client) -> Path | None:
    """The directory of the embedded catalog ``client`` (any client of it: a run, a stream) was opened on;
    ``None`` for a tiled server."""
    context = getattr(client, "context", None)
    try:
        return _EMBEDDED.get(context)
    except TypeError:  # not a tiled client's context
        return None


def _check_directory(root: Path, db: Path, *, writable: bool, make_parents: bool) -> None:
    """``CatalogError`` unless ``root`` can be used as asked (see ``open_catalog``); creates it for a writer."""
    try:
        _check_directory_or_raise(root, db, writable=writable, make_parents=make_parents)
    except OSError as exc:  # e.g. a parent directory this user may not enter
        why = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise CatalogError(f"catalog {root} cannot be used: {exc.filename or root}: {why}") from None


def _check_directory_or_raise(root: Path, db: Path, *, writable: bool, make_parents: bool) -> None:
    if root.exists() and not root.is_dir():
        raise CatalogError(f"catalog {root} is not a directory")
    if not writable:
        if not root.is_dir():
            raise CatalogError(f"catalog {root} does not exist")
        if not db.is_file():
            raise CatalogError(f"catalog {root} does not exist (a directory without catalog.db)")
        if not os.access(db, os.R_OK):
            raise CatalogError(f"catalog {db} cannot be read (permission denied)")
        return
    if not root.exists():
        if not make_parents and not root.parent.is_dir():
            what = "is not a directory" if root.parent.exists() else "does not exist"
            raise CatalogError(f"cannot create catalog {root}: its parent {root.parent} {what}")
        try:
            root.mkdir(parents=make_parents, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create catalog {root}: {exc.strerror or exc}") from None
    probe = root / f".write-test-{os.getpid()}"
    # The database files are checked with access(2), never opened: closing any descriptor of a SQLite file
    # drops every POSIX lock this process holds on it, its own SQLite connections' included, and another
    # writer can then corrupt the database (sqlite.org/howtocorrupt.html, 2.2).
    try:  # what the databases need: new files in the directory (journals, -wal, -shm) and the files themselves
        probe.touch()
        probe.unlink()
        for path in (db, root / "tables.db", *(root / f"{name}-{suffix}" for name in ("catalog.db", "tables.db")
                                               for suffix in ("wal", "shm"))):
            if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
        for path in (root / "data", root / BACKUP_DIR):
            if path.is_dir():
                (path / probe.name).touch()
                (path / probe.name).unlink()
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else root
        where = where.parent if where.name == probe.name else where  # a new file in that directory
        why = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc)).lower()
        raise CatalogError(f"catalog {root} is not writable" + (f": {where}" if where != root else "")
                           + f" ({why})") from None


def _use_wal(path: Path, timeout: float, *, adbc: bool = False) -> None:
    """Put the SQLite database ``path`` (created if missing) in write-ahead-log mode: readers then never wait for,
    nor block, a writer. Persistent; done once per database. (tiled's ``initialize_database`` asks for WAL inside
    a transaction, where SQLite ignores it, and its table storage is created in rollback-journal mode.)

    ``adbc``: through ADBC's SQLite driver, as tiled opens its table storage. That driver carries its own copy
    of SQLite: a database must only ever be opened by one SQLite library per process, or closing one library's
    connection drops the other's locks (sqlite.org/howtocorrupt.html, 2.2.1)."""
    if adbc:
        import adbc_driver_manager.dbapi as dbapi
        import adbc_driver_sqlite.dbapi

        def connect():
            return adbc_driver_sqlite.dbapi.connect(str(path), autocommit=True)
    else:
        import sqlite3 as dbapi

        def connect():
            return dbapi.connect(path, timeout=timeout, isolation_level=None)

    db = None
    try:
        db = connect()
        cursor = db.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        cursor.fetchall()
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchall()
        cursor.close()
    except dbapi.Error as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise CatalogError(f"catalog database {path} cannot be opened for writing: {one_line(exc)}") from None
        # Another program (one without this change) holds it: WAL at a later opening; the busy timeout holds now.
        logger.warning("catalog: %s is busy; it stays in rollback-journal mode for now", path)
    finally:
        if db is not None:
            db.close()


def _wait_for_locks(catalog, timeout: float, writer: bool = True) -> None:
    """Every SQLite connection of ``catalog`` (tiled's ``CatalogContainerAdapter``) waits up to ``timeout`` s for
    another connection's lock instead of failing at once with ``database is locked``: the catalog database
    (SQLAlchemy + aiosqlite) and the table storage (ADBC's SQLite driver, which sets no busy timeout at all).

    ``writer``: each use of a table-storage connection is one ``BEGIN IMMEDIATE`` transaction (it takes the write
    lock first, waiting for it). ADBC opens deferred transactions, and tiled reads before it writes in one of them
    (``CREATE TABLE IF NOT EXISTS`` then the dataset counter, when a stream's table is made): if another process
    commits in between, SQLite refuses the upgrade at once, busy timeout or not (measured: one run in four lost
    its catalog copy with four writers). The catalog database needs nothing of the kind: Python's sqlite3 begins
    its transactions at the first write."""
    from sqlalchemy import event
    from tiled.storage import SQLStorage

    ms = int(timeout * 1000)

    def catalog_connect(dbapi_connection, record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {ms}")
        cursor.close()

    def table_connect(adbc_connection, record):
        with adbc_connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {ms}")
            cursor.fetchall()

    def table_checkout(adbc_connection, record, proxy):
        for statement in ("ROLLBACK", "BEGIN IMMEDIATE"):  # replaces the deferred transaction ADBC has open
            try:
                with adbc_connection.cursor() as cursor:
                    cursor.execute(statement)
            except Exception as exc:  # no write lock within the timeout: a plain transaction, as tiled has it
                if statement == "BEGIN IMMEDIATE":
                    logger.warning("catalog: no write lock on the table storage within %g s (%s)", timeout, exc)
                    with adbc_connection.cursor() as cursor:
                        cursor.execute("BEGIN")

    engine = catalog.context.engine.sync_engine
    if not event.contains(engine, "connect", catalog_connect):
        event.listen(engine, "connect", catalog_connect)
    for storage in catalog.context.writable_storage.values():
        if isinstance(storage, SQLStorage) and storage.dialect == "sqlite":
            pool = storage._connection_pool  # tiled's pool of ADBC connections (created here if not yet)
            for name, listener in getattr(pool, "_bayesbeam_listeners", ()):
                event.remove(pool, name, listener)
            listeners = [("connect", table_connect)] + ([("checkout", table_checkout)] if writer else [])
            for name, listener in listeners:
                event.listen(pool, name, listener)
            pool._bayesbeam_listeners = listeners


def _open_server(uri: str):
    """A ``RunCatalog`` on the tiled server at ``uri``, or a ``CatalogError`` within ``SERVER_TIMEOUT_S``: the
    server is probed with one plain request first (tiled's client retries a dead server for minutes)."""
    import httpx

    parsed = urlparse(uri)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        raise CatalogError(f"catalog URI {uri!r} names no host")
    try:
        socket.create_connection((host, port), timeout=SERVER_TIMEOUT_S).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise CatalogError(f"no tiled server at {uri}: connecting to {host}:{port} failed ({why})") from None
    path = parsed.path
    info = parsed._replace(path=(path[:path.index("/api")] if "/api" in path else path.rstrip("/")) + "/api/v1/",
                           query="", fragment="").geturl()  # the server's "about" document, as tiled finds it
    try:
        response = httpx.get(info, timeout=SERVER_TIMEOUT_S, follow_redirects=True,
                             headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise CatalogError(f"tiled server at {uri} did not answer within {SERVER_TIMEOUT_S:g} s "
                           f"({type(exc).__name__})") from None
    if response.status_code >= 400:
        raise CatalogError(f"tiled server at {uri} answered HTTP {response.status_code} for {info}: is this a "
                           "tiled server?")
    from tiled.client import from_uri

    try:
        client = from_uri(uri, api_key=os.environ.get("TILED_API_KEY"))
    except Exception as exc:
        raise CatalogError(f"tiled server at {uri}: {one_line(exc)} (API key from $TILED_API_KEY)") from None
    return as_run_catalog(client)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its class and its message with whitespace collapsed (≤ 300 chars)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def find_runs(client, **start_md):
    """Runs whose start document has all the given ``key=value`` pairs (e.g. ``sample="fe"``).

    ``sample`` matches case-insensitively, on ``sample_key``. Runs stored before ``sample_key`` existed
    match when their ``sample`` is the name as given, its lower-case form, or a form a newer run of that
    sample was typed in (an old ``"fe"`` is found by ``"Fe"``; an old ``"La2O3"`` by ``"la2o3"`` only once
    a newer run says ``La2O3``, or after ``add_sample_keys``)."""
    from tiled.queries import Key

    results = client
    for key, value in start_md.items():
        results = _search_sample(results, value) if key == "sample" else results.search(Key(f"start.{key}") == value)
    return results


def _search_sample(results, value):
    from tiled.queries import In, Key, KeyPresent, KeysFilter

    skey = sample_key(value) if isinstance(value, str) else None
    if skey is None:
        return results.search(Key("start.sample") == value)
    new = results.search(Key("start.sample_key") == skey)
    before = results.search(KeyPresent("start.sample")).search(KeyPresent("start.sample_key", exists=False))
    if not before:  # a catalog without runs from before sample_key (one count request)
        return new
    # Any run whose ``sample`` is one of these strings is this sample: one query, in catalog order.
    seen = [d["value"] for d in new.distinct("start.sample")["metadata"]["start.sample"]]
    forms = {value.strip(), skey, *seen}
    if all(isinstance(form, str) for form in forms):
        return results.search(In("start.sample", sorted(forms)))
    old = before.search(In("start.sample", sorted({value.strip(), skey})))  # dict samples among the new runs
    return results.search(KeysFilter(keys=[*new.keys(), *old.keys()]))


def add_sample_keys(client) -> int:
    """Give runs stored before ``sample_key`` existed their key (a tiled metadata revision keeps the
    original), so ``find_runs`` finds old mixed-case names (``La2O3``) case-insensitively. Returns how many."""
    from tiled.queries import KeyPresent

    todo = client.search(KeyPresent("start.sample")).search(KeyPresent("start.sample_key", exists=False))
    count = 0
    for uid in list(todo):
        run = client[uid]
        if (skey := sample_key(run.metadata["start"].get("sample"))) is not None:
            run.update_metadata({"start": {"sample_key": skey}})
            count += 1
    return count


def replay(run, callback) -> None:
    """Feed a stored run's documents, in order, to ``callback(name, doc)`` (e.g. an agent feeder:
    the agent's state and every decision are rebuilt from the catalog). A run without a stop document
    (still running, or its process died) ends without one, not with the exporter's empty ``{}``."""
    for name, doc in run.documents():
        if name == "stop" and not doc:
            continue
        callback(name, doc)


# -- run status ---------------------------------------------------------------------------------------
def run_status(run, now: float | None = None) -> str:
    """What became of a stored run, by this rule (``now``: the time to judge at, default the current time):

    1. it has a stop document: its ``exit_status`` (``success``, ``abort`` or ``fail``, bluesky's words);
    2. else, in an embedded catalog opened in this process, whose directory holds the run's journal
       (``backup/<uid>.jsonl``, locked by the writing process for as long as the run is open; the lock goes
       with the process, also on ``kill -9``): ``running`` if the journal is locked, ``interrupted`` if not;
    3. else ``interrupted`` if the run was loaded from a journal without a stop document (``load_backup``);
    4. else by its last sign of life, the later of its start and its writer's heartbeat (metadata
       ``writer.heartbeat``, renewed every ``HEARTBEAT_S`` s while the run is open): ``running`` if it is at
       most ``INTERRUPTED_AFTER_S`` s (or ``HEARTBEAT_MISSED`` heartbeat intervals, if longer) old,
       ``interrupted`` after that. Rule 4 is what a reader on another host, or of a tiled server, sees:
       a writer killed there shows ``running`` for up to that long.
    """
    md = run.metadata
    stop = md.get("stop")
    if stop:
        return str(stop.get("exit_status") or "unknown")
    start, writer = md.get("start") or {}, md.get("writer") or {}
    root = catalog_directory(run)
    if root is not None and start.get("uid"):
        live = journal_is_live(root / BACKUP_DIR / f"{start['uid']}.jsonl")
        if live is not None:
            return "running" if live else "interrupted"
    if writer.get("loaded_from_backup"):
        return "interrupted"
    now = time.time() if now is None else now
    last = max(float(start.get("time") or 0.0), float(writer.get("heartbeat") or 0.0))
    allowed = max(INTERRUPTED_AFTER_S, HEARTBEAT_MISSED * float(writer.get("interval_s") or 0.0))
    return "running" if now - last <= allowed else "interrupted"


# -- journals (local backups of runs) -----------------------------------------------------------------
def backup_directory(client) -> Path:
    """Where a writer on ``client`` keeps its runs' journals: ``<catalog>/backup`` for an embedded catalog;
    for a tiled server ``$BAYESBEAM_BACKUP``, else ``$XDG_DATA_HOME/bayesbeam/backup/<host>_<port>`` (local: a
    journal must survive the server)."""
    root = catalog_directory(client)
    if root is not None:
        return root / BACKUP_DIR
    if env := os.environ.get("BAYESBEAM_BACKUP"):
        return Path(env).expanduser()
    uri = urlparse(str(client.context.api_uri))
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "bayesbeam" / "backup" / f"{uri.hostname}_{uri.port or 80}"


ARRAY_SIDECAR_BYTES = 64 * 1024  #: arrays at least this large go to the journal's binary sidecar, not its JSON
ARRAY_REF = "__journal_array__"  #: a JSON line's reference to an array in the sidecar: [offset, dtype, shape]


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Journal:
    """A run's documents, one JSON line ``{"name": ..., "doc": ...}`` each (bluesky-tiled-plugins'
    ``JSONLinesWriter`` format), written as they are emitted, before the catalog sees them. Arrays of at
    least ``ARRAY_SIDECAR_BYTES`` (detector frames) are appended raw to ``<uid>.arrays`` and referenced from
    the line as ``{ARRAY_REF: [offset, dtype, shape]}``: a 4 MB float32 frame as JSON text took 20 MB and 1 s
    to write. The bytes are flushed before the line that references them, so every line read has its arrays.
    The writing process holds an exclusive ``flock`` on the ``.jsonl`` file while the run is open: a live
    journal is never loaded, and a journal whose lock is free belongs to a run that ended or whose writer
    died. A dot-named file until the lock is held, so nobody sees it unlocked while it is being made."""

    def __init__(self, path: Path, file):
        self.path, self._file = path, file
        self._arrays = None  # the sidecar, opened with the first large array

    @classmethod
    def create(cls, directory: Path, uid: str) -> Journal:
        import fcntl

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{uid}.jsonl"
        making = directory / f".{uid}.jsonl.new"
        file = open(making, "x", encoding="utf-8")
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(making, path)
        return cls(path, file)

    def _default(self, value):
        nbytes = getattr(value, "nbytes", 0)
        if nbytes < ARRAY_SIDECAR_BYTES or not hasattr(value, "shape"):
            return _json_default(value)
        import numpy as np

        array = np.ascontiguousarray(value)
        if array.dtype.hasobject:
            return _json_default(value)
        if self._arrays is None:
            self._arrays = open(sidecar_path(self.path), "ab")
        offset = self._arrays.tell()
        self._arrays.write(array.tobytes())
        return {ARRAY_REF: [offset, array.dtype.str, list(array.shape)]}

    def append(self, name: str, doc) -> None:
        line = json.dumps({"name": name, "doc": doc}, default=self._default) + "\n"
        if self._arrays is not None:
            self._arrays.flush()  # the arrays first: no line without its bytes
        self._file.write(line)
        self._file.flush()  # in the OS's hands: survives the death of this process

    def close(self, remove: bool = False) -> None:
        """Release the lock; ``remove``: delete the files first (the run is whole in the catalog)."""
        if self._file.closed:
            return
        if self._arrays is not None:
            self._arrays.close()
        if remove:
            sidecar_path(self.path).unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
        self._file.close()


def sidecar_path(journal: Path) -> Path:
    """The binary sidecar of journal ``<uid>.jsonl``: ``<uid>.arrays``."""
    return journal.with_suffix(".arrays")


def journal_is_live(path: Path) -> bool | None:
    """``True`` if a process holds the journal ``path`` open for writing, ``False`` if not, ``None`` if there is
    no such journal."""
    import fcntl

    try:
        with open(path, "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return None


def read_journal(path: Path) -> list[tuple[str, dict]]:
    """The documents of a journal, in order. A last line cut short (its writer died writing it) is left out."""
    import numpy as np

    path = Path(path)

    def array(ref: dict):
        if ARRAY_REF not in ref:
            return ref
        offset, dtype, shape = ref[ARRAY_REF]
        count = int(np.prod(shape))
        out = np.fromfile(sidecar_path(path), dtype=dtype, count=count, offset=offset)
        if out.size != count:
            raise ValueError(f"{sidecar_path(path).name} ends before the array at byte {offset} that {path.name} "
                             "references")
        return out.reshape(shape)

    docs = []
    with open(path, encoding="utf-8") as file:
        lines = file.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            item = json.loads(line, object_hook=array)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the unfinished last line
                break
            raise
        docs.append((item["name"], item["doc"]))
    return docs


def load_backup(client, directory: str | os.PathLike | None = None, uids=None) -> list[dict]:
    """Put the runs journalled in ``directory`` (default ``backup_directory(client)``) into the catalog
    ``client``, and delete each journal once its run is in. ``uids``: only these runs (uids or their beginnings).

    Per journal: a run whose writer still holds the journal (``live``) is left alone; a run absent from the
    catalog is written from the journal (``loaded``); a run the catalog has without its stop document (its
    catalog write failed, or its writer died) is replaced by the journal's copy, which holds every document
    the catalog has and any it missed (``replaced``); a run the catalog has with its stop document is whole
    and only its journal goes (``complete``). A journal that cannot be loaded is kept (``failed``).
    Returns one dict per journal: ``uid``, ``action``, ``documents``, ``events`` and ``error``."""
    import fcntl

    directory = Path(directory) if directory is not None else backup_directory(client)
    report = []
    paths = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    for path in paths:
        uid = path.name[: -len(".jsonl")]
        if uids is not None and not any(uid.startswith(str(u)) for u in uids):
            continue
        row = {"uid": uid, "action": "", "documents": 0, "events": 0, "error": "", "journal": str(path)}
        report.append(row)
        with open(path, "rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                row["action"] = "live"
                continue
            try:
                docs = read_journal(path)
                row["documents"] = len(docs)
                row["events"] = sum(1 for name, _ in docs if name == "event")
                row["action"] = _load_journal(client, uid, docs, path)
                sidecar_path(path).unlink(missing_ok=True)
                path.unlink()
            except Exception as exc:  # keep the journal; say why
                row["action"], row["error"] = "failed", one_line(exc)
    return report


def _load_journal(client, uid: str, docs: list[tuple[str, dict]], path: Path) -> str:
    from bluesky_tiled_plugins import TiledWriter

    if not docs or docs[0][0] != "start" or docs[0][1].get("uid") != uid:
        raise ValueError(f"{path.name} does not begin with the start document of run {uid}")
    action = "loaded"
    if uid in client:
        if client[uid].metadata.get("stop"):
            return "complete"
        client.delete_contents(uid, recursive=True, external_only=False)
        action = "replaced"
    stopped = docs[-1][0] == "stop"
    # Batched (one request per stream) when the stop document flushes the batches; one event at a time if not.
    writer = TiledWriter(client, batch_size=10_000 if stopped else 1)
    for name, doc in docs:
        writer(name, doc)
    client[uid].update_metadata({"writer": {"loaded_from_backup": path.name, "loaded_at": time.time()}},
                                drop_revision=True)
    return action
