"""Agents and plans: the same as in the simulated session."""

from agent import spin_moment_agent, xas_agent  # noqa: F401
from plans import adaptive_compton, adaptive_xas, flip_cycle, grid_xas  # noqa: F401
