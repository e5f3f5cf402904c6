"""XAS on the quantity of interest: definitions, the design's first choice against brute force, the
interval's coverage, the run through the RunEngine into the catalog, and bad input before anything moves."""

import numpy as np
import pytest
from bluesky import RunEngine
from scipy import stats

from agent.core.stopping import Budget
from agent.xas import xas_agent
from agent.xas.design import XASPosterior
from agent.xas.prior import SpectraLibrary, default_grid, library_prior
from agent.xas.quantities import first_inflection, library_calibration_eV, make_quantity
from sim_devices.xas.samples import XASSample

LIB = SpectraLibrary.from_csv()
GRID = default_grid()


def test_the_foil_sets_the_axis_and_the_definitions_read_the_spectra():
    cal = library_calibration_eV(LIB)
    assert 2.0 < cal < 3.0  # the library's axis puts Fe foil's first inflection near 7109.5 eV
    foil = LIB.on(GRID)[:, LIB.index("Fe-foil")]
    assert first_inflection(GRID, foil, calibration_eV=cal)[0] == pytest.approx(7112.0, abs=0.01)
    edge = make_quantity("edge_position", GRID, LIB)
    e = {n: edge.evaluate(LIB.on(GRID)[:, LIB.index(n)])[0][0] for n in ("Fe-foil", "LiFePO4", "a-Fe2O3")}
    assert e["Fe-foil"] < e["LiFePO4"] < e["a-Fe2O3"]  # metal < Fe2+ < Fe3+: the chemical shift
    centroid = make_quantity("pre_edge_centroid", GRID, LIB)
    c = {n: centroid.evaluate(LIB.on(GRID)[:, LIB.index(n)])[0][0] for n in ("LiFePO4", "FePO4")}
    assert 7112.5 < c["LiFePO4"] < c["FePO4"] < 7115  # Fe2+ pre-edge below Fe3+'s (Wilke et al.)
    frac = make_quantity("fractions", GRID, LIB, "Fe-foil,a-Fe2O3")
    mix = 0.3 * LIB.on(GRID)[:, LIB.index("Fe-foil")] + 0.7 * LIB.on(GRID)[:, LIB.index("a-Fe2O3")]
    np.testing.assert_allclose(frac.evaluate(mix)[0], [0.3, 0.7], atol=1e-9)


@pytest.mark.parametrize("name", ["edge_position", "pre_edge_centroid", "pre_edge_area"])
def test_jacobians_match_finite_differences(name):
    q = make_quantity(name, GRID, LIB)
    mu = LIB.on(GRID)[:, LIB.index("Fe3O4")]
    value, jac = q.evaluate(mu)
    rng = np.random.default_rng(3)
    d = rng.normal(size=mu.size) * 1e-6
    assert (q.evaluate(mu + d)[0] - value)[0] == pytest.approx(jac[0] @ d, rel=1e-3)
    assert q.values(np.stack([mu, mu + d]))[:, 0] == pytest.approx([value[0], q.evaluate(mu + d)[0][0]], abs=1e-9)


def _posterior():
    p = XASPosterior(library_prior(LIB.without("Fe3O4"), GRID))
    mu = LIB.on(GRID)[:, LIB.index("Fe3O4")]
    for e in (7090.0, 7112.3, 7121.0, 7150.0):
        p.update(e, 1.75 * np.interp(e, GRID, mu) + 0.45, 1e-4)
    return p


@pytest.mark.parametrize("name,components", [("pre_edge_area", None), ("fractions", "Fe-foil,a-Fe2O3"),
                                             ("edge_position", None)])
