"""Shared fixtures: one embedded catalog per test session (creating one costs ~5 s), one PostgreSQL
cluster per session (started on first use, on 127.0.0.1 only) with tiled servers on it, and one local queue
stack (Redis + RE manager, ~30 s to start) per session. The one test that stops the stack
(``@pytest.mark.stops_queue_stack``) runs last, so every module that uses the stack finds it up."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the services the tests start, too
    os.environ.setdefault(_var, "1")

API_KEY = "secret"


@pytest.fixture(scope="session", autouse=True)
def _journals_of_server_runs_in_a_temporary_directory(tmp_path_factory):
    """Writers to a tiled server keep their runs' journals under ``$BAYESBEAM_BACKUP``: not in the home directory."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BAYESBEAM_BACKUP", str(tmp_path_factory.mktemp("server_journals")))
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _only_the_packaged_sample_presets():
    """A ``$BAYESBEAM_PRESETS`` of the user running the tests adds samples no test expects: none (empty)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BAYESBEAM_PRESETS", "")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="session")
def catalog(catalog_dir):
    from bayesbeam.catalog import open_catalog

    return open_catalog(catalog_dir)


@pytest.fixture()
def RE(catalog):
    from bayesbeam.session import make_run_engine

    return make_run_engine(catalog)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``stops_queue_stack`` run after all the others (the stack is shared by the session)."""
    last = [item for item in items if item.get_closest_marker("stops_queue_stack")]
    if last:
        items[:] = [item for item in items if item not in last] + last


SHARED_STACK_FILES = ("test_queue_stack.py", "test_status_page.py")  # the modules that use the session's queue stack

try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # pytest-xdist is in the [test] extra; without it, override addopts' ``-n 3 --dist loadfile``
    pass
