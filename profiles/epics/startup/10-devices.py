# ruff: noqa: F821  (names defined by the earlier startup files of this profile)
"""Devices from stock ophyd EPICS classes with the PV names of the beamline file; every PV must
connect within the configured timeout, or the message names the ones that did not. ``sample_temp``: the
sample temperature controller (K) of a file with a [temperature] section, for
``adaptive_compton(temperature_k=...)``; ``fly``: the fly-scan scaler (MCS + the monochromator's motor record)
of a file with a [fly] section, for ``adaptive_fly_xas([fly], mono, ...)``."""

from bayesbeam.epics_devices import connect_beamline
from plans.registry import register_devices

epics_bl = connect_beamline(beamline)
ge, magnet, ring, beamtime = epics_bl.ge, epics_bl.magnet, epics_bl.ring, epics_bl.beamtime
sample_temp = epics_bl.sample_temp  # None if the file has no [temperature]
faults = epics_bl.faults
mono, i0, it = epics_bl.mono, epics_bl.i0, epics_bl.it  # XAS end station (None if the file has none)
fly = epics_bl.fly  # None if the file has no [fly]
register_devices({k: v for k, v in dict(ge=ge, magnet=magnet, sample_temp=sample_temp, ring=ring, beamtime=beamtime,
                                        mono=mono, i0=i0, it=it, fly=fly).items() if v is not None})  # by name
