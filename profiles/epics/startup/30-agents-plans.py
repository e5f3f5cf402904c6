"""Agents and plans: the same as in the simulated session."""

from agent.mcs_agent import spin_moment_agent  # noqa: F401
from agent.xas_agent import xas_agent  # noqa: F401
from plans.compton import adaptive_compton, flip_cycle  # noqa: F401
from plans.xas import adaptive_xas, grid_xas  # noqa: F401
