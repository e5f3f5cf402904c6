"""Simulated full-field XAS-imaging end station (issue 15): sample truth maps tile by tile (``sample``), the
scintillator + sCMOS image generator as pure numpy (``detector``, the benchmarks' fast path, no ophyd) and the
ophyd devices on the simulated clock (``endstation``). The names here import lazily."""

from agent.core.names import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["ImagingSample", "sample_tile", "minority_partner", "spectral_distance", "default_sample",
                     "smooth_field", "DEFAULT_PHASES"], "sim_devices.imaging.sample"),
    **dict.fromkeys(["DetectorModel", "TileFields", "image_tile", "flat_tile", "dark_tile", "stack_tile",
                     "psf_weights", "psf_variance_factor", "registration_shift", "flat_pattern", "dark_pattern",
                     "phase_spectra", "spectra_library"], "sim_devices.imaging.detector"),
    **dict.fromkeys(["make_imaging_endstation", "ImagingEndStation", "SimFullFieldDetector", "SimSampleStage",
                     "SimShutter"], "sim_devices.imaging.endstation"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
