"""SAXS agent: frames in, reduced I(q), the KDE-convergence numbers, a frame-consistency test and the form-factor
posterior (sphere vs core-shell by free energy) out, after every frame (issue 14).

Ingest points (one per frame): ``_id``, ``kind`` ("sample" | "buffer" | "standard" | "empty"), ``image``
(2-D counts), ``exposure_s`` (s), ``i0`` (incident monitor counts), ``transmitted`` (beam-stop diode counts),
``beamtime_s`` (s, the run's clock). Consistency: each sample/buffer frame's shape is compared with the
accepted frames of its cell before it by a χ² homogeneity test on the coarse bins (normalisation-free:
the frame's overall scale is fitted, so a ring-current change is no drift); p < ``drift_p`` flags the frame,
which is then not accumulated and registered as a failure with the reason. Report keys are the same every
time (NaN before data); the model decision uses P(m) ∝ exp(−F_m), equal prior odds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2 as chi2_dist

from agent.core.protocol import BayesAgent
from agent.core.stopping import Budget, ModelDecided, StopRule, TargetStd, _positive, all_of, any_of
from agent.core.words import one_of, plain
from agent.saxs import design
from agent.saxs.form_factors import SLD, core_shell_table, sphere_table
from agent.saxs.geometry import DetectorGeometry, detector_geometry
from agent.saxs.kde import LogQKDE
from agent.saxs.laplace import SHELL_PRIOR_NM, LaplaceCoreShell, LaplaceResult, Point
from agent.saxs.posterior import Data, GridModel, GridResult, Window
from agent.saxs.reduction import KINDS, Reduction, Sums, absolute_scale, subtracted

MODELS = ("sphere", "core_shell")
QUANTITIES = ("radius", "pd", "scale", "background", "core_radius", "shell")
MIN_COUNTS = 10.0  # photons a coarse bin needs (sample) to enter the likelihood and the χ² test
KDE_KEYS = ("kde_divergence", "kde_expected", "kde_threshold", "kde_counts", "kde_frame_counts", "kde_bandwidth",
            "kde_keff", "kde_equivalent_counts")


def homogeneity(c, m, acc, acc_m) -> tuple[float, int, float]:
    """(χ², dof, p) that a frame's counts ``c`` (coarse bins, normalisation ``m``) have the shape of the
    accumulated ``acc`` (normalisation ``acc_m``): expected e = α·m·acc/acc_m with the overall α fitted,
    variance e·(1 + α·m/acc_m) (both sides' Poisson noise); bins with e or acc below MIN_COUNTS dropped."""
    ok = (m > 0) & (acc_m > 0) & (acc >= MIN_COUNTS)
    rate = np.where(ok, acc / np.where(ok, acc_m, 1.0), 0.0)
    alpha = c[ok].sum() / max(np.sum(m[ok] * rate[ok]), 1e-300)
    e = alpha * m * rate
    ok &= e >= MIN_COUNTS
    dof = int(ok.sum()) - 1
    if dof < 1:
        return float("nan"), 0, float("nan")
    var = e[ok] * (1.0 + alpha * m[ok] / acc_m[ok])
    x2 = float(np.sum((c[ok] - e[ok]) ** 2 / var))
    return x2, dof, float(chi2_dist.sf(x2, dof))


@dataclass(frozen=True)
class KDEConverged(StopRule):
    """Stop when the KDE divergence of the last sample frame is at or below ε = (r²/2)·ΔN/N_old
    (``precision`` r: relative rms of the density per resolution element), never on a flagged frame."""

    precision: float = 0.01
    watching = "the KDE-convergence rule"

    def __post_init__(self):
        _positive("KDE precision", self.precision)

    def check(self, history) -> str | None:
        if not history:
            return None
        last = history[-1]
        d, dn = last.get("kde_divergence", np.nan), last.get("kde_frame_counts", np.nan)
        n = last.get("kde_counts", np.nan)
        if last.get("frame_flagged", 1) or not np.isfinite(d) or not n > dn > 0:
            return None
        eps = 0.5 * self.precision**2 * dn / (n - dn)
        if d <= eps:
            return (f"kde_converged: D = {d:.3g} <= {eps:.3g} at N = {n:.4g} photons "
                    f"(equivalent N* = K_eff/r² = {last['kde_keff'] / self.precision**2:.4g})")
        return None


@dataclass(frozen=True)
class FramesConsistent(StopRule):
    """Stop with "drift: ..." after ``k`` consecutive frames flagged by the consistency test."""

    k: int = 3
    watching = "the drift rule"

    def __post_init__(self):
        if int(self.k) < 1:
            raise ValueError(f"drift rule k must be >= 1, got {plain(self.k)}")

    def check(self, history) -> str | None:
        if not history:
            return None
        n = history[-1].get("consecutive_flagged", 0)
        if n >= self.k:
            return (f"drift: {int(n)} consecutive frames inconsistent with the accumulated pattern "
                    f"(last p = {history[-1].get('consistency_p', np.nan):.2g})")
        return None


class SAXSAgent(BayesAgent):
    """Frames of the four cells; the sample − buffer absolute dΣ/dΩ(q); KDE rule; posterior of two models."""

    quantities = QUANTITIES

    def __init__(self, stop_rule: StopRule | None = None, geometry=None, mask=None, q_range=None,
                 precision: float = 0.01, exposure_s: float = 1.0, quantity: str = "radius",
                 standard_dsdo=None, standard_thickness_mm: float = 1.0, thickness_mm: float = 1.0,
                 sld: float = SLD["silica"], sld_solvent: float = SLD["water"], sld_core: float = SLD["silica"],
                 sld_shell: float = SLD["pmma"], core_shell_pd: float = 0.1, radius_prior_nm=(2.0, 150.0),
                 drift_p: float = 1e-3, seed: int = 0, checkpoint_path=None):
        super().__init__(stop_rule or any_of(KDEConverged(precision), FramesConsistent(), Budget(cycles=200)),
                         checkpoint_path)
        self.precision = _positive("precision", precision)
        self.exposure_s = _positive("exposure_s", exposure_s)
        self.quantity = one_of(quantity, QUANTITIES, "quantity")
        self.standard_dsdo = standard_dsdo
        self.standard_thickness_mm = _positive("standard thickness (mm)", standard_thickness_mm)
        self.thickness_mm = _positive("sample thickness (mm)", thickness_mm)
        self.slds = {"sld": float(sld), "sld_solvent": float(sld_solvent), "sld_core": float(sld_core),
                     "sld_shell": float(sld_shell)}
        self.core_shell_pd = float(core_shell_pd)
        self.radius_prior_nm = tuple(float(v) for v in radius_prior_nm)
        if not 0 < self.radius_prior_nm[0] < self.radius_prior_nm[1]:
            raise ValueError(f"radius prior must be 0 < low < high (nm), got {self.radius_prior_nm}")
        self.drift_p = float(drift_p)
        self.seed = int(seed)
        self.q_range_request = None if q_range is None else tuple(float(v) for v in q_range)
        self.user_mask = _load_mask(mask)
        self.geometry: DetectorGeometry | None = None
        self.red: Reduction | None = None
        self._reset_data()
        if geometry is not None:
            self.configure(geometry, self.user_mask)

    def calibrate(self, standard_dsdo, standard_thickness_mm: float | None = None,
                  thickness_mm: float | None = None) -> None:
        """The absolute scale's inputs: the standard's known dΣ/dΩ (cm⁻¹: a number, or (q nm⁻¹, I) pairs), its
        thickness and the sample's path (mm); before the standard's frame is ingested."""
        self.standard_dsdo = standard_dsdo
        if standard_thickness_mm is not None:
            self.standard_thickness_mm = _positive("standard thickness (mm)", standard_thickness_mm)
        if thickness_mm is not None:
            self.thickness_mm = _positive("sample thickness (mm)", thickness_mm)

    def _reset_data(self) -> None:
        self.sums: dict[str, Sums] = {}
        self.kde: LogQKDE | None = None
        self.kde_last = {k: float("nan") for k in KDE_KEYS}
        self.frames = 0
        self.flagged = 0
        self.consecutive_flagged = 0
        self.last_p = float("nan")
        self.last_flagged = 0
        self.beamtime_s = 0.0
        self.results: dict[str, GridResult | LaplaceResult] = {}
        self.windows: dict[str, Window | Point] = {}
        self.data: Data | None = None

    # -- geometry ----------------------------------------------------------------------------
    def configure(self, geometry_config, mask=None) -> None:
        """Set the detector (a DetectorGeometry, its config dict or a preset name) and the user's mask (bool
        array or a fabio-readable file); idempotent for the same geometry and mask."""
        geometry = detector_geometry(geometry_config)
        user = _load_mask(mask) if mask is not None else self.user_mask
        if self.geometry == geometry and _same(user, self.user_mask) and self.red is not None:
            return
        if self.frames:
            raise ValueError("the detector geometry cannot change after frames were ingested")
        self.red = Reduction(geometry, self.q_range_request, user)
        self.geometry, self.user_mask = geometry, user
        self.kde = LogQKDE(self.red.ln_q, self.precision)
        self.models = {
            "sphere": GridModel(sphere_table(self.slds["sld"], self.slds["sld_solvent"]), self.red.ln_q[0],
                                self.red.m, self.red.n_fine, self.radius_prior_nm, ln_q_mean=self.red.ln_q_mean,
                                ln_q_var=self.red.ln_q_var),
            "core_shell": LaplaceCoreShell(np.exp(self.red.ln_q_mean), self.slds["sld_core"], self.slds["sld_shell"],
                                           self.slds["sld_solvent"], self.radius_prior_nm,
                                           ln_q_var=self.red.ln_q_var)}
        # where the core-shell posterior is first looked for: the self-similar lattice model (agent.saxs.laplace)
        self.core_shell_start = GridModel(core_shell_table(self.core_shell_pd, self.slds["sld_core"],
                                                           self.slds["sld_shell"], self.slds["sld_solvent"]),
                                          self.red.ln_q[0], self.red.m, self.red.n_fine, self.radius_prior_nm)

    # -- ingest ------------------------------------------------------------------------------
    def _ingest_one(self, point: Mapping) -> None:
        if self.red is None:
            raise ValueError("configure(geometry) before ingesting frames")
        kind = one_of(point.get("kind", ""), KINDS, "cell")
        i0 = float(point["i0"])
        exposure = float(point.get("exposure_s", self.exposure_s))
        if not (i0 > 0 and exposure > 0):
            raise ValueError(f"frame {point.get('_id')}: i0 and exposure_s must be > 0")
        self.frames += 1
        self.beamtime_s = float(point.get("beamtime_s", self.beamtime_s + exposure))
        sig, norm = self.red.integrate(point["image"], i0)
        acc = self.sums.get(kind)
        self.last_flagged, self.last_p = 0, float("nan")
        if kind in ("sample", "buffer") and acc is not None and acc.frames:
            _, _, p = homogeneity(self.red.coarse(sig), self.red.coarse(norm), self.red.coarse(acc.signal),
                                  self.red.coarse(acc.norm))
            self.last_p = p
            if p < self.drift_p:
                self.last_flagged = 1
                self.flagged += 1
                self.consecutive_flagged += 1
                self.register_failures([{"_id": point.get("_id"), "kind": kind,
                                         "reason": f"drift: frame inconsistent with the accumulated {kind} "
                                                   f"(χ² homogeneity p = {p:.2g} < {self.drift_p:g})"}])
                return
        self.consecutive_flagged = 0
        if acc is None:
            acc = self.sums[kind] = Sums(self.red.n_fine)
        acc.add(sig, norm, exposure, i0, float(point.get("transmitted", 0.0)))
        if kind == "sample":
            self.kde_last = self.kde.add(sig)
        self._update()

    def _update(self, fixed: Mapping[str, Window] | None = None) -> None:
        """Reduce the accumulated sums and update both posteriors (on the ``fixed`` grids when restoring a
        checkpoint, so that the restored numbers are those stored)."""
        s = self.sums.get("sample")
        if s is None or s.frames == 0:
            return
        g = self.red.group
        k = absolute_scale(self.sums.get("standard"), self.sums.get("empty"), self.red.q_coarse, g,
                           self.standard_dsdo, 0.1 * self.standard_thickness_mm)
        y, var = subtracted(s, self.sums.get("buffer"), self.sums.get("empty"), k, 0.1 * self.thickness_mm, g)
        use = (self.red.coarse(s.signal) >= MIN_COUNTS) & (var > 0) & np.isfinite(y)
        norm_c = np.repeat(self.red.coarse(s.norm), g)
        fine_w = np.where(norm_c > 0, s.norm / np.where(norm_c > 0, norm_c, 1.0), 0.0)
        self.data = Data(y, var, fine_w, use, g)
        self.calibration = k
        if use.sum() < 6:
            return
        for name, model in self.models.items():
            if isinstance(model, LaplaceCoreShell):
                start = fixed[name] if fixed is not None else self.windows.get(name) or self._core_shell_start()
                res = model.fit(self.data, start, optimise=fixed is None)
            elif fixed is not None:
                res = model.evaluate(fixed[name], self.data)
            else:
                res = model.fit(self.data, self.windows.get(name))
            self.results[name] = res
            self.windows[name] = res.next_window()

    def _core_shell_start(self) -> tuple[float, float, float]:
        """θ = (ln R_c, ln t, pd) from the self-similar lattice core-shell's posterior mean (outer R, core fraction
        u): R_c = uR, t = (1 − u)R at the stated ``core_shell_pd``."""
        s = self.core_shell_start.fit(self.data).summary(("radius", "u", "scale", "background"))
        r, u = s["radius_mean"], min(max(s["u_mean"], 0.05), 0.95)
        return float(np.log(u * r)), float(np.log(max((1.0 - u) * r, SHELL_PRIOR_NM[0]))), self.core_shell_pd

    # -- decisions ---------------------------------------------------------------------------
    def model_probabilities(self) -> dict[str, float]:
        if not self.results:
            return {}
        f = np.array([self.results[m].free_energy for m in MODELS])
        p = np.exp(-(f - f.min()))
        return dict(zip(MODELS, (p / p.sum()).tolist(), strict=True))

    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """Next frames: "buffer" until one exists, "sample" until a posterior exists, then the cell whose
        frame of ``exposure_s`` shrinks the predicted variance of ``quantity`` more (agent.saxs.design)."""
        out = []
        for i in range(num_points):
            cell = self._next_cell()
            out.append({"cell": cell, "exposure_s": self.exposure_s, "_id": self.frames + i + 1})
        return out

    def _next_cell(self) -> str:
        s, b = self.sums.get("sample"), self.sums.get("buffer")
        if s is None or not s.frames:
            return "sample"
        if b is None or not b.frames:
            return "buffer"
        probs = self.model_probabilities()
        if not probs:
            return "sample"
        best = max(probs, key=probs.get)
        res = self.results[best]
        use = self.data.use
        a_s = self.calibration / (0.1 * self.thickness_mm)
        v_s = a_s**2 * self.red.coarse(s.signal)[use] / np.maximum(self.red.coarse(s.norm)[use], 1e-300) ** 2
        v_b = a_s**2 * self.red.coarse(b.signal)[use] / np.maximum(self.red.coarse(b.norm)[use], 1e-300) ** 2
        e = np.maximum(self.data.var[use] - v_s - v_b, 0.0)
        index = {"radius": 0, "pd": 1, "scale": 2, "background": 3}.get(self.quantity, 0)
        cell, _ = design.next_cell(res.jacobian(), v_s * s.exposure_s, v_b * b.exposure_s, e, s.exposure_s,
                                   b.exposure_s, self.exposure_s, index)
        return cell

    def posterior(self) -> dict[str, Any]:
        return {"models": dict(self.results), "probabilities": self.model_probabilities(), "data": self.data,
                "q": None if self.red is None else self.red.q_coarse}

    def _summary(self) -> Mapping[str, Any]:
        nan = float("nan")
        counts = {k: (self.sums[k].frames if k in self.sums else 0) for k in KINDS}
        out: dict[str, Any] = {"frames": self.frames, "cycles": self.frames, "beamtime_s": self.beamtime_s,
                               "sample_frames": counts["sample"], "buffer_frames": counts["buffer"],
                               "standard_frames": counts["standard"], "empty_frames": counts["empty"],
                               "flagged_frames": self.flagged, "consecutive_flagged": self.consecutive_flagged,
                               "frame_flagged": self.last_flagged, "consistency_p": self.last_p,
                               "model_best": "none", "model_prob_max": nan}
        out.update(self.kde_last)
        probs = self.model_probabilities()
        for m in MODELS:
            out[f"F_{m}"] = self.results[m].free_energy if m in self.results else nan
            out[f"p_{m}"] = probs.get(m, nan)
            out[f"chi2_{m}"] = self.results[m].chi2_min if m in self.results else nan
        summ: dict[str, float] = {}
        if probs:
            best = max(probs, key=probs.get)
            out.update(model_best=best, model_prob_max=probs[best])
            res = self.results[best]
            summ = res.summary(("radius", "pd", "scale", "background")) if best == "sphere" else res.summary()
        for q in QUANTITIES:
            for st in ("mean", "std", "lo68", "hi68", "lo95", "hi95"):
                out[f"{q}_{st}"] = summ.get(f"{q}_{st}", nan)
        return out

    # -- persistence -------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"geometry": None if self.geometry is None else self.geometry.config(),
                "q_range": self.q_range_request and list(self.q_range_request), "precision": self.precision,
                "exposure_s": self.exposure_s, "quantity": self.quantity, "standard_dsdo": self.standard_dsdo,
                "standard_thickness_mm": self.standard_thickness_mm, "thickness_mm": self.thickness_mm,
                **self.slds, "core_shell_pd": self.core_shell_pd, "radius_prior_nm": list(self.radius_prior_nm),
                "drift_p": self.drift_p, "seed": self.seed}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        cells = {}
        for kind, s in self.sums.items():
            a, m = s.state(kind)
            arrays.update(a)
            cells[kind] = m
        if self.user_mask is not None:
            arrays["user_mask"] = np.packbits(self.user_mask)
        if self.kde is not None:
            arrays["kde_hist"] = self.kde.hist
        meta = {"geometry": None if self.geometry is None else self.geometry.config(), "cells": cells,
                "frames": self.frames, "flagged": self.flagged, "consecutive_flagged": self.consecutive_flagged,
                "last_p": self.last_p, "last_flagged": self.last_flagged, "beamtime_s": self.beamtime_s,
                "kde_last": self.kde_last, "kde_bandwidth": None if self.kde is None else self.kde.bandwidth,
                "windows": {m: r.window.as_list() for m, r in self.results.items()}}
        return arrays, json.loads(json.dumps(meta, default=float))

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self._reset_data()
        self.geometry, self.red = None, None
        if meta["geometry"] is None:
            return
        geom = DetectorGeometry.from_config(meta["geometry"])
        mask = None
        if "user_mask" in arrays:
            mask = np.unpackbits(arrays["user_mask"])[: geom.shape[0] * geom.shape[1]].reshape(geom.shape).astype(bool)
        self.user_mask = mask
        self.configure(geom, mask)
        self.sums = {k: Sums.from_state(k, arrays, m) for k, m in meta["cells"].items()}
        self.kde.hist = np.array(arrays.get("kde_hist", self.kde.hist), float)
        if meta["kde_bandwidth"] is not None and np.isfinite(meta["kde_bandwidth"]):
            self.kde.set_bandwidth(meta["kde_bandwidth"])
        for key in ("frames", "flagged", "consecutive_flagged", "last_flagged"):
            setattr(self, key, int(meta[key]))
        self.last_p, self.beamtime_s = float(meta["last_p"]), float(meta["beamtime_s"])
        self.kde_last = {k: float(v) for k, v in meta["kde_last"].items()}
        windows = {m: Point.from_list(w) if m == "core_shell" else
                   Window(float(w[0]), float(w[1]), int(w[2]), float(w[3]), float(w[4]), int(w[5]))
                   for m, w in meta["windows"].items()}
        self._update(fixed=windows)


