"""Agents and plans. The simulated ring has no monitor to suspend on: ``adaptive_compton(ring=ring)``
polls it before each count and discards a cycle counted while the beam was lost."""

from agent.compton.agent import spin_moment_agent  # noqa: F401
from agent.xas.agent import xas_agent  # noqa: F401
from plans.compton.flip_cycles import adaptive_compton, flip_cycle  # noqa: F401
from plans.xas.energy_points import adaptive_xas, grid_xas  # noqa: F401
