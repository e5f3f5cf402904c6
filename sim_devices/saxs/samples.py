"""SAXS sample physics for the simulated pixel detector: what a frame of ``t`` seconds holds at each cell position.

Expected counts in an active pixel (not a module gap, not behind the beam stop), for a cell position that puts
``d`` cm of liquid (or the standard's plate) and ``w`` cm of capillary wall in the beam:

    N = F·t · T · QE · ΔΩ · P · [d·dΣ/dΩ(q) + w·dΣ/dΩ_wall + parasitic(q)] + dark·t

F: flux (ph/s, presets ``[beam]``) × ring current / reference current; T = exp(−Σ μ·path) from xraylib
(``CS_Total_CP`` × density) at the geometry's energy; QE = 1 − exp(−μ_photo·t_sensor) of the Pilatus sensor;
ΔΩ and P the pixel's solid angle (sr) and polarisation factor as pyFAI defines them (``DetectorGeometry``);
dΣ/dΩ (cm⁻¹) of the sample from sasmodels (``sphere`` or ``core_shell_sphere``, Schulz polydispersity, S(q) = 1)
× the volume fraction, plus the flat scattering of the solvent ((1 − φ)·water's) and of the particles; the
buffer: water's flat dΣ/dΩ; the standard: a Guinier approximation of glassy carbon; parasitic scattering from
the slits and windows, attenuated by the sample like the rest. The direct beam hits the beam stop, whose
photodiode counts F·t·T·ε (``transmitted``); the upstream ion chamber counts F·t·ε₀ (``i0``); both Poisson.

Cell positions (mm, ``SLOTS``): 1 mm quartz capillaries of sample and buffer (the liquid path at an offset x
from the axis is 2√(r² − x²); the walls' likewise), a glassy-carbon plate, an open hole ("empty": the
parasitic scattering alone, T = 1). Anywhere else the holder blocks the beam (no counts). The model is
evaluated once on ``Q_GRID_NM`` (log-uniform) and linearly interpolated to the pixels' q; expected images per
(geometry, position) are cached, so a frame costs one Poisson draw (``frame``). A sample with ``damage``
changes between frames with its dose (s of exposure at the reference current) on the sample position.
"""

from __future__ import annotations

import math
import threading
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from agent.core.words import one_of, suggestion
from agent.saxs.geometry import DetectorGeometry

PRESETS_FILE = Path(__file__).with_name("presets.toml")
Q_GRID_NM = np.geomspace(1e-3, 10.0, 4001)  # nm⁻¹: where the 1-D model curves are evaluated
_LN_Q0 = math.log(Q_GRID_NM[0])
_DLN_Q = math.log(Q_GRID_NM[1] / Q_GRID_NM[0])
MODELS = ("sphere", "core_shell_sphere")
DAMAGE_KEYS = ("aggregation_per_s", "fractal_dim", "cor_length_nm", "radius_growth_nm_per_s")
PD_N, PD_NSIGMA = 35, 3.0  # sasmodels' polydispersity quadrature: its defaults
_KERNEL_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def presets() -> dict:
    """The parsed ``presets.toml`` (shared: do not change it)."""
    with PRESETS_FILE.open("rb") as f:
        return tomllib.load(f)


def slots() -> dict[str, float]:
    """Cell-stage position (mm) of each slot: sample, buffer, standard, empty."""
    return {k: float(v) for k, v in presets()["cell"]["slots_mm"].items()}


SLOTS = slots()


def attenuation_per_cm(formula: str, density_g_cm3: float, energy_keV: float) -> float:
    """Linear attenuation coefficient μ (cm⁻¹) of ``formula`` at ``energy_keV``: xraylib ``CS_Total_CP`` × density."""
    import xraylib

    return float(xraylib.CS_Total_CP(formula, float(energy_keV))) * float(density_g_cm3)


def quantum_efficiency(energy_keV: float) -> float:
    """Fraction of photons the Pilatus sensor absorbs (``[detector]``): 1 − exp(−μ_photo·t), xraylib ``CS_Photo_CP``."""
    import xraylib

    d = presets()["detector"]
    mu = float(xraylib.CS_Photo_CP(d["sensor_formula"], float(energy_keV))) * d["sensor_density_g_cm3"]
    return 1.0 - math.exp(-mu * d["sensor_thickness_um"] * 1e-4)


