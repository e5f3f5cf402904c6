"""Live view of an adaptive 3d XPS run (``adaptive_xps``): the accumulated spectrum with the 2- and 3-level
cluster-model fits and the leading model's residuals; the 3-level model's probability against sweeps with
the decision thresholds; the free-energy difference ΔF = F(3-level) − F(2-level) (nats, ± its sampling
error) with the ΔF at which the probability reaches the threshold (negative ΔF favours the 3-level model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator, SymmetricalLogLocator

from bayesbeam.live.base import LiveFigure, pretty_reason, spectrum_and_history_axes

MODELS = ("2-level", "3-level")
STYLE = {"2-level": ("C0", "--"), "3-level": ("C3", "-")}


class LiveXPS(LiveFigure):
    """The live figure of an ``adaptive_xps`` run (see the module docstring)."""

    figsize = (13.0, 7.5)
    title = "bayesbeam: 3d XPS"

    def layout(self, fig) -> None:
        self.ax_spec, self.ax_res, self.ax_p, self.ax_df = spectrum_and_history_axes(
            fig, height_ratios=(3, 1.3), width_ratios=(1.4, 1), top=0.84, hspace=0.1,
            residual_label=r"(data − fit) / $\sqrt{\mathrm{fit}}$")
        self.ax_spec.set_ylabel("accumulated counts")
        self.ax_res.set_xlabel("binding energy relative to the 3d core level (eV)")
        self.ax_p.set_ylabel("P(3-level | data)")
        self.ax_p.set_ylim(-0.03, 1.03)
        self.ax_df.set_xlabel("sweeps")
        self.ax_df.set_ylabel("ΔF = F₃ − F₂ (nats)")
        self.ax_df.axhline(0, color="0.7", lw=0.8)
        self.ax_df.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ax_df.set_yscale("symlog", linthresh=10)
        self.ax_df.yaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=10, subs=[1.0]))
        # plain numbers: symlog's default formatter labels a view inside ±linthresh with its limits (5.18883×10⁰)
        self.ax_df.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        self.ax_df.set_title("ΔF < 0 favours the 3-level model, ΔF > 0 the 2-level one", fontsize=8, loc="left")
        (self.l_counts,) = self.ax_spec.plot([], [], ".", ms=2.5, color="0.4", label="measured (sum of sweeps)")
        self.l_fit = {m: self.ax_spec.plot([], [], ls, color=c, lw=1.2, label=f"{m} fit (posterior mean)")[0]
                      for m, (c, ls) in STYLE.items()}
        (self.l_res,) = self.ax_res.plot([], [], ".", ms=2.5, color="0.4")
        (self.l_p,) = self.ax_p.plot([], [], "o-", ms=3.5, color="C3", label="P(3-level)")
        self.l_df = None
        self.l_threshold: list = []

    def on_start(self, doc):
        validity = doc.get("validity") or {}
        det = (doc.get("detectors") or ["analyser"])[0]
        self.counts_key = validity.get("counts") or f"{det}_counts"
        self.energies_key = validity.get("energies") or f"{det}_energies"
        self.counts: np.ndarray | None = None
        self.energies: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []
        self.reason = ""
        p = self.targets.get("model_prob_max")
        if p is not None:
            self.l_threshold = [self.ax_p.axhline(p, color="C3", ls="--", lw=0.9, label=f"decided 3-level: P ≥ {p:g}"),
                                self.ax_p.axhline(1 - p, color="C0", ls="--", lw=0.9,
                                                  label=f"decided 2-level: P ≤ {1 - p:.3g}")]
            f = np.log(p / (1 - p))
            self.l_threshold += [self.ax_df.axhline(v, color=c, ls="--", lw=0.9, label=lab) for v, c, lab in
                                 ((-f, "C3", f"|ΔF| = ln(p/(1−p)) = {f:.1f} nats"), (f, "C0", "_"))]
        self.ax_p.legend(fontsize=8, loc="center right")
        sample = doc.get("sample") or ""
        self.ax_spec.set_title(f"3d XPS{': ' + str(sample) if sample else ''}", fontsize=10)

    def on_event(self, stream, data, doc) -> bool:
        if stream == "primary":
            counts = np.asarray(data.get(self.counts_key, np.nan), float)
            energies = np.asarray(data.get(self.energies_key, np.nan), float)
            if counts.size > 1 and counts.shape == energies.shape and np.all(np.isfinite(counts)) and counts.min() >= 0:
                self.counts = counts.copy() if self.counts is None else self.counts + counts
                self.energies = energies
            return False
        if stream != "posterior":
            return False
        self.history.append({k: data.get(k, np.nan) for k in ("sweeps", "beamtime_s", "p_3level",
                                                               "dF_3level_minus_2level", "F_2level_err",
                                                               "F_3level_err", "model_best")})
        self.reason = str(data.get("stop_reason") or "")
        return True

    def refresh(self, final: bool = False) -> None:
        if self.counts is not None:
            self.l_counts.set_data(self.energies, self.counts)
        if self.history:
            h = {k: np.array([x[k] for x in self.history], dtype=float)
                 for k in self.history[0] if k != "model_best"}
            self.l_p.set_data(h["sweeps"], h["p_3level"])
            if self.l_df is not None:
                self.l_df.remove()
            self.l_df = self.ax_df.errorbar(h["sweeps"], h["dF_3level_minus_2level"],
                                            yerr=np.hypot(h["F_2level_err"], h["F_3level_err"]), fmt="o-", ms=3,
                                            color="k", label="ΔF ± sampling error")
            self.ax_df.legend(fontsize=7.5, loc="best")
            for ax in (self.ax_p, self.ax_df):
                ax.relim()
                ax.autoscale_view(scaley=ax is self.ax_df)
            last = self.history[-1]
            title = (f"{int(last['sweeps'])} sweeps, {float(last['beamtime_s']) / 60:.1f} min: leading "
                     f"{last['model_best']}")
            if final and self.reason:
                title += "\n" + pretty_reason(self.reason).replace(" and ", "\n")
            self.ax_p.set_title(title, fontsize=9)
        agent = self.current_agent()
        if agent is not None and getattr(agent, "posteriors", None) and agent.counts is not None:
            best = agent.report()["model_best"]
            for m, line in self.l_fit.items():
                line.set_data(agent.energies, agent.fitted_spectrum(m))
            fit = agent.fitted_spectrum(best)
            self.l_res.set_data(agent.energies, (agent.counts - fit) / np.sqrt(np.maximum(fit, 1.0)))
            self.ax_res.set_title(f"residuals of the leading {best} model", fontsize=8, loc="left")
        self.ax_spec.legend(fontsize=8, loc="upper left")
        for ax in (self.ax_spec, self.ax_res):
            ax.relim()
            ax.autoscale_view()
        if not self.ax_spec.xaxis_inverted():
            self.ax_spec.invert_xaxis()

    def artists(self) -> Mapping[str, Any]:
        return {"counts": self.l_counts, "fits": self.l_fit, "residuals": self.l_res, "probability": self.l_p,
                "delta_f": self.l_df, "thresholds": self.l_threshold,
                "legends": [ax.get_legend() for ax in (self.ax_spec, self.ax_p, self.ax_df)]}
