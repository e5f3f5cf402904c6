"""XAS-imaging benchmarks, issue 15 (run on request: ``python tests/bench/bench_imaging.py [--seed 300] [--n 10]
[--big] [--skip-scaling] [--skip-full-stack] [--json out.json]``). The protocol was fixed before any of its results
were seen; a reviewer changes the seed base, the number of samples and the sizes (never the protocol).

Protocol v3 (session 13): v2 plus the PSF-aware labelling, seed base 300. The classification is given the
detector's PSF σ (``psf_sigma_px``, the ``DetectorModel`` value, as a beamline passes the σ it measured with a
knife edge), so its final labelling pass relabels class boundaries by the PSF-deconvolved class amounts
(``agent.imaging.psf``, developed on samples 0, 100, 101). Section 2's rows per sample, all on the same data:
the classification with the PSF step (the headline); the same classes labelled per pixel (``tile_labels``
without the PSF: v2's labelling, the before); the oracle with the PSF step and per pixel; and two noiseless
ceilings (the truth's fractions, no registration error, no noise): the argmax of the PSF-blurred fractions (what
any per-pixel labelling can reach) and the oracle labelling with the PSF step of the noiseless stack (what the
PSF step can reach with perfect spectra). ``--skip-full-stack`` leaves out section 3 (state it when used).

Protocol v2 (session 12; results in commit 3488dde): v1 plus the oracle row of section 2, and a new seed base.
Between v1 and v2 the simulator's registration shift became a translation (Lanczos) instead of a bilinear
blur-and-shift, and the classifier gained the endmember step; both were developed on samples 0, 100 and 101
(100-109 are v1's samples), so v2's default seed base is 200, a range no development run has seen.

Data: ``sim_devices.imaging`` generated tile by tile inside the tasks (``SimStackSource``), the default sample
(``default_sample``: LiFePO4, FePO4, Fe3O4 with their library nearest neighbour hidden at 0.5 % of the pixels in
grains of 3–10 px), ``DetectorModel()`` defaults (n0 = 10⁴ photons per pixel per image unless stated, gain, PSF,
read noise, registration error), one pass. The minority phase is removed from the library the design and the
classifier see. Executor: a Dask LocalCluster of 2 single-threaded worker processes on 127.0.0.1.

1. [energies] ``design_energies`` of the library minus the minority at n0, k_max = 12, indistinguishable groups
   at the dose of one pass with every candidate energy (``group_dose=1``): what a full stack could resolve.
2. [accuracy] ``--n`` samples (seeds seed … seed + n − 1) of 1000 × 1000 px at the designed energies, n0 = 10⁴;
   3 samples at n0 = 10³. Per sample: ``classify_stack`` (defaults), scored against the truth labels
   (``agent.imaging.scoring``): minority precision and recall, majority accuracy. Baselines on the same data
   in the same run: scikit-learn k-means and a Gaussian mixture (full covariance) on every pixel's
   edge-normalised spectrum (A − A(E₁))/(A(E_k) − A(E₁)), 10⁶ pixels, told the true number of phases (4: an
   advantage the O(N) method does not have), scored the same way. Oracle (a ceiling, not a method): the
   classifier's own labelling step (``tile_labels``: profile likelihood, Potts, two-class mixtures) given the
   four true pure spectra and the true phase fractions as prior, on the same registered stack: what perfect
   classes would score at this dose, point-spread function and grain size.
3. [full stack] 101 energies 7090–7190 eV (``full_xanes_energies``), n0 = 10⁴, one pass, classified the same
   way, on the first 3 samples; beamtime of both stacks by ``imaging_beamtime_s`` (1 s exposures, 10 flats per
   energy per pass, 1 s per energy move) and the ratio.
4. [scaling] N = 10⁵, 10⁶, 10⁷ px (square images) at the designed energies: wall time of a generation-only sweep
   over the tiles G (each task generates its tile and returns its sum) and of the classification T; the
   classification's own time T − G·(tile reads / tiles), per pixel and per core. ``--big``: 4×10⁸ px
   (20000 × 20000) too, with the peak resident memory of the client and workers (sampled every 0.5 s).
   Projection to 64 cores: measured pixels/s/core × 64 (the tasks share nothing but cell tables; the merge in
   the client is measured separately and stated).
"""

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.imaging import NoiseModel, classify_stack, estimate_gain, executor_for  # noqa: E402
from agent.imaging.design import design_energies, full_xanes_energies, imaging_beamtime_s  # noqa: E402
from agent.imaging.scoring import scores  # noqa: E402
from agent.imaging.tiles import windows  # noqa: E402
from agent.xas.prior import SpectraLibrary  # noqa: E402
from sim_devices.imaging.detector import DetectorModel, dark_tile, flat_tile, stack_tile  # noqa: E402
from sim_devices.imaging.sample import default_sample, sample_tile  # noqa: E402

