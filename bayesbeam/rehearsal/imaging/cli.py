"""The imaging commands: ``bayesbeam rehearse xas-imaging``, ``bayesbeam classify STACK`` and
``bayesbeam imaging-stack OUT.h5``."""

import click

from bayesbeam.rehearsal.common import (
    CATALOG_HELP,
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

SCHEDULER_HELP = ("Where the tiles are classified: local (a Dask LocalCluster on 127.0.0.1), threads (a thread pool "
                  "in this process), sync, or a Dask scheduler address (tcp://host:port).")


def _library(names):
    from plans.imaging.library import imaging_library

    try:
        return imaging_library(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--library") from None


@click.command("classify")
@click.argument("stack", required=False, type=click.Path(dir_okay=False))
@click.option("--catalog", default=None, help=CATALOG_HELP + " With --run: classify a stored run.")
@click.option("--run", "run_uid", default=None, help="uid (or its first characters) of a stored adaptive_xas_imaging "
                                                     "run to classify instead of a file.")
@click.option("--scheduler", default="local", help=SCHEDULER_HELP)
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Workers of the local cluster or threads.")
@click.option("--dashboard/--no-dashboard", default=False, help="The local cluster's dashboard (on 127.0.0.1).")
@click.option("--tile", type=click.IntRange(min=16), default=512, help="Tile side (px) of each task.")
@click.option("--library", default=None, help="Comma-separated Fe K-edge standards that may name the classes "
                                               "(any case; default: all 61).")
@click.option("--psf-sigma-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The detector's Gaussian PSF sigma (px) as measured (knife edge): PSF-aware labels at class "
                   "boundaries. Default: per-pixel labels.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the classes, fractions, timings (and scores against a simulated truth) as JSON.")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False), default=None,
              help="Write the class map, max posterior and class spectra to this HDF5 file.")
@progress_option
def classify_command(stack, catalog, run_uid, scheduler, workers, dashboard, tile, library, psf_sigma_px, json_path,
                     labels_path, progress):
    """Classify the per-pixel spectra of an imaging stack, O(N) (noise-aware partition, Potts filter): an HDF5 or
    NeXus file (/entry/data: images, flats, dark, energy) or, with --run, a stored adaptive_xas_imaging run."""
    if (stack is None) == (run_uid is None):
        raise click.UsageError("give a STACK file or --run UID (with --catalog), one of them")
    lib = _library(library)
    from bayesbeam.rehearsal.imaging.classify import classes_table, classify, from_file, from_run, write_labels

    try:
        if stack is not None:
            data, title = from_file(stack), f"classes of {stack}"
        else:
            from bayesbeam.catalog import open_catalog

            data = from_run(open_catalog(catalog, writable=False)[run_uid])
            title = f"classes of run {data.origin['run'][:8]}"
    except (ValueError, KeyError, OSError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    with progress_display(progress) as bar:
        tasks: dict = {}

        def shown(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage}: tiles", total=total)
            bar.update(tasks[stage], completed=done, description=f"{stage}: {done}/{total} tiles")

        out = classify(data, lib, scheduler=scheduler, workers=workers, dashboard=dashboard, tile=tile,
                       keep_labels=labels_path is not None, psf_sigma_px=psf_sigma_px, progress=shown)
    s = out["summary"]
    print_table(classes_table(s, title))
    if out["scores"] is not None:
        sc = out["scores"]
        nan = float("nan")
        click.echo(f"against the simulated truth: majority accuracy {sc['majority_accuracy']:.4f}, minority "
                   f"{'found' if sc.get('minority_found') else 'not found'} (precision "
                   f"{sc.get('minority_precision', nan):.3f}, recall {sc.get('minority_recall', nan):.3f})")
    if labels_path:
        click.echo(f"labels: {write_labels(labels_path, out['result'])}")
    echo_json(json_path, s)


@click.command("imaging-stack")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--pixels", type=float, default=1e6, help="Pixels of the (square) image.")
@click.option("--minority", type=float, default=0.005, help="Fraction of pixels of the hidden minority phase.")
@click.option("--seed", type=int, default=0, help="Seed of the sample and the noise.")
@click.option("--n0", type=float, default=1e4, help="Incident photons per pixel per image.")
@click.option("--passes", type=click.IntRange(min=1), default=1, help="Images summed per energy.")
@click.option("--energies", default="auto", help="auto (designed on the library without the minority) or a "
                                                 "comma-separated list (eV).")
def imaging_stack(out, pixels, minority, seed, n0, passes, energies):
    """Write a simulated XAS-imaging stack (three Fe phases and a hidden minority) in the HDF5 layout that
    `bayesbeam classify` reads, with its truth labels (/entry/truth)."""
    if not (pixels >= 256 and 0 <= minority < 0.05 and n0 > 0):
        raise click.BadParameter(f"need --pixels >= 256, 0 <= --minority < 0.05 and --n0 > 0, got {pixels:g}, "
                                 f"{minority:g}, {n0:g}")
    from bayesbeam.rehearsal.imaging.options import parse_energies
    from bayesbeam.rehearsal.imaging.stack import write_simulated_stack

    try:
        written = write_simulated_stack(out, pixels=pixels, minority_fraction=minority, seed=seed, n0=n0,
                                        passes=passes, energies=parse_energies(energies))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"stack: {written['path']} ({written['side_px']}×{written['side_px']} px, "
               f"{len(written['energies_eV'])} energies, {passes} pass(es); hidden minority {written['minority']})")


