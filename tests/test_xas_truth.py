"""The simulated XAS truth (flux spectrum, glitches, harmonics, μt background, backlash lag, calibration
offset, fluorescence) against formulas computed here, and the reference-foil channel: its chamber in the
plans, the feeder, and the posterior of the monochromator offset."""

import numpy as np
import pytest
import xraylib
from bluesky import RunEngine
from scipy.special import erf

from agent.core.stopping import Budget
from agent.xas.agent import XASAgent
from agent.xas.prior import library_prior
from agent.xas.quantities import first_inflection
from agent.xas.reference_foil import ReferenceFoil, noise_correlation
from plans.xas.energy_points import adaptive_xas, grid_xas
from sim_devices.core.clock import SimClock
from sim_devices.xas import BeamModel, FluorescenceModel, Glitch, SimFluorescenceDetector, make_xas_endstation
from sim_devices.xas.ion_chambers import ScalerGate
from sim_devices.xas.monochromator import SimMonochromator

E_REF = 7110.8


def table_mu(lib, name, energy):
    return np.interp(energy, lib.energy, lib.spectra[:, lib.index(name)])


def count_all(detectors):
    for st in [d.trigger() for d in detectors]:
        st.wait(1)
    return [d.counts.get() for d in detectors]


def test_defaults_are_the_original_truth():
    x = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=0)
    x.mono.set(7120.0).wait(1)
    assert x.iref is None and x.detectors == [x.i0, x.it]
    assert x.mono.photon_energy() == x.mono.position == 7120.0
    lam = x.sample.i0_rate * 2.0 * 80.0 / 100.0
    assert x.i0.expected_counts(7120.0, 2.0, 80.0) == lam
    assert x.it.expected_counts(7120.0, 2.0, 80.0) == lam * np.exp(-x.sample.mut(7120.0))


def test_beam_options_change_the_counts_as_their_formula_says(lib):
    glitch = Glitch(7120.0, width_eV=0.4, depth=0.3, mut=0.03)
    beam = BeamModel(slope=0.04, curvature=0.01, glitches=(glitch,), harmonic_fraction=0.02, harmonic_mut=0.05)
    x = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=1, beam=beam, reference_foil=True)
    x.sample.c3, x.sample.c4 = 0.3, -0.1
    dwell, sd = 2.0, 0.4 / (2 * np.sqrt(2 * np.log(2)))
    for e in (7100.0, 7119.9, 7120.0, 7150.0):
        u = (e - E_REF) / 100
        g = np.exp(-0.5 * ((e - 7120.0) / sd) ** 2)
        n0 = x.sample.i0_rate * dwell * (1 + 0.04 * u + 0.01 * u * u) * (1 - 0.3 * g)
        mut = 1.75 * table_mu(lib, "Fe3O4", e) + 0.45 + 0.3 * (E_REF / e) ** 3 - 0.1 * (E_REF / e) ** 4
        mu_f = 1.0 * table_mu(lib, "Fe-foil", e) + 0.2
        it = n0 * (0.98 * np.exp(-mut - 0.03 * g) + 0.02 * np.exp(-0.05))
        iref = n0 * (0.98 * np.exp(-mut - 0.03 * g - mu_f) + 0.02 * np.exp(-0.05))
        assert x.i0.expected_counts(e, dwell) == pytest.approx(n0, rel=1e-12)
        assert x.it.expected_counts(e, dwell) == pytest.approx(it, rel=1e-12)
        assert x.iref.expected_counts(e, dwell) == pytest.approx(iref, rel=1e-12)
    # alone, the glitch's dip cancels in ln(I0/It) except for its μt; alone, a harmonic compresses ln(I0/It)
    plain = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=1)
    glitchy = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=1, beam=BeamModel(glitches=(glitch,)))
    harm = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=1, beam=BeamModel(harmonic_fraction=0.02))

    def ratio(st, e):
        return np.log(st.i0.expected_counts(e, 1) / st.it.expected_counts(e, 1))

    assert glitchy.i0.expected_counts(7120.0, 1) == pytest.approx(0.7 * plain.i0.expected_counts(7120.0, 1))
    assert ratio(glitchy, 7120.0) - ratio(plain, 7120.0) == pytest.approx(0.03, rel=1e-9)
    assert ratio(glitchy, 7121.0) - ratio(plain, 7121.0) < 1e-6
    mut = plain.sample.mut(7150.0)
    assert ratio(harm, 7150.0) == pytest.approx(-np.log(0.98 * np.exp(-mut) + 0.02 * np.exp(-0.05)), rel=1e-12)
    assert ratio(harm, 7150.0) < mut - 0.1
    # the counted (Poisson) values follow the expected ones at the photons' energy, all in one gate
    x.mono.set(7120.0).wait(1)
    x.dwell.put(dwell)
    t0 = x.mono.clock.now
    n = np.array([count_all(x.detectors) for _ in range(300)])
    assert x.mono.clock.now - t0 == pytest.approx(300 * dwell)
    for k, d in enumerate(x.detectors):
        lam = d.expected_counts(7120.0, dwell)
        assert abs(n[:, k].mean() - lam) < 4 * np.sqrt(lam / 300), d.name


