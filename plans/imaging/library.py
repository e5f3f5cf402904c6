"""The phases an imaging run may name and the imaging energies designed for them: plain values in, arrays out,
so a queued plan, the rehearsal and ``bayesbeam classify`` resolve a library and a design the same way."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Default of the design's target: the union bound on the per-pixel between-group misclassification.
TARGET_ERROR = 0.01
#: Most energies a design may choose (each is a full image per pass).
K_MAX = 12


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence):
        out = [str(v).strip() for v in value]
        if not all(out):
            raise ValueError(f"{what}: empty phase name in {list(value)!r}")
        return out
    raise ValueError(f"{what} must be a list of Fe K-edge standard names, got {value!r}")


def imaging_library(library: Any = None, exclude: Any = ()):
    """The ``agent.xas.prior.SpectraLibrary`` of the phases the design and the classifier may use: the names in
    ``library`` (a list, or one comma-separated string; any case; None: all 61 Fe K-edge standards) minus those in
    ``exclude``. ``ValueError`` (one line, close names suggested) for an unknown name or fewer than 2 phases."""
    from agent.xas.prior import SpectraLibrary

    full = SpectraLibrary.from_csv()
    wanted = [full.canonical(n) for n in _names(library, "library")] or list(full.names)
    dropped = {full.canonical(n) for n in _names(exclude, "exclude")}
    keep = [n for n in dict.fromkeys(wanted) if n not in dropped]
    if len(keep) < 2:
        raise ValueError(f"the imaging library needs at least 2 phases, got {keep} ({len(dropped)} excluded)")
    return full.only(keep)


@dataclass(frozen=True)
class ImagingDesign:
    """Energies (eV, sorted) and ``passes`` (min passes the stop rule waits for) of an imaging run, the design's
    per-pixel misclassification bound ``expected_error`` of one pass, and the
    ``design`` (``agent.imaging.design.EnergyDesign.to_dict()``; None when the energies were given)."""

    energies_eV: np.ndarray
    passes: int
    expected_error: float
    design: dict | None

    def to_dict(self) -> dict:
        return {"energies_eV": [float(e) for e in self.energies_eV], "passes": int(self.passes),
                "expected_error": float(self.expected_error), "design": self.design}


def design_run(lib, *, energies: Sequence[float] | None = None, n0: float = 1e4, n_flat: int = 10,
               target_error: float = TARGET_ERROR, k_max: int = K_MAX, max_passes: int = 50) -> ImagingDesign:
    """The energies of ``lib``'s phases at ``n0`` photons per pixel per image: ``energies`` (eV) as given, else
    ``agent.imaging.design.design_energies`` (at most ``k_max``, greedy to ``target_error``); and the passes of
    those energies whose bound reaches ``target_error`` with ``n_flat`` flats taken once per energy
    (``passes_for_error``; ``max_passes`` when none up to it does)."""
    from agent.imaging.design import design_energies, error_bound, passes_for_error

    spectra, grid = lib.spectra.T, lib.energy
    if not (np.isfinite(n0) and n0 > 0):
        raise ValueError(f"n0 must be > 0 photons per pixel per image, got {n0!r}")
    if not 0 < target_error < 1:
        raise ValueError(f"target_error must be in (0, 1), got {target_error!r}")
    design = None
    groups = None
    if energies is None:
        d = design_energies(spectra, grid, n0=n0, n_flat=n_flat, k_max=k_max, target_error=target_error,
                            names=lib.names)
        e, design, groups = d.energies_eV, d.to_dict(), d.groups
    else:
        e = np.sort(np.asarray([float(x) for x in energies], float))
        if e.size < 3 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError(f"imaging needs at least 3 distinct finite energies (eV), got {list(energies)}")
        if e[0] < grid[0] or e[-1] > grid[-1]:
            raise ValueError(f"energies {e[0]:.2f}-{e[-1]:.2f} eV outside the library range "
                             f"{grid[0]:.2f}-{grid[-1]:.2f} eV")
    passes = passes_for_error(spectra, grid, e, target_error=target_error, n0=n0, n_flat=n_flat, groups=groups,
                              names=lib.names, flats_each_pass=False, max_passes=max_passes)
    passes = int(max_passes if passes is None else min(passes, max_passes))
    bound = design["expected_error"] if design else error_bound(spectra, grid, e, n0=n0, n_flat=n_flat,
                                                                 names=lib.names)
    return ImagingDesign(e, passes, float(bound), design)
