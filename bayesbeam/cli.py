"""The ``bayesbeam`` command line: rehearsals on the simulated beamline and catalog look-ups."""

from __future__ import annotations

import click

from bayesbeam.catalog import default_catalog_location
from bayesbeam.rehearsal.xas.rehearse import design_xas, rehearse_xas
from bayesbeam.rehearsal.xps.rehearse import rehearse_xps

CATALOG_HELP = ("Catalog to store runs in: a directory (embedded SQLite catalog, created on first use) or a "
                "tiled server URI. Default: $BAYESBEAM_CATALOG, else ~/.local/share/bayesbeam/catalog.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main():
    """bayesbeam: a Bayesian agent that decides when a beamline measurement is done."""


@main.group()
def rehearse():
    """Rehearse a measurement on the simulated beamline before beamtime."""


rehearse.add_command(rehearse_xas)
rehearse.add_command(rehearse_xps)


@main.group()
def design():
    """Offline experimental designs: fixed point sets for users who want a fixed scan."""


design.add_command(design_xas)


def _progress_callback(progress, task, quantity: str, target: float):
    """A RunEngine subscriber that advances ``progress`` on each ``posterior`` event."""
    streams: dict[str, str] = {}

    def cb(name, doc):
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams.get(doc["descriptor"]) == "posterior":
            d = doc["data"]
            std = d.get(f"{quantity}_std")
            progress.update(task, advance=1, description=(
                f"cycle {d['next_cycle'] - 1}: std({quantity}) = {std:.4g} (target {target})"))

    return cb


@rehearse.command("compton")
@click.option("--sample", default="fe", help="Sample preset (fe, ni, co; see sim_devices/compton/presets).")
@click.option("--target-std", type=float, default=0.01,
              help="Stop when the posterior std of QUANTITY reaches this (μB).")
@click.option("--quantity", default="mu_s", help="Quantity the target applies to: mu_s (spin moment) or a3d, a4s.")
@click.option("--max-cycles", type=int, default=136, help="Budget: stop after this many valid + − − + cycles.")
@click.option("--count-time", type=float, default=60.0, help="Count time per spectrum (s of beamtime).")
@click.option("--plateau", nargs=2, type=(int, float), default=None,
              help="Also stop when std(QUANTITY) improved less than REL (fraction) over K cycles: K REL.")
@click.option("--repeats", type=int, default=0,
              help="Instead of one stored run, rehearse this many beamtimes (without the RunEngine) and print "
                   "the distribution of cycles/hours and the coverage of the intervals.")
@click.option("--seed", type=int, default=None, help="Random seed of the simulation (default: fresh).")
@click.option("--time-scale", type=float, default=1e4, help="Simulated seconds per wall-clock second.")
@click.option("--catalog", default=None, help=CATALOG_HELP)
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_compton.png",
              help="Where to write the figure (PNG): MCP with fit, and std vs cycle.")
@click.option("--progress/--no-progress", default=True, help="Show a progress display while running.")
def rehearse_compton(sample, target_std, quantity, max_cycles, count_time, plateau, repeats, seed, time_scale,
                     catalog, figure, progress):
    """Adaptive magnetic-Compton measurement on the simulated BL08W-style beamline."""
    from rich.progress import Progress

    from bayesbeam.rehearsal.compton import report as rpt
    from bayesbeam.rehearsal.compton.rehearse import make_agent, rehearse_repeats, rehearse_run

    try:  # bad input: a clear error before anything moves
        from sim_devices.compton.samples import compton_sample

        make_agent(compton_sample(sample), target_std, quantity, max_cycles, plateau)
        if repeats < 0:
            raise ValueError(f"repeats must be >= 0, got {repeats}")
        if not count_time > 0:
            raise ValueError(f"count time must be positive, got {count_time} s")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    if repeats:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("rehearsing beamtimes", total=repeats)
            stats = rehearse_repeats(sample, target_std, quantity, repeats, max_cycles, count_time,
                                     seed if seed is not None else 0, plateau, lambda: bar.advance(task))
        rpt.print_table(rpt.repeats_table(stats, target_std))
        return

    from bayesbeam.catalog import open_catalog
    from bayesbeam.session import make_run_engine

    location = catalog or default_catalog_location()
    client = open_catalog(location)
    RE = make_run_engine(client)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("starting", total=max_cycles)
        RE.subscribe(_progress_callback(bar, task, quantity, target_std))
        result = rehearse_run(RE, sample, target_std, quantity, max_cycles, count_time, seed, time_scale, plateau)
    rpt.print_table(rpt.result_table(result))
    path = rpt.rehearsal_figure(result, figure, target_std, quantity)
    click.echo(f"figure: {path}\ncatalog: {location}")


@main.command("runs")
@click.option("--catalog", default=None, help=CATALOG_HELP)
@click.option("--sample", default=None, help="Only runs of this sample.")
@click.option("--last", type=int, default=10, help="How many of the most recent runs to list.")
def runs(catalog, sample, last):
    """List stored runs: uid, plan, sample, exit status and stop reason."""
    from bayesbeam.catalog import find_runs, open_catalog

    client = open_catalog(catalog)
    results = find_runs(client, sample=sample) if sample else client
    for uid in list(results)[-last:]:
        md = results[uid].metadata
        stop = md.get("stop") or {}
        click.echo(f"{uid}  {md['start'].get('plan_name', '?'):18s} {md['start'].get('sample', '?'):6s} "
                   f"{stop.get('exit_status', 'running'):8s} {stop.get('reason', '')}")


@main.command("ioc")
@click.option("--port", type=int, default=5064, help="Channel Access port (UDP search and TCP) on 127.0.0.1.")
@click.option("--prefix", default="SIM08W:", help="PV prefix.")
@click.option("--sample", default="fe", help="Sample preset (fe, ni, co; see sim_devices/compton/presets).")
@click.option("--time-scale", type=float, default=1e3, help="Simulated seconds of beamtime per wall-clock second.")
@click.option("--xas-sample", default="Fe3O4", help="Fe K-edge standard on the XAS end station (e.g. Fe-foil).")
@click.option("--seed", type=int, default=None, help="Random seed of the simulation (default: fresh).")
def ioc(port, prefix, sample, time_scale, xas_sample, seed):
    """Serve the simulated beamline (Compton and XAS end stations) over EPICS Channel Access on 127.0.0.1."""
    from sim_devices.compton.samples import compton_sample
    from sim_devices.ioc import serve
    from sim_devices.xas.samples import XASSample

    try:
        compton_sample(sample)
        XASSample(xas_sample)
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc)) from None
    serve(port=port, prefix=prefix, sample=sample, time_scale=time_scale, seed=seed, xas_sample=xas_sample)


if __name__ == "__main__":
    main()
