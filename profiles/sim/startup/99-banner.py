# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Say what the session holds."""

from bayesbeam.interactive import banner

print(banner(f"bayesbeam simulated session — sample {sample.name}, clock ×{sim.clock.time_scale:g}",
             {"ge": ge, "magnet": magnet, "ring": ring, "beamtime": beamtime},
             ["  agents/plans: spin_moment_agent, adaptive_compton, flip_cycle; bp/bps = bluesky plans/stubs",
              "  try: RE(adaptive_compton(ge, magnet, spin_moment_agent(0.01, element=sample.element), ring=ring,",
              "                           beamtime=beamtime, beam_poll_s=0, md={'sample': sample.name}))"]))
