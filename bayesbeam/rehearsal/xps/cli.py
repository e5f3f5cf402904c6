"""``bayesbeam rehearse xps``: Hamiltonian selection from repeated simulated 3d XPS sweeps."""

import click

from bayesbeam.rehearsal.common import (
    checked,
    command_line_interrupts,
    echo_json,
    open_run_engine,
    print_table,
    progress_option,
    run_options,
    run_progress,
)
from bayesbeam.rehearsal.xps.options import ANALYSES, TRUTHS, XPSOptions

D = XPSOptions()  # the defaults of every option


@click.command("xps")
@click.option("--truth", default=D.truth, help=f"Simulated sample, any case: {' or '.join(TRUTHS)} "
                                                 "(3-level and 2-level cluster models).")
@click.option("--p-model", type=float, default=D.p_model,
              help="Stop when a model's posterior probability reaches this.")
@click.option("--target-delta-f", type=float, default=D.target_delta_f, help="Target posterior std of Δ − U_fc (eV).")
@click.option("--target-v", type=float, default=D.target_v, help="Target posterior std of V (eV).")
@click.option("--max-sweeps", type=int, default=D.max_sweeps, help="Budget: stop after this many sweeps.")
@click.option("--dwell", type=float, default=D.dwell_s, help="Dwell time per analyser channel (s).")
@click.option("--mc-sweeps", type=int, default=D.mc_sweeps,
              help="Exchange-MC sweeps per run and model after each sweep.")
@click.option("--analysis", type=click.Choice(ANALYSES), default=D.analysis, show_default=True,
              help="poisson: Poisson likelihood of the measured line shape (both 3d halves, the wide analyser); "
                   "0.1: the seed's line shape on the narrow window.")
@run_options(D.time_scale)
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_xps.png", help="Figure (PNG).")
@progress_option
def rehearse_xps(truth, p_model, target_delta_f, target_v, max_sweeps, dwell, mc_sweeps, analysis, seed, time_scale,
                 catalog, json_path, figure, progress):
    """Hamiltonian selection (2- vs 3-level cluster model) from repeated simulated 3d XPS sweeps."""
    options = checked(XPSOptions(truth, p_model, target_delta_f, target_v, max_sweeps, dwell, mc_sweeps, analysis,
                                 seed=seed, time_scale=time_scale))
    from bayesbeam.rehearsal.xps import report
    from bayesbeam.rehearsal.xps.rehearse import rehearse_xps_run

    RE, location = open_run_engine(catalog)
    with command_line_interrupts(RE):
        with run_progress(RE, progress, max_sweeps, lambda d: (
                f"sweep {d['sweeps']}: {d['model_best']} leads, P = {d['model_prob_max']:.3f} (target {p_model})")):
            result = rehearse_xps_run(RE, options)
        s = report.summary(result)
        print_table(report.table(s))
        echo_json(json_path, s)
        click.echo(f"figure: {report.xps_figure(result, figure)}\ncatalog: {location}")
