"""What a SAXS rehearsal shows a scientist: the summary (also the ``--json`` file), a table and a figure (PNG):
the 2-D pattern, I(q) with its band over the truth, the stop rule's convergence against frames, the parameters
with their intervals, and the beamtime against a conventional fixed exposure (``conventional``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bayesbeam.live.base import resolved_format
from bayesbeam.rehearsal.saxs.rehearse import SAXSRehearsal

PARAMETERS = ("radius", "pd", "scale", "background")
STATS = ("mean", "std", "lo68", "hi68", "lo95", "hi95")
KDE_KEYS = ("kde_divergence", "kde_threshold", "kde_expected", "kde_counts", "kde_equivalent_counts",
            "kde_bandwidth")


def exposure_history(frames: dict[int, dict[str, Any]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t_sample, t_buffer)``: the valid exposure (s) on the sample and on the buffer after each of the first
    ``n`` frames (frame k's posterior event is the k-th)."""
    ts, tb, s, b = [], [], 0.0, 0.0
    for k in range(1, n + 1):
        f = frames.get(k, {})
        if f.get("valid") and np.isfinite(f.get("exposure_s", np.nan)):
            s += f["exposure_s"] if f["kind"] == "sample" else 0.0
            b += f["exposure_s"] if f["kind"] == "buffer" else 0.0
        ts.append(s)
        tb.append(b)
    return np.array(ts), np.array(tb)


