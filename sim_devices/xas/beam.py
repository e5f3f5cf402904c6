"""The incident beam of the simulated XAS end station: I0(E) and what reaches the chambers (DESIGN §5).

``BeamModel`` (all off by default: flux flat, no glitch, no harmonic):

- flux spectrum: relative flux ``1 + slope·x + curvature·x²``, x = (E − ``E_REF_EV``)/100 eV (the
  flank of an undulator harmonic: a few % per 100 eV), times the ring current (the chambers follow it);
- glitches (``Glitch``): narrow energies (Gaussian, FWHM ``width_eV``) where the monochromator crystal
  loses a fraction ``depth`` of the flux (I0 and It drop together: cancels in ln(I0/It)) and the beam
  that passes the sample changes (position/harmonic content), an extra ``mut`` in μt on the
  transmitted chambers only (does not cancel);
- harmonics: a fraction ``harmonic_fraction`` h of the photons at 3E, counted by I0 like the
  fundamental, attenuated by μt(3E) = ``harmonic_mut`` in the sample: It = N0[(1−h)e^{−μt} + h e^{−μt₃}],
  which compresses ln(I0/It).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.xas.prior import E_REF_EV

FWHM_TO_SD = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class Glitch:
    """A monochromator glitch at ``energy_eV`` (eV), FWHM ``width_eV`` (eV, 0.2-0.5 typical), losing a
    fraction ``depth`` (0-1) of the flux at its centre, with ``mut`` (μt units) added to the
    transmitted chambers' attenuation at its centre (the part that does not cancel in ln(I0/It))."""

    energy_eV: float
    width_eV: float = 0.3
    depth: float = 0.3
    mut: float = 0.02

    def __post_init__(self):
        if not (self.width_eV > 0 and 0 <= self.depth < 1 and np.isfinite(self.mut)):
            raise ValueError(f"invalid glitch {self}")

    def profile(self, energy_eV) -> np.ndarray:
        """Unit-height Gaussian profile at ``energy_eV`` (eV)."""
        z = (np.asarray(energy_eV, float) - self.energy_eV) / (self.width_eV * FWHM_TO_SD)
        return np.exp(-0.5 * z * z)


@dataclass(frozen=True)
class BeamModel:
    """The incident beam (module docstring). ``slope``, ``curvature``: relative flux change per
    (100 eV) and per (100 eV)²; ``glitches``: ``Glitch`` tuple; ``harmonic_fraction``: h (0-1) of I0's
    photons at 3E; ``harmonic_mut``: the sample's μt at 3E (small)."""

    slope: float = 0.0
    curvature: float = 0.0
    glitches: tuple[Glitch, ...] = ()
    harmonic_fraction: float = 0.0
    harmonic_mut: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "glitches", tuple(self.glitches))
        if not (0 <= self.harmonic_fraction < 1 and self.harmonic_mut >= 0):
            raise ValueError("harmonic_fraction must be in [0, 1) and harmonic_mut >= 0")

    def flux(self, energy_eV) -> np.ndarray:
        """Relative incident flux (1 at ``E_REF_EV``) including the glitches' losses."""
        x = (np.asarray(energy_eV, float) - E_REF_EV) / 100.0
        f = np.clip(1.0 + self.slope * x + self.curvature * x * x, 0.0, None)
        for g in self.glitches:
            f = f * (1.0 - g.depth * g.profile(energy_eV))
        return f

    def glitch_mut(self, energy_eV) -> np.ndarray:
        """Extra μt seen by the transmitted chambers at ``energy_eV`` (eV), from the glitches."""
        out = np.zeros_like(np.asarray(energy_eV, float))
        for g in self.glitches:
            out = out + g.mut * g.profile(energy_eV)
        return out

    def transmitted(self, mut, mut_3e=0.0, energy_eV=None) -> np.ndarray:
        """Fraction of I0's counts reaching a chamber behind attenuation ``mut`` (fundamental) and
        ``mut_3e`` (added to ``harmonic_mut`` for the 3E photons): (1−h)e^{−μt−glitch} + h e^{−μt₃}."""
        h = self.harmonic_fraction
        extra = 0.0 if energy_eV is None else self.glitch_mut(energy_eV)
        return (1.0 - h) * np.exp(-(np.asarray(mut, float) + extra)) + h * np.exp(-(self.harmonic_mut + mut_3e))
