"""bayesbeam agents: forward models, exact posteriors, stopping rules, experimental design.

One subpackage per technique (``compton``, ``xas``, ``xps``, ``saxs``, ``imaging``) and one for the between-runs
``campaign`` agents, over ``core`` (agent protocol, stopping rules, linear and exchange-MC inference); none of them
imports bluesky or ophyd.
``agent.feeders`` is the one adapter that turns the bluesky document stream into ``ingest`` calls.
Public names are imported on first use: ``from agent import xas_agent`` loads the XAS code only.
"""

from agent.core.names import alias_moved_modules, lazy_exports

_EXPORTS = {
    "BayesAgent": "agent.core.protocol",
    **dict.fromkeys(["StopRule", "TargetStd", "Plateau", "Budget", "ModelDecided", "any_of", "all_of"],
                    "agent.core.stopping"),
    **dict.fromkeys(["Param", "Dataset", "Posterior", "fit", "integrate"], "agent.core.nonlinear"),
    **dict.fromkeys(["SpinMomentAgent", "spin_moment_agent", "InvalidCycle"], "agent.compton"),
    **dict.fromkeys(["XASAgent", "xas_agent", "TargetRMSE"], "agent.xas"),
    **dict.fromkeys(["XPSAgent", "xps_agent"], "agent.xps"),
    **dict.fromkeys(["SAXSAgent", "saxs_agent", "KDEConverged"], "agent.saxs"),
    **dict.fromkeys(["ImagingAgent", "imaging_agent", "ClassificationDecided", "classify_stack"], "agent.imaging"),
    **dict.fromkeys(["CurieCampaign", "curie_campaign"], "agent.campaign"),
    **dict.fromkeys(["ComptonFeeder", "XASFeeder", "XPSFeeder", "SAXSFeeder"], "agent.feeders"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

alias_moved_modules({
    "agent.base": "agent.core.protocol",
    "agent.stopping": "agent.core.stopping",
    "agent.linear_posterior": "agent.core.linear_posterior",
    "agent.exchange_mc": "agent.core.exchange_mc",
    "agent.nonlinear": "agent.core.nonlinear",
    "agent.callbacks": "agent.feeders",
    "agent.compton_profiles": "agent.compton.profiles",
    "agent.mcs_model": "agent.compton.model",
    "agent.mcs_agent": "agent.compton.agent",
    "agent.xas_prior": "agent.xas.prior",
    "agent.xas_design": "agent.xas.design",
    "agent.xas_agent": "agent.xas.agent",
    "agent.cluster_models": "agent.xps.cluster_models",
    "agent.xps_agent": "agent.xps.agent",
})
