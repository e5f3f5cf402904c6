# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Say what the session holds, and which faults are armed on the IOC: an armed fault (e.g. 17 stuck
magnet moves left from the last session) applies to the next operations, so it must not surprise a run
(``epics_bl.armed_faults()`` lists them again at any time)."""

from bluesky_queueserver import is_re_worker_active

from bayesbeam.interactive import banner

_armed = epics_bl.armed_faults()
_banner = banner(f"bayesbeam EPICS session — beamline {beamline.name} ({beamline.path.name}), "
             f"EPICS_CA_ADDR_LIST={ca_env['EPICS_CA_ADDR_LIST']}",
             epics_bl.devices(),
             [f"  suspender: ring current < {_ring['floor_ma']} mA pauses runs"]
             + (["  try: RE(adaptive_compton([ge], magnet, spin_moment_agent(0.01, element='Fe'), ring=ring,",
                 "                           beamtime=beamtime, interruptions=ring_suspender, md={'sample': 'fe'}))"]
                if ge is not None else [])
             + (["  sample temperature: adaptive_compton(..., temperature_k=900.0) sets and holds sample_temp (K)"]
                if sample_temp is not None else [])
             + (["  XAS: RE(adaptive_xas([i0, it], mono, xas_agent(target_rmse=0.01), beamtime=beamtime,",
                 "                      md={'sample': 'Fe3O4'}))"] if mono is not None else [])
             + (["  fly XAS: RE(adaptive_fly_xas([fly], mono, quantity='edge_position', target_std=0.1,",
                 "                          beamtime=beamtime, md={'sample': 'Fe3O4'}))"] if fly is not None else [])
             + ((["  FAULTS ARMED ON THE IOC (they apply to the next operations; put 0 to disarm):"]
                 + [f"    {a}" for a in _armed]) if _armed else
                (["  faults armed on the IOC: none"] if epics_bl.faults else [])))
if not is_re_worker_active():  # the queue server's worker runs these files too: no banner in its log
    print(_banner)
