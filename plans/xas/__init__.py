"""XAS plans: the adaptive energy-point run and the conventional step scan."""

from plans.xas.energy_points import adaptive_xas, grid_xas

__all__ = ["adaptive_xas", "grid_xas"]
