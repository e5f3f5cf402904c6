"""Simulated 3d XPS end station: electron analyser and the Ce/La oxide samples."""

from sim_devices.xps.electron_analyser import SimElectronAnalyser, SimWideAnalyser, analyser_for
from sim_devices.xps.samples import XPSSample
from sim_devices.xps.samples import sample as xps_sample

__all__ = ["SimElectronAnalyser", "SimWideAnalyser", "XPSSample", "analyser_for", "xps_sample"]
