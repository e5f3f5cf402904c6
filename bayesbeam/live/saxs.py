"""Live view of an adaptive SAXS run (``adaptive_saxs``): the summed sample frames on the detector (log scale,
masked pixels grey); the reduced, buffer-subtracted I(q) (cm⁻¹) with its ±1σ band, the leading model's fit and,
when known (a rehearsal), the truth; the stop rule's convergence against frames: the KDE divergence between
successive densities with its counting-noise expectation and the threshold (``--stop kde``), or the posterior
std of the watched quantity with its target; the form-factor parameters with their 68 / 95 % intervals
(relative to the truth when known); the beamtime spent on each cell slot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator

from bayesbeam.live.base import LiveFigure, pretty_reason, resolved_format

PARAMETERS = ("radius", "pd")  # the form-factor parameters drawn with their intervals
UNITS = {"radius": "nm", "pd": "", "scale": "", "background": "cm⁻¹"}
SLOT_COLOURS = {"empty": "0.75", "standard": "0.5", "buffer": "C0", "sample": "C3"}
#: History keys kept from the posterior stream.
KEPT = ("frames", "sample_frames", "buffer_frames", "beamtime_s", "kde_divergence", "kde_threshold", "kde_expected",
        "kde_counts", "kde_equivalent_counts", "model_prob_max")


class LiveSAXS(LiveFigure):
    """The live figure of an ``adaptive_saxs`` run (see the module docstring). ``truth``: the true I(q) (cm⁻¹)
    as a function of q (nm⁻¹), drawn under the data (a rehearsal knows it); ``truth_params``: the true
    parameters (default: the start document's ``truth_params``)."""

    figsize = (15.0, 8.5)
    title = "bayesbeam: SAXS"

    def __init__(self, agent: Any = None, *, truth: Callable[[np.ndarray], np.ndarray] | None = None,
                 truth_params: Mapping[str, float] | None = None, **kwargs):
        super().__init__(agent, **kwargs)
        self.truth = truth
        self.truth_params = dict(truth_params or {})

    def layout(self, fig) -> None:
        grid = fig.add_gridspec(2, 3, width_ratios=(1.0, 1.25, 0.9), height_ratios=(1.15, 1), hspace=0.42,
                                wspace=0.38, left=0.05, right=0.98, top=0.9, bottom=0.07)
        self.ax_img = fig.add_subplot(grid[0, 0])
        self.ax_iq = fig.add_subplot(grid[0, 1:])
        self.ax_conv = fig.add_subplot(grid[1, 0])
        self.ax_par = fig.add_subplot(grid[1, 1])
        self.ax_time = fig.add_subplot(grid[1, 2])
        self.ax_img.set_xlabel("column (px)")
        self.ax_img.set_ylabel("row (px)")
        self.ax_iq.set_xscale("log")
        self.ax_iq.set_yscale("log")
        self.ax_iq.set_xlabel("q (nm⁻¹)")
        self.ax_iq.set_ylabel("dΣ/dΩ (cm⁻¹), sample − buffer")
        self.ax_conv.set_xlabel("sample frames")
        self.ax_conv.set_yscale("log")
        self.ax_conv.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ax_time.set_ylabel("beamtime (s)")
        self.image = None
        self.colorbar = None
        (self.l_data,) = self.ax_iq.plot([], [], ".", ms=2.5, color="k", label="measured (reduced, subtracted)")
        self.band = None
        (self.l_fit,) = self.ax_iq.plot([], [], "-", color="C3", lw=1.2, label="leading model (posterior mean)")
        (self.l_truth,) = self.ax_iq.plot([], [], "--", color="C2", lw=1.0, label="truth")
        (self.l_conv,) = self.ax_conv.plot([], [], "o-", ms=3, color="k")
        (self.l_expected,) = self.ax_conv.plot([], [], ":", color="0.4", lw=1.0)
        (self.l_threshold,) = self.ax_conv.plot([], [], "_--", ms=10, color="C3", lw=1.0)
        self.l_target = None
        self.par_artists: list = []
        self.time_bars: list = []

    def on_start(self, doc):
        validity = doc.get("validity") or {}
        self.det = (doc.get("detectors") or ["saxs_det"])[0]
        self.validity = validity
        self.image_key = validity.get("image") or f"{self.det}_image"
        self.kind_key = validity.get("kind") or "kind"
        self.geometry = None
        self.pattern: np.ndarray | None = None
        self.masked: np.ndarray | None = None
        self.sample_images = 0
        self.frames: dict[int, dict[str, Any]] = {}  # frame -> kind, exposure_s, valid, reason
        self.history: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []  # the full posterior events (for the report)
        self.reason = ""
        if not self.truth_params:
            self.truth_params = dict(doc.get("truth_params") or {})
        stop_rule = str(doc.get("stop_rule") or "")
        self.kde = "KDEConverged" in stop_rule
        self.quantity = next((k[:-4] for k in self.targets if k.endswith("_std")), "radius")
        if self.kde:
            self.ax_conv.set_ylabel("KDE divergence D_n (nats)")
            self.l_conv.set_label("D_n = KL(p̂_n ‖ p̂_n−1)")
            self.l_expected.set_label("counting-noise expectation E0_n")
            self.l_threshold.set_label("threshold ε_n")
        else:
            unit = UNITS.get(self.quantity, "")
            self.ax_conv.set_ylabel(f"posterior std of {self.quantity}" + (f" ({unit})" if unit else ""))
            self.l_conv.set_label(f"σ({self.quantity})")
            target = self.targets.get(f"{self.quantity}_std")
            if target is not None:
                self.l_target = self.ax_conv.axhline(target, color="C3", ls="--", lw=1.0, label=f"target {target:g}")
        sample = doc.get("sample") or ""
        self.ax_img.set_title(f"SAXS{': ' + str(sample) if sample else ''} — sample frames summed", fontsize=9)

    def descriptor(self, doc):
        super().descriptor(doc)
        if doc["name"] == "primary" and self.geometry is None:
            from agent.feeders import saxs_geometry_config
            from agent.saxs.geometry import DetectorGeometry

            try:
                conf = doc["configuration"][self.det]["data"]
                self.geometry = DetectorGeometry.from_config(saxs_geometry_config(conf, self.det))
            except (KeyError, ValueError):
                self.geometry = None

    def on_event(self, stream, data, doc) -> bool:
        if stream == "primary":
            from agent.feeders import frame_problem

            frame = int(data.get("frame", len(self.frames) + 1))
            problem = frame_problem(data, self.validity) if self.validity else ""
            kind = str(data.get(self.kind_key, ""))
            self.frames[frame] = {"kind": kind, "exposure_s": float(data.get("exposure_s", np.nan)),
                                  "valid": not problem, "reason": problem}
            if not problem and kind == "sample":
                image = np.asarray(data[self.image_key])
                bad = image < 0
                self.masked = bad if self.masked is None else self.masked | bad
                counts = np.where(bad, 0, image).astype(np.int64)
                self.pattern = counts if self.pattern is None else self.pattern + counts
                self.sample_images += 1
            return False
        if stream == "frames":
            frame = int(data["frame"])
            entry = self.frames.setdefault(frame, {"kind": str(data.get("kind", "")),
                                                   "exposure_s": float("nan"), "valid": False})
            entry.update(valid=bool(data["valid"]), reason=str(data.get("reason") or ""),
                         beamtime_s=float(data.get("beamtime_s", np.nan)))
            return False
        if stream != "posterior":
            return False
        self.reports.append(dict(data))
        self.history.append({k: data.get(k, np.nan) for k in KEPT}
                            | {f"{q}_{s}": data.get(f"{q}_{s}", np.nan) for q in (*PARAMETERS, self.quantity)
                               for s in ("mean", "std", "lo68", "hi68", "lo95", "hi95")})
        self.reason = str(data.get("stop_reason") or "")
        return True

    # -- drawing ------------------------------------------------------------------------------------------
    def refresh(self, final: bool = False) -> None:
        self._draw_pattern()
        self._draw_curve()
        self._draw_convergence(final)
        self._draw_parameters()
        self._draw_beamtime()

    def _draw_pattern(self) -> None:
        if self.pattern is None:
            return
        mask = self.masked.copy()
        if self.geometry is not None and self.geometry.shape == mask.shape:
            mask |= self.geometry.static_mask()
        shown = np.ma.masked_array(self.pattern.astype(float), mask=mask | (self.pattern <= 0))
        positive = shown.compressed()
        vmin = max(float(positive.min()), 0.5) if positive.size else 0.5
        vmax = max(float(positive.max()), vmin * 10) if positive.size else 10.0
        if self.image is None:
            import matplotlib

            cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.6")
            self.image = self.ax_img.imshow(shown, origin="upper", cmap=cmap, norm=LogNorm(vmin, vmax),
                                            interpolation="nearest")
            self.colorbar = self.ax_img.figure.colorbar(self.image, ax=self.ax_img, fraction=0.046, pad=0.02,
                                                        label="counts")
        else:
            self.image.set_data(shown)
            self.image.set_norm(LogNorm(vmin, vmax))
        self.ax_img.set_title(f"{self.sample_images} sample frame(s) summed (log scale; grey: gaps, beam stop, "
                              "dead pixels)", fontsize=8)

    def _draw_curve(self) -> None:
        curve = agent_curve(self.current_agent())
        if curve is None:
            return
        q, i, sigma, fit = curve
        ok = np.isfinite(i) & np.isfinite(sigma) & (i > 0)
        self.l_data.set_data(q[ok], i[ok])
        if self.band is not None:
            self.band.remove()
        lo = np.clip(i - sigma, i * 1e-3, None)
        self.band = self.ax_iq.fill_between(q, lo, i + sigma, where=np.isfinite(i) & np.isfinite(sigma) & (i > 0),
                                            color="0.6", alpha=0.4, lw=0, label="±1σ (counting noise)")
        if fit is not None:
            self.l_fit.set_data(q, fit)
        if self.truth is not None:
            self.l_truth.set_data(q, np.asarray(self.truth(q), dtype=float))
        self.ax_iq.legend(fontsize=8, loc="lower left")
        self.ax_iq.relim()
        self.ax_iq.autoscale_view()

    def _draw_convergence(self, final: bool) -> None:
        if not self.history:
            return
        h = {k: np.array([float(x.get(k, np.nan)) for x in self.history]) for k in self.history[0]}
        n = h["sample_frames"] if np.any(np.isfinite(h["sample_frames"])) else np.arange(1, len(self.history) + 1)
        if self.kde:
            self.l_conv.set_data(n, h["kde_divergence"])
            self.l_expected.set_data(n, h["kde_expected"])
            self.l_threshold.set_data(n, h["kde_threshold"])
        else:
            self.l_conv.set_data(n, h[f"{self.quantity}_std"])
        self.ax_conv.legend(fontsize=7.5, loc="lower left")
        self.ax_conv.relim()
        self.ax_conv.autoscale_view()
        finite = n[np.isfinite(n)]
        if finite.size:  # whole sample frames, and a single frame not at the axis' edge
            self.ax_conv.set_xlim(0.5, float(finite.max()) + 0.5)
        target = self.targets.get(f"{self.quantity}_std")
        shown = [v for v in (*self.l_conv.get_ydata(), *self.l_threshold.get_ydata(), target)
                 if v is not None and np.isfinite(v) and v > 0]
        if shown:  # the target or threshold in view with the data
            self.ax_conv.set_ylim(min(shown) / 2, max(shown) * 2)
        last = self.history[-1]
        title = f"{len(self.frames)} frames, {float(last['beamtime_s']) / 60:.1f} min"
        if final and self.reason:
            title += ": " + pretty_reason(self.reason).split(": ")[0]
        self.ax_conv.set_title(title, fontsize=8)

    def _draw_parameters(self) -> None:
        for a in self.par_artists:
            a.remove()
        self.par_artists = []
        if not self.history:
            return
        last = self.history[-1]
        for k, q in enumerate(PARAMETERS):
            mean = float(last.get(f"{q}_mean", np.nan))
            truth = self.truth_params.get(q)
            ref = float(truth) if truth else (mean if np.isfinite(mean) and mean else 1.0)
            y = -k
            for lo, hi, lw, c in (("lo95", "hi95", 1.2, "0.55"), ("lo68", "hi68", 3.5, "C0")):
                a, b = float(last.get(f"{q}_{lo}", np.nan)), float(last.get(f"{q}_{hi}", np.nan))
                if np.isfinite(a) and np.isfinite(b):
                    self.par_artists += self.ax_par.plot([a / ref, b / ref], [y, y], "-", lw=lw, color=c,
                                                         solid_capstyle="butt")
            if np.isfinite(mean):
                self.par_artists += self.ax_par.plot([mean / ref], [y], "o", color="k", ms=4)
            std = float(last.get(f"{q}_std", np.nan))
            unit = UNITS.get(q, "")
            text = f"{q} = {format(mean, resolved_format(std))} ± {std:.2g}{' ' + unit if unit else ''}"
            if truth:
                text += f" (truth {float(truth):.4g})"
            self.par_artists.append(self.ax_par.text(0.02, y + 0.25, text, transform=self.ax_par.get_yaxis_transform(),
                                                     fontsize=8, va="bottom"))
        self.par_artists.append(self.ax_par.axvline(1.0, color="C2", ls="--", lw=1.0))
        self.ax_par.set_yticks([])
        self.ax_par.set_ylim(-len(PARAMETERS) + 0.5, 0.5)
        self.ax_par.set_xlabel("value / truth (bars: 68 % and 95 % intervals)" if self.truth_params
                               else "value / posterior mean (bars: 68 % and 95 % intervals)", fontsize=8)
        best, p = last.get("model_prob_max"), float(last.get("model_prob_max", np.nan))
        model = (self.reports[-1].get("model_best") if self.reports else None) or "?"
        self.ax_par.set_title(f"leading model {model}" + (f" (P = {p:.3f})" if best is not None and np.isfinite(p)
                                                          else ""), fontsize=8)

    def beamtime_by_slot(self) -> dict[str, float]:
        """Exposure (s) spent on each cell slot so far (stored frames, valid or not)."""
        out = dict.fromkeys(SLOT_COLOURS, 0.0)
        for f in self.frames.values():
            if f["kind"] in out and np.isfinite(f["exposure_s"]):
                out[f["kind"]] += f["exposure_s"]
        return out

    def _draw_beamtime(self, extra: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """Stacked bars of exposure per slot: this run, and ``extra`` (label → slot → s, e.g. a conventional
        protocol's estimate)."""
        for a in self.time_bars:
            a.remove()
        self.time_bars = []
        bars = {"adaptive (this run)": self.beamtime_by_slot(), **(extra or {})}
        for x, slots in enumerate(bars.values()):
            bottom = 0.0
            for slot, colour in SLOT_COLOURS.items():
                value = float(slots.get(slot, 0.0))
                if value > 0:
                    self.time_bars.append(self.ax_time.bar(x, value, bottom=bottom, color=colour, width=0.6,
                                                           label=slot if x == 0 else "_"))
                    bottom += value
        self.ax_time.set_xticks(range(len(bars)), list(bars), fontsize=8)
        self.ax_time.legend(fontsize=7.5, loc="upper left")
        self.ax_time.relim()
        self.ax_time.autoscale_view()

    def artists(self) -> Mapping[str, Any]:
        return {"image": self.image, "data": self.l_data, "band": self.band, "fit": self.l_fit, "truth": self.l_truth,
                "convergence": self.l_conv, "threshold": self.l_threshold, "expected": self.l_expected,
                "target": self.l_target, "parameters": self.par_artists, "beamtime": self.time_bars}


def agent_curve(agent) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """``(q nm⁻¹, I cm⁻¹, σ cm⁻¹, fit cm⁻¹ or None)`` on the agent's coarse bins: its reduced, buffer-subtracted
    curve (``SAXSAgent.posterior()["data"]``) and the leading model's posterior-mean curve on the bins it used
    (NaN elsewhere); None before a curve exists."""
    if agent is None or not callable(getattr(agent, "posterior", None)):
        return None
    post = agent.posterior()
    data, q = post.get("data"), post.get("q")
    if data is None or q is None:
        return None
    q, y = np.asarray(q, dtype=float), np.asarray(data.y, dtype=float)
    sigma = np.sqrt(np.clip(np.asarray(data.var, dtype=float), 0, None))
    fit = None
    probs = post.get("probabilities") or {}
    if probs:
        best = max(probs, key=probs.get)
        use = np.asarray(data.use, bool)
        fit = np.full(q.shape, np.nan)
        fit[use] = post["models"][best].mean_curve()
    return q, y, sigma, fit
