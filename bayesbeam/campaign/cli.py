"""``bayesbeam campaign run CONFIG``: the campaign agent against the local queue stack (or any manager);
``approve``/``refuse`` its proposals; ``status-page``: the control room's read-only view of it."""

from __future__ import annotations

import json

import click


@click.group()
def campaign():
    """Campaigns: an agent outside the worker that decides the next run from the catalog and queues it."""


@campaign.command("run")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="The queue stack's state directory (its manager address and catalog; default as bayesbeam queue).")
@click.option("--catalog", "location", default=None,
              help="Catalog to learn from and record in (default: the stack's, else the default catalog).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), default=None,
              help="Write tc_mean, tc_std (K), runs, beamtime_s, stop_reason and record_uid as JSON.")
@click.option("--review", is_flag=True,
              help="Propose each run and queue it only once approved: bayesbeam campaign approve|refuse N.")
@click.option("--connect-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="How long to retry (with backoff) a queue manager that does not answer yet (s).")
@click.option("--status-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the read-only status page on 127.0.0.1:PORT while the campaign runs (0: a free port; "
                   "the URL is printed). Default: no page.")
def run_campaign(config_file, state_dir, location, json_file, review, connect_timeout, status_port):
    """Run the campaign in CONFIG_FILE (e.g. profiles/campaigns/fe_curie.toml) to its target: each run is an
    adaptive Compton run queued as the agents' group, stopping on the target std the campaign chose; every
    decision and observation is stored in the catalog (a run with plan_name "campaign"). Restarted, it carries
    on from the campaign's runs in the catalog, and never queues a run while one of its own is queued."""
    from bluesky_queueserver_api.comm_base import RequestFailedError

    from bayesbeam.campaign.link import ManagerLost
    from bayesbeam.campaign.runner import CampaignError, CampaignRunner
    from bayesbeam.catalog import open_catalog
    from bayesbeam.queue.stack import QueueStack, manager_api, manager_status
    from bayesbeam.session import CatalogWriter

    config, stack, control = _campaign_and_stack(config_file, state_dir)
    info = stack.zmq_info_addr if stack else None
    page = None if status_port is None else _status_page(config, control, location or (stack.catalog if stack
                                                                                         else None), status_port)
    api = manager_api(control, info, user_group=config.user_group, user=f"campaign {config.name}")
    try:
        if not _answers(api, manager_status, connect_timeout):  # before the catalog is touched
            raise click.ClickException(f"no queue manager answers at {control} (tried for {connect_timeout:g} s): "
                                       "bayesbeam queue start")
        catalog = open_catalog(location or (stack.catalog if stack else None))
        if page is not None:  # its own catalog client, opened here and now (see StatusSource.open), then served
            page.source.open()
            page.start()
        writer = CatalogWriter(catalog)
        runner = CampaignRunner(config, api, catalog, writer, echo=click.echo, review=review, state_dir=state_dir,
                                stack=QueueStack(state_dir) if stack else None)
        try:
            result = runner.run()
        except (CampaignError, ManagerLost, RequestFailedError) as exc:  # the manager refused: its reason
            runner.record.close(str(exc), exit_status="fail")
            raise click.ClickException(str(exc)) from None
    finally:
        api.close()
        if page is not None:
            page.close()
    click.echo(f"T_c = {result.tc_mean:.1f} ± {result.tc_std:.1f} K after {result.runs} runs, "
               f"{result.beamtime_s / 3600:.2f} h of beamtime; stop: {result.stop_reason}")
    if json_file:
        with open(json_file, "w") as f:
            json.dump(result.as_json(), f, indent=2)


def _campaign_and_stack(config_file, state_dir):
    """``(config, stack, control address)``: the campaign file (one ``Error:`` line if it cannot be run), the local
    stack's configuration in ``state_dir`` (``None`` if none was started there) and the manager to speak to."""
    from bayesbeam.campaign.config import CampaignConfigError, load_config
    from bayesbeam.queue.stack import QueueStack

    try:
        config = load_config(config_file)
    except CampaignConfigError as exc:
        raise click.ClickException(str(exc)) from None
    stack = QueueStack(state_dir).config
    return config, stack, stack.zmq_control_addr if stack else config.control_addr


def _answers(api, manager_status, timeout_s: float) -> bool:
    """Whether the manager answers within ``timeout_s``: retried with backoff (0.5 s doubling to 8 s), since a
    stack being started, or Redis restarting, answers a little later."""
    import time

    deadline, wait = time.monotonic() + timeout_s, 0.5
    while True:
        if manager_status(api) is not None:
            return True
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)
        wait = min(2 * wait, 8.0)


