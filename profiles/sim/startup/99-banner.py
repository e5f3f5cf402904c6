# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Say what the session holds, and which injected faults are armed on its devices (none in a fresh
session; ``armed_faults(devices)`` says so again at any time)."""

from bluesky_queueserver import is_re_worker_active

from bayesbeam.interactive import banner
from sim_devices.core.faults import armed_faults

devices = {"ge": ge, "magnet": magnet, "mono": mono, "i0": i0, "it": it, "ifl": ifl, "saxs_det": saxs_det,
           "cell_x": cell_x, "imaging_det": imaging_det, "sample_x": sample_x, "shutter": shutter, "ring": ring,
           "beamtime": beamtime}
_armed = armed_faults(devices)
_banner = banner(f"bayesbeam simulated session — sample {sample.name}, XAS sample {xas_sample.name}, "
             f"clock ×{sim.clock.time_scale:g}",
             devices,
             ["  agents/plans: spin_moment_agent, xas_agent, saxs_agent, adaptive_compton, flip_cycle, adaptive_xas,"
              " grid_xas, adaptive_saxs, adaptive_xas_imaging;"
              " bp/bps = bluesky plans/stubs",
              "  try: RE(adaptive_compton([ge], magnet, spin_moment_agent(0.01, element=sample.element), ring=ring,",
              "                           beamtime=beamtime, beam_poll_s=0, md={'sample': sample.name}))",
              "   or: RE(adaptive_xas([i0, it], mono, xas_agent(target_rmse=0.01, exclude=xas_sample.name),",
              "                       beamtime=beamtime, md={'sample': xas_sample.name}))",
              "   or, in fluorescence (a dilute sample): RE(adaptive_xas([i0, ifl], mono, mode='fluorescence',",
              "                       exclude=xas_sample.name, target_rmse=0.01, beamtime=beamtime))",
              "   or, SAXS until the pattern's density converged: RE(adaptive_saxs([saxs_det], cell_x, stop='kde',",
              "                       md={'sample': saxs_sample.name}))",
              "   or, XAS imaging until 99 % of the pixels are decided: RE(adaptive_xas_imaging([imaging_det], mono,",
              "                       max_passes=3))"]
             + (["  ARMED FAULTS (the next operations of these devices fail):"] + [f"    {a}" for a in _armed]
                if _armed else ["  armed faults: none"]))
if not is_re_worker_active():  # the queue server's worker runs these files too: no banner in its log
    print(_banner)
