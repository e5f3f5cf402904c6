"""The magnetic-Compton spin-moment agent: exact posterior after every flip cycle, stop on target.

Sufficient statistics are the running, monitor-normalised count sums of the + and − field
directions per channel (and their Poisson variances); each cycle adds into them and the exact
grid posterior (agent.core.linear_posterior) is recomputed from them in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from agent.compton.cycle_input import InvalidCycle, checked_cycle
from agent.compton.model import ComptonGeometry, MCSModel
from agent.compton.profiles import checked_element
from agent.core.linear_posterior import GridPosterior, LinearGridPosterior
from agent.core.protocol import BayesAgent
from agent.core.stopping import Budget, Plateau, StopRule, TargetStd, any_of

DEFAULT_GAMMA_GRID = np.linspace(0.15, 0.75, 25)  # resolution FWHM, a.u.
DEFAULT_MISFIT_CENTRES = np.arange(0.0, 4.01, 0.5)  # discrepancy basis centres, a.u. (the valence region)
DEFAULT_MISFIT_FWHM_AU = 0.8  # discrepancy basis width before resolution, a.u.
# Prior std of each discrepancy amplitude, μB: below 1e-3 no misfit any reachable statistics could see.
DEFAULT_MISFIT_GRID = np.geomspace(1e-3, 1.0, 19)
INTERVAL_LEVELS = (0.68, 0.95)


def _level_key(level: float) -> str:
    return f"{round(100 * level)}"


class SpinMomentAgent(BayesAgent):
    """Posterior of the orbital amplitudes a_k (μB), the spin moment μ_s (μB, the whole area: orbitals plus
    discrepancy), the resolution Γ (a.u.) and the misfit size τ (μB, the prior std of each discrepancy
    amplitude), marginalised exactly on a (Γ, τ) grid. The counting noise is Poisson and known: misfit is
    a structured discrepancy term (``agent.compton.model``), not a white inflation of the noise. The prior of
    Γ is the instrument's resolution (``geometry.resolution_fwhm_au`` ± ``resolution_rel_std``; uniform over
    ``gamma_grid`` when that std is 0). ``mu_s_sys_std``: the scale systematic of μ_s from the κ calibration
    (|μ_s|·``flipping_factor_rel_std``), reported beside the statistical std, never in the stop rule.

    ``points`` given to ``ingest``: one dict per completed flip cycle with ``spectra`` (m, channels)
    counts, ``fields`` (m,) the field signs (+1/−1), ``monitors`` (m,) incident-beam monitor counts,
    optional ``count_time_s`` (s), ``beamtime_s`` (beamtime elapsed at the end of the cycle, s) and ``_id``.
    A cycle that fails its check (``agent.compton.cycle_input``) raises ``InvalidCycle`` and leaves the agent
    exactly as it was; of a list, the cycles before it are kept.
    """

    def __init__(self, stop_rule: StopRule, element: str = "Fe", orbitals: Sequence[str] = ("3d", "4s"),
                 geometry: ComptonGeometry | None = None, pz_window: float = 10.0,
                 gamma_grid=DEFAULT_GAMMA_GRID, misfit_grid=DEFAULT_MISFIT_GRID,
                 misfit_centres=DEFAULT_MISFIT_CENTRES, misfit_fwhm_au: float = DEFAULT_MISFIT_FWHM_AU,
                 prior_sd_mub: float = 5.0, checkpoint_path=None):
        self.orbitals = tuple(orbitals)
        self.element = checked_element(element, self.orbitals)  # before anything moves, not at the run's start
        self.quantities = ("mu_s", *(f"a{o}" for o in self.orbitals), "gamma", "misfit")
        super().__init__(stop_rule, checkpoint_path)
        self.pz_window = float(pz_window)
        self.gamma_grid = np.asarray(gamma_grid, dtype=float)
        self.misfit_grid = np.asarray(misfit_grid, dtype=float)
        self.misfit_centres = np.asarray(misfit_centres, dtype=float)
        self.misfit_fwhm_au = float(misfit_fwhm_au)
        if np.any(self.misfit_grid <= 0) or not self.misfit_fwhm_au > 0:
            raise ValueError("the misfit grid and the misfit basis width must be positive")
        self.prior_sd_mub = float(prior_sd_mub)
        if not self.prior_sd_mub > 0:
            raise ValueError("prior_sd_mub must be positive")
        self.model: MCSModel | None = None
        self._solver: LinearGridPosterior | None = None
        self._post: GridPosterior | None = None
        self._reset_sums(0)
        if geometry is not None:
            self.configure(geometry)

    # -- set-up ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Element, orbitals, p_z window (a.u.), prior sd (μB), the (Γ, τ) grids and the discrepancy basis; the
        geometry is the detector's configuration, read from each run."""
        return {"element": self.element, "orbitals": list(self.orbitals), "pz_window": self.pz_window,
                "prior_sd_mub": self.prior_sd_mub, "gamma_grid": self.gamma_grid.tolist(),
                "misfit_grid": self.misfit_grid.tolist(), "misfit_centres": self.misfit_centres.tolist(),
                "misfit_fwhm_au": self.misfit_fwhm_au}

    def configure(self, geometry: ComptonGeometry) -> None:
        """Build the forward model for a detector calibration (keeps data if it is unchanged)."""
        if self.model is not None and self.model.geometry.same_as(geometry):
            return
        if self.cycles:
            raise ValueError("detector calibration changed in the middle of a measurement")
        self.model, self._solver = self._model_and_solver(geometry)
        self._reset_sums(geometry.energy_kev.size)

    def _model_and_solver(self, geometry: ComptonGeometry, ms_fraction: float | None = None):
        """The forward model and exact solver for ``geometry`` (``ms_fraction``: instead of the geometry's)."""
        return _model_and_solver(self.element, self.orbitals, geometry, tuple(self.gamma_grid), self.pz_window,
                                 tuple(self.misfit_centres), self.misfit_fwhm_au, tuple(self.misfit_grid),
                                 self.prior_sd_mub, ms_fraction)

    def _reset_sums(self, n_channels: int) -> None:
        self.sums = np.zeros((4, n_channels))  # Σ+ counts, Σ− counts, var+, var−
        self.exposure_s = np.zeros(2)  # Σ scale × live time per field sign (s): the room background's exposure
        self.monitor_ref: float | None = None
        self.cycles = 0
        self.count_time_s = 0.0
        self.beamtime_s = 0.0
        self._post = None

    # -- ingest ---------------------------------------------------------------------------
    def _ingest_one(self, point: Mapping) -> None:
        """Add one flip cycle, or refuse it (``InvalidCycle``) leaving every sum, count and the posterior as
        they were: the whole cycle is checked (``checked_cycle``) and the posterior of the new sums computed
        before anything is kept."""
        if self.model is None:
            raise RuntimeError("agent has no detector geometry yet: call configure() first")
        label = point.get("_id", self.cycles) if isinstance(point, Mapping) else self.cycles
        spectra, fields, monitors, live = checked_cycle(point, self.sums.shape[1], label)
        monitor_ref = float(monitors.mean()) if self.monitor_ref is None else self.monitor_ref
        scale = monitor_ref / monitors
        sums, exposure = self.sums.copy(), self.exposure_s.copy()
        for sign, row in ((1, 0), (-1, 1)):
            sel = fields == sign
            sums[row] += scale[sel] @ spectra[sel]
            sums[row + 2] += scale[sel] ** 2 @ spectra[sel]
            if live is not None:
                exposure[row] += scale[sel] @ live[sel]
        try:
            post = self._solver.fit(*self.model.reduce(*sums, exposure))
        except ValueError as exc:  # e.g. no counts inside the p_z window yet
            raise InvalidCycle(f"cycle {label} refused (the agent is unchanged): {exc}") from None
        count_time = float(point.get("count_time_s", 0.0))
        self.sums, self.exposure_s, self.monitor_ref, self._post = sums, exposure, monitor_ref, post
        self.cycles += 1
        self.count_time_s += count_time
        self.beamtime_s = float(point.get("beamtime_s", self.beamtime_s + count_time))

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """The next measurement is always another flip cycle; ``_id`` numbers them."""
        return [{"cycle": self.cycles + i, "_id": self.cycles + i} for i in range(num_points)]

    # -- posterior ------------------------------------------------------------------------
    def coefficients(self, quantity: str) -> np.ndarray:
        """Linear combination of the amplitudes that is ``quantity`` (mu_s or a<orbital>)."""
        if quantity == "mu_s":
            return self.model.areas
        names = [f"a{o}" for o in self.orbitals]
        if quantity in names:
            return np.eye(self.model.areas.size)[names.index(quantity)]
        raise ValueError(f"{quantity!r} is not a linear quantity of this agent ({', '.join(names)}, mu_s)")

    def posterior(self) -> dict[str, Any]:
        """Exact marginals: ``Mixture1D`` for mu_s and each amplitude (μB), (mean, std) of Γ (a.u.)
        and the misfit size τ (μB), the log evidence (nats) and the full ``GridPosterior``."""
        if self._post is None:
            raise RuntimeError("no data ingested yet")
        out: dict[str, Any] = {q: self._post.marginal(self.coefficients(q))
                               for q in ("mu_s", *(f"a{o}" for o in self.orbitals))}
        out["gamma"] = self._post.grid_marginal("gamma")
        out["misfit"] = self._post.grid_marginal("scale")
        out["log_evidence"] = self._post.log_evidence
        out["grid"] = self._post
        return out

    def systematics(self) -> dict[str, float]:
        """The systematic uncertainties of μ_s (μB, 1σ), kept apart from its statistical std (``statistical``):
        ``kappa``, the scale systematic of the flipping-factor calibration on its reference, |μ_s|·σ_κ/κ;
        ``multiple_scattering``, |Δμ_s| when the fixed multiple-scattering fraction moves by its stated std
        (the posterior refitted with that model); ``pz_calibration``, the quadrature of |Δμ_s| when the MCA's
        energy offset and E₁ each move by their stated std (refitted on the shifted p_z scale); ``total`` in
        quadrature. None of it enters the stop rule."""
        if self._post is None:
            raise RuntimeError("no data ingested yet")
        g = self.model.geometry
        mix = self._post.marginal(self.coefficients("mu_s"))
        out = {"statistical": float(mix.std), "kappa": abs(mix.mean) * g.flipping_factor_rel_std,
               "multiple_scattering": 0.0, "pz_calibration": 0.0}
        if g.ms_fraction > 0 and g.ms_fraction_rel_std > 0:
            shifted, solver = self._model_and_solver(g, g.ms_fraction * (1.0 + g.ms_fraction_rel_std))
            moved = solver.fit(*shifted.reduce(*self.sums, self.exposure_s)).marginal(shifted.areas).mean
            out["multiple_scattering"] = abs(moved - mix.mean)
        shifts = []
        for shifted_geometry in self._calibration_shifts():
            shifted, solver = self._model_and_solver(shifted_geometry)
            post = solver.fit(*shifted.reduce(*self.sums, self.exposure_s))
            shifts.append(post.marginal(shifted.areas).mean - mix.mean)
        out["pz_calibration"] = float(np.sqrt(np.sum(np.square(shifts)))) if shifts else 0.0
        out["total"] = float(np.sqrt(out["kappa"] ** 2 + out["multiple_scattering"] ** 2 + out["pz_calibration"] ** 2))
        return out

    def _calibration_shifts(self) -> list[ComptonGeometry]:
        """The geometry with the MCA offset, then E₁, moved by their stated std (those that have one); made once
        per configuration, so their models are shared too."""
        g = self.model.geometry
        if getattr(self, "_shifts_of", None) is not g:
            self._shifts = ([replace(g, energy_kev=g.energy_kev + g.energy_offset_std_kev)]
                            if g.energy_offset_std_kev else [])
            if g.incident_std_kev:
                self._shifts.append(replace(g, incident_kev=g.incident_kev + g.incident_std_kev))
            self._shifts_of = g
        return self._shifts

    def fitted_profile(self, pz=None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior-mean components (k + 1, n): the orbitals, then the discrepancy's sum, and the total (n) of
        the MCP on the window channels (μB/a.u.)."""
        post = self._post
        comp = np.einsum("gs,gnk,gsk->kn", post.weights, self.model.design, post.means)
        k = len(self.orbitals)
        comp = np.vstack([comp[:k], comp[k:].sum(axis=0, keepdims=True)])
        return comp, comp.sum(axis=0)

    def _summary(self) -> dict[str, Any]:
        rep: dict[str, Any] = {"cycles": self.cycles, "count_time_s": self.count_time_s,
                               "beamtime_s": self.beamtime_s}
        names = ("mu_s", *(f"a{o}" for o in self.orbitals))
        probs = [p for lv in INTERVAL_LEVELS for p in ((1 - lv) / 2, (1 + lv) / 2)]
        if self._post is not None:
            mix = self._post.marginal(np.stack([self.coefficients(q) for q in names]))
            mean, std, bounds = mix.mean, mix.std, mix.quantiles(probs)
        else:
            mean = std = np.full(len(names), np.nan)
            bounds = np.full((len(names), len(probs)), np.nan)
        for i, q in enumerate(names):
            rep[f"{q}_mean"], rep[f"{q}_std"] = float(mean[i]), float(std[i])
            for j, lv in enumerate(INTERVAL_LEVELS):
                rep[f"{q}_lo{_level_key(lv)}"] = float(bounds[i, 2 * j])
                rep[f"{q}_hi{_level_key(lv)}"] = float(bounds[i, 2 * j + 1])
        rep["mu_s_sys_std"] = abs(rep["mu_s_mean"]) * self.model.geometry.flipping_factor_rel_std \
            if self.model is not None else np.nan
        rep["mu_s_total_std"] = float(np.hypot(rep["mu_s_std"], rep["mu_s_sys_std"]))
        for q, axis in (("gamma", "gamma"), ("misfit", "scale")):
            rep[f"{q}_mean"], rep[f"{q}_std"] = self._post.grid_marginal(axis) if self._post else (np.nan, np.nan)
        rep["log_evidence"] = self._post.log_evidence if self._post else np.nan
        return rep

    # -- checkpoint -----------------------------------------------------------------------
    def state(self):
        meta = {"cycles": self.cycles, "count_time_s": self.count_time_s, "beamtime_s": self.beamtime_s,
                "monitor_ref": self.monitor_ref}
        return {"sums": self.sums, "exposure_s": self.exposure_s}, meta

    def load_state(self, arrays, meta):
        self.sums = np.array(arrays["sums"], dtype=float)
        self.exposure_s = np.array(arrays.get("exposure_s", np.zeros(2)), dtype=float)
        self.cycles, self.monitor_ref = int(meta["cycles"]), meta["monitor_ref"]
        self.count_time_s, self.beamtime_s = float(meta["count_time_s"]), float(meta["beamtime_s"])
        self._post = self._solver.fit(*self.reduced()) if self.cycles else None

    def reduced(self) -> tuple[np.ndarray, np.ndarray]:
        """The measured J_mag (μB/a.u.) and its variance on the window channels, from the sums so far."""
        return self.model.reduce(*self.sums, self.exposure_s)


@lru_cache(maxsize=16)
def _model_and_solver(element, orbitals, geometry, gamma_grid, pz_window, misfit_centres, misfit_fwhm_au, misfit_grid,
                      prior_sd_mub, ms_fraction) -> tuple[MCSModel, LinearGridPosterior]:
    """MCSModel and LinearGridPosterior (both immutable), shared by the agents of one detector configuration
    (``geometry`` is keyed by identity: the runs of a session, the beamtimes of a rehearsal)."""
    model = MCSModel(element, orbitals, geometry, np.asarray(gamma_grid), pz_window, np.asarray(misfit_centres),
                     misfit_fwhm_au, ms_fraction=ms_fraction)
    k, m = len(orbitals), len(misfit_centres)
    prior_var = np.r_[np.full(k, prior_sd_mub**2), np.ones(m)]
    solver = LinearGridPosterior(model.design, np.asarray(gamma_grid), np.asarray(misfit_grid), np.zeros(k + m),
                                 np.diag(prior_var), scaled=np.r_[np.zeros(k, bool), np.ones(m, bool)],
                                 gamma_log_prior=gamma_log_prior(np.asarray(gamma_grid), geometry))
    return model, solver


def gamma_log_prior(gamma_grid: np.ndarray, geometry: ComptonGeometry) -> np.ndarray | None:
    """Log prior weights of the Γ grid: a normal of the instrument's resolution FWHM (a.u.) and its std
    (``resolution_rel_std`` of it); None (uniform) without a stated std."""
    sd = geometry.resolution_fwhm_au * geometry.resolution_rel_std
    if not sd > 0:
        return None
    return -0.5 * ((np.asarray(gamma_grid) - geometry.resolution_fwhm_au) / sd) ** 2


def spin_moment_agent(target_std: float = 0.01, quantity: str = "mu_s", max_cycles: int | None = 136,
                      plateau: tuple[int, float] | None = None, **kwargs) -> SpinMomentAgent:
    """The beamline default: stop when std(``quantity``) ≤ ``target_std`` (μB), when the budget of
    ``max_cycles`` is spent, or (optionally) when the std plateaus over ``plateau=(k, rel)`` cycles."""
    rules: list[StopRule] = [TargetStd(quantity, target_std)]
    if plateau is not None:
        rules.append(Plateau(quantity, k=plateau[0], rel=plateau[1]))
    if max_cycles is not None:
        if int(max_cycles) != max_cycles or max_cycles < 1:
            raise ValueError(f"max_cycles must be an integer >= 1, got {max_cycles!r}")
        rules.append(Budget(cycles=int(max_cycles)))
    return SpinMomentAgent(any_of(*rules), **kwargs)
