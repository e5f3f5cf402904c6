"""The two passes of the classification over one tile of a stack: plain numerics, no scheduler.

A *source* is any picklable object with ``shape`` (H, W), ``energies_eV`` (k), ``passes`` (images summed per
energy) and ``read(y0, x0, h, w)`` → (images (k, h, w), flats (k, h, w), dark (h, w)) in ADU; ``ArraySource``
wraps arrays (numpy, h5py, dask, tiled), ``HDF5Source`` a file opened inside each task. Pass 1 counts a tile's
pixels into cells (``tile_cells``); pass 2 labels it (``tile_labels``) from a window one Potts halo wider.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.imaging.classify import (
    DECIDED_P,
    MIXTURE_GAIN,
    class_loglik,
    pair_chi2,
    softmax,
    unexplained_threshold,
)
from agent.imaging.noise import NoiseModel, absorbance, absorbance_variance
from agent.imaging.partition import CellTable, SpectralSpace, cell_keys
from agent.imaging.psf import WIENER_LAMBDA, deconvolved_labels, psf_radius
from agent.imaging.spatial import potts_meanfield

UNCLASSIFIED = -1  # label of pixels without an absorption edge (t̂ below the space's t_min) or dead


def _np(x) -> np.ndarray:
    return np.asarray(x.compute() if hasattr(x, "compute") else x)


@dataclass
class ArraySource:
    """A stack in arrays: ``images`` (k, H, W) ADU summed over ``passes``, ``flats`` (k, H, W) mean flats,
    ``dark`` (H, W) mean dark; any array that slices (numpy, h5py, dask, a tiled array client)."""

    images: object
    flats: object
    dark: object
    energies_eV: np.ndarray
    passes: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    def read(self, y0: int, x0: int, h: int, w: int):
        sl = (slice(y0, y0 + h), slice(x0, x0 + w))
        return (_np(self.images[(slice(None), *sl)]).astype(np.float32),
                _np(self.flats[(slice(None), *sl)]).astype(np.float32), _np(self.dark[sl]).astype(np.float32))


@dataclass
class HDF5Source:
    """A stack in an HDF5/NeXus file: datasets ``images`` (k, H, W), ``flats`` (k, H, W), ``dark`` (H, W),
    ``energy`` (k, eV) under ``group``; attribute ``passes`` (default 1). Opened read-only in each read, so the
    source pickles to Dask workers."""

    path: str
    group: str = "/entry/data"

    def _meta(self):
        import h5py

        with h5py.File(self.path, "r") as f:
            g = f[self.group]
            return tuple(g["images"].shape[1:]), np.asarray(g["energy"][()], float), int(g.attrs.get("passes", 1))

    @property
    def shape(self) -> tuple[int, int]:
        return self._meta()[0]

    @property
    def energies_eV(self) -> np.ndarray:
        return self._meta()[1]

    @property
    def passes(self) -> int:
        return self._meta()[2]

    def read(self, y0: int, x0: int, h: int, w: int):
        import h5py

        with h5py.File(self.path, "r") as f:
            g = f[self.group]
            sl = (slice(y0, y0 + h), slice(x0, x0 + w))
            return (g["images"][(slice(None), *sl)].astype(np.float32),
                    g["flats"][(slice(None), *sl)].astype(np.float32), g["dark"][sl].astype(np.float32))


def windows(shape: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of the tiles covering an image of ``shape``, row by row."""
    hh, ww = shape
    return [(y, x, min(tile, hh - y), min(tile, ww - x)) for y in range(0, hh, tile) for x in range(0, ww, tile)]


def _absorbance(source, noise: NoiseModel, y0, x0, h, w):
    images, flats, dark = source.read(y0, x0, h, w)
    p = source.passes
    factor = getattr(source, "image_variance_factor", None)
    return absorbance(images, flats, dark, p), absorbance_variance(images, flats, dark, noise, p, factor)


def tile_cells(source, noise: NoiseModel, space: SpectralSpace, cell: float, window) -> CellTable:
    """Pass 1 over one tile: its occupied cells (pixels with an edge only)."""
    a, v = _absorbance(source, noise, *window)
    k = a.shape[0]
    a = a.reshape(k, -1).astype(np.float64)
    z, t = space.z(a)
    ok = (t > space.t_min) & (v.reshape(k, -1).max(axis=0) < 1e5)
    z = z[:, ok]
    return CellTable.of(cell_keys(space.whiten @ z, cell), z)


