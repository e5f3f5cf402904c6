"""Fluorescence-mode XAS of a dilute Fe sample: the agent's response against the simulator's physics, the
dead-time correction and its noise, the linearised posterior against importance sampling of the exact model,
the intervals' coverage (a dilute and a concentrated sample, with and without the self-absorption correction),
a run through the RunEngine into the catalog and back, and bad input before any motion."""

import dataclasses

import numpy as np
import pytest
from bluesky import RunEngine
from scipy import stats

from agent.core.stopping import Budget
from agent.xas import xas_agent
from agent.xas.design import Nuisance, XASPosterior, draw_states
from agent.xas.fluorescence import FluorescenceNoise, FluorescenceSample, dead_time_corrected
from agent.xas.prior import E_REF_EV, SpectraLibrary, default_grid, library_prior
from agent.xas.quantities import make_quantity
from plans.xas.energy_points import adaptive_xas
from sim_devices.core.clock import SimClock
from sim_devices.xas import FluorescenceModel, make_xas_endstation
from sim_devices.xas.endstation import DILUTE_SAMPLE
from sim_devices.xas.samples import XASSample

LIB = SpectraLibrary.from_csv()
GRID = default_grid(7096.0, 7142.0, 0.25)  # covers the edge and pre-edge windows (calibrated axis) and their support
SCAN = np.linspace(7097.0, 7141.0, 80)  # a fixed 80-point scan of 8 s per point
QUANTITIES = [make_quantity(name, GRID, LIB) for name in ("edge_position", "pre_edge_centroid")]
TAU = 1e-6
DILUTE_STANDARDS = ("FePO4", "LiFePO4", "a-Fe2O3", "Fe3O4", "FeSO4")


def _counts(model, sample, rng, energies=SCAN, dwell=8.0):
    """Simulated outcomes (I0 ~ Poisson(23 760/s), If ~ Poisson(the simulator's mean, dead time included))."""
    return [{"_id": k, "energy": float(e), "dwell": dwell, "i0": float(rng.poisson(sample.i0_rate * dwell)),
             "if": float(rng.poisson(model.expected(e, sample.mu(e), dwell)))} for k, e in enumerate(energies)]


def _analysed(prior, points, fe_fraction):
    """The agent (fluorescence mode, told ``fe_fraction``) after the points and a final refit."""
    agent = xas_agent(prior, mode="fluorescence", composition={"fe_fraction": fe_fraction}, dead_time_s=TAU,
                      stop_rule=Budget(points=10**6), adapt=False)
    agent.ingest(points)
    agent.refit()
    return agent


def _z(agent, truth_mu):
    """(value − truth) / std of each quantity (delta method on the agent's posterior)."""
    out = []
    for q in QUANTITIES:
        value, std = q.moments(agent.post.mean, lambda jac: agent.post.functional_moments(jac)[1])
        out.append((value[0] - q.evaluate(truth_mu)[0][0]) / std[0])
    return np.array(out)


def test_the_response_is_the_simulators_physics_with_self_absorption_and_its_dilute_limit():
    mu = np.array([0.02, 0.5, 1.0, 1.45])
    e = np.array([7100.0, 7115.0, E_REF_EV, 7130.0])
    for fe in (0.01, 0.1):  # a stated thickness: the simulator's formula exactly, in units of its value at μ = 1, E_ref
        sim = FluorescenceModel(fe_fraction=fe, dead_time_s=0.0, background_rate=0.0)  # 0.5 mm, 1 g/cm³
        row = FluorescenceSample(fe, thickness_cm=sim.thickness_cm, density_g_cm3=sim.density_g_cm3).on(e)
        ratio = sim.expected(e, mu, 1.0) / sim.expected(E_REF_EV, 1.0, 1.0)
        np.testing.assert_allclose(row(mu)[0], ratio, rtol=1e-9)
        np.testing.assert_allclose(row(mu)[1], (row(mu + 1e-6)[0] - row(mu - 1e-6)[0]) / 2e-6, rtol=1e-6)
    # the end station's 3 mm pellet is in the thick-sample limit the agent assumes by default
    thick = FluorescenceSample(DILUTE_SAMPLE.fe_fraction).on(e)(mu)[0]
    sim = dataclasses.replace(DILUTE_SAMPLE, dead_time_s=0.0, background_rate=0.0)
    np.testing.assert_allclose(thick, sim.expected(e, mu, 1.0) / sim.expected(E_REF_EV, 1.0, 1.0), rtol=1e-4)
    # self-absorption flattens the white line: k ≈ 0.13 at 1 wt% in cellulose, ≈ 1 at 10 wt%; k → 0 is linear in μ
    assert 0.1 < FluorescenceSample(0.01).self_absorption < 0.16 and 0.8 < FluorescenceSample(0.1).self_absorption < 1.2
    f = FluorescenceSample(0.1).on(np.full(2, 7130.0))(np.array([1.0, 1.45]))[0]
    assert 1.1 < f[1] / f[0] < 0.85 * 1.45
    f = FluorescenceSample(1e-7).on(e)(mu)[0]
    ref = FluorescenceSample(1e-7).on(e)(np.ones(4))[0]
    np.testing.assert_allclose(f / ref, mu, rtol=1e-5)