@lru_cache(maxsize=8)
def _kernel(model: str):
    from sasmodels.core import load_model

    return load_model(model).make_kernel([Q_GRID_NM / 10.0])  # sasmodels works in Å⁻¹


def sasmodels_curve(model: str, **params) -> np.ndarray:
    """dΣ/dΩ (cm⁻¹) of sasmodels ``model`` on ``Q_GRID_NM``; ``params`` in sasmodels' names and units (Å, 1e-6 Å⁻²),
    every ``*_pd`` a Schulz distribution of ``PD_N`` points over ±``PD_NSIGMA``."""
    from sasmodels.direct_model import call_kernel

    pars = {"background": 0.0, **params}
    for key in [k for k in params if k.endswith("_pd")]:
        pars.setdefault(key + "_type", "schulz")
        pars.setdefault(key + "_n", PD_N)
        pars.setdefault(key + "_nsigma", PD_NSIGMA)
    with _KERNEL_LOCK:
        return np.asarray(call_kernel(_kernel(model), pars), dtype=np.float64).copy()


def interpolate(curve: np.ndarray, q_nm: np.ndarray) -> np.ndarray:
    """``curve`` (on ``Q_GRID_NM``) linearly interpolated at ``q_nm`` (nm⁻¹, any shape; clamped to the grid)."""
    index, weight = _grid_position(np.asarray(q_nm, dtype=float))
    return curve[index] + weight * (curve[index + 1] - curve[index])


