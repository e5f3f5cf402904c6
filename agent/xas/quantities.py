"""The quantities an XAS scientist asks of a normalised Fe K-edge spectrum μ(E), as functions of μ on a
grid with their Jacobians, so a Gaussian posterior of μ gives each an interval (delta method) and the
design can aim at the variance of that quantity rather than of the whole spectrum.

Definitions (energies on the *calibrated* axis: the monochromator readback plus ``calibration_eV``, so
that Fe foil's first inflection is 7112.0 eV; the measured library's own axis needs +2.5 eV):

* ``edge_position`` (eV): the first inflection point of the main edge: the first local maximum of
  dμ/dE, μ smoothed by a Gaussian of σ = 0.5 eV, in 7105–7135 eV that reaches half the largest
  derivative there; located to sub-grid precision by Newton's method on d²μ/dE² = 0.
* ``pre_edge_area`` (edge-step units × eV) and ``pre_edge_centroid`` (eV): ∫(μ − b) dE and
  ∫E (μ − b) dE / ∫(μ − b) dE over 7108–7118 eV, b the cubic that matches the value and slope of the
  smoothed μ (σ = 0.5 eV) at 7108 and at 7118 eV: the edge's own rise continued under the peak, as
  a spline baseline does by hand. (A straight line through the window ends cuts through the rising
  edge: it gave 45 of the 61 standards a negative area.) For a metal the "pre-edge" is the 4p
  shoulder of the edge, for an intermetallic or Fe phthalocyanine the area can be negative: the
  numbers are then a convention, not a 1s→3d intensity.
* ``fractions``: linear-combination weights of the named library components fitted to μ over the
  grid by least squares, constrained to sum to 1 (not to be non-negative: the linear form keeps the
  posterior Gaussian; a negative weight says the components do not describe the sample).
* ``valence``: the Fe oxidation state from a spectral-similarity predictor (``agent.xas.valence``);
  its interval adds the predictor's own leave-one-out error in quadrature.

All of them are linear or smooth in μ, and each reports ``floor_std``: the std no measurement can
remove (the valence predictor's error; zero for the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.core.words import one_of

FOIL_E0_EV = 7112.0
SMOOTH_SIGMA_EV = 0.5
EDGE_WINDOW_EV = (7105.0, 7135.0)
PRE_EDGE_EV = (7108.0, 7118.0)

QUANTITY_HELP = {
    "spectrum": "the whole spectrum (RMSE over the grid; --spectrum says which)",
    "edge_position": "first inflection of the main edge (eV, Fe foil = 7112.0 eV)",
    "pre_edge_centroid": "intensity-weighted mean energy of the pre-edge 7108-7118 eV above a cubic baseline (eV)",
    "pre_edge_area": "area of the pre-edge 7108-7118 eV above a cubic baseline (edge-step units x eV)",
    "fractions": "linear-combination weights of --components, summing to 1",
    "valence": "Fe oxidation state by spectral similarity, with the predictor's own error",
}


def _weights(energy: np.ndarray) -> np.ndarray:
    """Trapezoid weights (eV) of a grid: the ∫ dE of a grid function."""
    d = np.diff(energy)
    w = np.zeros_like(energy)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


class _Smoothed:
    """Derivatives of μ smoothed by a Gaussian of σ (eV) at any energy, linear in μ:
    f^(k)(E) = Σᵢ μᵢ Δᵢ φ^(k)(E − Eᵢ) with φ the normalised Gaussian, Δ the trapezoid weights."""

    def __init__(self, energy: np.ndarray, sigma_eV: float):
        self.energy, self.sigma = np.asarray(energy, float), float(sigma_eV)
        self.w = _weights(self.energy)

    def rows(self, e: np.ndarray, order: int) -> np.ndarray:
        """(len(e), n): the linear maps μ → d^order f/dE^order at energies ``e`` (orders 0-3)."""
        s = self.sigma
        u = (np.atleast_1d(e)[:, None] - self.energy[None, :]) / s
        g = np.exp(-0.5 * u * u) / (np.sqrt(2 * np.pi) * s)
        poly = {0: np.ones_like(u), 1: -u / s, 2: (u * u - 1) / s**2, 3: (3 * u - u**3) / s**3}[order]
        return g * poly * self.w[None, :]


class EdgeFinder:
    """The first inflection of the main edge (module doc) on one grid: the smoothing rows built once over
    the window's support (± 6 σ: the kernel is < e^-18 beyond), then per spectrum a matrix-vector product
    for the peak search and a few Newton steps on f2 = d²μ/dE² = 0 (each bracketed to 0.1 eV)."""

    def __init__(self, energy, sigma_eV: float = SMOOTH_SIGMA_EV, window_eV=EDGE_WINDOW_EV,
                 calibration_eV: float = 0.0):
        energy = np.asarray(energy, float)
        self.n = energy.size
        self.sel = _support(energy + calibration_eV, window_eV, sigma_eV)
        self.cal = energy[self.sel] + calibration_eV
        self.inside = _search_points(self.cal, window_eV)
        if self.inside.size < 3:
            raise ValueError(f"the grid {energy[0] + calibration_eV:.1f}-{energy[-1] + calibration_eV:.1f} eV "
                             f"does not cover the edge window {window_eV[0]:.0f}-{window_eV[1]:.0f} eV")
        self.sm = _Smoothed(self.cal, sigma_eV)
        self.d1 = self.sm.rows(self.cal[self.inside], 1)

    def find(self, mus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the rows of ``mus`` (s, n): (E* (s,) on the calibrated axis, found (s,), f3 = d³μ/dE³ at E*)."""
        mus = np.atleast_2d(mus)[:, self.sel]
        d = mus @ self.d1.T
        peak = (d[:, 1:-1] >= d[:, :-2]) & (d[:, 1:-1] > d[:, 2:]) & (d[:, 1:-1] >= 0.5 * d.max(1, keepdims=True)) \
            & (d[:, 1:-1] > 0)
        e = self.cal[self.inside[np.argmax(peak, 1) + 1]]
        for _ in range(8):
            f2 = np.einsum("sn,sn->s", self.sm.rows(e, 2), mus)
            f3 = np.einsum("sn,sn->s", self.sm.rows(e, 3), mus)
            step = np.where(f3 < 0, np.clip(-f2 / np.where(f3 < 0, f3, -1.0), -0.1, 0.1), 0.0)
            e = e + step
            if np.all(np.abs(step) < 1e-7):
                break
        return e, peak.any(1), np.einsum("sn,sn->s", self.sm.rows(e, 3), mus)

    def gradient(self, e: float, f3: float) -> np.ndarray:
        """dE*/dμ (n,) at the inflection ``e`` with d³μ/dE³ = ``f3`` (implicit function: −∂f2/∂μ / f3)."""
        grad = np.zeros(self.n)
        if f3 < 0:
            grad[self.sel] = -self.sm.rows(np.array([e]), 2)[0] / f3
        return grad


