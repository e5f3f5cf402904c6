"""The ``bayesbeam`` command line: the top-level group, catalog look-ups and the IOC. The rehearsal
and design commands live beside their techniques (``bayesbeam/rehearsal/<technique>/cli.py``)."""

from __future__ import annotations

import click

from bayesbeam.campaign.cli import campaign
from bayesbeam.catalog import default_catalog_location
from bayesbeam.catalog_cli import catalog as catalog_commands
from bayesbeam.catalog_cli import resume
from bayesbeam.queue.cli import queue
from bayesbeam.rehearsal.common import CATALOG_HELP
from bayesbeam.rehearsal.compton.cli import rehearse_compton
from bayesbeam.rehearsal.xas.cli import design_xas, rehearse_xas
from bayesbeam.rehearsal.xps.cli import rehearse_xps


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main():
    """bayesbeam: a Bayesian agent that decides when a beamline measurement is done."""


@main.group()
def rehearse():
    """Rehearse a measurement on the simulated beamline before beamtime."""


rehearse.add_command(rehearse_compton)
rehearse.add_command(rehearse_xas)
rehearse.add_command(rehearse_xps)


@main.group()
def design():
    """Offline experimental designs: fixed point sets for users who want a fixed scan."""


design.add_command(design_xas)
main.add_command(queue)
main.add_command(campaign)
main.add_command(catalog_commands)
main.add_command(resume)


@main.command("runs")
@click.option("--catalog", default=None, help=CATALOG_HELP)
@click.option("--sample", default=None, help="Only runs of this sample (any case: La2O3, la2o3).")
@click.option("--last", type=click.IntRange(min=1), default=10, help="How many of the most recent runs to list.")
def runs(catalog, sample, last):
    """List stored runs, oldest first: scan id, uid (its first 8 characters index the catalog, as in
    catalog["a1b2c3d4"]), start (local time), plan, sample, status and stop reason. Status: the stop document's
    exit status (success, abort, fail); without one, running while its writer is alive, interrupted once it
    is not (bayesbeam.catalog.run_status states the rule). A catalog that does not exist is not created."""
    from bayesbeam.catalog import find_runs, open_catalog, run_status

    client = open_catalog(catalog, writable=False)
    results = find_runs(client, sample=sample) if sample else client
    rows = [_run_row(run.metadata, run_status(run)) for run in results[-last:]]
    if not rows:
        where = catalog or default_catalog_location()
        click.echo("no runs" + (f" of sample {sample!r}" if sample else "") + f" in {where}")
        return
    for line in _aligned([("scan", "uid", "start", "plan", "sample", "status", "reason"), *rows]):
        click.echo(line)


def _run_row(md, status: str) -> tuple[str, ...]:
    """One line of ``runs``: the start and stop documents' fields and the run's ``status``, as strings."""
    from datetime import datetime

    start, stop = md.get("start") or {}, md.get("stop") or {}
    when = datetime.fromtimestamp(start["time"]).isoformat(timespec="minutes") if "time" in start else "?"
    sample = start.get("sample", "")
    if isinstance(sample, dict):
        sample = sample.get("name", "?")
    return (str(start.get("scan_id", "?")), start.get("uid", "?")[:8], when, start.get("plan_name", "?"),
            str(sample), status, " ".join(str(stop.get("reason") or "").split()))  # one line per run


def _aligned(rows) -> list[str]:
    """Columns padded to their widest cell (the last one, the stop reason, unpadded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([row[0].rjust(widths[0]), *(row[i].ljust(widths[i]) for i in range(1, len(widths))), row[-1]])
            .rstrip() for row in rows]


@main.command("ioc")
@click.option("--port", type=int, default=5064, help="Channel Access port (UDP search and TCP) on 127.0.0.1.")
@click.option("--prefix", default="SIM08W:", help="PV prefix.")
@click.option("--sample", default="fe", help="Sample preset (fe, ni, co; see sim_devices/compton/presets).")
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
