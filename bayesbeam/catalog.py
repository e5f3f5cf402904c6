"""Where runs are stored: an embedded SQLite-backed tiled catalog (no server), or a tiled server.

Location, first found: the ``location`` argument, ``$BAYESBEAM_CATALOG``, then
``$XDG_DATA_HOME/bayesbeam/catalog`` (``~/.local/share/bayesbeam/catalog``). A directory means the
embedded catalog (created on first use); an ``http(s)://`` URI means a tiled server
(API key from ``$TILED_API_KEY``).
"""

from __future__ import annotations

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
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    root = Path(location).expanduser().resolve()
    new = not (root / "catalog.db").exists()
    (root / "data").mkdir(parents=True, exist_ok=True)
    catalog = catalog_from_uri(
        f"sqlite:///{root / 'catalog.db'}",
        writable_storage=[f"file://{root / 'data'}", f"sqlite:///{root / 'tables.db'}"],
        init_if_not_exists=new,
    )
    return from_context(Context.from_app(build_app(catalog)))


def find_runs(client, **start_md):
    """Runs whose start document has all the given ``key=value`` pairs (e.g. ``sample="fe"``)."""
    from tiled.queries import Key

    results = client
    for key, value in start_md.items():
        results = results.search(Key(f"start.{key}") == value)
    return results
