"""Agents and plans. The simulated ring has no monitor to suspend on: ``adaptive_compton(ring=ring)``
polls it before each count and discards a cycle counted while the beam was lost. SAXS:
``RE(adaptive_saxs([saxs_det], cell_x, saxs_agent(stop="kde"), md={"sample": saxs_sample.name}))``. XAS imaging:
``RE(adaptive_xas_imaging([imaging_det], mono, max_passes=3))``."""

from agent import imaging_agent, saxs_agent, spin_moment_agent, xas_agent, xps_agent  # noqa: F401
from plans import (  # noqa: F401
    adaptive_compton,
    adaptive_fly_xas,
    adaptive_saxs,
    adaptive_xas,
    adaptive_xas_imaging,
    adaptive_xps,
    flip_cycle,
    grid_xas,
)