else:

    class _ModuleScheduling(LoadFileScheduling):
        """pytest-xdist's ``--dist loadfile`` (a module's tests in one process, in order, its fixtures set up
        once), except that the modules sharing the queue stack go to one process together, so the test that
        stops the stack runs after all of theirs."""

        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "queue_stack" if Path(path).name in SHARED_STACK_FILES else path

    def pytest_xdist_make_scheduler(config, log):
        return _ModuleScheduling(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """``bayesbeam queue start --profile sim --open`` on free ports, stopped at the end of the session; skips if
    there is no Redis server (``apt-get install redis-server``)."""
    from types import SimpleNamespace

    from caioc import free_ports
    from click.testing import CliRunner

    from bayesbeam.queue.cli import queue
    from bayesbeam.queue.stack import QueueStack

    if shutil.which(os.environ.get("BAYESBEAM_REDIS_SERVER", "redis-server")) is None:
        pytest.skip("no redis-server on PATH (apt-get install redis-server): the queue stack tests run a real Redis")
    state, catalog = tmp_path_factory.mktemp("queue_state"), tmp_path_factory.mktemp("queue_catalog")
    redis_port, control_port, info_port = free_ports(3)
    info = SimpleNamespace(state=state, catalog=catalog, stack=QueueStack(state), ports={redis_port, control_port,
                           info_port}, control=f"tcp://127.0.0.1:{control_port}", info=f"tcp://127.0.0.1:{info_port}")
    runner = CliRunner()
    try:
        result = runner.invoke(queue, ["start", "--profile", "sim", "--state-dir", str(state),
                                       "--catalog", str(catalog), "--redis-addr", f"127.0.0.1:{redis_port}",
                                       "--zmq-control-addr", info.control, "--zmq-info-addr", info.info, "--open",
                                       "--timeout", "150"])
        log = (state / "manager.log").read_text() if (state / "manager.log").exists() else ""
        assert result.exit_code == 0, result.output + log[-3000:]
        info.start_output = result.output
        yield info
    finally:
        runner.invoke(queue, ["stop", "--state-dir", str(state), "--force"])


@pytest.fixture(scope="session")
def epics_session(catalog, catalog_dir):
    """The epics profile's startup files executed as IPython would, against this process's IOC
    (started on 127.0.0.1 on first use, see tests/caioc.py). One per test process: every CA test
    module shares its devices, so their channels are searched for once."""
    import caioc

    caioc.shared_ioc()
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("BAYESBEAM_CATALOG", str(catalog_dir))
        mp.setenv("BAYESBEAM_PLOTS", "0")
        mp.setenv("BAYESBEAM_CONNECTION_TIMEOUT_S", "30")  # a loaded CI host retries lost UDP searches late
        ns = caioc.run_startup(caioc.ROOT / "profiles" / "epics")
        ns["bec"].disable_table()
        yield ns
    finally:
        mp.undo()


# -- servers on 127.0.0.1 ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, what: str, deadline_s: float = 180) -> None:
    """Until ``url`` answers 200; fails if ``proc`` exits first (or after ``deadline_s``, a hung start)."""
    import httpx

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start: {log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.1)


class TiledServer:
    """``tiled serve catalog`` on 127.0.0.1 (API key ``secret``); ``start()`` again after ``kill()`` serves the
    same databases on the same port."""

    def __init__(self, catalog_uri: str, writable: list[str], directory: Path):
        self.args = [catalog_uri, *(arg for w in writable for arg in ("-w", w))]
        self.directory, self.port = directory, free_port()
        self.uri = f"http://127.0.0.1:{self.port}/api"
        self.env = {"TILED_API_KEY": API_KEY}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> TiledServer:
        exe = shutil.which("tiled", path=os.path.dirname(sys.executable)) or shutil.which("tiled")
        log = self.directory / f"tiled-{self.starts}.log"
        self.starts += 1
        with open(log, "w") as out:
            self.proc = subprocess.Popen([exe, "serve", "catalog", *self.args, "--init", "--api-key", API_KEY,
                                          "--host", "127.0.0.1", "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        _wait_until_up(f"http://127.0.0.1:{self.port}/api/v1/", self.proc, log, "tiled server")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def postgres_bindir() -> Path | None:
    """The directory of PostgreSQL's server programs (``initdb``, ``pg_ctl``): on ``$PATH`` or Debian's
    ``/usr/lib/postgresql/<version>/bin``."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class PostgresCluster:
    """A throw-away PostgreSQL cluster: a temporary data directory, TCP on 127.0.0.1 only (no Unix socket), trust
    authentication (nothing else can reach it), ``fsync=off`` (a test cluster: speed over crash safety). Run as
    the ``postgres`` user when this process is root (``initdb`` refuses root)."""

    def __init__(self, bindir: Path):
        self.bindir, self.port = bindir, free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="bayesbeam-pg-"))
        self.data = self.directory / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
            shutil.chown(self.directory, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.servers: list[TiledServer] = []

    def _run(self, *args: str) -> None:
        out = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            pytest.fail(f"{' '.join(args[:2])} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")

    def start(self) -> PostgresCluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.directory / "postgres.log"), "-w", "-t", "300", "start")
        return self

    def uri(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import asyncio

        import asyncpg

        async def create():
            connection = await asyncpg.connect(user="postgres", host="127.0.0.1", port=self.port, database="postgres")
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        asyncio.run(create())

    def tiled_server(self, directory: Path, name: str) -> TiledServer:
        """A started tiled server whose catalog and tables are new databases ``<name>_catalog``,
        ``<name>_tables`` of this cluster (array data in ``directory/data``)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        for part in ("catalog", "tables"):
            self.create_database(f"{name}_{part}")
        server = TiledServer(self.uri(f"{name}_catalog", "postgresql+asyncpg"),
                             [f"file://{directory / 'data'}", self.uri(f"{name}_tables")], directory)
        self.servers.append(server)
        return server.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL cluster for the session (the tests that need it skip, saying why, if its programs are
    not installed: ``apt-get install -y postgresql``)."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) not found: apt-get install -y postgresql")
    cluster = PostgresCluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_tiled_server(pg_cluster, tmp_path_factory):
    """A tiled server backed by PostgreSQL (catalog and tables), shared by the session: ``uri`` and the ``env``
    its clients need (the API key)."""
    server = pg_cluster.tiled_server(tmp_path_factory.mktemp("pg_tiled"), "shared")
    return {"uri": server.uri, "env": server.env, "server": server}


@pytest.fixture(autouse=True, scope="session")
def one_blas_thread():
    """One BLAS thread in the test process (the environment above covers the processes it starts). The
    posteriors' rank-1 updates and small solves are memory bound: on a loaded 2-core host a second BLAS
    thread only spins against the other jobs (the XAS tests ran 10x slower under two busy loops)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="session")
def lib():
    """The 61 Fe K-edge standards (``agent.xas.prior.SpectraLibrary``)."""
    from agent.xas.prior import SpectraLibrary

    return SpectraLibrary.from_csv()