def test_calibration_offset_and_drift_move_the_photons_not_the_readback(lib):
    clock = SimClock(float("inf"))
    x = make_xas_endstation("Fe-foil", clock, seed=2, calibration_offset_eV=0.7, calibration_drift_eV_h=0.36)
    x.mono.set(7109.0).wait(1)
    assert x.mono.read()["mono_energy"]["value"] == 7109.0
    assert x.mono.photon_energy(1800.0) == pytest.approx(7109.0 + 0.7 + 0.18)
    # one hour-long count: ln(I0/It) is μt at the photons' energy in the middle of the count
    x.dwell.put(3600.0)
    t_mid = clock.now + 1800.0
    i0, it = count_all([x.i0, x.it])
    photon = 7109.0 + 0.7 + 0.36 * t_mid / 3600

    def mut(e):
        return 1.75 * table_mu(lib, "Fe-foil", e) + 0.45

    assert np.log(i0 / it) == pytest.approx(mut(photon), abs=0.003)
    assert abs(mut(photon) - mut(7109.0)) > 0.1 and abs(mut(photon) - mut(photon + 0.1)) > 0.01


def test_backlash_lag_only_after_a_reversal():
    clock = SimClock(float("inf"))
    mono = SimMonochromator(name="mono", clock=clock, limits_eV=(7071.0, 7195.0), start_eV=7100.0, lash_eV=0.15)
    lags = []
    for target in (7105.0, 7110.0, 7108.0, 7107.0, 7107.05, 7107.2, 7107.1):
        mono.set(target).wait(1)
        assert mono.position == target == mono.read()["mono_energy"]["value"]  # the encoder: the commanded value
        lags.append(mono.photon_energy() - target)
    assert lags == pytest.approx([0.0, 0.0, 0.15, 0.15, 0.10, 0.0, 0.1], abs=1e-9)
    # an anti-backlash approach from below at least as long as the play removes the lag
    anti = SimMonochromator(name="m2", clock=clock, limits_eV=(7071.0, 7195.0), start_eV=7110.0, lash_eV=0.15,
                            backlash_eV=0.2)
    anti.set(7100.0).wait(1)
    assert anti.photon_energy() == 7100.0


