"""Magnetic-Compton plans: the ``+ − − +`` flip cycle and the adaptive run its agent stops."""

from plans.compton.flip_cycles import FLIP_PATTERN, CycleInfo, adaptive_compton, flip_cycle

__all__ = ["FLIP_PATTERN", "CycleInfo", "adaptive_compton", "flip_cycle"]
