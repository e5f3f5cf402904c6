"""What every rehearsal shares: option checks, the RunEngine on a catalog location, subscribers on a
run's streams and its progress display, printed tables, the ``--json`` file, the click options they
all take, and the old keyword forms.

Light on import (stdlib, click and ``agent.core.words``): the command line loads it for ``--help``.
"""

import contextlib
import dataclasses
import json
import logging
import math
import numbers
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from agent.core.words import plain

CATALOG_HELP = ("Catalog to store runs in: a directory (embedded SQLite catalog, created on first use) or a "
                "tiled server URI. Default: $BAYESBEAM_CATALOG, else ~/.local/share/bayesbeam/catalog.")


# -- options ------------------------------------------------------------------------------------
def whole(value, minimum: int) -> bool:
    """``value`` is an integer (numpy's too, not a bool) >= ``minimum``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def positive(value, finite: bool = True) -> bool:
    """``value`` is a real number > 0 (and < inf if ``finite``)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0
            and (not finite or value < math.inf))


def require(ok: bool, message: str) -> None:
    """``ValueError(message)`` unless ``ok``: the one-line messages of the options' ``validate()``."""
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True, kw_only=True)
class RehearsalOptions:
    """What the options of every rehearsal have (keyword-only): ``seed`` of the simulation (None:
    fresh) and ``time_scale`` (simulated seconds per wall-clock second, > 0; ``inf``: no waiting).
    A technique's options add their fields and ``agent()``, the agent they configure."""

    seed: int | None = None
    time_scale: float = 1e4

    def validate(self) -> None:
        """``ValueError`` with a one-line message if these options cannot make a rehearsal: every
        check ``agent()`` makes (it is built and dropped; nothing moves)."""
        self.agent()

    def agent(self):
        """The agent these options configure (a fresh one each call), after checking every option."""
        raise NotImplementedError

    def check_run_settings(self) -> None:
        """Check ``seed`` (None or an integer >= 0) and ``time_scale`` (> 0)."""
        seed, scale = self.seed, self.time_scale
        require(seed is None or whole(seed, 0), f"seed must be an integer >= 0 or None, got {plain(seed)}")
        require(positive(scale, finite=False),
                f"time_scale must be > 0 simulated s per wall-clock s, got {plain(scale)}")


def options_from(cls: type, options: Any, legacy: Mapping[str, Any], where: str):
    """``options`` if it is a ``cls`` (None: the defaults); else (deprecated, for one release) a ``cls``
    built from the old keyword form ``where(RE, "<sample>", target_std=…, …)``: ``options`` is then
    the first positional field (the sample)."""
    if isinstance(options, cls) and not legacy:
        return options
    if options is None and not legacy:
        return cls()
    if isinstance(options, cls):
        raise TypeError(f"{where}() takes a {cls.__name__} or the old keyword arguments, not both: "
                        f"{', '.join(legacy)}")
    warnings.warn(f"{where}() with keyword options is deprecated (it goes in the next release); "
                  f"pass {cls.__name__}(...)", DeprecationWarning, stacklevel=3)
    first = next(f.name for f in dataclasses.fields(cls) if not f.kw_only)
    return cls(**({first: options} if options is not None else {}), **legacy)


def checked(options):
    """``options`` once ``options.validate()`` passes; else click's usage error (exit code 2) with
    the one-line message, before anything is opened, moved or written."""
    try:
        options.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return options


# -- the run ------------------------------------------------------------------------------------
def open_run_engine(location: str | None = None):
    """``(RE, location)``: a RunEngine storing every run in the catalog at ``location`` (directory
    or tiled URI; default ``bayesbeam.catalog.default_catalog_location()``), and the location used."""
    from bayesbeam.catalog import default_catalog_location, open_catalog
    from bayesbeam.session import make_run_engine

    catalog = open_catalog(location or None)  # None: the default, whose parent directories are created
    return make_run_engine(catalog), location or default_catalog_location()


INTERRUPTED = "interrupted from the command line (Ctrl-C)"


def run_plan(RE, plan) -> tuple[str | None, str | None]:
    """``(uid, interruption)``: run ``plan`` on ``RE``; if a pause interrupts it (the command line's
    Ctrl-C, see ``command_line_interrupts``), abort the run: its stop document says
    ``exit_status: abort`` with the reason, everything counted stays in the catalog, and
    ``interruption`` is that reason (None when the plan ran to its end)."""
    from bluesky.utils import RunEngineInterrupted

    try:
        uids, interruption = RE(plan), None
    except RunEngineInterrupted:
        uids, interruption = RE.abort(reason=INTERRUPTED), INTERRUPTED
    return (uids[0] if uids else None), interruption


class PollingDuringTask:
    """What the main thread does while ``RE`` runs a plan: wait for the end in 0.1 s steps. A Ctrl-C the
    kernel hands to another thread only sets a flag; the main thread runs the Python handler at its
    next step, not when the run ends (bluesky's default waits on the event in one blocking call)."""

    def block(self, blocking_event) -> None:
        while not blocking_event.wait(0.1):
            pass


