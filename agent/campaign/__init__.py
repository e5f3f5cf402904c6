"""Campaign agents: posteriors over runs (one point per finished run) and the design of the next run.
``CurieCampaign``: T_c from μs(T) at one field; no bluesky imports."""

from agent.campaign.agent import DEFAULTS, CurieCampaign, curie_campaign, temperature_change_s
from agent.campaign.model import CurveTable, curve

__all__ = ["DEFAULTS", "CurieCampaign", "CurveTable", "curie_campaign", "curve", "temperature_change_s"]
