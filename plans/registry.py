"""Devices by name, for plans queued with plain parameters (bluesky-queueserver), and how a stored run's
agent is rebuilt (for ``continue_from`` without an agent object).

A plan's device parameters default to device names (``"ge"``, ``"magnet"``, ``"ring"``): the queue server
reads defaults with ``ast.literal_eval`` and converts the names it is sent into devices itself, but not the
defaults. The plans resolve a name here; the profile that made the devices registers them
(``register_devices(ge=ge, magnet=magnet, ...)``), so ``plans`` never imports ``profiles``. A device object
passes through unchanged, as in an IPython session.

Rule for the optional devices (the ring, the beamtime): a name given for one must resolve. Their default
names stand for the registered ring and beamtime of the beamline the plan measures on: they resolve (and
must: a missing ring is a configuration error, not a silent run without a beam check) when the plan's
detectors and motor are registered devices (the profile's beamline, a queued plan); with other devices (a
beamline made in plain Python or by a test) they stand for no device, so a ring of another beamline is
never mixed in.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

_DEVICES: dict[str, Any] = {}
_REBUILD: dict[str, Callable[[str], Any]] = {}


class UnknownDevice(ValueError):
    """A device name that no profile registered (one line: the name and the names known)."""


def register_devices(devices: Mapping[str, Any] | None = None, /, **named: Any) -> None:
    """Make ``devices`` (name → device) and ``named`` known to the plans by name; a name given again
    replaces the device (a profile loaded again)."""
    _DEVICES.update(devices or {})
    _DEVICES.update(named)


def registered_devices() -> dict[str, Any]:
    """A copy of the registry (name → device)."""
    return dict(_DEVICES)


def clear_devices() -> None:
    """Forget every registered device (a worker environment closed, a test done)."""
    _DEVICES.clear()


def device(value: Any, role: str) -> Any:
    """``value`` itself, or the device registered under that name; ``UnknownDevice`` naming ``role`` if none."""
    if not isinstance(value, str):
        return value
    try:
        return _DEVICES[value]
    except KeyError:
        known = ", ".join(sorted(_DEVICES)) or "none: no profile has registered its devices"
        raise UnknownDevice(f"{role}: no device named {value!r} (registered: {known})") from None


def devices(values: Any, role: str) -> list:
    """A list of devices from a list of devices or names (a single device or name too)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return [device(values, role)]
    return [device(v, role) for v in values]


def optional_device(value: Any, role: str, default: str, measured_with: Sequence[Any] = ()) -> Any:
    """``None`` for ``None``; else as ``device`` does, except that the ``default`` name stands for no device
    unless every device in ``measured_with`` (the plan's detectors and motor) is registered (the module's
    rule)."""
    if value is None:
        return None
    if isinstance(value, str) and value == default:
        registered = [id(d) for d in _DEVICES.values()]
        if not _DEVICES or not all(id(d) in registered for d in measured_with):
            return None
    return device(value, role)


def register_rebuilder(plan_name: str, rebuild: Callable[[str], tuple[Any, str]]) -> None:
    """``rebuild(uid)`` returns ``(agent, full uid)``: the agent of the stored ``plan_name`` run ``uid`` (full or
    partial) as it stood when that run ended (e.g. ``bayesbeam.resume.rebuild_agent`` on the session's catalog);
    used by a plan given ``continue_from`` and no agent."""
    _REBUILD[plan_name] = rebuild


def rebuilt_agent(plan_name: str, uid: str) -> tuple[Any, str]:
    """``(agent, full uid)`` of run ``uid`` by the registered rebuilder; ``ValueError`` if there is none."""
    if plan_name not in _REBUILD:
        raise ValueError(f"{plan_name}: continue_from={uid!r} needs the stored run's agent: pass the agent, or load "
                         "a profile (it registers how to rebuild agents from its catalog)")
    return _REBUILD[plan_name](uid)
