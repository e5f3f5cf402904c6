"""The noise-aware partition of spectral space (seed 001, Ito et al.): O(N) unsupervised classes.

What the seed says: per-pixel spectra are points in a space of one axis per energy, blurred by the
measurement noise; the space is divided into cells sized by that blur, a spectrum is classified by finding
its cell, and two spectra are different classes only if they differ beyond the noise. What it leaves
silent, and what is implemented here:

1. **The space** (``SpectralSpace``). A pixel's absorbance at k energies is A = b + t·μ(E) + noise with a
   background b (shape β(E), ``classify.background_shape``) and an edge jump t of its own. Projecting A off
   span{β, μ̄} (μ̄: a reference spectrum, the
   library mean) with fixed weights, and dividing by the fitted edge jump t̂, gives z = R·A/t̂, which for a
   pure phase is a point independent of b and t (a k-vector in the (k − 2)-dimensional residual space; a
   mixture of two phases lies on the segment between their points). z is whitened by the noise covariance of
   a typical pixel (from the counting statistics of a sample of pixels) and, for k − 2 > ``r_max``, reduced to
   the ``r_max`` principal directions of the library's phases in the whitened space (noise stays unit there).
   A class's noise cloud then has radius ~√r, not σ√k in raw energies.
2. **Cells**: integer coordinates ⌊y/h⌋ (h = ``cell`` noise σ, default 1) packed in an int64 key; per chunk the
   occupied cells, their counts and their sums of z (``CellTable``), merged by sorting. Memory is bounded by
   the occupied cells, not by the number of pixels.
3. **Classes** (``find_classes``): modes of the cell counts (smoothed over each cell's 2r axis neighbours) by
   persistence (ToMATo: cells in decreasing density, union-find over axis neighbours); a mode survives only if
   its peak stands above the saddle to an older mode by ``z_sig`` Poisson standard deviations. Classes whose
   centres are within ``d_merge`` noise σ of each other are one class (the seed's criterion: a difference
   buried in one pixel's noise is no difference), a class whose centre lies within ``d_mix`` σ of the segment
   between two larger classes is their mixture (grain boundaries), and every class must pay for itself in
   evidence (the cell histogram's log-likelihood gain over the best class without it, against the BIC
   penalty (r + 1)/2·ln N).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

KEY_BITS = 60  # bits of an int64 cell key shared by the r coordinates


@dataclass
class SpectralSpace:
    """Linear maps of the partition: A (k, n) → (z (k, n), t̂ (n)) → y (r, n), all fixed for a stack."""

    energies_eV: np.ndarray
    reference: np.ndarray  # μ̄ (k): the spectrum projected off with the constant
    weights: np.ndarray    # (k) fixed weights of the projection: 1/var(A) of a typical pixel
    whiten: np.ndarray     # (r, k): z → y, unit noise for a typical pixel
    t_min: float = 0.05    # edge jumps below this are not classified (no absorber)
    background: np.ndarray | None = None  # (k) shape of the non-edge absorbance (default constant)

    def __post_init__(self):
        if self.background is None:
            self.background = np.ones_like(self.reference)
        x = np.stack([self.background, self.reference], axis=1)  # (k, 2)
        xw = x * self.weights[:, None]
        self._fit = np.linalg.solve(x.T @ xw, xw.T)  # (2, k): (b̂, t̂) = fit·A
        self._resid = np.eye(len(self.reference)) - x @ self._fit  # (k, k)

    @property
    def r(self) -> int:
        return self.whiten.shape[0]

    def edge_jump(self, a: np.ndarray) -> np.ndarray:
        """t̂ (n) of absorbances (k, n)."""
        return self._fit[1] @ a

    def z(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z (k, n), t̂ (n)): the b- and t-free spectral coordinates of absorbances a (k, n)."""
        t = self.edge_jump(a)
        safe = np.where(np.abs(t) > self.t_min, t, np.inf)
        return (self._resid @ a) / safe, t

    def point(self, spectra: np.ndarray) -> np.ndarray:
        """z (k, m) of noiseless spectra (m, k) at the stack's energies (library phases, class spectra)."""
        return self.z(np.asarray(spectra, float).T)[0]

    @classmethod
    def fit(cls, a: np.ndarray, var: np.ndarray, energies_eV, reference: np.ndarray, r_max: int = 6,
            library: np.ndarray | None = None, t_min: float = 0.05, background: np.ndarray | None = None
            ) -> SpectralSpace:
        """The space of a stack from a sample of its pixels: absorbances ``a`` and variances ``var`` (k, n),
        ``reference`` μ̄ (k); ``library`` (m, k) spectra choose the reduced directions when k − 2 > ``r_max``
        (otherwise the sample's own principal directions)."""
        a, var = np.asarray(a, float), np.asarray(var, float)
        k = a.shape[0]
        weights = 1.0 / np.median(var, axis=1)
        space = cls(np.asarray(energies_eV, float), np.asarray(reference, float), weights, np.eye(k), t_min,
                    background)
        t = space.edge_jump(a)
        ok = t > t_min
        r_op = space._resid
        # mean over pixels of R diag(var_n) Rᵀ / t_n²: the noise covariance of z for a typical pixel
        cov = (r_op * (var[:, ok] / t[ok] ** 2).mean(axis=1)) @ r_op.T
        lam, u = np.linalg.eigh(cov)
        keep = lam > lam.max() * 1e-9
        w_full = (u[:, keep] / np.sqrt(lam[keep])).T  # (k − 2, k)
        if w_full.shape[0] > r_max:
            pts = w_full @ (space.point(library) if library is not None else space.z(a[:, ok])[0])
            pts = pts - pts.mean(axis=1, keepdims=True)
            _, _, vt = np.linalg.svd(pts.T, full_matrices=False)
            w_full = vt[:r_max] @ w_full
        space.whiten = w_full
        return space

    def to_dict(self) -> dict:
        return {"energies_eV": self.energies_eV.tolist(), "reference": self.reference.tolist(),
                "weights": self.weights.tolist(), "whiten": self.whiten.tolist(), "t_min": self.t_min,
                "background": self.background.tolist()}


