"""What a rehearsal shows a scientist: a table of the result and a figure (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bayesbeam.rehearsal.compton.rehearse import Rehearsal, RepeatStatistics


def result_table(r: Rehearsal) -> Table:
    """Cycles, stop reason, quantities with std and 95 % intervals, beamtime vs conventional."""
    rep = r.agent.history[-1]
    t = Table(title=f"Magnetic Compton rehearsal: {r.sample.description}", show_lines=False)
    t.add_column("quantity")
    t.add_column("mean", justify="right")
    t.add_column("std", justify="right")
    t.add_column("95 % interval", justify="right")
    for q, unit in [("mu_s", "μB"), *((f"a{o}", "μB") for o in r.agent.orbitals)]:
        t.add_row(f"{q} ({unit})", f"{rep[f'{q}_mean']:.4f}", f"{rep[f'{q}_std']:.4f}",
                  f"[{rep[f'{q}_lo95']:.4f}, {rep[f'{q}_hi95']:.4f}]")
    t.add_row("Γ resolution (a.u. FWHM)", f"{rep['gamma_mean']:.3f}", f"{rep['gamma_std']:.3f}", "")
    t.add_row("noise scale", f"{rep['noise_scale_mean']:.3f}", f"{rep['noise_scale_std']:.3f}", "")
    t.caption = (
        f"stopped after {r.agent.cycles} valid cycles ({len(r.discarded)} discarded): {r.stop_reason}\n"
        f"beamtime {r.beamtime_s / 3600:.2f} h vs conventional 136 cycles {r.conventional_beamtime_s / 3600:.2f} h "
        f"({100 * r.beamtime_s / r.conventional_beamtime_s:.0f} %); true μ_s of the simulation "
        f"{r.sample.spin_moment_mub:.4f} μB" + (f"\nrun uid {r.uid}" if r.uid else "")
    )
    return t


def repeats_table(stats: RepeatStatistics, target_std: float) -> Table:
    s = stats.summary()
    t = Table(title=f"Planning: {s['repeats']} simulated beamtimes to std(μ_s) ≤ {target_std} μB")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("cycles, median [10–90 %]", f"{s['cycles_median']:.0f} [{s['cycles_p10']:.0f}–{s['cycles_p90']:.0f}]")
    t.add_row("hours, median [10–90 %]", f"{s['hours_median']:.2f} [{s['hours_p10']:.2f}–{s['hours_p90']:.2f}]")
    t.add_row("conventional 136 cycles (h)", f"{s['conventional_hours']:.2f}")
    t.add_row("runs that reached the target", f"{100 * s['reached_target']:.1f} %")
    n = s["repeats"]
    for level in (68, 95):
        cov = s[f"coverage{level}"]
        se = np.sqrt(level / 100 * (1 - level / 100) / n)
        t.add_row(f"{level} % interval covers true μ_s", f"{100 * cov:.1f} % (nominal {level} ± {200 * se:.1f})")
    return t


def print_table(table: Table) -> None:
    Console().print(table)


def rehearsal_figure(r: Rehearsal, path: str | Path, target_std: float, quantity: str) -> Path:
    """MCP with fitted components, and posterior std of each quantity vs cycle with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agent = r.agent
    y, var = agent.model.reduce(*agent.sums)
    comps, total = agent.fitted_profile()
    pz = agent.model.pz
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax1.errorbar(pz, y, yerr=np.sqrt(var), fmt=".", ms=2, lw=0.5, color="0.5", label="measured MCP")
    for name, c in zip(agent.orbitals, comps, strict=True):
        ax1.plot(pz, c, "--", label=f"{name} component")
    ax1.plot(pz, total, "k-", lw=1.2, label="fit (posterior mean)")
    ax1.axhline(0, color="0.8", lw=0.5)
    ax1.set_xlabel("p_z (a.u.)")
    ax1.set_ylabel("J_mag (μB / a.u.)")
    ax1.set_title(f"{r.sample.description}: {agent.cycles} cycles")
    ax1.legend(fontsize=8)
    hist = agent.history
    cycles = [h["cycles"] for h in hist]
    for q in ("mu_s", *(f"a{o}" for o in agent.orbitals)):
        ax2.plot(cycles, [h[f"{q}_std"] for h in hist], "o-", ms=3, label=f"std({q})")
    ax2.axhline(target_std, color="r", ls=":", label=f"target std({quantity}) = {target_std}")
    ax2.set_yscale("log")
    ax2.set_xlabel("valid cycles")
    ax2.set_ylabel("posterior std (μB)")
    ax2.set_title(r.stop_reason, fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
