"""Fe oxidation state (valence) from a normalised Fe K-edge mu(E) by spectral similarity (seed 003,
Suzuki, Hino, Ono et al., npj Comput. Mater. 2020; DESIGN §4.4): a derived quantity of the XAS posterior.

Labels: ``valence_labels.toml`` (formal state from each standard's formula; ``load_valence_labels``).
Training set: the classes ``TRAIN_CLASSES`` (metal, ionic, mixed, covalent: 56 of 61); the five
intermetallics (borides, nitrides, silicides, phosphides) have no meaningful formal state and are only
predicted.

Protocol, fixed before the bench's outer leave-one-out was run (``tests/bench/bench_valence.py``
applies it; the one change after a dev run is stated under the hyper-parameters):

* Features: mu linearly interpolated from the caller's grid onto ``WINDOW_EV`` = 7100-7150 eV in
  ``STEP_EV`` = 0.25 eV (pre-edge, edge, white line and first resonance, where valence shows).
* Similarity measures (``METRICS``): ``euclid`` = L2 on mu (eV-weighted); ``cosderiv`` = chord distance
  sqrt(2 - 2 cos) between the derivatives dmu/dE smoothed by a derivative-of-Gaussian of
  ``DERIV_SIGMA_EV`` = 1 eV (about the Fe 1s core-hole width: finer structure is noise);
  ``w1`` = 1-D Wasserstein (Kantorovich-Rubinstein) distance between the derivative spectra taken as
  signed edge-jump measures on the window, which in 1-D is int |F1 - F2| dE with F the cumulative of
  the increments, i.e. int |mu1 - mu2| dE (eV): the distance the absorption edge's "mass" must move,
  well defined for the signed derivatives past the white line where a positive-density W1 is not;
  ``mlkr`` = a learned Mahalanobis metric (metric learning for kernel regression, Weinberger & Tesauro
  2007): rank-``MLKR_RANK`` map of the first ``MLKR_PCS`` PCA scores minimising the training fold's
  leave-one-out kernel-regression squared error (L-BFGS, deterministic start; scikit-learn is not in
  the environment, so it is written here).
* Regressors (``METHODS``): Nadaraya-Watson with a Gaussian kernel (``nw-<metric>``), bandwidth
  h = c x median nearest-neighbour distance, c in ``NW_BANDWIDTHS`` (mlkr: the bandwidth is in the
  learned map); k-NN mean (``knn-<metric>``), k in ``KNN_K``; ridge on PCA scores (``ridge-pca``),
  (n_pcs, alpha) in ``RIDGE_PCS`` x ``RIDGE_ALPHAS`` (alpha relative to the first score's variance).
* Each hyper-parameter is chosen by leave-one-out MAE inside the training set only (nested: in an
  outer leave-one-out the held-out standard takes no part in the PCA, the metric or the choice), the
  left-out standard entering as ``SELECT_DRAWS`` noisy copies at the 1 s/point noise below
  (``selection_noise``, fixed seed; the learned metric is trained on such copies too). Chosen on clean
  copies, every kernel took the smallest bandwidth of the grid (a dev run, before any outer result);
  the noisy copies are the operating condition. Within a training fold the PCA sees the inner
  left-out standard (unsupervised; not corrected).
  ``loo_mae``/``loo_rmse``: that inner leave-one-out at the chosen value (mlkr: the map refitted
  without each standard); a small optimism from choosing among a few values is not corrected.
* Default (``DEFAULT_METHOD``): among the smooth, differentiable methods ``SMOOTH_METHODS`` (k-NN is
  discontinuous; w1 is not differentiable where two spectra cross), the lowest outer leave-one-out
  MAE at the noise of a 1 s/point transmission scan (I0 = 23 760 /s, 0.25 eV step), ties within
  0.01 broken by the noise-free MAE. The bench prints the rule's choice next to this constant.
  Measured (seed 0, 5 draws): nw-cosderiv MAE 0.046 at 1 s (nw-euclid 0.060, nw-mlkr 0.061, ridge-pca
  0.210), RMSE 0.20, 30-60 us per spectrum, 4-8 us per spectrum in a batch of 1000.
  Caveat: its chosen bandwidth (0.5 x the median nearest-neighbour distance) makes it nearly a
  nearest-standard classifier: flat (gradient ~1e-5) near the standards, steep between them, so the
  delta-method term g' Sigma g is negligible there and the valence sd is ~``loo_rmse``; the errors are
  a few whole-valence misassignments (RMSE >> MAE), not Gaussian.

Time: ``predict`` is a gather, a few small matrix-vector products and an exp (tens of microseconds).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize

from agent.xas.prior import SpectraLibrary, default_grid, reference_noise_var

LABELS_PATH = Path(__file__).with_name("valence_labels.toml")
TRAIN_CLASSES = ("metal", "ionic", "mixed", "covalent")
CLASSES = (*TRAIN_CLASSES, "intermetallic")

WINDOW_EV = (7100.0, 7150.0)
STEP_EV = 0.25
DERIV_SIGMA_EV = 1.0
METRICS = ("euclid", "cosderiv", "w1", "mlkr")
METHODS = (*(f"nw-{m}" for m in METRICS), *(f"knn-{m}" for m in METRICS), "ridge-pca")
SMOOTH_METHODS = ("nw-euclid", "nw-cosderiv", "nw-mlkr", "ridge-pca")
DEFAULT_METHOD = "nw-cosderiv"   # the rule below, applied by tests/bench/bench_valence.py (seed 0, 5 draws)
NW_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)
KNN_K = (1, 2, 3, 5)
RIDGE_PCS = (2, 3, 5, 8, 12, 20)
RIDGE_ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MLKR_PCS = 10
MLKR_RANK = 2
MLKR_L2 = 1e-3
SELECT_DRAWS = 4
SELECT_SEED = 20200329


@dataclass(frozen=True)
class ValenceLabel:
    """One standard's label: formal Fe oxidation state ``valence``, bonding ``cls`` (see ``CLASSES``),
    ``formula`` as read from the name, ``note``; ``confidence`` "formula" or "name" (read into an
    ambiguous name)."""

    name: str
    valence: float
    cls: str
    formula: str
    note: str
    confidence: str = "formula"


def load_valence_labels(path: str | Path | None = None) -> dict[str, ValenceLabel]:
    """The labels file (default: the packaged ``valence_labels.toml``), by library name."""
    raw = tomllib.loads(Path(path or LABELS_PATH).read_text(encoding="utf-8"))
    out = {}
    for name, entry in raw.items():
        if entry.get("class") not in CLASSES:
            raise ValueError(f"valence label {name!r}: class {entry.get('class')!r} is not one of {CLASSES}")
        out[name] = ValenceLabel(name, float(entry["valence"]), entry["class"], entry.get("formula", name),
                                 entry.get("note", ""), entry.get("confidence", "formula"))
    return out


def training_names(labels: dict[str, ValenceLabel] | None = None, classes=TRAIN_CLASSES) -> tuple[str, ...]:
    """Names of the labelled standards in ``classes`` (the regression's training/evaluation subset)."""
    labels = load_valence_labels() if labels is None else labels
    return tuple(n for n, lab in labels.items() if lab.cls in classes)


def window_grid() -> np.ndarray:
    """The predictor's internal energy axis (eV): ``WINDOW_EV`` in ``STEP_EV`` steps."""
    lo, hi = WINDOW_EV
    return np.round(lo + STEP_EV * np.arange(int(round((hi - lo) / STEP_EV)) + 1), 6)


def interpolation(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices j and weights w with f(dst) = (1 - w) f[j] + w f[j + 1] (linear, eV axes)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if dst.min() < src[0] - 1e-9 or dst.max() > src[-1] + 1e-9:
        raise ValueError(f"grid {src[0]:.2f}-{src[-1]:.2f} eV does not cover the valence window "
                         f"{dst.min():.2f}-{dst.max():.2f} eV")
    j = np.clip(np.searchsorted(src, dst) - 1, 0, src.size - 2)
    return j, np.clip((dst - src[j]) / (src[j + 1] - src[j]), 0.0, 1.0)


def derivative_matrix(grid: np.ndarray, sigma_eV: float = DERIV_SIGMA_EV) -> np.ndarray:
    """Smoothed derivative (1/eV): rows are derivative-of-Gaussian weights of width ``sigma_eV``,
    truncated at 4 sigma and renormalised at the window ends so a linear ramp has slope exactly 1."""
    d = grid[None, :] - grid[:, None]
    g = np.exp(-0.5 * (d / sigma_eV) ** 2) * (np.abs(d) <= 4 * sigma_eV)
    g /= g.sum(1, keepdims=True)
    dc = d - (g * d).sum(1, keepdims=True)
    w = g * dc
    return w / (w * d).sum(1, keepdims=True)


# ---- metrics: a representation in which the distance is Euclidean (or L1 for w1) --------------------

def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip((a * a).sum(-1)[..., None] - 2 * a @ b.T + (b * b).sum(-1), 0.0, None)


def _pca(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (m,) and the first ``n`` principal directions (m, n) of the rows of ``x``."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:n].T


def _mlkr_loss(a_flat, z, zq, y, rank, l2):
    """Sum over query sets zq (r, k, p) of sum_i (y_i - NW_{-i}(zq_i))^2 on the training z (k, p), + l2|A|^2."""
    a = a_flat.reshape(rank, z.shape[1])
    w = z @ a.T
    loss, m = l2 * (a_flat @ a_flat), np.zeros((z.shape[1], z.shape[1]))
    for q in zq:
        d2 = _sqdist(q @ a.T, w)
        np.fill_diagonal(d2, np.inf)
        k = np.exp(-(d2 - d2.min(1, keepdims=True)))
        ks = k.sum(1)
        yhat = k @ y / ks
        r = yhat - y
        c = r[:, None] * (y[None, :] - yhat[:, None]) * k / ks[:, None]
        # sum_ij c_ij (q_i - z_j)(q_i - z_j)'
        m += (q.T * c.sum(1)) @ q + (z.T * c.sum(0)) @ z - q.T @ c @ z - z.T @ c.T @ q
        loss += r @ r
    return float(loss), (-4 * a @ m + 2 * l2 * a).ravel()


def fit_mlkr(z: np.ndarray, y: np.ndarray, zq: np.ndarray | None = None, rank: int = MLKR_RANK,
             l2: float = MLKR_L2) -> np.ndarray:
    """Learned map A (rank, p) minimising sum_i (y_i - NW_{-i}(zq_i))^2 + l2 |A|^2, kernel
    exp(-|A (zq_i - z_j)|^2), queries zq (r, k, p) = noisy copies of the training scores z (k, p)
    (default: z itself); start: the first ``rank`` scores over the median nearest-neighbour distance."""
    zq = z[None] if zq is None else zq
    d = np.sqrt(_sqdist(z, z) + np.diag(np.full(len(z), np.inf)))
    start = np.eye(rank, z.shape[1]) / max(np.median(d.min(1)), 1e-12)
    res = optimize.minimize(_mlkr_loss, start.ravel(), args=(z, zq, y, rank, l2), jac=True, method="L-BFGS-B",
                            options={"maxiter": 300})
    return res.x.reshape(rank, z.shape[1])


def selection_noise(x: np.ndarray, draws: int = SELECT_DRAWS, seed: int = SELECT_SEED) -> np.ndarray:
    """Noisy copies (draws, k, m) of the window rows x (k, m): 1 s/point transmission counting noise of the
    reference example (I0 = 23 760 /s, mu t = 1.75 mu + 0.45) at each point, fixed seed."""
    sd = np.sqrt(reference_noise_var(x))
    return x + sd * np.random.default_rng(seed).standard_normal((draws, *x.shape))


class _Metric:
    """Fitted on the training rows x (k, m) of the window; ``rep(x)`` the representation, ``rep_vjp``
    its vector-Jacobian product for the gradient, ``l1`` whether distances are L1 (w1)."""

    def __init__(self, name: str, x: np.ndarray, y: np.ndarray | None, wgrid: np.ndarray,
                 xq: np.ndarray | None = None):
        self.name, self.l1 = name, name == "w1"
        self.scale = np.sqrt(STEP_EV)
        if name == "cosderiv":
            self.deriv = derivative_matrix(wgrid)
        elif name == "mlkr":
            self.mean, self.u = _pca(x, MLKR_PCS)
            z = (x - self.mean) @ self.u
            self.zs = z[:, 0].std() or 1.0
            zq = None if xq is None else (xq - self.mean) @ self.u / self.zs
            self.a = fit_mlkr(z / self.zs, y, zq)
            self.proj = self.u @ self.a.T / self.zs          # (m, rank)
        elif name not in ("euclid", "w1"):
            raise ValueError(f"unknown similarity measure {name!r}: one of {METRICS}")
        self.train = self.rep(x)

    def rep(self, x: np.ndarray) -> np.ndarray:
        if self.name == "euclid":
            return x * self.scale
        if self.name == "w1":
            return x * STEP_EV
        if self.name == "cosderiv":
            g = x @ self.deriv.T
            return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
        return (x - self.mean) @ self.proj

    def rep_vjp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """d(v . rep(x))/dx for one x (m,)."""
        if self.name == "euclid":
            return v * self.scale
        if self.name == "w1":
            return v * STEP_EV
        if self.name == "cosderiv":
            g = self.deriv @ x
            n = max(np.linalg.norm(g), 1e-12)
            gh = g / n
            return self.deriv.T @ ((v - gh * (gh @ v)) / n)
        return self.proj @ v

    def dist(self, r: np.ndarray) -> np.ndarray:
        """Distances (s, k) of representations r (s, .) to the training set."""
        if self.l1:      # in chunks: the (s, k, m) differences of a large batch would not fit in cache
            return np.concatenate([np.abs(c[:, None, :] - self.train[None, :, :]).sum(-1)
                                   for c in np.array_split(r, max(1, len(r) // 16))])
        return np.sqrt(_sqdist(r, self.train))


# ---- regressors on a metric ---------------------------------------------------------------------------

def _nw_loo(dist: np.ndarray, y: np.ndarray, hs) -> np.ndarray:
    """Leave-one-out NW predictions (len(hs), ..., k): dist (..., k, k) from query i to training j,
    the pair i = j excluded."""
    d2 = dist**2
    d2[..., np.arange(y.size), np.arange(y.size)] = np.inf
    d2 = d2 - d2.min(-1, keepdims=True)           # row shift: same ratios, no underflow
    return np.array([(k := np.exp(-0.5 * d2 / h**2)) @ y / k.sum(-1) for h in hs])


def _knn_loo(dist: np.ndarray, y: np.ndarray, ks) -> np.ndarray:
    d = dist.copy()
    d[..., np.arange(y.size), np.arange(y.size)] = np.inf
    order = np.argsort(d, axis=-1, kind="stable")
    return np.array([y[order[..., :k]].mean(-1) for k in ks])


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge with an intercept on scores z (k, p): coefficients and intercept."""
    zm, ym = z.mean(0), y.mean()
    zc = z - zm
    beta = np.linalg.solve(zc.T @ zc + (alpha + 1e-12) * np.eye(z.shape[1]), zc.T @ (y - ym))
    return beta, float(ym - zm @ beta)


class ValencePredictor:
    """Fe valence from normalised mu(E) on ``grid`` (eV). Build with ``fit`` or ``from_library``; then
    ``predict(mu)`` (mu (n,) -> float, (s, n) -> (s,)), ``gradient(mu)`` (n,) d valence / d mu,
    ``interval(mean, cov or samples)``. ``loo_mae``/``loo_rmse``: its own leave-one-out error over the
    training standards (valence units), the model error to add in quadrature to the propagated
    posterior variance. ``hyper``: the hyper-parameters chosen inside the training set."""

    def __init__(self):
        raise TypeError("use ValencePredictor.fit(...) or ValencePredictor.from_library(...)")

    @classmethod
    def fit(cls, energy_eV, spectra, valences, grid=None, method: str = DEFAULT_METHOD,
            names=None, select_noise: bool = True, mlkr_loo: bool = True) -> ValencePredictor:
        """Train on ``spectra`` (m, k) given on ``energy_eV`` (m,) eV with labels ``valences`` (k,);
        predictions accept mu on ``grid`` (default ``default_grid()``). Hyper-parameters are chosen by
        leave-one-out MAE of ``SELECT_DRAWS`` noisy copies of each training standard (``selection_noise``;
        ``select_noise=False``: of the clean standards). ``mlkr_loo=False`` skips the refits that give
        the learned metric an honest ``loo_rmse`` (then it is in-sample)."""
        if method not in METHODS:
            raise ValueError(f"unknown valence method {method!r}: one of {METHODS}")
        self = object.__new__(cls)
        energy_eV = np.asarray(energy_eV, float)
        spectra, y = np.asarray(spectra, float), np.asarray(valences, float)
        if spectra.ndim != 2 or spectra.shape != (energy_eV.size, y.size) or y.size < 3:
            raise ValueError(f"fit needs spectra (m, k) = ({energy_eV.size}, {y.size}) with k >= 3, "
                             f"got {spectra.shape}")
        self.method, self.names, self.y = method, None if names is None else tuple(names), y
        self.wgrid = window_grid()
        j, w = interpolation(energy_eV, self.wgrid)
        x = ((1 - w)[:, None] * spectra[j] + w[:, None] * spectra[j + 1]).T      # (k, m)
        self.grid = default_grid() if grid is None else np.asarray(grid, float)
        self._j, self._w = interpolation(self.grid, self.wgrid)
        self.x = x
        kind, _, metric = method.partition("-")
        xq = selection_noise(x) if select_noise else x[None]
        self._xq = xq
        if kind == "ridge":
            clean, noisy = self._fit_ridge(x, xq, y)
        else:
            self.metric = _Metric(metric, x, y, self.wgrid, xq if select_noise else None)
            dist = self.metric.dist(self.metric.train)
            distq = np.stack([self.metric.dist(self.metric.rep(q)) for q in xq])
            if kind == "knn":
                best = int(np.argmin(np.abs(_knn_loo(distq, y, KNN_K) - y).mean((1, 2))))
                self.hyper = {"k": KNN_K[best]}
                clean, noisy = _knn_loo(dist, y, KNN_K[best:best + 1])[0], _knn_loo(distq, y, KNN_K[best:best + 1])[0]
            elif metric == "mlkr":
                self.h = float(np.sqrt(0.5))          # kernel exp(-|A dz|^2) = exp(-d^2 / (2 h^2))
                self.hyper = {"rank": MLKR_RANK, "pcs": MLKR_PCS, "l2": MLKR_L2}
                clean, noisy = _nw_loo(dist, y, [self.h])[0], _nw_loo(distq, y, [self.h])[0]
                if mlkr_loo:
                    clean, noisy = np.array([self._mlkr_heldout(i) for i in range(y.size)]).T
            else:
                nn = np.median((dist + np.diag(np.full(y.size, np.inf))).min(1))
                hs = nn * np.asarray(NW_BANDWIDTHS)
                best = int(np.argmin(np.abs(_nw_loo(distq, y, hs) - y).mean((1, 2))))
                self.h = float(hs[best])
                self.hyper = {"bandwidth_x_nn": NW_BANDWIDTHS[best], "bandwidth": self.h}
                clean, noisy = _nw_loo(dist, y, [self.h])[0], _nw_loo(distq, y, [self.h])[0]
        self.loo_residuals = clean - y
        self.loo_mae = float(np.abs(clean - y).mean())
        self.loo_rmse = float(np.sqrt(np.mean((clean - y) ** 2)))
        self.loo_mae_noisy = float(np.abs(noisy - y).mean())
        self.loo_rmse_noisy = float(np.sqrt(np.mean((noisy - y) ** 2)))
        return self

    @classmethod
    def from_library(cls, library: SpectraLibrary | None = None, grid=None, labels=None,
                     method: str = DEFAULT_METHOD, classes=TRAIN_CLASSES, exclude=(), **kw) -> ValencePredictor:
        """Train on the library's labelled standards in ``classes`` minus ``exclude`` (names)."""
        library = SpectraLibrary.from_csv() if library is None else library
        labels = load_valence_labels() if labels is None else labels
        missing = [n for n in library.names if n not in labels]
        if missing:
            raise ValueError(f"no valence label for {missing}")
        ex = {library.canonical(n) for n in exclude}
        keep = [i for i, n in enumerate(library.names) if labels[n].cls in classes and n not in ex]
        return cls.fit(library.energy, library.spectra[:, keep], [labels[library.names[i]].valence for i in keep],
                       grid=grid, method=method, names=[library.names[i] for i in keep], **kw)

    def _fit_ridge(self, x: np.ndarray, xq: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Choose (n_pcs, alpha) by leave-one-out MAE on the noisy copies (refit without each standard;
        the PCA is the whole training set's); returns the clean and noisy LOO predictions there."""
        mean, u = _pca(x, min(max(RIDGE_PCS), y.size - 1))
        z, zq = (x - mean) @ u, (xq - mean) @ u
        s1 = z[:, 0].var() * y.size
        best = None
        for p in sorted({min(p, u.shape[1]) for p in RIDGE_PCS}):
            for a in RIDGE_ALPHAS:
                clean, noisy = np.empty(y.size), np.empty((len(xq), y.size))
                for i in range(y.size):
                    keep = np.arange(y.size) != i
                    beta, b0 = _ridge(z[keep, :p], y[keep], a * s1)
                    clean[i], noisy[:, i] = z[i, :p] @ beta + b0, zq[:, i, :p] @ beta + b0
                mae = np.abs(noisy - y).mean()
                if best is None or mae < best[0] - 1e-12:
                    best = (mae, p, a, clean, noisy)
        _, p, a, clean, noisy = best
        beta, b0 = _ridge(z[:, :p], y, a * s1)
        self.hyper = {"pcs": p, "alpha_rel": a}
        self.coef = u[:, :p] @ beta                                  # (m,)
        self.intercept = float(b0 - mean @ self.coef)
        return clean, noisy

    def _mlkr_heldout(self, i: int) -> tuple[float, np.ndarray]:
        """Clean and noisy-copy predictions of standard i by the learned metric refitted without it."""
        keep = np.arange(self.y.size) != i
        m = _Metric("mlkr", self.x[keep], self.y[keep], self.wgrid, self._xq[:, keep] if len(self._xq) else None)
        d = m.dist(m.rep(np.concatenate([self.x[i:i + 1], self._xq[:, i]])))
        k = np.exp(-0.5 * (d**2 - (d**2).min(1, keepdims=True)) / self.h**2)
        v = k @ self.y[keep] / k.sum(1)
        return v[0], v[1:].mean()

    # ---- prediction -----------------------------------------------------------------------------------

    def _window(self, mu) -> tuple[np.ndarray, bool]:
        mu = np.asarray(mu, float)
        if mu.ndim not in (1, 2) or mu.shape[-1] != self.grid.size:
            raise ValueError(f"mu has shape {mu.shape}; the valence predictor's grid has {self.grid.size} points "
                             f"({self.grid[0]:.2f}-{self.grid[-1]:.2f} eV)")
        single = mu.ndim == 1
        mu = np.atleast_2d(mu)
        return mu[:, self._j] * (1 - self._w) + mu[:, self._j + 1] * self._w, single

    def predict(self, mu):
        """Valence of mu (n,) -> float or (s, n) -> (s,), mu on ``grid``."""
        x, single = self._window(mu)
        if self.method == "ridge-pca":
            v = x @ self.coef + self.intercept
        else:
            d = self.metric.dist(self.metric.rep(x))
            if self.method.startswith("knn"):
                idx = np.argpartition(d, self.hyper["k"] - 1, axis=1)[:, :self.hyper["k"]] \
                    if self.hyper["k"] < d.shape[1] else np.broadcast_to(np.arange(d.shape[1]), d.shape)
                v = self.y[idx].mean(1)
            else:
                d2 = d * d
                k = np.exp(-0.5 * (d2 - d2.min(1, keepdims=True)) / self.h**2)
                v = k @ self.y / k.sum(1)
        return float(v[0]) if single else v

    def _window_vjp(self, gx: np.ndarray) -> np.ndarray:
        out = np.zeros(self.grid.size)
        np.add.at(out, self._j, gx * (1 - self._w))
        np.add.at(out, self._j + 1, gx * self._w)
        return out

    def gradient(self, mu) -> np.ndarray:
        """d valence / d mu (n,) on ``grid`` at one spectrum mu (n,) (analytic; zero for k-NN, where the
        prediction is piecewise constant, and a sign subgradient for w1)."""
        x, single = self._window(mu)
        if not single:
            raise ValueError(f"gradient takes one spectrum (n,), got shape {np.shape(mu)}")
        x = x[0]
        if self.method == "ridge-pca":
            return self._window_vjp(self.coef)
        if self.method.startswith("knn"):
            return np.zeros(self.grid.size)
        r = self.metric.rep(x[None])[0]
        d = self.metric.dist(r[None])[0]
        k = np.exp(-0.5 * (d * d - (d * d).min()) / self.h**2)
        k /= k.sum()
        yhat = k @ self.y
        # d yhat / d r = sum_j k_j (y_j - yhat) d(-d_j^2 / 2h^2)/dr
        c = k * (self.y - yhat) / self.h**2
        if self.metric.l1:
            gr = -(c * d) @ np.sign(r[None, :] - self.metric.train)
        else:
            gr = -(c @ (r[None, :] - self.metric.train))
        return self._window_vjp(self.metric.rep_vjp(x, gr))

    def interval(self, mean_mu, cov_mu=None, samples=None, n_samples: int = 2000, seed: int = 0) -> ValenceInterval:
        """Valence (mean, sd) of a Gaussian posterior of mu, by the delta method (needs ``cov_mu`` (n, n);
        sd = sqrt(g' cov g + loo_rmse^2), g = ``gradient(mean_mu)``) and by pushing posterior samples
        (``samples`` (s, n), or ``n_samples`` drawn from N(mean_mu, cov_mu) with ``seed``) through
        ``predict`` (sd = sqrt(var + loo_rmse^2)). A field is NaN where its input is missing."""
        mean_mu = np.asarray(mean_mu, float)
        delta_mean = self.predict(mean_mu)
        delta_sd = np.nan
        if cov_mu is not None:
            cov_mu = np.asarray(cov_mu, float)
            if cov_mu.shape != (self.grid.size, self.grid.size):
                raise ValueError(f"cov_mu has shape {cov_mu.shape}; the grid has {self.grid.size} points")
            g = self.gradient(mean_mu)
            delta_sd = float(np.sqrt(max(g @ cov_mu @ g, 0.0) + self.loo_rmse**2))
            if samples is None:
                vals, vecs = np.linalg.eigh(cov_mu)
                root = vecs * np.sqrt(np.clip(vals, 0, None))
                z = np.random.default_rng(seed).standard_normal((n_samples, self.grid.size))
                samples = mean_mu + z @ root.T
        if samples is None:
            return ValenceInterval(delta_mean, delta_sd, np.nan, np.nan)
        v = self.predict(np.atleast_2d(samples))
        return ValenceInterval(delta_mean, delta_sd, float(v.mean()), float(np.sqrt(v.var() + self.loo_rmse**2)))


@dataclass(frozen=True)
class ValenceInterval:
    """Valence mean and sd (valence units) by the delta method and by posterior samples."""

    delta_mean: float
    delta_sd: float
    sample_mean: float
    sample_sd: float


# ---- baseline and manifold view ----------------------------------------------------------------------

class LinearCombinationFit:
    """What a scientist does by hand: non-negative least squares of mu on the window by 1-3 training
    standards, the subset with the smallest residual over all of them (exact: the best non-negative fit
    on a subset is the unconstrained fit on a sub-subset with all weights >= 0); valence = the
    weight-averaged label. ``predict(x_window)`` takes mu on ``window_grid()`` (k or (s, m))."""

    def __init__(self, x: np.ndarray, y: np.ndarray, max_components: int = 3):
        from itertools import combinations
        self.x, self.y = np.asarray(x, float), np.asarray(y, float)
        k = len(self.y)
        self.gram = self.x @ self.x.T
        self.subsets = [np.array(list(combinations(range(k), r))) for r in range(1, max_components + 1)]
        self.gsub = [self.gram[s[:, :, None], s[:, None, :]] for s in self.subsets]

    def predict(self, xw: np.ndarray):
        xw = np.atleast_2d(np.asarray(xw, float))
        out = np.empty(len(xw))
        for n, row in enumerate(xw):
            b = self.x @ row
            best, val = np.inf, np.nan
            for s, g in zip(self.subsets, self.gsub, strict=True):
                bs = b[s]
                w = np.linalg.solve(g, bs[..., None])[..., 0]
                ok = (w >= 0).all(1)
                if not ok.any():
                    continue
                resid = -2 * (w * bs).sum(1) + np.einsum("si,sij,sj->s", w, g, w)
                resid[~ok] = np.inf
                i = int(np.argmin(resid))
                if resid[i] < best:
                    best, val = resid[i], float(w[i] @ self.y[s[i]] / w[i].sum())
            out[n] = val
        return out


def distance_matrix(library: SpectraLibrary, metric: str = "euclid", labels=None) -> np.ndarray:
    """Pairwise distances (k, k) of the library's standards in ``metric`` (mlkr learned on the labelled
    training subset's valences; the others need no labels)."""
    x = library.on(window_grid()).T
    y = None
    if metric == "mlkr":
        labels = load_valence_labels() if labels is None else labels
        train = [i for i, n in enumerate(library.names) if labels[n].cls in TRAIN_CLASSES]
        m = _Metric("mlkr", x[train], np.array([labels[library.names[i]].valence for i in train]), window_grid())
    else:
        m = _Metric(metric, x, y, window_grid())
    r = m.rep(x)
    if m.l1:
        return np.abs(r[:, None] - r[None]).sum(-1)
    return np.sqrt(_sqdist(r, r))


def embedding(library: SpectraLibrary, metric: str = "euclid", method: str = "isomap", n_neighbors: int = 6,
              labels=None) -> np.ndarray:
    """2-D manifold view (k, 2) of the library in ``metric``: ``isomap`` (geodesic distances on the
    ``n_neighbors`` graph, then classical MDS) or ``mds`` (classical MDS of the distances)."""
    from scipy.sparse.csgraph import shortest_path
    d = distance_matrix(library, metric, labels)
    if method == "isomap":
        k = len(d)
        graph = np.zeros_like(d)
        nn = np.argsort(d, axis=1)[:, 1:n_neighbors + 1]
        rows = np.repeat(np.arange(k), nn.shape[1])
        graph[rows, nn.ravel()] = d[rows, nn.ravel()]
        graph = np.maximum(graph, graph.T)
        g = shortest_path(graph, directed=False)
        if np.isinf(g).any():    # disconnected pieces: fall back to the straight distance between them
            g = np.where(np.isinf(g), d * (g[np.isfinite(g)].max() / d.max()), g)
        d = g
    elif method != "mds":
        raise ValueError(f"unknown embedding {method!r}: isomap or mds")
    k = len(d)
    c = np.eye(k) - 1.0 / k
    b = -0.5 * c @ (d**2) @ c
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    return vecs[:, top] * np.sqrt(np.clip(vals[top], 0, None))
