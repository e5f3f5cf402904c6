"""``bayesbeam queue``: the local queue stack started for real (Redis and bluesky-queueserver's RE manager, on
127.0.0.1 and free ports, a temporary state directory and embedded catalog), a stock plan queued with plain
parameters through ``REManagerAPI`` and its run read back from the catalog, the agents' user group, and a
``stop`` that leaves no process and no listening socket behind. Needs a Redis server binary (Debian:
``apt-get install redis-server``); every wait is on a state, never a fixed sleep."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner

from bayesbeam.queue.cli import queue
from bayesbeam.queue.stack import AGENTS_GROUP, PERMISSIONS_TEMPLATE, QueueStack, wait_for_status

needs_redis = pytest.mark.skipif(
    shutil.which(os.environ.get("BAYESBEAM_REDIS_SERVER", "redis-server")) is None,
    reason="no redis-server on PATH (apt-get install redis-server): the queue stack tests run a real Redis")


def _family(stack: QueueStack) -> list:
    """The processes of the stack: Redis, and the manager's watchdog with its manager and worker children."""
    manager, redis = stack.process("manager"), stack.process("redis")
    assert manager is not None and redis is not None
    return [redis, manager, *manager.children(recursive=True)]


def _journalled_posteriors(directory, **start_md) -> int:
    """The most posterior events in the journal of a run whose start document has ``start_md``, as its
    RunEngine emitted them (the catalog's copy lags behind: its writer is slower than the simulator); 0 if
    none yet. A journal is there while its run is open (or if its catalog copy was given up)."""
    from bayesbeam.catalog import read_journal

    counted = 0
    for path in directory.glob("*.jsonl"):
        try:
            docs = read_journal(path)
        except (OSError, ValueError):  # gone (loaded, or the run ended whole) or being written
            continue
        if docs and docs[0][0] == "start" and all(docs[0][1].get(k) == v for k, v in start_md.items()):
            posterior = {d["uid"] for name, d in docs if name == "descriptor" and d.get("name") == "posterior"}
            counted = max(counted, sum(1 for name, d in docs if name == "event" and d["descriptor"] in posterior))
    return counted


# --- without a running stack ------------------------------------------------------------------------------

