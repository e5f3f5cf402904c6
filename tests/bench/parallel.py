"""The benchmarks' fan-out: ``pool_map(fn, work, jobs)`` maps over ``work`` in ``jobs`` processes (1: in
this one, so a profiler or a debugger sees it); returns (results, wall seconds)."""

import time
from multiprocessing import Pool


def pool_map(fn, work, jobs: int):
    t0 = time.perf_counter()
    if jobs > 1:
        with Pool(jobs) as pool:
            res = pool.map(fn, work)
    else:
        res = [fn(w) for w in work]
    return res, time.perf_counter() - t0
