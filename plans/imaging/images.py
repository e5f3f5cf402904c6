"""Adaptive full-field XAS imaging (issue 15): darks, flats, then passes of images at the designed energies until
the per-pixel classification is decided.

Sequence (``agent.imaging.ImagingAgent.suggest``): ``n_dark`` darks (shutter closed), ``n_flat`` flats at each
energy (shutter open, sample out), then passes of one image per energy (sample in; up in energy, then down).
Every frame is one ``primary`` event holding the detector's full image as measured (so every counted image is in
the catalog; a run holds n_dark + k·n_flat + k·passes frames: at 10⁶ float32 pixels 4 MB each, 12 energies and 10
passes ≈ 1 GB), the monochromator readback before and after the frame, the sample-stage readback before and
after, the shutter state, the ring's minimum over the frame and the run's beamtime, with the plan's bookkeeping
(``frame``, ``kind``, ``pass``, ``energy_requested_ev``, ``suggestion_id``). Streams: ``frames`` (valid or
discarded and why, beamtime; the only record of a frame a device fault lost) and ``posterior`` (the agent's report
after every complete pass: passes, decided and unexplained fractions, classes as JSON, the stop decision). The stop
reason goes into the stop document. The agent is fed from the run's own documents through
``agent.feeders.ImagingFeeder``: a frame is ingested only if its stored readings prove it
(``agent.feeders.imaging_frame_problem``; keys in the start document's ``validity``).
"""

import itertools
import json
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable

from agent.feeders import IMAGING_RULE, ImagingFeeder, imaging_frame_problem
from agent.imaging import ImagingAgent, imaging_agent
from plans.core import (
    DEVICE_FAULTS,
    CountGuard,
    RingWindow,
    RunBeamtime,
    ValuesReadable,
    agent_arg,
    check_ring,
    ring_spec,
    start_md,
    wait_for_beam,
)
from plans.imaging.library import TARGET_ERROR, design_run, imaging_library
from plans.xas.energy_points import _check_range

KINDS = ("dark", "flat", "image")


def _config(det, key: str, default=None):
    sig = getattr(det, key, None)
    return sig.get() if sig is not None and callable(getattr(sig, "get", None)) else default


