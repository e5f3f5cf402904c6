"""Full-field XAS-imaging plans: darks, flats and passes of images at designed energies until the per-pixel
classification is decided."""

from plans.imaging.images import adaptive_xas_imaging

__all__ = ["adaptive_xas_imaging"]
