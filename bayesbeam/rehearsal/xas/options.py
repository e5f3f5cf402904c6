"""The options of an XAS rehearsal, their checks, and the agent they configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.words import plain
from bayesbeam.rehearsal.common import RehearsalOptions, require, whole

if TYPE_CHECKING:  # the agent loads when a rehearsal is built, not for --help
    from agent.xas.agent import XASAgent
    from agent.xas.design import MoveCost
    from agent.xas.prior import GaussianPrior, SpectraLibrary

PRIORS = ("library", "reference", "exafs")  # agent.xas.prior.PRIORS; exafs: SYNTHETIC range to 7660 eV
TARGET_LABEL = {"absorbance": "μt / edge step", "mu": "normalised μ"}  # agent.xas.design.TARGETS
MODES = ("transmission", "fluorescence")  # agent.xas.agent.MODES
QUANTITY_UNIT = {"spectrum": "edge-step units (RMSE)", "edge_position": "eV", "pre_edge_centroid": "eV",
                 "pre_edge_area": "eV x edge step", "fractions": "fraction", "valence": ""}  # agent.xas.quantities


@dataclass(frozen=True)
class XASOptions(RehearsalOptions):
    """One adaptive XAS rehearsal of an Fe K-edge standard.

    ``sample``: the standard measured, in any case (its own spectrum is left out of the prior and of the
    valence predictor). ``quantity`` (``QUANTITY_UNIT``; ``agent.xas.quantities``): what the design and the
    stop aim at; ``spectrum`` (the default): stop when the predicted RMSE of the ``target`` spectrum
    (``absorbance``: μt / edge step; ``mu``: normalised μ) reaches ``target_rmse`` (edge-step units);
    any other: stop when its posterior std reaches ``target_std`` (its unit); ``components``: the
    standards of ``fractions`` (comma-separated). Or after ``max_points`` points. ``realistic``: the
    simulated truth of ``sim_devices.xas.endstation.REALISTIC_TRUTH`` (I0(E), glitches, harmonic,
    background, a monochromator offset with drift, lash) with the reference foil measured alongside.
    ``prior``: ``library``, ``reference`` or ``exafs`` (the low-rank prior over the SYNTHETIC EXAFS range).
    ``mode``: ``transmission``, or ``fluorescence``: the standard as a dilute sample (1 wt% Fe in cellulose,
    ``sim_devices.xas.endstation.DILUTE_SAMPLE``) seen by a fluorescence detector, analysed from If/I0.
    Keyword-only: ``seed`` of the simulation (None: fresh),
    ``time_scale`` (simulated seconds per wall-clock second).
    """

    sample: str = "Fe3O4"
    target_rmse: float = 0.008
    target: str = "absorbance"
    prior: str = "library"
    max_points: int = 2000
    quantity: str = "spectrum"
    target_std: float | None = None
    components: str | None = None
    realistic: bool = False
    mode: str = "transmission"

    def agent(self) -> XASAgent:
        require(whole(self.max_points, 1), f"max_points must be an integer >= 1, got {plain(self.max_points)}")
        self.check_run_settings()
        spectrum = self.quantity in (None, "spectrum")
        require(spectrum or self.target_std is not None,
                f"the {self.quantity} quantity needs a target std (--target-std, "
                f"in {QUANTITY_UNIT.get(self.quantity)})")
        require(self.mode in MODES, f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        rmse = (self.target_std if self.target_std is not None else self.target_rmse) if spectrum else None
        practice = {}
        if self.realistic:  # the beamline's anti-backlash approach, glitch map and harmonic prior
            from sim_devices.xas.endstation import realistic_practice

            practice = realistic_practice(self.mode)
        return make_agent(self.sample, rmse, self.prior, self.max_points, target=self.target,
                          quantity=None if spectrum else self.quantity,
                          target_std=None if spectrum else self.target_std, components=self.components, mode=self.mode,
                          **practice)


def build_prior(name: str, library: SpectraLibrary) -> GaussianPrior:
    """The ``name`` prior (one of ``PRIORS``) built from ``library``; ``ValueError`` if unknown."""
    from agent.xas.prior import PRIORS as BUILDERS

    require(name in PRIORS, f"unknown prior {name!r}; choose from {', '.join(PRIORS)}")
    return BUILDERS[name](library)


def make_agent(sample: str, target_rmse: float, prior: str = "library", max_points: int = 2000,
               cost: MoveCost | None = None, **kwargs) -> XASAgent:
    """Agent whose prior excludes ``sample`` (any case; leave-one-out); target RMSE in edge-step units;
    ``ValueError`` on bad input."""
    from agent.core.words import one_of
    from agent.xas.agent import xas_agent
    from agent.xas.design import MoveCost
    from agent.xas.prior import SpectraLibrary

    require(prior in PRIORS, f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
    sample = one_of(sample, SpectraLibrary.from_csv().names, "sample")  # any case: fe3o4 is Fe3O4
    return xas_agent(prior, target_rmse=target_rmse, exclude=sample, max_points=max_points, cost=cost or MoveCost(),
                     **kwargs)