def conventional(frames: dict[int, dict[str, Any]], stds: np.ndarray, exposure_s: float,
                 beamtime_s: float) -> dict[str, Any] | None:
    """The conventional fixed-exposure protocol that reaches this run's final posterior std of the watched
    quantity: an ESTIMATE from this run's own posterior, stated here.

    Protocol: the empty cell and the standard once each, then sample and buffer frames 1:1 (equal time), every
    frame of ``exposure_s`` s, the number fixed in advance. Its precision: the posterior variance of the run is
    modelled as var = A/t_s + B/t_b (t_s, t_b: valid exposure on the sample and the buffer, s; counting noise:
    std ∝ 1/√t), A, B ≥ 0 fitted (relative least squares) to the run's own posterior stds ``stds`` (one per
    frame) over the second half of the frames with both t_s, t_b > 0 (a single point, or a degenerate fit:
    B = 0, all the variance from the sample). With t_s = t_b = T/2, var = 2(A + B)/T: the 1:1 protocol needs
    T = 2(A + B)/var_final, i.e. n = ⌈T / (2 exposure)⌉ frames each of sample and buffer; its beamtime counts
    each frame at this run's mean beamtime per frame (moves, readout and calibration included). ``None`` when the
    run ended with no finite std."""
    n = len(stds)
    ts, tb = exposure_history(frames, n)
    stds = np.asarray(stds, dtype=float)
    ok = np.isfinite(stds) & (stds > 0) & (ts > 0) & (tb > 0)
    if not ok.any() or not (np.isfinite(stds[-1]) and stds[-1] > 0):
        return None
    idx = np.flatnonzero(ok)
    idx = idx[len(idx) // 2:] if len(idx) >= 4 else idx[-1:]
    var = stds[idx] ** 2
    A, B = var[-1] * ts[idx][-1], 0.0
    if len(idx) >= 2:
        from scipy.optimize import nnls

        design = np.column_stack([1 / (ts[idx] * var), 1 / (tb[idx] * var)])
        (a, b), _ = nnls(design, np.ones(len(idx)))
        if a + b > 0:
            A, B = float(a), float(b)
    var_final = stds[-1] ** 2
    total = 2 * (A + B) / var_final
    each = max(1, math.ceil(total / 2 / exposure_s - 1e-9))
    frames_conv = 2 + 2 * each
    per_frame = beamtime_s / max(len(frames), 1)
    return {"definition": "estimate: empty + standard once, then sample and buffer frames 1:1 at the same exposure, "
                          "as many as reach this run's final posterior std (var = A/t_sample + B/t_buffer fitted to "
                          "this run's posterior, std ∝ 1/√t)",
            "target_std": float(stds[-1]), "A": A, "B": B, "sample_frames": each, "buffer_frames": each,
            "frames": frames_conv, "exposure_s": exposure_s, "beamtime_s": frames_conv * per_frame,
            "slots_s": {"empty": exposure_s, "standard": exposure_s, "sample": each * exposure_s,
                        "buffer": each * exposure_s}}


def summary(r: SAXSRehearsal) -> dict[str, Any]:
    """``stop_reason``, ``beamtime_s``, ``steps`` (= ``frames``), ``sample_frames``, ``buffer_frames``,
    ``discarded_frames``; the leading model ``model_best`` and its probability ``model_prob_max``, the free
    energies ``F_sphere``, ``F_core_shell``; the KDE keys (``kde_divergence``, ``kde_threshold``, ``kde_expected``,
    ``kde_counts``, ``kde_equivalent_counts``, ``kde_bandwidth``); ``<q>_mean/_std/_lo68/_hi68/_lo95/_hi95`` of
    ``radius`` (nm), ``pd``, ``scale``, ``background`` (cm⁻¹); the truth; ``conventional`` (the estimate of
    ``conventional``) and ``beamtime_ratio`` (conventional / adaptive); ``sample``, ``detector``, ``uid``,
    ``seed``, ``wall_s`` and the ``options``."""
    rep = r.agent.report()
    live = r.live
    frames = live.frames if live is not None else {}
    quantity = r.options.quantity
    stds = np.array([float(h.get(f"{quantity}_std", np.nan)) for h in live.reports]) if live is not None else []
    base = conventional(frames, stds, r.options.exposure_s, r.beamtime_s) if len(stds) else None
    out: dict[str, Any] = {
        "technique": "saxs", "sample": r.sample.name, "detector": r.options.detector, "uid": r.uid,
        "seed": r.options.seed, "options": r.options, "stop_reason": r.stop_reason, "beamtime_s": r.beamtime_s,
        "wall_s": r.wall_s, "steps": len(frames), "frames": len(frames),
        "sample_frames": rep.get("sample_frames"), "buffer_frames": rep.get("buffer_frames"),
        "discarded_frames": sum(not f.get("valid") for f in frames.values()),
        "quantity": quantity, "model_best": rep.get("model_best"), "model_prob_max": rep.get("model_prob_max"),
        "F_sphere": rep.get("F_sphere"), "F_core_shell": rep.get("F_core_shell"),
        "truth_params": dict(live.truth_params) if live is not None else {},
        "conventional": base,
        "beamtime_ratio": base["beamtime_s"] / r.beamtime_s if base and r.beamtime_s > 0 else None}
    out.update({k: rep.get(k) for k in KDE_KEYS})
    out.update({f"{q}_{s}": rep.get(f"{q}_{s}") for q in PARAMETERS for s in STATS})
    return out


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def table(s: dict[str, Any]):
    """The rich table of a ``summary``."""
    from rich.table import Table

    t = Table(title=f"SAXS rehearsal: {s['sample']} on {s['detector']}")
    t.add_column("quantity")
    t.add_column("value")
    t.add_row("frames", f"{s['frames']} ({s['sample_frames']} sample, {s['buffer_frames']} buffer, "
                        f"{s['discarded_frames']} discarded)")
    t.add_row("beamtime", f"{s['beamtime_s'] / 60:.1f} min")
    t.add_row("stop reason", s["stop_reason"])
    t.add_row("KDE divergence / threshold", f"{_num(s['kde_divergence'], '.3g')} / {_num(s['kde_threshold'], '.3g')}")
    t.add_row("KDE counts / equivalent", f"{_num(s['kde_counts'], '.4g')} / {_num(s['kde_equivalent_counts'], '.4g')}")
    t.add_row("leading model", f"{s['model_best']} (P = {_num(s['model_prob_max'], '.4f')})")
    t.add_row("F sphere / core-shell", f"{_num(s['F_sphere'], '.2f')} / {_num(s['F_core_shell'], '.2f')} nats")
    units = {"radius": " nm", "background": " cm⁻¹"}
    for q in PARAMETERS:
        truth = s["truth_params"].get(q)
        f = resolved_format(s[q + "_std"])
        cell = (f"{_num(s[q + '_mean'], f)} ± {_num(s[q + '_std'], '.2g')}{units.get(q, '')} "
                f"[68 %: {_num(s[q + '_lo68'], f)}, {_num(s[q + '_hi68'], f)}; "
                f"95 %: {_num(s[q + '_lo95'], f)}, {_num(s[q + '_hi95'], f)}]")
        if truth is not None:
            cell += f" (truth {_num(float(truth), '.4g')})"
        t.add_row(q, cell)
    c = s["conventional"]
    if c is None:
        t.add_row("conventional (estimate)", "no finite posterior std: no estimate")
    else:
        t.add_row("conventional (estimate)", f"{c['frames']} frames ({c['sample_frames']} sample + "
                                             f"{c['buffer_frames']} buffer at {c['exposure_s']:g} s), "
                                             f"{c['beamtime_s'] / 60:.1f} min for σ({s['quantity']}) = "
                                             f"{c['target_std']:.3g}: {s['beamtime_ratio']:.2f}× this run")
    t.caption = ("conventional: a fixed 1:1 sample:buffer protocol at the same exposure reaching this run's final "
                 "posterior std, estimated from this run's posterior (var = A/t_sample + B/t_buffer)")
    return t


def saxs_figure(r: SAXSRehearsal, path: str | Path, s: dict[str, Any] | None = None) -> Path:
    """The run's live figure (``bayesbeam.live.LiveSAXS``) with the conventional protocol's estimated beamtime
    beside this run's in the beamtime panel and the truth in the title (PNG)."""
    s = s or summary(r)
    view = r.live
    c = s["conventional"]
    view._draw_beamtime({"conventional 1:1\n(estimate)": c["slots_s"]} if c else None)
    truth = ", ".join(f"{k} {float(v):.4g}" for k, v in s["truth_params"].items() if k in PARAMETERS)
    view.fig.suptitle(f"SAXS rehearsal: {s['sample']} ({truth or 'truth unknown'}) — {s['frames']} frames, "
                      f"stop: {s['stop_reason']}", fontsize=10)
    if c:
        view.ax_time.set_title(f"exposure per slot; conventional ≈ {s['beamtime_ratio']:.2f}× the beamtime",
                               fontsize=8)
    return view.save(path, dpi=100)
