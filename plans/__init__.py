"""Bluesky plans (generators), one subpackage per technique over ``plans.core``. Device-agnostic:
devices and agents are arguments; bluesky's argument order (detectors, then motors, ``md=None`` last)."""

from agent.core.names import alias_moved_modules, lazy_exports

_EXPORTS = {
    **dict.fromkeys(["adaptive_compton", "flip_cycle", "FLIP_PATTERN"], "plans.compton"),
    **dict.fromkeys(["adaptive_xas", "adaptive_fly_xas", "grid_xas"], "plans.xas"),
    "adaptive_xps": "plans.xps",
    "adaptive_saxs": "plans.saxs",
    "adaptive_xas_imaging": "plans.imaging",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

alias_moved_modules({"plans.common": "plans.core"})
