"""XAS: the library prior of μ(E), the sequential cost-aware A-optimal design, the XAS agent."""

from agent.xas.agent import TargetRMSE, XASAgent, xas_agent
from agent.xas.design import CountingNoise, MoveCost, XASPosterior
from agent.xas.prior import SpectraLibrary, library_prior, reference_prior

__all__ = ["CountingNoise", "MoveCost", "SpectraLibrary", "TargetRMSE", "XASAgent", "XASPosterior",
           "library_prior", "reference_prior", "xas_agent"]
