"""Agents and plans. The simulated ring has no monitor to suspend on: ``adaptive_compton(ring=ring)``
polls it before each count and discards a cycle counted while the beam was lost."""

from agent import spin_moment_agent, xas_agent, xps_agent  # noqa: F401
from plans import adaptive_compton, adaptive_fly_xas, adaptive_xas, adaptive_xps, flip_cycle, grid_xas  # noqa: F401
