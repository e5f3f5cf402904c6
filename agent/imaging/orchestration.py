"""The classification of a whole stack on an executor: a thread pool for a detector's field of view in a
run, a Dask cluster (local, bound to 127.0.0.1, or at an address) for stacks that do not fit in memory.

Three stages, each O(N): a sample of tiles fixes the spectral space (``SpectralSpace.fit``); pass 1 counts every
pixel into cells (batches of tiles per task, merged where they were counted, then in the client); the classes
are found on the merged cell table alone; pass 2 labels every tile (``tiles.tile_labels``) and sums its
statistics (given the detector's measured PSF, the final pass's labels account for it: ``psf``). Only cell
tables, per-tile sums and (if asked) label tiles travel to the client.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from agent.imaging.classify import background_shape
from agent.imaging.noise import NoiseModel, absorbance, absorbance_variance
from agent.imaging.partition import CellTable, Classes, SpectralSpace, find_classes, join
from agent.imaging.psf import WIENER_LAMBDA
from agent.imaging.registration import RegisteredSource, estimate_shifts
from agent.imaging.tiles import TileStats, tile_cells, tile_labels, windows
from agent.imaging.unmixing import endmembers


@dataclass
class ClassificationResult:
    """A classified stack. ``spectra`` (C, k): class mean spectra normalised onto their nearest library phase
    (or as measured when there is no library), ``spectra_std`` the pixels' spread about them, ``names`` the
    nearest library phase within ``match_sigma`` of a pixel's noise or ``unknown-N``; ``counts`` (C + 1)
    pixels per class and unclassified; fractions of decided and unexplained pixels among classified ones."""

    energies_eV: np.ndarray
    space: SpectralSpace
    classes: Classes
    names: list[str]
    matches: list[dict]
    spectra: np.ndarray
    spectra_std: np.ndarray
    counts: np.ndarray
    decided_fraction: float
    unexplained_fraction: float
    pixels: int
    cells: int
    timings: dict
    confusion: np.ndarray | None = None
    labels: np.ndarray | None = None
    max_posterior: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.names)

    def summary(self) -> dict:
        """JSON values of the result (no maps)."""
        classified = max(int(self.counts[:-1].sum()), 1)
        return {"energies_eV": self.energies_eV.tolist(), "classes": self.names, "matches": self.matches,
                "class_pixels": self.counts[:-1].tolist(), "unclassified_pixels": int(self.counts[-1]),
                "class_fractions": (self.counts[:-1] / classified).tolist(),
                "decided_fraction": self.decided_fraction, "unexplained_fraction": self.unexplained_fraction,
                "pixels": self.pixels, "cells": self.cells, "timings_s": self.timings,
                "partition": self.classes.to_dict()}


#: Energy-pixel values of one tile at most (a task holds ~10 float64 copies: ~1 GB at 12 × 1024²).
TILE_VALUES = 12 * 1024 * 1024


class _Inline(Executor):
    """An executor that runs each task at submission (``scheduler="sync"``: debugging, tiny stacks)."""

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures import Future

        f = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            f.set_exception(exc)
        return f


@contextlib.contextmanager
def executor_for(scheduler: str | None = "local", workers: int = 2, dashboard: bool = False) -> Iterator[Executor]:
    """An executor for ``classify_stack``: ``"threads"`` (a pool of ``workers`` threads in this process),
    ``"sync"``, ``"local"`` or None (a Dask LocalCluster of ``workers`` single-threaded processes on 127.0.0.1,
    the dashboard on 127.0.0.1 if ``dashboard``), or a Dask scheduler address (``tcp://host:port``)."""
    if scheduler == "threads":
        with ThreadPoolExecutor(workers) as ex:
            yield ex
        return
    if scheduler == "sync":
        yield _Inline()
        return
    from distributed import Client, LocalCluster

    if scheduler in (None, "local"):
        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", processes=True,
                          dashboard_address="127.0.0.1:0" if dashboard else None, memory_limit="2GiB",
                          silence_logs=50) as cluster, Client(cluster) as client:
            yield client.get_executor()
        return
    with Client(scheduler) as client:
        yield client.get_executor()


def _cells_batch(source, noise, space, cell, batch) -> CellTable:
    return CellTable.merge([tile_cells(source, noise, space, cell, w) for w in batch])


