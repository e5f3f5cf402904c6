"""The XAS agent: picks each next energy and dwell by cost-aware A-optimal design, adapts the edge
step, a rigid edge shift and the prior scale to the data, and stops on the predicted RMSE (DESIGN §3, §4.2)
or, given a ``quantity`` (``agent.xas.quantities``: valence, edge position, pre-edge, fractions), designs
for the posterior variance of that quantity per second and stops on its std.

Suggestions: ``{"energy": eV, "dwell": s, "_id": k}``; outcomes: ``{"_id", "energy", "i0", "it"[, "dwell"]}``, in
fluorescence mode ``{"_id", "energy", "i0", "if", "dwell"[, "it"]}`` (``agent.xas.fluorescence``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg, optimize

from agent.core.protocol import BayesAgent
from agent.core.stopping import Budget, History, StopRule, TargetStd, _positive, any_of, leaf_rules
from agent.xas.design import CountingNoise, MoveCost, Nuisance, XASPosterior, choose_next
from agent.xas.fluorescence import FluorescenceNoise, FluorescenceSample
from agent.xas.prior import PRIORS, GaussianPrior, SpectraLibrary, rebuild_prior
from agent.xas.quantities import Quantity, make_quantity, shift_matrix
from agent.xas.reference_foil import ReferenceFoil

MIN_SWEEP = 12  # points in the first sweeps; later ones grow to half the points measured so far
JACOBIAN_DRAWS = 7  # posterior draws whose Jacobians join the mean's in a nonlinear quantity's design
CHECK_DRAWS = 256  # posterior draws that check a nonlinear quantity's delta-method std near the target
MIN_FOIL_POINTS = 6  # foil points before its harmonic fraction replaces the sample's prior of it
CHAMBER_RATIO_SD = 0.3  # relative sd of the I0/It efficiency ratio that links the foil's harmonic to the sample's
MODES = ("transmission", "fluorescence")
#: Fluorescence's nuisance priors, y in units of its fitted edge step (``XASAgent._fix_unit``): A ≈ 1.
FLUORESCENCE_NUISANCE = Nuisance(amp_mean=1.0, amp_sd=1.0)


@dataclass(frozen=True)
class TargetRMSE(StopRule):
    """Stop when the predicted RMSE of the design target (report key ``rmse_pred``; the measured
    spectrum in edge-step units by default, see ``agent.xas.design.TARGETS``) <= ``target``."""

    target: float

    def __post_init__(self):
        _positive("target RMSE", self.target)
        object.__setattr__(self, "quantities", ("rmse",))

    def check(self, history: History) -> str | None:
        if history and history[-1]["rmse_pred"] <= self.target:
            return f"target_rmse: predicted RMSE = {history[-1]['rmse_pred']:.4g} <= {self.target:.4g}"
        return None


class XASAgent(BayesAgent):
    """Sequential Bayesian design of XAS energies on the prior's grid.

    ``strategy``: ``"greedy"`` picks each point by expected trace reduction per second of dwell +
    move from the current energy; ``"sweep"`` (default) plans up to ``sweep_points`` points (half as
    many as measured so far, at least 12: short sweeps while the model is still moving) greedily per
    second of dwell + settle on a fantasised posterior, then measures them in one monotonic sweep
    of the monochromator (travel shared by the batch), re-planning from the real posterior after
    each sweep or model refit (a point picked twice in a sweep is counted once, for the summed dwell).
    ``dwell_options`` (s) are the dwell times it may choose; ``avoid_eV``: energy windows [lo, hi] (eV)
    never chosen (the monochromator's mapped glitches); ``energy_limits`` (eV) restrict the
    candidates (e.g. to the monochromator range); ``adapt`` re-estimates amplitude, edge shift and
    prior scale (relinearising the model) on a geometric schedule of point counts. ``target`` is the
    spectrum whose error the design reduces and the stop rule judges (``agent.xas.design.TARGETS``).
    ``quantity`` (``agent.xas.quantities.Quantity`` on the prior's grid): the design reduces the posterior
    variance of that quantity instead (linearised at the current posterior mean, re-linearised each
    sweep), and ``report`` gives ``<name>_mean``, ``_std`` (with the quantity's floor), ``_lower``/``_upper``
    (95 %), per component for fractions (``fraction_<component>_...``, ``fractions_std`` the largest).
    ``mode="fluorescence"``: the data are If/I0 of a dilute sample of ``composition`` (a ``FluorescenceSample`` or
    its fields), self-absorption linearised about the posterior mean at each refit, the noise a
    ``FluorescenceNoise`` (its ``dead_time_s``: the detector's stated τ). If/I0 carries the detector's unknown
    gain, so y is re-expressed once, at the first refit, in units of its edge step there (``_fix_unit``;
    ``fluorescence_unit`` in the report, If/I0 per unit; the first point's own value before): the nuisance priors
    then mean what they mean in transmission (an empirical-Bayes choice of scale from the first ~6 points). The
    ``absorbance`` target is then the self-absorption-corrected spectrum (A μ + B + c3 u³ + c4 u⁴) / A."""

    def __init__(self, prior: GaussianPrior, stop_rule: StopRule, nuisance: Nuisance | None = None,
                 noise: CountingNoise | None = None, cost: MoveCost | None = None,
                 dwell_options=(2.0, 4.0), energy_limits: tuple[float, float] | None = None,
                 avoid_eV=(),
                 adapt: bool = True, scale_prior_sd: float = 1.0, strategy: str = "sweep",
                 sweep_points: int = 96, target: str = "absorbance", quantity: Quantity | None = None,
                 checkpoint_path=None, mode: str = "transmission",
                 composition: FluorescenceSample | Mapping[str, Any] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        fluorescence = mode == "fluorescence"
        if composition is not None and not fluorescence:
            raise ValueError("a sample composition is for mode='fluorescence'")
        if fluorescence and not isinstance(composition, FluorescenceSample):
            composition = FluorescenceSample(**dict(composition or {}))
        noise_type = FluorescenceNoise if fluorescence else CountingNoise
        if noise is not None and not isinstance(noise, noise_type):
            raise ValueError(f"{mode} mode counts with a {noise_type.__name__}, got a {type(noise).__name__}")
        self.mode, self.composition = mode, composition
        self._unit_fixed = False
        self._sample_mut: list[float] = []  # fluorescence: ln(I0/It) of the points that measured It (the foil's)
        self.quantity = quantity
        self.quantities = ("rmse",) + ((quantity.name,) if quantity is not None else ())
        if quantity is not None and np.shape(quantity.energy) != np.shape(prior.energy):
            raise ValueError(f"the {quantity.name} quantity is on {np.size(quantity.energy)} energies, the prior on "
                             f"{np.size(prior.energy)}")
        super().__init__(stop_rule, checkpoint_path)
        if strategy not in ("sweep", "greedy"):
            raise ValueError(f"strategy must be 'sweep' or 'greedy', got {strategy!r}")
        if int(sweep_points) < 1:
            raise ValueError(f"sweep_points must be >= 1, got {sweep_points!r}")
        self.strategy, self.sweep_points = strategy, int(sweep_points)
        self._queue: list[tuple[float, float, float]] = []
        self._suggested: dict[Any, tuple[float, float, float]] = {}
        self.dwell_options = np.asarray(dwell_options, float)
        if self.dwell_options.size == 0 or not np.all(self.dwell_options > 0):
            raise ValueError(f"dwell options must be positive seconds, got {dwell_options!r}")
        self.noise, self.cost = noise or noise_type(), cost or MoveCost()
        nuisance = nuisance or (FLUORESCENCE_NUISANCE if fluorescence else Nuisance())
        self.adapt, self.scale_prior_sd = adapt, scale_prior_sd
        self.prior_source, self.target = prior.source, target
        if hasattr(prior, "phi_sp"):  # a low-rank BasisPrior (the EXAFS range): memory O(n r), not n²
            from agent.xas.basis import BasisPosterior

            self.post = BasisPosterior(prior, nuisance, target=target, measurement=composition)
        else:
            self.post = XASPosterior(prior, nuisance, target=target, measurement=composition)
        e = self.post.energy
        lo, hi = energy_limits if energy_limits is not None else (e[0], e[-1])
        self.candidates = (e >= lo - 1e-9) & (e <= hi + 1e-9)
        self.avoid_eV = [[float(a), float(b)] for a, b in avoid_eV]
        for a, b in self.avoid_eV:  # the monochromator's mapped glitches: never chosen
            self.candidates &= ~((e >= a) & (e <= b))
        if not self.candidates.any():
            raise ValueError(f"energy limits {lo}-{hi} eV exclude the whole grid {e[0]:.1f}-{e[-1]:.1f} eV")
        self.energy_limits = (float(lo), float(hi))
        self.current_eV: float | None = None
        self.beamtime_s = 0.0
        self.dwells: list[float] = []
        self._next_id = 0
        self._next_refit = 6
        self._last: dict[str, float] = {}
        self.foil: ReferenceFoil | None = None  # the reference-foil channel's posterior, from the first iref

    # -- protocol ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The prior's ``source`` (``None``: a prior that cannot be rebuilt), the nuisance priors, counting
        noise (fluorescence: not its data unit, which the data fix) and move cost, the dwell options (s), energy
        limits (eV), the design settings, the ``mode`` and the fluorescence sample's ``composition``."""
        noise = dataclasses.asdict(self.noise)
        noise.pop("unit", None)
        return {"prior": self.prior_source, "nuisance": dataclasses.asdict(self.post.nuisance),
                "mode": self.mode, "composition": dataclasses.asdict(self.composition) if self.composition else None,
                "noise": noise, "cost": dataclasses.asdict(self.cost),
                "dwell_options": self.dwell_options.tolist(), "energy_limits": list(self.energy_limits),
                "avoid_eV": self.avoid_eV,
                "adapt": bool(self.adapt), "scale_prior_sd": float(self.scale_prior_sd), "strategy": self.strategy,
                "sweep_points": self.sweep_points, "target": self.target, "quantity": self.quantity_spec()}

    def quantity_spec(self) -> dict[str, Any] | None:
        """The quantity as JSON values (name, components, axis calibration eV): ``make_quantity`` rebuilds it."""
        q = self.quantity
        if q is None:
            return None
        return {"name": q.name, "components": list(q.labels) if q.name == "fractions" else None,
                "calibration_eV": float(q.calibration_eV)}

    @classmethod
    def from_config(cls, stop_rule: StopRule, config: Mapping[str, Any]) -> XASAgent:
        """``ValueError`` if the prior cannot be rebuilt (``agent.xas.prior.rebuild_prior``)."""
        config = dict(config)
        source = config.pop("prior", None)
        if source is None:
            raise ValueError("the agent's prior was not made by library_prior or reference_prior: it cannot be "
                             "rebuilt")
        prior = rebuild_prior(source)
        spec = config.pop("quantity", None)
        if spec:
            lib = library_covering(prior)  # the valence predictor learns from the prior's own standards
            config["quantity"] = make_quantity(spec["name"], prior.energy, lib, spec.get("components"),
                                               spec.get("calibration_eV"), training=lib.only(source["standards"]))
        mode = config.pop("mode", None) or "transmission"
        noise = (FluorescenceNoise if mode == "fluorescence" else CountingNoise)(**config.pop("noise", {}))
        return cls(prior, stop_rule, nuisance=Nuisance(**config.pop("nuisance", {})), mode=mode,
                   noise=noise, cost=MoveCost(**config.pop("cost", {})),
                   energy_limits=tuple(config.pop("energy_limits")) if config.get("energy_limits") else None,
                   **config)

    def adopt_dead_time(self, dead_time_s: float) -> None:
        """Fluorescence: count with the detector's stated dead time ``dead_time_s`` (s) if the agent was given none;
        ``ValueError`` if it was given another."""
        tau = float(dead_time_s)
        if not (np.isfinite(tau) and tau >= 0):
            raise ValueError(f"the fluorescence detector states a dead time of {dead_time_s!r} s")
        given = self.noise.dead_time_s
        if given is None:
            self.noise = dataclasses.replace(self.noise, dead_time_s=tau)
        elif not np.isclose(given, tau, rtol=1e-9, atol=0.0):
            raise ValueError(f"the agent's dead time {given:g} s is not the fluorescence detector's stated {tau:g} s")

    def at(self, energy_eV: float) -> None:
        """Tell the agent where the monochromator is (eV), so the first move is costed right."""
        self.current_eV = float(energy_eV)
        self._queue = []

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """Next ``num_points`` settings (``_id`` numbered in order)."""
        if self.strategy == "greedy":
            return self._suggest_greedy(num_points)
        out = []
        while len(out) < num_points:
            if not self._queue:
                self._plan_sweep()
            energy, dwell, score = self._queue.pop(0)
            out.append({"energy": energy, "dwell": dwell, "_id": self._next_id})
            self._suggested[self._next_id] = (energy, dwell, score)
            self._next_id += 1
        self._queue = [self._suggested[o["_id"]] for o in out] + self._queue
        self._last = {"next_energy": out[0]["energy"], "next_dwell": out[0]["dwell"], "next_score": 0.0}
        return out

    def posterior_samples(self, k: int, seed: int = 0) -> np.ndarray:
        """``k`` draws (k, n) of normalised μ on the grid from the posterior (a fixed ``seed``: the same
        posterior gives the same draws, so a decision can be re-derived)."""
        return self.post.sample_mu(k, np.random.default_rng(seed))

    def quantity_weights(self) -> np.ndarray | None:
        """The design's weights: the quantity's Jacobian (q, n) at the posterior mean of μ, and for a
        nonlinear quantity also at ``JACOBIAN_DRAWS`` posterior draws (rows scaled so the criterion is
        their average: a point that decides between two candidate edges counts). None for the
        whole-spectrum design, or while no draw has the quantity defined (no edge found)."""
        q = self.quantity
        if q is None:
            return None
        align, chain, _ = self._alignment()
        draws = [] if q.linear else list(self.posterior_samples(JACOBIAN_DRAWS, len(self.post.data_e)))
        mus = align(np.vstack([self.post.mean] + draws))
        jacs = []
        for mu in mus:
            try:
                jacs.append(chain(q.evaluate(mu)[1]))
            except ValueError:
                pass
        return np.vstack(jacs) / np.sqrt(len(jacs)) if jacs else None

    def quantity_jacobian(self) -> np.ndarray | None:
        """The quantity's Jacobian (q, n) with respect to the readback spectrum at the posterior mean (on
        the foil-calibrated axis): how a fixed scan's std of it is predicted. None if undefined there."""
        align, chain, _ = self._alignment()
        try:
            return chain(self.quantity.evaluate(align(self.post.mean)[0])[1])
        except ValueError:
            return None

    def _alignment(self):
        """(align, chain, var_ε): with the reference foil's offset ε (photons at readback + ε), the spectrum
        on the calibrated axis is μ(E − ε) of the readback spectrum: ``align`` maps rows of readback spectra
        (k, n) onto it (linear interpolation, J), ``chain`` a Jacobian on the calibrated axis back to the
        readback grid (W J), var_ε the offset's variance (eV²). Without a foil: identities and 0."""
        if self.foil is None or not self.foil.points:
            return (lambda m: np.atleast_2d(m)), (lambda jac: jac), 0.0
        eps, sd = self.foil.offset
        j = shift_matrix(self.post.energy, eps)
        return (lambda m: (j @ np.atleast_2d(m).T).T), (lambda jac: np.asarray((j.T @ np.atleast_2d(jac).T).T)), sd**2

    def _new_foil(self) -> ReferenceFoil:
        """The reference-foil posterior, with the sample's harmonic prior (the same beam reaches the foil)."""
        return ReferenceFoil.from_library(SpectraLibrary.from_csv(), harmonic_sd=self.post.nuisance.harmonic_sd)

    def _foil_value(self) -> ReferenceFoil | None:
        """The foil posterior whose var(ε) the design also reduces: an energy (edge position, pre-edge
        centroid) is read on the foil-calibrated axis, so a point near the foil's edge is worth its
        reduction of var(ε) (eV²)."""
        return self.foil.copy() if self.foil is not None and self.foil.points and self.quantity is not None else None

    def _foil_weight(self, foil: ReferenceFoil | None) -> float:
        """|dq/dε|² at the posterior mean (0 without a foil or a defined quantity): once per plan."""
        if foil is None:
            return 0.0
        try:
            dq = self._quantity_eps_slope()
        except ValueError:
            return 0.0
        return float(dq @ dq)

    def _foil_extra(self, foil: ReferenceFoil | None, weight: float, post: XASPosterior) -> np.ndarray | None:
        """(dwell, n): each candidate's reduction of the quantity's variance through var(ε): ``weight`` Δvar(ε),
        ``weight`` = |dq/dε|² (``_foil_weight``)."""
        if foil is None or not weight:
            return None
        y = self._sample_absorbance(post)
        return weight * np.stack([foil.variance_reduction(post.energy, d, self.noise.i0_rate, y)
                                          for d in self.dwell_options])

    def _sample_absorbance(self, post) -> np.ndarray:
        """The sample's ln(I0/It) on the grid, in front of the reference foil: the posterior's in transmission, in
        fluorescence the mean of the measured ones (0 before any)."""
        if self.mode == "transmission":
            return post.y_pred()
        return np.full(post.n, float(np.mean(self._sample_mut)) if self._sample_mut else 0.0)

    def _quantity_eps_slope(self) -> np.ndarray:
        """dq/dε (q,) at the posterior mean: q of μ(E − ε) moves by −J_q · dμ/dE."""
        align, _, _ = self._alignment()
        mu = align(self.post.mean)[0]
        return -self.quantity.evaluate(mu)[1] @ np.gradient(mu, self.post.energy)

    def _plan_sweep(self) -> None:
        post = self.post.copy()
        weights = self.quantity_weights()
        foil = self._foil_value()
        foil_weight = self._foil_weight(foil)
        move = np.full(post.n, self.cost.settle_s)  # travel is shared by the sweep; a repeat needs no settle
        picks = []
        n_sweep = int(np.clip(len(self.post.data_e) // 2, min(MIN_SWEEP, self.sweep_points), self.sweep_points))
        for _ in range(n_sweep):
            j, dwell, score = choose_next(post, self.noise, self.cost, None, self.dwell_options, self.candidates,
                                          move, weights, self._foil_extra(foil, foil_weight, post))
            picks.append((float(post.energy[j]), dwell, score))
            if foil is not None:
                foil.fantasise(post.energy[j], dwell, self.noise.i0_rate, float(self._sample_absorbance(post)[j]))
            post.fantasise(post.energy[j], float(self.noise.var(post.y_pred()[j], dwell)))
            move[j] = 0.0
        merged: dict[float, tuple[float, float, float]] = {}
        for e, dwell, score in picks:  # a repeated pick is one point counted longer: one settle, not two
            d0, s0 = merged.get(e, (e, 0.0, 0.0))[1:]
            merged[e] = (e, d0 + dwell, s0 + score)
        e = np.array(list(merged))
        up = self.current_eV is None or abs(self.current_eV - e.min()) <= abs(self.current_eV - e.max())
        self._queue = sorted(merged.values(), key=lambda p: (p[0] if up else -p[0]))

    def _suggest_greedy(self, num_points: int) -> list[dict[str, Any]]:
        post, cur, out = self.post, self.current_eV, []
        weights, foil = self.quantity_weights(), self._foil_value()
        foil_weight = self._foil_weight(foil)
        for i in range(int(num_points)):
            j, dwell, score = choose_next(post, self.noise, self.cost, cur, self.dwell_options, self.candidates,
                                          weights=weights, extra=self._foil_extra(foil, foil_weight, post))
            energy = float(post.energy[j])
            out.append({"energy": energy, "dwell": dwell, "_id": self._next_id})
            self._next_id += 1
            if i == 0:
                self._last = {"next_energy": energy, "next_dwell": dwell, "next_score": score}
            if i + 1 < num_points:
                post = post.copy() if post is self.post else post
                if foil is not None:
                    foil.fantasise(energy, dwell, self.noise.i0_rate, float(self._sample_absorbance(post)[j]))
                post.fantasise(energy, float(self.noise.var(post.y_pred()[j], dwell)))
                cur = energy
        return out

    def _ingest_one(self, point: Mapping) -> None:
        energy = float(point["energy"])
        dwell = float(point.get("dwell", self._last.get("next_dwell", 1.0)))
        if self.mode == "fluorescence":
            _ = self.noise.tau  # an unstated dead time is the caller's error (ValueError), not a bad point
        try:
            y, var = self._measured(point, dwell)
        except ValueError:
            self.failures.append(dict(point))
            return
        self.beamtime_s += dwell + float(self.cost.time(self.current_eV, energy))
        self.current_eV = energy
        self.post.update(energy, y, var)
        iref = point.get("iref")
        if iref is not None and np.isfinite(float(iref)) and float(iref) > 0:
            if self.foil is None:
                self.foil = self._new_foil()
            self.foil.update(energy, float(point["it"]), float(iref), i0=float(point["i0"]))
        self.dwells.append(dwell)
        planned = self._suggested.pop(point.get("_id"), None)
        if planned is None and self._queue and abs(self._queue[0][0] - energy) < 1e-6:
            planned = self._queue[0]
        if planned in self._queue:
            self._queue.remove(planned)
        if self.adapt and len(self.post.data_e) >= self._next_refit:
            self.refit()
            self._queue = []
            self._next_refit = int(np.ceil(1.5 * len(self.post.data_e))) + 2

    def _measured(self, point: Mapping, dwell: float) -> tuple[float, float]:
        """(y, var y) of one outcome: ln(I0/It), or fluorescence If/I0 dead-time corrected in the data unit (the
        first point's own value until ``_fix_unit``); ``ValueError`` for counts that cannot be used."""
        if self.mode == "transmission":
            return self.noise.from_counts(float(point["i0"]), float(point["it"]))
        i0, counts = float(point["i0"]), float(point["if"])
        if not self.post.data_e and not self._unit_fixed and np.isfinite(i0) and i0 > 0:
            y, _ = dataclasses.replace(self.noise, unit=1.0).from_counts(i0, counts, dwell)
            self.noise = dataclasses.replace(self.noise, unit=y)
        it = float(point.get("it", np.nan))
        if np.isfinite(it) and it > 0 and i0 > 0:
            self._sample_mut.append(float(np.log(i0 / it)))
        return self.noise.from_counts(i0, counts, dwell)

    def _fix_unit(self) -> None:
        """Fluorescence, once: re-express the data in units of their edge step, first that of y ≈ a F(m(E)) + b
        (weighted least squares, m the prior mean; kept only if a > 0 is known to 20 %, else tried at the next
        refit), then the posterior amplitude after two relinearisations in that unit (the prior spectrum's shape
        joins in)."""
        p = self.post
        e, y, v = np.asarray(p.data_e), np.asarray(p.data_y), np.asarray(p.data_var)
        x = np.column_stack([np.interp(e, p.energy, p.response(p.m)[0]), np.ones(e.size)]) / np.sqrt(v)[:, None]
        coef, *_ = np.linalg.lstsq(x, y / np.sqrt(v), rcond=None)
        a, var_a = float(coef[0]), float(np.linalg.pinv(x.T @ x)[0, 0])
        if not (a > 0 and np.sqrt(var_a) < 0.2 * a):
            return
        self._rescale(a)
        nu = p.nuisance
        for _ in range(2):
            amp = float(np.clip(p.amplitude[0], 0.2 * nu.amp_mean, 5 * nu.amp_mean))
            p.set_linearisation(p.shift_lin, amp, p.kernel_scale, full=False, mu_lin=p.mean)
        self._rescale(p.amplitude[0] / nu.amp_mean if p.amplitude[0] > 0 else 1.0)
        self._unit_fixed = True

    def _rescale(self, a: float) -> None:
        """Divide the stored fluorescence data by ``a`` (the data unit times ``a``) and re-solve the mean."""
        p = self.post
        p.data_y, p.data_var = [yy / a for yy in p.data_y], [vv / a**2 for vv in p.data_var]
        self.noise = dataclasses.replace(self.noise, unit=self.noise.unit * a)
        p.set_linearisation(p.shift_lin, p.nuisance.amp_mean, p.kernel_scale, full=False, mu_lin=p.mu_lin)

    def refit(self, iterations: int | None = None) -> None:
        """Re-estimate amplitude, edge shift (posterior means) and prior scale (MAP, log-normal
        prior of sd ``scale_prior_sd``), relinearise (the harmonic term about the fundamental's absorbance now
        estimated; fluorescence: also about the posterior mean of μ, and first fix the data unit), and re-solve the
        posterior from scratch; ``iterations`` (default 3, fluorescence 4)."""
        p = self.post
        fluorescence = self.mode == "fluorescence"
        if fluorescence and not self._unit_fixed:
            self._fix_unit()
        iterations = iterations or (4 if fluorescence else 3)
        p.harmonic_prior = self._harmonic_prior()
        for i in range(iterations):
            scale = self._map_scale() if len(p.data_e) >= 10 else p.kernel_scale
            amp = float(np.clip(p.amplitude[0], 0.2 * p.nuisance.amp_mean, 5 * p.nuisance.amp_mean))
            shift = float(np.clip(p.shift[0], -4 * p.nuisance.shift_sd_eV, 4 * p.nuisance.shift_sd_eV))
            p.set_linearisation(shift, amp, scale, full=i == iterations - 1, y_lin=p.y_fundamental(),
                                mu_lin=p.mean if fluorescence else None)

    def _harmonic_prior(self) -> tuple[float, float] | None:
        """(mean, sd) of the harmonic fraction η from the reference foil, which measures it well (behind the
        sample the harmonic's share is ~e^{μt} η); the sample's own data hardly can (η(e^y − 1) is nearly a
        change of white-line shape). The foil's coefficient is η times the I0/It chambers' efficiency ratio,
        taken as 1 ± ``CHAMBER_RATIO_SD``. None (the user's prior) without a foil that fits a harmonic."""
        foil = self.foil
        if foil is None or not foil.harmonic or foil.points < MIN_FOIL_POINTS:
            return None
        eta, var = float(foil.mean[3]), float(foil.cov[3, 3])
        return eta, float(np.sqrt(var + (CHAMBER_RATIO_SD * eta) ** 2))

    def _map_scale(self) -> float:
        p = self.post
        h, _, ck, cn = p.data_terms()
        ck = ck / p.kernel_scale
        r = p.y_data() - h @ p.x0

        def neg_log_post(log_s):
            cf = linalg.cho_factor(np.exp(log_s) * ck + cn, lower=True)
            return (0.5 * r @ linalg.cho_solve(cf, r) + np.log(np.diag(cf[0])).sum()
                    + 0.5 * (log_s / self.scale_prior_sd) ** 2)

        res = optimize.minimize_scalar(neg_log_post, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                                       options={"xatol": 0.02})
        return float(np.exp(res.x))

    def _summary(self) -> dict[str, float]:
        amp, shift = self.post.amplitude, self.post.shift
        rmse = self.post.rmse_pred
        return {"points": len(self.post.data_e), "beamtime_s": self.beamtime_s, "rmse_pred": rmse,
                "rmse_std": rmse, "amplitude_mean": amp[0], "amplitude_std": amp[1],
                "shift_mean": shift[0], "shift_std": shift[1], "kernel_scale": self.post.kernel_scale,
                "last_energy": np.nan if self.current_eV is None else self.current_eV,
                "next_energy": self._last.get("next_energy", np.nan),
                "next_dwell": self._last.get("next_dwell", np.nan), **self.quantity_report(), **self.foil_report(),
                **({"fluorescence_unit": self.noise.unit} if self.mode == "fluorescence" else {}),
                **self.harmonic_report()}

    def harmonic_report(self) -> dict[str, float]:
        """``harmonic_mean``/``_std``: the posterior of the harmonic fraction η of I0 (transmission with a
        harmonic prior: ``Nuisance.harmonic_sd`` > 0); empty otherwise (the term is held at 0)."""
        p = self.post
        if self.mode != "transmission" or not (p.nuisance.harmonic_sd > 0 or getattr(p, "harmonic_prior", None)):
            return {}
        return {"harmonic_mean": float(p.x[-1]), "harmonic_std": float(np.sqrt(max(p.S[-1, -1], 0.0)))}

    def foil_report(self) -> dict[str, float]:
        """``mono_offset_mean``/``_std`` (eV): the monochromator offset ε the foil channel measures (photons at
        readback + ε on the library's axis); empty without a foil channel."""
        if self.foil is None:
            return {}
        eps, sd = self.foil.offset
        return {"mono_offset_mean": eps, "mono_offset_std": sd}

    def quantity_moments(self, draws: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(value, std) of the quantity per component, std with its floor; NaN while it is undefined.
        The delta method at the posterior mean, checked against ``CHECK_DRAWS`` posterior draws (the
        larger std is kept, the value is the draws' median) whenever the delta-method std is within
        the stop target (``draws=None``) or ``draws`` is true: a nonlinear quantity (which maximum is the
        first inflection) can be decided wrongly at the mean while its linearisation looks precise. A
        draw where the quantity is undefined makes the std NaN (not converged)."""
        q = self.quantity
        nan = np.full(len(q.labels), np.nan)
        align, chain, var_eps = self._alignment()
        try:
            dq = self._quantity_eps_slope() if var_eps else np.zeros(len(q.labels))
            value, std = q.moments(align(self.post.mean)[0], lambda jac: self.post.functional_moments(chain(jac))[1]
                                   + var_eps * np.outer(dq, dq))
        except ValueError:
            return nan, nan
        if draws is None:
            target = self.quantity_target()
            draws = not q.linear and target is not None and bool(np.max(std) <= target)
        if draws:
            v = q.values(align(self.posterior_samples(CHECK_DRAWS, 10**6 + len(self.post.data_e))))
            if not np.all(np.isfinite(v)):
                return np.nanmedian(v, 0) if np.isfinite(v).any() else value, nan
            value = np.median(v, 0)
            std = np.maximum(std, np.sqrt(v.var(0) + q.floor_std**2 + var_eps * dq**2))
        return value, std

    def quantity_target(self) -> float | None:
        """The stop rule's target std of the quantity, if it has one."""
        targets = [r.target for r in leaf_rules(self.stop_rule)
                   if isinstance(r, TargetStd) and self.quantity is not None and r.quantity == self.quantity.name]
        return min(targets) if targets else None

    def quantity_report(self) -> dict[str, float]:
        """The quantity's report keys (see the class doc); empty without a quantity."""
        q = self.quantity
        if q is None:
            return {}
        value, std = self.quantity_moments()
        z = 1.959964
        if q.name == "fractions":
            out = {}
            for label, v, s in zip(q.labels, value, std, strict=True):
                out.update({f"fraction_{label}_mean": v, f"fraction_{label}_std": s})
            worst = float(np.max(std)) if np.all(np.isfinite(std)) else np.nan
            return {**out, "fractions_mean": float(value[0]), "fractions_std": worst}
        v, s = float(value[0]), float(std[0])
        return {f"{q.name}_mean": v, f"{q.name}_std": s, f"{q.name}_lower": v - z * s, f"{q.name}_upper": v + z * s}

    def get_best_points(self) -> list[dict[str, Any]]:
        return [{"rmse_pred": self.post.rmse_pred, "amplitude": self.post.amplitude[0],
                 "shift": self.post.shift[0]}]

    def posterior(self) -> dict[str, np.ndarray | float]:
        """Posterior of mu on the grid: mean, std and the 95 % band; amplitude and shift (mean, sd);
        the design target's mean and std on the grid."""
        mean, std = self.post.mean, np.sqrt(self.post.var)
        return {"energy": self.post.energy, "mean": mean, "std": std, "lower": mean - 1.959964 * std,
                "upper": mean + 1.959964 * std, "amplitude": self.post.amplitude, "shift": self.post.shift,
                "target": self.post.target, "target_mean": self.post.target_mean,
                "target_std": np.sqrt(self.post.target_var), "rmse_pred": self.post.rmse_pred}

    # -- checkpoint ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        p = self.post
        arrays = {"data_e": np.asarray(p.data_e), "data_y": np.asarray(p.data_y),
                  "data_var": np.asarray(p.data_var), "dwells": np.asarray(self.dwells),
                  "queue": np.asarray(self._queue, float).reshape(-1, 3), "y_lin": p.y_lin}
        if self.foil is not None:
            arrays.update(foil_e=self.foil.data_e, foil_y=self.foil.data_y, foil_var=self.foil.data_var,
                          foil_q=self.foil.data_q)
        meta = {"shift_lin": p.shift_lin, "amp_lin": p.amp_lin, "kernel_scale": p.kernel_scale,
                "beamtime_s": self.beamtime_s, "current_eV": self.current_eV, "next_id": self._next_id,
                "next_refit": self._next_refit, "harmonic_prior": getattr(p, "harmonic_prior", None)}
        if self.mode == "fluorescence":
            arrays.update(mu_lin=p.mu_lin, sample_mut=np.asarray(self._sample_mut))
            meta.update(unit=self.noise.unit, unit_fixed=self._unit_fixed)
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        p = self.post
        p.data_e, p.data_y = list(map(float, arrays["data_e"])), list(map(float, arrays["data_y"]))
        p.data_var, self.dwells = list(map(float, arrays["data_var"])), list(map(float, arrays["dwells"]))
        self.beamtime_s, self.current_eV = float(meta["beamtime_s"]), meta["current_eV"]
        self._next_id, self._next_refit = int(meta["next_id"]), int(meta["next_refit"])
        self._queue = [tuple(map(float, q)) for q in arrays["queue"]]
        if "foil_e" in arrays and len(arrays["foil_e"]):
            self.foil = self._new_foil()
            self.foil.load(arrays["foil_e"], arrays["foil_y"], arrays["foil_var"], arrays.get("foil_q"))
        if self.mode == "fluorescence":
            self.noise = dataclasses.replace(self.noise, unit=float(meta["unit"]))
            self._unit_fixed, self._sample_mut = bool(meta["unit_fixed"]), list(map(float, arrays["sample_mut"]))
        hp = meta.get("harmonic_prior")
        p.harmonic_prior = None if hp is None else (float(hp[0]), float(hp[1]))
        p.set_linearisation(meta["shift_lin"], meta["amp_lin"], meta["kernel_scale"], y_lin=arrays.get("y_lin"),
                            mu_lin=arrays.get("mu_lin"))


def library_covering(prior, library: SpectraLibrary | None = None) -> SpectraLibrary:
    """``library`` (default: the Fe K standards) over the prior's grid: continued SYNTHETICALLY as the exafs
    prior's is (``agent.xas.exafs``) when the grid goes past the measured 7196.85 eV."""
    lib = library if library is not None else SpectraLibrary.from_csv()
    if prior.energy[-1] <= lib.energy[-1]:
        return lib
    from agent.xas.exafs import extended_library

    return extended_library(lib, stop_eV=float(prior.energy[-1]))


def xas_agent(prior: GaussianPrior | str | None = None, target_rmse: float | None = None,
              stop_rule: StopRule | None = None, exclude: str | None = None, max_points: int = 2000,
              quantity: str | Quantity | None = None, target_std: float | None = None, components=None,
              mode: str = "transmission", composition: FluorescenceSample | Mapping[str, Any] | None = None,
              dead_time_s: float | None = None, **kwargs) -> XASAgent:
    """Build an ``XASAgent``. ``prior``: a ``GaussianPrior``, or the name of a construction (``library``, the
    default, or ``reference``: ``agent.xas.prior.PRIORS``) from the Fe K standards minus ``exclude``.
    ``quantity``: a ``Quantity`` or its name (``agent.xas.quantities.QUANTITY_HELP``; ``spectrum``, the
    default, designs for the whole spectrum), ``components`` the standards of ``fractions``; the valence
    predictor learns from the library minus ``exclude``. Stops on ``TargetStd(quantity, target_std)``
    (for ``spectrum``: the predicted RMSE), ``TargetRMSE(target_rmse)`` or ``stop_rule`` (combined with
    any_of), and at ``max_points``. ``ValueError`` (one line) for a target the quantity cannot reach:
    at or below the floor of its std (the valence predictor's own error). ``mode``: ``transmission`` (default) or
    ``fluorescence`` of a sample of ``composition`` (``FluorescenceSample`` fields: fe_fraction, matrix,
    incidence_deg, exit_deg, thickness_cm, density_g_cm3), counted by a detector of dead time ``dead_time_s`` (s;
    None: the plan takes the detector's stated value)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if dead_time_s is not None:
        if mode != "fluorescence" or "noise" in kwargs:
            raise ValueError("dead_time_s is the fluorescence detector's: for mode='fluorescence' without a noise")
        kwargs["noise"] = FluorescenceNoise(dead_time_s=float(dead_time_s))
    lib = None
    if prior is None or isinstance(prior, str):
        name = prior or "library"
        if name not in PRIORS:
            raise ValueError(f"unknown prior {name!r}; choose from {', '.join(PRIORS)}")
        lib = SpectraLibrary.from_csv()
        prior = PRIORS[name](lib.without(exclude) if exclude else lib)
    if quantity is not None and not isinstance(quantity, Quantity):
        lib = library_covering(prior, lib)
        quantity = make_quantity(quantity, prior.energy, lib, components,
                                 training=lib.without(exclude) if exclude else lib)
    elif components:
        raise ValueError("components are for the fractions quantity")
    if target_std is not None:
        _positive("target std", target_std)
        if quantity is None:
            if target_rmse is not None:
                raise ValueError("give target_std or target_rmse for the spectrum, not both")
            target_rmse = target_std
        else:
            floor = float(np.max(quantity.floor_std))
            if target_std <= floor:
                raise ValueError(f"target std {target_std:g} of {quantity.name} is not above its floor {floor:.3g} "
                                 f"(the predictor's own leave-one-out error): no measurement reaches it")
    rules = [r for r in (TargetRMSE(target_rmse) if target_rmse is not None else None,
                         TargetStd(quantity.name, target_std) if quantity is not None and target_std is not None
                         else None, stop_rule)
             if r is not None]
    rules.append(Budget(points=max_points))
    return XASAgent(prior, any_of(*rules), quantity=quantity, mode=mode, composition=composition, **kwargs)
