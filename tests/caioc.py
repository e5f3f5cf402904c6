"""Test helper: one caproto IOC (``bayesbeam ioc``) per test process on 127.0.0.1, on a free port.

pyepics fixes its Channel Access environment when its context starts, so every test in the process
talks to this one IOC. It is stopped at exit (also when tests fail)."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ioc: dict = {}


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_ioc(port: int, time_scale: float = 2e3, seed: int = 1, timeout_s: float = 60.0) -> subprocess.Popen:
    """Start ``bayesbeam ioc`` on 127.0.0.1:``port`` and wait for its ``IOC ready`` line. Its output
    goes to a log file, not a pipe: a pipe nobody reads fills up and freezes the IOC mid-test."""
    log = tempfile.NamedTemporaryFile(prefix=f"bayesbeam-ioc-{port}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from bayesbeam.cli import main; main()", "ioc", "--port", str(port),
         "--time-scale", str(time_scale), "--seed", str(seed), "--faults"],
        stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = Path(log.name).read_text(errors="replace")
        if "IOC ready" in text:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"IOC did not start on port {port}: {Path(log.name).read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def shared_ioc() -> int:
    """The port of this process's IOC (started on first use); sets the CA client environment."""
    if "port" not in _ioc:
        port = free_port()
        proc = start_ioc(port)
        atexit.register(stop, proc)
        _ioc.update(port=port, proc=proc)
        os.environ.update({"EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}", "EPICS_CA_AUTO_ADDR_LIST": "NO"})
    if _ioc["proc"].poll() is not None:
        raise RuntimeError("the test IOC died")
    return _ioc["port"]


def run_startup(profile_dir: Path, namespace: dict | None = None) -> dict:
    """Execute a profile's ``startup/*.py`` in name order in one namespace, as IPython does."""
    ns = namespace if namespace is not None else {"__name__": "__main__"}
    for path in sorted((profile_dir / "startup").glob("*.py")):
        run_startup_file(path, ns)
    return ns


def run_startup_file(path: Path, namespace: dict) -> dict:
    """Execute one startup file in ``namespace`` (e.g. the banner again, in a running session)."""
    exec(compile(Path(path).read_text(), str(path), "exec"), namespace)
    return namespace
