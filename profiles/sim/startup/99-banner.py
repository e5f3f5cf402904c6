# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Say what the session holds."""

from bayesbeam.interactive import banner

print(banner(f"bayesbeam simulated session — sample {sample.name}, XAS sample {xas_sample.name}, "
             f"clock ×{sim.clock.time_scale:g}",
             {"ge": ge, "magnet": magnet, "mono": mono, "i0": i0, "it": it, "ring": ring, "beamtime": beamtime},
             ["  agents/plans: spin_moment_agent, xas_agent, adaptive_compton, flip_cycle, adaptive_xas, grid_xas;"
              " bp/bps = bluesky plans/stubs",
              "  try: RE(adaptive_compton([ge], magnet, spin_moment_agent(0.01, element=sample.element), ring=ring,",
              "                           beamtime=beamtime, beam_poll_s=0, md={'sample': sample.name}))",
              "   or: RE(adaptive_xas([i0, it], mono, xas_agent(target_rmse=0.01, exclude=xas_sample.name),",
              "                       beamtime=beamtime, md={'sample': xas_sample.name}))"]))
