"""The ``bayesbeam`` command line: the top-level group, catalog look-ups and the IOC. The rehearsal
and design commands live beside their techniques (``bayesbeam/rehearsal/<technique>/cli.py``)."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

import click

from bayesbeam.campaign.cli import campaign
from bayesbeam.catalog import default_catalog_location
from bayesbeam.catalog_cli import catalog as catalog_commands
from bayesbeam.catalog_cli import resume
from bayesbeam.queue.cli import queue
from bayesbeam.rehearsal.common import CATALOG_HELP
from bayesbeam.rehearsal.compton.cli import SAMPLE_HELP, presets_option, rehearse_compton
from bayesbeam.rehearsal.imaging.cli import classify_command, imaging_stack, rehearse_imaging
from bayesbeam.rehearsal.saxs.cli import rehearse_saxs
from bayesbeam.rehearsal.xas.cli import design_xas, rehearse_xas
from bayesbeam.rehearsal.xps.cli import rehearse_xps


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True,
              help="Also show the warnings and log lines of the libraries underneath (tiled, starlette, bluesky ...).")
@click.pass_context
def main(ctx, verbose):
    """bayesbeam: a Bayesian agent that decides when a beamline measurement is done."""
    if not verbose:
        ctx.with_resource(quiet_libraries())


OWN_MODULES = r"(bayesbeam|agent|plans|sim_devices|profiles)(\.|$)"  # whose warnings are for the user
CHATTY_LOGGERS = ("tiled.server.app",)  # print INFO lines with a handler of their own ("Tiled version ...")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """While a command runs: only bayesbeam's own warnings (unless -W or $PYTHONWARNINGS says otherwise), each
    as one ``warning: ...`` line, and only errors from the libraries' loggers that print on their own; as before
    afterwards."""
    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]  # the filter stays when the library loads
    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=file or sys.stderr)  # not Python's path:line and source line

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=OWN_MODULES)
        for log in loggers:
            log.addFilter(errors_only)
        try:
            yield
        finally:
            for log in loggers:
                log.removeFilter(errors_only)


@main.group()
def rehearse():
    """Rehearse a measurement on the simulated beamline before beamtime."""


rehearse.add_command(rehearse_compton)
rehearse.add_command(rehearse_xas)
rehearse.add_command(rehearse_xps)
rehearse.add_command(rehearse_saxs)
rehearse.add_command(rehearse_imaging)


@main.group()
def design():
    """Offline experimental designs: fixed point sets for users who want a fixed scan."""


design.add_command(design_xas)
main.add_command(queue)
main.add_command(campaign)
main.add_command(catalog_commands)
main.add_command(resume)
main.add_command(classify_command)
main.add_command(imaging_stack)


@main.command("runs")
@click.option("--catalog", default=None, help=CATALOG_HELP)
@click.option("--sample", default=None, help="Only runs of this sample (any case: La2O3, la2o3).")
@click.option("--last", type=click.IntRange(min=1), default=10, help="How many of the most recent runs to list.")
def runs(catalog, sample, last):
    """List stored runs, oldest first, one line each under a header: scan id, uid (its first 8 characters index
    the catalog, as in catalog["a1b2c3d4"]), start (local time), plan, sample (as stored), status and stop
    reason. Status: finished, aborted or failed (the stop document's exit status); without a stop document,
    running while its writer is alive, interrupted once it is not (bayesbeam.catalog.run_status states the
    rule). Plain space-aligned columns, also when piped. A catalog that does not exist is not created."""
    from bayesbeam.catalog import find_runs, open_catalog, run_status

    client = open_catalog(catalog, writable=False)
    results = find_runs(client, sample=sample) if sample else client
    rows = [_run_row(run.metadata, run_status(run)) for run in results[-last:]]
    if not rows:
        where = catalog or default_catalog_location()
        click.echo("no runs" + (f" of sample {sample!r}" if sample else "") + f" in {where}"
                   + (f"; {_stored_samples(client, sample)}" if sample and len(client) else ""))
        return
    for line in _aligned([("scan", "uid", "start", "plan", "sample", "status", "reason"), *rows]):
        click.echo(line)


STATUS_WORDS = {"success": "finished", "abort": "aborted", "fail": "failed"}  # bluesky's exit_status, as said


def _run_row(md, status: str) -> tuple[str, ...]:
    """One line of ``runs``: the start and stop documents' fields and the run's ``status``, as strings."""
    from datetime import datetime

    start, stop = md.get("start") or {}, md.get("stop") or {}
    when = datetime.fromtimestamp(start["time"]).isoformat(timespec="minutes") if "time" in start else "?"
    sample = start.get("sample", "")
    if isinstance(sample, dict):
        sample = sample.get("name", "?")
    return (str(start.get("scan_id", "?")), start.get("uid", "?")[:8], when, start.get("plan_name", "?"),
            str(sample), STATUS_WORDS.get(status, status),
            " ".join(str(stop.get("reason") or "").split()))  # one line per run


def _stored_samples(client, sample: str) -> str:
    """The samples of ``client`` close to ``sample`` ("did you mean …?"), else all of them ("known samples: …"),
    each in its most frequent spelling (``--sample`` takes any case)."""
    from agent.core.words import suggestion

    stored = client.distinct("start.sample", counts=True)["metadata"].get("start.sample", [])
    spellings = sorted(((d.get("count") or 0, d["value"].strip()) for d in stored if isinstance(d.get("value"), str)),
                       key=lambda cn: (-cn[0], cn[1].isupper(), cn[1].islower(), cn[1]))
    names: dict[str, str] = {}
    for _, name in spellings:
        names.setdefault(name.casefold(), name)
    return suggestion(sample, sorted(names.values(), key=str.casefold), "samples") if names else "no run has a sample"


def _aligned(rows) -> list[str]:
    """Columns padded to their widest cell (the last one, the stop reason, unpadded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([row[0].rjust(widths[0]), *(row[i].ljust(widths[i]) for i in range(1, len(widths))), row[-1]])
            .rstrip() for row in rows]


@main.command("ioc")
@click.option("--port", type=int, default=5064, help="Channel Access port (UDP search and TCP) on 127.0.0.1.")
@click.option("--prefix", default="SIM08W:", help="PV prefix.")
@click.option("--sample", default="fe", help=SAMPLE_HELP)
@presets_option
@click.option("--time-scale", type=float, default=1e3, help="Simulated seconds of beamtime per wall-clock second.")
@click.option("--xas-sample", default="Fe3O4", help="Fe K-edge standard on the XAS end station (e.g. Fe-foil).")
@click.option("--seed", type=int, default=None, help="Random seed of the simulation (default: fresh).")
@click.option("--faults/--no-faults", default=False,
              help="Make the FAULT:* PVs writable, to inject beam dumps, stuck magnets, refused or hung counts "
                   "(otherwise they are read-only).")
def ioc(port, prefix, sample, time_scale, xas_sample, seed, faults):
    """Serve the simulated beamline (Compton and XAS end stations) over EPICS Channel Access on 127.0.0.1."""
    import os
    import sys

    if "ophyd" not in sys.modules:  # the IOC is a CA server only: no CA client context (its UDP socket is on 0.0.0.0)
        os.environ["OPHYD_CONTROL_LAYER"] = "dummy"
    from sim_devices.compton.samples import compton_sample
    from sim_devices.ioc import serve
    from sim_devices.xas.samples import XASSample

    try:
        compton_sample(sample)
        XASSample(xas_sample)
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc)) from None
    serve(port=port, prefix=prefix, sample=sample, time_scale=time_scale, seed=seed, xas_sample=xas_sample,
          faults=faults)


if __name__ == "__main__":
    main()
