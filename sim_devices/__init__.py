"""Simulated beamline: ophyd devices on one beamtime clock, the sample physics behind them, and the
caproto IOC serving them (``sim_devices.ioc``). One subpackage per end station over ``core``."""

from agent.core.names import alias_moved_modules, lazy_exports

_EXPORTS = {
    **dict.fromkeys(["SimClock", "BeamtimeSignal"], "sim_devices.core.clock"),
    "RingCurrent": "sim_devices.core.ring",
    **dict.fromkeys(["make_compton_beamline", "ComptonBeamline", "compton_sample", "compton_presets", "PresetError",
                     "SimTemperature", "Magnetisation"], "sim_devices.compton"),
    **dict.fromkeys(["make_xas_endstation", "XASEndStation", "XASSample"], "sim_devices.xas"),
    **dict.fromkeys(["SimElectronAnalyser", "XPSSample", "xps_sample"], "sim_devices.xps"),
    **dict.fromkeys(["make_saxs_endstation", "SAXSEndStation", "SAXSSample", "saxs_sample", "SimPixelDetector",
                     "SimCellStage"], "sim_devices.saxs"),
    **dict.fromkeys(["make_imaging_endstation", "ImagingEndStation", "ImagingSample", "default_sample"],
                    "sim_devices.imaging"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

alias_moved_modules({
    "sim_devices.clock": "sim_devices.core.clock",
    "sim_devices.faults": "sim_devices.core.faults",
    "sim_devices.ring": "sim_devices.core.ring",
    "sim_devices.compton_samples": "sim_devices.compton.samples",
    "sim_devices.ge_detector": "sim_devices.compton.ge_detector",
    "sim_devices.magnet": "sim_devices.compton.magnet",
    "sim_devices.compton_beamline": "sim_devices.compton.beamline",
    "sim_devices.xas_samples": "sim_devices.xas.samples",
    "sim_devices.monochromator": "sim_devices.xas.monochromator",
    "sim_devices.ion_chambers": "sim_devices.xas.ion_chambers",
    "sim_devices.xas_beamline": "sim_devices.xas.endstation",
    "sim_devices.xps_samples": "sim_devices.xps.samples",
    "sim_devices.electron_analyser": "sim_devices.xps.electron_analyser",
})
