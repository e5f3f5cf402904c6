"""Endmembers of the classes no library phase explains.

A phase in grains of a few pixels is never seen pure: its grains are blurred by the point-spread function and
sit in every host, so its pixels lie on fans from each host class towards the unseen pure spectrum, y = y_h +
f·(y_e − y_h) + noise, with fractions f mostly 0.5–0.9. The class the partition finds is a fan's mode, well
short of the pure spectrum, and labelling by it puts the class boundary at the wrong fraction (the truth's label
is the dominant fraction). The pure spectrum is where the fans from two or more hosts cross
(``common_endmember``, least squares on the residual cells). With one fan only, it is that fan's far end: the
projections p = f·L + ε (ε ~ N(0, 1) in the whitened space) above their median fitted by f uniform on [f_lo, 1]
convolved with the unit noise (``fan_endpoint``); the uniform top is an assumption (the seed is silent), and
where the fractions thin out towards 1, L̂ falls short of the pure spectrum.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

from agent.imaging.partition import CellTable, Classes, SpectralSpace

#: Residual cells within this many σ of a placed phase's fans are its mixtures (not left for the next class).
FAN_WIDTH_SIGMA = 3.0
#: The endmember is placed at most this many times the class centre's distance from its host.
MAX_EXTRAPOLATION = 3.0


def _edge_nll(params, p, n, p_cut):
    """−ln L of projections ``p`` (weights ``n``) ≥ ``p_cut`` under p = f·L + N(0, 1), f ~ U(f_lo, 1)."""
    length, f_lo = params
    if not (length > 0 and 0 <= f_lo < 1):
        return np.inf
    lo, hi = f_lo * length, length

    def log_cdf_diff(x):  # ln [Φ(hi − x) − Φ(lo − x)]
        a, b = log_ndtr(hi - x), log_ndtr(lo - x)
        return a + np.log1p(-np.exp(np.minimum(b - a, -1e-300)))

    def mass_above(c):  # ∫_c^∞ [Φ(hi − x) − Φ(lo − x)] dx, by quadrature on a fine grid
        x = np.linspace(c, hi + 8, 400)
        return np.trapezoid(np.exp(log_cdf_diff(x)), x)

    dens = log_cdf_diff(p) - np.log(hi - lo)
    norm = np.log(max(mass_above(p_cut) / (hi - lo), 1e-300))
    return -float(np.sum(n * (dens - norm)))


def fan_endpoint(p: np.ndarray, n: np.ndarray) -> float:
    """L̂ (σ): the far end of a fan's projections ``p`` (σ units, weights ``n`` pixels), fitted above their
    weighted median (module docstring)."""
    order = np.argsort(p)
    p, n = p[order], n[order]
    c = np.cumsum(n)
    p_cut = p[np.searchsorted(c, 0.5 * c[-1])]
    top = p >= p_cut
    x0 = [float(np.average(p[top], weights=n[top]) * 1.2), 0.3]
    fit = minimize(_edge_nll, x0, args=(p[top], n[top], p_cut), method="Nelder-Mead",
                   options={"xatol": 1e-3, "fatol": 1e-3, "maxiter": 400})
    return float(fit.x[0])


def _fan_distances(e: np.ndarray, y: np.ndarray, hosts: np.ndarray) -> np.ndarray:
    """(H, n) squared distances of cells ``y`` (r, n) from the rays from each host through ``e`` (fractions ≥ 0)."""
    out = np.empty((len(hosts), y.shape[1]))
    for i, a in enumerate(hosts):
        v = e - a
        rel = y - a[:, None]
        f = np.maximum(v @ rel / max(v @ v, 1e-300), 0.0)
        out[i] = np.sum((rel - np.outer(v, f)) ** 2, axis=0)
    return out


def _fan_cost(e: np.ndarray, y: np.ndarray, n: np.ndarray, hosts: np.ndarray) -> float:
    return float(np.sum(n * _fan_distances(e, y, hosts).min(axis=0)))


def _fractions(e: np.ndarray, y: np.ndarray, hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest fan (n), fraction along it (n)) of cells ``y`` (r, n) for the fans from ``hosts`` to ``e``."""
    owner = _fan_distances(e, y, hosts).argmin(axis=0)
    v = e[:, None] - hosts[owner].T
    return owner, np.sum(v * (y - hosts[owner].T), axis=0) / np.maximum(np.sum(v * v, axis=0), 1e-300)


