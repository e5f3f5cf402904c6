"""What an XAS-imaging rehearsal shows: the summary (also the ``--json`` file), a table, and a figure: the true
phase map beside the classified one, the class spectra with their ±1 std over the true spectra, the minority
found or not, and the beamtime against a conventional full XANES stack."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bayesbeam.rehearsal.imaging.rehearse import ImagingRehearsal, confusion


def conventional(r: ImagingRehearsal, passes: int) -> dict[str, Any]:
    """Beamtime (s) of this run's stack and of a conventional full XANES stack (``full_xanes_energies``: 101
    energies, 7090-7190 eV every 1 eV, one pass: the same dose per image), both by ``imaging_beamtime_s`` with this
    end station's costs: exposure + readout per frame, the monochromator's settle + mean step / speed per energy,
    ``n_flat`` flats per energy (once) with two sample-stage moves of its in-out time, ``n_dark`` darks."""
    from agent.imaging.design import full_xanes_energies, imaging_beamtime_s

    st, det = r.station, r.station.detector
    frame = dict(exposure_s=float(det.exposure_s.get()), readout_s=float(det.readout_s.get()),
                 n_flat=r.options.n_flat, n_dark=r.options.n_dark, sample_move_s=st.stage.move_time("out")
                 if st.stage.sample_in else st.stage.move_time("in"))
    settle, speed = float(st.mono.settle_time_s.get()), float(st.mono.speed_eV_s.get())

    def move(energies) -> float:
        e = np.sort(np.asarray(energies, float))
        return settle + (float(np.mean(np.diff(e))) if e.size > 1 else 0.0) / speed

    full = full_xanes_energies()
    ours = r.agent.energies
    adaptive = imaging_beamtime_s(len(ours), passes, move_s_per_energy=move(ours), **frame)
    xanes = imaging_beamtime_s(len(full), 1, move_s_per_energy=move(full), **frame)
    return {"definition": "imaging_beamtime_s: passes × energies × (move + exposure + readout) + flats once per "
                          "energy (n_flat frames, two stage moves) + n_dark darks; conventional: "
                          "full_xanes_energies() (7090-7190 eV every 1 eV), one pass, same dose per image",
            "energies": int(len(full)), "passes": 1, "beamtime_s": xanes, "adaptive_estimate_s": adaptive,
            **frame, "move_s_per_energy": move(full)}


def summary(r: ImagingRehearsal) -> dict[str, Any]:
    """``minority_precision``, ``minority_recall``, ``minority_found``, ``majority_accuracy`` (from
    ``agent.imaging.scoring.scores`` against the simulation's labels), ``pixels``, ``energies`` (eV list),
    ``passes``, ``beamtime_s`` (the run's simulated beamtime), ``wall_s``, ``stop_reason``, ``classes`` (names)
    with their pixels and matched true phase, ``decided_fraction``, ``unexplained_fraction``, ``conventional``
    (``conventional``), ``full_xanes_beamtime_s`` and ``beamtime_ratio`` (conventional / this run), the truth's
    phase names and minority, ``uid``, ``seed``, the design and the options."""
    from agent.imaging.scoring import scores

    rep = r.agent.report()
    post = r.agent.posterior()
    res = r.agent.result
    out: dict[str, Any] = {"technique": "xas-imaging", "uid": r.uid, "seed": r.options.seed, "options": r.options,
                           "stop_reason": r.stop_reason, "beamtime_s": r.beamtime_s, "wall_s": r.wall_s,
                           "pixels": int(r.truth.size), "energies": [float(e) for e in r.agent.energies],
                           "passes": rep["passes"], "images": rep["images"],
                           "discarded_frames": len(r.agent.failures), "truth_phases": r.names,
                           "minority_phase": r.names[-1] if r.options.minority > 0 else None,
                           "design": r.agent.design, "classify_wall_s": rep["classify_wall_s"]}
    if res is None or res.labels is None:
        out.update(minority_precision=None, minority_recall=None, majority_accuracy=None, minority_found=False,
                   classes=[], conventional=None)
        return out
    minority = len(r.names) - 1 if r.options.minority > 0 else None
    conf = confusion(res.labels, r.truth, res.n_classes, len(r.names))
    sc = scores(conf, minority)
    base = conventional(r, max(int(rep["passes"]), 1))
    out.update({k: sc.get(k) for k in ("minority_precision", "minority_recall", "majority_accuracy",
                                       "minority_found", "minority_pixels")})
    out.update(classes=[str(n) for n in post["names"]], class_pixels=[int(c) for c in res.counts[:-1]],
               class_to_phase=[r.names[p] if p >= 0 else None for p in sc["class_to_phase"]],
               unclassified_pixels=int(res.counts[-1]), decided_fraction=rep["decided_fraction"],
               unexplained_fraction=rep["unexplained_fraction"], confusion=conf.tolist(), conventional=base,
               full_xanes_beamtime_s=base["beamtime_s"],
               beamtime_ratio=base["beamtime_s"] / r.beamtime_s if r.beamtime_s > 0 else None)
    return out


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def table(s: dict[str, Any]):
    """The rich table of a ``summary``."""
    from rich.table import Table

    t = Table(title=f"XAS-imaging rehearsal: {' + '.join(s['truth_phases'][:-1])}, hidden {s['minority_phase']}")
    t.add_column("quantity")
    t.add_column("value")
    t.add_row("pixels", str(s["pixels"]))
    t.add_row("energies", f"{len(s['energies'])}: " + ", ".join(f"{e:.1f}" for e in s["energies"]) + " eV")
    t.add_row("passes / images", f"{s['passes']} / {s['images']} ({s['discarded_frames']} frames discarded)")
    t.add_row("stop reason", s["stop_reason"])
    for name, n, phase in zip(s.get("classes", []), s.get("class_pixels", []), s.get("class_to_phase", []),
                              strict=True):
        t.add_row(f"class {name}", f"{n} px (holds mostly {phase})")
    t.add_row("minority", f"{'found' if s['minority_found'] else 'not found'}: precision "
                          f"{_num(s['minority_precision'], '.3f')}, recall {_num(s['minority_recall'], '.3f')}")
    t.add_row("majority accuracy", _num(s["majority_accuracy"], ".4f"))
    t.add_row("beamtime", f"{s['beamtime_s'] / 60:.1f} min")
    c = s.get("conventional")
    if c:
        t.add_row("full XANES stack", f"{c['energies']} energies: {c['beamtime_s'] / 60:.1f} min "
                                      f"({_num(s['beamtime_ratio'], '.1f')}× this run)")
    t.add_row("wall time", f"{s['wall_s']:.1f} s ({s['classify_wall_s']:.1f} s in the last classification)")
    t.caption = ("scores against the simulation's truth labels (agent.imaging.scoring); full XANES stack: "
                 "imaging_beamtime_s with this end station's move, readout and flat costs, same dose per image")
    return t


def imaging_figure(r: ImagingRehearsal, path: str | Path, s: dict[str, Any] | None = None) -> Path:
    """PNG: true phase map | classified map | class spectra ± std over the true spectra | beamtime bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim_devices.imaging.detector import phase_spectra

    s = s or summary(r)
    res = r.agent.result
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.6))
    ax[0].imshow(r.truth, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    ax[0].set_title("truth: " + ", ".join(r.names), fontsize=7)
    if res is not None and res.labels is not None:
        phase_of = {n: i for i, n in enumerate(r.names)}
        matched = np.array([phase_of.get(p, 9) for p in s["class_to_phase"]] + [9])  # unclassified: colour 9
        ax[1].imshow(matched[np.where(res.labels >= 0, res.labels, len(matched) - 1)], cmap="tab10", vmin=0,
                     vmax=9, interpolation="nearest")
        ax[1].set_title(f"{len(s['classes'])} classes, coloured by the true phase each holds most", fontsize=7)
        e = res.energies_eV
        biggest = {}
        for c, phase in enumerate(s["class_to_phase"]):  # per true phase, its largest class
            if phase is not None and (phase not in biggest or s["class_pixels"][c] > s["class_pixels"][biggest[phase]]):
                biggest[phase] = c
        for phase, c in biggest.items():
            ax[2].errorbar(e, res.spectra[c], yerr=res.spectra_std[c], marker="o", ms=3, capsize=2, lw=1,
                           color=plt.cm.tab10(phase_of[phase]), label=f"{s['classes'][c]} (holds {phase})")
        grid = np.linspace(e.min(), e.max(), 400)
        mu = phase_spectra(r.names, grid)
        for p in range(len(r.names)):
            ax[2].plot(grid, mu[:, p], "--" if p == len(r.names) - 1 else "-", color=plt.cm.tab10(p), lw=0.8,
                       alpha=0.7)
        ax[2].set_xlabel("energy (eV)")
        ax[2].set_ylabel("normalised μ")
        ax[2].legend(fontsize=6)
        found = "found" if s["minority_found"] else "NOT found"
        ax[2].set_title(f"largest class per phase ±1 std over the truths (minority dashed): minority {found}, "
                        f"P {_num(s['minority_precision'], '.2f')} R {_num(s['minority_recall'], '.2f')}", fontsize=7)
    c = s.get("conventional")
    bars = {"this run": s["beamtime_s"] / 3600}
    if c:
        bars["full XANES\n(101 energies)"] = c["beamtime_s"] / 3600
    ax[3].bar(list(bars), list(bars.values()), color=["tab:blue", "tab:gray"][:len(bars)])
    ax[3].set_ylabel("beamtime (h)")
    ax[3].set_title(f"{len(s['energies'])} energies × {s['passes']} passes", fontsize=8)
    for a in ax[:2]:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"XAS imaging: {s['pixels']} px, stop: {s['stop_reason']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
