"""Small-angle X-ray scattering (issue 14): pyFAI reduction, the KDE-convergence stop, frame consistency and
the form-factor posterior (sphere vs core-shell)."""

from agent.saxs.agent import FramesConsistent, KDEConverged, SAXSAgent, saxs_agent
from agent.saxs.geometry import GEOMETRIES, DetectorGeometry

__all__ = ["SAXSAgent", "saxs_agent", "KDEConverged", "FramesConsistent", "DetectorGeometry", "GEOMETRIES"]
