"""Choice of the imaging energies of full-field transmission XAS imaging (issue 15, DESIGN §4.4).

Each energy is a full image, so the number of energies sets the beamtime. Per pixel the absorbance is
A(E) = b·s(E) + t·μ_p(E) + noise, with μ_p the normalised spectrum of phase p, b (background absorbance,
~0.3) and t (edge jump, 0.4–1.5) unknown per pixel, s(E) = (E/7112 eV)^``background_power`` (0: the constant
background the classifier ``agent.imaging.classify`` profiles; -2.8 is the simulator's matrix absorption).
Noise of one pixel of one image (Gaussian approximation of the Poisson counts, detector factors ignored):
var A = 1/N_t + 1/(n_flat·N_0), N_0 = n0 incident photons per pixel, N_t = N_0·exp(−A). The effective gain
g_eff = gain·Σw² of the PSF and the read noise change this by a factor common to all energies (the read
noise, ~1 photon² per pixel, is negligible at 10³–10⁴ photons): they rescale the dose, not the choice.

Separation of two phases. The classifier decides between phases by the profile likelihood over (b, t). For a
pixel of phase a (nominal b = ``background``, t = ``thickness``) the expected χ² of phase b is
d²(a→b) = min over (β, τ ≥ 0) of Σ_E w_a(E)·(A_a(E) − β s(E) − τ μ_b(E))², with w_a = 1/var A under phase a: the
squared Mahalanobis distance of a's absorbance vector from the half-plane {β s + τ μ_b, τ ≥ 0} (the classifier
gives a class fitted upside down the background-only χ²), under a's noise. It is
directional (d(a→b) ≠ d(b→a) when the edge contrasts differ); each direction is used with its own truth's
noise. Two lines through the origin at angle θ, the truth at distance r from it along its line: d = r sin θ,
the nearest-line decision boundary is at r sin(θ/2) ≈ d/2, so P(a→b) ≈ Φ(−d(a→b)/2).

Bound. P_err ≤ Σ_a π_a Σ_{b ∉ group(a)} Φ(−d(a→b)/2) (the union bound over wrong classes; for a pair of equal
priors it is π_a Φ + π_b Φ, not 2π_aπ_b Φ, which would understate it by the number of phases). Phases that
all candidate energies at ``group_dose`` times the dose cannot separate (min of both directions < ``d_min``)
are grouped (single linkage) and only between-group errors count. For the Fe K library at n0 = 10⁴ these are
78_Permalloy/mu-metal and 45_Permalloy/42_Invar (d = 1.6, 2.3 at 10⁵ photons with 211 energies); SUS304 and
SUS316L are not (d = 20 there), but only many passes separate them and the other alloys. The union bound is
conservative: at n0 = 10⁴ with 12 designed energies it is 0.18 where simulated pixels classified by
``classify.class_loglik`` err between groups at 0.11.

Why no normalisation points are needed, and why the design still starts from a pre-edge and a post-edge
energy: with (b, t) profiled, any two energies fit every phase exactly (d = 0), so the first two choices of a
greedy search carry no information. The design starts from a pre-edge (< 7105 eV, pins b) and a post-edge
(> 7160 eV, pins t: the edge-jump map) energy, adds energies greedily, then swaps each energy for the best
other candidate. ``anchors=True`` keeps one energy in each region through the swaps (maps of b and t that do
not lean on the phase model, and a lever arm against a misfit of the background's energy dependence: the
simulator's b·(E/7112)^-2.8 against a constant b is a 0.012 absorbance ramp over 7085–7190 eV at b = 0.3);
``anchors=False`` lets the swaps move them (the bound gains < 1 % on the Fe K library).
Energies are distinct; more dose is more passes: ``passes`` images (and flat sets) per energy divide every
variance by ``passes`` (d ∝ √passes). Flats taken once per energy instead leave 1/(n_flat·N_0) as a floor: at
n0 = 10⁴ and 10 flats the alloys of the library then never reach a 10⁻³ bound, so flats go with every pass
by default. Design at the dose that will be used: a design for one pass spends its energies on pairs that only
many passes separate; ``design_for_target`` searches the passes for the fewest images k·passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import ndtr

PRE_EDGE_MAX_EV = 7105.0
POST_EDGE_MIN_EV = 7160.0
BACKGROUND_REF_EV = 7112.0
#: Pairs contributing together at most this fraction of the bound are not re-evaluated in a greedy step.
PRUNE_TOL = 1e-7


@dataclass(frozen=True)
class EnergyDesign:
    """Chosen energies (eV, sorted), the bound on the per-pixel between-group misclassification at ``n0``
    (photons per pixel per image) and ``passes`` (images and flat sets per energy), the greedy ``history``
    ((energy eV, bound after adding it); the first two are the anchors, at the no-information bound
    0.5·Σπ_a·(phases outside a's group), which may exceed 1: it is a union bound), the indistinguishable
    ``groups`` (names; singletons included), the ``worst_pairs`` ((name, name, d) of the largest contributions,
    d the smaller direction) and ``passes_to_target`` (passes of these energies at ``n0`` for ``target_error``,
    flats every pass; None: not within 10⁴ passes)."""

    energies_eV: np.ndarray
    expected_error: float
    history: tuple[tuple[float, float], ...]
    groups: tuple[tuple[str, ...], ...]
    worst_pairs: tuple[tuple[str, str, float], ...]
    n0: float
    n_flat: int
    thickness: float
    background: float
    target_error: float
    passes_to_target: int | None
    passes: int = 1
    anchors: bool = True
    names: tuple[str, ...] = field(default=(), repr=False)

    @property
    def k(self) -> int:
        return int(self.energies_eV.size)

    def to_dict(self) -> dict:
        """JSON values."""
        return {"energies_eV": [float(e) for e in self.energies_eV], "k": self.k,
                "expected_error": float(self.expected_error),
                "history": [[float(e), float(b)] for e, b in self.history],
                "groups": [list(g) for g in self.groups],
                "worst_pairs": [[a, b, float(d)] for a, b, d in self.worst_pairs],
                "n0": float(self.n0), "n_flat": int(self.n_flat), "thickness": float(self.thickness),
                "background": float(self.background), "target_error": float(self.target_error),
                "passes_to_target": self.passes_to_target, "passes": int(self.passes),
                "anchors": bool(self.anchors)}


def full_xanes_energies(step_eV: float = 1.0, lo: float = 7090.0, hi: float = 7190.0) -> np.ndarray:
    """A conventional full XANES imaging stack: ``lo`` to ``hi`` inclusive every ``step_eV`` (eV; 101 energies)."""
    if not (step_eV > 0 and hi > lo):
        raise ValueError(f"need step_eV > 0 and hi > lo, got {step_eV!r}, {lo!r}, {hi!r}")
    return np.round(lo + step_eV * np.arange(int(math.floor((hi - lo) / step_eV + 1e-9)) + 1), 6)


def imaging_beamtime_s(n_energies: int, passes: int = 1, exposure_s: float = 1.0, readout_s: float = 0.01,
                       move_s_per_energy: float = 1.0, n_flat: int = 10, *, flats_each_pass: bool = False,
                       n_dark: int = 10, sample_move_s: float = 0.0) -> float:
    """Beamtime (s) of a stack: every pass visits every energy (one monochromator move and settle,
    ``move_s_per_energy``, and one image); ``n_flat`` sample-out flats per energy, once (or every pass with
    ``flats_each_pass``), each flat set costing two sample-stage moves of ``sample_move_s``; ``n_dark`` darks
    once. Every frame costs ``exposure_s + readout_s`` (flats at the sample's exposure)."""
    if min(n_energies, passes, n_flat, n_dark) < 0 or min(exposure_s, readout_s, move_s_per_energy,
                                                          sample_move_s) < 0:
        raise ValueError("counts and times must be >= 0")
    frame = exposure_s + readout_s
    flat_sets = n_energies * (passes if flats_each_pass else min(passes, 1))
    return float(passes * n_energies * (move_s_per_energy + frame) + flat_sets * (n_flat * frame + 2 * sample_move_s)
                 + n_dark * frame)


def default_candidates(grid_eV: np.ndarray, lo: float = 7085.0, hi: float = 7190.0, step_eV: float = 0.5):
    """The library grid (eV) between ``lo`` and ``hi`` thinned to about ``step_eV``."""
    grid = np.asarray(grid_eV, float)
    inside = grid[(grid >= lo - 1e-9) & (grid <= hi + 1e-9)]
    if inside.size == 0:
        raise ValueError(f"the grid {grid.min():.2f}-{grid.max():.2f} eV has no energy in {lo}-{hi} eV")
    stride = max(1, int(round(step_eV / np.median(np.diff(grid))))) if grid.size > 1 else 1
    return inside[::stride]


def _interp_rows(spectra: np.ndarray, grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rows of ``spectra`` (n, m) on ``grid`` (m,) linearly interpolated at ``x`` -> (n, len(x))."""
    if x.min() < grid[0] - 1e-9 or x.max() > grid[-1] + 1e-9:
        raise ValueError(f"energies {x.min():.2f}-{x.max():.2f} eV outside the grid {grid[0]:.2f}-{grid[-1]:.2f} eV")
    j = np.clip(np.searchsorted(grid, x) - 1, 0, grid.size - 2)
    w = (x - grid[j]) / (grid[j + 1] - grid[j])
    return (1 - w) * spectra[:, j] + w * spectra[:, j + 1]


@dataclass
class _Problem:
    """Phases at the candidate energies and the noise weights of each phase as the truth."""

    mu: np.ndarray          # (n, nc) normalised spectra
    s: np.ndarray           # (nc,) background shape
    absorb: np.ndarray      # (n, nc) nominal absorbance
    thickness: float
    n_flat: float

    def weights(self, n0: float, passes: float = 1.0, flat_passes: float = 1.0) -> np.ndarray:
        """1/var A (n, nc) for ``passes`` images of n0 photons summed and ``flat_passes``·n_flat flats averaged."""
        return n0 / (np.exp(self.absorb) / passes + 1.0 / (self.n_flat * flat_passes))

    def pair_terms(self, w: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        """(6, P, nc) per-energy terms of the normal equations of regressing μ_a on [s, μ_b] with w_a."""
        mu, s = self.mu, self.s
        wa = w[ia]
        ma, mb = mu[ia], mu[ib]
        wmb = wa * mb
        return np.stack([wa * (s * s), wmb * s, wmb * mb, wa * (s * ma), wmb * ma, wa * ma * ma])

    def full_d2(self, w: np.ndarray) -> np.ndarray:
        """d²(a→b) (n, n) with all candidate energies."""
        mu, s = self.mu, self.s
        g11 = (w * s * s).sum(1)[:, None]
        g12 = (w * s) @ mu.T
        g22 = w @ (mu * mu).T
        h1 = (w * s * mu).sum(1)[:, None]
        h2 = (w * mu) @ mu.T
        q = (w * mu * mu).sum(1)[:, None]
        return self.thickness**2 * _rss(g11, g12, g22, h1, h2, q)


def _rss(g11, g12, g22, h1, h2, q):
    """χ² of phase a's vector under phase b from the weighted normal-equation sums (``_rss_inplace``)."""
    g = np.stack(np.broadcast_arrays(g11, g12, g22, h1, h2, q)).astype(float)
    return _rss_inplace(g)


def _rss_inplace(g: np.ndarray) -> np.ndarray:
    """min over (β, τ ≥ 0) of Σ w (μ_a − β s − τ μ_b)² from the sums ``g`` = (Σws², Σwsμ_b, Σwμ_b², Σwsμ_a,
    Σwμ_aμ_b, Σwμ_a²) (6, ...), overwriting ``g``. Sequentially: r0 = the residual with the background only,
    minus the τ term e²/c (c = |μ_b ⊥ s|², e = μ_a⊥·μ_b⊥), which counts only for τ = e/c > 0 (the classifier's
    rule: a class upside down gets the background-only χ²) and only where c ≥ 1e-12·Σwμ_b² (else μ_b ∝ s at
    these energies to rounding: the class's shape explains nothing). Clipped to [0, r0]."""
    g11, g12, g22, h1, h2, q = g
    np.reciprocal(g11, out=g11)
    ratio = h1 * g11
    h1 *= ratio
    q -= h1
    np.maximum(q, 0.0, out=q)
    ratio *= g12
    h2 -= ratio
    floor = g22 * 1e-12
    g12 *= g12
    g12 *= g11
    g22 -= g12
    np.maximum(h2, 0.0, out=h2)
    h2 *= h2
    np.divide(h2, g22, out=h2, where=g22 > floor)
    h2[g22 <= floor] = 0.0
    np.minimum(h2, q, out=h2)
    q -= h2
    return q


def _bound(d2: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """Σ_p pw_p Φ(−d_p/2) over the first axis of d² (P, ...)."""
    return np.tensordot(pw, ndtr(-0.5 * np.sqrt(d2)), axes=(0, 0))


def _labels_from_groups(groups, names: tuple[str, ...]) -> np.ndarray:
    """Group label per phase from a sequence of groups (names or indices); phases not named are singletons."""
    n = len(names)
    labels = np.arange(n)
    seen = set()
    for g in groups:
        idx = [names.index(x) if isinstance(x, str) else int(x) for x in g]
        if any(i < 0 or i >= n for i in idx) or seen.intersection(idx):
            raise ValueError(f"invalid or overlapping group {list(g)!r}")
        seen.update(idx)
        labels[idx] = min(idx)
    return np.unique(labels, return_inverse=True)[1]


def _group_tuples(labels: np.ndarray, names: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(names[i] for i in np.flatnonzero(labels == g)) for g in np.unique(labels))


def _setup(spectra, grid_eV, names, candidates, thickness, background, background_power, n_flat):
    from agent.xas.prior import SpectraLibrary

    if isinstance(spectra, SpectraLibrary):
        names = spectra.names if names is None else names
        spectra, grid_eV = spectra.spectra.T, spectra.energy if grid_eV is None else grid_eV
    spectra = np.asarray(spectra, float)
    grid = np.asarray(grid_eV, float)
    if spectra.ndim != 2 or spectra.shape[0] < 2 or grid.ndim != 1 or spectra.shape[1] != grid.size:
        raise ValueError(f"need spectra (n_std >= 2, n_grid) on grid_eV (n_grid,), got {spectra.shape}, {grid.shape}")
    if not np.all(np.isfinite(spectra)) or not np.all(np.diff(grid) > 0):
        raise ValueError("spectra must be finite and grid_eV strictly increasing")
    if not (thickness > 0 and background >= 0 and n_flat >= 1):
        raise ValueError(f"need thickness > 0, background >= 0, n_flat >= 1, got {thickness}, {background}, {n_flat}")
    names = tuple(str(i) for i in range(spectra.shape[0])) if names is None else tuple(str(x) for x in names)
    if len(names) != spectra.shape[0]:
        raise ValueError(f"{len(names)} names for {spectra.shape[0]} spectra")
    cand = default_candidates(grid) if candidates is None else np.unique(np.asarray(candidates, float))
    mu = _interp_rows(spectra, grid, cand)
    s = (cand / BACKGROUND_REF_EV) ** background_power
    problem = _Problem(mu, s, background * s[None, :] + thickness * mu, float(thickness), float(n_flat))
    return problem, cand, names


def _prior(prior, n: int) -> np.ndarray:
    pi = np.full(n, 1.0 / n) if prior is None else np.asarray(prior, float)
    if pi.shape != (n,) or np.any(pi < 0) or not pi.sum() > 0:
        raise ValueError(f"prior must be ({n},) non-negative with a positive sum")
    return pi / pi.sum()


def _between_pairs(labels: np.ndarray, pi: np.ndarray):
    ia, ib = np.nonzero(labels[:, None] != labels[None, :])
    return ia, ib, pi[ia]


def design_energies(spectra, grid_eV=None, *, n0: float = 1e4, n_flat: int = 10, thickness: float = 1.0,
                    background: float = 0.3, k_max: int = 12, target_error: float = 1e-3, candidates=None,
                    prior=None, groups=None, names=None, passes: int = 1, anchors: bool = True,
                    background_power: float = 0.0, d_min: float = 3.0, group_dose: float = 10.0,
                    swap_passes: int = 2, n_worst: int = 5) -> EnergyDesign:
    """Imaging energies (eV) minimising the bound on the per-pixel misclassification among library phases.

    ``spectra`` (n_std, n_grid) normalised library spectra on ``grid_eV`` (eV), or a ``SpectraLibrary``
    (grid and names from it); ``names`` (n_std,) for the report. ``n0`` photons per pixel per image,
    ``n_flat`` flats per energy, ``passes`` images and flat sets per energy (variance / passes), nominal
    ``thickness`` (edge jump t) and ``background`` (b) of a pixel: d scales about as t, so a design for thin
    regions (t = 0.4) should pass that t. ``prior`` phase
    probabilities (uniform). ``candidates`` (eV; default the grid thinned to 0.5 eV over 7085–7190 eV).
    ``groups``: the indistinguishable groups (sequences of names or indices) instead of the automatic
    grouping (min of both directions of d with all candidates at ``group_dose``·passes·n0 < ``d_min``).
    Greedy from a pre-edge and a post-edge anchor until the bound ≤ ``target_error`` or ``k_max`` energies,
    then up to ``swap_passes`` passes of single swaps (see the module docstring for ``anchors``)."""
    problem, cand, names = _setup(spectra, grid_eV, names, candidates, thickness, background, background_power,
                                  n_flat)
    if not (n0 > 0 and k_max >= 3 and 0 < target_error < 1 and passes >= 1):
        raise ValueError(f"need n0 > 0, k_max >= 3, 0 < target_error < 1, passes >= 1, got {n0}, {k_max}, "
                         f"{target_error}, {passes}")
    n = len(names)
    pi = _prior(prior, n)
    if groups is None:
        d2_all = problem.full_d2(problem.weights(n0 * group_dose * passes))
        close = np.sqrt(np.minimum(d2_all, d2_all.T)) < d_min
        np.fill_diagonal(close, False)
        labels = connected_components(csr_matrix(close), directed=False)[1]
    else:
        labels = _labels_from_groups(groups, names)
    ia, ib, pw = _between_pairs(labels, pi)

    pre, post = np.flatnonzero(cand < PRE_EDGE_MAX_EV), np.flatnonzero(cand > POST_EDGE_MIN_EV)
    if pre.size == 0 or post.size == 0:
        raise ValueError(f"candidates need a pre-edge (< {PRE_EDGE_MAX_EV} eV) and a post-edge "
                         f"(> {POST_EDGE_MIN_EV} eV) energy")
    chosen = [int(pre[pre.size // 2]), int(post[post.size // 2])]
    terms = problem.pair_terms(problem.weights(n0 * passes), ia, ib)          # (6, P, nc)
    full_bound = float(0.5 * pw.sum())
    history = [(float(cand[c]), full_bound) for c in chosen]

    def evaluate(sums: np.ndarray) -> np.ndarray:
        """Bound (nc,) after adding each candidate to the energies of ``sums`` (6, P). Pairs whose summed
        contribution is ≤ ``PRUNE_TOL`` of the bound now are kept at their present (upper-bound) value: adding
        an energy only increases d."""
        now = pw * ndtr(-0.5 * thickness * np.sqrt(_rss(*sums)))
        order = np.argsort(now)
        cum = np.cumsum(now[order])
        keep = np.sort(order[cum > PRUNE_TOL * cum[-1]])
        g = np.take(terms, keep, axis=1)
        g += sums[:, keep, None]
        d = _rss_inplace(g)
        d *= thickness**2
        np.sqrt(d, out=d)
        d *= -0.5
        return pw[keep] @ ndtr(d) + (now.sum() - now[keep].sum())

    def current(idx) -> np.ndarray:
        return terms[:, :, idx].sum(axis=2)

    sums = current(chosen)
    bound = full_bound
    while pw.size and bound > target_error and len(chosen) < min(k_max, cand.size):
        values = evaluate(sums)
        values[chosen] = np.inf
        best = int(np.argmin(values))
        chosen.append(best)
        sums = sums + terms[:, :, best]
        bound = float(values[best])
        history.append((float(cand[best]), bound))

    for _ in range(swap_passes if pw.size else 0):
        improved = False
        for i in range(len(chosen)):
            values = evaluate(sums - terms[:, :, chosen[i]])
            others = [c for j, c in enumerate(chosen) if j != i]
            values[others] = np.inf
            if anchors and i < 2:
                region = pre if i == 0 else post
                keep = np.full(cand.size, np.inf)
                keep[region] = values[region]
                values = keep
            best = int(np.argmin(values))
            if best != chosen[i] and values[best] < bound * (1 - 1e-9):
                chosen[i] = best
                sums = current(chosen)
                bound = float(values[best])
                improved = True
        if not improved:
            break
    if pw.size:
        bound = float(_bound(thickness**2 * _rss(*sums), pw))
    else:
        bound = 0.0

    energies = np.sort(cand[chosen])
    d2 = thickness**2 * _rss(*sums)
    worst = _worst_pairs(d2, ia, ib, pw, names, n_worst)
    needed = _passes(problem, chosen, ia, ib, pw, n0, target_error, flats_each_pass=True)
    return EnergyDesign(energies, bound, tuple(history), _group_tuples(labels, names), worst, float(n0),
                        int(n_flat), float(thickness), float(background), float(target_error), needed,
                        int(passes), bool(anchors), names)


def _worst_pairs(d2, ia, ib, pw, names, n_worst):
    """(name, name, d) of the unordered pairs contributing most to the bound; d the smaller direction."""
    if d2.size == 0:
        return ()
    contrib = pw * ndtr(-0.5 * np.sqrt(d2))
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    key = lo * (ia.max() + ib.max() + 2) + hi
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, contrib)
    dmin = np.full(uniq.size, np.inf)
    np.minimum.at(dmin, inv, np.sqrt(d2))
    first = np.zeros(uniq.size, int)
    first[inv[::-1]] = np.arange(inv.size)[::-1]
    order = np.argsort(-total)[:n_worst]
    return tuple((names[lo[first[u]]], names[hi[first[u]]], float(dmin[u])) for u in order)


def _passes(problem, chosen, ia, ib, pw, n0, target, flats_each_pass, max_passes=10_000):
    """Smallest number of passes whose bound is ≤ ``target`` (None if not within ``max_passes``)."""
    if pw.size == 0:
        return 1
    sub = _Problem(problem.mu[:, chosen], problem.s[chosen], problem.absorb[:, chosen], problem.thickness,
                   problem.n_flat)

    def bound(p: int) -> float:
        w = sub.weights(n0, p, p if flats_each_pass else 1.0)
        return float(_bound(sub.thickness**2 * _rss(*sub.pair_terms(w, ia, ib).sum(axis=2)), pw))

    if bound(1) <= target:
        return 1
    if bound(max_passes) > target:
        return None
    lo, hi = 1, max_passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if bound(mid) <= target else (mid, hi)
    return hi


def passes_for_error(spectra, grid_eV, energies_eV, *, target_error: float = 1e-3, n0: float = 1e4,
                     n_flat: int = 10, thickness: float = 1.0, background: float = 0.3, prior=None,
                     groups=None, names=None, background_power: float = 0.0, flats_each_pass: bool = True,
                     max_passes: int = 10_000) -> int | None:
    """Passes of the stack at ``energies_eV`` (eV) needed for the bound ≤ ``target_error``: ``passes`` images of
    ``n0`` photons per pixel summed per energy (image variance / passes) and ``n_flat`` flats every pass (all
    noise / passes, d ∝ √passes), or flats once per energy (``flats_each_pass=False``: a floor on the noise).
    ``groups`` as in ``design_energies`` (default: every phase its own group). None: not within ``max_passes``."""
    problem, cand, names = _setup(spectra, grid_eV, names, energies_eV, thickness, background, background_power,
                                  n_flat)
    pi = _prior(prior, len(names))
    labels = np.arange(len(names)) if groups is None else _labels_from_groups(groups, names)
    ia, ib, pw = _between_pairs(labels, pi)
    return _passes(problem, list(range(cand.size)), ia, ib, pw, n0, target_error, flats_each_pass, max_passes)


def design_for_target(spectra, grid_eV=None, *, target_error: float = 1e-3, n0: float = 1e4, k_max: int = 24,
                      max_passes: int = 4096, groups=None, d_min: float = 3.0, group_dose: float = 10.0,
                      **options) -> EnergyDesign:
    """The design reaching ``target_error`` with the fewest images k·passes (beamtime ∝ k·passes when flats go
    with every pass and moves are per energy and pass; ``imaging_beamtime_s``): ``design_energies`` at
    passes = 1, 2, 4, … ``max_passes`` (greedy stopping at the target), then at 2^(1/4) steps around the best.
    The groups are fixed once, at ``group_dose``·n0 for one pass (or given), so every dose is judged on the same
    pairs. ``options`` go to ``design_energies``. If no dose reaches the target, the ``max_passes`` design."""
    if groups is None:
        groups = design_energies(spectra, grid_eV, n0=n0, k_max=3, target_error=0.5, d_min=d_min,
                                 group_dose=group_dose, swap_passes=0, **options).groups
    tried: dict[int, EnergyDesign] = {}

    def at(p: int) -> EnergyDesign:
        if p not in tried:
            tried[p] = design_energies(spectra, grid_eV, n0=n0, passes=p, k_max=k_max, target_error=target_error,
                                       groups=groups, **options)
        return tried[p]

    def images(p: int) -> float:
        d = at(p)
        return d.k * p if d.expected_error <= target_error else math.inf

    doubling = [2**i for i in range(int(math.log2(max_passes)) + 1)]
    for p in doubling:
        here = images(p)
        feasible = [images(q) for q in tried if images(q) < math.inf]
        if here < math.inf and (at(p).k <= 3 or here > 2 * min(feasible)):
            break
    best = min(tried, key=lambda p: (images(p), p))
    if images(best) == math.inf:
        return at(doubling[-1])
    for p in sorted({max(1, int(round(best * 2 ** (j / 4)))) for j in range(-3, 4)}):
        if p <= max_passes:
            images(p)
    return at(min(tried, key=lambda p: (images(p), p)))


def error_bound(spectra, grid_eV, energies_eV, *, n0: float = 1e4, n_flat: int = 10, thickness: float = 1.0,
                background: float = 0.3, prior=None, groups=None, names=None,
                background_power: float = 0.0) -> float:
    """The misclassification bound of the stack at ``energies_eV`` (eV), one pass (see the module docstring)."""
    problem, cand, names = _setup(spectra, grid_eV, names, energies_eV, thickness, background, background_power,
                                  n_flat)
    pi = _prior(prior, len(names))
    labels = np.arange(len(names)) if groups is None else _labels_from_groups(groups, names)
    ia, ib, pw = _between_pairs(labels, pi)
    if pw.size == 0:
        return 0.0
    d2 = thickness**2 * _rss(*problem.pair_terms(problem.weights(n0), ia, ib).sum(axis=2))
    return float(_bound(d2, pw))


def profiled_distance(spectra, grid_eV, energies_eV, a: int, b: int, *, n0: float = 1e4, n_flat: int = 10,
                      thickness: float = 1.0, background: float = 0.3, background_power: float = 0.0) -> float:
    """d(a→b): the Mahalanobis distance of phase ``a``'s absorbance at ``energies_eV`` (eV) from the span
    {β s + τ μ_b}, under a's noise at ``n0`` photons per pixel."""
    problem, _, _ = _setup(spectra, grid_eV, None, energies_eV, thickness, background, background_power, n_flat)
    terms = problem.pair_terms(problem.weights(n0), np.array([a]), np.array([b])).sum(axis=2)
    return float(thickness * np.sqrt(_rss(*terms)[0]))
