"""XAS: the library prior of μ(E), the sequential cost-aware A-optimal design, the XAS agent, the Fe valence
predictor (a derived quantity of the posterior)."""

from agent.xas.agent import TargetRMSE, XASAgent, xas_agent
from agent.xas.design import CountingNoise, MoveCost, XASPosterior
from agent.xas.fluorescence import FluorescenceNoise, FluorescenceSample
from agent.xas.prior import SpectraLibrary, library_prior, reference_prior
from agent.xas.valence import ValenceInterval, ValencePredictor, load_valence_labels

__all__ = ["CountingNoise", "FluorescenceNoise", "FluorescenceSample", "MoveCost", "SpectraLibrary", "TargetRMSE",
           "ValenceInterval", "ValencePredictor", "XASAgent", "XASPosterior", "library_prior", "load_valence_labels",
           "reference_prior", "xas_agent"]
