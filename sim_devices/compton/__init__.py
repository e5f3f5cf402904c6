"""Simulated BL08W-style magnetic-Compton end station: Ge MCA, magnet, sample physics and presets, and the
sample temperature with the true μs(T, B)."""

from sim_devices.compton.beamline import ComptonBeamline, make_compton_beamline
from sim_devices.compton.ge_detector import SimGeMCA
from sim_devices.compton.magnet import SimMagnet
from sim_devices.compton.magnetisation import Magnetisation, magnetisation_model
from sim_devices.compton.samples import ComptonSample, PresetError, PresetOverride, compton_presets, compton_sample
from sim_devices.compton.temperature import SimTemperature

__all__ = ["ComptonBeamline", "ComptonSample", "Magnetisation", "PresetError", "PresetOverride", "SimGeMCA",
           "SimMagnet", "SimTemperature", "compton_presets", "compton_sample", "magnetisation_model",
           "make_compton_beamline"]
