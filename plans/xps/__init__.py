"""3d XPS plans: repeated analyser sweeps until the agent decides the model."""

from plans.xps.sweeps import adaptive_xps

__all__ = ["adaptive_xps"]