def test_first_choice_is_the_brute_force_best_variance_reduction_per_second(name, components):
    agent = xas_agent(exclude="Fe3O4", quantity=name, components=components, stop_rule=Budget(points=100),
                      strategy="greedy", adapt=False, dwell_options=(1.0, 4.0))
    agent.post = _posterior()
    agent.at(7112.3)
    weights = agent.quantity_weights()
    (s,) = agent.suggest(1)
    p, y = agent.post, agent.post.y_pred()
    base = np.trace(p.functional_moments(weights)[1])
    best, arg = -np.inf, None
    for j in range(0, p.n, 1):
        for dwell in (1.0, 4.0):
            q = p.copy()
            q.fantasise(p.energy[j], float(agent.noise.var(y[j], dwell)))
            score = (base - np.trace(q.functional_moments(weights)[1])) / (dwell + agent.cost.time(7112.3, p.energy[j]))
            if score > best:
                best, arg = score, (p.energy[j], dwell)
    assert (s["energy"], s["dwell"]) == pytest.approx(arg)
    if name == "pre_edge_area":  # a quantity-blind design would choose elsewhere: the test can tell them apart
        blind = xas_agent(exclude="Fe3O4", stop_rule=Budget(points=100), strategy="greedy", adapt=False,
                          dwell_options=(1.0, 4.0))
        blind.post = _posterior()
        blind.at(7112.3)
        assert blind.suggest(1)[0]["energy"] != pytest.approx(arg[0])


def test_the_quantity_interval_covers_the_truth_at_its_rate():
    """12 simulated runs of one held-out standard to a target std of the pre-edge area (linear in μ: the
    Gaussian interval is exact if the model is): coverage within the binomial band of 95 % (at least 9 of 12),
    no bias beyond the runs' scatter. Coverage over every standard and quantity: bench_xas_quantity."""
    name, n = "FePO4", 12
    q = make_quantity("pre_edge_area", GRID, LIB)
    truth = q.evaluate(LIB.on(GRID)[:, LIB.index(name)])[0][0]
    covered, z = 0, []
    for seed in range(n):
        agent = xas_agent(exclude=name, quantity=q, target_std=0.01, stop_rule=Budget(points=400))
        sample = XASSample(name, seed=seed)
        while not agent.should_stop()[0]:
            (s,) = agent.suggest(1)
            agent.ingest([{**s, **dict(zip(("i0", "it"), sample.counts(s["energy"], s["dwell"]), strict=True))}])
        rep = agent.report()
        assert agent.should_stop()[1].startswith("target_std") and rep["pre_edge_area_std"] <= 0.01
        z.append((rep["pre_edge_area_mean"] - truth) / rep["pre_edge_area_std"])
        covered += rep["pre_edge_area_lower"] <= truth <= rep["pre_edge_area_upper"]
    assert covered >= stats.binom.ppf(0.005, n, 0.95), (covered, np.round(z, 2))
    assert abs(np.mean(z)) < 3 / np.sqrt(n) + 0.3  # unbiased to within its own scatter


def test_quantity_run_through_the_run_engine_is_stored(RE, catalog):
    from plans.xas.energy_points import adaptive_xas
    from sim_devices.core.clock import SimClock
    from sim_devices.xas import make_xas_endstation

    es = make_xas_endstation("LiFePO4", SimClock(1e7), seed=4)
    (uid,) = RE(adaptive_xas([es.i0, es.it], es.mono, quantity="edge_position", target_std=0.08, exclude="LiFePO4",
                             beamtime=None, ring=None))
    run = catalog[uid]
    post = run["posterior"].read()
    assert run.metadata["stop"]["reason"].startswith("target_std: std(edge_position)")
    assert float(post["edge_position_std"][-1]) <= 0.08 < float(post["edge_position_std"][-2])
    assert run.metadata["start"]["agent_config"]["quantity"]["name"] == "edge_position"
    assert np.all(np.asarray(post["edge_position_lower"]) <= np.asarray(post["edge_position_upper"]))


