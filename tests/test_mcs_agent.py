"""The spin-moment agent on simulated physics: honest intervals, validation, checkpoints."""

import dataclasses

import numpy as np
import pytest

from agent.compton.agent import spin_moment_agent
from bayesbeam.rehearsal.compton.rehearse import make_agent, simulate_beamtime
from sim_devices.compton.beamline import make_compton_beamline
from sim_devices.compton.samples import compton_sample


@pytest.fixture(scope="module")
def geometry():
    return make_compton_beamline("fe", time_scale=float("inf")).ge.geometry()


def one_cycle(sample, geometry, rng, count_time_s=60.0):
    spectra = np.stack([rng.poisson(sample.expected_counts(geometry, s, count_time_s)) for s in (1, -1, -1, 1)])
    return {"spectra": spectra.astype(float), "fields": [1, -1, -1, 1], "monitors": np.ones(4)}


def test_interval_coverage_when_the_model_is_true(geometry):
    """With a truth inside the model family, 68 % / 95 % intervals cover at their nominal rate."""
    fe = compton_sample("fe")
    exact = dataclasses.replace(fe, band_terms=(), diffuse_area_mub=0.0, resolution_fwhm_au=0.45)
    rng = np.random.default_rng(11)
    n, hits = 300, {("mu_s", 68): 0, ("mu_s", 95): 0, ("a3d", 95): 0}
    truth = {"mu_s": exact.spin_moment_mub, "a3d": exact.amplitudes_mub[0]}
    for _ in range(n):
        agent = make_agent(exact, 1e-6)
        agent.configure(geometry)
        agent.ingest([one_cycle(exact, geometry, rng)])
        rep = agent.history[-1]
        for q, lv in hits:
            hits[(q, lv)] += rep[f"{q}_lo{lv}"] <= truth[q] <= rep[f"{q}_hi{lv}"]
    for (q, lv), k in hits.items():
        p = lv / 100
        assert abs(k / n - p) < 3.5 * np.sqrt(p * (1 - p) / n), (q, lv, k / n)


def test_stops_on_target_and_std_shrinks(geometry):
    fe = compton_sample("fe")
    agent = make_agent(fe, 0.01)
    reason, beamtime = simulate_beamtime(fe, agent, np.random.default_rng(3), geometry, 60.0, 266.0, 136)
    stds = [h["mu_s_std"] for h in agent.history]
    assert reason.startswith("target_std") and stds[-1] <= 0.01 < stds[-2]
    assert 4 <= agent.cycles <= 10  # the seed: about 6 cycles for ±0.01 μB
    assert beamtime == pytest.approx(agent.cycles * 266.0)


def test_misfit_inflates_the_noise_scale(geometry):
    """The simulator's truth is not the free-atom model: at high statistics the noise scale grows."""
    fe = compton_sample("fe")
    agent = make_agent(fe, 1e-6, max_cycles=500)
    agent.configure(geometry)
    rng = np.random.default_rng(5)
    point = one_cycle(fe, geometry, rng, count_time_s=60.0 * 100)
    agent.ingest([point])
    assert agent.history[-1]["noise_scale_mean"] > 1.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_std=0), "positive"), (dict(target_std=-0.01), "positive"),
    (dict(quantity="spin"), "unknown quantity 'spin'"), (dict(max_cycles=0), "max_cycles"),
])
def test_bad_agent_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spin_moment_agent(**{"target_std": 0.01, **kwargs})


def test_unknown_sample_lists_presets():
    with pytest.raises(ValueError, match="unknown sample 'gd'; known samples: co, fe, ni"):
        compton_sample("gd")


def test_checkpoint_restores_the_posterior(geometry, tmp_path):
    fe = compton_sample("fe")
    rng = np.random.default_rng(2)
    agent = spin_moment_agent(0.001, geometry=geometry, checkpoint_path=tmp_path / "agent.npz")
    for _ in range(3):
        agent.ingest([one_cycle(fe, geometry, rng)])
    agent.checkpoint()
    fresh = spin_moment_agent(0.001, geometry=geometry)
    fresh.restore(tmp_path / "agent.npz")
    assert fresh.cycles == 3 and fresh.report() == pytest.approx(agent.report())
    assert fresh.history == agent.history
    told = spin_moment_agent(0.001, geometry=geometry)
    rng = np.random.default_rng(2)
    for _ in range(3):
        told.tell([one_cycle(fe, geometry, rng)])  # bluesky-adaptive's older name for ingest
    assert told.report() == agent.report()


def test_rejects_corrupt_cycles(geometry):
    agent = spin_moment_agent(0.01, geometry=geometry)
    point = one_cycle(compton_sample("fe"), geometry, np.random.default_rng(0))
    point["spectra"][1, 500] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        agent.ingest([point])
    with pytest.raises(ValueError, match="both field directions"):
        agent.ingest([{**point, "fields": [1, 1, 1, 1], "spectra": np.ones((4, 1024))}])
    assert agent.cycles == 0


def test_speaks_the_bluesky_adaptive_protocols():
    import bluesky_adaptive.protocols as p

    agent = spin_moment_agent(0.01)
    for proto in (p.Optimizer, p.SupportsStoppingCriteria, p.Checkpointable, p.TrialFaultAware):
        assert isinstance(agent, proto), proto.__name__
    assert agent.suggest(2) == [{"cycle": 0, "_id": 0}, {"cycle": 1, "_id": 1}]
    assert agent.ask(1) == agent.suggest(1)  # bluesky-adaptive's older names: ask/tell
    assert agent.should_stop() == (False, None)