def _sample(source, noise: NoiseModel, tile: int, n_tiles: int, n_pixels: int, seed: int = 0):
    """(A, var) (k, ≤ n_pixels) from ``n_tiles`` tiles spread over the image."""
    wins = windows(source.shape, tile)
    pick = np.unique(np.linspace(0, len(wins) - 1, min(n_tiles, len(wins))).round().astype(int))
    rng = np.random.default_rng(seed)
    a_all, v_all = [], []
    per = max(n_pixels // len(pick), 1)
    for i in pick:
        images, flats, dark = source.read(*wins[i])
        a = absorbance(images, flats, dark, source.passes).reshape(len(images), -1)
        v = absorbance_variance(images, flats, dark, noise, source.passes,
                                getattr(source, "image_variance_factor", None)).reshape(len(images), -1)
        j = rng.choice(a.shape[1], min(per, a.shape[1]), replace=False)
        a_all.append(a[:, j])
        v_all.append(v[:, j])
    return np.concatenate(a_all, axis=1).astype(float), np.concatenate(v_all, axis=1).astype(float)


def _names(space: SpectralSpace, classes: Classes, library, library_names, match_sigma):
    """Nearest library phase of each class by distance in the whitened space (σ of a typical pixel)."""
    names, matches, n_unknown = [], [], 0
    lib_y = space.whiten @ space.point(library) if library is not None and len(library) else None
    for yc in classes.y:
        if lib_y is None:
            n_unknown += 1
            names.append(f"class-{n_unknown}")
            matches.append({})
            continue
        d = np.linalg.norm(lib_y - yc[:, None], axis=0)
        j = int(np.argmin(d))
        match = {"nearest": library_names[j], "distance_sigma": float(d[j])}
        if d[j] <= match_sigma:
            names.append(library_names[j])
        else:
            n_unknown += 1
            names.append(f"unknown-{n_unknown}")
        matches.append(match)
    return names, matches


def _label_all(ex, source, noise, space, cell, classes, beta, iterations, wins, truth, n_truth, keep_labels,
               progress, shape, hosts=None, psf_sigma_px=None, psf_lambda=WIENER_LAMBDA):
    """Pass 2 over every tile: (summed TileStats, labels, max posterior) (maps None unless ``keep_labels``)."""
    spectra = classes.z + space.reference  # z = R·μ/t̂ is μ/τ less the projected reference: μ ∝ z + μ̄
    log_prior = np.log(classes.counts / classes.counts.sum())
    hh, ww = shape
    labels = np.full((hh, ww), -1, np.int8) if keep_labels else None
    qmax = np.zeros((hh, ww), np.float32) if keep_labels else None
    futures = {ex.submit(tile_labels, source, noise, space, cell, spectra, log_prior, beta, iterations, w, truth,
                         n_truth, keep_labels, hosts, psf_sigma_px, psf_lambda): w for w in wins}
    stats: TileStats | None = None
    for i, f in enumerate(as_completed(futures)):
        s, lab, q = f.result()
        stats = s if stats is None else stats + s
        if keep_labels:
            y0, x0, h, w = futures[f]
            labels[y0:y0 + h, x0:x0 + w] = lab
            qmax[y0:y0 + h, x0:x0 + w] = q
        if progress:
            progress("labels", i + 1, len(futures))
    return stats, labels, qmax


def classify_stack(source, noise: NoiseModel, executor: Executor | None = None, *, library: np.ndarray | None = None,
                   library_names: list[str] | None = None, reference: np.ndarray | None = None, tile: int = 1024,
                   cell: float = 1.0, r_max: int = 6, z_sig: float = 5.0, beta: float = 1.0, iterations: int = 2,
                   match_sigma: float = 3.0, batch: int = 8, truth: Callable | None = None, n_truth: int = 0,
                   keep_labels: bool = False, progress: Callable[[str, int, int], None] | None = None,
                   sample_tiles: int = 8, sample_pixels: int = 200_000, residual_pixels: float = 2e7,
                   register: bool = True, psf_sigma_px: float | None = None,
                   psf_lambda: float = WIENER_LAMBDA) -> ClassificationResult:
    """Classify the stack of ``source`` (``tiles`` module) under ``noise``. ``library`` (m, k) spectra of the
    known phases at the stack's energies (names ``library_names``) name the classes and, when k − 2 > ``r_max``,
    choose the reduced directions; ``reference`` (k) is the spectrum projected off (default: the library mean,
    else the sample's mean normalised spectrum). ``truth(y0, x0, h, w)`` → integer labels < ``n_truth`` adds a
    confusion matrix. ``progress(stage, done, total)`` is called as tiles finish. The search among unexplained
    pixels labels tiles of ≥ ``residual_pixels`` pixels first; the full labelling pass follows (reusing that one
    when it covered every tile and found nothing new). ``register``: shift the energies' images onto the first's
    (``registration``) before anything else. ``psf_sigma_px``: the detector's Gaussian point-spread σ (px) as
    the beamline measured it (e.g. a knife edge); given, the final labelling pass relabels class boundaries by
    the PSF-deconvolved class amounts (``psf``, Wiener ``psf_lambda``); None: per-pixel labels."""
    own = executor is None
    ctx = ThreadPoolExecutor(2) if own else contextlib.nullcontext(executor)
    timings: dict[str, float] = {}
    energies = np.asarray(source.energies_eV, float)
    tile = min(int(tile), int(np.sqrt(TILE_VALUES / len(energies))))  # a task's memory ∝ energies × tile²
    with ctx as ex:
        t0 = time.perf_counter()
        shifts = None
        if register and len(energies) > 1:
            shifts = estimate_shifts(source)
            if np.any(shifts):
                source = RegisteredSource(source, shifts)
        timings["register_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        a, v = _sample(source, noise, tile, sample_tiles, sample_pixels)
        if reference is None:
            if library is not None and len(library):
                reference = np.asarray(library, float).mean(axis=0)
            else:
                lo, hi = a[0], a[-1]
                reference = np.median((a - lo) / np.where(np.abs(hi - lo) > 1e-3, hi - lo, np.inf), axis=1)
        space = SpectralSpace.fit(a, v, energies, reference, r_max=r_max, library=library,
                                  background=background_shape(energies))
        timings["space_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        wins = windows(source.shape, tile)
        batches = [wins[i:i + batch] for i in range(0, len(wins), batch)]
        futures = [ex.submit(_cells_batch, source, noise, space, cell, b) for b in batches]
        table, pending, done = None, [], 0
        for f in as_completed(futures):
            pending.append(f.result())
            done += 1
            if len(pending) >= 8:
                table = CellTable.merge(([table] if table is not None else []) + pending)
                pending = []
            if progress:
                progress("cells", done, len(futures))
        table = CellTable.merge(([table] if table is not None else []) + pending)
        timings["pass1_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        classes = find_classes(table, space, cell=cell, z_sig=z_sig)
        timings["classes_s"] = time.perf_counter() - t0
        if len(classes.z) == 0:
            raise ValueError("no class found: no pixel with an absorption edge in the stack")
        # the search among unexplained pixels, on evenly spread tiles of ≥ residual_pixels pixels (all of a small
        # stack): a class the histogram's density could not show (a 0.5 % minority beside a majority class)
        t0 = time.perf_counter()
        step = max(1, int(len(wins) * tile * tile // max(residual_pixels, 1)))
        probe = wins[::step]
        every = step == 1
        names, _ = _names(space, classes, library, library_names, match_sigma)
        hosts = np.array([i for i, n in enumerate(names) if not n.startswith("unknown-")], int)
        stats, labels, qmax = _label_all(ex, source, noise, space, cell, classes, beta, iterations, probe,
                                         truth, n_truth, keep_labels and every, progress, source.shape, hosts)
        found = find_classes(stats.residual, space, cell=cell, z_sig=z_sig, existing=classes)
        timings["residual_s"] = time.perf_counter() - t0
        if len(found.z):
            classes = join(classes, found)
        t0 = time.perf_counter()
        names, _ = _names(space, classes, library, library_names, match_sigma)
        unknown = [i for i, n in enumerate(names) if n.startswith("unknown-")]
        classes, fans = endmembers(classes, unknown, stats.residual, space)
        timings["endmembers_s"] = time.perf_counter() - t0
        if len(found.z) or fans or not every or psf_sigma_px:
            t0 = time.perf_counter()
            stats, labels, qmax = _label_all(ex, source, noise, space, cell, classes, beta, iterations, wins,
                                             truth, n_truth, keep_labels, progress, source.shape, None,
                                             psf_sigma_px, psf_lambda)
            timings["pass2_s"] = time.perf_counter() - t0
        table_cells = len(table.keys)
    names, matches = _names(space, classes, library, library_names, match_sigma)
    n = np.maximum(stats.counts[:-1], 1)[:, None]
    mean = stats.s1 / n
    std = np.sqrt(np.maximum(stats.s2 / n - mean ** 2, 0.0))
    spectra_out, std_out = mean.copy(), std.copy()
    if library is not None and len(library):
        lib = np.asarray(library, float)
        for c, m in enumerate(matches):
            target = lib[library_names.index(m["nearest"])]
            x = np.stack([np.ones_like(mean[c]), mean[c]], axis=1)
            (alpha, gamma), *_ = np.linalg.lstsq(x, target, rcond=None)
            spectra_out[c] = alpha + gamma * mean[c]
            std_out[c] = abs(gamma) * std[c]
    classified = max(int(stats.counts[:-1].sum()), 1)
    return ClassificationResult(energies, space, classes, names, matches, spectra_out, std_out, stats.counts,
                                stats.decided / classified, stats.unexplained / classified, stats.pixels,
                                table_cells, timings, stats.confusion, labels, qmax,
                                {"shifts_px": None if shifts is None else shifts.tolist(), "fans": fans})