@dataclass
class TileStats:
    """Pass-2 sums of tiles: pixels per label (C classes then unclassified), decided pixels, unexplained ones
    (by no class and no two-class mixture), and
    per class the sums of the pixels' normalised spectra (A − b̂)/t̂ and their squares (C, k); ``residual``: the
    cells of the pixels no host class nor two-host mixture explains (where a class the partition missed shows up);
    ``confusion`` (C + 1, n_truth) against a truth map when one is given."""

    counts: np.ndarray
    decided: int
    unexplained: int
    s1: np.ndarray
    s2: np.ndarray
    residual: CellTable
    confusion: np.ndarray | None = None
    pixels: int = 0

    def __add__(self, other: TileStats) -> TileStats:
        conf = None if self.confusion is None else self.confusion + other.confusion
        return TileStats(self.counts + other.counts, self.decided + other.decided,
                         self.unexplained + other.unexplained, self.s1 + other.s1, self.s2 + other.s2,
                         CellTable.merge([self.residual, other.residual]), conf, self.pixels + other.pixels)


def tile_labels(source, noise: NoiseModel, space: SpectralSpace, cell: float, spectra: np.ndarray,
                log_prior: np.ndarray, beta: float, iterations: int, window, truth=None, n_truth: int = 0,
                keep: bool = False, hosts: np.ndarray | None = None, psf_sigma_px: float | None = None,
                psf_lambda: float = WIENER_LAMBDA):
    """Pass 2 over one tile: (TileStats, labels (h, w) int8 or None, max posterior (h, w) float32 or None).
    The likelihoods are computed on the window grown by ``iterations`` pixels (clipped to the image) so the
    Potts sweeps see the tile's true neighbours; ``truth(y0, x0, h, w)`` → int labels for the confusion. The
    residual table holds the pixels that no class of ``hosts`` (indices; default all), alone or mixed with one
    other, explains under the pixel's own noise: where a phase the library lacks shows up. ``psf_sigma_px``
    (the detector's measured Gaussian PSF σ, px; None: per-pixel labels) relabels the pixels within the PSF
    radius r of a class boundary by the largest of their class amounts deconvolved with that PSF
    (``psf.deconvolved_labels``, Wiener ``psf_lambda``); the window then grows by max(3r, r + ``iterations``)."""
    y0, x0, h, w = window
    hh, ww = source.shape
    g = int(iterations)
    sigma = float(psf_sigma_px or 0.0)
    r = psf_radius(sigma)
    grow = max(g + r, 3 * r) if r else g
    wy0, wx0 = max(y0 - grow, 0), max(x0 - grow, 0)
    wy1, wx1 = min(y0 + h + grow, hh), min(x0 + w + grow, ww)
    a, v = _absorbance(source, noise, wy0, wx0, wy1 - wy0, wx1 - wx0)
    k, gh, gw = a.shape
    af, vf = a.reshape(k, -1).astype(np.float64), v.reshape(k, -1).astype(np.float64)
    logp, x2, t = class_loglik(af, vf, spectra, log_prior, space.background)
    c = len(spectra)
    q = potts_meanfield(logp.reshape(c, gh, gw), beta, g) if g else softmax(logp).reshape(c, gh, gw)
    # the base labels on the tile grown by r (clipped to the image): a tile pixel's boundary test needs them
    ey0, ex0 = max(y0 - r, 0), max(x0 - r, 0)
    eh, ew = min(y0 + h + r, hh) - ey0, min(x0 + w + r, ww) - ex0
    ext = np.zeros((gh, gw), bool)
    ext[ey0 - wy0:ey0 - wy0 + eh, ex0 - wx0:ex0 - wx0 + ew] = True
    ext = ext.ravel()
    qe = q.reshape(c, -1)[:, ext]
    label = qe.argmax(axis=0)
    t_best = np.take_along_axis(t[:, ext], label.reshape(1, -1), 0)[0]
    dead = vf[:, ext].max(axis=0) >= 1e5
    has_edge = (t_best > space.t_min) & ~dead
    x2min = np.take_along_axis(x2[:, ext], label.reshape(1, -1), 0)[0]
    label = np.where(has_edge, label, UNCLASSIFIED)
    odd = (x2min > unexplained_threshold(k)) & has_edge
    if odd.any() and c > 1:  # a two-class mixture (grain boundaries, grains below the PSF): labelled by its
        cand = np.flatnonzero(odd)  # dominant class where it fits clearly better, and then not unexplained
        mix, dominant = pair_chi2(af[:, ext][:, cand], vf[:, ext][:, cand], spectra, space.background)
        use = mix + MIXTURE_GAIN < x2min[cand]
        label[cand[use]] = dominant[use]
        odd[cand[mix <= unexplained_threshold(k - 1)]] = False
    label = label.reshape(eh, ew)
    if r:
        label = deconvolved_labels(label, a, v, spectra, sigma, space.background, psf_lambda,
                                   (ey0 - wy0, ex0 - wx0))
    cy, cx = y0 - ey0, x0 - ex0
    crop = (slice(cy, cy + h), slice(cx, cx + w))
    label = label[crop]
    qmax = qe.max(axis=0).reshape(eh, ew)[crop]
    has_edge = has_edge.reshape(eh, ew)[crop].ravel()
    odd = odd.reshape(eh, ew)[crop].ravel()
    inner = np.zeros((gh, gw), bool)
    inner[y0 - wy0:y0 - wy0 + h, x0 - wx0:x0 - wx0 + w] = True
    inner = inner.ravel()
    lab = label.ravel()
    counts = np.bincount(np.where(lab >= 0, lab, c), minlength=c + 1)
    decided = int(((qmax.ravel() >= DECIDED_P) & has_edge).sum())
    hosts = np.arange(c) if hosts is None else np.asarray(hosts, int)
    x2h = x2[hosts][:, inner].min(axis=0) if len(hosts) else np.full(h * w, np.inf)
    res_px = np.flatnonzero((x2h > unexplained_threshold(k)) & has_edge)
    if len(res_px) and len(hosts) > 1:  # a mixture of two hosts (a grain boundary) is explained
        mix_h, _ = pair_chi2(af[:, inner][:, res_px], vf[:, inner][:, res_px], spectra[hosts], space.background)
        res_px = res_px[mix_h > unexplained_threshold(k - 1)]
    z_res = space.z(af[:, inner][:, res_px])[0]
    residual = CellTable.of(cell_keys(space.whiten @ z_res, cell), z_res)
    unexplained = int(odd.sum())
    # each labelled pixel's spectrum normalised by its own class fit: b̂ and t̂ of A = b + t·m_c
    ai = af[:, inner]
    sel = lab >= 0
    s1 = np.zeros((c, k))
    s2 = np.zeros((c, k))
    if sel.any():
        li = lab[sel]
        m = spectra[li].T  # (k, n)
        wi = 1.0 / vf[:, inner][:, sel]
        x = ai[:, sel]
        bg = space.background[:, None]
        s0, sm, smm = (wi * bg * bg).sum(0), (wi * bg * m).sum(0), (wi * m * m).sum(0)
        sy, smy = (wi * bg * x).sum(0), (wi * m * x).sum(0)
        det = s0 * smm - sm * sm
        tt = (s0 * smy - sm * sy) / det
        bb = (smm * sy - sm * smy) / det
        norm = (x - bb * bg) / tt
        for d in range(k):
            s1[:, d] = np.bincount(li, norm[d], c)
            s2[:, d] = np.bincount(li, norm[d] ** 2, c)
    conf = None
    if truth is not None:
        tl = np.asarray(truth(y0, x0, h, w)).ravel().astype(np.int64)
        conf = np.bincount(np.where(lab >= 0, lab, c) * n_truth + tl,
                           minlength=(c + 1) * n_truth).reshape(c + 1, n_truth).astype(np.int64)
    stats = TileStats(counts.astype(np.int64), decided, unexplained, s1, s2, residual, conf, h * w)
    if keep:
        return stats, label.astype(np.int8), qmax.astype(np.float32)
    return stats, None, None
