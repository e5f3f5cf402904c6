"""Adaptive SAXS plan: 2-D detector frames one after another until the SAXS agent stops the run.

Sequence: one frame each of the empty cell, the calibration standard and the buffer (transmission reference,
absolute scale, solvent), then the agent's choice after every frame: the next frame on the sample or the buffer,
and its exposure. Streams: ``primary`` (one event per frame: the image, the incident-beam and transmitted-beam
counts, the cell readback before and after the frame, the ring's minimum over it, the run's beamtime, the plan's
bookkeeping ``frame``, ``kind``, ``cell_requested_mm``, ``exposure_s``), ``frames`` (bookkeeping: valid or
discarded and why, beamtime; the only record of a frame a device fault lost), ``posterior`` (the agent's report
after each frame: KDE divergence and threshold, the form-factor parameters with intervals, model probabilities,
the next frame, the stop decision). The stop reason goes into the stop document's ``reason``. The agent is fed
from this run's own documents through ``agent.feeders.SAXSFeeder``: a frame is ingested only if its stored
reading proves it (``agent.feeders.frame_problem``; keys in the start document's ``validity``).
"""

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable

from agent.feeders import SAXS_RULE, SAXSFeeder, frame_problem, saxs_geometry_config
from agent.saxs import SAXSAgent, saxs_agent
from plans.core import (
    DEVICE_FAULTS,
    CountGuard,
    RingWindow,
    RunBeamtime,
    ValuesReadable,
    agent_arg,
    check_ring,
    plan_agent,
    plan_devices,
    ring_spec,
    start_md,
    wait_for_beam,
    watched_fields,
)

#: The cell's slots, measured in this order before the agent chooses: transmission reference, absolute
#: scale, solvent.
CALIBRATION = ("empty", "standard", "buffer")
KINDS = ("sample", "buffer", "standard", "empty")


def _stated(cell, attr: str) -> Any:
    """The cell's ``attr``: a mapping, or a signal holding one or its JSON (``None`` if it states none)."""
    value = getattr(cell, attr, None)
    if callable(getattr(value, "get", None)) and not isinstance(value, Mapping):
        value = value.get()
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


def cell_slots(cell, slots: Mapping[str, float] | None = None) -> dict[str, float]:
    """Positions (mm) of the cell's slots ``sample``, ``buffer``, ``standard``, ``empty``: ``slots`` if given,
    else the cell's own (its ``slots``: a mapping, or a configuration signal holding its JSON). ``ValueError``
    (one line) if one is missing."""
    given = slots if slots is not None else _stated(cell, "slots")
    if not isinstance(given, Mapping):
        raise ValueError(f"adaptive_saxs: cell {getattr(cell, 'name', cell)!r} states no slot positions; give "
                         f"slots={{'sample': mm, 'buffer': mm, 'standard': mm, 'empty': mm}}")
    missing = [k for k in KINDS if k not in given]
    if missing:
        raise ValueError(f"adaptive_saxs: no position for the cell slot(s) {', '.join(missing)} (mm)")
    out = {k: float(given[k]) for k in KINDS}
    if not all(np.isfinite(v) for v in out.values()):
        raise ValueError(f"adaptive_saxs: cell slot positions must be finite numbers (mm), got {out}")
    return out


def calibrate_from_cell(agent, cell) -> None:
    """What the cell's ``contents`` (a mapping or its JSON: ``sim_devices.saxs.stage.cell_contents``) says the
    agent needs for the absolute scale, when the agent was not told: the standard's dΣ/dΩ(q) (cm⁻¹; given as
    ``dsdo0_cm·exp(−(q·rg_nm)²/3)``, tabulated on 200 q from 1e-3 to 10 nm⁻¹) and thickness (mm), and the sample's
    path (mm). Nothing when the agent has a standard already or the cell states no contents."""
    contents = _stated(cell, "contents") or {}
    standard, sample = contents.get("standard") or {}, contents.get("sample") or {}
    if getattr(agent, "standard_dsdo", "given") is not None or not {"dsdo0_cm", "rg_nm"} <= set(standard):
        return
    q = np.geomspace(1e-3, 10.0, 200)
    known = float(standard["dsdo0_cm"]) * np.exp(-((q * float(standard["rg_nm"])) ** 2) / 3)
    agent.calibrate([q.tolist(), known.tolist()], standard.get("thickness_mm"), sample.get("path_mm"))


def _exposure_signal(det):
    """The detector's exposure-time signal (s): ``exposure_time`` (or an area detector's ``acquire_time``)."""
    for attr in ("exposure_time", "acquire_time", "count_time"):
        sig = getattr(det, attr, None)
        if sig is not None and callable(getattr(sig, "set", None)):
            return sig
    return None


def _configuration_values(det) -> dict[str, Any]:
    return {k: v["value"] for k, v in det.read_configuration().items()}


