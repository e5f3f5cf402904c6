"""What a magnetic-Compton rehearsal shows a scientist: the summary (also the ``--json`` file),
tables of the result and of the planning statistics, and a figure (PNG)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bayesbeam.rehearsal.compton.rehearse import CONVENTIONAL_CYCLES, Rehearsal, RepeatStatistics

STATS = ("mean", "std", "lo68", "hi68", "lo95", "hi95")


def result_summary(r: Rehearsal) -> dict[str, Any]:
    """One run: ``stop_reason``, ``beamtime_s``, ``steps`` (= ``cycles``, valid ones), ``discarded``,
    ``<q>_mean/_std/_lo95/_hi95`` (and 68 %) of each quantity the agent reports (``mu_s``, ``a3d``,
    ``a4s`` … in μB; ``gamma`` in a.u. FWHM; ``misfit`` τ in μB), the conventional beamtime (s), the
    simulation's true μ_s (μB), ``sample``, ``uid``, ``seed`` and the ``options``; ``mu_s_sys_kappa``,
    ``mu_s_sys_multiple_scattering``, ``mu_s_sys_pz_calibration``, ``mu_s_sys_total`` (μB): the systematics beside
    the statistical std."""
    rep = r.agent.history[-1]
    out: dict[str, Any] = {
        "technique": "compton", "sample": r.sample.name, "sample_description": r.sample.description,
        "uid": r.uid, "seed": r.options.seed, "options": r.options, "stop_reason": r.stop_reason,
        "beamtime_s": r.beamtime_s, "steps": r.agent.cycles, "cycles": r.agent.cycles,
        "discarded": len(r.discarded), "cycle_time_s": r.cycle_time_s, "conventional_cycles": CONVENTIONAL_CYCLES,
        "conventional_beamtime_s": r.conventional_beamtime_s, "truth_mu_s": r.sample.spin_moment_mub,
        "quantities": list(r.agent.quantities)}
    out.update({f"{q}_{s}": rep[f"{q}_{s}"] for q in r.agent.quantities for s in STATS if f"{q}_{s}" in rep})
    if r.agent.cycles:
        out.update({f"mu_s_sys_{k}": v for k, v in r.agent.systematics().items() if k != "statistical"})
    return out


def result_table(r: Rehearsal) -> Table:
    """Cycles, stop reason, quantities with std and 95 % intervals, beamtime vs conventional."""
    s = result_summary(r)
    t = Table(title=f"Magnetic Compton rehearsal: {s['sample_description']}", show_lines=False)
    t.add_column("quantity")
    t.add_column("mean", justify="right")
    t.add_column("std", justify="right")
    t.add_column("95 % interval", justify="right")
    for q in ("mu_s", *(f"a{o}" for o in r.agent.orbitals)):
        t.add_row(f"{q} (μB)", f"{s[f'{q}_mean']:.4f}", f"{s[f'{q}_std']:.4f}",
                  f"[{s[f'{q}_lo95']:.4f}, {s[f'{q}_hi95']:.4f}]")
    t.add_row("Γ resolution (a.u. FWHM)", f"{s['gamma_mean']:.3f}", f"{s['gamma_std']:.3f}", "")
    t.add_row("misfit τ (μB)", f"{s['misfit_mean']:.4f}", f"{s['misfit_std']:.4f}", "")
    for key, name in (("kappa", "κ calibration"), ("multiple_scattering", "multiple scattering"),
                      ("pz_calibration", "p_z calibration")):
        if f"mu_s_sys_{key}" in s:  # beside the statistical std, never in the stop
            t.add_row(f"μs systematic: {name} (μB)", "", f"{s[f'mu_s_sys_{key}']:.4f}", "")
    conventional = s["conventional_beamtime_s"]
    t.caption = (
        f"stopped after {s['cycles']} valid cycles ({s['discarded']} discarded): {s['stop_reason']}\n"
        f"beamtime {s['beamtime_s'] / 3600:.2f} h vs conventional {CONVENTIONAL_CYCLES} cycles "
        f"{conventional / 3600:.2f} h ({100 * s['beamtime_s'] / conventional:.0f} %); true μ_s of the simulation "
        f"{s['truth_mu_s']:.4f} μB" + (f"\nrun uid {s['uid']}" if s["uid"] else "")
    )
    return t


def repeats_summary(stats: RepeatStatistics) -> dict[str, Any]:
    """Planning figures (``RepeatStatistics.summary``) with the options, the seed used, the
    simulation's true μ_s (μB), the cycle time (s) and how many beamtimes each rule stopped."""
    o = stats.options
    return {"technique": "compton", "sample": o.sample, "seed": o.seed if o.seed is not None else 0,
            "options": o, **stats.summary(), "truth_mu_s": stats.truth, "cycle_time_s": stats.cycle_time_s,
            "stop_rules": dict(Counter(r.split(":")[0] for r in stats.reasons))}


def repeats_table(stats: RepeatStatistics) -> Table:
    """Cycles and hours (median, 10–90 %), target reached, coverage and bias of μ_s."""
    s = repeats_summary(stats)
    t = Table(title=f"Planning: {s['repeats']} simulated beamtimes to std({stats.options.quantity}) ≤ "
                    f"{stats.options.target_std} μB")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("cycles, median [10–90 %]", f"{s['steps_median']:.0f} [{s['steps_p10']:.0f}–{s['steps_p90']:.0f}]")
    t.add_row("hours, median [10–90 %]", f"{s['hours_median']:.2f} [{s['hours_p10']:.2f}–{s['hours_p90']:.2f}]")
    t.add_row(f"conventional {CONVENTIONAL_CYCLES} cycles (h)", f"{s['conventional_hours']:.2f}")
    t.add_row("runs that reached the target", f"{100 * s['reached_fraction']:.1f} %")
    n = s["repeats"]
    for level in (68, 95):
        cov = s[f"coverage_{level}"]
        se = np.sqrt(level / 100 * (1 - level / 100) / n)
        t.add_row(f"{level} % interval covers true μ_s", f"{100 * cov:.1f} % (nominal {level} ± {200 * se:.1f})")
    t.add_row("bias of stopped μ_s (μB; posterior stds)",
              f"{s['bias']:+.4f} ({s['bias_sigma']:+.2f} ± {s['bias_sigma_se']:.2f} σ)")
    t.add_row("beamtime at the target, interpolated (h, median)", f"{s['crossing_hours_median']:.2f}")
    t.add_row("systematic std of μ_s (μB; κ ⊕ multiple scattering)", f"{s['mu_s_sys_std_median']:.4f}")
    return t


def print_table(table: Table) -> None:
    Console().print(table)


def rehearsal_figure(r: Rehearsal, path: str | Path) -> Path:
    """The run's live figure (``bayesbeam.live.LiveCompton``: MCP with fit, 95 % band, components and
    residuals; σ of each quantity vs cycle with the target and a beamtime-hours axis; misfit size τ) with the
    rehearsal's own marks: the simulation's true μs and the conventional 136-cycle beamtime (PNG)."""
    view = r.live
    hours = r.conventional_beamtime_s / 3600
    view.ax_mcp.text(0.01, 0.97, f"true $\\mu_s$ of the simulation: {r.sample.spin_moment_mub:.4f} $\\mu_B$\n"
                     f"conventional {CONVENTIONAL_CYCLES} cycles: {hours:.1f} h; this run: "
                     f"{r.beamtime_s / 3600:.2f} h ({100 * r.beamtime_s / r.conventional_beamtime_s:.0f} %)",
                     transform=view.ax_mcp.transAxes, va="top", fontsize=8,
                     bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})
    return view.save(path, dpi=110)
