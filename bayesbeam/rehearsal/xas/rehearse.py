"""XAS rehearsal on the simulated beamline and the offline design, with their click commands.

``bayesbeam rehearse xas --sample Fe3O4 --target-rmse 0.008``: one adaptive run through a RunEngine
(stored in the catalog) of a held-out standard, with figures and the conventional-scan comparison.
``bayesbeam design xas --points N``: the offline (Ito-style greedy) point set for a fixed scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import click
import numpy as np

from agent.xas.agent import XASAgent, xas_agent
from agent.xas.design import CountingNoise, MoveCost, XASPosterior, greedy_batch, scan_time
from agent.xas.prior import SpectraLibrary, default_grid, library_prior, reference_prior, region_grid
from plans.xas.energy_points import adaptive_xas
from sim_devices.core.clock import BeamtimeSignal, SimClock
from sim_devices.xas.ion_chambers import SharedDwell, ion_chambers
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample

PRIORS = {"library": library_prior, "reference": reference_prior}
TARGET_LABEL = {"absorbance": "μt / edge step", "mu": "normalised μ"}



def make_xas_beamline(sample: str, time_scale: float = 1e4, seed: int | None = None, amplitude: float = 1.75,
                      offset: float = 0.45, shift_eV: float = 0.0, i0_rate: float = 23760.0,
                      cost: MoveCost | None = None) -> SimpleNamespace:
    """Clock, sample, monochromator (limits = the tabulated truth), ion chambers, shared dwell, beamtime."""
    cost = cost or MoveCost()
    clock = SimClock(time_scale)
    s = XASSample(sample, amplitude=amplitude, offset=offset, shift_eV=shift_eV, i0_rate=i0_rate, seed=seed)
    lo, hi = s.energy_range
    mono = SimMonochromator(name="mono", clock=clock, limits_eV=(lo, hi), start_eV=lo,
                            settle_time_s=cost.settle_s, speed_eV_s=cost.speed_eV_s, backlash_eV=cost.backlash_eV)
    i0, it = ion_chambers(clock, mono, s)
    return SimpleNamespace(clock=clock, sample=s, mono=mono, i0=i0, it=it,
                           dwell=SharedDwell([i0, it], name="dwell"), beamtime=BeamtimeSignal(clock, name="beamtime"))


def make_agent(sample: str, target_rmse: float, prior: str = "library", max_points: int = 2000,
               cost: MoveCost | None = None, **kwargs) -> XASAgent:
    """Agent whose prior excludes ``sample`` (leave-one-out); raises ValueError on bad input."""
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
    lib = SpectraLibrary.from_csv()
    if sample not in lib.names:
        raise ValueError(f"unknown sample {sample!r}; known standards: {', '.join(lib.names)}")
    return xas_agent(PRIORS[prior](lib.without(sample)), target_rmse=target_rmse, max_points=max_points,
                     cost=cost or MoveCost(), **kwargs)


@dataclass
class XASRehearsal:
    agent: XASAgent
    sample: XASSample
    stop_reason: str
    beamtime_s: float
    uid: str | None
    trajectory: np.ndarray  # (beamtime s, predicted RMSE, actual RMSE) after each point
    conventional: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (dwell s, beamtime s)


def conventional_time(agent: XASAgent, energies: np.ndarray, target_rmse: float) -> tuple[float, float]:
    """(dwell s, beamtime s) for a step scan over ``energies`` to reach ``target_rmse`` predicted by the
    agent's final model (its amplitude, shift, scale and noise), found by bisection on the dwell."""
    p, energies = agent.post, np.asarray(energies, float)
    y = np.interp(energies, p.energy, p.y_pred())

    def rmse(dwell):
        return p.design_rmse(energies, agent.noise.var(y, dwell))

    lo, hi = np.log(0.02), np.log(500.0)
    for _ in range(11):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rmse(np.exp(mid)) > target_rmse else (lo, mid)
    dwell = float(np.exp(hi))
    return dwell, scan_time(energies, dwell, agent.cost)


def rehearse_xas_run(RE, sample: str, target_rmse: float, prior: str = "library", seed: int | None = None,
                     time_scale: float = 1e4, max_points: int = 2000, md: dict | None = None,
                     target: str = "absorbance") -> XASRehearsal:
    """One adaptive run through ``RE``; returns the agent, trajectory and conventional comparison."""
    agent = make_agent(sample, target_rmse, prior, max_points, target=target)
    bl = make_xas_beamline(sample, time_scale=time_scale, seed=seed, cost=agent.cost)
    traj: list[tuple[float, float, float]] = []
    streams: dict[str, str] = {}

    def record(name, doc):
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event" and streams.get(doc["descriptor"]) == "posterior":
            traj.append((doc["data"]["beamtime_s"], doc["data"]["rmse_pred"], bl.sample.target_rmse(agent.post)))

    token = RE.subscribe(record)
    try:
        uids = RE(adaptive_xas([bl.i0, bl.it], bl.mono, agent, beamtime=bl.beamtime,
                               md={"sample": sample, "purpose": "rehearsal", "target_rmse": target_rmse,
                                   "target": target, "prior": prior, "seed": seed, **(md or {})}))
    finally:
        RE.unsubscribe(token)
    _, reason = agent.should_stop()
    final = agent.report()["rmse_pred"]
    conv = {"uniform 0.1 eV": conventional_time(agent, default_grid(), final),
            "region grid": conventional_time(agent, region_grid(), final)}
    return XASRehearsal(agent, bl.sample, reason or "", bl.clock.now, uids[0] if uids else None,
                        np.array(traj), conv)


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


