"""Simulated SAXS end station (BL40B2-like): Pilatus-like pixel detector with beam monitors, cell stage, and
particle suspensions from sasmodels as truth. ``sim_devices.saxs.samples`` alone is the benchmarks' fast path
(no ophyd): the names here import lazily."""

from agent.core.names import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["make_saxs_endstation", "SAXSEndStation"], "sim_devices.saxs.endstation"),
    **dict.fromkeys(["SAXSSample", "SAXSFrame", "ExpectedFrame", "saxs_sample", "sample_presets", "SLOTS"],
                    "sim_devices.saxs.samples"),
    "SimPixelDetector": "sim_devices.saxs.detector",
    **dict.fromkeys(["SimCellStage", "cell_contents"], "sim_devices.saxs.stage"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