TILE = 1024


@dataclass
class SimStackSource:
    """A simulated stack generated tile by tile where it is read (picklable: the sample's and detector's values)."""

    sample: object
    detector: DetectorModel
    energies_eV: np.ndarray
    shape: tuple
    passes: int = 1
    seed: int = 0

    def read(self, y0, x0, h, w):
        s = stack_tile(self.sample, self.detector, self.energies_eV, y0, x0, h, w, passes=self.passes, seed=self.seed)
        return s["images"], s["flats"], s["dark"]

    def truth(self, y0, x0, h, w):
        return sample_tile(self.sample, y0, x0, h, w)["label"]

    def noise(self) -> NoiseModel:
        """The noise model a beamline would measure: gain and read noise from two flats and two darks."""
        d = self.detector
        f1 = flat_tile(d, 0, 0, 512, 512, 0, 100, seed=self.seed + 7, n_avg=1)
        f2 = flat_tile(d, 0, 0, 512, 512, 0, 101, seed=self.seed + 7, n_avg=1)
        d1 = dark_tile(d, 0, 0, 512, 512, 100, seed=self.seed + 7, n_avg=1)
        d2 = dark_tile(d, 0, 0, 512, 512, 101, seed=self.seed + 7, n_avg=1)
        g, r = estimate_gain(f1, f2, d1, d2)
        return NoiseModel(g, r, d.n_flat * self.passes, d.n_dark)


def _generate_only(source, window):
    images, flats, dark = source.read(*window)
    return float(images.sum() + flats.sum() + dark.sum())


def library_without(minority):
    lib = SpectraLibrary.from_csv()
    return lib.without(minority) if minority else lib


def classify(source, ex, lib, **kw):
    spec = lib.on(source.energies_eV).T
    n_truth = len(source.sample.phases) + (source.sample.minority is not None)
    return classify_stack(source, source.noise(), ex, library=spec, library_names=list(lib.names), tile=TILE,
                          truth=source.truth, n_truth=n_truth, psf_sigma_px=source.detector.psf_sigma_px, **kw)


def relabel(source, res, spectra, prior, psf_sigma_px, n_minority):
    """Scores of the labelling step (``tile_labels``) on the classification's registered stack with class
    ``spectra`` and ``prior``, with the PSF step (``psf_sigma_px``) or per pixel (None)."""
    from agent.imaging.registration import RegisteredSource
    from agent.imaging.tiles import tile_labels

    shifts = res.extra.get("shifts_px")
    src = RegisteredSource(source, np.asarray(shifts)) if shifts is not None else source
    noise, conf = source.noise(), None
    n_truth = res.confusion.shape[1]
    for w in windows(source.shape, TILE):
        st, _, _ = tile_labels(src, noise, res.space, 1.0, spectra, np.log(prior), 1.0, 2, w, source.truth,
                               n_truth, psf_sigma_px=psf_sigma_px)
        conf = st.confusion if conf is None else conf + st.confusion
    return scores(conf, n_minority)


def oracle(source, res, sample, psf_sigma_px):
    """Scores of the labelling step given the true pure spectra and phase fractions (section 2's ceiling)."""
    from sim_devices.imaging.detector import phase_spectra

    spectra = phase_spectra(sample.names, source.energies_eV).T.astype(float)
    prior = np.maximum(res.confusion.sum(axis=0), 1) / res.confusion.sum()
    return relabel(source, res, spectra, prior, psf_sigma_px, len(sample.phases))


def per_pixel(source, res, sample):
    """Scores of the classification's own classes labelled per pixel (no PSF step: v2's labelling)."""
    spectra = res.classes.z + res.space.reference
    return relabel(source, res, spectra, res.classes.counts / res.classes.counts.sum(), None, len(sample.phases))


