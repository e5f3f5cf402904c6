"""``bayesbeam rehearse compton``: one adaptive run into the catalog, or the planning statistics."""

import os

import click

from bayesbeam.rehearsal.common import (
    checked,
    command_line_interrupts,
    echo_json,
    open_run_engine,
    print_table,
    progress_display,
    progress_option,
    run_options,
    run_progress,
)
from bayesbeam.rehearsal.compton.options import ComptonOptions

D = ComptonOptions()  # the defaults of every option
PRESETS_ENV = "BAYESBEAM_PRESETS"  # sim_devices.compton.preset_files.PRESETS_ENV (not imported for --help)
SAMPLE_HELP = "Sample preset (fe, ni, co, or one of --presets DIR; see sim_devices/compton/presets)."


def _use_presets(ctx, param, value):
    if value:  # every preset look-up of this process (and of its children) reads the folder from there
        os.environ[PRESETS_ENV] = os.path.abspath(value)
    return value


def presets_option(command):
    """``--presets DIR`` (or ``$BAYESBEAM_PRESETS``): the user's folder of sample presets (``*.toml``)."""
    return click.option(
        "--presets", type=click.Path(exists=True, file_okay=False), envvar=PRESETS_ENV, default=None,
        callback=_use_presets, expose_value=False, is_eager=True,
        help="Folder of your own sample presets (*.toml, as sim_devices/compton/presets/fe.toml), read besides the "
             "packaged ones; a sample named like a packaged one replaces it (with a warning). "
             f"Default: ${PRESETS_ENV}.")(command)


@click.command("compton")
@click.option("--sample", default=D.sample, help=SAMPLE_HELP)
@presets_option
@click.option("--target-std", type=float, default=D.target_std,
              help="Stop when the posterior std of QUANTITY reaches this (μB).")
@click.option("--quantity", default=D.quantity, help="Quantity the target applies to: mu_s (spin moment) or a3d, a4s.")
@click.option("--max-cycles", type=int, default=D.max_cycles, help="Budget: stop after this many valid + − − + cycles.")
@click.option("--count-time", type=float, default=D.count_time_s, help="Count time per spectrum (s of beamtime).")
@click.option("--plateau", nargs=2, type=(int, float), default=None,
              help="Also stop when std(QUANTITY) improved less than REL (fraction) over K cycles: K REL.")
@click.option("--repeats", type=int, default=0,
              help="Instead of one stored run, rehearse this many beamtimes (without the RunEngine; seed 0 unless "
                   "--seed) and print the distribution of cycles/hours, the coverage of the intervals and the bias "
                   "of μ_s (--json: these planning figures).")
@run_options(D.time_scale)
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_compton.png",
              help="Where to write the figure (PNG): MCP with fit, and std vs cycle.")
@progress_option
def rehearse_compton(sample, target_std, quantity, max_cycles, count_time, plateau, repeats, seed, time_scale,
                     catalog, json_path, figure, progress):
    """Adaptive magnetic-Compton measurement on the simulated BL08W-style beamline."""
    options = checked(ComptonOptions(sample, target_std, quantity, max_cycles, count_time,
                                     tuple(plateau) if plateau else None, seed=seed, time_scale=time_scale))
    if repeats < 0:
        raise click.BadParameter(f"repeats must be >= 0, got {repeats}")
    from bayesbeam.rehearsal.compton import report as rpt
    from bayesbeam.rehearsal.compton.rehearse import rehearse_repeats, rehearse_run

    if repeats:
        with progress_display(progress) as bar:
            task = bar.add_task("rehearsing beamtimes", total=repeats)
            stats = rehearse_repeats(options, repeats, lambda: bar.advance(task))
        print_table(rpt.repeats_table(stats))
        echo_json(json_path, rpt.repeats_summary(stats))
        return

    RE, location = open_run_engine(catalog)
    with command_line_interrupts(RE):
        with run_progress(RE, progress, max_cycles, lambda d: (
                f"cycle {d['next_cycle'] - 1}: std({quantity}) = {d[f'{quantity}_std']:.4g} (target {target_std})")):
            result = rehearse_run(RE, options)
        print_table(rpt.result_table(result))
        echo_json(json_path, rpt.result_summary(result))
        click.echo(f"figure: {rpt.rehearsal_figure(result, figure)}\ncatalog: {location}")
