"""The adaptive XAS-imaging plan through a real RunEngine into the embedded catalog, on a small simulated field
of view: every frame and the posterior stream stored, the stop reason in the stop document; a corrupt frame and a
frame during a beam dump stored but not ingested (measured again); bad input refused before anything moves; the
queue-ready signature and a call with plain parameters by device name."""

import inspect
import typing

import numpy as np
import pytest

ENERGIES = [7085.0, 7113.5, 7121.0, 7162.0]  # eV: a small stack (the design is tested in test_imaging_design.py)
SMALL = dict(energies=ENERGIES, n_flat=2, n_dark=2, max_passes=2, beam_poll_s=0.0)


def station(seed=1, shape=(96, 96)):
    from sim_devices.core.clock import SimClock
    from sim_devices.core.ring import RingCurrent
    from sim_devices.imaging import make_imaging_endstation
    from sim_devices.imaging.sample import default_sample

    clock = SimClock(time_scale=float("inf"))
    ring = RingCurrent(name="ring", clock=clock)
    return make_imaging_endstation(default_sample(seed=seed, minority_fraction=0.005), clock, ring=ring, shape=shape,
                                   seed=seed)


def run_on(RE, st, **kwargs):
    from bayesbeam.rehearsal.imaging.rehearse import capture_agent
    from plans.imaging import adaptive_xas_imaging
    from sim_devices.core.clock import BeamtimeSignal

    agents: list = []
    (uid,) = RE(capture_agent(adaptive_xas_imaging(st.detectors, st.mono, stage=st.stage, shutter=st.shutter,
                                                   ring=st.ring, beamtime=BeamtimeSignal(st.clock, name="beamtime"),
                                                   **{**SMALL, **kwargs}), agents))
    return uid, agents[0]