def noiseless(source, res, sample):
    """The noiseless ceilings of section 2: scores of the argmax of the PSF-blurred true fractions, and of the
    oracle labelling with the PSF step of the noiseless, unshifted stack (A of the truth, the PSF applied to the
    transmitted intensity as in the detector, the variance of a pixel at the detector's n0)."""
    from scipy import ndimage

    from agent.imaging.classify import background_shape
    from agent.imaging.tiles import ArraySource, tile_labels
    from sim_devices.imaging.detector import phase_spectra

    d = source.detector
    h, w = source.shape
    truth = sample_tile(sample, 0, 0, h, w)
    label = truth["label"].astype(np.int64)
    n_truth = len(sample.names)
    wts = d.psf_weights.astype(float)

    def blur(x):
        return ndimage.correlate1d(ndimage.correlate1d(x, wts, axis=-2, mode="nearest"), wts, axis=-1,
                                   mode="nearest")

    def score(lab):
        lab = np.where(lab >= 0, lab, n_truth).ravel()
        conf = np.bincount(lab * n_truth + label.ravel(), minlength=(n_truth + 1) * n_truth)
        return scores(conf.reshape(n_truth + 1, n_truth), len(sample.phases))

    fr = truth["fractions"].astype(float)
    spectra = phase_spectra(sample.names, source.energies_eV).T.astype(float)
    bg = background_shape(source.energies_eV)
    a = np.einsum("ck,chw->khw", spectra, fr * truth["thickness"]) + bg[:, None, None] * truth["background"]
    trans = blur(np.exp(-a))
    flat = d.gain * d.n0 + d.dark
    src = ArraySource((d.gain * d.n0 * trans + d.dark).astype(np.float32), np.full(a.shape, flat, np.float32),
                      np.full((h, w), d.dark, np.float32), source.energies_eV)
    noise = NoiseModel(d.g_eff, d.read_noise ** 2, d.n_flat, d.n_dark)
    prior = np.maximum(np.bincount(label.ravel(), minlength=n_truth), 1) / label.size
    out = np.full((h, w), -1, np.int64)
    for win in windows((h, w), TILE):
        _, lab, _ = tile_labels(src, noise, res.space, 1.0, spectra, np.log(prior), 1.0, 2, win, keep=True,
                                psf_sigma_px=d.psf_sigma_px)
        out[win[0]:win[0] + win[2], win[1]:win[1] + win[3]] = lab
    return {"argmax_blurred_fractions": score(blur(fr).argmax(0)), "oracle_psf": score(out)}


