"""``bayesbeam rehearse saxs``: SAXS frames until the pattern's density, or the particles' parameters, are known."""

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
from bayesbeam.rehearsal.saxs.options import DETECTORS, STOPS, SAXSOptions

D = SAXSOptions()  # the defaults of every option


def _progress(d) -> str:
    if "kde_threshold" in d and d.get("kde_divergence") == d.get("kde_divergence"):
        return f"frame {d['frames']}: KDE divergence {d['kde_divergence']:.3g} (threshold {d['kde_threshold']:.3g})"
    return f"frame {d['frames']}: radius {d['radius_mean']:.4g} ± {d['radius_std']:.2g} nm"


@click.command("saxs")
@click.option("--sample", default=D.sample, help="Simulated sample preset, any case (sim_devices.saxs presets, "
                                                   "e.g. silica-50nm: silica spheres of radius 25 nm in water).")
@click.option("--stop", type=click.Choice(STOPS), default=D.stop,
              help="kde: stop when the pattern's density has converged (--precision); posterior: when the "
                   "posterior std of --quantity reaches --target-std.")
@click.option("--quantity", default=D.quantity, help="Quantity of the posterior stop: radius (nm), pd, scale, "
                                                       "background (cm⁻¹).")
@click.option("--target-std", type=float, default=D.target_std, help="Target posterior std of --quantity (its unit).")
@click.option("--precision", type=float, default=D.precision,
              help="KDE stop: relative rms precision of the density per resolution element.")
@click.option("--exposure", type=float, default=D.exposure_s, help="Exposure of each frame (s).")
@click.option("--max-frames", type=int, default=D.max_frames, help="Budget: stop after this many frames.")
@click.option("--detector", type=click.Choice(DETECTORS, case_sensitive=False), default=D.detector,
              help="Simulated pixel detector.")
@click.option("--q-range", type=(float, float), default=None, help="q_min q_max (nm⁻¹) of the reduction "
                                                                  "(default: the detector's).")
@click.option("--mask", type=click.Path(dir_okay=False), default=None,
              help="Mask file (fabio-readable, non-zero = masked), added to the detector's gaps and beam stop.")
@run_options(D.time_scale)
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_saxs.png", help="Figure (PNG).")
@progress_option
def rehearse_saxs(sample, stop, quantity, target_std, precision, exposure, max_frames, detector, q_range, mask,
                  seed, time_scale, catalog, json_path, figure, progress):
    """SAXS frames on a simulated 2-D detector until the KDE of the pattern converges or the particle
    parameters' posterior reaches its target; the beamtime against a conventional fixed exposure."""
    options = checked(SAXSOptions(sample, stop, quantity, target_std, precision, exposure, max_frames,
                                  detector.lower(), tuple(q_range) if q_range else None, mask, seed=seed,
                                  time_scale=time_scale))
    from bayesbeam.rehearsal.saxs import report
    from bayesbeam.rehearsal.saxs.rehearse import rehearse_saxs_run

    RE, location = open_run_engine(catalog)
    with command_line_interrupts(RE):
        with run_progress(RE, progress, max_frames, _progress):
            result = rehearse_saxs_run(RE, options)
        s = report.summary(result)
        print_table(report.table(s))
        echo_json(json_path, s)
        click.echo(f"figure: {report.saxs_figure(result, figure, s)}\ncatalog: {location}")
