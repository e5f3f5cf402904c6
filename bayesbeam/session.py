"""A RunEngine wired to the catalog: the ``nslsii.configure_base`` role, without the facility bits."""

from __future__ import annotations

from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter


def make_run_engine(client=None, md: dict | None = None) -> RunEngine:
    """A RunEngine writing every document to ``client`` (a tiled client) as it is emitted:
    ``batch_size=1``, so whatever was counted is stored even if the run aborts."""
    RE = RunEngine(md or {})
    if client is not None:
        RE.subscribe(TiledWriter(client, batch_size=1))
    return RE
