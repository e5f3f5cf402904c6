"""The XAS-imaging agent (issue 15): images at a designed handful of energies, pass after pass, until the
per-pixel classification is decided.

One *pass* is one image at each energy (the monochromator sweeps up, then down, to save travel); ``n_dark``
darks and ``n_flat`` flat fields per energy are taken before the first pass (two of each estimate the
detector's gain and read noise). After every complete pass the accumulated
stack is classified (``orchestration.classify_stack``: the noise-aware partition, the search among the pixels
no class explains, the per-pixel posteriors with the Potts prior), and ``report()`` says how many pixels are
decided (posterior class probability ≥ ``classify.DECIDED_P``). ``ClassificationDecided`` stops the run when
that fraction reaches its target, but not before ``min_passes``: the dose the energy design says separates the
library's phases. A minority phase of 0.5 % can hide inside a 99 %-decided map, so the design's dose, not the
map alone, decides when an unknown phase would have been seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.protocol import BayesAgent
from agent.core.stopping import Budget, StopRule, _positive, any_of
from agent.core.words import plain
from agent.imaging.classify import DECIDED_P
from agent.imaging.noise import NoiseModel, estimate_gain
from agent.imaging.orchestration import ClassificationResult, classify_stack, executor_for
from agent.imaging.tiles import ArraySource

KINDS = ("dark", "flat", "image")


@dataclass(frozen=True)
class ClassificationDecided(StopRule):
    """Stop when at least ``fraction`` of the classified pixels have a posterior class probability ≥ 0.99,
    after at least ``min_passes`` passes."""

    fraction: float = 0.99
    min_passes: int = 1
    quantities = ("decided_fraction",)
    watching = "the classification-decided rule"

    def __post_init__(self):
        _positive("decided fraction", self.fraction)
        if self.fraction > 1:
            raise ValueError(f"decided fraction must be at most 1, got {plain(self.fraction)}")

    def check(self, history) -> str | None:
        if not history or not history[-1].get("classified", 0):
            return None
        f = history[-1]["decided_fraction"]
        if f >= self.fraction and history[-1]["passes"] >= self.min_passes:
            return (f"classification_decided: {100 * f:.2f} % of pixels at p >= {DECIDED_P} "
                    f"(target {100 * self.fraction:.4g} %) after {int(history[-1]['passes'])} passes")
        return None


class ImagingAgent(BayesAgent):
    """Ingests dark, flat and sample images (``{"kind", "energy", "image", "_id"}``, images in ADU) and
    classifies the stack after each complete pass. ``library`` (m, k) spectra at ``energies_eV`` of the phases
    the classifier may name (``library_names``); ``scheduler``: ``orchestration.executor_for``'s;
    ``psf_sigma_px``: the detector's measured Gaussian PSF σ (px) for the PSF-aware labelling (None: per pixel)."""

    quantities = ("decided_fraction",)

    def __init__(self, stop_rule: StopRule | None = None, energies_eV: Sequence[float] = (),
                 library: np.ndarray | None = None, library_names: Sequence[str] = (), n_flat: int = 10,
                 n_dark: int = 10,
                 tile: int = 512, beta: float = 1.0, iterations: int = 2, scheduler: str = "threads",
                 workers: int = 2, design: Mapping | None = None, checkpoint_path=None,
                 psf_sigma_px: float | None = None):
        energies = np.asarray(energies_eV, float)
        if energies.ndim != 1 or len(energies) < 3 or np.any(np.diff(np.sort(energies)) <= 0):
            raise ValueError(f"imaging needs at least 3 distinct energies, got {energies.tolist()}")
        if int(n_flat) < 2 or int(n_dark) < 2:
            raise ValueError(f"n_flat and n_dark must be at least 2 (two of each estimate the detector's gain and "
                             f"read noise), got {n_flat}, {n_dark}")
        super().__init__(stop_rule or ClassificationDecided(), checkpoint_path)
        self.energies = np.sort(energies)
        self.library = None if library is None else np.asarray(library, float)
        self.library_names = list(library_names)
        self.n_flat, self.n_dark, self.tile = int(n_flat), int(n_dark), int(tile)
        self.beta, self.iterations = float(beta), int(iterations)
        self.psf_sigma_px = None if psf_sigma_px is None else float(psf_sigma_px)
        self.scheduler, self.workers = scheduler, int(workers)
        self.design = dict(design or {})
        self._reset_data()

    def _reset_data(self) -> None:
        k = len(self.energies)
        self.darks: list[np.ndarray] = []
        self.flats: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.sums: np.ndarray | None = None
        self.images_per_energy = np.zeros(k, int)
        self.result: ClassificationResult | None = None
        self.noise: NoiseModel | None = None
        self.beamtime_s = 0.0
        self._next_id = 0

    # -- measurements ------------------------------------------------------------------------
    def _index(self, energy) -> int:
        j = int(np.argmin(np.abs(self.energies - float(energy))))
        if abs(self.energies[j] - float(energy)) > 0.05:
            raise ValueError(f"image at {plain(float(energy))} eV: not one of the agent's energies "
                             f"{self.energies.tolist()}")
        return j

    def _ingest_one(self, point: Mapping) -> None:
        kind = point.get("kind", "image")
        if kind not in KINDS:
            raise ValueError(f"unknown image kind {kind!r} (known: {', '.join(KINDS)})")
        img = np.asarray(point["image"], np.float64)
        if img.ndim != 2 or not np.all(np.isfinite(img)):
            raise ValueError(f"{kind} image must be a finite 2-D array, got shape {img.shape}")
        self.beamtime_s = max(self.beamtime_s, float(point.get("beamtime_s", 0.0)))
        if kind == "dark":
            self.darks.append(img)
            return
        j = self._index(point["energy"])
        if kind == "flat":
            self.flats[j].append(img)
            return
        if self.sums is None:
            self.sums = np.zeros((len(self.energies), *img.shape))
        self.sums[j] += img
        self.images_per_energy[j] += 1
        if self.images_per_energy.min() == self.images_per_energy.max():
            self._classify()

    def _ready(self) -> bool:
        return len(self.darks) >= self.n_dark and all(len(f) >= self.n_flat for f in self.flats)

    def _classify(self) -> None:
        if not self._ready():
            raise ValueError("a pass of images arrived before the dark and the flat fields")
        flats = np.stack([np.mean(f, axis=0) for f in self.flats])
        dark = np.mean(self.darks, axis=0)
        if self.noise is None:
            g, r = estimate_gain(self.flats[0][0], self.flats[0][1], self.darks[0], self.darks[1])
            self.noise = NoiseModel(g, r, self.n_flat, len(self.darks))
        source = ArraySource(self.sums, flats, dark, self.energies, int(self.images_per_energy[0]))
        with executor_for(self.scheduler, self.workers) as ex:
            self.result = classify_stack(source, self.noise, ex, library=self.library,
                                         library_names=self.library_names, tile=self.tile, beta=self.beta,
                                         iterations=self.iterations, keep_labels=True,
                                         psf_sigma_px=self.psf_sigma_px)

    # -- design --------------------------------------------------------------------------------
    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """The next ``num_points`` measurements: ``n_dark`` darks, then ``n_flat`` flats per energy, then passes
        of sample images (up in energy on even passes, down on odd ones)."""
        out: list[dict[str, Any]] = []
        darks = len(self.darks)
        flats = [len(f) for f in self.flats]
        counts = self.images_per_energy.copy()
        while len(out) < num_points:
            if darks < self.n_dark:
                out.append({"kind": "dark"})
                darks += 1
            elif min(flats) < self.n_flat:
                j = int(np.argmin(flats))
                out.append({"kind": "flat", "energy": float(self.energies[j])})
                flats[j] += 1
            else:
                p = int(counts.min())
                order = range(len(self.energies)) if p % 2 == 0 else range(len(self.energies) - 1, -1, -1)
                j = next(i for i in order if counts[i] == p)
                out.append({"kind": "image", "energy": float(self.energies[j]), "pass": p})
                counts[j] += 1
            out[-1]["_id"] = self._next_id
            self._next_id += 1
        return out

    # -- results -------------------------------------------------------------------------------
    def posterior(self) -> dict[str, Any]:
        """The class map, the class spectra and fractions of the last classification (empty before it)."""
        if self.result is None:
            return {}
        r = self.result
        return {"labels": r.labels, "max_posterior": r.max_posterior, "names": r.names, "spectra": r.spectra,
                "spectra_std": r.spectra_std, "energies_eV": r.energies_eV, **r.summary()}

    def _summary(self) -> Mapping[str, Any]:
        r = self.result
        passes = int(self.images_per_energy.min())
        out = {"passes": passes, "images": int(self.images_per_energy.sum()),
               "points": int(self.images_per_energy.sum()), "beamtime_s": self.beamtime_s,
               "energies": len(self.energies), "classified": int(r is not None and passes > 0),
               "decided_fraction": float(r.decided_fraction) if r else 0.0,
               "unexplained_fraction": float(r.unexplained_fraction) if r else float("nan"),
               "n_classes": r.n_classes if r else 0,
               "smallest_class_fraction": float(min(r.counts[:-1]) / max(r.counts[:-1].sum(), 1)) if r else np.nan,
               "unknown_classes": sum(n.startswith("unknown") for n in r.names) if r else 0,
               "classify_wall_s": float(sum(r.timings.values())) if r else 0.0}
        return out

    def config(self) -> dict[str, Any]:
        return {"energies_eV": self.energies.tolist(), "library_names": self.library_names, "n_flat": self.n_flat,
                "n_dark": self.n_dark,
                "tile": self.tile, "beta": self.beta, "iterations": self.iterations, "design": self.design,
                "psf_sigma_px": self.psf_sigma_px}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"images_per_energy": self.images_per_energy}
        if self.sums is not None:
            arrays["sums"] = self.sums
        if self.darks:
            arrays["darks"] = np.stack(self.darks)
        for j, f in enumerate(self.flats):
            if f:
                arrays[f"flats_{j}"] = np.stack(f)
        return arrays, {"beamtime_s": self.beamtime_s, "next_id": self._next_id}

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self._reset_data()
        self.images_per_energy = np.asarray(arrays["images_per_energy"], int)
        self.sums = arrays.get("sums")
        self.darks = list(arrays["darks"]) if "darks" in arrays else []
        for j in range(len(self.energies)):
            if f"flats_{j}" in arrays:
                self.flats[j] = list(arrays[f"flats_{j}"])
        self.beamtime_s, self._next_id = float(meta["beamtime_s"]), int(meta["next_id"])
        if self.sums is not None and self.images_per_energy.min() > 0:
            self._classify()


def imaging_agent(energies_eV: Sequence[float], library: np.ndarray | None = None,
                  library_names: Sequence[str] = (), decided: float = 0.99, min_passes: int = 1,
                  max_passes: int = 50, **options) -> ImagingAgent:
    """An ``ImagingAgent`` that stops when ``decided`` of the pixels are decided (after ``min_passes``) or
    after ``max_passes``."""
    if not 1 <= int(min_passes) <= int(max_passes):
        raise ValueError(f"passes must satisfy 1 <= min_passes <= max_passes, got {min_passes}, {max_passes}")
    k = len(energies_eV)
    rule = any_of(ClassificationDecided(decided, int(min_passes)), Budget(points=int(max_passes) * k))
    return ImagingAgent(rule, energies_eV, library, library_names, **options)
