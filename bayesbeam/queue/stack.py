"""The local queue stack: Redis and bluesky-queueserver's RE manager on 127.0.0.1, with a bayesbeam profile
as the worker's startup code and the session's catalog.

Everything the stack writes lives in a state directory (``state_dir``, default ``$BAYESBEAM_QUEUE_STATE``,
else ``$XDG_STATE_HOME/bayesbeam/queue``, else ``~/.local/state/bayesbeam/queue``), never in the source
checkout (the package may be installed read-only)::

    stack.json                        what was started: profile, catalog, addresses, whether Redis is ours
    redis.pid, manager.pid            pids of the processes ``start`` launched (checked before any use: a pid
                                      whose process is gone, or was reused by another program, is stale)
    redis.log, manager.log            their output (the worker's console output goes to manager.log)
    list-plans-devices.log            the profile loaded as the worker loads it, before the manager starts
    redis/dump.rdb                    Redis' snapshot: the queue and its history survive a stop/start
    existing_plans_and_devices.yaml   generated from the profile (bluesky-queueserver's gen_lists); the
                                      manager rewrites it each time the worker environment opens
    user_group_permissions.yaml       copied from ``profiles/queue/user_group_permissions.yaml`` (or the
                                      file given) on every start

Start order: permissions, plan/device list (the profile runs once with ``is_re_worker_active()`` true, so a
profile that cannot load fails before anything runs), Redis (unless one already answers at the address:
then it is used and left alone), the manager (``start-re-manager --startup-dir profiles/<profile>/startup``,
``$BAYESBEAM_CATALOG`` set to the catalog), optionally the worker environment. Stop order: environment
closed, manager stopped, Redis (only if this stack started it) shut down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
PERMISSIONS_TEMPLATE = PROFILES_DIR / "queue" / "user_group_permissions.yaml"

# bluesky-queueserver's default ports, bound to the loopback interface (its own defaults bind tcp://*)
DEFAULT_REDIS_ADDR = "127.0.0.1:6379"
DEFAULT_ZMQ_CONTROL_ADDR = "tcp://127.0.0.1:60615"
DEFAULT_ZMQ_INFO_ADDR = "tcp://127.0.0.1:60625"
AGENTS_GROUP = "agents"  # the restricted user group of the permissions template
PRIMARY_GROUP = "primary"

PLANS_DEVICES_FILE = "existing_plans_and_devices.yaml"
PERMISSIONS_FILE = "user_group_permissions.yaml"
CONFIG_FILE = "stack.json"

_BUSY_STATES = ("executing_queue", "executing_task", "paused", "starting_queue")
_TRANSIENT_STATES = ("initializing", "creating_environment", "closing_environment", "destroying_environment")

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """Something the person starting or stopping the stack must act on; the message says what."""


def default_state_dir() -> Path:
    """``$BAYESBEAM_QUEUE_STATE``, else ``$XDG_STATE_HOME/bayesbeam/queue``, else ``~/.local/state/bayesbeam/queue``."""
    if env := os.environ.get("BAYESBEAM_QUEUE_STATE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "bayesbeam" / "queue"


def available_profiles() -> list[str]:
    return sorted(p.name for p in PROFILES_DIR.glob("*") if (p / "startup").is_dir()) if PROFILES_DIR.is_dir() else []


def profile_startup_dir(profile: str | os.PathLike) -> Path:
    """The startup directory of ``profile``: a name under ``profiles/`` (``sim``, ``epics``), a profile
    directory (one with ``startup/``) or a startup directory itself (``NN-*.py`` files)."""
    name = str(profile)
    if os.sep not in name and not name.startswith(".") and (PROFILES_DIR / name / "startup").is_dir():
        return PROFILES_DIR / name / "startup"
    path = Path(name).expanduser()
    if (path / "startup").is_dir():
        path = path / "startup"
    if path.is_dir() and any(path.glob("*.py")):
        return path.resolve()
    raise StackError(f"no profile {name!r}: give one of {', '.join(available_profiles()) or '(none found)'} "
                     f"or a profile directory with startup/*.py")


# ---------------------------------------------------------------------------------------------------------
# addresses

def parse_redis_addr(addr: str) -> tuple[str, int]:
    """``host[:port][/db]`` (the manager's ``--redis-addr`` form) as ``(host, port)``."""
    hostport = addr.split("/", 1)[0]
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "6379")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise StackError(f"Redis address {addr!r}: expected host:port, e.g. {DEFAULT_REDIS_ADDR}") from None