def first_inflection(energy, mu, sigma_eV: float = SMOOTH_SIGMA_EV, window_eV=EDGE_WINDOW_EV,
                     calibration_eV: float = 0.0) -> tuple[float, np.ndarray]:
    """(E*, dE*/dμ): the first inflection of the main edge of ``mu`` on ``energy`` (eV), on the axis
    ``energy + calibration_eV`` (where the window is), and its gradient with respect to the grid values
    (``EdgeFinder``). ``ValueError`` if the window holds no rising edge."""
    finder = EdgeFinder(energy, sigma_eV, window_eV, calibration_eV)
    return _found(finder, np.asarray(mu, float))


def _found(finder: EdgeFinder, mu: np.ndarray) -> tuple[float, np.ndarray]:
    (e,), (ok,), (f3,) = finder.find(mu)
    if not ok:
        raise ValueError("no rising edge in the edge window: dμ/dE has no maximum there")
    return float(e), finder.gradient(float(e), float(f3))


def _search_points(cal: np.ndarray, window_eV) -> np.ndarray:
    """Grid indices in ``window_eV`` where the first maximum of dμ/dE is searched: every point, or every
    k-th on a grid finer than 0.1 eV (σ = 0.5 eV: Newton's method refines from there)."""
    inside = np.flatnonzero((cal >= window_eV[0]) & (cal <= window_eV[1]))
    stride = max(1, int(round(0.1 / max(float(np.median(np.diff(cal))), 1e-9))))
    return inside[::stride]


def _support(cal: np.ndarray, window_eV, sigma_eV: float) -> slice:
    """The grid slice the smoothed derivatives in ``window_eV`` depend on (± 6 σ)."""
    lo, hi = np.searchsorted(cal, [window_eV[0] - 6 * sigma_eV, window_eV[1] + 6 * sigma_eV])
    return slice(int(lo), int(hi) + 1)


