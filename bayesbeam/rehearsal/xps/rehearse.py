"""3d XPS Hamiltonian-selection rehearsal: ``bayesbeam rehearse xps --truth ceo2|la2o3``.

One adaptive run (plans.xps.sweeps.adaptive_xps) through the RunEngine into the catalog on a simulated
electron analyser; the agent fits the 2- and 3-level cluster models after every sweep and stops
when one model's probability passes ``--p-model`` and the leading model's stds of Δ_f = Δ − U_fc
and V reach their targets (the quantities both models identify; the 2-level model fixes Δ and U_fc
only through their difference), or after ``--max-sweeps``. Prints a table and writes a figure: the spectrum with
the fit, the free-energy difference versus sweeps, and the parameter posteriors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from bayesbeam.catalog import default_catalog_location

if TYPE_CHECKING:  # the heavy imports (ophyd, numba) wait until a command runs
    from agent.xps.agent import XPSAgent
    from sim_devices.xps.samples import XPSSample


@dataclass
class XPSRehearsal:
    sample: XPSSample
    agent: XPSAgent
    stop_reason: str
    beamtime_s: float
    uid: str | None


def rehearse_xps_run(RE, truth: str = "ceo2", agent: XPSAgent | None = None, dwell_s: float = 0.1,
                     seed: int | None = None, time_scale: float = 1e4, md: dict | None = None) -> XPSRehearsal:
    """One adaptive XPS run of the simulated ``truth`` sample through ``RE``."""
    from plans.xps.sweeps import adaptive_xps
    from sim_devices.core.clock import BeamtimeSignal, SimClock
    from sim_devices.xps.electron_analyser import SimElectronAnalyser
    from sim_devices.xps.samples import sample

    s = sample(truth)
    from agent.xps import xps_agent

    agent = agent or xps_agent()
    clock = SimClock(time_scale=time_scale)
    det = SimElectronAnalyser(name="analyser", clock=clock, sample=s, seed=seed)
    det.dwell_time.put(float(dwell_s))
    beamtime = BeamtimeSignal(clock, name="beamtime")
    run_md = {"sample": s.name, "purpose": "rehearsal", "truth_model": s.model, "truth_params": dict(s.params),
              "seed": seed, **(md or {})}
    uids = RE(adaptive_xps([det], agent, beamtime=beamtime, md=run_md))
    _, reason = agent.should_stop()
    return XPSRehearsal(s, agent, reason or "", clock.now, uids[0] if uids else None)


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


def _table(r: XPSRehearsal):
    from rich.table import Table

    rep = r.agent.report()
    t = Table(title=f"3d XPS rehearsal: {r.sample.name}")
    t.add_column("quantity")
    t.add_column("value")
    t.add_row("sweeps", str(rep["sweeps"]))
    t.add_row("beamtime", f"{r.beamtime_s / 60:.1f} min")
    t.add_row("stop reason", r.stop_reason)
    t.add_row("leading model", f"{rep['model_best']} (P ≥ {rep['model_prob_max']:.4f})")
    t.add_row("F 2-level / 3-level", f"{rep['F_2level']:.2f} ± {rep['F_2level_err']:.2f} / "
                                     f"{rep['F_3level']:.2f} ± {rep['F_3level_err']:.2f} nats")
    truths = {**r.sample.params, "delta_f": r.sample.params["delta"] - r.sample.params["U_fc"]}
    for q in r.agent.quantities:
        truth = truths.get(q, float("nan"))
        if not np.isfinite(rep[q + "_mean"]):
            t.add_row(q, f"not in the {rep['model_best']} model (truth {truth})")
            continue
        t.add_row(q, f"{rep[q + '_mean']:.4g} ± {rep[q + '_std']:.2g} eV "
                     f"[{rep[q + '_lo95']:.4g}, {rep[q + '_hi95']:.4g}] (truth {truth:.4g})")
    return t


@click.command("xps")
@click.option("--truth", type=click.Choice(["ceo2", "la2o3"]), default="ceo2", help="Simulated sample.")
@click.option("--p-model", type=float, default=0.99, help="Stop when a model's posterior probability reaches this.")
@click.option("--target-delta-f", type=float, default=0.1, help="Target posterior std of Δ − U_fc (eV).")
@click.option("--target-v", type=float, default=0.01, help="Target posterior std of V (eV).")
@click.option("--max-sweeps", type=int, default=20, help="Budget: stop after this many sweeps.")
@click.option("--dwell", type=float, default=0.1, help="Dwell time per analyser channel (s).")
@click.option("--mc-sweeps", type=int, default=800, help="Exchange-MC sweeps per run and model after each sweep.")
@click.option("--seed", type=int, default=None, help="Random seed of the simulation (default: fresh).")
@click.option("--time-scale", type=float, default=1e4, help="Simulated seconds per wall-clock second.")
@click.option("--catalog", default=None, help="Catalog directory or tiled URI (default as for `rehearse compton`).")
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_xps.png", help="Figure (PNG).")
def rehearse_xps(truth, p_model, target_delta_f, target_v, max_sweeps, dwell, mc_sweeps, seed, time_scale,
                 catalog, figure):
    """Hamiltonian selection (2- vs 3-level cluster model) from repeated simulated 3d XPS sweeps."""
    from rich.console import Console

    from bayesbeam.catalog import open_catalog
    from bayesbeam.session import make_run_engine

    try:
        if not dwell > 0 or mc_sweeps < 50:
            raise ValueError("dwell must be > 0 s and mc-sweeps >= 50")
        from agent.xps import xps_agent

        agent = xps_agent(p_model, target_delta_f, target_v, max_sweeps, seed or 0,
                               n_sweeps=mc_sweeps, n_burn=max(mc_sweeps // 2, 50))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    location = catalog or default_catalog_location()
    RE = make_run_engine(open_catalog(location))
    result = rehearse_xps_run(RE, truth, agent, dwell, seed, time_scale)
    Console().print(_table(result))
    click.echo(f"figure: {xps_figure(result, figure)}\ncatalog: {location}")