def _progress(d) -> str:
    return (f"pass {d['passes']}: {100 * d['decided_fraction']:.2f} % decided, {d['n_classes']} classes "
            f"({d['unknown_classes']} unknown)")


@click.command("xas-imaging")
@click.option("--pixels", type=float, default=1e6, help="Pixels of the (square) field of view.")
@click.option("--minority", type=float, default=0.005, help="Fraction of pixels of the hidden minority phase (kept "
                                                            "out of the library the design and classifier use).")
@click.option("--n0", type=float, default=1e4, help="Incident photons per pixel per image.")
@click.option("--energies", default="auto", help="auto (designed) or a comma-separated list (eV).")
@click.option("--max-passes", type=int, default=10, help="Budget: at most this many passes of images.")
@click.option("--target-error", type=float, default=0.01,
              help="The design's target: the bound on the per-pixel misclassification among library phases.")
@click.option("--library", default=None, help="Comma-separated Fe K-edge standards that may name the classes "
                                               "(default: all 61 but the minority).")
@click.option("--scheduler", default="threads", help=SCHEDULER_HELP)
@click.option("--n-flat", type=int, default=10, help="Flat fields (sample out) per energy, taken once.")
@click.option("--n-dark", type=int, default=10, help="Dark frames (shutter closed), taken once.")
@run_options(float("inf"))
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_xas_imaging.png", help="Figure (PNG).")
@progress_option
def rehearse_imaging(pixels, minority, n0, energies, max_passes, target_error, library, scheduler, n_flat, n_dark,
                     seed, time_scale, catalog, json_path, figure, progress):
    """Full-field XAS imaging on a simulated end station: designed energies, passes until the per-pixel
    classification is decided; the phase map, the minority found or not, the beamtime against a full XANES stack."""
    from bayesbeam.rehearsal.imaging.options import ImagingOptions, parse_energies

    try:
        parsed = parse_energies(energies)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--energies") from None
    names = tuple(n.strip() for n in library.split(",")) if library else None
    options = checked(ImagingOptions(pixels, minority, n0, tuple(parsed) if parsed else None, max_passes,
                                     target_error, library=names, scheduler=scheduler, n_flat=n_flat,
                                     n_dark=n_dark, seed=seed,
                                     time_scale=time_scale))
    from bayesbeam.rehearsal.imaging import report
    from bayesbeam.rehearsal.imaging.rehearse import rehearse_imaging_run

    RE, location = open_run_engine(catalog)
    with command_line_interrupts(RE):
        with run_progress(RE, progress, max_passes, _progress):
            result = rehearse_imaging_run(RE, options)
        s = report.summary(result)
        print_table(report.table(s))
        echo_json(json_path, s)
        click.echo(f"figure: {report.imaging_figure(result, figure, s)}\ncatalog: {location}")