def _bits(r: int) -> int:
    return KEY_BITS // max(r, 1)


def cell_keys(y: np.ndarray, cell: float) -> np.ndarray:
    """int64 keys of the cells ⌊y/cell⌋ of points y (r, n), each coordinate clipped to its bit range."""
    r = y.shape[0]
    bits = _bits(r)
    off = 1 << (bits - 1)
    c = np.clip(np.floor(y / cell), -off, off - 1).astype(np.int64) + off
    key = np.zeros(y.shape[1], np.int64)
    for d in range(r):
        key |= c[d] << (bits * d)
    return key


def cell_centres(keys: np.ndarray, r: int, cell: float) -> np.ndarray:
    """Centres y (r, m) of cells with ``keys``."""
    bits = _bits(r)
    off = 1 << (bits - 1)
    mask = (1 << bits) - 1
    return np.stack([((keys >> (bits * d)) & mask) - off + 0.5 for d in range(r)]) * cell


@dataclass
class CellTable:
    """Occupied cells: sorted unique ``keys``, pixel ``counts`` and ``zsum`` (m, k) of their z coordinates."""

    keys: np.ndarray
    counts: np.ndarray
    zsum: np.ndarray

    @classmethod
    def empty(cls, k: int) -> CellTable:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k)))

    @classmethod
    def of(cls, keys: np.ndarray, z: np.ndarray) -> CellTable:
        """The table of one chunk: pixel keys (n) and their z (k, n)."""
        u, inv, n = np.unique(keys, return_inverse=True, return_counts=True)
        zsum = np.stack([np.bincount(inv, z[d], len(u)) for d in range(z.shape[0])], axis=1)
        return cls(u, n.astype(np.int64), zsum)

    @classmethod
    def merge(cls, tables) -> CellTable:
        """One table of several (sums of counts and z per key)."""
        tables = list(tables)
        k = tables[0].zsum.shape[1] if tables else 0
        tables = [t for t in tables if len(t.keys)]
        if not tables:
            return cls.empty(k)
        keys = np.concatenate([t.keys for t in tables])
        u, inv = np.unique(keys, return_inverse=True)
        counts = np.bincount(inv, np.concatenate([t.counts for t in tables]), len(u)).astype(np.int64)
        zs = np.concatenate([t.zsum for t in tables])
        zsum = np.stack([np.bincount(inv, zs[:, d], len(u)) for d in range(zs.shape[1])], axis=1)
        return cls(u, counts, zsum)

    @property
    def pixels(self) -> int:
        return int(self.counts.sum())


