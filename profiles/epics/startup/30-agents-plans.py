"""Agents and plans: the same as in the simulated session."""

from agent.compton.agent import spin_moment_agent  # noqa: F401
from agent.xas.agent import xas_agent  # noqa: F401
from plans.compton.flip_cycles import adaptive_compton, flip_cycle  # noqa: F401
from plans.xas.energy_points import adaptive_xas, grid_xas  # noqa: F401
