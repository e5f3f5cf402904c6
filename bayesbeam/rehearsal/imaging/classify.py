"""``bayesbeam classify``: the O(N) classification alone (``agent.imaging.classify_stack``) of a stack measured
elsewhere, in an HDF5/NeXus file (``stack.py``'s layout) or stored by ``adaptive_xas_imaging`` in the catalog."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StackInput:
    """What ``classify_stack`` needs: the ``source``, its ``noise`` model, the simulated truth when there is one
    (``truth`` callable, phase ``truth_names``, ``minority`` index) and where it came from (``origin``)."""

    source: Any
    noise: Any
    origin: dict
    truth: Callable | None = None
    truth_names: list | None = None
    minority: int | None = None


def from_file(path: str) -> StackInput:
    """The stack of an HDF5 file (``agent.imaging.HDF5Source``) with its noise model and truth (if simulated)."""
    from agent.imaging import HDF5Source
    from bayesbeam.rehearsal.imaging.stack import stack_noise, stack_truth

    source = HDF5Source(str(path))
    try:
        _ = source.shape
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path}: not an imaging stack (needs /entry/data/images, flats, dark, energy): {exc}") \
            from None
    truth = stack_truth(path)
    out = StackInput(source, stack_noise(path), {"file": str(path)})
    if truth is not None:
        out.truth, out.truth_names, out.minority = truth
    return out


def from_run(run) -> StackInput:
    """The stack of a stored ``adaptive_xas_imaging`` run: its valid frames (``frames`` stream) read back from
    ``primary`` one at a time, images summed per energy, flats and darks averaged; the noise model from the first
    two valid flats of the lowest energy and the first two valid darks, as the agent made it."""
    from agent.imaging import ArraySource, NoiseModel, estimate_gain

    start = run.metadata["start"]
    if start.get("plan_name") != "adaptive_xas_imaging":
        raise ValueError(f"run {start['uid'][:8]} is a {start.get('plan_name')!r} run, not adaptive_xas_imaging")
    spec = start["validity"]
    frames = run["frames"].read()
    valid = {int(f): bool(v) for f, v in zip(frames["frame"].values, frames["valid"].values, strict=True)}
    primary = run["primary"]
    table = primary.read([spec["kind"], "frame", spec["requested"]])
    image = primary[spec["image"]]
    energies = np.asarray(start["energies_eV"], float)
    k = len(energies)
    sums, n_img = None, np.zeros(k, int)
    flats, n_flat, darks, pair_f, pair_d = None, np.zeros(k, int), None, [], []
    for row, (kind, frame, energy) in enumerate(zip(table[spec["kind"]].values, table["frame"].values,
                                                    table[spec["requested"]].values, strict=True)):
        if not valid.get(int(frame), False):
            continue
        a = np.asarray(image[row], np.float64)
        if sums is None:
            sums, flats, darks = np.zeros((k, *a.shape)), np.zeros((k, *a.shape)), [np.zeros(a.shape), 0]
        kind = str(kind)
        if kind == "dark":
            darks[0] += a
            darks[1] += 1
            if len(pair_d) < 2:
                pair_d.append(a)
            continue
        j = int(np.argmin(np.abs(energies - float(energy))))
        if kind == "flat":
            flats[j] += a
            n_flat[j] += 1
            if j == 0 and len(pair_f) < 2:
                pair_f.append(a)
        else:
            sums[j] += a
            n_img[j] += 1
    if sums is None or darks[1] < 2 or n_flat.min() < 2 or len(pair_f) < 2 or n_img.min() < 1:
        raise ValueError(f"run {start['uid'][:8]} holds no complete stack: {darks[1] if darks else 0} valid darks, "
                         f"flats per energy {n_flat.tolist()}, images per energy {n_img.tolist()}")
    passes = int(n_img.min())
    if n_img.max() != passes:  # a pass cut short: its images are left out, as the agent classifies whole passes
        sums = _whole_passes(primary, image, table, spec, valid, energies, passes)
    g, r = estimate_gain(pair_f[0], pair_f[1], pair_d[0], pair_d[1])
    noise = NoiseModel(g, r, int(n_flat.min()), int(darks[1]))
    source = ArraySource(sums.astype(np.float32), (flats / n_flat[:, None, None]).astype(np.float32),
                         (darks[0] / darks[1]).astype(np.float32), energies, passes)
    return StackInput(source, noise, {"run": start["uid"], "passes": passes})


def _whole_passes(primary, image, table, spec, valid, energies, passes) -> np.ndarray:
    """The images summed per energy over the first ``passes`` valid images of each energy."""
    sums, seen = None, np.zeros(len(energies), int)
    for row, (kind, frame, energy) in enumerate(zip(table[spec["kind"]].values, table["frame"].values,
                                                    table[spec["requested"]].values, strict=True)):
        if str(kind) != "image" or not valid.get(int(frame), False):
            continue
        j = int(np.argmin(np.abs(energies - float(energy))))
        if seen[j] >= passes:
            continue
        a = np.asarray(image[row], np.float64)
        sums = np.zeros((len(energies), *a.shape)) if sums is None else sums
        sums[j] += a
        seen[j] += 1
    return sums


def classify(stack: StackInput, library=None, *, scheduler: str | None = "local", workers: int = 2,
             dashboard: bool = False, tile: int = 512, keep_labels: bool = False, psf_sigma_px: float | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Classify ``stack`` on ``scheduler`` (``agent.imaging.executor_for``) with the phases of ``library`` (a
    ``SpectraLibrary``; None: no names, classes numbered); ``psf_sigma_px``: the detector's measured PSF σ (px)
    for the PSF-aware final labelling (None: per pixel). Returns ``{"result": ClassificationResult,
    "summary": JSON values, "scores": agent.imaging.scoring.scores when the truth is known}``."""
    from agent.imaging import classify_stack, executor_for
    from agent.imaging.scoring import scores

    energies = np.asarray(stack.source.energies_eV, float)
    spectra = names = None
    if library is not None:
        spectra, names = library.on(energies).T, list(library.names)
    t0 = time.perf_counter()
    with executor_for(scheduler, workers, dashboard) as ex:
        dash = getattr(getattr(ex, "_client", None), "dashboard_link", None)
        result = classify_stack(stack.source, stack.noise, ex, library=spectra, library_names=names, tile=tile,
                                truth=stack.truth, n_truth=len(stack.truth_names or ()), keep_labels=keep_labels,
                                psf_sigma_px=psf_sigma_px, progress=progress)
    wall = time.perf_counter() - t0
    summary = {**stack.origin, **result.summary(), "wall_s": wall, "scheduler": scheduler or "local",
               "noise": stack.noise.to_dict(), "tile": tile, "dashboard": dash, "psf_sigma_px": psf_sigma_px}
    out = {"result": result, "summary": summary, "scores": None}
    if stack.truth is not None and result.confusion is not None:
        out["scores"] = scores(result.confusion, stack.minority)
        summary.update(out["scores"], truth_names=stack.truth_names)
    return out