@pytest.mark.parametrize("kwargs,message", [
    ({"quantity": "valance", "target_std": 0.1}, "unknown quantity 'valance'"),
    ({"quantity": "fractions", "components": "Fe-foil,unobtainium", "target_std": 0.01}, "unknown standard"),
    ({"quantity": "fractions", "components": "Fe-foil", "target_std": 0.01}, "at least two"),
    ({"quantity": "fractions", "components": "Fe-foil,fe-FOIL", "target_std": 0.01}, "named twice"),
    ({"quantity": "edge_position", "components": "Fe-foil,a-Fe2O3", "target_std": 0.1}, "for the fractions"),
    ({"quantity": "edge_position", "target_std": -0.1}, "must be a positive"),
    ({"quantity": "valence", "target_std": 0.1}, "not above its floor"),
])
def test_bad_quantities_fail_in_one_line_before_anything_moves(kwargs, message):
    from plans.xas.energy_points import adaptive_xas
    from sim_devices.core.clock import SimClock
    from sim_devices.xas import make_xas_endstation

    es = make_xas_endstation("Fe3O4", SimClock(1e7), seed=1)
    start = es.mono.position
    with pytest.raises(ValueError, match=message) as err:
        RunEngine()(adaptive_xas([es.i0, es.it], es.mono, exclude="Fe3O4", beamtime=None, ring=None, **kwargs))
    assert "\n" not in str(err.value) and es.mono.position == start and es.mono.moves == 0


def test_the_reference_foil_calibrates_the_edge_position_against_an_imposed_monochromator_offset(RE, catalog):
    """Photons at readback + 0.7 eV: with the foil channel the stored run recovers the offset and the edge
    position covers the truth; the same run without the foil misses the truth by about the offset."""
    from plans.xas.energy_points import adaptive_xas
    from sim_devices.core.clock import SimClock
    from sim_devices.xas import make_xas_endstation

    got = {}
    for foil in (True, False):
        es = make_xas_endstation("Fe3O4", SimClock(1e7), seed=5, reference_foil=foil, calibration_offset_eV=0.7)
        agent = xas_agent(exclude="Fe3O4", quantity="edge_position", target_std=0.08)
        (uid,) = RE(adaptive_xas([es.i0, es.it] + ([es.iref] if foil else []), es.mono, agent, beamtime=None,
                                 ring=None))
        truth = agent.quantity.values(es.sample.mu(agent.post.energy)[None, :])[0, 0]
        got[foil] = (agent.report(), truth, catalog[uid])
    rep, truth, run = got[True]
    assert rep["mono_offset_mean"] == pytest.approx(0.7, abs=3 * rep["mono_offset_std"])
    assert rep["mono_offset_std"] < 0.1
    assert abs(rep["edge_position_mean"] - truth) <= 3 * rep["edge_position_std"] <= 0.25
    assert float(run["posterior"]["mono_offset_mean"].read()[-1]) == pytest.approx(rep["mono_offset_mean"])
    assert "iref_counts" in run["primary"].read()
    rep, truth, _ = got[False]
    assert truth - rep["edge_position_mean"] > 0.7 - 3 * rep["edge_position_std"] > 0.3  # blind to the offset


def test_a_quantity_agent_is_rebuilt_from_its_config_with_the_same_quantity_and_stop():
    from agent.xas.agent import XASAgent

    agent = xas_agent(exclude="Fe3O4", quantity="fractions", components=["fe-foil", "a-Fe2O3"], target_std=0.02)
    config = agent.config()
    assert config["quantity"] == {"name": "fractions", "components": ["Fe-foil", "a-Fe2O3"],
                                  "calibration_eV": pytest.approx(library_calibration_eV(LIB))}
    again = XASAgent.from_config(agent.stop_rule, config)
    np.testing.assert_allclose(again.quantity.evaluate(again.post.mean)[1], agent.quantity.evaluate(agent.post.mean)[1])
    assert again.quantities == ("rmse", "fractions") and again.quantity_target() == 0.02


def _harmonic_endstation(h, seed=0):
    """The realistic end station (no drift) with a third-harmonic fraction ``h`` of I0."""
    import dataclasses

    from sim_devices.core.clock import SimClock
    from sim_devices.xas import make_xas_endstation
    from sim_devices.xas.endstation import REALISTIC_BACKGROUND, REALISTIC_TRUTH

    truth = {**REALISTIC_TRUTH, "beam": dataclasses.replace(REALISTIC_TRUTH["beam"], harmonic_fraction=h),
             "calibration_drift_eV_h": 0.0}
    return make_xas_endstation(XASSample("Fe3O4", seed=seed, **REALISTIC_BACKGROUND), SimClock(1e9), **truth)


