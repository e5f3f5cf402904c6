"""Simulated XAS samples: measured Fe K-edge standards as truths (DESIGN §4.2, §5).

Transmission physics: mu*t(E) = amplitude * mu(E - shift) + offset + c3 (E_ref/E)^3 + c4 (E_ref/E)^4
(E_ref = 7110.8 eV, the analysis model's background terms; c3 = c4 = 0 by default);
I0 ~ Poisson(rate * dwell), It ~ Poisson(rate * dwell * exp(-mu*t)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from agent.core.words import one_of
from agent.xas.prior import E_REF_EV, SpectraLibrary


@lru_cache(maxsize=4)
def load_standards(directory: str | None = None) -> SpectraLibrary:
    """The Fe K-edge standards (read once per directory; default: the shared data)."""
    return SpectraLibrary.from_csv(directory)


@dataclass
class XASSample:
    """A standard measured in transmission: ``name`` in any case (kept in the library's spelling),
    ``amplitude`` (edge step in mu*t), ``offset`` (mu*t), ``shift_eV`` (rigid edge shift, eV),
    ``i0_rate`` (I0 counts per second), ``c3``, ``c4`` (mu*t background c3 (E_ref/E)^3 + c4 (E_ref/E)^4,
    E_ref = 7110.8 eV; a nuisance: ``target_rmse``'s truth is amplitude*mu + offset without it).
    ``extended_to_eV``: the truth continued SYNTHETICALLY past the measured 7196.85 eV to this energy
    (``agent.xas.exafs``: a few-shell EXAFS model), for rehearsals over the EXAFS range."""

    name: str
    amplitude: float = 1.75
    offset: float = 0.45
    shift_eV: float = 0.0
    i0_rate: float = 23760.0
    c3: float = 0.0
    c4: float = 0.0
    directory: str | None = None
    seed: int | None = None
    extended_to_eV: float | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        lib = load_standards(self.directory)
        if self.extended_to_eV is not None:
            from agent.xas.exafs import extended_library

            lib = extended_library(lib, stop_eV=float(self.extended_to_eV))
        energy, names, spectra = lib.energy, lib.names, lib.spectra
        self.name = one_of(self.name, names, "sample")  # the library's spelling: fe3o4 is Fe3O4
        if not (self.amplitude > 0 and self.i0_rate > 0):
            raise ValueError("amplitude and i0_rate must be > 0")
        self._energy, self._mu = energy, spectra[:, names.index(self.name)]
        self.rng = np.random.default_rng(self.seed)

    @property
    def energy_range(self) -> tuple[float, float]:
        """Energies (eV) where the truth is tabulated."""
        return float(self._energy[0] + abs(self.shift_eV)), float(self._energy[-1] - abs(self.shift_eV))

    def mu(self, energy_eV, hold: bool = False) -> np.ndarray:
        """Normalised mu at ``energy_eV`` (the truth, shifted by ``shift_eV``). Outside the table:
        ``ValueError``, or with ``hold`` the end values (photons off the readback by a calibration
        offset or lag may fall just outside it)."""
        e = np.asarray(energy_eV, float)
        lo, hi = self._energy[0], self._energy[-1]
        if not hold and (np.any(e - self.shift_eV < lo) or np.any(e - self.shift_eV > hi)):
            raise ValueError(f"energy outside the tabulated truth {lo:.2f}-{hi:.2f} eV")
        return np.interp(e - self.shift_eV, self._energy, self._mu)

    def target_rmse(self, post, values: np.ndarray | None = None) -> float:
        """Actual RMSE of ``values`` (default: the posterior mean of ``post``'s design target) on
        ``post``'s grid against this sample's truth, in the target's units."""
        truth = post.target_of(self.mu(post.energy), self.amplitude, self.offset)
        v = post.target_mean if values is None else values
        return float(np.sqrt(np.mean((v - truth) ** 2)))

    def mut(self, energy_eV, hold: bool = False) -> np.ndarray:
        """mu*t at ``energy_eV`` (eV), background included (``hold``: see ``mu``)."""
        mut = self.amplitude * self.mu(energy_eV, hold) + self.offset
        if self.c3 or self.c4:
            u = E_REF_EV / np.asarray(energy_eV, float)
            mut = mut + self.c3 * u ** 3 + self.c4 * u ** 4
        return mut

    def counts(self, energy_eV, dwell_s) -> tuple[np.ndarray, np.ndarray]:
        """Poisson (I0, It) counts at ``energy_eV`` after ``dwell_s`` seconds."""
        lam0 = self.i0_rate * np.asarray(dwell_s, float)
        i0 = self.rng.poisson(lam0 * np.ones_like(np.asarray(energy_eV, float)))
        it = self.rng.poisson(lam0 * np.exp(-self.mut(energy_eV)))
        return i0, it
