"""The check of one flip cycle given to ``SpinMomentAgent.ingest``, before it touches the agent.

A cycle is ``spectra`` (m, channels) counts, ``fields`` (m,) field signs and ``monitors`` (m,)
incident-beam monitor counts, optionally ``live_s`` (m,) the detector's live time of each count (s),
``count_time_s`` and ``beamtime_s`` (s). It is refused
with one ``InvalidCycle`` line naming the cycle, the spectrum and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.core.words import plain


class InvalidCycle(ValueError):
    """A flip cycle the spin-moment agent refused; the agent is exactly as it was before it."""


def _channels(n) -> str:
    return f"{int(n)} channel{'' if n == 1 else 's'}"


def _array(point: Mapping, key: str, what: str, fail) -> np.ndarray:
    if key not in point:
        fail(f"no {key!r} ({what})")
    try:
        return np.asarray(point[key], dtype=float)
    except (TypeError, ValueError):
        fail(f"{key} are not numbers ({what})")


def checked_cycle(point: Any, n_channels: int, label):
    """``(spectra, fields, monitors, live)`` of ``point`` as float arrays (``live`` None when not given), or
    ``InvalidCycle`` ("cycle ``label`` refused …"): spectra (m ≥ 1, ``n_channels``) of finite, non-negative
    counts, not all zero; one field sign (+1 or −1) and one finite positive monitor count per spectrum, and
    one finite positive live time if given; both field directions; ``count_time_s`` and ``beamtime_s`` (s),
    when given, finite and ≥ 0."""

    def fail(problem: str):
        raise InvalidCycle(f"cycle {label} refused (the agent is unchanged): {problem}")

    if not isinstance(point, Mapping):
        fail(f"a cycle is a dict of spectra, fields and monitors, got {type(point).__name__}")
    spectra = _array(point, "spectra", f"counts, one row of {n_channels} channels per spectrum", fail)
    fields = _array(point, "fields", "field signs +1/−1, one per spectrum", fail)
    monitors = _array(point, "monitors", "incident-beam monitor counts, one per spectrum", fail)
    if spectra.ndim != 2 or spectra.shape[0] == 0 or spectra.shape[1] != n_channels:
        fail(f"spectra must be (spectra, {n_channels} channels), got shape {spectra.shape}")
    m = spectra.shape[0]
    live = _array(point, "live_s", "live time of each count, s", fail) if "live_s" in point else None
    for values, name in ((fields, "field signs"), (monitors, "monitor counts"), (live, "live times")):
        if values is not None and values.shape != (m,):
            fail(f"{m} spectra but {values.size} {name} (shape {values.shape})")
    for k in range(m):
        row = spectra[k]
        bad = ~np.isfinite(row)
        if bad.any():
            ch = int(np.argmax(bad))
            fail(f"spectrum {k} has non-finite counts ({row[ch]:g} in channel {ch}; {_channels(bad.sum())})")
        if (row < 0).any():
            ch = int(np.argmin(row))
            fail(f"spectrum {k} has negative counts ({row[ch]:g} in channel {ch}; {_channels((row < 0).sum())}): "
                 "counts are never negative")
        if not row.any():
            fail(f"spectrum {k} is empty (0 counts in all {n_channels} channels): the detector did not count")
        if fields[k] not in (1.0, -1.0):
            fail(f"spectrum {k} has field sign {fields[k]:g}: it must be +1 or −1")
        if not (np.isfinite(monitors[k]) and monitors[k] > 0):
            fail(f"spectrum {k} has monitor {monitors[k]:g}: it must be a finite positive count")
        if live is not None and not (np.isfinite(live[k]) and live[k] > 0):
            fail(f"spectrum {k} has live time {live[k]:g} s: it must be finite and positive")
    if not ((fields > 0).any() and (fields < 0).any()):
        fail(f"a cycle needs spectra of both field directions, got signs {[int(f) for f in fields]}")
    for key in ("count_time_s", "beamtime_s"):
        if key in point:
            try:
                value = float(point[key])
            except (TypeError, ValueError):
                value = np.nan
            if not (np.isfinite(value) and value >= 0):
                fail(f"{key} {plain(point[key])} is not a finite time ≥ 0 s")
    return spectra, fields, monitors, live
