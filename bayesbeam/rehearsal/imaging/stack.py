"""A stack in the HDF5/NeXus layout ``agent.imaging.HDF5Source`` reads, and its noise model.

``/entry/data``: ``images`` (k, H, W) float32 ADU summed over the passes, ``flats`` (k, H, W) the mean flat per
energy, ``dark`` (H, W) the mean dark, ``energy`` (k, eV); attributes ``passes``, ``n_flat``, ``n_dark``; and, for
the photon-transfer gain estimate (``agent.imaging.estimate_gain``), ``flat_pair`` (2, H, W) two single flats of
the first energy and ``dark_pair`` (2, H, W) two single darks (or attributes ``gain``, ``read_var``).
``/entry/truth`` (simulated stacks only): ``label`` (H, W) int8, attribute ``names`` (JSON list: the phases of the
labels) and ``minority`` (its index, −1: none). ``write_simulated_stack`` writes a simulated sample tile by tile
(a 4×10⁸-pixel stack never has to fit in memory)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

GROUP, TRUTH = "/entry/data", "/entry/truth"


def side_of(pixels: float) -> int:
    """The side (px) of the square image of about ``pixels`` pixels (at least 16)."""
    return max(16, int(round(math.sqrt(float(pixels)))))


def write_simulated_stack(path: str | Path, *, pixels: float = 1e6, minority_fraction: float = 0.005, seed: int = 0,
                          n0: float = 1e4, passes: int = 1, energies=None, target_error: float | None = None,
                          tile: int = 512) -> dict:
    """Write the simulated default sample (``sim_devices.imaging.sample.default_sample``: three majority Fe phases,
    their library nearest neighbour hidden at ``minority_fraction``) measured at ``energies`` (eV; None: designed
    on the library without the minority, ``plans.imaging.library.design_run``) with ``passes`` images per energy
    of ``n0`` photons per pixel, the detector's default flats and darks. Returns what was written (JSON values)."""
    import h5py

    from plans.imaging.library import TARGET_ERROR, design_run, imaging_library
    from sim_devices.imaging.detector import DetectorModel, TileFields
    from sim_devices.imaging.sample import default_sample, sample_tile

    sample = default_sample(seed=seed, minority_fraction=minority_fraction)
    det = DetectorModel(n0=float(n0))
    if energies is None:
        lib = imaging_library(exclude=[sample.minority] if sample.minority else [])
        energies = design_run(lib, n0=n0, n_flat=det.n_flat, target_error=target_error or TARGET_ERROR).energies_eV
    energies = np.sort(np.asarray(energies, float))
    side = side_of(pixels)
    k = len(energies)
    with h5py.File(path, "w") as f:
        g = f.require_group(GROUP)
        g.attrs["NX_class"] = "NXdata"
        chunks = (1, min(tile, side), min(tile, side))
        ds = {name: g.create_dataset(name, (k, side, side), np.float32, chunks=chunks) for name in ("images", "flats")}
        dark = g.create_dataset("dark", (side, side), np.float32, chunks=chunks[1:])
        pairs = {name: g.create_dataset(name, (2, side, side), np.float32, chunks=chunks)
                 for name in ("flat_pair", "dark_pair")}
        g.create_dataset("energy", data=energies).attrs["units"] = "eV"
        g.attrs.update(passes=int(passes), n_flat=det.n_flat * int(passes), n_dark=det.n_dark)  # flats of every pass
        t = f.require_group(TRUTH)
        label = t.create_dataset("label", (side, side), np.int8, chunks=chunks[1:])
        t.attrs["names"] = json.dumps(list(sample.names))
        t.attrs["minority"] = len(sample.phases) if sample.minority else -1
        t.attrs["sample"] = json.dumps({"phases": list(sample.phases), "minority": sample.minority,
                                        "minority_fraction": sample.minority_fraction, "seed": sample.seed})
        runs = range(int(passes))
        for y0 in range(0, side, tile):
            for x0 in range(0, side, tile):
                h, w = min(tile, side - y0), min(tile, side - x0)
                fields = TileFields(sample, det, y0, x0, h, w, seed)
                sl = (slice(y0, y0 + h), slice(x0, x0 + w))
                for i, e in enumerate(energies):
                    ds["images"][(i, *sl)] = fields.image(float(e), i, runs)
                    ds["flats"][(i, *sl)] = fields.flat(i, runs)
                dark[sl] = fields.dark_frame()
                for j in range(2):  # single frames of other noise draws than the averaged ones
                    pairs["flat_pair"][(j, *sl)] = fields.flat(0, range(1000 + j, 1001 + j), n_avg=1)
                    pairs["dark_pair"][(j, *sl)] = fields.dark_frame(1000 + j, n_avg=1)
                label[sl] = sample_tile(sample, y0, x0, h, w)["label"]
    return {"path": str(path), "pixels": side * side, "side_px": side, "energies_eV": energies.tolist(),
            "passes": int(passes), "n0": float(n0), "seed": int(seed), "phases": list(sample.phases),
            "minority": sample.minority, "minority_fraction": float(minority_fraction)}


def stack_noise(path: str | Path, group: str = GROUP):
    """The ``agent.imaging.NoiseModel`` of the stack at ``path``: the gain and read variance from its
    ``flat_pair`` and ``dark_pair`` (photon transfer), else its ``gain`` and ``read_var`` attributes; the frame
    counts from ``n_flat`` and ``n_dark`` (default 10). ``ValueError`` (one line) if it states neither."""
    import h5py

    from agent.imaging import NoiseModel, estimate_gain

    with h5py.File(path, "r") as f:
        g = f[group]
        n_flat, n_dark = int(g.attrs.get("n_flat", 10)), int(g.attrs.get("n_dark", 10))
        if "flat_pair" in g and "dark_pair" in g:
            fp, dp = g["flat_pair"][()], g["dark_pair"][()]
            gain, read_var = estimate_gain(fp[0], fp[1], dp[0], dp[1])
        elif "gain" in g.attrs and "read_var" in g.attrs:
            gain, read_var = float(g.attrs["gain"]), float(g.attrs["read_var"])
        else:
            raise ValueError(f"{path}: {group} has neither flat_pair and dark_pair (two single flats and darks) nor "
                             "gain and read_var attributes: no noise model")
    return NoiseModel(gain, read_var, n_flat, n_dark)


def stack_truth(path: str | Path):
    """``(truth(y0, x0, h, w) -> labels, names, minority index or None)`` of a simulated stack; None if it has no
    ``/entry/truth``."""
    import h5py

    with h5py.File(path, "r") as f:
        if TRUTH not in f:
            return None
        t = f[TRUTH]
        names, minority = json.loads(t.attrs["names"]), int(t.attrs["minority"])
    return _Truth(str(path)), names, (minority if minority >= 0 else None)


class _Truth:
    """Labels of a tile read from the file (picklable: a Dask worker opens the file itself)."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return f[TRUTH]["label"][y0:y0 + h, x0:x0 + w]
