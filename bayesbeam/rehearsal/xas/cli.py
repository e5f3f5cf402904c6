"""``bayesbeam rehearse xas`` (one adaptive run into the catalog) and ``bayesbeam design xas``
(the offline point set for a fixed scan)."""

import click

from bayesbeam.rehearsal.common import (
    checked,
    command_line_interrupts,
    echo_json,
    open_run_engine,
    progress_option,
    run_options,
    run_progress,
)
from bayesbeam.rehearsal.xas.options import MODES, PRIORS, QUANTITY_UNIT, TARGET_LABEL, XASOptions

D = XASOptions()  # the defaults of every option


@click.command("xas")
@click.option("--sample", default=D.sample,
              help="Fe K-edge standard to measure, any case (its own spectrum is left out of the prior).")
@click.option("--quantity", type=click.Choice(sorted(QUANTITY_UNIT), case_sensitive=False), default=D.quantity,
              help="What the design and the stop aim at: the whole spectrum, edge_position (eV, Fe foil 7112.0), "
                   "pre_edge_centroid (eV) or pre_edge_area over 7108-7118 eV, fractions of --components, valence.")
@click.option("--target-std", type=float, default=None,
              help="Stop when the posterior std of --quantity reaches this (its unit: eV, fraction, valence units; "
                   "for the spectrum: the predicted RMSE, as --target-rmse).")
@click.option("--components", default=None, help="fractions: library standards, comma-separated (Fe-foil,a-Fe2O3).")
@click.option("--target-rmse", type=float, default=D.target_rmse,
              help="The spectrum: stop when the predicted RMSE of --spectrum (edge-step units) reaches this.")
@click.option("--spectrum", "--target", "target", type=click.Choice(sorted(TARGET_LABEL), case_sensitive=False),
              default=D.target,
              help="The spectrum the whole-spectrum design judges: the measured μt / edge step, or normalised μ "
                   "(which keeps the ~0.5 % edge-step uncertainty of a 105 eV window). --target is its old name.")
@click.option("--prior", type=click.Choice(sorted(PRIORS), case_sensitive=False), default=D.prior,
              help="Prior construction.")
@click.option("--max-points", type=int, default=D.max_points, help="Budget: stop after this many points.")
@click.option("--realistic", is_flag=True, help="A realistic truth: I0(E), glitches, harmonic, background, a "
              "monochromator 0.4 eV off and drifting, lash; the reference foil measured alongside (iref).")
@click.option("--mode", type=click.Choice(MODES, case_sensitive=False), default=D.mode,
              help="transmission (ln I0/It), or fluorescence: the standard as a dilute sample (1 wt%% Fe in cellulose) "
                   "measured with a fluorescence detector (If/I0, dead time and self-absorption corrected).")
@run_options(D.time_scale)
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_xas.png", help="Figure (PNG).")
@progress_option
def rehearse_xas(sample, quantity, target_std, components, target_rmse, target, prior, max_points, realistic, mode,
                 seed, time_scale, catalog, json_path, figure, progress):
    """Adaptive XAS (Bayesian choice of each energy and dwell) on the simulated beamline."""
    options = checked(XASOptions(sample, target_rmse, target, prior, max_points, quantity.lower(), target_std,
                                 components, realistic, mode.lower(), seed=seed, time_scale=time_scale))
    key = "fractions" if options.quantity == "fractions" else options.quantity
    line = (f"predicted RMSE {{d[rmse_pred]:.4f}} (target {target_std or target_rmse})" if key == "spectrum"
            else f"std({key}) {{d[{key}_std]:.4f}} (target {target_std})")
    from bayesbeam.rehearsal.xas import report
    from bayesbeam.rehearsal.xas.rehearse import rehearse_xas_run

    RE, location = open_run_engine(catalog)
    with command_line_interrupts(RE):
        with run_progress(RE, progress, None, lambda d: (
                f"point {d['points']}: " + line.format(d=d) + f", {d['beamtime_s']:.0f} s of beamtime")):
            r = rehearse_xas_run(RE, options)
        s = report.summary(r)
        click.echo(report.summary_text(s))
        echo_json(json_path, s)
        click.echo(f"figure: {report.rehearsal_figure(r, figure)}\ncatalog: {location} (run {r.uid})")


@click.command("xas")
@click.option("--points", type=int, required=True, help="Number of energy points (an energy chosen n times: n dwells).")
@click.option("--dwell", type=float, default=1.0, help="Dwell per point (s).")
@click.option("--prior", type=click.Choice(sorted(PRIORS), case_sensitive=False), default="library",
              help="Prior construction.")
@click.option("--exclude", default=None, help="Leave this standard out of the prior library (any case).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the scan (CSV): energy_eV, dwell_s per distinct energy, in increasing energy.")
def design_xas(points, dwell, prior, exclude, output):
    """Offline optimal energy-point set (greedy A-optimal, Ito-style) for a fixed scan."""
    if points < 1 or not dwell > 0:
        raise click.BadParameter("points must be >= 1 and dwell > 0 s")
    import numpy as np

    from bayesbeam.rehearsal.xas.rehearse import design_points, design_scan

    try:
        energies, rmse, t = design_points(points, dwell, prior, exclude)
    except ValueError as exc:  # an unknown standard to exclude
        raise click.BadParameter(str(exc), param_hint="'--exclude'") from None
    scan, dwells = design_scan(energies, dwell)
    click.echo(f"{points} points at {len(scan)} energies, predicted RMSE of μt / edge step {rmse[-1]:.4f}, "
               f"scan time {t:.0f} s (sorted scan)")
    click.echo("order chosen (eV): " + " ".join(f"{e:.1f}" for e in energies))
    repeats = [round(d / dwell) for d in dwells]
    click.echo(f"scan (sorted, eV; ×n: n dwells of {dwell:g} s): "
               + " ".join(f"{e:.1f}" + (f"×{n}" if n > 1 else "") for e, n in zip(scan, repeats, strict=True)))
    if output:
        np.savetxt(output, np.column_stack([scan, dwells]), fmt=["%.2f", "%.3f"], delimiter=",",
                   header="energy_eV,dwell_s", comments="")
        click.echo(f"written: {output}")
