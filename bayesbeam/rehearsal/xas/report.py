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
    """Reconstruction with 95 % band over the truth, energies in order, RMSE against beamtime (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    post = result.agent.posterior()
    e = post["energy"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ax[0].fill_between(e, post["lower"], post["upper"], color="C0", alpha=0.3, label="95 % band")
    ax[0].plot(e, post["mean"], "C0", lw=1, label="posterior mean")
    ax[0].plot(e, result.sample.mu(e), "k--", lw=0.8, label=f"truth ({result.sample.name})")
    ax[0].plot(result.agent.post.data_e, np.full(len(result.agent.post.data_e), -0.05), "|", color="C3", ms=6)
    ax[0].set(xlabel="energy (eV)", ylabel="normalised μ", title="reconstruction")
    ax[0].legend(fontsize=8)
    ax[1].plot(result.agent.post.data_e, ".-", lw=0.3, ms=3)
    ax[1].set(xlabel="point (order measured)", ylabel="energy (eV)", title="energies in the order chosen")
    t = result.trajectory
    if t.size:
        ax[2].semilogy(t[:, 0], t[:, 1], label="predicted RMSE")
        ax[2].semilogy(t[:, 0], t[:, 2], label="actual RMSE")
    for k, (name, (_, bt)) in enumerate(result.conventional.items()):
        ax[2].axvline(bt, color=f"C{k + 2}", ls=":", label=f"{name} (same RMSE): {bt:.0f} s")
    ax[2].set(xlabel="beamtime (s)", ylabel=f"RMSE of {TARGET_LABEL[post['target']]}", title="error against beamtime")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
