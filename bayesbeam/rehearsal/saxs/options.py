"""The options of a SAXS rehearsal, their checks, and the agent they configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.words import plain
from bayesbeam.rehearsal.common import RehearsalOptions, positive, require, whole

if TYPE_CHECKING:  # pyFAI, sasmodels and the agent load when a rehearsal is built, not for --help
    from agent.saxs import SAXSAgent

STOPS = ("kde", "posterior")  # agent.saxs.saxs_agent's stop rules
DETECTORS = ("pilatus-300k", "pilatus-1m")  # agent.saxs.geometry.GEOMETRIES
QUANTITY_UNIT = {"radius": "nm", "pd": "", "scale": "", "background": "cm⁻¹"}


@dataclass(frozen=True)
class SAXSOptions(RehearsalOptions):
    """One adaptive SAXS rehearsal: frames of the simulated ``sample`` (a preset of ``sim_devices.saxs``, any
    case) on the ``detector`` (``DETECTORS``; the 300k by default, to keep the catalog small), each of
    ``exposure_s`` s, after one frame each of the empty cell, the standard and the buffer.

    ``stop``: ``kde`` (the pattern's density converged to the relative ``precision`` per resolution element) or
    ``posterior`` (the posterior std of ``quantity``, default ``radius`` (nm), reaches ``target_std``, its unit);
    either way after ``max_frames`` frames at most. ``q_range``: (q_min, q_max) nm⁻¹ (None: the detector's).
    ``mask``: a mask file (fabio-readable, non-zero = masked) added to the detector's own. Keyword-only:
    ``seed`` of the simulation and the agent (None: fresh frames, agent seed 0), ``time_scale`` (simulated
    seconds per wall-clock second).
    """

    sample: str = "silica-50nm"
    stop: str = "kde"
    quantity: str = "radius"
    target_std: float = 0.2
    precision: float = 0.01
    exposure_s: float = 1.0
    max_frames: int = 200
    detector: str = "pilatus-300k"
    q_range: tuple[float, float] | None = None
    mask: str | None = None

    def agent(self) -> SAXSAgent:
        from agent.core.words import one_of
        from agent.saxs import saxs_agent
        from agent.saxs.geometry import GEOMETRIES
        from sim_devices.saxs import saxs_sample

        saxs_sample(self.sample)
        require(self.stop in STOPS, f"unknown stop rule {plain(self.stop)}; choose from {', '.join(STOPS)}")
        require(positive(self.exposure_s), f"exposure must be > 0 s, got {plain(self.exposure_s)}")
        require(positive(self.target_std), f"target std must be > 0, got {plain(self.target_std)}")
        require(positive(self.precision), f"KDE precision must be > 0, got {plain(self.precision)}")
        require(whole(self.max_frames, 1), f"max_frames must be an integer >= 1, got {plain(self.max_frames)}")
        geometry = GEOMETRIES[one_of(self.detector, GEOMETRIES, "detector")]
        self.check_run_settings()
        return saxs_agent(stop=self.stop, quantity=self.quantity, target_std=self.target_std,
                          precision=self.precision, max_frames=self.max_frames, exposure_s=self.exposure_s,
                          q_range=list(self.q_range) if self.q_range is not None else None, mask=self.mask,
                          geometry=geometry.config(), seed=self.seed or 0)
