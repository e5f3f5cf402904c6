"""Agents and plans: the same as in the simulated session."""

from agent import spin_moment_agent, xas_agent, xps_agent  # noqa: F401
from plans import adaptive_compton, adaptive_fly_xas, adaptive_xas, adaptive_xps, flip_cycle, grid_xas  # noqa: F401
