"""What an XPS rehearsal shows a scientist: the summary (also the ``--json`` file), a table and a
figure (PNG): the spectrum with the fits, the free-energy difference versus sweeps, the posteriors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bayesbeam.rehearsal.xps.rehearse import XPSRehearsal

MODELS = ("2level", "3level")


def summary(r: XPSRehearsal) -> dict[str, Any]:
    """``stop_reason``, ``beamtime_s``, ``steps`` (= ``sweeps``); the leading model ``model_best``
    and its probability ``model_prob_max``, each model's probability ``p_<m>``, free energy ``F_<m>``
    ± ``F_<m>_err`` (nats), ``dF_3level_minus_2level`` and ``rhat_max_<m>``; the leading model's
    ``<q>_mean/_std/_lo95/_hi95`` (eV; null for U_ff while the 2-level model leads) of each of
    ``delta``, ``V``, ``U_ff``, ``U_fc``, ``gamma``, ``delta_f``; the truth; ``sample``, ``uid``,
    ``seed`` and the ``options``."""
    rep = r.agent.report()
    params = dict(r.sample.params)
    out: dict[str, Any] = {
        "technique": "xps", "sample": r.sample.name, "uid": r.uid, "seed": r.options.seed, "options": r.options,
        "stop_reason": r.stop_reason, "beamtime_s": r.beamtime_s, "steps": rep["sweeps"], "sweeps": rep["sweeps"],
        "truth_model": r.sample.model, "truth_params": {**params, "delta_f": params["delta"] - params["U_fc"]},
        "quantities": list(r.agent.quantities), "model_best": rep["model_best"],
        "model_prob_max": rep["model_prob_max"]}
    for key in ("p_{}", "F_{}", "F_{}_err", "rhat_max_{}"):
        out.update({key.format(m): rep[key.format(m)] for m in MODELS})
    out["dF_3level_minus_2level"] = rep["dF_3level_minus_2level"]
    out.update({f"{q}_{s}": rep[f"{q}_{s}"] for q in r.agent.quantities for s in ("mean", "std", "lo95", "hi95")})
    return out


def table(s: dict[str, Any]):
    """The rich table of a ``summary``."""
    from rich.table import Table

    t = Table(title=f"3d XPS rehearsal: {s['sample']}")
    t.add_column("quantity")
    t.add_column("value")
    t.add_row("sweeps", str(s["sweeps"]))
    t.add_row("beamtime", f"{s['beamtime_s'] / 60:.1f} min")
    t.add_row("stop reason", s["stop_reason"])
    t.add_row("leading model", f"{s['model_best']} (P ≥ {s['model_prob_max']:.4f})")
    t.add_row("P 2-level / 3-level", f"{s['p_2level']:.4f} / {s['p_3level']:.4f}")
    t.add_row("F 2-level / 3-level", f"{s['F_2level']:.2f} ± {s['F_2level_err']:.2f} / "
                                     f"{s['F_3level']:.2f} ± {s['F_3level_err']:.2f} nats")
    for q in s["quantities"]:
        truth = s["truth_params"].get(q, float("nan"))
        if not np.isfinite(s[q + "_mean"]):
            t.add_row(q, f"not in the {s['model_best']} model (truth {truth})")
            continue
        t.add_row(q, f"{s[q + '_mean']:.4g} ± {s[q + '_std']:.2g} eV "
                     f"[{s[q + '_lo95']:.4g}, {s[q + '_hi95']:.4g}] (truth {truth:.4g})")
    return t


def xps_figure(r: XPSRehearsal, path: str | Path) -> Path:
    """The run's live figure (``bayesbeam.live.LiveXPS``: spectrum with both fits and the leading model's
    residuals; P(3-level) and ΔF = F₃ − F₂ vs sweeps with the decision thresholds) with the true model named
    in the spectrum's title (PNG)."""
    view = r.live
    best = r.agent.report()["model_best"]
    view.ax_spec.set_title(f"{r.sample.name}: truth {r.sample.model}, leading {best} after {r.agent.sweeps} sweeps",
                           fontsize=10)
    return view.save(path, dpi=100)
