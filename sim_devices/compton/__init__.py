"""Simulated BL08W-style magnetic-Compton end station: Ge MCA, magnet, sample physics and presets."""

from sim_devices.compton.beamline import ComptonBeamline, make_compton_beamline
from sim_devices.compton.ge_detector import SimGeMCA
from sim_devices.compton.magnet import SimMagnet
from sim_devices.compton.samples import ComptonSample, compton_sample

__all__ = ["ComptonBeamline", "ComptonSample", "SimGeMCA", "SimMagnet", "compton_sample", "make_compton_beamline"]
