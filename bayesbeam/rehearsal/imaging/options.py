"""The options of an XAS-imaging rehearsal and their checks (one line each, before anything moves)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.core.words import plain
from bayesbeam.rehearsal.common import RehearsalOptions, positive, require, whole


def parse_energies(text) -> list[float] | None:
    """``"auto"`` (or None) → None (designed); else a comma-separated list of energies (eV)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    if isinstance(text, str):
        try:
            return [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"energies must be auto or a comma-separated list of eV, got {text!r}") from None
    return [float(x) for x in text]


@dataclass(frozen=True)
class ImagingOptions(RehearsalOptions):
    """One adaptive XAS-imaging rehearsal on the simulated full-field end station: a square field of about
    ``pixels`` pixels of the default sample (``sim_devices.imaging.sample.default_sample``: LiFePO4, FePO4, Fe3O4
    and, at ``minority`` of the pixels, their library nearest neighbour, excluded from the library the design and
    the classifier use), ``n0`` photons per pixel per image, ``energies`` (eV; None: designed), ``max_passes``,
    ``target_error`` (the design's per-pixel bound), ``decided`` (the stop rule's fraction), ``library`` (the
    phases that may name classes; None: all 61 standards, minus the minority), ``scheduler`` of the
    classification. Keyword-only: ``seed`` (sample and noise; None: 0) and ``time_scale``."""

    pixels: float = 1e6
    minority: float = 0.005
    n0: float = 1e4
    energies: tuple[float, ...] | None = None
    max_passes: int = 10
    target_error: float = 0.01
    decided: float = 0.99
    library: tuple[str, ...] | None = None
    scheduler: str = "threads"
    n_flat: int = 10
    n_dark: int = 10
    time_scale: float = field(default=float("inf"), kw_only=True)

    def validate(self) -> None:
        """Every check of the options; the library names and energies included (nothing moves)."""
        from plans.imaging.library import design_run, imaging_library

        require(positive(self.pixels) and self.pixels >= 256, f"pixels must be >= 256, got {plain(self.pixels)}")
        require(isinstance(self.minority, (int, float)) and 0 <= self.minority < 0.05,
                f"minority must be a fraction in [0, 0.05), got {plain(self.minority)}")
        require(positive(self.n0), f"n0 must be > 0 photons per pixel per image, got {plain(self.n0)}")
        require(whole(self.max_passes, 1), f"max_passes must be an integer >= 1, got {plain(self.max_passes)}")
        require(whole(self.n_flat, 2) and whole(self.n_dark, 2), "n_flat and n_dark must be integers >= 2")
        require(isinstance(self.decided, (int, float)) and 0 < self.decided <= 1,
                f"decided must be a fraction in (0, 1], got {plain(self.decided)}")
        self.check_run_settings()
        sample = self.sample()
        lib = imaging_library(list(self.library) if self.library else None,
                              [sample.minority] if sample.minority else [])
        design_run(lib, energies=list(self.energies) if self.energies else None, n0=self.n0, n_flat=self.n_flat,
                   target_error=self.target_error, max_passes=self.max_passes)
        from sim_devices.imaging.detector import spectra_library

        if self.energies:
            e = spectra_library().energy
            require(min(self.energies) >= e[0] and max(self.energies) <= e[-1],
                    f"energies {min(self.energies):.2f}-{max(self.energies):.2f} eV outside the monochromator range "
                    f"{e[0]:.2f}-{e[-1]:.2f} eV")

    def sample(self):
        """The simulated sample (the truth)."""
        from sim_devices.imaging.sample import default_sample

        return default_sample(seed=self.seed or 0, minority_fraction=float(self.minority))

    def agent(self):
        raise NotImplementedError("the imaging agent is built by the plan from the options' plain values")
