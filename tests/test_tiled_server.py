"""A tiled server URI works in place of the embedded catalog (server on 127.0.0.1 only)."""

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    """A SQLite-backed ``tiled serve catalog`` on 127.0.0.1, shared by this module (the PostgreSQL-backed server
    is exercised in tests/test_catalog_integrity.py)."""
    from conftest import TiledServer

    directory = tmp_path_factory.mktemp("sqlite_tiled")
    (directory / "data").mkdir()
    writable = [str(directory / "data"), f"sqlite:///{directory / 'tables.db'}"]
    server = TiledServer(str(directory / "catalog.db"), writable, directory)
    try:
        yield server.start().uri
    finally:
        server.stop()


def test_rehearsal_into_a_tiled_server(tiled_server, tmp_path):
    env = {**os.environ, "TILED_API_KEY": "secret"}
    out = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "rehearse", "compton", "--catalog", tiled_server,
                          "--seed", "3", "--time-scale", "1e6", "--no-progress", "--figure", str(tmp_path / "f.png")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    from tiled.client import from_uri

    client = from_uri(tiled_server, api_key="secret")
    run = client.values()[-1]
    assert run.metadata["start"]["uid"][:8] in out.stdout
    assert run.metadata["stop"]["reason"].startswith("target_std")
    assert run["primary"]["ge_spectrum"].read().shape[1] == 1024
    post = run["posterior"]["mu_s_std"].read()
    assert len(post) >= 2 and post[-1] <= 0.01 < post[-2]


def test_server_catalog_indexes_as_databroker(tiled_server, monkeypatch):
    """The same indexing through a server whose root carries no spec (``tiled serve catalog`` sets none)."""
    import bluesky.plans as bp
    import ophyd.sim

    from bayesbeam.catalog import find_runs, open_catalog
    from bayesbeam.session import make_run_engine

    monkeypatch.setenv("TILED_API_KEY", "secret")
    catalog = open_catalog(tiled_server)
    assert type(catalog).__name__ == "RunCatalog" and catalog.is_sql
    before = len(catalog)  # runs of the other tests of this module
    RE = make_run_engine(catalog)  # TiledWriter on the same client
    uids = [RE(bp.count([ophyd.sim.det], md={"sample": sample}))[0] for sample in ("La2O3", "fe", "la2o3", "Fe")]
    start = [run.metadata["start"] for run in catalog[-3:]]
    assert [md["uid"] for md in start] == uids[1:] and catalog[-1].metadata["start"]["uid"] == uids[-1]
    first = catalog[uids[0]].metadata["start"]["scan_id"]
    assert first == before + 1  # scan ids go on from the newest stored run's
    assert [catalog[first + i].metadata["start"]["uid"] for i in range(4)] == uids
    assert all(catalog[uid[:8]].metadata["start"]["uid"] == uid == catalog[uid].metadata["start"]["uid"]
               for uid in uids)
    assert [md["sample"] for md in start] == ["fe", "la2o3", "Fe"] and start[-1]["sample_key"] == "fe"
    assert list(find_runs(catalog, sample="LA2O3")) == [uids[0], uids[2]]
    found = list(find_runs(open_catalog(tiled_server), sample="FE"))  # a new connection
    assert found[-2:] == [uids[1], uids[3]] and len(found) == 3  # and the rehearsal's Fe run
    assert catalog[uids[0]]["primary"]["det"].read().shape == (1,)
