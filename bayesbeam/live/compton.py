"""Live view of an adaptive magnetic-Compton run (``adaptive_compton``): the magnetic Compton profile with the
posterior-mean fit, its 95 % band and the orbital components, the normalised residuals with χ²/ν; the
posterior std of each quantity against valid cycles (beamtime in hours on the top axis) with the target
line; the misfit size τ (μB: the posterior of the discrepancy term's prior std; near its floor the free-atom
model explains the data within counting noise)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bayesbeam.live.base import LiveFigure, label, pretty_reason, spectrum_and_history_axes

Z95 = 1.959964


def profile_band(agent) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std (μB/a.u.) of the fitted MCP on the window channels: the exact mixture over the
    (Γ, misfit) grid of the Gaussian amplitude posteriors (cells below 1e-9 of the heaviest left out)."""
    post = agent.posterior()["grid"]
    keep = post.weights > 1e-9 * post.weights.max()
    g, s = np.nonzero(keep)
    w = post.weights[g, s] / post.weights[g, s].sum()
    x = agent.model.design[g]  # (m, n, k)
    f = np.einsum("mnk,mk->mn", x, post.means[g, s])
    v = np.einsum("mnk,mkl,mnl->mn", x, post.covs[g, s], x)
    mean = w @ f
    return mean, np.sqrt(np.clip(w @ (v + f**2) - mean**2, 0, None))


