"""A RunEngine wired to the catalog: the ``nslsii.configure_base`` role, without the facility bits."""

from __future__ import annotations

from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter

from bayesbeam.catalog import sample_key


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
    a facility) and ``catalog[6]`` names one run."""

    def next_scan_id(md) -> int:
        try:
            stored = client.values()[-1].metadata["start"].get("scan_id")
        except IndexError:  # an empty catalog
            stored = None
        return max(md.get("scan_id") or 0, stored if isinstance(stored, int) else 0) + 1

    return next_scan_id


def make_run_engine(client=None, md: dict | None = None) -> RunEngine:
    """A RunEngine writing every document to ``client`` (a tiled client) as it is emitted:
    ``batch_size=1``, so whatever was counted is stored even if the run aborts. Start documents get
    ``sample_key`` (``normalise_start_md``) and, with a catalog, scan ids continuing its newest run's."""
    if client is None:
        return RunEngine(md or {}, md_normalizer=normalise_start_md)
    RE = RunEngine(md or {}, md_normalizer=normalise_start_md, scan_id_source=catalog_scan_ids(client))
    RE.subscribe(TiledWriter(client, batch_size=1))
    return RE
