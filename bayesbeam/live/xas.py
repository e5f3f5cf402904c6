"""Live view of an adaptive XAS run (``adaptive_xas``): the spectrum the design targets (μt / edge step, or
normalised μ) with its posterior mean, 95 % band and the measured points (rejected ones marked), the next
energy; the predicted RMSE of that spectrum against beamtime with the target line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bayesbeam.live.base import LiveFigure, pretty_reason

Z95 = 1.959964
TARGET_AXIS = {"absorbance": r"$\mu t$ / edge step", "mu": r"normalised $\mu(E)$"}


class LiveXAS(LiveFigure):
    """The live figure of an ``adaptive_xas`` run (see the module docstring)."""

    figsize = (14.0, 5.2)
    title = "bayesbeam: XAS"

    def layout(self, fig) -> None:
        grid = fig.add_gridspec(1, 2, width_ratios=(1.8, 1), wspace=0.2, left=0.06, right=0.98, top=0.85, bottom=0.11)
        self.ax_mu = fig.add_subplot(grid[0, 0])
        self.ax_rmse = fig.add_subplot(grid[0, 1])
        self.ax_mu.set_xlabel("energy (eV)")
        self.ax_rmse.set_xlabel("beamtime (min)")
        self.ax_rmse.set_yscale("log")
        (self.l_mean,) = self.ax_mu.plot([], [], "-", color="C0", lw=1.2, label="posterior mean")
        self.band = None
        (self.l_points,) = self.ax_mu.plot([], [], "o", ms=3.5, mfc="none", color="k", mew=0.8,
                                           label="measured points")
        (self.l_rejected,) = self.ax_mu.plot([], [], "x", ms=6, color="C3", label="rejected points (not ingested)")
        self.l_next = self.ax_mu.axvline(np.nan, color="C2", ls=":", lw=1, label="next energy")
        (self.l_rmse,) = self.ax_rmse.plot([], [], "o-", ms=2.5, color="C0", label="predicted RMSE")
        self.l_target = None

    def on_start(self, doc):
        dims = (doc.get("hints") or {}).get("dimensions") or [[["mono_energy"], "primary"]]
        self.energy_key = dims[0][0][0]
        counts = (doc.get("validity") or {}).get("counts") or [f"{d}_counts" for d in doc.get("detectors", [])]
        self.i0_key, self.it_key = counts[:2] if len(counts) >= 2 else ("i0_counts", "it_counts")
        self.if_key = (doc.get("validity") or {}).get("fluorescence")  # fluorescence mode: If/I0, the agent's units
        self.fluorescence = (doc.get("agent_config") or {}).get("mode") == "fluorescence" and bool(self.if_key)
        self.target_kind = (doc.get("agent_config") or {}).get("target") or (doc.get("plan_args") or {}).get(
            "target") or "absorbance"
        self.measured: list[tuple[float, ...]] = []  # (energy eV, ln(I0/It)) or (energy eV, I0, If, dwell s)
        self.rejected: list[int] = []  # indexes into measured
        self.history: list[dict[str, float]] = []
        self.reason = ""
        axis = TARGET_AXIS.get(self.target_kind, self.target_kind)
        if self.fluorescence and self.target_kind == "absorbance":
            axis = r"$I_f/I_0$ corrected for self-absorption / edge step"
        self.ax_mu.set_ylabel(axis)
        self.ax_rmse.set_ylabel(f"predicted RMSE of {axis}")
        target = self.targets.get("rmse_pred")
        if target is not None:
            self.l_target = self.ax_rmse.axhline(target, color="r", ls="--", lw=1, label=f"target RMSE = {target:g}")
        self.ax_rmse.legend(fontsize=8, loc="upper right")
        sample = doc.get("sample") or ""
        self.ax_mu.set_title(f"XAS{': ' + str(sample) if sample else ''}", fontsize=10)

    def on_event(self, stream, data, doc) -> bool:
        if stream == "primary" and self.fluorescence:
            self.measured.append(tuple(float(data.get(k, np.nan)) for k in (self.energy_key, self.i0_key, self.if_key,
                                                                                "dwell_s")))
            return False
        if stream == "primary":
            i0, it = float(data.get(self.i0_key, np.nan)), float(data.get(self.it_key, np.nan))
            ok = np.isfinite(i0) and np.isfinite(it) and i0 > 0 and it > 0
            self.measured.append((float(data.get(self.energy_key, np.nan)), np.log(i0 / it) if ok else np.nan))
            return False
        if stream != "posterior":
            return False
        if data.get("point_problem") and self.measured:
            self.rejected.append(len(self.measured) - 1)
        self.history.append({k: float(data.get(k, np.nan))
                             for k in ("points", "beamtime_s", "rmse_pred", "next_energy")})
        self.reason = str(data.get("stop_reason") or "")
        return True

    def refresh(self, final: bool = False) -> None:
        if self.history:
            h = {k: np.array([x[k] for x in self.history]) for k in self.history[0]}
            self.l_rmse.set_data(h["beamtime_s"] / 60, h["rmse_pred"])
            self.ax_rmse.relim()
            self.ax_rmse.autoscale_view()
            last = self.history[-1]
            self.l_next.set_xdata([last["next_energy"]] * 2 if not final else [np.nan] * 2)
            title = f"{int(last['points'])} points, {last['beamtime_s'] / 60:.1f} min: RMSE {last['rmse_pred']:.4f}"
            if final and self.reason:
                title += f"\n{pretty_reason(self.reason)}"
            self.ax_rmse.set_title(title, fontsize=9)
        agent = self.current_agent()
        if agent is not None and getattr(agent, "post", None) is not None:
            self._draw_spectrum(agent)

    def _draw_spectrum(self, agent) -> None:
        post = agent.posterior()
        e, mean, sd = post["energy"], post["target_mean"], post["target_std"]
        self.l_mean.set_data(e, mean)
        if self.band is not None:
            self.band.remove()
        self.band = self.ax_mu.fill_between(e, mean - Z95 * sd, mean + Z95 * sd, color="C0", alpha=0.3, lw=0,
                                            label="95 % band")
        if self.measured:
            m = np.array(self.measured, float)
            if self.fluorescence:  # If/I0 dead-time corrected, in the agent's data unit
                m = np.column_stack([m[:, 0], [self._fluorescence_y(agent, *row[1:]) for row in m]])
            # a measured y in the target's units: the posterior mean there plus the point's residual
            y_pred = np.interp(m[:, 0], e, agent.post.y_pred())
            points = np.interp(m[:, 0], e, mean) + (m[:, 1] - y_pred) / np.interp(m[:, 0], e, agent.post.gain)
            good = np.ones(len(m), bool)
            good[self.rejected] = False
            self.l_points.set_data(m[good, 0], points[good])
            self.l_rejected.set_data(m[~good, 0], np.full((~good).sum(), np.nanmin(mean)))
        self.l_rejected.set_label("rejected points (not ingested)" if self.rejected else "_rejected")
        self.l_next.set_label("next energy" if np.isfinite(self.l_next.get_xdata()[0]) else "_next")
        self.ax_mu.legend(fontsize=8, loc="lower right")
        self.ax_mu.relim()
        self.ax_mu.autoscale_view()

    @staticmethod
    def _fluorescence_y(agent, i0: float, counts: float, dwell: float) -> float:
        try:
            return agent.noise.from_counts(i0, counts, dwell)[0]
        except ValueError:
            return np.nan

    def artists(self) -> Mapping[str, Any]:
        return {"mean": self.l_mean, "band": self.band, "points": self.l_points, "rejected": self.l_rejected,
                "rmse": self.l_rmse, "target": self.l_target,
                "legends": [ax.get_legend() for ax in (self.ax_mu, self.ax_rmse)]}
