"""A tiled server URI works in place of the embedded catalog (server on 127.0.0.1 only)."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def tiled_server(tmp_path):
    exe = shutil.which("tiled", path=os.path.dirname(sys.executable)) or shutil.which("tiled")
    port = free_port()
    (tmp_path / "data").mkdir()
    proc = subprocess.Popen(
        [exe, "serve", "catalog", str(tmp_path / "catalog.db"), "--init", "-w", str(tmp_path / "data"),
         "-w", f"sqlite:///{tmp_path / 'tables.db'}", "--api-key", "secret", "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("tiled server did not start")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_rehearsal_into_a_tiled_server(tiled_server, tmp_path):
    env = {**os.environ, "TILED_API_KEY": "secret"}
    out = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "rehearse", "compton", "--catalog", tiled_server,
                          "--seed", "3", "--time-scale", "1e6", "--no-progress", "--figure", str(tmp_path / "f.png")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    from tiled.client import from_uri

    client = from_uri(tiled_server, api_key="secret")
    (uid,) = list(client)
    run = client[uid]
    assert run.metadata["stop"]["reason"].startswith("target_std")
    assert run["primary"]["ge_spectrum"].read().shape[1] == 1024
    assert len(run["posterior"]["mu_s_std"].read()) >= 4


def test_server_catalog_indexes_as_databroker(tiled_server, monkeypatch):
    """The same indexing through a server whose root carries no spec (``tiled serve catalog`` sets none)."""
    import bluesky.plans as bp
    import ophyd.sim

    from bayesbeam.catalog import find_runs, open_catalog
    from bayesbeam.session import make_run_engine

    monkeypatch.setenv("TILED_API_KEY", "secret")
    catalog = open_catalog(tiled_server)
    assert type(catalog).__name__ == "RunCatalog" and catalog.is_sql
    RE = make_run_engine(catalog)  # TiledWriter on the same client
    uids = [RE(bp.count([ophyd.sim.det], md={"sample": sample}))[0] for sample in ("La2O3", "fe", "la2o3", "Fe")]
    start = [run.metadata["start"] for run in catalog[-3:]]
    assert [md["uid"] for md in start] == uids[1:] and catalog[-1].metadata["start"]["uid"] == uids[-1]
    assert [catalog[i].metadata["start"]["uid"] for i in (1, 2, 3, 4)] == uids  # scan ids
    assert all(catalog[uid[:8]].metadata["start"]["uid"] == uid == catalog[uid].metadata["start"]["uid"]
               for uid in uids)
    assert [md["sample"] for md in start] == ["fe", "la2o3", "Fe"] and start[-1]["sample_key"] == "fe"
    assert list(find_runs(catalog, sample="LA2O3")) == [uids[0], uids[2]]
    assert list(find_runs(open_catalog(tiled_server), sample="FE")) == [uids[1], uids[3]]  # a new connection
    assert catalog[uids[0]]["primary"]["det"].read().shape == (1,)
