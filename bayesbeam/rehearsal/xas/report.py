"""What an XAS rehearsal shows a scientist: the summary (also the ``--json`` file), its text and a
figure (PNG)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bayesbeam.rehearsal.xas.rehearse import TARGET_LABEL, XASRehearsal


def summary(r: XASRehearsal) -> dict[str, Any]:
    """``stop_reason``; ``beamtime_s`` = ``dwell_s`` + ``moves_s``; ``steps`` (= ``points``);
    ``rmse_pred`` and ``rmse_actual`` of the ``target`` spectrum and ``mu_rmse_actual`` of normalised
    μ (edge-step units); ``band95_coverage`` (fraction of the grid where the truth is in the 95 %
    band of μ); ``amplitude_mean/_std`` (edge step) and ``shift_mean/_std`` (eV); the conventional
    scans (dwell s per point, beamtime s, adaptive beamtime as a fraction of theirs); the energies
    (eV) in the order chosen; ``sample``, ``uid``, ``seed`` and the ``options``."""
    rep, post = r.agent.report(), r.agent.posterior()
    truth = r.sample.mu(post["energy"])
    dwell = float(sum(r.agent.dwells))
    return {
        "technique": "xas", "sample": r.sample.name, "uid": r.uid, "seed": r.options.seed, "options": r.options,
        "stop_reason": r.stop_reason, "beamtime_s": rep["beamtime_s"], "steps": rep["points"],
        "points": rep["points"], "dwell_s": dwell, "moves_s": rep["beamtime_s"] - dwell, "target": post["target"],
        "rmse_pred": rep["rmse_pred"], "rmse_actual": r.sample.target_rmse(r.agent.post),
        "mu_rmse_actual": float(np.sqrt(np.mean((post["mean"] - truth) ** 2))),
        "band95_coverage": float(np.mean(np.abs(post["mean"] - truth) <= post["upper"] - post["mean"])),
        "amplitude_mean": rep["amplitude_mean"], "amplitude_std": rep["amplitude_std"],
        "shift_mean": rep["shift_mean"], "shift_std": rep["shift_std"],
        "conventional": {name: {"dwell_s": d, "beamtime_s": bt, "adaptive_fraction": rep["beamtime_s"] / bt}
                         for name, (d, bt) in r.conventional.items()},
        "energies_eV": list(r.agent.post.data_e)}


def summary_text(s: dict[str, Any]) -> str:
    """The lines the command prints for a ``summary``."""
    lines = [f"stop: {s['stop_reason']}",
             f"points: {s['points']}, beamtime {s['beamtime_s']:.0f} s (dwell {s['dwell_s']:.0f} s + moves "
             f"{s['moves_s']:.0f} s)",
             f"RMSE of {TARGET_LABEL[s['target']]}: predicted {s['rmse_pred']:.4f}, actual {s['rmse_actual']:.4f}; "
             f"normalised μ: actual {s['mu_rmse_actual']:.4f}, its 95 % band covers {100 * s['band95_coverage']:.0f} "
             f"% of the grid; amplitude {s['amplitude_mean']:.3f} ± {s['amplitude_std']:.3f}, edge shift "
             f"{s['shift_mean']:+.2f} ± {s['shift_std']:.2f} eV"]
    lines += [f"conventional {name}: {c['beamtime_s']:.0f} s ({c['dwell_s']:.2f} s per point) for the same predicted "
              f"RMSE -> adaptive needs {100 * c['adaptive_fraction']:.0f} %" for name, c in s["conventional"].items()]
    lines.append("energies in the order chosen (eV): " + " ".join(f"{e:.1f}" for e in s["energies_eV"]))
    return "\n".join(lines)


def rehearsal_figure(result: XASRehearsal, path: str) -> str:
    """The run's live figure (``bayesbeam.live.LiveXAS``: the target spectrum's posterior mean, 95 % band and
    measured points; predicted RMSE vs beamtime with the target) with the rehearsal's own marks: the true
    spectrum, the actual RMSE, and the beamtime of each conventional scan to the same RMSE (PNG)."""
    view, agent = result.live, result.agent
    post = agent.posterior()
    e = post["energy"]
    s = result.sample
    truth = agent.post.target_of(s.mu(e), s.amplitude, s.offset)
    view.ax_mu.plot(e, truth, "k--", lw=0.8, label=f"truth ({s.name})")
    view.ax_mu.legend(fontsize=8, loc="lower right")
    t = result.trajectory
    if t.size:
        view.ax_rmse.plot(t[:, 0] / 60, t[:, 2], "s-", ms=2, lw=0.8, color="C1", label="actual RMSE (truth known)")
    for k, (name, (_, bt)) in enumerate(result.conventional.items()):
        view.ax_rmse.axvline(bt / 60, color=f"C{k + 2}", ls=":", label=f"{name} scan, same RMSE: {bt / 60:.1f} min")
    view.ax_rmse.legend(fontsize=7.5, loc="upper right")
    view.ax_rmse.relim()
    view.ax_rmse.autoscale_view()
    return str(view.save(path, dpi=110))