def parse_zmq_addr(addr: str) -> tuple[str, int]:
    """``tcp://host:port`` as ``(host, port)``; the local stack binds loopback addresses only."""
    if not addr.startswith("tcp://") or ":" not in addr[6:]:
        raise StackError(f"0MQ address {addr!r}: expected tcp://127.0.0.1:PORT")
    host, _, port = addr[6:].rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        raise StackError(f"0MQ address {addr!r}: expected tcp://127.0.0.1:PORT") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_zmq_addr(addr: str) -> str:
    """``addr`` as a loopback bind address (``localhost`` becomes ``127.0.0.1``); anything else is refused:
    this stack serves this machine only."""
    host, port = parse_zmq_addr(addr)
    if host == "localhost":
        host = "127.0.0.1"
    if host in ("*", "0.0.0.0", "::", "[::]") or not is_loopback(host):
        raise StackError(f"{addr}: the local queue stack binds to 127.0.0.1 only (e.g. tcp://127.0.0.1:{port}); "
                         "for clients on other hosts put bluesky-httpserver in front of it")
    return f"tcp://{host}:{port}"


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT socket is no obstacle; a listener is
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------
# processes

def _reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process (the CLI called in-process, as tests do)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _running(pid_file: Path, program: str):
    """The ``psutil.Process`` the pid file names, or ``None`` if the file is stale: no such process, a zombie,
    another program (``program`` not in its command line) or a process younger than the pid file (the pid was
    reused after the process that wrote the file had gone)."""
    import psutil

    try:
        pid = int(pid_file.read_text().split()[0])
        written = pid_file.stat().st_mtime
    except (OSError, ValueError, IndexError):
        return None
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if proc.create_time() > written + 1.0:
            return None
        if not any(program in part for part in proc.cmdline()):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def _wait_gone(procs, timeout: float) -> list:
    """Wait up to ``timeout`` s for ``procs`` to exit (reaping those that are our children); the ones still alive."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=timeout)
    left = []
    for p in alive:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                _reap(p.pid)
            else:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


def _end(procs, timeout: float) -> None:
    """SIGTERM, then SIGKILL what is left after ``timeout`` s."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    alive = _wait_gone(procs, timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    _wait_gone(alive, 5.0)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def _script(name: str) -> str:
    """A console script of this environment (beside ``sys.executable``), else the one on ``PATH``."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    if found := shutil.which(name):
        return found
    raise StackError(f"{name} not found: pip install bluesky-queueserver")


def find_redis_server(explicit: str | None = None) -> str:
    """The Redis server executable: ``explicit``, ``$BAYESBEAM_REDIS_SERVER``, ``redis-server`` on ``PATH``."""
    name = explicit or os.environ.get("BAYESBEAM_REDIS_SERVER") or "redis-server"
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name}: no Redis server found. Install Debian's package (apt-get install redis-server) "
                         "or pass --redis-server PATH (any Redis >= 5 server binary)")
    return found


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------------
# the manager's 0MQ API

def manager_api(control_addr: str = DEFAULT_ZMQ_CONTROL_ADDR, info_addr: str | None = None, *,
                timeout: float = 5.0, user_group: str = PRIMARY_GROUP, user: str | None = None):
    """A ``bluesky_queueserver_api.zmq.REManagerAPI`` for the manager at ``control_addr``."""
    from bluesky_queueserver_api.zmq import REManagerAPI

    api = REManagerAPI(zmq_control_addr=control_addr, zmq_info_addr=info_addr, timeout_recv=timeout)
    api.user_group = user_group
    if user:
        api.user = user
    return api


def manager_status(api) -> dict | None:
    """The manager's status, or ``None`` if it does not answer."""
    try:
        return api.status(reload=True)
    except Exception:  # RequestTimeoutError, RequestFailedError, 0MQ errors: not answering is the answer
        return None


