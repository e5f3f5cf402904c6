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
    """Spectrum with the leading model's fit; ΔF = F₃ − F₂ vs sweeps; parameter posteriors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agent = r.agent
    best = agent.report()["model_best"]
    fig = plt.figure(figsize=(13, 7))
    grid = fig.add_gridspec(2, 5)
    ax = fig.add_subplot(grid[0, :3])
    ax.plot(agent.energies, agent.counts, ".", ms=2, color="0.5", label=f"{agent.sweeps} sweeps")
    for m, style in (("2-level", "b--"), ("3-level", "r-")):
        ax.plot(agent.energies, agent.fitted_spectrum(m), style, lw=1, label=f"{m} fit")
    ax.invert_xaxis()
    ax.set_xlabel("binding energy relative to the 3d core level (eV)")
    ax.set_ylabel("counts")
    ax.set_title(f"{r.sample.name} (truth: {r.sample.model}); leading: {best}")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[0, 3:])
    h = agent.history
    sweeps = [x["sweeps"] for x in h]
    diff = np.array([x["dF_3level_minus_2level"] for x in h])
    err = np.array([np.hypot(x["F_2level_err"], x["F_3level_err"]) for x in h])
    ax.errorbar(sweeps, diff, yerr=err, fmt="o-", ms=3)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_yscale("symlog", linthresh=5)
    ax.set_xlabel("sweeps")
    ax.set_ylabel("F(3-level) − F(2-level) (nats)")
    ax.set_title(r.stop_reason, fontsize=8, wrap=True)
    post = agent.posteriors[best]
    for i, q in enumerate(("delta", "V", "U_ff", "U_fc", "gamma")):
        ax = fig.add_subplot(grid[1, i])
        if q in post.names:
            ax.hist(post.samples[:, post.names.index(q)], bins=40, color="C0", alpha=0.7)
        if r.sample.model == best or q != "U_ff":
            ax.axvline(r.sample.params[q], color="r", ls=":", label="truth")
        ax.set_xlabel(f"{q} (eV)")
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