def _grid_position(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = (np.log(np.clip(q, Q_GRID_NM[0], Q_GRID_NM[-1])) - _LN_Q0) / _DLN_Q
    index = np.clip(np.floor(u).astype(np.int32), 0, Q_GRID_NM.size - 2)
    return index, u - index


@dataclass(frozen=True)
class _Pixels:
    """The active pixels of one geometry: flat indices, grid position of their q, QE·ΔΩ·P, and the frame
    template (−1 in gaps, 0 elsewhere)."""

    active: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    response: np.ndarray
    template: np.ndarray


@lru_cache(maxsize=8)
def _pixels(geometry: DetectorGeometry) -> _Pixels:
    active = np.flatnonzero(~geometry.static_mask().ravel())
    index, weight = _grid_position(geometry.q_map().ravel()[active])
    response = (geometry.solid_angle() * geometry.polarisation()).ravel()[active]
    response *= quantum_efficiency(geometry.energy_keV)
    template = np.where(geometry.gap_mask(), -1, 0).astype(np.int32)
    return _Pixels(active, index, weight, response, template)


class InBeam(NamedTuple):
    """What a cell position puts in the beam: the slot (None: the holder blocks it), the path (cm) through
    the slot's liquid or plate and through capillary walls."""

    slot: str | None
    path_cm: float
    wall_cm: float


class ExpectedFrame(NamedTuple):
    """Expected counts of a frame: ``image`` (float64, rows × cols; 0 in gaps and behind the beam stop), ``i0``
    and ``transmitted`` monitor counts."""

    image: np.ndarray
    i0: float
    transmitted: float


class SAXSFrame(NamedTuple):
    """One frame: ``image`` (int32, rows × cols; −1 in module gaps, as a Pilatus writes), ``i0`` and
    ``transmitted`` monitor counts."""

    image: np.ndarray
    i0: float
    transmitted: float


def in_beam(position: float | str) -> InBeam:
    """What the cell position (mm, or a slot name) puts in the beam (module docstring)."""
    cell = presets()["cell"]
    x = SLOTS[one_of(position, SLOTS, "cell slot")] if isinstance(position, str) else float(position)
    slot = min(SLOTS, key=lambda s: abs(x - SLOTS[s]))
    offset = abs(x - SLOTS[slot])
    if slot in ("sample", "buffer"):
        r_in = cell["capillary_inner_diameter_mm"] / 2
        r_out = r_in + cell["capillary_wall_um"] * 1e-3
        if offset >= r_out:
            return InBeam(None, 0.0, 0.0)
        liquid = 2 * math.sqrt(max(r_in**2 - offset**2, 0.0))
        return InBeam(slot, liquid / 10, (2 * math.sqrt(r_out**2 - offset**2) - liquid) / 10)
    if offset > cell["hole_half_width_mm"]:
        return InBeam(None, 0.0, 0.0)
    if slot == "standard":
        return InBeam(slot, presets()["standard"]["glassy-carbon"]["thickness_mm"] / 10, 0.0)
    return InBeam("empty", 0.0, 0.0)


def parasitic(q_nm: np.ndarray) -> np.ndarray:
    """Parasitic scattering per incident photon and sr (``[parasitic]``) at ``q_nm`` (nm⁻¹)."""
    p = presets()["parasitic"]
    q = np.maximum(np.asarray(q_nm, dtype=float), Q_GRID_NM[0])
    return p["p0_per_sr"] * (q / p["q_ref_nm"]) ** (-p["power"]) + p["flat_per_sr"]


def standard_dsdo(q_nm: np.ndarray) -> np.ndarray:
    """dΣ/dΩ (cm⁻¹) of the glassy-carbon standard at ``q_nm`` (nm⁻¹): dsdo0·exp(−q²Rg²/3)."""
    s = presets()["standard"]["glassy-carbon"]
    q = np.asarray(q_nm, dtype=float)
    return s["dsdo0_cm"] * np.exp(-(q * s["rg_nm"]) ** 2 / 3)


@dataclass(eq=False)
class SAXSSample:
    """A particle suspension in its buffer: sasmodels ``model`` ("sphere" or "core_shell_sphere") with
    ``radius_nm`` (the core's for a core-shell), Schulz relative std ``radius_pd``, shell ``thickness_nm``,
    SLDs ``sld`` (core) / ``sld_shell`` (1e-6 Å⁻²), ``volume_fraction`` of particles, their ``formula`` and
    ``density_g_cm3`` (transmission) and own flat ``particle_dsdo_cm`` (cm⁻¹); ``buffer`` names a ``[buffer.*]``
    preset. ``damage`` (or None): per second of dose, ``aggregation_per_s`` (fraction → mass-fractal clusters of
    ``fractal_dim``, ``cor_length_nm``) and ``radius_growth_nm_per_s``. ``dose_s``: exposure (s at the reference
    current) the sample has had; ``reset()`` returns it to 0."""

    name: str
    model: str
    radius_nm: float
    radius_pd: float
    volume_fraction: float
    sld: float
    buffer: str = "water"
    thickness_nm: float = 0.0
    sld_shell: float = float("nan")
    formula: str = "SiO2"
    density_g_cm3: float = 2.2
    particle_dsdo_cm: float = 0.0
    description: str = ""
    damage: dict | None = None
    dose_s: float = field(default=0.0, compare=False)

    def __post_init__(self):
        self.model = one_of(self.model, MODELS, "SAXS model")
        one_of(self.buffer, presets()["buffer"], "SAXS buffer")
        if not (self.radius_nm > 0 and 0 <= self.radius_pd < 1 and 0 < self.volume_fraction < 0.5
                and self.thickness_nm >= 0 and self.density_g_cm3 > 0 and self.particle_dsdo_cm >= 0):
            raise ValueError(f"SAXS sample {self.name!r}: radius {self.radius_nm} nm, pd {self.radius_pd}, "
                             f"volume fraction {self.volume_fraction}, thickness {self.thickness_nm} nm out of range")
        if self.model == "core_shell_sphere" and not (self.thickness_nm > 0 and math.isfinite(self.sld_shell)):
            raise ValueError(f"SAXS sample {self.name!r}: a core-shell sample needs thickness_nm > 0 and sld_shell")
        if self.damage is not None:
            unknown = [k for k in self.damage if k not in DAMAGE_KEYS]
            if unknown:
                raise ValueError(f"SAXS sample {self.name!r}: unknown damage key {unknown[0]!r}; "
                                 f"{suggestion(unknown[0], DAMAGE_KEYS, 'damage keys')}")
            self.damage = {"aggregation_per_s": 0.0, "fractal_dim": 2.2, "cor_length_nm": 150.0,
                           "radius_growth_nm_per_s": 0.0, **self.damage}
        self._cache: dict = {}

    @property
    def damaging(self) -> bool:
        """Whether the sample changes with its dose."""
        d = self.damage
        return bool(d) and (d["aggregation_per_s"] > 0 or d["radius_growth_nm_per_s"] != 0)

    @property
    def buffer_preset(self) -> dict:
        return presets()["buffer"][self.buffer]

    @property
    def outer_radius_nm(self) -> float:
        """Mean outer radius (nm): core radius + shell thickness."""
        return self.radius_nm + (self.thickness_nm if self.model == "core_shell_sphere" else 0.0)

    def reset(self) -> None:
        """Undo the damage: dose back to 0."""
        self.dose_s = 0.0

    def truth(self, dose_s: float | None = None) -> dict:
        """The true parameters at ``dose_s`` (default: the current dose): model, radius_nm (outer), core_radius_nm,
        thickness_nm, pd, volume_fraction, aggregated_fraction, sld, sld_shell, sld_solvent (1e-6 Å⁻²)."""
        radius, aggregated = self._state(self.dose_s if dose_s is None else dose_s)
        shell = self.thickness_nm if self.model == "core_shell_sphere" else 0.0
        return {"model": "sphere" if self.model == "sphere" else "core_shell", "radius_nm": radius + shell,
                "core_radius_nm": radius, "thickness_nm": shell, "pd": self.radius_pd,
                "volume_fraction": self.volume_fraction, "aggregated_fraction": aggregated, "sld": self.sld,
                "sld_shell": self.sld_shell, "sld_solvent": self.buffer_preset["sld"]}

    def _state(self, dose_s: float) -> tuple[float, float]:
        if not self.damaging:
            return self.radius_nm, 0.0
        d = self.damage
        return (self.radius_nm + d["radius_growth_nm_per_s"] * dose_s,
                -math.expm1(-d["aggregation_per_s"] * dose_s))

    def particle_curve(self, dose_s: float = 0.0) -> np.ndarray:
        """The particles' dΣ/dΩ (cm⁻¹) on ``Q_GRID_NM`` at ``dose_s``, flat terms excluded (sasmodels): free
        particles (1 − f)·φ and, when aggregated, mass-fractal clusters f·φ (both linear in their volume fraction,
        so per radius two cached curves serve every aggregated fraction f)."""
        radius, aggregated = self._state(dose_s)
        free, clusters = self._unit_curves(radius)
        curve = self.volume_fraction * (1.0 - aggregated) * free
        if aggregated > 0:
            curve = curve + self.volume_fraction * aggregated * clusters
        return curve

    def _unit_curves(self, radius: float) -> tuple[np.ndarray, np.ndarray | None]:
        """(free particles, fractal clusters) dΣ/dΩ per unit volume fraction (cm⁻¹) at core radius ``radius`` (nm);
        cached unless the radius grows with the dose (then every frame has its own)."""
        key = ("unit", round(radius, 9))
        if key in self._cache:
            return self._cache[key]
        solvent = self.buffer_preset["sld"]
        pd = {"radius_pd": self.radius_pd} if self.radius_pd > 0 else {}
        if self.model == "sphere":
            free = sasmodels_curve("sphere", scale=1.0, radius=10 * radius, sld=self.sld, sld_solvent=solvent, **pd)
        else:
            free = sasmodels_curve("core_shell_sphere", scale=1.0, radius=10 * radius,
                                   thickness=10 * self.thickness_nm, sld_core=self.sld, sld_shell=self.sld_shell,
                                   sld_solvent=solvent, **pd)
        clusters = None
        if self.damaging and self.damage["aggregation_per_s"] > 0:
            d = self.damage
            clusters = sasmodels_curve("fractal", scale=1.0, volfraction=1.0,
                                       radius=10 * (radius + self.outer_radius_nm - self.radius_nm),
                                       fractal_dim=d["fractal_dim"], cor_length=10 * d["cor_length_nm"],
                                       sld_block=self.sld, sld_solvent=solvent, **pd)
        if not (self.damaging and self.damage["radius_growth_nm_per_s"] != 0):
            self._cache[key] = (free, clusters)
        return free, clusters

    def flat_dsdo_cm(self) -> float:
        """The sample's flat dΣ/dΩ (cm⁻¹): (1 − φ)·the buffer's + φ·the particles' own."""
        phi = self.volume_fraction
        return (1 - phi) * self.buffer_preset["dsdo_cm"] + phi * self.particle_dsdo_cm

    def dsdo(self, q_nm, dose_s: float | None = None) -> np.ndarray:
        """The sample's dΣ/dΩ (cm⁻¹) at ``q_nm`` (nm⁻¹): particles (at ``dose_s``, default the current dose) + flat."""
        curve = self.particle_curve(self.dose_s if dose_s is None else dose_s)
        return interpolate(curve, q_nm) + self.flat_dsdo_cm()

    def buffer_dsdo(self, q_nm) -> np.ndarray:
        """dΣ/dΩ (cm⁻¹) of the buffer at ``q_nm``: flat."""
        return np.full(np.shape(q_nm), float(self.buffer_preset["dsdo_cm"]))

    def attenuation(self, slot: str, energy_keV: float) -> float:
        """μ (cm⁻¹) of what fills ``slot`` at ``energy_keV``: the suspension (volume-weighted), buffer, standard, 0."""
        b = self.buffer_preset
        mu_buffer = attenuation_per_cm(b["formula"], b["density_g_cm3"], energy_keV)
        if slot == "sample":
            phi = self.volume_fraction
            return phi * attenuation_per_cm(self.formula, self.density_g_cm3, energy_keV) + (1 - phi) * mu_buffer
        if slot == "buffer":
            return mu_buffer
        if slot == "standard":
            s = presets()["standard"]["glassy-carbon"]
            return attenuation_per_cm(s["formula"], s["density_g_cm3"], energy_keV)
        return 0.0

    def transmission(self, position: float | str, energy_keV: float) -> float:
        """Transmission at ``energy_keV`` of the cell position (mm or slot name; 0 where the holder blocks the beam)."""
        beam = in_beam(position)
        if beam.slot is None:
            return 0.0
        cell = presets()["cell"]
        mu_wall = attenuation_per_cm(cell["wall_formula"], cell["wall_density_g_cm3"], energy_keV)
        return math.exp(-self.attenuation(beam.slot, energy_keV) * beam.path_cm - mu_wall * beam.wall_cm)

    def scattering(self, position: float | str, q_nm, dose_s: float | None = None) -> np.ndarray:
        """Scattered photons per incident photon and sr at ``q_nm`` before attenuation: d·dΣ/dΩ + walls + parasitic
        (0 where the holder blocks the beam)."""
        beam = in_beam(position)
        q = np.asarray(q_nm, dtype=float)
        if beam.slot is None:
            return np.zeros(q.shape)
        if beam.slot == "sample":
            liquid = self.dsdo(q, dose_s)
        elif beam.slot == "buffer":
            liquid = self.buffer_dsdo(q)
        elif beam.slot == "standard":
            liquid = standard_dsdo(q)
        else:
            liquid = np.zeros(q.shape)
        return beam.path_cm * liquid + beam.wall_cm * presets()["cell"]["wall_dsdo_cm"] + parasitic(q)

    def incident_photons(self, t: float, current_ma: float | None = None, attenuator: float = 1.0) -> float:
        """Photons on the sample in ``t`` s at ``current_ma`` (default: the reference current) through beamline
        filters of transmission ``attenuator`` (upstream of the i0 chamber: they scale every count alike)."""
        beam = presets()["beam"]
        current = beam["reference_current_ma"] if current_ma is None else float(current_ma)
        return beam["flux_ph_s"] * float(t) * float(attenuator) * current / beam["reference_current_ma"]

    def _unit_rates(self, geometry: DetectorGeometry, position: float | str, dose_s: float) -> tuple[np.ndarray, float]:
        """Expected counts per incident photon in the active pixels, and the transmission."""
        beam = in_beam(position)
        varies = beam.slot == "sample" and self.damaging
        key = (geometry, beam)
        if not varies and key in self._cache:
            return self._cache[key]
        px = _pixels(geometry)
        transmission = self.transmission(position, geometry.energy_keV)
        curve = transmission * self.scattering(position, Q_GRID_NM, dose_s)
        rates = px.response * (curve[px.index] + px.weight * (curve[px.index + 1] - curve[px.index]))
        if not varies:
            self._cache[key] = (rates, transmission)
        return rates, transmission

    def expected_frame(self, geometry: DetectorGeometry, cell_position: float | str, t: float,
                       current_ma: float | None = None, dose_s: float | None = None,
                       attenuator: float = 1.0) -> ExpectedFrame:
        """Expected counts of a ``t`` s frame at ``cell_position`` (mm or slot name) with the ring at ``current_ma``
        (default: the reference current), filters of transmission ``attenuator``, and the sample at ``dose_s``
        (default: its dose at mid-exposure)."""
        photons = self.incident_photons(t, current_ma, attenuator)
        if dose_s is None:
            dose_s = self.dose_s + 0.5 * photons / presets()["beam"]["flux_ph_s"]
        rates, transmission = self._unit_rates(geometry, cell_position, dose_s)
        px = _pixels(geometry)
        image = np.zeros(geometry.shape[0] * geometry.shape[1])
        image[px.active] = photons * rates + presets()["detector"]["dark_cps_per_pixel"] * float(t)
        beam = presets()["beam"]
        return ExpectedFrame(image.reshape(geometry.shape), photons * beam["i0_counts_per_photon"],
                             photons * transmission * beam["diode_counts_per_photon"])

    def frame(self, geometry: DetectorGeometry, cell_position: float | str, t: float, rng: np.random.Generator,
              current_ma: float | None = None, attenuator: float = 1.0) -> SAXSFrame:
        """One Poisson frame of ``t`` s at ``cell_position`` (``expected_frame``'s counts); a frame on the sample
        adds its dose (s at the reference current, through the filters) to the sample's."""
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"exposure {t!r} s is not positive")
        if not 0 < attenuator <= 1:
            raise ValueError(f"attenuator transmission {attenuator!r} is not in (0, 1]")
        photons = self.incident_photons(t, current_ma, attenuator)
        dose = photons / presets()["beam"]["flux_ph_s"]
        beam = in_beam(cell_position)
        rates, transmission = self._unit_rates(geometry, cell_position, self.dose_s + 0.5 * dose)
        px = _pixels(geometry)
        lam = photons * rates
        dark = presets()["detector"]["dark_cps_per_pixel"] * float(t)
        if dark:
            lam = lam + dark
        image = px.template.copy()
        image.ravel()[px.active] = rng.poisson(lam)
        if beam.slot == "sample":
            self.dose_s += dose
        b = presets()["beam"]
        return SAXSFrame(image, _monitor(rng, photons, b["i0_absorbed_fraction"], b["i0_counts_per_photon"]),
                         _monitor(rng, photons * transmission, b["diode_absorbed_fraction"],
                                  b["diode_counts_per_photon"]))


