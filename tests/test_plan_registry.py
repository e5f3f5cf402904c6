"""The adaptive plans with plain parameters, as the queue server calls them (issue 10, item 2): devices by name
through ``plans.registry``, the agent built inside the plan, ``continue_from`` without an agent object, and the
errors a wrong request gets before anything moves. The queue itself: tests/test_queue_stack.py."""

import pytest

from plans import registry


@pytest.fixture()
def beamline():
    """A simulated beamline registered by name as a profile registers it; the registry as it was afterwards
    (another test's profile may have filled it)."""
    from sim_devices import BeamtimeSignal, make_compton_beamline

    saved = registry.registered_devices()
    bl = make_compton_beamline("fe", time_scale=float("inf"), seed=3)
    bl.beamtime = BeamtimeSignal(bl.clock, name="beamtime")
    registry.clear_devices()
    registry.register_devices(ge=bl.ge, magnet=bl.magnet, ring=bl.ring, beamtime=bl.beamtime)
    try:
        yield bl
    finally:
        registry.clear_devices()
        registry.register_devices(saved)


def test_defaults_resolve_to_the_registered_beamline_and_the_agent_is_built_from_parameters(beamline, RE, catalog):
    from plans import adaptive_compton

    (uid,) = RE(adaptive_compton(target_std=1e-6, max_cycles=2, md={"sample": "fe"}))
    run = catalog[uid]
    start = run.metadata["start"]
    assert start["detectors"] == ["ge"] and start["motors"] == ["magnet"]
    assert start["validity"]["ring_minimum"] == beamline.ring.minimum.name  # the registered ring, by default
    assert start["stop_rule"].startswith("any_of(TargetStd(quantity='mu_s', target=1e-06)")
    assert run.metadata["stop"]["reason"] == "budget: cycles = 2 reached the limit 2"
    assert run["posterior"].read().sizes["time"] == 2 and float(run["primary"].read()["beamtime"][-1]) > 0


def test_a_default_ring_is_never_taken_from_another_beamline(beamline, RE, catalog):
    """Devices of a beamline made in Python (not the registered ones): the default ring name stands for no ring."""
    from plans import adaptive_compton
    from sim_devices import make_compton_beamline

    own = make_compton_beamline("fe", time_scale=float("inf"), seed=4)
    (uid,) = RE(adaptive_compton([own.ge], own.magnet, target_std=1e-6, max_cycles=1))
    assert catalog[uid].metadata["start"]["validity"]["ring_minimum"] is None


@pytest.mark.parametrize("call, error, words", [
    (dict(ring="nosuch"), registry.UnknownDevice, "adaptive_compton ring: no device named 'nosuch' (registered: "
                                                  "beamtime, ge, magnet, ring)"),
    (dict(detectors=["ge", "xx"]), registry.UnknownDevice, "adaptive_compton detectors: no device named 'xx'"),
    (dict(agent="spin_moment_agent"), TypeError, "agent must be an agent object"),
    (dict(target_std=-1.0), ValueError, "target"),
    (dict(continue_from="0123abcd", target_std=0.01), ValueError, "its parameters (target_std) cannot be changed"),
])
def test_a_wrong_request_is_one_line_before_anything_moves(beamline, RE, call, error, words):
    from plans import adaptive_compton

    position, beamtime = beamline.magnet.position, beamline.clock.now
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        RE(adaptive_compton(**call))
    assert beamline.magnet.position == position and beamline.clock.now == beamtime  # nothing moved or counted


def test_an_agent_and_its_parameters_together_are_refused(beamline, RE):
    from agent import spin_moment_agent
    from plans import adaptive_compton

    with pytest.raises(ValueError, match=r"give an agent or its parameters \(target_std\), not both"):
        RE(adaptive_compton(agent=spin_moment_agent(), target_std=0.01))


def test_continue_from_without_an_agent_rebuilds_it_from_the_catalog(beamline, RE, catalog):
    """A run that failed after its second cycle is continued by the plan itself (as a queued item would be):
    ``continue_from`` and no agent, the agent rebuilt by the rebuilder the session registers; only the cycles
    the budget still allows are counted."""
    from bayesbeam.resume import register_rebuilders
    from plans import adaptive_compton

    register_rebuilders(catalog)

    def fail(name, doc):
        if name == "event" and doc["data"].get("cycles") == 2:
            raise RuntimeError("the operator's callback broke")

    token = RE.subscribe(fail)
    with pytest.raises(RuntimeError, match="callback broke"):
        RE(adaptive_compton(target_std=1e-6, max_cycles=4, md={"sample": "fe"}))
    RE.unsubscribe(token)
    old = catalog[-1].metadata["start"]["uid"]
    (uid,) = RE(adaptive_compton(continue_from=old[:8]))
    new = catalog[uid]
    assert new.metadata["start"]["continue_from"] == old
    assert new.metadata["stop"]["reason"] == "budget: cycles = 4 reached the limit 4"
    assert list(new["posterior"].read()["cycles"].values) == [3, 4]


def test_a_campaign_without_a_queue_manager_is_one_line_after_its_retries(tmp_path):
    """Nothing answers at the control address: ``campaign run`` retries with backoff for ``--connect-timeout`` s,
    then says so in one line, before the catalog is touched."""
    import socket
    import time

    from click.testing import CliRunner

    from bayesbeam.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(f'[campaign]\nname = "nobody"\n[queue]\ncontrol_addr = "tcp://127.0.0.1:{port}"\n')
    t0 = time.monotonic()
    out = CliRunner().invoke(main, ["campaign", "run", str(config), "--state-dir", str(tmp_path / "no_stack"),
                                    "--catalog", str(tmp_path / "cat"), "--connect-timeout", "2"])
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert out.output.startswith(f"Error: no queue manager answers at tcp://127.0.0.1:{port} (tried for 2 s)")
    assert time.monotonic() - t0 < 60 and not (tmp_path / "cat").exists()
