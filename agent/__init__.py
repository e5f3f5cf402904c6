"""bayesbeam agents: forward models, exact posteriors, stopping rules, experimental design.

The numerical core imports no bluesky/ophyd; ``agent.callbacks`` is the one adapter that turns
the bluesky document stream into ``ingest`` calls.
"""