def test_a_run_stores_every_frame_the_posterior_and_the_stop_reason_and_skips_a_faulty_frame(RE, catalog):
    """Frame 3 (a flat) comes back corrupt and frame 13 (the second image) straddles a beam dump: both are stored,
    neither is ingested, both are measured again; the run stops on its budget or decision with every frame in the
    catalog."""
    st = station()
    st.detector.fail_next("corrupt", after=2)
    original, count = st.detector.trigger, {"n": 0}

    def trigger():
        count["n"] += 1
        if count["n"] == 13:
            st.ring.dump(at_s=st.clock.now + 0.1, duration_s=0.3)
        return original()

    st.detector.trigger = trigger
    uid, agent = run_on(RE, st, exclude=["Fe3_PO4_2_8H2O"], md={"sample": "imaging"})
    run = catalog[uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success" and stop["reason"] == agent.should_stop()[1]
    start = run.metadata["start"]
    assert start["plan_name"] == "adaptive_xas_imaging" and start["validity"]["rule"] == "xas-imaging-frame-proof/1"
    assert start["energies_eV"] == ENERGIES and "Fe3_PO4_2_8H2O" not in start["library_names"]
    primary, frames = run["primary"].read(), run["frames"].read()
    n = primary.sizes["time"]
    assert n == frames.sizes["time"] == count["n"]  # every frame stored, with its verdict
    images = primary["imaging_det_image"].values
    assert images.shape == (n, 96, 96) and images.dtype == np.float32
    kinds = [str(k) for k in primary["kind"].values]
    valid = [bool(v) for v in frames["valid"].values]
    reasons = [str(r) for r in frames["reason"].values]
    assert not valid[2] and "corrupt flat frame 3" in reasons[2] and (images[2].max(axis=1) <= 0).any()
    assert not valid[12] and "beam lost" in reasons[12] and kinds[12] == "image"
    assert sum(not v for v in valid) == 2 and [f["reason"] for f in agent.failures] == [reasons[2], reasons[12]]
    passes = agent.report()["passes"]
    assert kinds.count("dark") == 2 and kinds.count("flat") == 2 * len(ENERGIES) + 1
    assert kinds.count("image") == passes * len(ENERGIES) + 1  # the dumped image again
    assert agent.report()["images"] == passes * len(ENERGIES)  # the faulty frames never reached the agent
    post = run["posterior"].read()
    assert post.sizes["time"] == passes and list(post["passes"].values) == list(range(1, passes + 1))
    assert bool(post["stop"][-1]) and str(post["stop_reason"].values[-1]) == stop["reason"]
    assert float(post["decided_fraction"][-1]) == pytest.approx(agent.report()["decided_fraction"])
    assert "name" in str(post["classes_json"].values[-1])
    # classified again from the catalog alone (bayesbeam classify --run): the same valid frames, the same classes
    from bayesbeam.rehearsal.imaging.classify import classify, from_run

    stack = from_run(run)
    assert stack.source.passes == passes
    np.testing.assert_allclose(stack.source.images, agent.sums, rtol=1e-6)
    again = classify(stack, None, scheduler="threads", tile=48)["summary"]
    assert again["pixels"] == 96 * 96 and len(again["classes"]) == agent.report()["n_classes"]


@pytest.mark.parametrize("call, words", [
    (dict(library=["LiFePO4", "FePO5"]), "unknown standard 'FePO5'; did you mean FePO4"),
    (dict(exclude=["nosuch"]), "unknown standard 'nosuch'"),
    (dict(energies=[7000.0, 7113.5, 7162.0]), "outside the library range"),
    (dict(energies=[7113.5, 7162.0]), "at least 3 distinct"),
    (dict(max_passes=0), "max_passes must be an integer >= 1"),
    (dict(energy_tolerance_ev=0.0), "energy tolerance must be > 0"),
    (dict(psf_sigma_px=-0.6), "psf_sigma_px must be > 0"),
])
def test_bad_input_is_one_line_before_anything_moves(RE, call, words):
    from plans.imaging import adaptive_xas_imaging

    st = station(seed=2, shape=(32, 32))
    before, energy, x = st.clock.now, st.mono.position, st.stage.position
    with pytest.raises(ValueError, match=words) as err:
        RE(adaptive_xas_imaging(st.detectors, st.mono, stage=st.stage, shutter=st.shutter, ring=st.ring,
                                **{**SMALL, **call}))
    assert "\n" not in str(err.value)
    assert st.clock.now == before and st.mono.position == energy and st.stage.position == x
    assert st.detector.frames == 0 and st.stage.moves == 0


def test_energies_outside_the_monochromator_limits_are_refused_before_anything_moves(RE):
    from plans.imaging import adaptive_xas_imaging

    st = station(seed=2, shape=(32, 32))
    st.mono.high_limit_eV.put(7150.0)
    with pytest.raises(ValueError, match=r"energies 7085.00-7162.00 eV outside the monochromator range "
                                         r"7070.05-7150.00 eV") as err:
        RE(adaptive_xas_imaging(st.detectors, st.mono, stage=st.stage, shutter=st.shutter, **SMALL))
    assert "\n" not in str(err.value) and st.detector.frames == 0 and st.clock.now == 0


def test_the_plan_is_queue_ready():
    from plans import adaptive_xas_imaging

    sig = inspect.signature(adaptive_xas_imaging)
    params = list(sig.parameters.values())
    assert [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD] == \
        ["detectors", "mono", "agent"]
    assert all(not isinstance(p.annotation, str) and p.annotation is not inspect.Parameter.empty for p in params)
    hints = typing.get_type_hints(adaptive_xas_imaging)
    plain = (str, int, float, bool, list, dict, type(None))
    for name in ("energies", "library", "exclude", "n0", "exposure_s", "target_error", "decided", "min_passes",
                 "max_passes", "n_flat", "n_dark", "scheduler", "tile", "beam_floor_ma", "energy_tolerance_ev",
                 "md"):
        assert all(typing.get_origin(a) in plain or a in plain for a in typing.get_args(hints[name]) or
                   [hints[name]]), name
    assert params[-1].name == "md" and params[-1].default is None and params[-1].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["detectors"].default == ("imaging_det",) and sig.parameters["mono"].default == "mono"


def test_plain_parameters_validate_as_the_queue_server_does_and_run_by_device_name(RE, catalog):
    """bluesky-queueserver's own validation of a request against the plan's signature (the worker's
    ``existing_plans_and_devices`` built from a namespace holding the plan and the devices), then the plan called
    with those plain parameters: devices by name through ``plans.registry``."""
    from bluesky_queueserver.manager.profile_ops import (
        existing_plans_and_devices_from_nspace,
        validate_plan,
    )

    from plans import adaptive_xas_imaging, registry
    from sim_devices.core.clock import BeamtimeSignal

    st = station(seed=4, shape=(48, 48))
    beamtime = BeamtimeSignal(st.clock, name="beamtime")
    named = dict(imaging_det=st.detector, mono=st.mono, sample_x=st.stage, shutter=st.shutter, ring=st.ring,
                 beamtime=beamtime)
    plans, devices, _, _ = existing_plans_and_devices_from_nspace(
        nspace={"adaptive_xas_imaging": adaptive_xas_imaging, **named})
    item = {"name": "adaptive_xas_imaging", "kwargs": {**SMALL, "library": ["LiFePO4", "FePO4", "Fe3O4"],
                                                        "md": {"sample": "imaging"}}}
    ok, msg = validate_plan(item, allowed_plans=plans, allowed_devices=devices)
    assert ok, msg
    bad = {"name": "adaptive_xas_imaging", "kwargs": {"max_passes": "many"}}
    assert not validate_plan(bad, allowed_plans=plans, allowed_devices=devices)[0]
    saved = registry.registered_devices()
    registry.clear_devices()
    registry.register_devices(named)
    try:
        (uid,) = RE(adaptive_xas_imaging(**item["kwargs"]))
    finally:
        registry.clear_devices()
        registry.register_devices(saved)
    run = catalog[uid]
    start = run.metadata["start"]
    assert start["detectors"] == ["imaging_det"] and start["motors"] == ["mono"]
    assert start["validity"]["ring_minimum"] == st.ring.minimum.name
    assert start["library_names"] == ["LiFePO4", "FePO4", "Fe3O4"] and "ClassificationDecided" in start["stop_rule"]
    assert run.metadata["stop"]["reason"] and run["posterior"].read().sizes["time"] >= 1