@contextlib.contextmanager
def command_line_interrupts(RE) -> Iterator[None]:
    """Ctrl-C as a command-line user expects, in place of bluesky's IPython-minded handler (whose
    advice, ``RE.resume()`` …, means nothing here): the first Ctrl-C during a run asks ``RE`` to
    pause at its next checkpoint (after the current count), which ``run_plan`` turns into an abort,
    and the command prints its summary so far and writes its figure; a second Ctrl-C (or a first
    one when no run is going) quits at once with exit status 130."""
    hits = []

    def pause():
        print("\nCtrl-C: stopping the run after the current count; Ctrl-C again quits at once", file=sys.stderr)
        with contextlib.suppress(Exception):  # the run may have ended meanwhile
            RE.request_pause(defer=True)

    def handler(signum, frame):
        hits.append(signum)
        if len(hits) == 1 and RE.state == "running":
            threading.Thread(target=pause, daemon=True).start()  # no work in a signal handler
            return
        os.write(2, b"\nCtrl-C: quitting now (what was counted is in the catalog)\n")
        os._exit(130)

    def not_our_abort(record: logging.LogRecord) -> bool:  # bluesky logs the abort we asked for as an error
        return not (record.exc_info and type(record.exc_info[1]).__name__ == "RequestAbort" and hits)

    managers, RE.context_managers = RE.context_managers, []
    during, RE._during_task = RE._during_task, PollingDuringTask()  # no public setter after construction
    previous = signal.signal(signal.SIGINT, handler)
    log = logging.getLogger("bluesky")
    log.addFilter(not_our_abort)
    try:
        yield
    finally:
        log.removeFilter(not_our_abort)
        signal.signal(signal.SIGINT, previous)
        RE.context_managers, RE._during_task = managers, during


def stream_subscriber(stream: str, on_event: Callable[[Mapping[str, Any]], None]):
    """A RunEngine subscriber calling ``on_event(data)`` with the data of each event of ``stream``
    (e.g. ``"posterior"``: the agent's report after each update)."""
    streams: dict[str, str] = {}

    def cb(name, doc):
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams.get(doc["descriptor"]) == stream:
            on_event(doc["data"])

    return cb


def progress_subscriber(progress, task, describe: Callable[[Mapping[str, Any]], str]):
    """A subscriber advancing the rich ``progress`` bar's ``task`` by one on each ``posterior``
    event, described by ``describe(event data)``."""
    return stream_subscriber("posterior", lambda data: progress.update(task, advance=1, description=describe(data)))


@contextlib.contextmanager
def run_progress(RE, enabled: bool, total: int | None, describe: Callable[[Mapping[str, Any]], str],
                 first: str = "starting") -> Iterator[None]:
    """A progress display of the run ``RE`` makes inside the block: one step per ``posterior`` event
    (of ``total``; None: no end known), described by ``describe(event data)``. It is on stderr (stdout
    keeps the results alone), shown only when stderr is a terminal and ``enabled``, and gone afterwards."""
    def described(data) -> str:  # a display never stops the run (a subscriber's error would)
        try:
            return describe(data)
        except (KeyError, TypeError, ValueError):
            return "running"

    with progress_display(enabled) as bar:
        token = RE.subscribe(progress_subscriber(bar, bar.add_task(first, total=total), described))
        try:
            yield
        finally:
            RE.unsubscribe(token)


def progress_display(enabled: bool):
    """A transient rich ``Progress`` on stderr, disabled unless ``enabled`` and stderr is a terminal. What
    the run prints on stderr goes above it; stdout is left alone (it may be a file)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, redirect_stdout=False,
                    disable=not (enabled and console.is_terminal))


def progress_option(command):
    """``--progress/--no-progress``."""
    return click.option("--progress/--no-progress", default=True,
                        help="Show a progress display while running (on stderr, when it is a terminal).")(command)


# -- printed results ----------------------------------------------------------------------------
def print_table(table) -> None:
    """Print a rich ``table`` with its title and caption as lines of their own (not wrapped to the
    table's width, mid-sentence). On a terminal at its width; piped or redirected, the table as wide
    as its cells need and the title and caption unwrapped, so every row stays one line."""
    from rich.console import Console

    title, caption = table.title, table.caption
    table.title = table.caption = None
    try:
        console = Console(highlight=False)
        if not console.is_terminal:
            wide = console.measure(table, options=console.options.update_width(10_000)).maximum
            console = Console(highlight=False, width=max(console.width, wide))
        for text in (title, table, caption):
            if text is None:
                continue
            if isinstance(text, str) and not console.is_terminal:
                click.echo(text)
            else:
                console.print(text, markup=False)
    finally:
        table.title, table.caption = title, caption


# -- the --json file ----------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: dataclasses and mappings as objects, tuples and arrays as lists,
    numpy numbers as numbers, NaN and ±inf as ``None``. Anything else is a ``TypeError``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as JSON")


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` to ``path`` as plain JSON (see ``jsonable``: no NaN); returns the path."""
    path = Path(path)
    path.write_text(json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path


# -- click options every rehearsal takes --------------------------------------------------------
def run_options(default_time_scale: float):
    """``--seed``, ``--time-scale``, ``--catalog`` and ``--json``, in that order."""
    def decorate(command):
        for option in reversed([
            click.option("--seed", type=int, default=None, help="Random seed of the simulation (default: fresh)."),
            click.option("--time-scale", type=float, default=default_time_scale,
                         help="Simulated seconds of beamtime per wall-clock second."),
            click.option("--catalog", default=None, help=CATALOG_HELP),
            click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                         help="Also write the result (stop reason, beamtime, steps, every reported quantity's "
                              "mean and std, the options) to this file as JSON."),
        ]):
            command = option(command)
        return command

    return decorate


def echo_json(path: str | None, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` (``--json``), if given, and say where."""
    if path:
        click.echo(f"json: {write_json(path, data)}")