def _load_mask(mask) -> np.ndarray | None:
    """A bool mask (True = masked) from an array or a fabio-readable file path; None stays None."""
    if mask is None:
        return None
    if isinstance(mask, str):
        import fabio

        try:
            mask = fabio.open(mask).data
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read mask file {mask!r}: {exc}") from None
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D array, got shape {mask.shape}")
    if mask.all():
        raise ValueError("the mask leaves no pixel: every pixel is masked")
    return mask


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.all(a == b))


def saxs_agent(stop: str = "kde", quantity: str = "radius", target_std: float = 0.2, precision: float = 0.01,
               max_frames: int = 200, p_model: float = 0.99, exposure_s: float = 1.0, q_range=None, mask=None,
               geometry=None, seed: int = 0, drift_frames: int = 3, **options) -> SAXSAgent:
    """The SAXS agent a user configures. ``stop="kde"``: KDEConverged(precision); ``"posterior"``: the leading
    model's probability ≥ ``p_model`` and std(``quantity``) ≤ ``target_std`` (its unit: nm for radius);
    either also stops on drift (``drift_frames`` consecutive flagged frames) or after ``max_frames`` frames."""
    stop = one_of(stop, ("kde", "posterior"), "stop rule")
    quantity = one_of(quantity, QUANTITIES, "quantity")
    _positive("target_std", target_std)
    _positive("precision", precision)
    _positive("exposure_s", exposure_s)
    if int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1, got {plain(max_frames)}")
    main = KDEConverged(precision) if stop == "kde" else all_of(ModelDecided(p_model), TargetStd(quantity, target_std))
    rule = any_of(main, FramesConsistent(drift_frames), Budget(cycles=int(max_frames)))
    return SAXSAgent(rule, geometry=geometry, mask=mask, q_range=q_range, precision=precision, exposure_s=exposure_s,
                     quantity=quantity, seed=seed, **options)
