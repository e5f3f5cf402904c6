"""3d XPS of Ce/La oxides: Anderson-impurity cluster models and the model-selecting XPS agent."""

from agent.xps.agent import XPSAgent, default_stop_rule, xps_agent

__all__ = ["XPSAgent", "default_stop_rule", "xps_agent"]