def baselines(source, n_phases, seed):
    """k-means and a Gaussian mixture on the edge-normalised spectra of every pixel (≤ 10⁶), true phase count."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    from agent.imaging.noise import absorbance

    h, w = source.shape
    images, flats, dark = source.read(0, 0, h, w)
    a = absorbance(images, flats, dark, source.passes).reshape(len(images), -1)
    x = ((a - a[0]) / np.where(np.abs(a[-1] - a[0]) > 1e-3, a[-1] - a[0], 1e-3)).T
    truth = source.truth(0, 0, h, w).ravel().astype(int)
    out = {}
    for name, model in (("kmeans", KMeans(n_phases, n_init=3, random_state=seed)),
                        ("gmm", GaussianMixture(n_phases, covariance_type="full", random_state=seed))):
        t0 = time.perf_counter()
        lab = model.fit_predict(x)
        conf = np.bincount(lab * n_phases + truth, minlength=(n_phases + 1) * n_phases).reshape(n_phases + 1,
                                                                                                n_phases)
        out[name] = {**scores(conf, n_phases - 1), "wall_s": time.perf_counter() - t0}
    return out


class PeakMemory:
    """Peak summed RSS (bytes) of this process and its children, sampled every 0.5 s."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
            except Exception:  # noqa: BLE001 - a worker exiting between the listing and the read
                rss = 0
            self.peak = max(self.peak, rss)
            time.sleep(0.5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def scaling(ex, sample, det, energies, lib, n_pixels, peak=False):
    side = int(round(np.sqrt(n_pixels)))
    source = SimStackSource(sample, det, energies, (side, side))
    wins = windows(source.shape, TILE)
    t0 = time.perf_counter()
    list(ex.map(_generate_only, [source] * len(wins), wins))
    gen = time.perf_counter() - t0
    mem = PeakMemory() if peak else None
    t0 = time.perf_counter()
    if mem:
        with mem:
            res = classify(source, ex, lib)
    else:
        res = classify(source, ex, lib)
    total = time.perf_counter() - t0
    step = max(1, int(len(wins) * TILE * TILE // 2e7))
    reads = 1 + len(wins[::step]) / len(wins) + ("pass2_s" in res.timings)  # pass 1, probe, final pass 2
    own = total - gen * reads
    s = scores(res.confusion, len(sample.phases))
    return {"pixels": side * side, "generation_s": gen, "classify_wall_s": total, "tile_reads": reads,
            "classify_own_s": own, "us_per_pixel_core": own * 2 / (side * side) * 1e6,
            "pixels_per_s_core": side * side / (own * 2), "timings": res.timings, "cells": res.cells,
            "peak_memory_gb": mem.peak / 2**30 if mem else None, "classes": res.names, **s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=300, help="seed base (development samples: 0, 100, 101)")
    p.add_argument("--n", type=int, default=10, help="samples in the accuracy section")
    p.add_argument("--big", action="store_true", help="also 4×10⁸ pixels (≈ 1 h on 2 cores, generation included)")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-full-stack", action="store_true", help="leave out section 3 (say so)")
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (the protocol's: 2; say so)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out: dict = {"protocol": "bench_imaging v3", "seed": args.seed, "full_stack": not args.skip_full_stack,
                 "workers": args.workers}
    det = DetectorModel()
    sample0 = default_sample(args.seed)
    lib = library_without(sample0.minority)
    t0 = time.perf_counter()
    design = design_energies(lib, n0=det.n0, k_max=12, group_dose=1.0)
    energies = np.asarray(design.energies_eV)
    out["design"] = {"energies_eV": energies.tolist(), "bound": design.expected_error,
                     "wall_s": time.perf_counter() - t0, "minority": sample0.minority}
    print(f"designed {len(energies)} energies: {energies.tolist()} (bound {design.expected_error:.3g})", flush=True)
    with executor_for("local", workers=args.workers) as ex:
        if not args.skip_accuracy:
            rows = []
            for i in range(args.n):
                for n0 in ((det.n0, 1e3) if i < 3 else (det.n0,)):
                    sample = default_sample(args.seed + i)
                    d = DetectorModel(n0=n0)
                    src = SimStackSource(sample, d, energies, (1000, 1000), seed=args.seed + i)
                    t1 = time.perf_counter()
                    res = classify(src, ex, lib)
                    row = {"seed": args.seed + i, "n0": n0, "wall_s": time.perf_counter() - t1, "classes": res.names,
                           "decided_fraction": res.decided_fraction, **scores(res.confusion, len(sample.phases)),
                           "fans": res.extra.get("fans"), "per_pixel": per_pixel(src, res, sample),
                           "oracle": oracle(src, res, sample, d.psf_sigma_px),
                           "oracle_per_pixel": oracle(src, res, sample, None),
                           "noiseless": noiseless(src, res, sample),
                           "baselines": baselines(src, len(sample.phases) + 1, args.seed + i)}
                    if i < 3 and n0 == det.n0 and not args.skip_full_stack:
                        full = SimStackSource(sample, d, full_xanes_energies(), (1000, 1000), seed=args.seed + i)
                        rf = classify(full, ex, lib)
                        row["full_stack"] = {"energies": len(full.energies_eV), "classes": rf.names,
                                             **scores(rf.confusion, len(sample.phases))}
                    rows.append(row)
                    b = row["baselines"]
                    pp, op, nl = row["per_pixel"], row["oracle_per_pixel"], row["noiseless"]
                    print(f"seed {row['seed']} n0 {n0:g}: minority P {row['minority_precision']:.3f} "
                          f"R {row['minority_recall']:.3f} majority {row['majority_accuracy']:.4f} (per pixel P "
                          f"{pp['minority_precision']:.3f} R {pp['minority_recall']:.3f} majority "
                          f"{pp['majority_accuracy']:.4f}) | oracle P "
                          f"{row['oracle']['minority_precision']:.3f} R {row['oracle']['minority_recall']:.3f} "
                          f"(per pixel P {op['minority_precision']:.3f} R {op['minority_recall']:.3f}) | noiseless "
                          f"argmax-blurred R {nl['argmax_blurred_fractions']['minority_recall']:.3f}, oracle+PSF "
                          f"P {nl['oracle_psf']['minority_precision']:.3f} R "
                          f"{nl['oracle_psf']['minority_recall']:.3f} "
                          f"| k-means R "
                          f"{b['kmeans']['minority_recall']:.3f} P {b['kmeans']['minority_precision']:.3f} | GMM R "
                          f"{b['gmm']['minority_recall']:.3f} P {b['gmm']['minority_precision']:.3f}"
                          + (f" | full stack R {row['full_stack']['minority_recall']:.3f} P "
                             f"{row['full_stack']['minority_precision']:.3f}" if "full_stack" in row else ""),
                          flush=True)
            out["accuracy"] = rows
            k = len(energies)
            out["beamtime"] = {"designed_s": imaging_beamtime_s(k), "full_stack_s": imaging_beamtime_s(101),
                               "ratio": imaging_beamtime_s(k) / imaging_beamtime_s(101)}
            print(f"beamtime designed {out['beamtime']['designed_s']:.0f} s vs full stack "
                  f"{out['beamtime']['full_stack_s']:.0f} s: ratio {out['beamtime']['ratio']:.3f}", flush=True)
        sizes = [] if args.skip_scaling else [1e5, 1e6, 1e7] + ([4e8] if args.big else [])
        out["scaling"] = []
        for n in sizes:
            row = scaling(ex, sample0, det, energies, lib, n, peak=n >= 1e7)
            out["scaling"].append(row)
            print(f"N {row['pixels']:.3g}: generation {row['generation_s']:.1f} s, classify "
                  f"{row['classify_wall_s']:.1f} s wall, own {row['classify_own_s']:.1f} s = "
                  f"{row['us_per_pixel_core']:.2f} µs/px/core "
                  f"({row['pixels_per_s_core']:.3g} px/s/core), peak {row['peak_memory_gb']} GB, minority R "
                  f"{row['minority_recall']:.3f} P {row['minority_precision']:.3f}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