def test_the_foil_fit_measures_the_harmonic_that_would_bias_its_offset():
    """Noise-free counts behind a sample with a 0.5 % third harmonic (offset 0.4 eV): the foil fit without a
    harmonic term puts the offset ~0.4 eV off (the harmonic compresses the foil's edge); with it, the offset
    and the harmonic share hc/(1-h) come back."""
    from agent.xas.reference_foil import ReferenceFoil

    h = 0.005
    es = _harmonic_endstation(h)
    e = np.arange(7090.0, 7190.0, 0.5)
    i0, it, iref = ([c.expected_counts(x + 0.4, 1000.0) for x in e] for c in (es.i0, es.it, es.iref))
    fits = {}
    for sd in (0.0, 0.01):
        f = ReferenceFoil.from_library(LIB, harmonic_sd=sd)
        f.update(e, it, iref, i0=i0)
        fits[sd] = f
    assert fits[0.0].offset[0] - 0.4 > 0.25
    assert fits[0.01].offset[0] == pytest.approx(0.4, abs=0.01)
    share = h * np.exp(-es.i0.beam.harmonic_mut) / (1 - h)
    assert fits[0.01].mean[3] == pytest.approx(share, rel=0.05)
    with pytest.raises(ValueError, match="I0 counts"):
        fits[0.01].update(e[:3], it[:3], iref[:3])


def test_a_harmonic_measured_by_the_foil_keeps_the_edge_position_honest():
    """A 1 % third harmonic, monochromator 0.4 eV off, the foil alongside: with the harmonic term (its prior
    from the foil) the edge interval covers the truth; taking the harmonic rejection as complete (the
    default) leaves the edge several std off (the harmonic compresses ln(I0/It) where μt is high, which
    reshapes the edge and the foil's)."""
    from sim_devices.xas.endstation import realistic_practice

    z = {}
    for harmonic in (True, False):
        es = _harmonic_endstation(0.01, seed=3)
        practice = realistic_practice()
        if not harmonic:
            practice.pop("nuisance")
        agent = xas_agent(exclude="Fe3O4", quantity="edge_position", target_std=0.08,
                          stop_rule=Budget(beamtime_s=3600.0), **practice)
        rng = np.random.default_rng(3)
        while not agent.should_stop()[0]:
            (s,) = agent.suggest(1)
            es.mono.set(s["energy"]).wait(10)
            lam = [c.expected_counts(es.mono.photon_energy(), s["dwell"]) for c in (es.i0, es.it, es.iref)]
            agent.ingest([{**s, **dict(zip(("i0", "it", "iref"), rng.poisson(lam), strict=True))}])
        assert agent.should_stop()[1].startswith("target_std")
        rep = agent.report()
        truth = agent.quantity.values(es.sample.mu(agent.post.energy)[None, :])[0, 0]
        z[harmonic] = (rep["edge_position_mean"] - truth) / rep["edge_position_std"]
        assert ("harmonic_mean" in rep) == harmonic
        if harmonic:
            share = 0.01 * np.exp(-es.i0.beam.harmonic_mut) / 0.99  # hc/(1-h): the model's η
            assert rep["harmonic_mean"] == pytest.approx(share, abs=3 * rep["harmonic_std"])
            eta, sd = agent.post.harmonic_prior
            assert eta == pytest.approx(share, abs=3 * sd) and sd < 0.005
            arrays, meta = agent.state()
            again = xas_agent(exclude="Fe3O4", quantity="edge_position", target_std=0.08, **practice)
            again.load_state(arrays, meta)
            assert again.post.harmonic_prior == agent.post.harmonic_prior
            np.testing.assert_allclose(again.post.mean, agent.post.mean, atol=1e-9)
    assert abs(z[True]) < 3, z
    assert abs(z[False]) > 3, z
