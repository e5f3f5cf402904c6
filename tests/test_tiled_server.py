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