def common_endmember(y: np.ndarray, n: np.ndarray, hosts: np.ndarray, start: np.ndarray, rounds: int = 3
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(e (r), pixels per host fan (H)): the one spectrum ``e`` whose rays from the ``hosts`` (H, r) pass through
    the unexplained cells ``y`` (r, n) with ``n`` pixels, by least squares from ``start``. Fans from two hosts or
    more cross at the pure phase; one fan alone leaves e free along it (``fan_endpoint`` then places it). After
    the first fit, ``rounds`` refits on the cells beyond half-way along their fan: a fan from a distant host
    bends (the detector mixes transmissions, not absorbances), so its far part would pull a straight ray off."""
    e, use = np.asarray(start, float), np.ones(y.shape[1], bool)
    for _ in range(rounds + 1):
        fit = minimize(_fan_cost, e, args=(y[:, use], n[use], hosts), method="Powell",
                       options={"xtol": 1e-3, "ftol": 1e-6, "maxiter": 20000})
        e = fit.x
        owner, f = _fractions(e, y, hosts)
        if np.sum(n[f >= 0.5]) < 5:
            break
        use = f >= 0.5
    return e, np.bincount(owner, n, len(hosts))


def endmembers(classes: Classes, unknown: list[int], residual: CellTable, space: SpectralSpace,
               d_merge: float = 2.0, d_mix: float = 4.0) -> tuple[Classes, list[dict]]:
    """``classes`` with the ``unknown`` ones (indices: classes no library phase explains) moved to their pure
    spectrum, where the fans from the other classes (the hosts) through the ``residual`` cells (pixels no host
    nor two-host mixture explains, under their own noise) cross. Largest first, each fitted on the cells the
    phases placed before it leave unexplained; a class within ``d_mix`` σ of a placed phase's fans is a
    mixture of it (the same phase). A class that then coincides with another within ``d_merge`` σ joins the
    larger. Also a record per class."""
    hosts = [i for i in range(len(classes.z)) if i not in unknown]
    if not unknown or not hosts or not len(residual.keys):
        return classes, []
    yo = space.whiten @ (residual.zsum / residual.counts[:, None]).T  # (r, n_cells): the cells' mean y
    no = residual.counts.astype(float)
    hy = classes.y[hosts]
    z, y, records = classes.z.copy(), classes.y.copy(), []
    free = np.ones(len(no), bool)  # cells no endmember's fans explain yet
    pure: list[tuple[int, np.ndarray]] = []  # (class, endmember y) so far
    for c in sorted(unknown, key=lambda i: -classes.counts[i]):  # largest first
        on = [j for j, e in pure if np.sqrt(_fan_distances(e, classes.y[c][:, None], hy).min()) < d_mix]
        if on:  # a mixture of a host and a phase already placed: the same phase
            y[c] = y[on[0]]
            z[c] = z[on[0]]
            records.append({"class": int(c), "how": f"on the fans of class {on[0]}"})
            continue
        if free.sum() < 5:
            continue
        e, fan_px = common_endmember(yo[:, free], no[free], hy, classes.y[c])
        how = "fans cross"
        if len(fan_px) < 2 or np.sort(fan_px)[-2] < 0.1 * fan_px.sum():
            h = hy[int(np.argmax(fan_px))]  # one fan: its far end along the ray
            u = (e - h) / np.linalg.norm(e - h)
            p = u @ (yo[:, free] - h[:, None])
            cap = MAX_EXTRAPOLATION * np.linalg.norm(classes.y[c] - h)
            e, how = h + float(np.clip(fan_endpoint(p, no[free]), 0, cap)) * u, "one fan's edge"
        step, *_ = np.linalg.lstsq(space.whiten, e - classes.y[c], rcond=None)  # z moved by the same step
        z[c] = classes.z[c] + step
        y[c] = e
        pure.append((int(c), e))
        free &= np.sqrt(_fan_distances(e, yo, hy).min(axis=0)) >= FAN_WIDTH_SIGMA
        records.append({"class": int(c), "how": how, "moved_sigma": float(np.linalg.norm(e - classes.y[c])),
                        "fan_pixels": {int(hosts[i]): int(v) for i, v in enumerate(fan_px)}})
    owner, kept = np.arange(len(z)), []
    for c in np.argsort(-classes.counts, kind="stable"):  # largest first: a class joins a larger one it meets
        near_c = [j for j in kept if np.linalg.norm(y[c] - y[j]) < d_merge]
        if near_c:
            owner[c] = near_c[0]
        else:
            kept.append(int(c))
    keep = np.array(sorted(kept), int)
    counts = np.bincount(owner, classes.counts, len(owner)).astype(np.int64)
    out = Classes(z[keep], y[keep], counts[keep], classes.evidence_nats[keep], classes.rejected, classes.modes)
    return out, records
