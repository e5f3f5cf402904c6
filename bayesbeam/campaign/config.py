"""A campaign's configuration file (TOML, e.g. ``profiles/campaigns/fe_curie.toml``), checked before anything is
queued: one line per problem."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesbeam.queue.stack import AGENTS_GROUP, DEFAULT_ZMQ_CONTROL_ADDR


class CampaignConfigError(ValueError):
    """A configuration that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class CampaignConfig:
    """``name``: the campaign (its runs carry ``md["campaign"] = name``); ``sample`` (the preset); stop when
    std(T_c) ≤ ``target_tc_std_k`` (K) or after ``max_runs`` runs; ``max_cycles``: each run's budget;
    ``design``: ``agent.campaign.DEFAULTS`` overrides; the queue's address, user group, and how long (wall s)
    to wait for one run and for a manager that stopped answering."""

    name: str
    sample: str = "fe"
    target_tc_std_k: float = 5.0
    max_runs: int = 30
    max_cycles: int = 136
    design: dict[str, Any] = field(default_factory=dict)
    control_addr: str = DEFAULT_ZMQ_CONTROL_ADDR
    user_group: str = AGENTS_GROUP
    run_timeout_s: float = 3600.0
    manager_lost_timeout_s: float = 600.0
    path: str = ""


_KEYS = {"campaign": {"name": str, "sample": str, "target_tc_std_k": (int, float), "max_runs": int,
                      "max_cycles": int},
         "queue": {"control_addr": str, "user_group": str, "run_timeout_s": (int, float),
                   "manager_lost_timeout_s": (int, float)}}


def load_config(path: str | Path) -> CampaignConfig:
    """The configuration in ``path``; ``CampaignConfigError`` (one line) for a missing file, bad TOML, an
    unknown section or key, a wrong type or an unusable value."""
    from agent.campaign import DEFAULTS

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CampaignConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignConfigError(f"{path}: not valid TOML ({exc})") from None
    for section in data:
        if section not in (*_KEYS, "design"):
            raise CampaignConfigError(f"{path}: unknown section [{section}] (known: campaign, design, queue)")
    values: dict[str, Any] = {}
    for section, keys in _KEYS.items():
        for key, value in data.get(section, {}).items():
            if key not in keys:
                raise CampaignConfigError(f"{path}: unknown key {key!r} in [{section}] (known: {', '.join(keys)})")
            if not isinstance(value, keys[key]) or isinstance(value, bool):
                raise CampaignConfigError(f"{path}: [{section}] {key} has the wrong type: {value!r}")
            values[key] = value
    design = dict(data.get("design", {}))
    unknown = sorted(set(design) - set(DEFAULTS))
    if unknown:
        raise CampaignConfigError(f"{path}: unknown key(s) in [design]: {', '.join(unknown)} "
                                  f"(known: {', '.join(sorted(DEFAULTS))})")
    if "name" not in values:
        raise CampaignConfigError(f"{path}: [campaign] name is required")
    config = CampaignConfig(**values, design=design, path=str(path))
    for key in ("target_tc_std_k", "run_timeout_s", "manager_lost_timeout_s"):
        if not getattr(config, key) > 0:
            raise CampaignConfigError(f"{path}: {key} must be > 0, got {getattr(config, key)!r}")
    for key in ("max_runs", "max_cycles"):
        if getattr(config, key) < 1:
            raise CampaignConfigError(f"{path}: {key} must be >= 1, got {getattr(config, key)!r}")
    return config