def test_dead_time_correction_and_the_predicted_noise_match_simulated_counts():
    rate, dwell = 2.5e5, 2.0  # 22 % of the counts lost to a paralysable 1 µs
    recorded = rate * np.exp(-rate * TAU) * dwell
    n, slope = dead_time_corrected(recorded, dwell, TAU)
    assert n == pytest.approx(rate * dwell, rel=1e-9) and slope == pytest.approx(np.exp(0.25) / 0.75, rel=1e-9)
    with pytest.raises(ValueError, match="saturate"):
        dead_time_corrected(0.4 / TAU * dwell, dwell, TAU)
    rng = np.random.default_rng(0)
    noise = FluorescenceNoise(dead_time_s=TAU, unit=3.0)
    i0 = rng.poisson(noise.i0_rate * dwell, 20000).astype(float)
    counts = rng.poisson(recorded, 20000).astype(float)
    y, var = np.array([noise.from_counts(a, b, dwell) for a, b in zip(i0, counts, strict=True)]).T
    truth = rate / noise.i0_rate / noise.unit
    predicted = float(noise.var(truth, dwell))
    assert abs(y.mean() - truth) < 0.05 * np.sqrt(predicted)  # the correction removes the 22 % loss
    assert y.var() == pytest.approx(predicted, rel=0.05) and var.mean() == pytest.approx(predicted, rel=0.02)
    uncorrected = counts / i0 / noise.unit
    assert uncorrected.var() < 0.8 * predicted  # the dead time's inflation of the variance is real


@pytest.mark.parametrize("fe,mean_tol,sd_tol", [(0.01, 0.15, 0.05), (0.1, 0.6, 0.1)])
def test_the_linearised_posterior_matches_importance_sampling_of_the_exact_model(fe, mean_tol, sd_tol):
    """A tiny problem (a 1 eV grid, 36 points of noise 0.005, the amplitude known): draws from the linearised
    posterior re-weighted by the exact/linearised likelihood ratio (the prior is common) give its means and stds
    of μ at three energies, to ``mean_tol`` std and ``sd_tol`` (relative): the Gauss-Newton posterior at 1 wt% Fe,
    and at 10 wt% (k ≈ 1, where the exact posterior is skewed along the background's long directions); the
    linear model at the posterior mean is the exact one. Linearised about the prior mean instead (no refit),
    it is off by more than a std, so the comparison can tell."""
    grid = default_grid(7100.0, 7135.0, 1.0)
    name, sigma = "LiFePO4", 0.005
    composition = FluorescenceSample(fe)
    truth = LIB.on(grid)[:, LIB.index(name)]
    y = composition.on(grid)(truth)[0] + 0.03 + np.random.default_rng(5).normal(0, sigma, grid.size)
    p = XASPosterior(library_prior(LIB.without(name), grid), Nuisance(amp_mean=1.0, amp_sd=1e-4),
                     measurement=composition)
    for e, value in zip(grid, y, strict=True):
        p.update(e, value, sigma**2)
    naive = p.copy()
    for _ in range(10):
        p.set_linearisation(p.shift[0], p.amplitude[0], 1.0, mu_lin=p.mean)
    w = np.zeros((3, p.x.size))  # μ at the white line, at 7120 eV and at 7113 eV as functionals of the state
    for k, j in enumerate((int(np.argmax(p.mean)), *np.searchsorted(grid, [7120.0, 7113.0]))):
        w[k, j], w[k, p.n] = 1.0, -p.dm[j]

    def exact(post, x):  # y of states x (p, k): A F(μ) + B + c3 u³ + c4 u⁴, μ = m + r − m' δ
        mu = post.m[:, None] + x[: post.n] - post.dm[:, None] * x[post.n]
        t = x[post.n + 1:]
        return t[0] * post.response(mu.T)[0].T + t[1] + t[2] * post.u[:, None] ** 3 + t[3] * post.u[:, None] ** 4

    def importance(post, k=4000):
        x = draw_states(post.x, post.S, k, np.random.default_rng(1))
        lin = post.rows(grid) @ x + post.offset[:, None]
        logw = -0.5 * (((y[:, None] - exact(post, x)) ** 2 - (y[:, None] - lin) ** 2) / sigma**2).sum(0)
        wt = np.exp(logw - logw.max())
        wt /= wt.sum()
        mean = (w @ x) @ wt
        return mean, np.sqrt(((w @ x - mean[:, None]) ** 2) @ wt), 1 / np.sum(wt**2) / k

    mean, sd = w @ p.x, np.sqrt(np.diag(w @ p.S @ w.T))
    mean_is, sd_is, ess = importance(p)
    assert ess > 0.5, ess
    np.testing.assert_array_less(np.abs(mean_is - mean), mean_tol * sd)
    np.testing.assert_allclose(sd_is, sd, rtol=sd_tol)
    assert np.max(np.abs(exact(p, p.x[:, None])[:, 0] - (p.rows(grid) @ p.x + p.offset))) < 1e-6 * sigma
    naive_is, _, naive_ess = importance(naive)
    assert naive_ess < 0.1 and np.max(np.abs(naive_is - w @ naive.x) / sd) > 1.0