def _status_page(config, control: str, location, port: int):
    """The status page of campaign ``config`` bound to 127.0.0.1:``port`` (its URL printed once; ``start()``
    serves it: requests wait until then), or a one-line error if the port cannot be bound (before anything
    else is touched)."""
    from bayesbeam.campaign.status import StatusSource
    from bayesbeam.campaign.status_page import StatusServer

    source = StatusSource(control, str(location) if location else None, config.name,
                          target_tc_std_k=config.target_tc_std_k)
    try:
        page = StatusServer(source, port)
    except OSError as exc:
        raise click.ClickException(f"status page: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    click.echo(f"status page: {page.url}")
    return page


@campaign.command("status-page")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="As for campaign run.")
@click.option("--catalog", "location", default=None, help="As for campaign run.")
@click.option("--port", type=click.IntRange(0, 65535), default=60630, show_default=True,
              help="Port on 127.0.0.1 (0: a free port).")
def status_page(config_file, state_dir, location, port):
    """Serve the read-only status page of the campaign in CONFIG_FILE on 127.0.0.1 until Ctrl-C: the queue, the
    running plan with its posterior, and the campaign's T_c, observations and decisions, from the same
    manager and catalog as `bayesbeam campaign run` (which may run elsewhere). Only GET is answered; from
    another machine, use an ssh tunnel (ssh -L PORT:127.0.0.1:PORT)."""
    import signal
    import sys
    import threading


    config, stack, control = _campaign_and_stack(config_file, state_dir)
    page = _status_page(config, control, location or (stack.catalog if stack else None), port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # closed as on Ctrl-C
    page.source.open()  # if the catalog does not exist yet, the page says so and tries again at each refresh
    page.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        page.close()


def _review(config_file, n, state_dir, status, **edits):
    from bayesbeam.campaign.config import CampaignConfigError, load_config
    from bayesbeam.campaign.review import ReviewError, decide

    try:
        config = load_config(config_file)
        _check_edits(config, **edits)
        data = decide(config.name, n, status, state_dir, **edits)
    except (CampaignConfigError, ReviewError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"proposal {n} {status}: {data['temperature_k']:g} K to ±{data['target_std']:g} μB")


def _check_edits(config, temperature_k=None, target_std=None, **_) -> None:
    """A person's edit of a proposal is refused (``ReviewError``, nothing changed) if it cannot be run: a
    temperature outside the campaign's controller range (``[design] limits_k``), a target std not > 0."""
    import math

    from agent.campaign import DEFAULTS
    from bayesbeam.campaign.review import ReviewError

    lo, hi = map(float, config.design.get("limits_k", DEFAULTS["limits_k"]))
    if temperature_k is not None and not (math.isfinite(temperature_k) and lo <= temperature_k <= hi):
        raise ReviewError(f"--temperature-k {temperature_k:g} K is outside the sample temperature range "
                          f"{lo:g}-{hi:g} K of campaign {config.name!r}; nothing was changed")
    if target_std is not None and not (math.isfinite(target_std) and target_std > 0):
        raise ReviewError(f"--target-std {target_std:g} μB must be > 0; nothing was changed")


@campaign.command("approve")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.argument("n", type=int)
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="As for campaign run.")
@click.option("--temperature-k", type=float, default=None, help="Queue it at this temperature instead (K).")
@click.option("--target-std", type=float, default=None, help="Queue it with this target std instead (μB).")
def approve(config_file, n, state_dir, temperature_k, target_std):
    """Approve proposal N of the campaign in CONFIG_FILE (run with --review), optionally edited."""
    _review(config_file, n, state_dir, "approved", temperature_k=temperature_k, target_std=target_std)


@campaign.command("refuse")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.argument("n", type=int)
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="As for campaign run.")
@click.option("--why", default="", help="Why (stored with the decision, and the campaign's stop reason).")
def refuse(config_file, n, state_dir, why):
    """Refuse proposal N: nothing is queued and the campaign ends (run it again to carry on)."""
    _review(config_file, n, state_dir, "refused", why=why)