@click.command("xas")
@click.option("--sample", default="Fe3O4",
              help="Fe K-edge standard to measure (its own spectrum is left out of the prior).")
@click.option("--target-rmse", type=float, default=0.008,
              help="Stop when the predicted RMSE of the target spectrum (edge-step units) reaches this.")
@click.option("--target", type=click.Choice(sorted(TARGET_LABEL)), default="absorbance",
              help="Spectrum the design and the stop judge: the measured μt / edge step, or normalised μ "
                   "(which keeps the ~0.5 % edge-step uncertainty of a 105 eV window).")
@click.option("--prior", type=click.Choice(sorted(PRIORS)), default="library", help="Prior construction.")
@click.option("--max-points", type=int, default=2000, help="Budget: stop after this many points.")
@click.option("--seed", type=int, default=None, help="Random seed of the simulation.")
@click.option("--time-scale", type=float, default=1e4, help="Simulated seconds per wall-clock second.")
@click.option("--catalog", default=None, help="Catalog directory or tiled URI (default: bayesbeam's default).")
@click.option("--figure", type=click.Path(dir_okay=False), default="rehearsal_xas.png", help="Figure (PNG).")
def rehearse_xas(sample, target_rmse, target, prior, max_points, seed, time_scale, catalog, figure):
    """Adaptive XAS (Bayesian choice of each energy) on the simulated beamline."""
    try:
        make_agent(sample, target_rmse, prior, max_points, target=target)
    except (ValueError, KeyError) as exc:
        raise click.BadParameter(str(exc)) from None
    from bayesbeam.catalog import default_catalog_location, open_catalog
    from bayesbeam.session import make_run_engine

    location = catalog or default_catalog_location()
    RE = make_run_engine(open_catalog(location))
    r = rehearse_xas_run(RE, sample, target_rmse, prior, seed, time_scale, max_points, target=target)
    rep = r.agent.report()
    post = r.agent.posterior()
    truth = r.sample.mu(post["energy"])
    actual = r.sample.target_rmse(r.agent.post)
    cover = float(np.mean(np.abs(post["mean"] - truth) <= post["upper"] - post["mean"]))
    click.echo(f"stop: {r.stop_reason}\npoints: {rep['points']}, beamtime {rep['beamtime_s']:.0f} s "
               f"(dwell {sum(r.agent.dwells):.0f} s + moves {rep['beamtime_s'] - sum(r.agent.dwells):.0f} s)")
    click.echo(f"RMSE of {TARGET_LABEL[post['target']]}: predicted {rep['rmse_pred']:.4f}, actual {actual:.4f}; "
               f"normalised μ: actual {np.sqrt(np.mean((post['mean'] - truth) ** 2)):.4f}, its 95 % band covers "
               f"{100 * cover:.0f} % of the grid; amplitude {rep['amplitude_mean']:.3f} ± {rep['amplitude_std']:.3f}, "
               f"edge shift {rep['shift_mean']:+.2f} ± {rep['shift_std']:.2f} eV")
    for name, (dwell, bt) in r.conventional.items():
        click.echo(f"conventional {name}: {bt:.0f} s ({dwell:.2f} s per point) for the same predicted RMSE "
                   f"-> adaptive needs {100 * rep['beamtime_s'] / bt:.0f} %")
    click.echo("energies in the order chosen (eV): " + " ".join(f"{e:.1f}" for e in r.agent.post.data_e))
    click.echo(f"figure: {rehearsal_figure(r, figure)}\ncatalog: {location} (run {r.uid})")


def design_points(points: int, dwell_s: float = 1.0, prior: str = "library", exclude: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Offline greedy design: (energies in selection order, predicted RMSE after each, scan time s)."""
    lib = SpectraLibrary.from_csv()
    p = PRIORS[prior](lib.without(exclude) if exclude else lib)
    energies, rmse = greedy_batch(XASPosterior(p), CountingNoise(), points, dwell_s)
    return energies, rmse, scan_time(np.sort(energies), dwell_s, MoveCost())


@click.command("xas")
@click.option("--points", type=int, required=True, help="Number of energy points.")
@click.option("--dwell", type=float, default=1.0, help="Dwell per point (s).")
@click.option("--prior", type=click.Choice(sorted(PRIORS)), default="library", help="Prior construction.")
@click.option("--exclude", default=None, help="Leave this standard out of the prior library.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the sorted scan (CSV).")
def design_xas(points, dwell, prior, exclude, output):
    """Offline optimal energy-point set (greedy A-optimal, Ito-style) for a fixed scan."""
    if points < 1 or not dwell > 0:
        raise click.BadParameter("points must be >= 1 and dwell > 0 s")
    energies, rmse, t = design_points(points, dwell, prior, exclude)
    click.echo(f"{points} points, predicted RMSE of μt / edge step {rmse[-1]:.4f}, scan time {t:.0f} s (sorted scan)")
    click.echo("order chosen: " + " ".join(f"{e:.1f}" for e in energies))
    click.echo("scan (sorted): " + " ".join(f"{e:.1f}" for e in np.sort(energies)))
    if output:
        np.savetxt(output, np.sort(energies), fmt="%.2f", header="energy_eV", comments="")
        click.echo(f"written: {output}")
