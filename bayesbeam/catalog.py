"""Where runs are stored: an embedded SQLite-backed tiled catalog (no server), or a tiled server.

Location, first found: the ``location`` argument, ``$BAYESBEAM_CATALOG``, then
``$XDG_DATA_HOME/bayesbeam/catalog`` (``~/.local/share/bayesbeam/catalog``). A directory means the
embedded catalog (created on first use); an ``http(s)://`` URI means a tiled server
(API key from ``$TILED_API_KEY``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path


def default_catalog_location() -> str:
    """The catalog used when none is given (see module docstring)."""
    if env := os.environ.get("BAYESBEAM_CATALOG"):
        return env
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "bayesbeam" / "catalog")


def is_server_uri(location: str) -> bool:
    return str(location).startswith(("http://", "https://"))


def open_catalog(location: str | os.PathLike | None = None):
    """A writable tiled client for the catalog at ``location`` (directory or tiled URI)."""
    location = str(location or default_catalog_location())
    if is_server_uri(location):
        from tiled.client import from_uri

        return from_uri(location, api_key=os.environ.get("TILED_API_KEY"))
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.media_type_registration import default_serialization_registry
    from tiled.server.app import build_app

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("container", "application/json-seq", json_seq_exporter)  # run.documents()
    root = Path(location).expanduser().resolve()
    new = not (root / "catalog.db").exists()
    (root / "data").mkdir(parents=True, exist_ok=True)
    catalog = catalog_from_uri(
        f"sqlite:///{root / 'catalog.db'}",
        writable_storage=[f"file://{root / 'data'}", f"sqlite:///{root / 'tables.db'}"],
        init_if_not_exists=new,
    )
    return from_context(Context.from_app(build_app(catalog, serialization_registry=registry)))


def find_runs(client, **start_md):
    """Runs whose start document has all the given ``key=value`` pairs (e.g. ``sample="fe"``)."""
    from tiled.queries import Key

    results = client
    for key, value in start_md.items():
        results = results.search(Key(f"start.{key}") == value)
    return results


def replay(run, callback) -> None:
    """Feed a stored run's documents, in order, to ``callback(name, doc)`` (e.g. an agent feeder:
    the agent's state and every decision are rebuilt from the catalog)."""
    for name, doc in run.documents():
        callback(name, doc)
