"""Full-field XAS imaging (issue 15, seed 001): the noise-aware O(N) partition of per-pixel spectra, the
Potts noise reduction, the designed imaging energies, the agent that stops when the classification is
decided, and the Dask orchestration for stacks larger than memory."""

from agent.imaging.agent import ClassificationDecided, ImagingAgent, imaging_agent
from agent.imaging.noise import NoiseModel, estimate_gain
from agent.imaging.orchestration import ClassificationResult, classify_stack, executor_for
from agent.imaging.tiles import ArraySource, HDF5Source

__all__ = ["ArraySource", "ClassificationDecided", "ClassificationResult", "HDF5Source", "ImagingAgent",
           "NoiseModel", "classify_stack", "estimate_gain", "executor_for", "imaging_agent"]