def test_dilute_sample_intervals_cover_the_truth_at_their_rate():
    """1 wt% Fe in cellulose, five held-out standards, six runs each: the 95 % intervals of the edge position
    and the pre-edge centroid cover the truth at a rate within the binomial band; unbiased within their scatter."""
    z = []
    for name in DILUTE_STANDARDS:
        prior, sample = library_prior(LIB.without(name), GRID), XASSample(name)
        truth = LIB.on(GRID)[:, LIB.index(name)]
        for seed in range(6):
            z.append(_z(_analysed(prior, _counts(DILUTE_SAMPLE, sample, np.random.default_rng(seed)), 0.01), truth))
    z = np.array(z)
    covered = (np.abs(z) <= 1.959964).sum(0)
    assert np.all(covered >= stats.binom.ppf(0.005, len(z), 0.95)), (covered, np.round(z, 2))
    assert np.all(np.abs(z.mean(0)) < 3 / np.sqrt(len(z)) + 0.3), np.round(z, 2)


def test_self_absorption_of_a_concentrated_sample_is_corrected_and_the_dilute_limit_is_biased():
    """10 wt% Fe (k ≈ 1), three standards, five runs each: analysed with its composition the intervals cover;
    analysed in the dilute limit (the same data) the edge position is off by many stds, and the correction moves
    every edge estimate toward the truth."""
    model = FluorescenceModel(fe_fraction=0.1, thickness_cm=0.3)
    z_sa, z_dilute = [], []
    for name in ("FePO4", "LiFePO4", "Fe3O4"):
        prior, sample = library_prior(LIB.without(name), GRID), XASSample(name)
        truth = LIB.on(GRID)[:, LIB.index(name)]
        for seed in range(5):
            points = _counts(model, sample, np.random.default_rng(10 + seed))
            z_sa.append(_z(_analysed(prior, points, 0.1), truth))
            z_dilute.append(_z(_analysed(prior, points, 1e-6), truth))
    z_sa, z_dilute = np.array(z_sa), np.array(z_dilute)
    covered = int((np.abs(z_sa) <= 1.959964).sum())
    assert covered >= stats.binom.ppf(0.005, z_sa.size, 0.95), np.round(z_sa, 2)
    assert np.all(np.abs(z_dilute[:, 0]) > 5), np.round(z_dilute, 1)
    assert (np.abs(z_dilute) <= 1.959964).sum() <= z_dilute.size // 4, np.round(z_dilute, 1)
    assert np.all(np.abs(z_sa[:, 0]) < np.abs(z_dilute[:, 0])), (np.round(z_sa, 2), np.round(z_dilute, 1))


