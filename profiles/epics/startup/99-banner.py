# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Say what the session holds."""

from bayesbeam.interactive import banner

print(banner(f"bayesbeam EPICS session — beamline {beamline.name} ({beamline.path.name}), "
             f"EPICS_CA_ADDR_LIST={ca_env['EPICS_CA_ADDR_LIST']}",
             epics_bl.devices(),
             [f"  suspender: ring current < {_ring['floor_ma']} mA pauses runs"]
             + (["  try: RE(adaptive_compton([ge], magnet, spin_moment_agent(0.01, element='Fe'), ring=ring,",
                 "                           beamtime=beamtime, interruptions=ring_suspender, md={'sample': 'fe'}))"]
                if ge is not None else [])
             + (["  XAS: RE(adaptive_xas([i0, it], mono, xas_agent(target_rmse=0.01), beamtime=beamtime,",
                 "                      md={'sample': 'Fe3O4'}))"] if mono is not None else [])))
