"""``bayesbeam catalog load-backup`` and ``bayesbeam resume``: put journalled runs into the catalog, and
continue an interrupted measurement in a new run. Added to the ``bayesbeam`` group by ``bayesbeam.cli``;
``python -m bayesbeam.catalog_cli`` runs them on their own."""

from __future__ import annotations

import click

CATALOG_OPTION_HELP = ("Catalog: a directory (embedded SQLite catalog) or a tiled server URI. Default: "
                       "$BAYESBEAM_CATALOG, else ~/.local/share/bayesbeam/catalog.")


@click.group("catalog")
def catalog():
    """Look after the catalog: load the runs a catalog failure left in their journals."""


@catalog.command("load-backup")
@click.argument("uids", nargs=-1)
@click.option("--catalog", "location", default=None, help=CATALOG_OPTION_HELP)
@click.option("--backup-dir", type=click.Path(file_okay=False), default=None,
              help="Where the journals are. Default: <catalog>/backup for a directory; for a server "
                   "$BAYESBEAM_BACKUP, else ~/.local/share/bayesbeam/backup/<host>_<port>.")
def load_backup_command(uids, location, backup_dir):
    """Put runs journalled in the backup directory into the catalog (only UIDS, or their beginnings, if given).

    Each run is written from its journal, which holds every document the run emitted: a run the catalog lacks is
    loaded, a run it holds without its stop document is replaced by the journal's copy, a run it holds whole only
    loses its journal. Runs still being written are left alone. Exit status 1 if a journal could not be loaded."""
    from bayesbeam.catalog import backup_directory, load_backup, open_catalog

    client = open_catalog(location)
    directory = backup_dir or backup_directory(client)
    rows = load_backup(client, directory, uids=list(uids) or None)
    if not rows:
        click.echo(f"no journals in {directory}")
        return
    words = {"loaded": "loaded", "replaced": "replaced the incomplete catalog copy", "complete":
             "already whole in the catalog; journal removed", "live": "still being written; left alone",
             "failed": "NOT loaded, journal kept"}
    for row in rows:
        line = f"{row['uid'][:8]}  {row['events']:5d} events  {words.get(row['action'], row['action'])}"
        click.echo(line + (f": {row['error']}" if row["error"] else ""))
    if any(row["action"] == "failed" for row in rows):
        raise SystemExit(1)


@click.command("resume")
@click.argument("uid")
@click.option("--catalog", "location", default=None, help=CATALOG_OPTION_HELP)
@click.option("--time-scale", type=float, default=1e4, show_default=True,
              help="Simulated seconds of beamtime per wall-clock second.")
@click.option("--seed", type=int, default=None, help="Random seed of the simulation (default: fresh).")
@click.option("--element", default=None, help="The agent's element, if the run records neither it nor a preset.")
def resume(uid, location, time_scale, seed, element):
    """Continue run UID (an interrupted, aborted or failed adaptive Compton or XAS measurement on the simulated
    beamline) to its target in a new run.

    The agent is rebuilt from the catalog (the run's start document and its stored cycles or points, and those of
    the runs it continued); the new run records continue_from=UID and counts only what is still needed. A run
    measured over EPICS is continued in its IPython session: RE(resume_compton(catalog, UID, [ge], magnet, ...))
    or RE(resume_xas(catalog, UID, [i0, it], mono, ...))."""
    from bayesbeam.catalog import open_catalog
    from bayesbeam.resume import ResumeError, resume_run

    client = open_catalog(location)
    try:
        result = resume_run(uid, client, time_scale=time_scale, seed=seed, element=element)
    except ResumeError as exc:
        raise click.ClickException(str(exc)) from None
    report = result.agent.report()
    click.echo(f"run {(result.uid or '?')[:8]} continues {result.continued[:8]}: {result.before} valid "
               f"{result.unit} before, {result.now} now; stop: {result.stop_reason}")
    if "mu_s_std" in report:
        click.echo(f"mu_s = {report['mu_s_mean']:.4f} ± {report['mu_s_std']:.4f} μB after "
                   f"{result.agent.cycles} cycles, {result.beamtime_s / 3600:.2f} h of beamtime")
    elif "rmse_pred" in report:
        click.echo(f"predicted RMSE {report['rmse_pred']:.4f} (edge-step units) after {report['points']} points, "
                   f"{result.beamtime_s / 3600:.2f} h of beamtime")


@click.group()
def main():
    """The catalog commands on their own (python -m bayesbeam.catalog_cli)."""


main.add_command(catalog)
main.add_command(resume)

if __name__ == "__main__":
    main()
