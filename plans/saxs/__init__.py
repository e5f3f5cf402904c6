"""SAXS plans: 2-D detector frames until the agent stops the run (KDE convergence or the posterior)."""

from plans.saxs.frames import adaptive_saxs

__all__ = ["adaptive_saxs"]