def wait_for_status(api, condition: Callable[[dict], bool], *, timeout: float, what: str,
                    poll_s: float = 0.1) -> dict:
    """Poll the manager's status until ``condition(status)``; ``StackError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        status = manager_status(api)
        if status is not None:
            last = status
            if condition(status):
                return status
        if time.monotonic() > deadline:
            state = f"manager {last['manager_state']}, environment {last['worker_environment_state']}" \
                if last else "the manager did not answer"
            raise StackError(f"timed out after {timeout:g} s waiting for {what} ({state})")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------------------
# the stack

@dataclass
class StackConfig:
    """What ``start`` set up (``stack.json``)."""

    profile: str
    startup_dir: str
    catalog: str
    redis_addr: str
    redis_started: bool  # False: a Redis that was already running is used, and never stopped by us
    redis_server: str | None
    zmq_control_addr: str
    zmq_info_addr: str
    started_at: float

    @classmethod
    def load(cls, path: Path) -> StackConfig | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None


class QueueStack:
    """The stack whose state lives in ``state_dir`` (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike | None = None):
        self.state_dir = Path(state_dir).expanduser().resolve() if state_dir else default_state_dir()

    # files ---------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.state_dir / name

    @property
    def config(self) -> StackConfig | None:
        return StackConfig.load(self.path(CONFIG_FILE))

    def _pid_file(self, part: str) -> Path:
        return self.path(f"{part}.pid")

    def process(self, part: str):
        """The running process of ``part`` (``"redis"`` or ``"manager"``) started from this state directory."""
        config = self.config
        program = "start-re-manager" if part == "manager" else \
            Path(config.redis_server).name if config and config.redis_server else "redis-server"
        return _running(self._pid_file(part), program)

    def worker_pid(self) -> int | None:
        """The pid of the RE worker process, ``None`` if there is none (also when the manager still reports an
        environment whose worker was killed: it does not notice)."""
        manager, config = self.process("manager"), self.config
        return _worker_pid(manager, config.zmq_control_addr if config else None) if manager is not None else None

    @contextlib.contextmanager
    def _locked(self):
        """One ``start``/``stop`` at a time per state directory."""
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path(".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StackError(f"another `bayesbeam queue start/stop` is using {self.state_dir}") from None
            yield

    def _write_pid(self, part: str, pid: int) -> None:
        self._pid_file(part).write_text(f"{pid}\n")

    def _forget(self, *parts: str) -> None:
        for part in parts:
            self._pid_file(part).unlink(missing_ok=True)

    # start -----------------------------------------------------------------------------------------------
    def start(self, *, profile: str = "sim", catalog: str | None = None, redis_addr: str = DEFAULT_REDIS_ADDR,
              zmq_control_addr: str = DEFAULT_ZMQ_CONTROL_ADDR, zmq_info_addr: str = DEFAULT_ZMQ_INFO_ADDR,
              redis_server: str | None = None, permissions: str | os.PathLike | None = None,
              ignore_invalid_plans: bool = False, open_environment: bool = False, timeout: float = 120.0,
              echo: Echo = print) -> bool:
        """Bring the stack up; ``False`` (and a message) if it was already up. ``StackError`` when it cannot."""
        from bayesbeam.catalog import default_catalog_location, is_server_uri

        with self._locked():
            if (manager := self.process("manager")) is not None:
                config = self.config
                where = config.zmq_control_addr if config else "?"
                echo(f"the queue stack is already up: RE manager pid {manager.pid} at {where} "
                     f"(profile {config.profile if config else '?'}); `bayesbeam queue stop` first to restart it")
                return False
            if (redis := self.process("redis")) is not None:  # left over from a start whose manager died
                echo(f"Redis (pid {redis.pid}) is running without its manager: stopping it, starting afresh")
                _end([redis], 10.0)
            self._forget("manager", "redis")
            self.path(CONFIG_FILE).unlink(missing_ok=True)

            startup_dir = profile_startup_dir(profile)
            catalog = str(catalog or default_catalog_location())
            if not is_server_uri(catalog):
                catalog = str(Path(catalog).expanduser().resolve())  # the manager runs in the state directory
            control, info = loopback_zmq_addr(zmq_control_addr), loopback_zmq_addr(zmq_info_addr)
            for addr in (control, info):
                host, port = parse_zmq_addr(addr)
                if not _port_is_free(host, port):
                    raise StackError(f"{addr} is in use (another RE manager? `ss -ltnp | grep {port}`); "
                                     "stop it or pick another --zmq-control-addr/--zmq-info-addr")
            redis_host, redis_port = parse_redis_addr(redis_addr)

            self._install_permissions(Path(permissions) if permissions else PERMISSIONS_TEMPLATE)
            env = self._environment(catalog)
            echo(f"loading profile {profile} ({startup_dir}) as the worker will, to list its plans and devices ...")
            self._list_plans_devices(startup_dir, env, ignore_invalid_plans, timeout)

            redis_started = False
            if redis_ping(redis_host, redis_port):
                echo(f"using the Redis server already running at {redis_host}:{redis_port} (it stays up after stop)")
                redis_server = None
            else:
                if not is_loopback(redis_host):
                    raise StackError(f"no Redis answers at {redis_addr}, and the local stack starts one on "
                                     "127.0.0.1 only")
                redis_server = find_redis_server(redis_server)
                self._start_redis(redis_server, redis_port, timeout)
                redis_host, redis_started = "127.0.0.1", True
            config = StackConfig(profile=str(profile), startup_dir=str(startup_dir), catalog=catalog,
                                 redis_addr=f"{redis_host}:{redis_port}", redis_started=redis_started,
                                 redis_server=redis_server, zmq_control_addr=control, zmq_info_addr=info,
                                 started_at=time.time())
            self._write_config(config)
            try:
                self._start_manager(config, env, ignore_invalid_plans, timeout)
            except BaseException:  # failed or interrupted: leave nothing running
                if (manager := self.process("manager")) is not None:
                    _end([manager, *manager.children(recursive=True)], 10.0)
                if redis_started and (redis := self.process("redis")) is not None:
                    _end([redis], 10.0)
                self._forget("manager", "redis")
                self.path(CONFIG_FILE).unlink(missing_ok=True)
                raise
            if open_environment:
                echo("opening the worker environment ...")
                self.open_environment(timeout=timeout)
            return True

    def _environment(self, catalog: str) -> dict:
        env = dict(os.environ)
        env["BAYESBEAM_CATALOG"] = catalog
        env.setdefault("MPLBACKEND", "Agg")  # a daemon opens no windows
        env["PYTHONUNBUFFERED"] = "1"  # the logs keep up with the worker
        return env

    def _write_config(self, config: StackConfig) -> None:
        tmp = self.path(CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
        tmp.replace(self.path(CONFIG_FILE))

    def _install_permissions(self, source: Path) -> None:
        from bluesky_queueserver.manager.profile_ops import load_user_group_permissions

        target = self.path(PERMISSIONS_FILE)
        try:
            shutil.copyfile(source, target)
            groups = load_user_group_permissions(str(target))["user_groups"]
        except OSError as exc:
            raise StackError(f"user group permissions {source}: {exc}") from None
        missing = {PRIMARY_GROUP, AGENTS_GROUP} - set(groups)
        if missing:
            raise StackError(f"user group permissions {source}: no group {', '.join(sorted(missing))}")

    def _list_plans_devices(self, startup_dir: Path, env: dict, ignore_invalid_plans: bool, timeout: float) -> None:
        """``existing_plans_and_devices.yaml`` from the profile, loaded in a process of its own the way the
        worker loads it (``qserver-list-plans-devices``)."""
        log = self.path("list-plans-devices.log")
        argv = [_script("qserver-list-plans-devices"), "--startup-dir", str(startup_dir),
                "--file-dir", str(self.state_dir), "--file-name", PLANS_DEVICES_FILE,
                "--ignore-invalid-plans", "ON" if ignore_invalid_plans else "OFF"]
        with open(log, "wb") as out:
            try:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      env=env, cwd=self.state_dir, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StackError(f"loading the profile took over {timeout:g} s (log: {log})") from None
        if done.returncode != 0 or not self.path(PLANS_DEVICES_FILE).is_file():
            raise StackError(f"the profile {startup_dir} does not load as the queue worker loads it "
                             f"(log: {log}):\n{_tail(log)}")

    def _spawn(self, part: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = self.path(f"{part}.log")
        with open(log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.state_dir, start_new_session=True)  # outlives the CLI, own group
        self._write_pid(part, proc.pid)
        return proc

    def _wait_started(self, part: str, proc: subprocess.Popen, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                self._forget(part)
                raise StackError(f"{part} exited with code {proc.returncode} while starting "
                                 f"(log: {self.path(part + '.log')}):\n{_tail(self.path(part + '.log'))}")
            if time.monotonic() > deadline:
                raise StackError(f"{part} did not come up within {timeout:g} s (log: {self.path(part + '.log')})")
            time.sleep(0.05)

    def _start_redis(self, server: str, port: int, timeout: float) -> None:
        data = self.path("redis")
        data.mkdir(exist_ok=True)
        argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
                "--dir", str(data), "--dbfilename", "dump.rdb", "--save", "300 1", "--appendonly", "no",
                "--daemonize", "no", "--supervised", "no"]
        proc = self._spawn("redis", argv, dict(os.environ))
        self._wait_started("redis", proc, lambda: redis_ping("127.0.0.1", port), timeout)

    def _start_manager(self, config: StackConfig, env: dict, ignore_invalid_plans: bool, timeout: float) -> None:
        argv = [_script("start-re-manager"),
                "--startup-dir", config.startup_dir,
                "--existing-plans-devices", str(self.path(PLANS_DEVICES_FILE)),
                "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
                "--user-group-permissions", str(self.path(PERMISSIONS_FILE)),
                "--user-group-permissions-reload", "ON_STARTUP",
                "--redis-addr", config.redis_addr,
                "--zmq-control-addr", config.zmq_control_addr,
                "--zmq-info-addr", config.zmq_info_addr,
                "--zmq-publish-console", "ON",
                "--ignore-invalid-plans", "ON" if ignore_invalid_plans else "OFF"]
        proc = self._spawn("manager", argv, env)
        api = manager_api(config.zmq_control_addr, timeout=1.0)
        try:
            self._wait_started("manager", proc, lambda: manager_status(api) is not None, timeout)
        finally:
            api.close()

    # environment -----------------------------------------------------------------------------------------
    def api(self, *, timeout: float = 5.0, user_group: str = PRIMARY_GROUP, user: str | None = None):
        """An ``REManagerAPI`` for this stack's manager (``StackError`` if the stack was never started)."""
        config = self.config
        if config is None:
            raise StackError(f"the queue stack is not running (no {self.path(CONFIG_FILE)}): bayesbeam queue start")
        return manager_api(config.zmq_control_addr, config.zmq_info_addr, timeout=timeout, user_group=user_group,
                           user=user)

    def open_environment(self, *, timeout: float = 120.0) -> dict:
        """Open the worker environment (the profile's startup files run in the worker) and wait until it is idle."""
        api = self.api()
        try:
            status = wait_for_status(api, lambda s: s["manager_state"] not in _TRANSIENT_STATES, timeout=timeout,
                                     what="the manager to settle")
            if status["worker_environment_exists"]:
                return status
            api.environment_open()
            status = wait_for_status(api, lambda s: s["manager_state"] not in _TRANSIENT_STATES, timeout=timeout,
                                     what="the worker environment to open")
            if not status["worker_environment_exists"]:
                raise StackError("the worker environment failed to open (the profile's startup code in the worker): "
                                 f"see {self.path('manager.log')}:\n{_tail(self.path('manager.log'))}")
            return status
        finally:
            api.close()

    # stop ------------------------------------------------------------------------------------------------
    def stop(self, *, force: bool = False, timeout: float = 60.0, echo: Echo = print) -> bool:
        """Close the environment, stop the manager, shut down Redis if this stack started it. ``False`` if
        nothing was running. A running plan is never cut short unless ``force`` (environment destroyed)."""
        with self._locked():
            config = self.config
            manager, redis = self.process("manager"), self.process("redis")
            if manager is None and redis is None:
                self._forget("manager", "redis")
                self.path(CONFIG_FILE).unlink(missing_ok=True)
                echo(f"the queue stack is not running (state {self.state_dir})")
                return False
            if manager is not None:
                self._stop_manager(manager, config, force, timeout, echo)
                self._forget("manager")
            if redis is not None:
                echo(f"stopping Redis (pid {redis.pid}) ...")
                _end([redis], timeout)  # SIGTERM: Redis saves its snapshot and exits
                self._forget("redis")
            self.path(CONFIG_FILE).unlink(missing_ok=True)
            echo("the queue stack is stopped")
            return True

    def _stop_manager(self, manager, config: StackConfig | None, force: bool, timeout: float, echo: Echo) -> None:
        import psutil

        try:
            family = [manager, *manager.children(recursive=True)]  # watchdog, manager, worker
        except psutil.NoSuchProcess:
            family = [manager]
        deadline = time.monotonic() + timeout
        api = manager_api(config.zmq_control_addr, timeout=2.0) if config else None
        try:
            status = manager_status(api) if api else None
            if status is None:
                echo(f"the RE manager (pid {manager.pid}) does not answer: terminating it")
            else:
                if status["manager_state"] in _TRANSIENT_STATES:
                    status = wait_for_status(api, lambda s: s["manager_state"] not in _TRANSIENT_STATES,
                                             timeout=timeout, what="the manager to settle")
                busy = status["manager_state"] in _BUSY_STATES
                dead = status["worker_environment_exists"] and self.worker_pid() is None  # SIGKILLed worker
                if busy and not (force or dead):
                    raise StackError(f"a plan is running (manager {status['manager_state']}): let it finish, stop "
                                     "it (`qserver re stop`, or pause and abort), or `bayesbeam queue stop --force` "
                                     "to destroy the worker environment")
                if status["worker_environment_exists"]:
                    echo("the worker process is gone: destroying its environment ..." if dead else
                         "destroying the worker environment ..." if busy else "closing the worker environment ...")
                    self._end_environment(api, destroy=busy or dead, timeout=max(deadline - time.monotonic(), 1.0),
                                          echo=echo)
                echo(f"stopping the RE manager (pid {manager.pid}) ...")
                with contextlib.suppress(Exception):
                    api.send_request(method="manager_stop",
                                     params={"option": "safe_off" if force or dead else "safe_on"})
        finally:
            if api is not None:
                api.close()
        alive = _wait_gone(family, max(deadline - time.monotonic(), 1.0))
        if alive:
            echo(f"terminating what is left of the RE manager (pids {', '.join(str(p.pid) for p in alive)})")
            _end(alive, 10.0)
        with contextlib.suppress(psutil.Error):
            _wait_gone(family, 1.0)

    def _end_environment(self, api, *, destroy: bool, timeout: float, echo: Echo) -> None:
        def closed(s):
            return not s["worker_environment_exists"] and s["manager_state"] not in _TRANSIENT_STATES

        if not destroy:
            try:
                api.environment_close()
                wait_for_status(api, closed, timeout=timeout, what="the worker environment to close")
                return
            except Exception as exc:  # refused or too slow: destroy it
                echo(f"closing the environment failed ({exc}): destroying it")
        with contextlib.suppress(Exception):
            api.environment_destroy()
        wait_for_status(api, closed, timeout=timeout, what="the worker environment to be destroyed")

    # status ----------------------------------------------------------------------------------------------
    def status(self) -> dict:
        """What is up: Redis (ping), the manager (its status over 0MQ), the worker environment."""
        config = self.config
        manager, redis = self.process("manager"), self.process("redis")
        control = config.zmq_control_addr if config else DEFAULT_ZMQ_CONTROL_ADDR
        info = config.zmq_info_addr if config else DEFAULT_ZMQ_INFO_ADDR
        redis_addr = config.redis_addr if config else DEFAULT_REDIS_ADDR
        api = manager_api(control, timeout=2.0)
        try:
            st = manager_status(api)
        finally:
            api.close()
        ping = redis_ping(*parse_redis_addr(redis_addr))
        result = {
            "state_dir": str(self.state_dir),
            "started": config is not None,
            "profile": config.profile if config else None,
            "startup_dir": config.startup_dir if config else None,
            "catalog": config.catalog if config else None,
            "redis": {"addr": redis_addr, "ping": ping, "pid": redis.pid if redis else None,
                      "started_by_stack": bool(config and config.redis_started)},
            "manager": {"control_addr": control, "info_addr": info, "pid": manager.pid if manager else None,
                        "answers": st is not None},
            "environment": {"exists": bool(st and st["worker_environment_exists"])},
            "logs": {part: str(self.path(f"{part}.log")) for part in ("manager", "redis")},
        }
        if manager is not None and result["environment"]["exists"]:
            result["environment"]["worker_pid"] = self.worker_pid()
        if st is not None:
            result["manager"].update({k: st.get(k) for k in (
                "manager_state", "items_in_queue", "items_in_history", "running_item_uid", "queue_autostart_enabled",
                "msg")})
            result["environment"].update(state=st.get("worker_environment_state"), re_state=st.get("re_state"))
        result["up"] = bool(ping and st is not None)
        return result


def _worker_pid(watchdog, control_addr: str | None) -> int | None:
    """The pid of the live RE worker under ``start-re-manager``, or ``None`` if there is none: the manager does
    not notice a worker killed with SIGKILL and still reports the environment open. The watchdog process forks
    the manager and a worker per environment opened, and forks the manager again if it dies (the worker lives
    on), so the manager is told apart by the control port it listens on, not by its age."""
    import psutil

    def listens(p) -> bool:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in p.net_connections(kind="tcp"))

    def alive(p) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:  # gone while we looked: a manager killed and being replaced
            return False

    port = parse_zmq_addr(control_addr)[1] if control_addr else None
    for _ in range(3):  # the watchdog's children change while a dead manager is replaced: look again
        try:
            children = sorted((p for p in watchdog.children() if alive(p)), key=lambda p: p.create_time())
            workers = [p for p in children if not listens(p)] if port is not None else children[1:]
        except psutil.Error:
            time.sleep(0.2)
            continue
        return workers[-1].pid if workers else None
    return None


def format_status(s: dict) -> str:
    """``QueueStack.status()`` as a few lines for a person."""
    r, m, e = s["redis"], s["manager"], s["environment"]
    head = "up" if s["up"] else "not running" if not (r["ping"] or m["answers"]) else "partly up"
    lines = [f"queue stack: {head}  (state {s['state_dir']}" + (f", profile {s['profile']})" if s["profile"] else ")")]
    ours = f"pid {r['pid']}, started by the stack" if r["pid"] else \
        "not started by this stack" if r["ping"] else ""
    lines.append(f"  redis        {'up' if r['ping'] else 'down':<6} {r['addr']}" + (f"  ({ours})" if ours else ""))
    if m["answers"]:
        detail = f"{m['manager_state']}; {m['items_in_queue']} queued, {m['items_in_history']} in history" + \
            (f", running {m['running_item_uid']}" if m.get("running_item_uid") else "") + \
            ("" if m["pid"] else "; not started by this stack")
        lines.append(f"  manager      up     {m['control_addr']}  ({'pid ' + str(m['pid']) + ', ' if m['pid'] else ''}"
                     f"{detail}; console {m['info_addr']})")
    else:
        lines.append(f"  manager      down   {m['control_addr']}" +
                     (f"  (pid {m['pid']} runs but does not answer)" if m["pid"] else ""))
    if e["exists"]:
        worker = ""
        if "worker_pid" in e:
            worker = f", worker pid {e['worker_pid']}" if e["worker_pid"] else \
                "; BUT THE WORKER PROCESS IS GONE (killed?): `bayesbeam queue stop --force`, or " \
                "`qserver environment destroy` and open it again"
        lines.append(f"  environment  open   {e['state']} (RE {e['re_state']}{worker})")
    elif m["answers"]:
        hint = "" if m["control_addr"] == DEFAULT_ZMQ_CONTROL_ADDR else f" --zmq-control-addr {m['control_addr']}"
        lines.append(f"  environment  closed (open it: qserver{hint} environment open)")
    if s["catalog"]:
        lines.append(f"  catalog      {s['catalog']}")
    if s["started"]:
        lines.append(f"  logs         {s['logs']['manager']}, {s['logs']['redis']}")
    return "\n".join(lines)