def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def adaptive_xas_imaging(detectors: Sequence[Readable] = ("imaging_det",), mono: Movable = "mono",
                         agent: ImagingAgent | None = None, *, energies: list[float] | None = None,
                         library: list[str] | None = None, exclude: list[str] | None = None,
                         n0: float | None = None, exposure_s: float | None = None,
                         target_error: float = TARGET_ERROR, decided: float = 0.99, min_passes: int | None = None,
                         max_passes: int = 50, n_flat: int = 10, n_dark: int = 10, scheduler: str = "threads",
                         tile: int = 512, psf_sigma_px: float | None = None, stage: Movable = "sample_x",
                         shutter: Movable = "shutter",
                         ring: Readable | None = "ring", beamtime: Readable | None = "beamtime",
                         beam_floor_ma: float = 10.0, beam_poll_s: float = 1.0, energy_tolerance_ev: float = 0.1,
                         stage_tolerance_mm: float = 0.05, max_consecutive_failures: int = 3,
                         md: dict[str, Any] | None = None):
    """Darks, flats, then passes of images at the agent's energies, classified after every pass, until decided.

    ``detectors``: the full-field detector first (fields ``<det>_image`` in ADU, ``<det>_elapsed_s``; config
    ``exposure_s``, ``n0`` photons per pixel per second), others read with it. ``mono``: the monochromator (eV).
    ``stage``: the sample stage (mm, positions ``"in"``/``"out"``: its ``in_mm``/``out_mm``), moved out for the
    flats; ``shutter``: closed (``"closed"``) for the darks. Devices or their names (``plans.registry``).

    The agent: ``agent``, an ``ImagingAgent`` object (an IPython session's); or, from plain parameters as a queued
    plan gives them: the phases the design and the classifier may use, ``library`` (Fe K-edge standard names;
    default all 61) minus ``exclude``; ``energies`` (eV; default designed for those phases by
    ``agent.imaging.design.design_energies`` at ``n0`` photons per pixel per image — default the detector's ``n0``
    × ``exposure_s`` — to the per-pixel misclassification bound ``target_error``); stop when ``decided`` of the
    pixels have a class posterior ≥ 0.99 after at least ``min_passes`` (default: the passes the design needs for
    ``target_error``, at most ``max_passes``) or after ``max_passes``; ``n_flat`` flats per energy and ``n_dark``
    darks; classification on ``scheduler`` (``agent.imaging.executor_for``) in tiles of ``tile`` px;
    ``psf_sigma_px``: the detector's Gaussian PSF σ (px) as measured (knife edge), for the PSF-aware final
    labelling (``agent.imaging.psf``; default None: per-pixel labels).
    ``exposure_s``: per frame (s; default the detector's). ``ring``: a ring reporting its minimum over each frame
    (``plans.core.check_ring``): the plan waits for beam (≥ ``beam_floor_ma`` mA, polled every ``beam_poll_s``
    wall s) before each flat and image, and they count only with the ring's minimum at or above the floor.

    A frame is ingested only if its stored readings prove it (``agent.feeders.imaging_frame_problem``): the
    monochromator readback before and after within ``energy_tolerance_ev`` of the requested energy (flats and
    images), the stage readback within ``stage_tolerance_mm`` of in (images) or out (flats), the shutter closed
    (darks) or open, the ring minimum, the detector's elapsed time ≥ 95 % of the exposure (a fresh frame) and a
    finite 2-D image of the detector's shape with no row at or below 0 ADU (lost packets). Otherwise it is stored
    and measured again; ``max_consecutive_failures`` in a row abort the run. Bad input (an unknown phase, energies
    outside the monochromator's limits, a bad count) is one ``ValueError`` line before anything moves.
    """
    from plans.registry import device, devices, optional_device

    dets = devices(detectors, "adaptive_xas_imaging detectors")
    det = dets[0]
    mono = device(mono, "adaptive_xas_imaging motor")
    stage = device(stage, "adaptive_xas_imaging stage")
    shutter = device(shutter, "adaptive_xas_imaging shutter")
    measured_with = [*dets, mono]
    ring = optional_device(ring, "adaptive_xas_imaging ring", "ring", measured_with)
    beamtime = optional_device(beamtime, "adaptive_xas_imaging beamtime", "beamtime", measured_with)
    check_ring(ring)
    max_consecutive_failures = _whole(max_consecutive_failures, "max_consecutive_failures", 1)
    checks = [("energy tolerance", energy_tolerance_ev), ("stage tolerance", stage_tolerance_mm),
              ("beam floor", beam_floor_ma)] + ([("psf_sigma_px", psf_sigma_px)] if psf_sigma_px is not None else [])
    for name, value in checks:
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"adaptive_xas_imaging: {name} must be > 0, got {value!r}")
    exposure = float(exposure_s if exposure_s is not None else _config(det, "exposure_s", 1.0))
    if not (np.isfinite(exposure) and exposure > 0):
        raise ValueError(f"adaptive_xas_imaging: exposure must be > 0 s, got {exposure_s!r}")
    photons = float(n0) if n0 is not None else float(_config(det, "n0", 1e4 / exposure)) * exposure
    params = {"energies": energies, "library": library, "exclude": exclude, "n0": n0, "min_passes": min_passes,
              "psf_sigma_px": psf_sigma_px}
    given = {k: v for k, v in params.items() if v is not None}
    design = None
    if agent is not None:
        if not isinstance(agent, ImagingAgent):
            raise TypeError("adaptive_xas_imaging: agent must be an ImagingAgent object (an IPython session's); over "
                            f"the queue give the agent's parameters instead ({', '.join(params)})")
        if given:
            raise ValueError(f"adaptive_xas_imaging: give an agent or its parameters ({', '.join(given)}), not both")
    else:
        max_passes = _whole(max_passes, "max_passes", 1)
        lib = imaging_library(library, exclude or ())
        design = design_run(lib, energies=energies, n0=photons, n_flat=_whole(n_flat, "n_flat", 2),
                            target_error=target_error, max_passes=max_passes)
        passes = design.passes if min_passes is None else _whole(min_passes, "min_passes", 1)
        agent = imaging_agent(design.energies_eV, lib.on(design.energies_eV).T, list(lib.names), decided=decided,
                              min_passes=min(passes, max_passes), max_passes=max_passes, n_flat=n_flat,
                              n_dark=_whole(n_dark, "n_dark", 2), tile=_whole(tile, "tile", 16), scheduler=scheduler,
                              design=design.to_dict(), psf_sigma_px=psf_sigma_px)
    _check_range(mono, agent.energies)
    stage_in, stage_out = stage.target("in"), stage.target("out")
    shape = list(np.asarray(det.image.get()).shape) if hasattr(det, "image") else None
    plan_args = {"detectors": list(map(repr, dets)), "mono": repr(mono), "agent": agent_arg(agent),
                 **{k: v for k, v in params.items()}, "exposure_s": exposure, "target_error": target_error,
                 "decided": decided, "max_passes": max_passes, "n_flat": agent.n_flat, "n_dark": agent.n_dark,
                 "scheduler": agent.scheduler, "tile": agent.tile, "stage": repr(stage), "shutter": repr(shutter),
                 "ring": repr(ring) if ring is not None else None,
                 "beamtime": repr(beamtime) if beamtime is not None else None, "beam_floor_ma": beam_floor_ma,
                 "beam_poll_s": beam_poll_s, "energy_tolerance_ev": energy_tolerance_ev,
                 "stage_tolerance_mm": stage_tolerance_mm, "max_consecutive_failures": max_consecutive_failures}
    run_bt = RunBeamtime(beamtime) if beamtime is not None else None
    shutter_key = shutter.state.name if hasattr(shutter, "state") else None
    spec = {"rule": IMAGING_RULE, "detectors": [det.name], "image": f"{det.name}_image", "shape": shape,
            "kind": "kind", "kinds": list(KINDS), "requested": "energy_requested_ev", "before": "mono_before_ev",
            "after": "mono_after_ev", "tolerance": float(energy_tolerance_ev), "unit": "eV",
            "label": "monochromator readback", "exposure": "exposure_s", "stage_before": "stage_before_mm",
            "stage_after": "stage_after_mm", "stage_in_mm": stage_in, "stage_out_mm": stage_out,
            "stage_tolerance_mm": float(stage_tolerance_mm), "shutter": shutter_key,
            "beamtime": run_bt.name if run_bt is not None else None, **ring_spec(ring, beam_floor_ma)}
    _md = start_md("adaptive_xas_imaging", dets, [mono], plan_args, ["frame"], agent=agent, md=md, validity=spec,
                   energies_eV=agent.energies.tolist(), library_names=agent.library_names,
                   design=design.to_dict() if design is not None else agent.design)
    frame: dict[str, Any] = {"frame": 0, "kind": "", "pass": -1, "energy_requested_ev": float("nan"),
                             "suggestion_id": -1, "exposure_s": exposure}
    frame_state: dict[str, Any] = {"frame": 0, "kind": "", "valid": True, "reason": "", "beamtime_s": 0.0}
    decision: dict[str, Any] = {"stop": False, "stop_reason": "", "classes_json": "[]", "frame_problem": ""}
    info = ValuesReadable("frame", lambda: frame, hints=("frame",))
    status = ValuesReadable("frames", lambda: frame_state)
    report = ValuesReadable("agent", lambda: {**agent.report(), **decision}, hints=("decided_fraction",))
    mono_guard = CountGuard("mono", mono, "mono_before_ev", "mono_after_ev", "eV")
    stage_guard = CountGuard("stage", stage, "stage_before_mm", "stage_after_mm", "mm", interruptions=False)
    readables = [mono_guard, stage_guard] + ([RingWindow(ring)] if ring is not None else []) \
        + [mono, shutter, *dets, info] + ([run_bt] if run_bt is not None else [])
    exposure_sig = getattr(det, "exposure_s", None)

    def classes() -> str:
        post = agent.posterior()
        return json.dumps([{"name": str(n), "pixels": int(p), "fraction": float(f), **m} for n, p, f, m in
                           zip(post.get("classes", []), post.get("class_pixels", []),
                               post.get("class_fractions", []), post.get("matches", []), strict=True)])

    def run():
        yield from bps.open_run(md=_md)
        if run_bt is not None:
            yield from bps.rd(run_bt)
        if exposure_sig is not None:
            yield from bps.mv(exposure_sig, exposure)
        failures, reason, passes_done = 0, None, 0
        for n in itertools.count(1):
            (s,) = agent.suggest(1)
            kind = s["kind"]
            energy = float(s.get("energy", np.nan))
            frame.update(frame=n, kind=kind, energy_requested_ev=energy, suggestion_id=int(s["_id"]),
                         **{"pass": int(s.get("pass", -1))})
            reading = None
            try:
                yield from bps.checkpoint()  # a resume replays from here: shutter, stage and energy set again
                if kind == "dark":
                    yield from bps.mv(shutter, "closed")
                else:
                    yield from bps.mv(shutter, "open", stage, "in" if kind == "image" else "out", mono, energy)
                    if ring is not None:
                        yield from wait_for_beam(ring, beam_floor_ma, beam_poll_s, trigger_first=False)
                reading = yield from bps.trigger_and_read(readables)  # ImagingFeeder judges and ingests it here
                yield from bps.checkpoint()
                problem = imaging_frame_problem({k: v["value"] for k, v in reading.items()}, spec)
            except DEVICE_FAULTS as exc:
                problem = f"device fault on frame {n} ({kind}: {type(exc).__name__}: {exc})"
            if reading is not None and run_bt is not None:
                bt = float(reading[run_bt.name]["value"])
            else:
                bt = float((yield from bps.rd(run_bt))) if run_bt is not None else float("nan")
            frame_state.update(frame=n, kind=kind, valid=not problem, reason=problem, beamtime_s=bt)
            yield from bps.trigger_and_read([status], name="frames")
            failures = 0 if not problem else failures + 1
            if failures >= max_consecutive_failures:
                raise RuntimeError(f"{failures} consecutive imaging frames discarded; last: {problem}")
            passes = int(agent.images_per_energy.min())
            if passes > passes_done:  # a pass completed: the agent has classified the stack
                passes_done = passes
                stop, reason = agent.should_stop()
                decision.update(stop=bool(stop), stop_reason=reason or "", classes_json=classes(),
                                frame_problem=problem)
                yield from bps.trigger_and_read([report], name="posterior")
                yield from bps.checkpoint()
                if stop:
                    break
        yield from bps.close_run(exit_status="success", reason=reason)
        return reason

    return (yield from bpp.subs_wrapper(run(), ImagingFeeder(agent, detector=det.name)))