class LiveCompton(LiveFigure):
    """The live figure of an ``adaptive_compton`` run (see the module docstring). ``quantity``: the one
    whose std the target applies to (default: the stop rule's target-std quantity, else ``mu_s``)."""

    figsize = (13.0, 7.5)
    title = "bayesbeam: magnetic Compton"

    def __init__(self, agent: Any = None, *, quantity: str | None = None, **kwargs):
        super().__init__(agent, **kwargs)
        self.quantity = quantity

    def layout(self, fig) -> None:
        self.ax_mcp, self.ax_res, self.ax_std, self.ax_misfit = spectrum_and_history_axes(
            fig, height_ratios=(3, 1), width_ratios=(1.25, 1), top=0.86, hspace=0.08, residual_label="residual / σ")
        self.ax_mcp.set_ylabel(r"$J_{\mathrm{mag}}(p_z)$ ($\mu_B$/a.u.)")
        self.ax_mcp.axhline(0, color="0.8", lw=0.6)
        self.ax_res.set_xlabel(r"$p_z$ (a.u.)")
        self.ax_std.set_yscale("log")
        self.ax_std.set_ylabel(r"posterior std ($\mu_B$)")
        self.ax_misfit.set_xlabel("valid cycles (+ − − +)")
        self.ax_misfit.set_ylabel(r"misfit size $\tau$ ($\mu_B$)")
        self._hours_axis = self.ax_std.secondary_xaxis("top", functions=(self._to_hours, self._from_hours))
        self._hours_axis.set_xlabel("beamtime (h)")
        (self.l_meas,) = self.ax_mcp.plot([], [], "o", ms=2.5, color="0.35", label="measured MCP (±1σ shaded)")
        (self.l_fit,) = self.ax_mcp.plot([], [], "-", color="C3", lw=1.4, label="fit: posterior mean")
        self.band = None
        self.meas_band = None
        self.l_comp: list = []
        (self.l_res,) = self.ax_res.plot([], [], "o", ms=2, color="0.35")
        self.res_text = self.ax_res.text(0.01, 0.95, "", transform=self.ax_res.transAxes, va="top", fontsize=8)
        self.l_misfit = self.ax_misfit.errorbar([], [], yerr=[], fmt="o-", ms=3, color="C4",
                                                label="posterior mean ± std")
        self.l_std: dict[str, Any] = {}
        self.l_target = None

    # -- documents ----------------------------------------------------------------------------------------
    def on_start(self, doc):
        quantities = list(doc.get("quantities") or ["mu_s", "a3d", "a4s"])
        self.std_quantities = [q for q in quantities if q not in ("gamma", "misfit")]
        watched = [k[:-4] for k in self.targets if k.endswith("_std")]
        self.watched = self.quantity or (watched[0] if watched else "mu_s")
        self.history: list[dict[str, float]] = []
        self.reason = ""
        for q in self.std_quantities:
            main = q == self.watched
            (self.l_std[q],) = self.ax_std.plot([], [], "o-" if main else ".-", ms=4 if main else 2,
                                                lw=1.6 if main else 0.8, alpha=1 if main else 0.6,
                                                label=f"σ({label(q)})")
        target = self.targets.get(f"{self.watched}_std")
        if target is not None:
            self.l_target = self.ax_std.axhline(target, color="r", ls="--", lw=1,
                                                label=f"target σ({label(self.watched)}) = {target:g} $\\mu_B$")
        self.ax_std.legend(fontsize=8, loc="upper right")
        self.ax_misfit.legend(fontsize=8, loc="upper left")
        sample = doc.get("sample_description") or doc.get("sample") or ""
        self.ax_mcp.set_title(f"magnetic Compton profile{': ' + str(sample) if sample else ''}", fontsize=10)

    def on_event(self, stream, data, doc) -> bool:
        if stream != "posterior":
            return False
        keys = ["cycles", "beamtime_s", "misfit_mean", "misfit_std", f"{self.watched}_mean",
                *(f"{q}_std" for q in self.std_quantities)]
        self.history.append({k: float(data.get(k, np.nan)) for k in keys})
        self.reason = str(data.get("stop_reason") or "")
        return True

    # -- drawing ------------------------------------------------------------------------------------------
    def _hist(self, key: str) -> np.ndarray:
        return np.array([h[key] for h in self.history], dtype=float)

    def _hours_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(valid cycles, beamtime h) from 0 through the last update, extended linearly far beyond it."""
        c, h = self._hist("cycles"), self._hist("beamtime_s") / 3600 if self.history else np.array([])
        ok = np.isfinite(c) & np.isfinite(h)
        c, h = np.r_[0.0, c[ok]], np.r_[0.0, h[ok]]
        rate = h[-1] / c[-1] if c[-1] > 0 and h[-1] > 0 else 1.0
        far = max(c[-1], 1.0) * 1e3
        return np.r_[c, far], np.r_[h, h[-1] + (far - c[-1]) * rate]

    def _to_hours(self, cycles):
        c, h = self._hours_table()
        return np.interp(cycles, c, h)

    def _from_hours(self, hours):
        c, h = self._hours_table()
        return np.interp(hours, np.maximum.accumulate(h), c)

    def refresh(self, final: bool = False) -> None:
        if self.history:
            cycles = self._hist("cycles")
            for q, line in self.l_std.items():
                line.set_data(cycles, self._hist(f"{q}_std"))
            mean, std = self._hist("misfit_mean"), self._hist("misfit_std")
            self.l_misfit.remove()
            self.l_misfit = self.ax_misfit.errorbar(cycles, mean, yerr=std, fmt="o-", ms=3, color="C4",
                                                    label="posterior mean ± std")
            self.ax_misfit.legend(fontsize=8, loc="upper left")
            for ax in (self.ax_std, self.ax_misfit):
                ax.relim()
                ax.autoscale_view()
            last = self.history[-1]
            w = self.watched
            title = (f"{int(last['cycles'])} cycles, {last['beamtime_s'] / 3600:.2f} h: {label(w)} = "
                     f"{last[f'{w}_mean']:.4f} ± {last[f'{w}_std']:.4f} $\\mu_B$")
            if final and self.reason:
                title += f"\n{pretty_reason(self.reason)}"
            self.ax_std.set_title(title, fontsize=9)
        agent = self.current_agent()
        if agent is not None and getattr(agent, "cycles", 0) and getattr(agent, "model", None) is not None:
            self._draw_profile(agent)

    def _draw_profile(self, agent) -> None:
        pz = agent.model.pz
        y, var = agent.reduced()
        sd = np.sqrt(var)
        fit, fit_sd = profile_band(agent)
        comps, _ = agent.fitted_profile()
        self.l_meas.set_data(pz, y)
        self.l_fit.set_data(pz, fit)
        for artist in (self.band, self.meas_band):
            if artist is not None:
                artist.remove()
        self.meas_band = self.ax_mcp.fill_between(pz, y - sd, y + sd, color="0.6", alpha=0.25, lw=0)
        self.band = self.ax_mcp.fill_between(pz, fit - Z95 * fit_sd, fit + Z95 * fit_sd, color="C3", alpha=0.35,
                                             lw=0, label="fit: 95 % band")
        if not self.l_comp:
            for k, name in enumerate((*agent.orbitals, "discrepancy")):
                (line,) = self.ax_mcp.plot([], [], "--" if k < len(agent.orbitals) else ":", lw=1, color=f"C{k}",
                                           label=f"{name} component")
                self.l_comp.append(line)
        for line, c in zip(self.l_comp, comps, strict=True):
            line.set_data(pz, c)
        resid = (y - fit) / np.where(sd > 0, sd, np.nan)
        self.l_res.set_data(pz, resid)
        dof = max(np.isfinite(resid).sum() - len(agent.orbitals) - 1, 1)
        chi2 = float(np.nansum(resid**2) / dof)
        verdict = "" if chi2 < 1.2 else ": the model misses the data beyond counting noise"
        self.res_text.set_text(f"χ²/ν = {chi2:.2f}{verdict}")
        self.chi2_per_dof = chi2
        self.ax_mcp.legend(fontsize=8, loc="upper right")
        for ax in (self.ax_mcp, self.ax_res):
            ax.relim()
            ax.autoscale_view()
        self.ax_mcp.set_xlim(pz.min(), pz.max())

    def artists(self) -> Mapping[str, Any]:
        return {"mcp_measured": self.l_meas, "mcp_fit": self.l_fit, "mcp_band": self.band,
                "components": self.l_comp, "residuals": self.l_res, "std": self.l_std, "target": self.l_target,
                "misfit": self.l_misfit, "hours_axis": self._hours_axis,
                "legends": [ax.get_legend() for ax in (self.ax_mcp, self.ax_std, self.ax_misfit)]}