def write_labels(path: str, result) -> str:
    """The class map (``labels`` (H, W) int8, −1 unclassified), the max posterior and the class names and spectra
    (``/entry/classes``) to an HDF5 file."""
    import json

    import h5py

    with h5py.File(path, "w") as f:
        g = f.require_group("/entry/classes")
        g.create_dataset("labels", data=result.labels, compression="gzip")
        g.create_dataset("max_posterior", data=result.max_posterior, compression="gzip")
        g.create_dataset("spectra", data=result.spectra)
        g.create_dataset("spectra_std", data=result.spectra_std)
        g.create_dataset("energy", data=result.energies_eV).attrs["units"] = "eV"
        g.attrs["names"] = json.dumps([str(n) for n in result.names])
    return path


def classes_table(summary: dict, title: str):
    """The rich table of the classes: name, nearest library phase and its distance (σ), pixels, fraction."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("class", "nearest library phase", "distance (σ)", "pixels", "fraction"):
        t.add_column(col)
    for name, match, n, frac in zip(summary["classes"], summary["matches"], summary["class_pixels"],
                                    summary["class_fractions"], strict=True):
        d = match.get("distance_sigma")
        t.add_row(str(name), str(match.get("nearest", "—")), f"{d:.2f}" if d is not None else "—", str(n),
                  f"{100 * frac:.3f} %")
    t.add_row("unclassified", "—", "—", str(summary["unclassified_pixels"]), "")
    t.caption = (f"{summary['pixels']} pixels at {len(summary['energies_eV'])} energies: "
                 f"{100 * summary['decided_fraction']:.2f} % decided (p ≥ 0.99), "
                 f"{100 * summary['unexplained_fraction']:.2f} % unexplained, {summary['cells']} cells, "
                 f"{summary['wall_s']:.2f} s on {summary['scheduler']}")
    return t
