"""Simulated XAS samples: measured Fe K-edge standards as truths (DESIGN §4.2, §5).

Transmission physics: mu*t(E) = amplitude * mu(E - shift) + offset; I0 ~ Poisson(rate * dwell),
It ~ Poisson(rate * dwell * exp(-mu*t)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np


def shared_data_dir() -> Path:
    """``$BAYESBEAM_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("BAYESBEAM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@lru_cache(maxsize=4)
def load_standards(directory: str | None = None) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """(energy (m,) eV, names (k), spectra (m, k)) of the Fe K-edge standards."""
    d = Path(directory) if directory else shared_data_dir() / "fe_k_xanes_standards"
    if not (d / "spectra.csv").exists():
        raise FileNotFoundError(f"no spectra.csv in {d} (set BAYESBEAM_SHARED_DATA)")
    energy = np.loadtxt(d / "energy.csv", delimiter=",", skiprows=1)
    with open(d / "spectra.csv") as f:
        names = tuple(f.readline().strip().split(",")[1:])
    spectra = np.loadtxt(d / "spectra.csv", delimiter=",", skiprows=1)[:, 1:]
    return energy, names, spectra


def standard_names(directory: str | None = None) -> tuple[str, ...]:
    return load_standards(directory)[1]


@dataclass
class XASSample:
    """A standard measured in transmission. ``amplitude`` (edge step in mu*t), ``offset`` (mu*t),
    ``shift_eV`` (rigid edge shift, eV), ``i0_rate`` (I0 counts per second)."""

    name: str
    amplitude: float = 1.75
    offset: float = 0.45
    shift_eV: float = 0.0
    i0_rate: float = 23760.0
    directory: str | None = None
    seed: int | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        energy, names, spectra = load_standards(self.directory)
        if self.name not in names:
            raise ValueError(f"unknown sample {self.name!r}; known standards: {', '.join(names)}")
        if not (self.amplitude > 0 and self.i0_rate > 0):
            raise ValueError("amplitude and i0_rate must be > 0")
        self._energy, self._mu = energy, spectra[:, names.index(self.name)]
        self.rng = np.random.default_rng(self.seed)

    @property
    def energy_range(self) -> tuple[float, float]:
        """Energies (eV) where the truth is tabulated."""
        return float(self._energy[0] + abs(self.shift_eV)), float(self._energy[-1] - abs(self.shift_eV))

    def mu(self, energy_eV) -> np.ndarray:
        """Normalised mu at ``energy_eV`` (the truth, shifted by ``shift_eV``)."""
        e = np.asarray(energy_eV, float)
        lo, hi = self._energy[0], self._energy[-1]
        if np.any(e - self.shift_eV < lo) or np.any(e - self.shift_eV > hi):
            raise ValueError(f"energy outside the tabulated truth {lo:.2f}-{hi:.2f} eV")
        return np.interp(e - self.shift_eV, self._energy, self._mu)

    def mut(self, energy_eV) -> np.ndarray:
        return self.amplitude * self.mu(energy_eV) + self.offset

    def counts(self, energy_eV, dwell_s) -> tuple[np.ndarray, np.ndarray]:
        """Poisson (I0, It) counts at ``energy_eV`` after ``dwell_s`` seconds."""
        lam0 = self.i0_rate * np.asarray(dwell_s, float)
        i0 = self.rng.poisson(lam0 * np.ones_like(np.asarray(energy_eV, float)))
        it = self.rng.poisson(lam0 * np.exp(-self.mut(energy_eV)))
        return i0, it