def _positive_exposure(value: Any, where: str) -> float:
    try:
        exposure = float(value)
    except (TypeError, ValueError):
        exposure = float("nan")
    if not (np.isfinite(exposure) and exposure > 0):
        raise ValueError(f"{where}: exposure must be > 0 s, got {value!r}")
    return exposure


def adaptive_saxs(detectors: Sequence[Readable] = ("saxs_det",), cell: Movable = "cell_x",
                  agent: SAXSAgent | None = None, *, stop: str | None = None, quantity: str | None = None,
                  target_std: float | None = None, precision: float | None = None, max_frames: int | None = None,
                  exposure_s: float | None = None, q_range: list[float] | None = None, mask_file: str | None = None,
                  slots: dict[str, float] | None = None, ring: Readable | None = "ring",
                  beamtime: Readable | None = "beamtime", beam_floor_ma: float = 10.0, beam_poll_s: float = 1.0,
                  cell_tolerance_mm: float = 0.05, max_consecutive_failures: int = 3,
                  continue_from: str | None = None, md: dict[str, Any] | None = None):
    """Frame, reduce, ingest, decide, repeat until the agent stops the run.

    ``detectors``: the 2-D pixel detector first (fields ``<det>_image``, ``<det>_i0``, ``<det>_transmitted``,
    ``<det>_elapsed_s``; its geometry in its configuration, ``agent.feeders.saxs_geometry_config``), others read
    with it. ``cell``: the sample-cell stage (mm) with the slots ``sample``, ``buffer``, ``standard``, ``empty``
    (``slots``: their positions, mm; default the stage's own). Devices or their names (``plans.registry``; the
    defaults are the profiles' names). The agent: ``agent``, a ``SAXSAgent`` object (an IPython session's); or, as
    a queued plan gives it, its parameters (``agent.saxs_agent``): ``stop`` = ``"kde"`` (the pattern's density has
    converged to the relative ``precision`` per resolution element, default 0.01) or ``"posterior"`` (the
    posterior std of ``quantity``, default ``radius``, reaches ``target_std``, its unit: nm), or after
    ``max_frames``; ``exposure_s`` per frame (s), ``q_range`` ``[q_min, q_max]`` (nm⁻¹), ``mask_file`` (a
    fabio-readable mask, non-zero = masked); or, with ``continue_from`` and neither, the stored run's agent
    rebuilt from the catalog. ``beamtime``: readable of the elapsed beamtime (s), stored as beamtime since the
    run's start. ``ring``: a ring that reports its minimum over each frame (``plans.core.check_ring``); with
    one, the plan waits for beam (≥ ``beam_floor_ma`` mA, polled every ``beam_poll_s`` wall s) before each
    frame and a frame counts only if the ring's minimum during it was at or above the floor.

    The agent is configured with the detector's geometry (its q-range, mask checked) before anything moves, and,
    if it has no standard, with what the cell states it holds (``calibrate_from_cell``: absolute scale).
    The empty cell, the standard and the buffer are measured once each (a discarded one again), then the agent's
    suggestions (``agent.suggest``: ``{"cell": "sample" | "buffer", "exposure_s": s}``). A frame
    is ingested only if its stored readings prove it: cell readback before and after within
    ``cell_tolerance_mm`` (mm) of the requested slot, the ring minimum, the detector's elapsed time ≥ 95 % of
    the exposure, a finite image with counts and a positive i0. Otherwise it is stored and registered with the
    agent as a failure; ``max_consecutive_failures`` in a row abort the run. A checkpoint precedes each move: a
    pause or suspension replays from there (cell moved again, frame exposed afresh).
    """
    detectors, cell, ring, beamtime = plan_devices("adaptive_saxs", detectors, cell, ring, beamtime)
    det = detectors[0]
    params = {"stop": stop, "quantity": quantity, "target_std": target_std, "precision": precision,
              "max_frames": max_frames, "exposure_s": exposure_s,
              "q_range": q_range if q_range is None else [float(q) for q in q_range], "mask": mask_file}
    agent, continue_from = plan_agent("adaptive_saxs", agent, continue_from, saxs_agent, params)
    positions = cell_slots(cell, slots)
    if int(max_consecutive_failures) < 1:
        raise ValueError("max_consecutive_failures must be >= 1")
    if not (np.isfinite(cell_tolerance_mm) and cell_tolerance_mm > 0):
        raise ValueError(f"cell tolerance must be > 0 mm, got {cell_tolerance_mm!r}")
    check_ring(ring)
    exposure_sig = _exposure_signal(det)
    if exposure_sig is None:
        raise TypeError(f"adaptive_saxs: detector {det.name!r} has no exposure_time signal")
    default_exposure = _positive_exposure(getattr(agent, "exposure_s", 1.0), "adaptive_saxs")
    agent.configure(saxs_geometry_config(_configuration_values(det), det.name))  # q-range and mask, before motion
    calibrate_from_cell(agent, cell)
    plan_args = {"detectors": list(map(repr, detectors)), "cell": repr(cell), "agent": agent_arg(agent),
                 **{k: v for k, v in params.items() if k != "mask"}, "mask_file": mask_file, "slots": positions,
                 "ring": repr(ring) if ring is not None else None,
                 "beamtime": repr(beamtime) if beamtime is not None else None, "beam_floor_ma": beam_floor_ma,
                 "beam_poll_s": beam_poll_s, "cell_tolerance_mm": cell_tolerance_mm,
                 "max_consecutive_failures": max_consecutive_failures, "continue_from": continue_from}
    run_bt = RunBeamtime(beamtime) if beamtime is not None else None
    spec = {"rule": SAXS_RULE, "detectors": [det.name], "image": f"{det.name}_image", "i0": f"{det.name}_i0",
            "transmitted": f"{det.name}_transmitted", "kind": "kind", "kinds": list(KINDS),
            "requested": "cell_requested_mm", "before": "cell_before_mm", "after": "cell_after_mm",
            "tolerance": float(cell_tolerance_mm), "unit": "mm", "label": "cell readback", "exposure": "exposure_s",
            "slots": positions, "beamtime": run_bt.name if run_bt is not None else None,
            **ring_spec(ring, beam_floor_ma)}
    _md = start_md("adaptive_saxs", detectors, [cell], plan_args, ["frame"], agent=agent,
                   continue_from=continue_from, md=md, validity=spec)
    frame = {"frame": 0, "kind": "", "cell_requested_mm": float("nan"), "exposure_s": 0.0}
    frame_state: dict[str, Any] = {"frame": 0, "kind": "", "valid": True, "reason": "", "beamtime_s": 0.0}
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "next_kind": CALIBRATION[0],
                                "next_exposure_s": default_exposure, "frame_problem": ""}
    info = ValuesReadable("frame", lambda: frame, hints=("frame",))
    status = ValuesReadable("frames", lambda: frame_state)
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision}, hints=watched_fields(agent))
    guard = CountGuard("cell", cell, "cell_before_mm", "cell_after_mm", "mm")
    readables = [guard] + ([RingWindow(ring)] if ring is not None else []) + [cell, *detectors, info] \
        + ([run_bt] if run_bt is not None else [])

    calibration = list(CALIBRATION)  # still to measure (a discarded calibration frame is measured again)

    def suggested() -> tuple[str, float]:
        (suggestion,) = agent.suggest(1)
        kind = str(suggestion.get("cell", suggestion.get("kind", "")))
        if kind not in ("sample", "buffer"):
            raise ValueError(f"adaptive_saxs: the agent asked for a frame on {kind!r}, not the sample or the buffer")
        return kind, _positive_exposure(suggestion.get("exposure_s", default_exposure), "adaptive_saxs suggestion")

    def run():
        yield from bps.open_run(md=_md)
        if run_bt is not None:
            yield from bps.rd(run_bt)  # the zero of the run's beamtime
        failures, reason = 0, None
        kind, exposure = calibration[0], default_exposure
        for n in itertools.count(1):
            target = positions[kind]
            frame.update(frame=n, kind=kind, cell_requested_mm=target, exposure_s=exposure)
            reading = None
            try:
                yield from bps.checkpoint()  # a resume replays from here: exposure and cell are set again
                yield from bps.mv(exposure_sig, exposure)
                yield from bps.mv(cell, target)
                if ring is not None:
                    yield from wait_for_beam(ring, beam_floor_ma, beam_poll_s, trigger_first=False)
                reading = yield from bps.trigger_and_read(readables)  # SAXSFeeder judges and ingests it here
                yield from bps.checkpoint()  # never replay a saved event
                problem = frame_problem({k: v["value"] for k, v in reading.items()}, spec)  # as SAXSFeeder
            except DEVICE_FAULTS as exc:
                problem = f"device fault on frame {n} ({kind}: {type(exc).__name__}: {exc})"
            if reading is not None and run_bt is not None:
                bt = float(reading[run_bt.name]["value"])
            else:
                bt = float((yield from bps.rd(run_bt))) if run_bt is not None else float("nan")  # never raises
            frame_state.update(frame=n, kind=kind, valid=not problem, reason=problem, beamtime_s=bt)
            yield from bps.trigger_and_read([status], name="frames")
            failures = 0 if not problem else failures + 1
            if not problem and calibration and kind == calibration[0]:
                calibration.pop(0)
            stop, reason = agent.should_stop()
            if not stop:
                kind, exposure = (calibration[0], default_exposure) if calibration else suggested()
            decision.update(stop=bool(stop), stop_reason=reason or "", next_kind="" if stop else kind,
                            next_exposure_s=float("nan") if stop else exposure, frame_problem=problem)
            yield from bps.trigger_and_read([report], name="posterior")
            yield from bps.checkpoint()
            if stop:
                break
            if failures >= max_consecutive_failures:
                raise RuntimeError(f"{failures} consecutive SAXS frames discarded; last: {problem}")
        yield from bps.close_run(exit_status="success", reason=reason)
        return reason

    return (yield from bpp.subs_wrapper(run(), SAXSFeeder(agent, detector=det.name)))
