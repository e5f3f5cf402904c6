"""Reference-foil benchmark: coverage of the monochromator-offset posterior (agent.xas.reference_foil).

For each imposed offset ε (eV), ``--draws`` simulated scans of ``--points`` readbacks 7105-7125 eV (1 s
each, Fe3O4 sample μt = 1.75 μ + 0.45 before the foil, 23 760 I0 counts/s, the Fe foil μt = μ + 0.2),
counts drawn from the device truth (``SimIonChamber.expected_counts``); prints the mean and sd of the
z-score (estimate − ε)/sd (0 and 1 if calibrated), the fraction within ±2 sd (0.95) and the mean sd (eV).

Run: OPENBLAS_NUM_THREADS=1 python tests/bench/bench_reference_foil.py [--draws 200] [--points 40]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from agent.xas.prior import SpectraLibrary  # noqa: E402
from agent.xas.reference_foil import ReferenceFoil  # noqa: E402
from sim_devices.core.clock import SimClock  # noqa: E402
from sim_devices.xas import make_xas_endstation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--points", type=int, default=40)
    args = ap.parse_args()
    lib = SpectraLibrary.from_csv()
    x = make_xas_endstation("Fe3O4", SimClock(float("inf")), reference_foil=True)
    readback = np.linspace(7105.0, 7125.0, args.points)
    rng = np.random.default_rng(0)
    for eps in (-1.5, -0.7, 0.0, 0.7, 1.5):
        lam_it = np.array([x.it.expected_counts(e + eps, 1.0) for e in readback])
        lam_ref = np.array([x.iref.expected_counts(e + eps, 1.0) for e in readback])
        z, sds = [], []
        for _ in range(args.draws):
            foil = ReferenceFoil.from_library(lib)
            foil.update(readback, rng.poisson(lam_it), rng.poisson(lam_ref))
            mean, sd = foil.offset
            z.append((mean - eps) / sd)
            sds.append(sd)
        z = np.array(z)
        print(f"eps {eps:+.1f} eV: z mean {z.mean():+.3f}, z sd {z.std():.3f}, within 2 sd {np.mean(abs(z) < 2):.3f}, "
              f"mean sd {np.mean(sds):.3f} eV")


if __name__ == "__main__":
    main()
