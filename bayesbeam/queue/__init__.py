"""The queue: bayesbeam's plans run by bluesky-queueserver. ``stack`` brings the local stack (Redis and the RE
manager on 127.0.0.1, a profile as the worker's startup) up and down; ``cli`` is ``bayesbeam queue``."""

from bayesbeam.queue.stack import (
    AGENTS_GROUP,
    DEFAULT_REDIS_ADDR,
    DEFAULT_ZMQ_CONTROL_ADDR,
    DEFAULT_ZMQ_INFO_ADDR,
    PRIMARY_GROUP,
    QueueStack,
    StackError,
    default_state_dir,
    manager_api,
    wait_for_status,
)

__all__ = ["AGENTS_GROUP", "DEFAULT_REDIS_ADDR", "DEFAULT_ZMQ_CONTROL_ADDR", "DEFAULT_ZMQ_INFO_ADDR", "PRIMARY_GROUP",
           "QueueStack", "StackError", "default_state_dir", "manager_api", "wait_for_status"]