def test_fluorescence_counts_follow_self_absorption_and_dead_time(lib):
    model = FluorescenceModel(fe_fraction=0.02, photon_rate=3e7, efficiency=0.01, dead_time_s=1e-6)
    clock = SimClock(float("inf"))
    x = make_xas_endstation("Fe3O4", clock, seed=3)
    det = SimFluorescenceDetector(name="ifl", clock=clock, mono=x.mono, sample=x.sample, model=model,
                                  gate=x.i0.gate)
    det.dwell_s.put(1.0)

    def formula(e):  # the module docstring's formula, from xraylib here
        w, rho, d, s = 0.02, 1.0, 0.05, np.sin(np.radians(45.0))
        edge = xraylib.EdgeEnergy(26, xraylib.K_SHELL)
        jump = xraylib.CS_Total(26, edge + 1e-4) - xraylib.CS_Total(26, edge - 1e-4)
        ef = xraylib.LineEnergy(26, xraylib.KL3_LINE)
        mu_k = jump * table_mu(lib, "Fe3O4", e)
        mu = rho * ((1 - w) * xraylib.CS_Total_CP("C6H10O5", e / 1e3)
                    + w * (xraylib.CS_Total(26, 7.10) * (7100 / e) ** 3 + mu_k))
        mu_f = rho * ((1 - w) * xraylib.CS_Total_CP("C6H10O5", ef) + w * xraylib.CS_Total(26, ef))
        f = 3e7 * 0.01 * rho * w * mu_k / (mu + mu_f) * (1 - np.exp(-(mu / s + mu_f / s) * d))
        n = f + 2000.0
        return n * np.exp(-n * 1e-6), n

    low, high = formula(7100.0), formula(7135.0)
    assert det.expected_counts(7135.0, 1.0) == pytest.approx(high[0], rel=1e-9)
    assert det.expected_counts(7100.0, 1.0) == pytest.approx(low[0], rel=1e-9)
    assert 0.02 < 1 - high[0] / high[1] < 0.3  # dead time matters at this rate
    assert low[0] < 0.2 * high[0]  # the edge
    x.mono.set(7135.0).wait(1)
    n = [count_all([x.i0, det])[1] for _ in range(100)]
    assert abs(np.mean(n) - high[0]) < 4 * np.sqrt(high[0] / 100)
    # self-absorption: a 10x more concentrated sample gives less than 10x the fluorescence
    rich = FluorescenceModel(fe_fraction=0.2, photon_rate=3e8, efficiency=0.01, dead_time_s=0.0,
                             background_rate=0.0)
    dilute = FluorescenceModel(fe_fraction=0.02, photon_rate=3e8, efficiency=0.01, dead_time_s=0.0,
                               background_rate=0.0)
    mu = table_mu(lib, "Fe3O4", 7135.0)
    assert rich.expected(7135.0, mu, 1.0) < 8 * dilute.expected(7135.0, mu, 1.0)


def test_first_inflection():
    e = np.arange(7090.0, 7150.0, 0.05)

    def step(center, width):
        return 0.5 + erf((e - center) / width) / 2

    assert first_inflection(e, step(7112.3, 2.0))[0] == pytest.approx(7112.3, abs=0.01)
    # a pre-edge step whose derivative peak is below half the largest is skipped; above half it is the first
    assert first_inflection(e, 0.2 * step(7108.0, 1.0) + step(7118.0, 1.5))[0] == pytest.approx(7118.0, abs=0.05)
    assert first_inflection(e, 0.9 * step(7108.0, 1.0) + step(7118.0, 1.5))[0] == pytest.approx(7108.0, abs=0.05)