@dataclass
class Quantity:
    """A quantity of μ on ``energy`` (eV, monochromator axis): ``evaluate(mu)`` → (values (q,),
    Jacobian (q, n)). ``labels``: one name per component; ``unit``; ``floor_std`` (q,): error no
    measurement removes, added in quadrature to the posterior std."""

    name: str
    energy: np.ndarray
    calibration_eV: float = 0.0
    unit: str = ""
    labels: tuple[str, ...] = ()
    linear: bool = False  # affine in μ: the delta method is exact

    @property
    def on_energy_axis(self) -> bool:
        """An energy (eV): it moves with the monochromator's calibration (the reference foil's ε)."""
        return self.unit == "eV"

    @property
    def floor_std(self) -> np.ndarray:
        return np.zeros(len(self.labels))

    def evaluate(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def values(self, mus: np.ndarray) -> np.ndarray:
        """The quantity of each row of ``mus`` (s, n) → (s, q); NaN where it is undefined."""
        out = np.full((len(mus), len(self.labels)), np.nan)
        for i, mu in enumerate(mus):
            try:
                out[i] = self.evaluate(mu)[0]
            except ValueError:
                pass
        return out

    def moments(self, mean: np.ndarray, cov_of) -> tuple[np.ndarray, np.ndarray]:
        """(value, std) (q,): the quantity at the posterior mean ``mean`` of μ and its delta-method std
        with the floor; ``cov_of(J)`` returns Cov(J μ) (q, q) under the posterior."""
        value, jac = self.evaluate(mean)
        var = np.clip(np.diag(np.atleast_2d(cov_of(jac))), 0, None)
        return value, np.sqrt(var + self.floor_std**2)


@dataclass
class EdgePosition(Quantity):
    def __post_init__(self):
        self.unit, self.labels = "eV", ("edge_position",)
        self._finder = EdgeFinder(self.energy, calibration_eV=self.calibration_eV)

    def evaluate(self, mu):
        e, grad = _found(self._finder, np.asarray(mu, float))
        return np.array([e]), grad[None, :]

    def values(self, mus):
        """Vectorised over the rows of ``mus``: NaN where no edge is found."""
        e, ok, _ = self._finder.find(mus)
        return np.where(ok, e, np.nan)[:, None]


@dataclass
class PreEdge(Quantity):
    """``pre_edge_area`` or ``pre_edge_centroid`` (module doc): linear maps built once per grid."""

    def __post_init__(self):
        cal = np.asarray(self.energy, float) + self.calibration_eV
        lo, hi = PRE_EDGE_EV
        if cal[0] > lo - 4 * SMOOTH_SIGMA_EV or cal[-1] < hi + 4 * SMOOTH_SIGMA_EV:
            raise ValueError(f"the grid {cal[0]:.1f}-{cal[-1]:.1f} eV does not cover the pre-edge {lo:.0f}-{hi:.0f} eV "
                             f"and its baseline")
        sm = _Smoothed(cal, SMOOTH_SIGMA_EV)
        (v0, v1), (s0, s1) = sm.rows(np.array([lo, hi]), 0), sm.rows(np.array([lo, hi]), 1)
        t, span = np.clip((cal - lo) / (hi - lo), 0, 1), hi - lo
        # b(E) = Σ_k h_k(t) (row_k · μ), h_k the cubic Hermite basis: linear in μ, never an n × n matrix
        hermite = np.stack([2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, 3 * t**2 - 2 * t**3, t**3 - t**2])
        rows = np.stack([v0, span * s0, v1, span * s1])
        w = _weights(cal) * ((cal >= lo) & (cal <= hi))
        self._area = w - (hermite @ w) @ rows  # ∫ (μ - b) dE
        self._moment = w * cal - (hermite @ (w * cal)) @ rows  # ∫ E (μ - b) dE
        self.labels = (self.name,)
        self.unit = "eV" if self.name == "pre_edge_centroid" else "eV x edge step"
        self.linear = self.name == "pre_edge_area"

    def values(self, mus):
        area, moment = np.atleast_2d(mus) @ self._area, np.atleast_2d(mus) @ self._moment
        if self.name == "pre_edge_area":
            return area[:, None]
        return np.where(area > 0, moment / np.where(area > 0, area, 1.0), np.nan)[:, None]

    def evaluate(self, mu):
        area, moment = float(self._area @ mu), float(self._moment @ mu)
        if self.name == "pre_edge_area":
            return np.array([area]), self._area[None, :]
        if not area > 0:
            raise ValueError(f"the pre-edge area above the baseline is {area:.3g} eV: its centroid is undefined")
        return np.array([moment / area]), ((self._moment - moment / area * self._area) / area)[None, :]


@dataclass
class Fractions(Quantity):
    """Sum-to-one least-squares weights of ``components`` (their μ on the grid, columns): w = A μ + c."""

    components: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def __post_init__(self):
        c = np.asarray(self.components, float)
        if c.ndim != 2 or c.shape[1] < 2 or c.shape[0] != np.size(self.energy):
            raise ValueError(f"fractions need at least 2 component spectra on the grid, got shape {c.shape}")
        g_inv = np.linalg.inv(c.T @ c)
        one = np.ones(c.shape[1])
        k = g_inv @ one / (one @ g_inv @ one)
        self._a = (np.eye(c.shape[1]) - np.outer(k, one)) @ g_inv @ c.T
        self._c = k
        self.unit, self.linear = "fraction", True

    def evaluate(self, mu):
        return self._a @ mu + self._c, self._a

    def values(self, mus):
        return np.atleast_2d(mus) @ self._a.T + self._c


@dataclass
class Valence(Quantity):
    """The predictor's valence (``agent.xas.valence.ValencePredictor``, fitted on the library axis) of μ."""

    predictor: object = None

    def __post_init__(self):
        self.unit, self.labels = "", ("valence",)

    @property
    def floor_std(self):
        return np.array([float(self.predictor.loo_rmse)])

    def evaluate(self, mu):
        return np.array([float(self.predictor.predict(mu))]), np.asarray(self.predictor.gradient(mu))[None, :]

    def values(self, mus):
        return np.asarray(self.predictor.predict(np.atleast_2d(mus)), float).reshape(-1, 1)


def shift_matrix(energy: np.ndarray, delta_eV: float):
    """Sparse J (n, n) with (J μ)(E) = μ(E − ``delta_eV``) by linear interpolation on the grid ``energy`` (eV),
    held at the ends: the readback spectrum moved onto an axis offset by ``delta_eV``."""
    from scipy import sparse

    e = np.asarray(energy, float)
    at = np.clip(e - delta_eV, e[0], e[-1])
    j = np.clip(np.searchsorted(e, at) - 1, 0, e.size - 2)
    w = (at - e[j]) / (e[j + 1] - e[j])
    rows = np.repeat(np.arange(e.size), 2)
    return sparse.csr_matrix((np.column_stack([1 - w, w]).ravel(), (rows, np.column_stack([j, j + 1]).ravel())),
                             shape=(e.size, e.size))


def library_calibration_eV(library) -> float:
    """The shift (eV) that puts the library's axis where Fe foil's first inflection is 7112.0 eV."""
    foil = library.spectra[:, library.index("Fe-foil")]
    return FOIL_E0_EV - first_inflection(library.energy, foil)[0]


def make_quantity(name: str, energy, library, components=None, calibration_eV: float | None = None,
                  predictor=None, training=None) -> Quantity | None:
    """The quantity ``name`` (``QUANTITY_HELP``; ``"spectrum"`` → None: the whole-spectrum design) on the
    grid ``energy`` (eV, monochromator axis); ``library`` gives the fraction components and the axis
    calibration (default: the library's own axis, ``library_calibration_eV``); ``predictor`` the valence
    predictor (default: fitted on ``training``, default ``library``: pass the library without the sample).
    ``ValueError`` (one line) on an unknown name or component."""
    name = one_of(str(name).replace("-", "_"), tuple(QUANTITY_HELP), "quantity")
    if components and name != "fractions":
        raise ValueError(f"--components is for the fractions quantity, not {name}")
    if name == "spectrum":
        return None
    energy = np.asarray(energy, float)
    cal = library_calibration_eV(library) if calibration_eV is None else float(calibration_eV)
    if name == "edge_position":
        q = EdgePosition(name, energy, cal)
        q.evaluate(library.on(energy).mean(1))  # the window must hold an edge
        return q
    if name.startswith("pre_edge"):
        return PreEdge(name, energy, cal)
    if name == "fractions":
        comps = [c.strip() for c in (components.split(",") if isinstance(components, str) else components or [])
                 if c.strip()]
        if len(comps) < 2:
            raise ValueError("fractions need --components: at least two library standards, e.g. Fe-foil,a-Fe2O3")
        comps = [library.canonical(c) for c in comps]
        if len(set(comps)) != len(comps):
            raise ValueError(f"fractions: a component is named twice in {', '.join(comps)}")
        q = Fractions(name, energy, cal, components=library.only(comps).on(energy))
        q.labels = tuple(comps)
        return q
    if predictor is None:
        from agent.xas.valence import ValencePredictor

        predictor = ValencePredictor.from_library(training if training is not None else library, energy)
    return Valence(name, energy, cal, predictor=predictor)
