"""``bayesbeam rehearse xas`` (one adaptive run into the catalog) and ``bayesbeam design xas``
(the offline point set for a fixed scan)."""

import click

from bayesbeam.rehearsal.common import checked, command_line_interrupts, echo_json, open_run_engine, run_options
from bayesbeam.rehearsal.xas.options import PRIORS, TARGET_LABEL, XASOptions

D = XASOptions()  # the defaults of every option


@click.command("xas")
@click.option("--sample", default=D.sample,
              help="Fe K-edge standard to measure (its own spectrum is left out of the prior).")
@click.option("--target-rmse", type=float, default=D.target_rmse,
              help="Stop when the predicted RMSE of the target spectrum (edge-step units) reaches this.")
@click.option("--target", type=click.Choice(sorted(TARGET_LABEL)), default=D.target,
              help="Spectrum the design and the stop judge: the measured μt / edge step, or normalised μ "
                   "(which keeps the ~0.5 % edge-step uncertainty of a 105 eV window).")
@click.option("--prior", type=click.Choice(sorted(PRIORS)), default=D.prior, help="Prior construction.")
@click.option("--max-points", type=int, default=D.max_points, help="Budget: stop after this many points.")
@run_options(D.time_scale)
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_xas.png", help="Figure (PNG).")
def rehearse_xas(sample, target_rmse, target, prior, max_points, seed, time_scale, catalog, json_path, figure):
    """Adaptive XAS (Bayesian choice of each energy) on the simulated beamline."""
    options = checked(XASOptions(sample, target_rmse, target, prior, max_points, seed=seed, time_scale=time_scale))
    from bayesbeam.rehearsal.xas import report
    from bayesbeam.rehearsal.xas.rehearse import rehearse_xas_run

    RE, location = open_run_engine(catalog)
    with command_line_interrupts(RE):
        r = rehearse_xas_run(RE, options)
        s = report.summary(r)
        click.echo(report.summary_text(s))
        echo_json(json_path, s)
        click.echo(f"figure: {report.rehearsal_figure(r, figure)}\ncatalog: {location} (run {r.uid})")


@click.command("xas")
@click.option("--points", type=int, required=True, help="Number of energy points.")
@click.option("--dwell", type=float, default=1.0, help="Dwell per point (s).")
@click.option("--prior", type=click.Choice(sorted(PRIORS)), default="library", help="Prior construction.")
@click.option("--exclude", default=None, help="Leave this standard out of the prior library.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the sorted scan (CSV).")
def design_xas(points, dwell, prior, exclude, output):
    """Offline optimal energy-point set (greedy A-optimal, Ito-style) for a fixed scan."""
    if points < 1 or not dwell > 0:
        raise click.BadParameter("points must be >= 1 and dwell > 0 s")
    import numpy as np

    from bayesbeam.rehearsal.xas.rehearse import design_points

    energies, rmse, t = design_points(points, dwell, prior, exclude)
    click.echo(f"{points} points, predicted RMSE of μt / edge step {rmse[-1]:.4f}, scan time {t:.0f} s (sorted scan)")
    click.echo("order chosen: " + " ".join(f"{e:.1f}" for e in energies))
    click.echo("scan (sorted): " + " ".join(f"{e:.1f}" for e in np.sort(energies)))
    if output:
        np.savetxt(output, np.sort(energies), fmt="%.2f", header="energy_eV", comments="")
        click.echo(f"written: {output}")