def test_a_fluorescence_run_through_the_run_engine_is_stored_and_rebuilt(RE, catalog):
    from bayesbeam.resume import rebuild_agent

    es = make_xas_endstation("FePO4", SimClock(1e7), seed=4, fluorescence=True)
    es.ifl.fail_next("nan", after=4)  # the validity rule applies to the fluorescence counts
    (uid,) = RE(adaptive_xas([es.i0, es.ifl], es.mono, mode="fluorescence", max_points=24, exclude="FePO4",
                             beamtime=None, ring=None))
    run = catalog[uid]
    start, post = run.metadata["start"], run["posterior"].read()
    assert run.metadata["stop"]["reason"].startswith("budget")
    config = start["agent_config"]
    assert config["mode"] == "fluorescence" and config["composition"]["fe_fraction"] == 0.01
    assert config["noise"]["dead_time_s"] == es.ifl.dead_time_s.get() == DILUTE_SAMPLE.dead_time_s
    assert start["validity"]["fluorescence"] == "ifl_counts" and "ifl_counts" in start["validity"]["counts"]
    primary = run["primary"].read()
    assert len(primary["ifl_counts"]) == 25 and np.isnan(primary["ifl_counts"][4])
    problems = [str(p) for p in np.asarray(post["point_problem"])]
    assert "not finite positive" in problems[4] and sum(bool(p) for p in problems) == 1
    assert int(post["points"][-1]) == 24 and np.all(np.isfinite(post["fluorescence_unit"]))
    # rebuilt from the catalog alone (its config and the stored points through the feeder): the same posterior
    rebuilt = rebuild_agent(catalog, uid).agent
    assert rebuilt.mode == "fluorescence" and rebuilt.report()["points"] == 24
    for key in ("rmse_pred", "amplitude_mean", "fluorescence_unit"):
        assert rebuilt.report()[key] == pytest.approx(float(post[key][-1]), rel=1e-9), key


def test_rehearse_xas_in_fluorescence_mode(tmp_path, catalog, catalog_dir):
    from cli_output import read_json
    from click.testing import CliRunner

    from bayesbeam.cli import main

    path = tmp_path / "xas.json"
    result = CliRunner().invoke(main, [
        "rehearse", "xas", "--sample", "FePO4", "--mode", "fluorescence", "--max-points", "14", "--seed", "3",
        "--time-scale", "1e7", "--catalog", str(catalog_dir), "--json", str(path), "--figure", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    s = read_json(path)
    assert s["mode"] == s["options"]["mode"] == "fluorescence" and s["points"] == 14
    assert "RMSE of If/I0 corrected for self-absorption / edge step: predicted" in result.stdout
    assert np.isfinite(s["rmse_actual"]) and s["rmse_actual"] < 0.2  # against the true edge step and background
    start = catalog[s["uid"]].metadata["start"]
    assert start["detectors"][-1] == "ifl" and start["agent_config"]["mode"] == "fluorescence"
    assert (tmp_path / "f.png").stat().st_size > 10_000


@pytest.mark.parametrize("kwargs,chambers,message", [
    ({"mode": "fluoresence"}, ("i0", "ifl"), "unknown mode 'fluoresence'"),
    ({"mode": "fluorescence"}, ("i0", "it"), "fluorescence mode needs a fluorescence detector"),
    ({"mode": "fluorescence", "composition": {"fe_fraction": 2.0}}, ("i0", "ifl"), "invalid fluorescence sample"),
    ({"mode": "fluorescence", "composition": {"matrix": "Qq7"}}, ("i0", "ifl"), "not a chemical formula"),
    ({"composition": {"fe_fraction": 0.02}}, ("i0", "it"), "composition is for mode='fluorescence'"),
    ({"agent": {"mode": "fluorescence", "dead_time_s": 2e-6}}, ("i0", "ifl"), "not the fluorescence detector's"),
])
def test_bad_fluorescence_input_fails_in_one_line_before_anything_moves(kwargs, chambers, message):
    es = make_xas_endstation("Fe3O4", SimClock(1e7), seed=1, fluorescence=True)
    if "agent" in kwargs:
        kwargs = {"agent": xas_agent(exclude="Fe3O4", **kwargs["agent"])}
    else:
        kwargs = {**kwargs, "exclude": "Fe3O4"}
    start = es.mono.position
    with pytest.raises(ValueError, match=message) as err:
        RunEngine()(adaptive_xas([getattr(es, c) for c in chambers], es.mono, beamtime=None, ring=None, **kwargs))
    assert "\n" not in str(err.value) and es.mono.position == start and es.mono.moves == 0