def _monitor(rng: np.random.Generator, photons: float, absorbed: float, counts_per_photon: float) -> float:
    """Scaler counts of a monitor crossed by ``photons``: Poisson in the photons it absorbs (fraction ``absorbed``),
    converted to ``counts_per_photon`` counts per crossing photon on average (its current, through a V/F)."""
    return float(rng.poisson(photons * absorbed) * counts_per_photon / absorbed)


def sample_presets() -> dict[str, dict]:
    """The ``[sample.*]`` tables of ``presets.toml`` by name."""
    return presets()["sample"]


def saxs_sample(name: str | SAXSSample, **changes) -> SAXSSample:
    """A fresh preset sample ``name`` (any case; ``ValueError`` naming the close names) with ``changes`` to its
    fields (e.g. ``damage={"aggregation_per_s": 0.02}``, ``radius_pd=0.1``); a ``SAXSSample`` is copied."""
    if isinstance(name, SAXSSample):
        return replace(name, **changes)
    key = one_of(name, sample_presets(), "SAXS sample")
    values = {**sample_presets()[key], **changes}
    known = {f for f in SAXSSample.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"SAXS sample {key!r}: unknown key {unknown[0]!r}; {suggestion(unknown[0], known, 'keys')}")
    return SAXSSample(name=key, **values)