def test_reference_foil_recovers_the_imposed_offset_from_a_grid_run(lib):
    eps = 0.7
    x = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=4, reference_foil=True,
                            calibration_offset_eV=eps)
    events = []
    RunEngine()(grid_xas(x.detectors, x.mono, list(np.arange(7104.0, 7124.0, 0.5)), dwell_s=1.0),
                lambda name, doc: events.append(doc["data"]) if name == "event" else None)
    foil = ReferenceFoil.from_library(lib)
    foil.update([d["mono_energy"] for d in events], [d["it_counts"] for d in events],
                [d["iref_counts"] for d in events])
    mean, sd = foil.offset
    assert foil.points == 40 and sd < 0.2 and abs(mean - eps) < 3 * sd  # -0.7 is 7 sd away
    e0 = first_inflection(lib.energy, lib.spectra[:, lib.index("Fe-foil")])[0]
    assert foil.calibration(7112.0) == pytest.approx((mean + 7112.0 - e0, sd))
    assert foil.mean[1] == pytest.approx(1.0, abs=0.1) and foil.mean[2] == pytest.approx(0.2, abs=0.1)
    # the Fisher information on ε a point adds: the rank-one gain, checked by inverting the 3x3 precisions
    energies = np.array([7090.0, e0 - mean, 7116.0, 7150.0])
    info = foil.expected_information(energies, 2.0, x.sample.i0_rate, x.sample.mut(7110.0))
    prec = np.linalg.inv(foil.cov)
    for e, gain in zip(energies, info, strict=True):
        n_it = x.sample.i0_rate * 2.0 * np.exp(-x.sample.mut(7110.0))
        mu_ref = foil.mean[1] * table_mu(lib, "Fe-foil", e + mean) + foil.mean[2]
        j = foil.jacobian(e)[0]
        after = np.linalg.inv(prec + np.outer(j, j) / (1 / n_it + np.exp(mu_ref) / n_it))
        assert gain == pytest.approx(1 / after[0, 0] - 1 / foil.cov[0, 0], rel=1e-8)
    assert info[1] == info.max() and np.all(info > 0)
    assert np.all(foil.expected_information(energies, 4.0, x.sample.i0_rate, x.sample.mut(7110.0)) > info)
    before = foil.offset[1]
    foil.update(e0 - mean, *count_at(x, e0 - mean)[1:])
    assert foil.offset[1] < before
    rng = np.random.default_rng(0)  # the shared It noise: brute force against the delta method
    i0, it, iref = (rng.poisson(lam, 20000) for lam in (20000, 3000, 1000))
    measured = np.corrcoef(np.log(i0 / it), np.log(it / iref))[0, 1]
    assert measured == pytest.approx(float(noise_correlation(20000, 3000, 1000)), abs=0.03)


def count_at(x, energy):
    x.mono.set(energy).wait(1)
    return count_all(x.detectors)


def test_adaptive_xas_stores_iref_and_the_feeder_passes_it(RE, catalog, lib):
    class Seen(XASAgent):
        def _ingest_one(self, point):
            self.seen.append(dict(point))
            super()._ingest_one(point)

    x = make_xas_endstation("Fe3O4", SimClock(float("inf")), seed=5, reference_foil=True)
    agent = Seen(library_prior(lib.without("Fe3O4")), Budget(points=8))
    agent.seen = []
    x.iref.fail_next("nan", after=2)
    uid = RE(adaptive_xas(x.detectors, x.mono, agent, beamtime=None, ring=None))[0]
    run = catalog[uid]
    spec = run.metadata["start"]["validity"]
    assert spec["counts"] == ["i0_counts", "it_counts", "iref_counts"] and spec["reference"] == "iref_counts"
    primary = run["primary"].read()
    iref = np.asarray(primary["iref_counts"])
    assert np.isnan(iref[2]) and np.all(iref[np.arange(iref.size) != 2] > 0)
    assert [p["iref"] for p in agent.seen] == list(iref[np.arange(iref.size) != 2])
    assert agent.report()["points"] == 8 and len(agent.failures) == 1 and np.isnan(agent.failures[0]["iref"])
    assert "not finite positive" in str(run["posterior"].read()["point_problem"][2])
    with pytest.raises(ValueError, match=r"\[i0, it\] or \[i0, it, iref\]"):
        RE(adaptive_xas([x.i0], x.mono, agent))


def test_the_three_chambers_share_one_gate():
    clock = SimClock(float("inf"))
    x = make_xas_endstation("Fe3O4", clock, seed=6, reference_foil=True, dwell_s=3.0)
    assert x.i0.gate is x.it.gate is x.iref.gate and isinstance(x.i0.gate, ScalerGate)
    count_all(x.detectors)
    assert clock.now == pytest.approx(3.0)
