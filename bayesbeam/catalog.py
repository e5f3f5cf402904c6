"""Where runs are stored: an embedded SQLite-backed tiled catalog (no server), or a tiled server.

Location, first found: the ``location`` argument, ``$BAYESBEAM_CATALOG``, then
``$XDG_DATA_HOME/bayesbeam/catalog`` (``~/.local/share/bayesbeam/catalog``). A directory means the
embedded catalog (created on first use); an ``http(s)://`` URI means a tiled server
(API key from ``$TILED_API_KEY``).

Either way the client is a bluesky-tiled-plugins ``CatalogOfBlueskyRuns`` (see ``RunCatalog``), indexed as
databroker 2 users do: ``catalog[-1]`` (latest run), ``catalog[-3:]`` (last three, oldest first),
``catalog[6]`` (latest run with scan id 6), ``catalog["a1b2c3d4"]`` (partial uid, as BEC prints it) and
``catalog[full_uid]``. Start documents carry ``sample`` as typed and ``sample_key``, its lower-case form,
which ``find_runs`` searches.

tiled and bluesky-tiled-plugins are imported on first use, not on import (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from pathlib import Path

RUNS_SPEC = {"name": "CatalogOfBlueskyRuns", "version": "3.0"}  # 3.x: SQL-backed (queries by LIKE, not Mongo)


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


def __getattr__(name):
    if name == "RunCatalog":  # the class, without importing tiled on ``import bayesbeam.catalog``
        return _run_catalog_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def as_run_catalog(client):
    """``client`` (a tiled container client) as a ``RunCatalog`` on the same connection; no request."""
    if client.item["attributes"]["structure_family"] != "container":
        raise ValueError(f"{client.uri} is a {client.item['attributes']['structure_family']}, not a catalog of runs")
    return _run_catalog_class()(client.context, item=client.item, structure_clients=client.structure_clients)


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


def open_catalog(location: str | os.PathLike | None = None):
    """A writable ``RunCatalog`` client for the catalog at ``location`` (directory or tiled URI).

    An embedded catalog's root carries the ``CatalogOfBlueskyRuns`` spec (tiled takes a root's specs
    from the adapter's configuration, not the database, so directories made before have it too)."""
    location = str(location or default_catalog_location())
    if is_server_uri(location):
        from tiled.client import from_uri

        return as_run_catalog(from_uri(location, api_key=os.environ.get("TILED_API_KEY")))
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.media_type_registration import default_serialization_registry
    from tiled.server.app import build_app

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("container", "application/json-seq", json_seq_exporter)  # run.documents()
    root = Path(location).expanduser().resolve()
    db = root / "catalog.db"
    (root / "data").mkdir(parents=True, exist_ok=True)
    if not db.exists():
        try:
            _init_catalog(f"sqlite:///{db}")
        except BaseException:  # a half-made database would be taken as made next time
            for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                path.unlink(missing_ok=True)
            raise
    catalog = catalog_from_uri(f"sqlite:///{db}", specs=[RUNS_SPEC],
                               writable_storage=[f"file://{root / 'data'}", f"sqlite:///{root / 'tables.db'}"])
    return as_run_catalog(from_context(Context.from_app(build_app(catalog, serialization_registry=registry))))


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