@njit(cache=True)
def _lookup(keys, key):
    i = np.searchsorted(keys, key)
    if i < keys.size and keys[i] == key:
        return i
    return -1


@njit(cache=True)
def _smoothed(keys, counts, strides):
    out = counts.astype(np.float64).copy()
    for i in range(keys.size):
        for s in strides:
            for sign in (-1, 1):
                j = _lookup(keys, keys[i] + sign * s)
                if j >= 0:
                    out[i] += counts[j]
    return out


@njit(cache=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(cache=True)
def _tomato(keys, density, strides, z_sig):
    """Persistence clustering of cells (ToMATo over axis neighbours): root index of each cell's class."""
    m = keys.size
    order = np.argsort(-density)
    rank = np.empty(m, np.int64)
    rank[order] = np.arange(m)
    parent = np.arange(m)
    for step in range(m):
        i = order[step]
        best, best_d = -1, -1.0
        for s in strides:
            for sign in (-1, 1):
                j = _lookup(keys, keys[i] + sign * s)
                if j >= 0 and rank[j] < step and density[j] > best_d:
                    best, best_d = j, density[j]
        if best < 0:
            continue  # a new mode
        ri = _find(parent, best)
        parent[i] = ri
        for s in strides:
            for sign in (-1, 1):
                j = _lookup(keys, keys[i] + sign * s)
                if j < 0 or rank[j] >= step:
                    continue
                rj = _find(parent, j)
                ri = _find(parent, i)
                if rj == ri:
                    continue
                young, old = (ri, rj) if density[ri] < density[rj] else (rj, ri)
                dip = density[young] - density[i]
                if dip < z_sig * np.sqrt(density[young] + density[i]):
                    parent[young] = old
    for i in range(m):
        parent[i] = _find(parent, i)
    return parent


@dataclass
class Classes:
    """Classes found by the partition: centres ``z`` (C, k) and ``y`` (C, r), pixel ``counts`` (C) of the
    histogram, ``evidence_nats`` (C: the log-likelihood gain of keeping each), and what was rejected."""

    z: np.ndarray
    y: np.ndarray
    counts: np.ndarray
    evidence_nats: np.ndarray
    rejected: list[dict] = field(default_factory=list)
    modes: int = 0

    def to_dict(self) -> dict:
        return {"counts": self.counts.tolist(), "evidence_nats": self.evidence_nats.tolist(),
                "rejected": self.rejected, "modes": self.modes}


def _segment_distance(p, a, b) -> float:
    ab = b - a
    f = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-300), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + f * ab)))


