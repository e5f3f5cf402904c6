"""``bayesbeam queue start|status|stop``: the local queue stack (see ``bayesbeam.queue.stack``)."""

from __future__ import annotations

import json

import click

from bayesbeam.queue.stack import (
    DEFAULT_REDIS_ADDR,
    DEFAULT_ZMQ_CONTROL_ADDR,
    DEFAULT_ZMQ_INFO_ADDR,
    QueueStack,
    StackError,
    format_status,
)

STATE_HELP = ("Directory for the stack's pid files, logs, Redis snapshot and generated queue-server files. "
              "Default: $BAYESBEAM_QUEUE_STATE, else $XDG_STATE_HOME/bayesbeam/queue "
              "(~/.local/state/bayesbeam/queue).")
state_dir_option = click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                                envvar="BAYESBEAM_QUEUE_STATE", show_envvar=True, help=STATE_HELP)


@click.group("queue", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def queue():
    """The local queue stack: Redis and bluesky-queueserver's RE manager on 127.0.0.1, a profile as the
    worker's startup code, runs stored in the session's catalog. Queue plans with `qserver` or
    bluesky_queueserver_api's REManagerAPI (user groups: primary, agents)."""


@queue.command("start")
@click.option("--profile", default="sim",
              help="sim, epics, or a profile directory: its startup/NN-*.py files are the worker's startup code.")
@click.option("--catalog", default=None,
              help="Catalog the worker stores runs in: a directory (embedded catalog) or a tiled server URI "
                   "(passed to the worker as $BAYESBEAM_CATALOG). Default: $BAYESBEAM_CATALOG, else "
                   "~/.local/share/bayesbeam/catalog.")
@state_dir_option
@click.option("--redis-addr", default=DEFAULT_REDIS_ADDR,
              help="Redis host:port. If a Redis server answers there it is used (and left running by stop); "
                   "otherwise one is started, bound to 127.0.0.1.")
@click.option("--zmq-control-addr", default=DEFAULT_ZMQ_CONTROL_ADDR, help="The manager's control socket (loopback).")
@click.option("--zmq-info-addr", default=DEFAULT_ZMQ_INFO_ADDR,
              help="The manager's console-output socket (loopback; qserver-console-monitor reads it).")
@click.option("--redis-server", default=None, envvar="BAYESBEAM_REDIS_SERVER", show_envvar=True,
              help="Redis server executable. Default: redis-server on PATH (Debian: apt-get install redis-server).")
@click.option("--permissions", type=click.Path(exists=True, dir_okay=False), default=None,
              help="user_group_permissions.yaml to use. Default: profiles/queue/user_group_permissions.yaml.")
@click.option("--ignore-invalid-plans", is_flag=True,
              help="Leave out plans whose signatures the queue server cannot validate instead of failing.")
@click.option("--open/--no-open", "open_env", default=False,
              help="Also open the worker environment (runs the profile in the worker) and wait until it is idle.")
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0,
              help="Seconds to wait for each step (profile loading, Redis, manager, environment).")
def start(profile, catalog, state_dir, redis_addr, zmq_control_addr, zmq_info_addr, redis_server, permissions,
          ignore_invalid_plans, open_env, timeout):
    """Start Redis, the RE manager with PROFILE as its startup, and optionally the worker environment."""
    stack = QueueStack(state_dir)
    try:
        started = stack.start(profile=profile, catalog=catalog, redis_addr=redis_addr,
                              zmq_control_addr=zmq_control_addr, zmq_info_addr=zmq_info_addr,
                              redis_server=redis_server, permissions=permissions,
                              ignore_invalid_plans=ignore_invalid_plans, open_environment=open_env, timeout=timeout,
                              echo=click.echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    if started:
        click.echo(format_status(stack.status()))


@queue.command("status")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx, state_dir, as_json):
    """Say what is up: Redis (ping), the RE manager (its state, queue and history), the worker environment.
    Exit code 0 when Redis and the manager answer, 3 otherwise."""
    result = QueueStack(state_dir).status()
    click.echo(json.dumps(result, indent=2) if as_json else format_status(result))
    ctx.exit(0 if result["up"] else 3)


@queue.command("stop")
@state_dir_option
@click.option("--force", is_flag=True,
              help="Also when a plan is running: destroy the worker environment (the run is cut short).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, help="Seconds to wait for each part to end.")
def stop(state_dir, force, timeout):
    """Stop what `bayesbeam queue start` started: the worker environment, then the manager, then Redis
    (a Redis that was already running is left alone)."""
    try:
        QueueStack(state_dir).stop(force=force, timeout=timeout, echo=click.echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    queue()
