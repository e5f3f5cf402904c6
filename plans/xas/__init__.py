"""XAS plans: the adaptive energy-point run, the adaptive fly-scan run and the conventional step scan."""

from plans.xas.energy_points import adaptive_xas, grid_xas
from plans.xas.fly import adaptive_fly_xas

__all__ = ["adaptive_fly_xas", "adaptive_xas", "grid_xas"]
