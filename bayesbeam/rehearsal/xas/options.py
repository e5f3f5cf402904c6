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

PRIORS = ("library", "reference")  # agent.xas.prior.library_prior, reference_prior
TARGET_LABEL = {"absorbance": "μt / edge step", "mu": "normalised μ"}  # agent.xas.design.TARGETS


@dataclass(frozen=True)
class XASOptions(RehearsalOptions):
    """One adaptive XAS rehearsal of an Fe K-edge standard.

    ``sample``: the standard measured, in any case (its own spectrum is left out of the prior). Stop when the
    predicted RMSE of the ``target`` spectrum (``absorbance``: μt / edge step; ``mu``: normalised μ)
    reaches ``target_rmse`` (edge-step units), or after ``max_points`` points. ``prior``: ``library``
    or ``reference`` construction. Keyword-only: ``seed`` of the simulation (None: fresh),
    ``time_scale`` (simulated seconds per wall-clock second).
    """

    sample: str = "Fe3O4"
    target_rmse: float = 0.008
    target: str = "absorbance"
    prior: str = "library"
    max_points: int = 2000

    def agent(self) -> XASAgent:
        require(whole(self.max_points, 1), f"max_points must be an integer >= 1, got {plain(self.max_points)}")
        self.check_run_settings()
        return make_agent(self.sample, self.target_rmse, self.prior, self.max_points, target=self.target)


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
