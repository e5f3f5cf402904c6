"""Simulated XAS end station: monochromator, ion chambers I0/It/Iref, fluorescence, the Fe K-edge standards as truth."""

from sim_devices.xas.beam import BeamModel, Glitch
from sim_devices.xas.endstation import XASEndStation, make_xas_endstation
from sim_devices.xas.fluorescence import FluorescenceModel, SimFluorescenceDetector
from sim_devices.xas.ion_chambers import SharedDwell, SimIonChamber, ion_chambers
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample

__all__ = ["BeamModel", "FluorescenceModel", "Glitch", "SharedDwell", "SimFluorescenceDetector", "SimIonChamber",
           "SimMonochromator", "XASEndStation", "XASSample", "ion_chambers", "make_xas_endstation"]
