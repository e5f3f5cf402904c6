"""What an XAS rehearsal shows a scientist: the summary (also the ``--json`` file), its text and a
figure (PNG)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bayesbeam.rehearsal.xas.options import QUANTITY_UNIT
from bayesbeam.rehearsal.xas.rehearse import TARGET_LABEL, XASRehearsal, target_truth

FLUORESCENCE_LABEL = {"absorbance": "If/I0 corrected for self-absorption / edge step"}  # fluorescence mode


def quantity_summary(r: XASRehearsal) -> dict[str, Any]:
    """The quantity's keys of ``summary`` (none for the whole spectrum): ``quantity``, its ``unit``,
    per component (``labels``) ``mean``, ``std``, ``lower``/``upper`` (95 %) and ``truth`` (of the true
    spectrum; valence: the standard's label, None if it has none), ``definition``."""
    q = r.agent.quantity
    if q is None:
        return {}
    from agent.xas.quantities import QUANTITY_HELP

    value, std = r.agent.quantity_moments(draws=not q.linear)
    truth = q.values(r.sample.mu(r.agent.post.energy)[None, :])[0]
    if q.name == "valence":
        from agent.xas.valence import load_valence_labels

        label = load_valence_labels().get(r.sample.name)
        truth = np.array([label.valence if label else np.nan])
    z = 1.959964
    return {"quantity": q.name, "quantity_unit": QUANTITY_UNIT[q.name], "quantity_definition": QUANTITY_HELP[q.name],
            "quantity_labels": list(q.labels), "quantity_mean": value.tolist(), "quantity_std": std.tolist(),
            "quantity_lower": (value - z * std).tolist(), "quantity_upper": (value + z * std).tolist(),
            "quantity_truth": [None if not np.isfinite(t) else float(t) for t in truth],
            "calibration_eV": float(q.calibration_eV), **r.agent.foil_report()}


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
        "technique": "xas", "mode": r.agent.mode, "sample": r.sample.name, "uid": r.uid, "seed": r.options.seed,
        "options": r.options,
        "stop_reason": r.stop_reason, "beamtime_s": rep["beamtime_s"], "steps": rep["points"],
        "points": rep["points"], "dwell_s": dwell, "moves_s": rep["beamtime_s"] - dwell, "target": post["target"],
        "rmse_pred": rep["rmse_pred"], "rmse_actual": r.target_rmse(),
        "mu_rmse_actual": float(np.sqrt(np.mean((post["mean"] - truth) ** 2))),
        "band95_coverage": float(np.mean(np.abs(post["mean"] - truth) <= post["upper"] - post["mean"])),
        "amplitude_mean": rep["amplitude_mean"], "amplitude_std": rep["amplitude_std"],
        "shift_mean": rep["shift_mean"], "shift_std": rep["shift_std"],
        "conventional": {name: {"dwell_scale": d, "beamtime_s": bt, "adaptive_fraction": rep["beamtime_s"] / bt}
                         for name, (d, bt) in r.conventional.items()},
        "energies_eV": list(r.agent.post.data_e), **quantity_summary(r)}


def summary_text(s: dict[str, Any]) -> str:
    """The lines the command prints for a ``summary``."""
    label = (FLUORESCENCE_LABEL if s.get("mode") == "fluorescence" else {}).get(s["target"], TARGET_LABEL[s["target"]])
    lines = [f"stop: {s['stop_reason']}",
             f"points: {s['points']}, beamtime {s['beamtime_s']:.0f} s (dwell {s['dwell_s']:.0f} s + moves "
             f"{s['moves_s']:.0f} s)",
             f"RMSE of {label}: predicted {s['rmse_pred']:.4f}, actual {s['rmse_actual']:.4f}; "
             f"normalised μ: actual {s['mu_rmse_actual']:.4f}, its 95 % band covers {100 * s['band95_coverage']:.0f} "
             f"% of the grid; amplitude {s['amplitude_mean']:.3f} ± {s['amplitude_std']:.3f}, edge shift "
             f"{s['shift_mean']:+.2f} ± {s['shift_std']:.2f} eV"]
    same = "predicted RMSE"
    if s.get("quantity"):
        unit = s["quantity_unit"]
        for label, m, sd, lo, hi, t in zip(s["quantity_labels"], s["quantity_mean"], s["quantity_std"],
                                          s["quantity_lower"], s["quantity_upper"], s["quantity_truth"], strict=True):
            lines.append(f"{label}: {m:.4f} ± {sd:.4f} {unit} (95 % {lo:.4f} to {hi:.4f})"
                         + (f", truth {t:.4f}" if t is not None else ""))
        foil = (f" and the reference foil's monochromator offset {s['mono_offset_mean']:+.3f} ± "
                f"{s['mono_offset_std']:.3f} eV" if "mono_offset_mean" in s else "")
        lines.append(f"({s['quantity_definition']}; energies calibrated by {s['calibration_eV']:+.2f} eV{foil})")
        same = f"std of {s['quantity']}"
    lines += [f"{name}: {c['beamtime_s']:.0f} s (dwell x{c['dwell_scale']:.2f}) for the same {same} -> adaptive needs "
              f"{100 * c['adaptive_fraction']:.0f} %" for name, c in s["conventional"].items()]
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
    truth = target_truth(agent, s, result.fluorescence)
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