def _class_loglik(y: np.ndarray, centres: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    """(C, m) log N(y; centre, I) + log weight of cell centres y (r, m)."""
    d2 = ((y[None, :, :] - centres[:, :, None]) ** 2).sum(axis=1)
    return log_w[:, None] - 0.5 * d2


def _modes(table: CellTable, space: SpectralSpace, z_sig: float, core: float):
    """(z centres (C, k), pixel counts (C)) of the persistent modes of a table's smoothed cell counts; a centre
    is the mean z of the mode's core cells (density ≥ ``core``·peak)."""
    bits = _bits(space.r)
    strides = np.array([1 << (bits * d) for d in range(space.r)], np.int64)
    density = _smoothed(table.keys, table.counts, strides)
    root = _tomato(table.keys, density, strides, float(z_sig))
    roots, label = np.unique(root, return_inverse=True)
    counts = np.bincount(label, table.counts, len(roots))
    in_core = density >= core * density[roots][label]
    w_core = np.bincount(label, table.counts * in_core, len(roots))
    zc = np.stack([np.bincount(label, table.zsum[:, d] * in_core, len(roots)) for d in range(table.zsum.shape[1])],
                  axis=1) / np.maximum(w_core, 1)[:, None]
    return zc, counts


def find_classes(table: CellTable, space: SpectralSpace, cell: float = 1.0, z_sig: float = 5.0,
                 d_merge: float = 2.0, d_mix: float = 4.0, min_pixels: int = 25, core: float = 0.5,
                 existing: Classes | None = None) -> Classes:
    """The classes of a merged ``CellTable`` (module docstring, step 3). With ``existing`` classes (a search
    among the pixels they leave unexplained), only new classes are returned, tested for distinctness against
    the existing ones too, and the evidence test is left to the caller (the table is a biased selection)."""
    if not len(table.keys):
        k = len(space.reference)
        return Classes(np.zeros((0, k)), np.zeros((0, space.r)), np.zeros(0, np.int64), np.zeros(0), [], 0)
    zc, counts = _modes(table, space, z_sig, core)
    keep = np.flatnonzero(counts >= min_pixels)
    modes = len(keep)
    keep = keep[np.argsort(-counts[keep])]
    rejected: list[dict] = []
    yc = (space.whiten @ zc.T).T
    prior_y = list(existing.y) if existing is not None else []
    chosen: list[int] = []
    for c in keep:  # largest first: merge into a near larger class, or drop as a mixture of two larger
        others = prior_y + [yc[j] for j in chosen]
        dist = [np.linalg.norm(yc[c] - o) for o in others]
        if dist and min(dist) < d_merge:
            rejected.append({"pixels": int(counts[c]), "why": "within noise of a larger class",
                             "distance_sigma": float(min(dist))})
            continue
        seg = [_segment_distance(yc[c], a, b) for i, a in enumerate(others) for b in others[i + 1:]]
        if seg and min(seg) < d_mix:
            rejected.append({"pixels": int(counts[c]), "why": "a mixture of two larger classes",
                             "distance_sigma": float(min(seg))})
            continue
        chosen.append(int(c))
    chosen_arr = np.array(chosen, int)
    if existing is not None:
        return Classes(zc[chosen_arr], yc[chosen_arr], counts[chosen_arr].astype(np.int64),
                       np.full(len(chosen_arr), np.nan), rejected, modes)
    evidence = _evidence(table, space, yc[chosen_arr], counts[chosen_arr], cell)
    penalty = 0.5 * (space.r + 1) * np.log(max(table.pixels, 2))
    final = evidence >= penalty
    for c, e in zip(chosen_arr[~final], evidence[~final], strict=False):
        rejected.append({"pixels": int(counts[c]), "why": "evidence below the BIC penalty",
                         "evidence_nats": float(e), "penalty_nats": float(penalty)})
    chosen_arr = chosen_arr[final]
    ev = _evidence(table, space, yc[chosen_arr], counts[chosen_arr], cell) if final.any() else evidence[final]
    return Classes(zc[chosen_arr], yc[chosen_arr], counts[chosen_arr].astype(np.int64), ev, rejected, modes)


def join(a: Classes, b: Classes) -> Classes:
    """Classes ``a`` then ``b`` (found among ``a``'s unexplained pixels)."""
    return Classes(np.concatenate([a.z, b.z]), np.concatenate([a.y, b.y]), np.concatenate([a.counts, b.counts]),
                   np.concatenate([a.evidence_nats, b.evidence_nats]), a.rejected + b.rejected, a.modes + b.modes)


def _evidence(table: CellTable, space: SpectralSpace, centres: np.ndarray, counts: np.ndarray, cell: float,
              batch: int = 200_000):
    """Per class: Σ over cells of count·(ln p(best class) − ln p(best class without it)), unit-noise Gaussians
    at the class centres with weights ∝ counts: the histogram's log-likelihood gain of keeping the class
    (cells in batches, so memory stays C·``batch``)."""
    if len(centres) == 0:
        return np.zeros(0)
    if len(centres) == 1:
        return np.array([np.inf])
    log_w = np.log(counts / counts.sum())
    out = np.zeros(len(centres))
    for lo in range(0, len(table.keys), batch):
        y = cell_centres(table.keys[lo:lo + batch], space.r, cell)
        ll = _class_loglik(y, centres, log_w)
        two = np.argpartition(-ll, 1, axis=0)[:2]
        cols = np.arange(ll.shape[1])
        a, b = ll[two[0], cols], ll[two[1], cols]
        best = np.where(a >= b, two[0], two[1])
        out += np.bincount(best, np.abs(a - b) * table.counts[lo:lo + batch], len(centres))
    return out
