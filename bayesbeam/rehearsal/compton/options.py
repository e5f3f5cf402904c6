"""The options of a magnetic-Compton rehearsal, their checks, and the agent they configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.words import plain
from bayesbeam.rehearsal.common import RehearsalOptions, positive, require

if TYPE_CHECKING:  # ophyd and the agent load when a rehearsal is built, not for --help
    from agent.compton.agent import SpinMomentAgent
    from sim_devices.compton.samples import ComptonSample

CONVENTIONAL_CYCLES = 136  # the seed's fixed Fe measurement


@dataclass(frozen=True)
class ComptonOptions(RehearsalOptions):
    """One magnetic-Compton rehearsal.

    ``sample``: preset name (fe, ni, co, or one in ``$BAYESBEAM_PRESETS``; sim_devices/compton/presets). Stop
    when the posterior std of ``quantity`` (``mu_s`` spin moment, or an orbital amplitude ``a3d``, ``a4s`` …)
    reaches ``target_std`` (μB), after ``max_cycles`` valid ``+ − − +`` cycles, or, with ``plateau=(k, rel)``,
    when that std improved by less than the fraction ``rel`` over ``k`` cycles. ``count_time_s``:
    count time per spectrum (s of beamtime). ``seed`` (keyword-only): of the simulation (None: fresh;
    for repeats, 0). ``time_scale`` (keyword-only): simulated seconds per wall-clock second.
    """

    sample: str = "fe"
    target_std: float = 0.01
    quantity: str = "mu_s"
    max_cycles: int = CONVENTIONAL_CYCLES
    count_time_s: float = 60.0
    plateau: tuple[int, float] | None = None

    def agent(self) -> SpinMomentAgent:
        from sim_devices.compton.samples import compton_sample

        require(positive(self.count_time_s), f"count time must be positive, got {plain(self.count_time_s)} s")
        self.check_run_settings()
        return make_agent(compton_sample(self.sample), self.target_std, self.quantity, self.max_cycles,
                          self.plateau)


def make_agent(sample: ComptonSample, target_std: float, quantity: str = "mu_s",
               max_cycles: int = CONVENTIONAL_CYCLES, plateau=None) -> SpinMomentAgent:
    """The agent a user would configure for ``sample``: target std (μB) of ``quantity``, budget of
    ``max_cycles`` cycles, optional ``plateau=(k, rel)``; ``ValueError`` on bad input."""
    from agent.compton.agent import spin_moment_agent

    return spin_moment_agent(target_std, quantity=quantity, max_cycles=max_cycles, plateau=plateau,
                             element=sample.element, orbitals=sample.orbitals)
