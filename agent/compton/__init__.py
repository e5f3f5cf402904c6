"""Magnetic Compton scattering: Compton profiles (xraylib), the MCP model, the spin-moment agent."""

from agent.compton.agent import SpinMomentAgent, spin_moment_agent
from agent.compton.cycle_input import InvalidCycle
from agent.compton.model import ComptonGeometry, MCSModel

__all__ = ["ComptonGeometry", "InvalidCycle", "MCSModel", "SpinMomentAgent", "spin_moment_agent"]
