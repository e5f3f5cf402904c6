"""XPS sweep agent and the simulated electron analyser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.core.stopping import Budget, ModelDecided, TargetStd, all_of, any_of
from agent.xps.agent import XPSAgent, default_stop_rule, model_probabilities
from agent.xps.cluster_models import CEO2, LA2O3
from sim_devices.core.clock import SimClock
from sim_devices.xps.electron_analyser import SimElectronAnalyser
from sim_devices.xps.samples import sample

FAST = dict(analysis="0.1", n_sweeps=300, n_burn=200, n_runs=2)  # the seed-line-shape samples of this file


def analyser(name="ceo2", seed=0):
    clock = SimClock(time_scale=math.inf)
    return SimElectronAnalyser(name="xps", clock=clock, sample=sample(name), seed=seed), clock


def test_analyser_describe_and_counts():
    det, clock = analyser()
    desc = det.describe()
    for key in ("xps_counts", "xps_energies"):
        assert desc[key]["dtype"] == "array"
        assert desc[key]["shape"] == [det.n_points]
        assert desc[key]["dtype_numpy"] == "<f8"
    assert "xps_dwell_time" in det.describe_configuration()
    assert det.hints["fields"] == ["xps_total"]  # a scalar: BEC plots it, it cannot plot the spectrum
    sweeps = []
    for _ in range(20):
        st = det.trigger()
        st.wait(1)
        sweeps.append(det.read()["xps_counts"]["value"])
    assert clock.now == pytest.approx(20 * det.sweep_duration())
    expected = sample("ceo2").rate(det.energies.get()) * det.dwell_time.get()
    mean = np.mean(sweeps, axis=0)
    assert np.all(np.abs(mean - expected) < 5 * np.sqrt(expected / 20) + 0.5)


def test_analyser_faults():
    det, _ = analyser()
    det.fail_next("nan")
    det.trigger().wait(1)
    assert np.isnan(det.counts.get()).any()
    det.fail_next("timeout")
    with pytest.raises(TimeoutError):
        det.trigger().wait(1)
    with pytest.raises(ValueError):
        det.fail_next("melt")


def test_model_probabilities_are_conservative():
    p = model_probabilities({"2-level": 10.0, "3-level": 12.0}, {"2-level": 0.1, "3-level": 0.1})
    assert p["2-level"] > p["3-level"] and p["2-level"] + p["3-level"] == pytest.approx(1)
    noisy = model_probabilities({"2-level": 10.0, "3-level": 12.0}, {"2-level": 1.0, "3-level": 1.0})
    assert noisy["2-level"] == 0.5


def sweep_until_stop(agent, det, clock) -> str:
    """Trigger the simulated analyser and ingest each sweep until the agent stops; the reason."""
    reason = None
    while reason is None:
        det.trigger().wait(1)
        r = det.read()
        agent.ingest([{"counts": r["xps_counts"]["value"], "energies": r["xps_energies"]["value"],
                       "beamtime_s": clock.now, "_id": agent.sweeps + 1}])
        _, reason = agent.should_stop()
    return reason


def test_agent_decides_ceo2_and_stops():
    """CeO₂ data (3-level truth), 0.1 s dwell per channel. One sweep decides the model: ΔF =
    F_2level − F_3level ≈ 290 nats per sweep, where P ≥ 0.99 needs ln 99 ≈ 4.6 nats + 2·err(ΔF).
    The sweep count is set by std(U_fc) ≤ 0.1 eV: long chains give std(U_fc) ≈ 0.16 eV/√N
    (N = 1…4: 0.160, 0.113, 0.095, 0.079). At N = 3 the target is met by 5 %, less than the
    spread of the short-chain (FAST) estimate (0.095 ± 0.004 over sampler seeds, a third of them
    above 0.1), so stopping at 3 or 4 depends on the random stream, which here also depends on
    the machine's OpenBLAS kernel (``np.linalg.eigh`` gives the sampler's proposal axes). N = 1
    cannot meet the target; N = 4 meets it by 20 %, far beyond that spread: 2 ≤ N ≤ 4."""
    det, clock = analyser("ceo2", seed=3)
    rule = any_of(all_of(ModelDecided(0.99), TargetStd("delta", 0.1), TargetStd("U_fc", 0.1)), Budget(cycles=6))
    agent = XPSAgent(rule, seed=1, **FAST)
    reason = sweep_until_stop(agent, det, clock)
    rep = agent.report()
    assert reason.startswith("model_decided"), reason
    assert rep["model_best"] == "3-level" and rep["model_prob_max"] >= 0.99
    first = agent.history[0]
    assert first["model_best"] == "3-level" and first["model_prob_max"] >= 0.99, first
    assert first["F_2level"] - first["F_3level"] > 100, first
    assert first["U_fc_std"] > 0.1  # one sweep cannot meet the precision target
    assert 2 <= rep["sweeps"] <= 4 and rep["beamtime_s"] == pytest.approx(rep["sweeps"] * det.sweep_duration())
    for q in ("delta", "V", "U_ff", "U_fc", "gamma"):
        assert rep[f"{q}_lo95"] <= CEO2[q] <= rep[f"{q}_hi95"], (q, rep)
        assert rep[f"{q}_std"] > 0
    assert rep["F_2level"] - rep["F_3level"] > 10
    assert len(agent.history) == rep["sweeps"]
    assert agent.suggest(2) == [{"sweep": rep["sweeps"] + 1, "_id": rep["sweeps"] + 1},
                                {"sweep": rep["sweeps"] + 2, "_id": rep["sweeps"] + 2}]


def test_agent_decides_la2o3_and_stops():
    """La₂O₃-like data: the 2-level model wins decisively (why: tests/test_cluster_models.py::
    test_la2o3_selects_two_levels) and the default targets on Δ − U_fc and V are met."""
    det, clock = analyser("la2o3", seed=7)
    agent = XPSAgent(any_of(default_stop_rule(), Budget(cycles=6)), seed=3, **FAST)
    reason = sweep_until_stop(agent, det, clock)
    rep = agent.report()
    assert reason.startswith("model_decided: P(2-level)"), reason
    assert rep["sweeps"] <= 4 and rep["F_3level"] - rep["F_2level"] > 5
    truth = {**LA2O3, "delta_f": LA2O3["delta"] - LA2O3["U_fc"]}
    for q in ("delta", "V", "U_fc", "gamma", "delta_f"):
        assert abs(rep[f"{q}_mean"] - truth[q]) < 3 * rep[f"{q}_std"], (q, rep)
    assert math.isnan(rep["U_ff_mean"])  # not a parameter of the leading model


def test_agent_checkpoint_roundtrip(tmp_path):
    det, _ = analyser("la2o3", seed=5)
    agent = XPSAgent(Budget(cycles=5), seed=2, checkpoint_path=tmp_path / "xps.npz", **FAST)
    det.trigger().wait(1)
    r = det.read()
    agent.ingest([{"counts": r["xps_counts"]["value"], "energies": r["xps_energies"]["value"], "_id": 1}])
    agent.checkpoint()
    again = XPSAgent(Budget(cycles=5), seed=0, **FAST)
    again.restore(tmp_path / "xps.npz")
    assert again.sweeps == 1 and np.array_equal(again.counts, agent.counts)
    assert again.report()["F_2level"] == pytest.approx(agent.report()["F_2level"])


def test_agent_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown quantity"):
        XPSAgent(TargetStd("spin", 0.1))
    agent = XPSAgent(default_stop_rule(), **FAST)
    e = np.linspace(-16, 8, 50)
    with pytest.raises(ValueError, match="counts"):
        agent.ingest([{"counts": np.full(50, np.nan), "energies": e}])
    with pytest.raises(ValueError, match="counts"):
        agent.ingest([{"counts": np.ones(49), "energies": e}])