def test_agents_group_may_run_only_the_adaptive_plans():
    """The permission template, through the queue server's own filter: the agents' group gets the adaptive
    plans and grid_xas (not bluesky's adaptive_scan, which the adaptive_ pattern would match), no scan and no
    move; top-level devices without their components. The primary group gets everything."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky_queueserver.manager.profile_ops import (
        existing_plans_and_devices_from_nspace,
        load_allowed_plans_and_devices,
    )
    from ophyd.sim import SynAxis

    def adaptive_compton(*, target_std: float = 0.01, md: dict | None = None):
        yield from bps.null()

    def adaptive_xps(*, md: dict | None = None):
        yield from bps.null()

    def grid_xas(energies: list, *, md: dict | None = None):
        yield from bps.null()

    stock = ("count", "scan", "rel_scan", "list_scan", "grid_scan", "adaptive_scan", "rel_adaptive_scan",
             "tune_centroid")
    nspace = {name: getattr(bp, name) for name in stock} | {
        "mv": bps.mv, "mvr": bps.mvr, "adaptive_compton": adaptive_compton, "adaptive_xps": adaptive_xps,
        "grid_xas": grid_xas, "mono": SynAxis(name="mono")}
    plans, devices, _, _ = existing_plans_and_devices_from_nspace(nspace=nspace)
    allowed_plans, allowed_devices = load_allowed_plans_and_devices(
        existing_plans=plans, existing_devices=devices, path_user_group_permissions=str(PERMISSIONS_TEMPLATE))
    assert sorted(allowed_plans[AGENTS_GROUP]) == ["adaptive_compton", "adaptive_xps", "grid_xas"]
    assert set(allowed_plans["primary"]) == set(plans)
    assert list(allowed_devices[AGENTS_GROUP]) == ["mono"] and not allowed_devices[AGENTS_GROUP]["mono"].get(
        "components")
    assert "velocity" in allowed_devices["primary"]["mono"]["components"]


def test_stale_pid_files_are_neither_trusted_nor_kept(tmp_path):
    """A pid file naming a process that is gone, or one that is not the program it should be, is stale:
    ``stop`` says nothing runs and removes it, and ``start`` would start afresh."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "redis.pid").write_text(f"{gone.pid}\n")
    (tmp_path / "manager.pid").write_text(f"{os.getpid()}\n")  # pytest, not start-re-manager
    stack = QueueStack(tmp_path)
    assert stack.process("redis") is None and stack.process("manager") is None
    result = CliRunner().invoke(queue, ["stop", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0 and "not running" in result.output, result.output
    assert not (tmp_path / "redis.pid").exists() and not (tmp_path / "manager.pid").exists()


def test_only_loopback_addresses_are_bound(tmp_path):
    result = CliRunner().invoke(queue, ["start", "--state-dir", str(tmp_path), "--zmq-control-addr", "tcp://*:60615"])
    assert result.exit_code != 0 and "binds to 127.0.0.1 only" in result.output, result.output
    assert not (tmp_path / "manager.pid").exists() and not (tmp_path / "redis.pid").exists()


# --- the stack, started once (the session's ``stack`` fixture, tests/conftest.py) ------------------------------

@needs_redis
def test_a_plan_queued_with_plain_parameters_is_stored_in_the_catalog(stack):
    from bluesky_queueserver_api import BPlan

    from bayesbeam.catalog import open_catalog

    api = stack.stack.api()
    try:
        before = api.status()["items_in_history"]
        api.item_add(BPlan("count", ["ge"], num=1, md={"sample": "fe"}))
        api.queue_start()
        wait_for_status(api, lambda s: s["items_in_history"] > before and s["items_in_queue"] == 0
                        and s["manager_state"] == "idle", timeout=120, what="the queued count to finish")
        item = api.history_get()["items"][-1]
    finally:
        api.close()
    assert item["name"] == "count" and item["result"]["exit_status"] == "completed", item["result"]
    (uid,) = item["result"]["run_uids"]

    run = open_catalog(stack.catalog)[uid]
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert start["plan_name"] == "count" and start["detectors"] == ["ge"] and start["num_points"] == 1
    assert start["profile"] == "sim" and start["sample"] == "fe"  # the profile's RunEngine, its md and the item's
    assert stop["exit_status"] == "success"
    primary = run["primary"].read()
    assert primary.sizes["time"] == 1 and any(name.startswith("ge") for name in primary.data_vars)


@needs_redis
def test_the_adaptive_plans_run_from_plain_parameters_as_the_agents_group(stack):
    """``BPlan("adaptive_compton", target_std=...)``, ``BPlan("adaptive_xas", target_rmse=...)`` and the other
    techniques' adaptive plans (XPS, fly XAS, SAXS, XAS imaging) are complete requests: devices from the profile's
    names (``plans.registry``), the agent built inside the plan from the parameters (a fresh one per item: the
    second Compton run does not inherit the first's cycles), the stop reason and the posterior stream in the
    catalog, ``agent_suggestion_uid`` from ``md``. An agent named over the queue is refused by the plan in one line;
    nothing is counted.
    """
    from bluesky_queueserver_api import BPlan

    from bayesbeam.catalog import open_catalog

    items = [BPlan("adaptive_compton", target_std=1e-6, max_cycles=2,
                   md={"sample": "fe", "agent_suggestion_uid": "s1"}),
             BPlan("adaptive_compton", target_std=1e-6, max_cycles=3, md={"sample": "fe"}),
             BPlan("adaptive_xas", quantity="fractions", components=["Fe-foil", "a-Fe2O3"], target_std=1e-6,
                   max_points=5, exclude="Fe3O4", md={"sample": "Fe3O4"}),
             BPlan("adaptive_xps", max_sweeps=1, analysis="0.1", md={"sample": "CeO2-full"}),  # 0.1: seconds, not 30 s
             BPlan("adaptive_fly_xas", quantity="edge_position", target_std=1e-6, max_sweeps=1, exclude="Fe3O4"),
             BPlan("adaptive_saxs", stop="kde", exposure_s=0.01, max_frames=8, md={"sample": "silica-50nm"}),
             BPlan("adaptive_xas_imaging", max_passes=1, n_flat=2, n_dark=2),
             BPlan("adaptive_compton", agent="spin_moment_agent")]
    api = stack.stack.api(user_group=AGENTS_GROUP, user="test agent")
    try:
        before = api.status()["items_in_history"]
        for item in items:
            api.item_add(item)
        api.queue_start()
        wait_for_status(api, lambda s: s["items_in_history"] >= before + len(items)
                        and s["manager_state"] == "idle", timeout=300, what="the queued adaptive plans to finish")
        done = api.history_get()["items"][before:]
        left = api.queue_get()["items"]
        api.queue_clear()  # the queue server puts a failed item back at the front of the queue
    finally:
        api.close()
    assert [item["kwargs"].get("agent") for item in left] in ([], ["spin_moment_agent"])
    results = [item["result"] for item in done]
    assert [r["exit_status"] for r in results] == ["completed"] * 7 + ["failed"], results
    assert "agent must be an agent object" in results[7]["msg"] and not results[7]["run_uids"]
    catalog = open_catalog(stack.catalog)
    runs = [catalog[r["run_uids"][0]] for r in results[:7]]
    stops = [run.metadata["stop"]["reason"] for run in runs]
    assert stops[:3] == ["budget: cycles = 2 reached the limit 2", "budget: cycles = 3 reached the limit 3",
                         "budget: points = 5 reached the limit 5"]
    assert stops[3].startswith(("budget", "model_decided"))  # one sweep may decide the model
    assert runs[3].metadata["start"]["agent_config"]["analysis"] == "0.1"  # the queued parameter reached the agent
    assert [run["posterior"].read().sizes["time"] for run in runs[:5]] == [2, 3, 5, 1, 1]
    saxs = runs[5]["posterior"].read()
    assert stops[5].startswith("kde_converged") and int(saxs["sample_frames"][-1]) >= 2  # the queue's own sim profile
    assert runs[5]["primary"].read()["saxs_det_image"].shape[1:] == (619, 487)  # the frames themselves are stored
    assert stops[4].startswith("budget: cycles = 1") and "edge_position_std" in runs[4]["posterior"].read()
    # imaging: 2 darks, then 2 flats and an image at each of the designed energies, one pass on the profile's
    # 256² detector, the devices by the plan's default names
    imaging = runs[6]["posterior"].read()
    assert stops[6].startswith(("classification_decided", "budget")) and int(imaging["passes"][-1]) == 1
    n_e = int(imaging["energies"][-1])
    assert runs[6]["primary"].read()["imaging_det_image"].shape == (2 + 3 * n_e, 256, 256)
    first, second, xas = (run.metadata["start"] for run in runs[:3])
    assert first["agent_suggestion_uid"] == "s1" and first["detectors"] == ["ge"] and first["motors"] == ["magnet"]
    assert first["plan_args"]["target_std"] == 1e-6 and first["agent_config"]["element"] == "Fe"
    assert first["validity"]["ring_minimum"] == "ring_minimum"  # the profile's ring, by its default name
    assert list(runs[1]["posterior"].read()["cycles"].values) == [1, 2, 3]  # a new agent, not the first one's
    assert xas["detectors"] == ["i0", "it"] and "Fe3O4" not in xas["agent_config"]["prior"]["standards"]
    assert xas["agent_config"]["quantity"] == {"name": "fractions", "components": ["Fe-foil", "a-Fe2O3"],
                                               "calibration_eV": pytest.approx(2.477, abs=0.01)}
    assert "fraction_a-Fe2O3_std" in runs[2]["posterior"].read()


@needs_redis
def test_a_campaign_finds_the_curie_temperature_through_the_queue_and_carries_on_after_a_restart(stack, tmp_path):
    """``bayesbeam campaign run profiles/campaigns/fe_curie.toml``: each run an adaptive Compton run at the
    temperature and target std the campaign decided, queued as the agents' group; every decision and observation
    in the catalog's campaign record; T_c (1043 K in the simulator) to ±5 K. Run again, the campaign rebuilds its
    posterior from the catalog, is already at its target, and queues nothing."""
    from bayesbeam.catalog import find_runs, open_catalog
    from bayesbeam.cli import main
    from bayesbeam.queue.stack import PROFILES_DIR

    config = PROFILES_DIR / "campaigns" / "fe_curie.toml"
    out = tmp_path / "curie.json"
    result = CliRunner().invoke(main, ["campaign", "run", str(config), "--state-dir", str(stack.state),
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["tc_std"] <= 5.0 and abs(data["tc_mean"] - 1043.0) < 4 * data["tc_std"], data
    assert data["stop_reason"].startswith("target_std: std(tc)")
    catalog = open_catalog(stack.catalog)
    runs = list(find_runs(catalog, campaign="fe_curie", plan_name="adaptive_compton").values())
    record = catalog[data["record_uid"]]
    decisions, observations = record["decisions"].read(), record["observations"].read()
    assert len(runs) == data["runs"] == observations.sizes["time"] == decisions.sizes["time"]
    for run, suid, temperature in zip(runs, decisions["agent_suggestion_uid"].values,
                                      decisions["temperature_k"].values, strict=True):
        start = run.metadata["start"]
        assert start["agent_suggestion_uid"] == suid and start["sample_temperature_k"] == temperature
        assert start["plan_args"]["target_std"] in decisions["target_std"].values
    assert record.metadata["stop"]["reason"] == data["stop_reason"]
    assert float(observations["tc_std"][-1]) == pytest.approx(data["tc_std"])

    api = stack.stack.api()
    try:
        before = api.status()["items_in_history"]
    finally:
        api.close()
    again = CliRunner().invoke(main, ["campaign", "run", str(config), "--state-dir", str(stack.state),
                                      "--json", str(out)])
    assert again.exit_code == 0, again.output
    rebuilt = json.loads(out.read_text())
    assert rebuilt["runs"] == data["runs"] and rebuilt["tc_mean"] == pytest.approx(data["tc_mean"])
    assert catalog[rebuilt["record_uid"]].metadata["start"]["continue_from"] == data["record_uid"]
    api = stack.stack.api()
    try:
        assert api.status()["items_in_history"] == before  # nothing queued again
    finally:
        api.close()


@needs_redis
def test_the_review_gate_queues_only_what_a_person_approved(stack, tmp_path):
    """``--review``: the campaign proposes and waits; nothing is queued until ``bayesbeam campaign approve N``
    (here edited to 1000 K), and ``refuse N`` ends the campaign with the person's reason; both answers are in
    the campaign's decisions stream."""
    import threading

    from bayesbeam.campaign.config import load_config
    from bayesbeam.campaign.review import proposals
    from bayesbeam.campaign.runner import CampaignRunner
    from bayesbeam.catalog import find_runs, open_catalog
    from bayesbeam.cli import main
    from bayesbeam.session import CatalogWriter

    config_file = tmp_path / "review.toml"
    config_file.write_text('[campaign]\nname = "fe_curie_review"\nmax_runs = 5\n')
    config, catalog, review = load_config(config_file), open_catalog(stack.catalog), tmp_path / "review_state"
    api = stack.stack.api(user_group=AGENTS_GROUP, user="campaign test")
    runner = CampaignRunner(config, api, catalog, CatalogWriter(catalog), echo=lambda line: None, poll_s=0.1,
                            review=True, state_dir=review)
    before = api.status()["items_in_history"]
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run()), daemon=True)
    thread.start()

    def proposal(n):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(proposals(config.name, review)) < n:
            time.sleep(0.1)
        return proposals(config.name, review)[n - 1]

    try:
        first = proposal(1)
        assert first["status"] == "proposed" and api.status()["items_in_history"] == before
        assert api.queue_get()["items"] == []  # nothing queued without approval
        out = CliRunner().invoke(main, ["campaign", "approve", str(config_file), "1", "--state-dir", str(review),
                                        "--temperature-k", "2000"])  # the controller cannot: refused, unchanged
        assert out.exit_code == 1 and "outside the sample temperature range 10-1200 K" in out.output, out.output
        assert proposals(config.name, review)[0]["status"] == "proposed"
        out = CliRunner().invoke(main, ["campaign", "approve", str(config_file), "1", "--state-dir", str(review),
                                        "--temperature-k", "1000"])
        assert out.exit_code == 0, out.output
        second = proposal(2)
        out = CliRunner().invoke(main, ["campaign", "refuse", str(config_file), "2", "--state-dir", str(review),
                                        "--why", "enough for today"])
        assert out.exit_code == 0, out.output
        thread.join(timeout=120)
    finally:
        api.close()
    assert outcome["result"].stop_reason == "proposal 2 refused: enough for today" and second["n"] == 2
    (run,) = find_runs(catalog, campaign=config.name, plan_name="adaptive_compton").values()
    assert run.metadata["start"]["sample_temperature_k"] == 1000.0
    decisions = catalog[outcome["result"].record_uid]["decisions"].read()
    assert list(decisions["review"].values) == ["approved", "refused"]
    queued = np.asarray(decisions["queued_temperature_k"].values, float)
    assert queued[0] == 1000.0 and np.isnan(queued[1])
    out = CliRunner().invoke(main, ["campaign", "approve", str(config_file), "2", "--state-dir", str(review)])
    assert out.exit_code == 1 and "already refused" in out.output


@needs_redis
def test_the_campaign_watchdog_resumes_a_run_whose_worker_was_killed(stack, tmp_path):
    """The worker is SIGKILLed during a campaign's run (the manager goes on saying a plan runs): the watchdog
    notices, reopens the environment, and continues the interrupted run in a new run with ``continue_from`` and
    the same ``agent_suggestion_uid`` and temperature: the cycles already counted are not counted again and the
    run reaches its budget; nothing else is queued."""
    from bluesky_queueserver_api import BPlan

    from bayesbeam.campaign.config import load_config
    from bayesbeam.campaign.runner import CampaignRunner
    from bayesbeam.catalog import backup_directory, find_runs, open_catalog, run_status
    from bayesbeam.resume import rebuild_agent
    from bayesbeam.session import CatalogWriter

    config_file = tmp_path / "watchdog.toml"
    config_file.write_text('[campaign]\nname = "fe_curie_watchdog"\n')
    config, catalog = load_config(config_file), open_catalog(stack.catalog)
    api = stack.stack.api(user_group=AGENTS_GROUP, user="campaign test")
    runner = CampaignRunner(config, api, catalog, CatalogWriter(catalog), echo=lambda line: None, poll_s=0.1,
                            stack=stack.stack)
    suid, budget = "watchdog-1", 60  # ~0.15 s a cycle idle: the kill below must land well inside the first run
    runner._md[suid] = md = {"sample": "fe", "campaign": config.name, "agent_suggestion_uid": suid}
    try:
        api.item_add(BPlan("adaptive_compton", target_std=1e-6, max_cycles=budget, temperature_k=300.0, md=md))
        api.queue_start()
        # A cycle counted (in the run's journal, which the worker writes as the RunEngine emits: the catalog's
        # copy lags behind it) and the run in the catalog: kill the worker in the middle of the run.
        deadline, run, counted = time.monotonic() + 120, None, 0
        while time.monotonic() < deadline and not (run is not None and counted >= 1):
            run = run or next(iter(find_runs(catalog, agent_suggestion_uid=suid).values()), None)
            counted = _journalled_posteriors(backup_directory(catalog), agent_suggestion_uid=suid)
            time.sleep(0.05)
        assert run is not None and counted >= 1, "the run never counted a cycle"
        pid = stack.stack.worker_pid()
        os.kill(pid, signal.SIGKILL)
        assert _journalled_posteriors(backup_directory(catalog), agent_suggestion_uid=suid) < budget, \
            "the first run had counted its whole budget before the kill: nothing was left to resume"
        assert runner.wait(suid) is True
        wait_for_status(api, lambda s: s["manager_state"] == "idle" and s["items_in_queue"] == 0, timeout=60,
                        what="the continued run's item to finish")
        history = api.history_get()["items"]
    finally:
        api.close()
    first, second = find_runs(catalog, agent_suggestion_uid=suid).values()
    assert "stop" not in first.metadata and run_status(first) == "interrupted"
    assert second.metadata["start"]["continue_from"] == first.metadata["start"]["uid"]
    assert second.metadata["start"]["sample_temperature_k"] == 300.0  # continued at the temperature it was cut at
    assert second.metadata["stop"]["reason"] == f"budget: cycles = {budget} reached the limit {budget}"
    # what the first run counted: its whole, proven cycles, as the feeder takes them (the worker may have died
    # after a cycle's last spectrum was stored but before its posterior event: that cycle counts, once)
    done = int(rebuild_agent(catalog, first.metadata["start"]["uid"]).agent.cycles)
    assert int(first["posterior"].read()["cycles"][-1]) in (done, done - 1)
    assert done < budget and list(second["posterior"].read()["cycles"].values) == list(range(done + 1, budget + 1))
    ours = [i for i in history if ((i.get("kwargs") or {}).get("md") or {}).get("agent_suggestion_uid") == suid]
    assert [bool(i["kwargs"].get("continue_from")) for i in ours] == [False, True]  # queued once, continued once
    assert ours[-1]["result"]["exit_status"] == "completed"
    assert stack.stack.worker_pid() not in (None, pid)


@needs_redis
def test_a_campaign_waits_for_a_manager_that_was_lost_mid_run_and_queues_nothing_twice(stack, tmp_path):
    """The RE manager process is SIGKILLed while a campaign's run counts (the worker lives on; the manager's
    watchdog starts a new manager, which takes the queue back from Redis): the campaign says once that the
    manager is lost and once that it is back, carries on, and every decision is queued once and measured to its
    end once."""
    import threading

    import psutil

    from bayesbeam.campaign.config import load_config
    from bayesbeam.campaign.runner import CampaignRunner
    from bayesbeam.catalog import backup_directory, find_runs, open_catalog
    from bayesbeam.session import CatalogWriter

    config_file = tmp_path / "lost.toml"
    config_file.write_text('[campaign]\nname = "fe_curie_lost"\nmax_runs = 2\nmax_cycles = 12\n'
                           '[design]\ntarget_stds_mub = [0.002]\n')  # each run counts its 12 cycles
    config, catalog = load_config(config_file), open_catalog(stack.catalog)
    api = stack.stack.api(user_group=AGENTS_GROUP, user="campaign test", timeout=1.0)  # outage > request timeout
    lines: list[str] = []
    runner = CampaignRunner(config, api, catalog, CatalogWriter(catalog), echo=lines.append, poll_s=0.1,
                            stack=stack.stack)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run()), daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 120
        # the first run's RunEngine has counted two cycles (its journal; the catalog lags behind, and a run it
        # shows two cycles of may have counted all of them): kill the manager while the run counts
        while time.monotonic() < deadline and _journalled_posteriors(
                backup_directory(catalog), campaign=config.name, plan_name="adaptive_compton") < 2:
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the campaign's first run never counted two cycles"
        worker = stack.stack.worker_pid()
        (manager,) = [p for p in stack.stack.process("manager").children() if p.pid != worker]
        manager.send_signal(signal.SIGKILL)
        psutil.wait_procs([manager], timeout=10)
        thread.join(timeout=240)
        assert not thread.is_alive(), lines
        wait_for_status(api, lambda s: s["manager_state"] == "idle" and s["items_in_queue"] == 0, timeout=60,
                        what="the last run's item to finish")
        history = api.history_get()["items"]
    finally:
        api.close()
    assert outcome["result"].runs == 2 and outcome["result"].stop_reason.startswith("budget"), lines
    assert sum("is not answering" in line for line in lines) == runner.api.outages >= 1, lines
    assert sum("answers again" in line for line in lines) == runner.api.outages, lines
    decisions = catalog[outcome["result"].record_uid]["decisions"].read()
    suids = list(decisions["agent_suggestion_uid"].values)
    # each decision queued once by the campaign: one queue item per decision (the restarted manager may run an
    # item it took back from Redis again, under the same item uid, or replace the worker once the run is over)
    items: dict[str, set] = {}
    for i in history:
        md = (i.get("kwargs") or {}).get("md") or {}
        if md.get("campaign") == config.name:
            items.setdefault(md["agent_suggestion_uid"], set()).add(i["item_uid"])
    assert len(set(suids)) == 2 and sorted(items) == sorted(suids), (items, suids)
    assert all(len(uids) == 1 for uids in items.values()), items
    for suid in suids:  # and measured to its end once
        finished = [r for r in find_runs(catalog, agent_suggestion_uid=suid).values() if r.metadata.get("stop")]
        assert [r.metadata["stop"]["exit_status"] for r in finished] == ["success"], suid


@needs_redis
def test_a_campaign_opens_a_closed_environment_and_starts_the_run_a_stopped_campaign_left_queued(stack, tmp_path):
    """``bayesbeam queue start`` without ``--open`` leaves the worker environment closed, and a campaign that
    stopped after queueing leaves its run queued: the next campaign opens the environment, starts the queue for
    that run (saying both), learns from it, and queues nothing twice."""
    from bluesky_queueserver_api import BPlan

    from bayesbeam.campaign.config import load_config
    from bayesbeam.campaign.runner import CampaignRunner
    from bayesbeam.catalog import find_runs, open_catalog
    from bayesbeam.session import CatalogWriter

    config_file = tmp_path / "left.toml"
    config_file.write_text('[campaign]\nname = "fe_curie_left"\nmax_runs = 1\nmax_cycles = 3\n')
    config, catalog = load_config(config_file), open_catalog(stack.catalog)
    api = stack.stack.api(user_group=AGENTS_GROUP, user="campaign test")
    lines: list[str] = []
    try:
        api.environment_close()
        wait_for_status(api, lambda s: not s["worker_environment_exists"] and s["manager_state"] == "idle",
                        timeout=120, what="the environment to close")
        md = {"sample": "fe", "campaign": config.name, "agent_suggestion_uid": "left-1"}
        api.item_add(BPlan("adaptive_compton", temperature_k=600.0, target_std=0.05, max_cycles=3, md=md))
        runner = CampaignRunner(config, api, catalog, CatalogWriter(catalog), echo=lines.append, poll_s=0.1)
        result = runner.run()
        wait_for_status(api, lambda s: s["manager_state"] == "idle", timeout=60, what="the item to finish")
        history = api.history_get()["items"]
    finally:
        if not api.status()["worker_environment_exists"]:
            stack.stack.open_environment()
        api.close()
    assert any("environment is closed: opening it" in line for line in lines), lines
    assert any("run left-1 of this campaign is queued but the queue is stopped" in line for line in lines), lines
    assert result.runs == 1 and result.stop_reason == "budget: runs = 1 reached the limit 1"
    ours = [i for i in history if ((i.get("kwargs") or {}).get("md") or {}).get("campaign") == config.name]
    assert len(ours) == 1 and ours[0]["result"]["exit_status"] == "completed"
    (run,) = find_runs(catalog, campaign=config.name, plan_name="adaptive_compton").values()
    assert run.metadata["start"]["sample_temperature_k"] == 600.0


@needs_redis
def test_status_says_what_is_up(stack):
    runner = CliRunner()
    result = runner.invoke(queue, ["status", "--state-dir", str(stack.state)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "up" in lines["redis"] and "started by the stack" in lines["redis"]
    assert "up" in lines["manager"] and stack.control in lines["manager"] and "idle" in lines["manager"]
    assert "open" in lines["environment"] and "idle" in lines["environment"]
    assert str(stack.catalog) in lines["catalog"]

    result = runner.invoke(queue, ["status", "--state-dir", str(stack.state), "--json"])
    status = json.loads(result.output)
    assert status["up"] and status["redis"]["ping"] and status["manager"]["answers"]
    env = status["environment"]
    assert env["exists"] and env["state"] == "idle" and env["re_state"] == "idle"
    assert env["worker_pid"] in {p.pid for p in _family(stack.stack)}  # the worker process is alive
    assert status["profile"] == "sim" and status["startup_dir"].endswith(os.path.join("profiles", "sim", "startup"))
    for name in ("existing_plans_and_devices.yaml", "user_group_permissions.yaml", "manager.pid", "redis.pid"):
        assert (stack.state / name).is_file(), name


@needs_redis
def test_it_listens_on_127_0_0_1_only(stack):
    listening = set()
    for proc in _family(stack.stack):
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == "LISTEN":
                listening.add((conn.laddr.ip, conn.laddr.port))
    assert listening == {("127.0.0.1", port) for port in stack.ports}


@needs_redis
def test_the_agents_group_is_refused_a_stock_plan(stack):
    from bluesky_queueserver_api import BPlan

    api = stack.stack.api(user_group=AGENTS_GROUP, user="test agent")
    try:
        allowed = set(api.plans_allowed()["plans_allowed"])
        assert {"adaptive_compton", "adaptive_xas", "grid_xas"} <= allowed
        assert not allowed & {"count", "scan", "mv", "mvr", "list_scan", "rel_scan", "flip_cycle"}
        with pytest.raises(api.RequestFailedError, match="not in the list of allowed plans"):
            api.item_add(BPlan("mv", "mono", 7100.0))
    finally:
        api.close()


@needs_redis
def test_start_when_up_says_so(stack):
    result = CliRunner().invoke(queue, ["start", "--state-dir", str(stack.state)])
    assert result.exit_code == 0 and "already up" in result.output, result.output


@needs_redis
def test_stop_does_not_cut_a_running_plan_short(stack):
    from bluesky_queueserver_api import BPlan

    api = stack.stack.api()
    try:
        api.item_add(BPlan("count", ["ge"], num=10_000, delay=0.5))
        api.queue_start()
        wait_for_status(api, lambda s: s["re_state"] == "running", timeout=60, what="the long count to run")
        result = CliRunner().invoke(queue, ["stop", "--state-dir", str(stack.state)])
        assert result.exit_code != 0 and "a plan is running" in result.output, result.output
        assert stack.stack.status()["environment"]["re_state"] == "running"  # untouched
        api.re_pause(option="immediate")
        wait_for_status(api, lambda s: s["manager_state"] == "paused", timeout=60, what="the count to pause")
        api.re_abort()
        wait_for_status(api, lambda s: s["manager_state"] == "idle", timeout=60, what="the count to abort")
        api.queue_clear()
    finally:
        api.close()


@needs_redis
@pytest.mark.stops_queue_stack
def test_stop_leaves_no_process_and_no_listening_socket(stack):
    import psutil

    family = _family(stack.stack)
    result = CliRunner().invoke(queue, ["stop", "--state-dir", str(stack.state)])
    assert result.exit_code == 0, result.output
    assert result.output.index("closing the worker environment") < result.output.index("stopping the RE manager") \
        < result.output.index("stopping Redis")
    for proc in family:
        try:
            assert proc.status() == psutil.STATUS_ZOMBIE, f"{proc.pid} {proc.cmdline()} is still running"
        except psutil.NoSuchProcess:
            pass
    for port in stack.ports:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    assert not any((stack.state / name).exists() for name in ("manager.pid", "redis.pid", "stack.json"))
