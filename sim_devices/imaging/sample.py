"""The truth of a full-field XAS-imaging sample (issue 15): phase fractions, Fe edge jump and background absorbance
on the detector's pixel grid, computable tile by tile with no global state.

Every structure is hash-seeded in global pixel coordinates (``np.random.default_rng([seed, stream, cy, cx])`` per
coarse cell of side ``L = grain_px[1]`` px), so a tile needs only the seeds of the coarse cells near it and two
overlapping tiles agree bit for bit on their overlap, for images of any size (20000 × 20000 px and more).

- Majority domains: Voronoi cells of seed points. Each coarse cell draws a local grain size s (log-uniform in
  ``grain_px``) and max(1, Poisson((L/s)²)) seeds, each of a phase drawn uniformly among ``phases``.
  Neighbouring seeds of the same phase merge, so domains of one phase can exceed ``grain_px[1]``.
- Minority grains: compact blobs of n pixels (n uniform in ``minority_grain_px``): the n pixels nearest a random
  centre (distances jittered by ≤ ``BLOB_JITTER_PX``). Centres are a Matérn type-II hard-core process (a grain is
  dropped when a grain of lower random mark lies within ``MINORITY_EXCLUSION_PX``, so grains never touch), of
  intensity chosen so the expected minority pixel fraction is ``minority_fraction``. Grains lie anywhere,
  regardless of the majority domains.
- Fractions: the majority one-hot map smoothed by a Gaussian of ``MAJORITY_BLUR_PX``, times 1 − m, where m is the
  minority mask smoothed by ``MINORITY_BLUR_PX`` (0.5 px keeps m > 0.62 on every grain pixel and < 0.3 off it, so
  grains keep their size in the argmax label while their edges are mixtures). They sum to 1.
- Thickness t (Fe edge jump Δμt) and background b: smooth fields, sums of ``N_WAVES`` hash-seeded cosines of
  wavelengths ``FIELD_WAVELENGTH_PX`` in global coordinates, mapped into ``thickness`` and ``background`` ·
  (1 ± ``BACKGROUND_SPREAD``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

MAJORITY_BLUR_PX = 1.0  # Gaussian σ (px) of the majority domain boundaries
MINORITY_BLUR_PX = 0.5  # Gaussian σ (px) of the minority grain edges
BLOB_JITTER_PX = 0.3  # random jitter (px) of the pixel distances that shape a minority blob
BLOB_WINDOW_PX = 3  # a blob's pixels lie within ±3 px of its centre pixel (10 px need ±2)
MAX_GRAIN_PX = 20  # the largest minority grain (px) that stays compact in that window
MINORITY_EXCLUSION_PX = 8.0  # minimum distance (px) between minority grain centres: blobs never touch
FIELD_WAVELENGTH_PX = (300.0, 3000.0)  # wavelengths (px) of the thickness and background fields
BACKGROUND_SPREAD = 0.2  # b = background · (1 ± 0.2)
VORONOI_BLOCK_PX = 16  # block side (px) of the exact nearest-seed search
N_WAVES = 4  # cosines per smooth field
EDGE_WINDOW_EV = (7100.0, 7180.0)  # the edge region of the spectral distance (eV)
#: Default majority phases: an LFP battery cathode, partly delithiated (LiFePO4 / FePO4 domains), with magnetite
#: (an iron-oxide impurity of the synthesis): pairwise RMS distances 0.14-0.30 over 7100-7180 eV.
DEFAULT_PHASES = ("LiFePO4", "FePO4", "Fe3O4")

_OFFSET = 1 << 40  # added to (possibly negative) cell indices: SeedSequence takes non-negative integers
_STREAM_DOMAINS, _STREAM_MINORITY, _STREAM_THICKNESS, _STREAM_BACKGROUND = 11, 12, 13, 14


@dataclass(frozen=True)
class ImagingSample:
    """Everything that defines the truth; plain values (JSON-able). ``phases``: majority library names;
    ``minority``: the hidden minority phase's library name (None: none); ``minority_fraction``: expected share of
    pixels labelled minority; ``grain_px``: majority domain size range (px); ``minority_grain_px``: pixels per
    minority grain (inclusive range); ``thickness``: range of the Fe edge jump Δμt; ``background``: mean background
    absorbance at 7112 eV; ``seed``: the structure's seed."""

    phases: tuple[str, ...]
    minority: str | None
    minority_fraction: float = 0.005
    grain_px: tuple[float, float] = (40.0, 150.0)
    minority_grain_px: tuple[int, int] = (3, 10)
    thickness: tuple[float, float] = (0.4, 1.5)
    background: float = 0.3
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "phases", tuple(self.phases))
        object.__setattr__(self, "grain_px", tuple(float(g) for g in self.grain_px))
        object.__setattr__(self, "minority_grain_px", tuple(int(g) for g in self.minority_grain_px))
        object.__setattr__(self, "thickness", tuple(float(t) for t in self.thickness))
        if not self.phases:
            raise ValueError("an imaging sample needs at least one majority phase")
        if self.minority is not None and self.minority in self.phases:
            raise ValueError(f"the minority phase {self.minority!r} is also a majority phase")
        lo, hi = self.grain_px
        if not 0 < lo <= hi:
            raise ValueError(f"grain_px must be 0 < lo <= hi, got {self.grain_px}")
        a, b = self.minority_grain_px
        if not 1 <= a <= b <= MAX_GRAIN_PX:
            raise ValueError(f"minority_grain_px must be 1 <= lo <= hi <= {MAX_GRAIN_PX}, got {self.minority_grain_px}")
        if not 0 <= self.minority_fraction < 1:
            raise ValueError(f"minority_fraction must be in [0, 1), got {self.minority_fraction}")
        if self.minority is not None and self.minority_fraction > 0:
            _seed_intensity(self)  # raises if the fraction cannot be placed with non-touching grains
        t0, t1 = self.thickness
        if not 0 <= t0 <= t1:
            raise ValueError(f"thickness must be 0 <= lo <= hi, got {self.thickness}")

    @property
    def names(self) -> tuple[str, ...]:
        """The fraction channels' phases: majority phases, then the minority (if any)."""
        return self.phases + (() if self.minority is None else (self.minority,))

    @property
    def cell_px(self) -> float:
        """Side (px) of the coarse hash cells."""
        return self.grain_px[1]


def _rng(sample_seed: int, stream: int, cy: int, cx: int) -> np.random.Generator:
    return np.random.default_rng([int(sample_seed), stream, int(cy) + _OFFSET, int(cx) + _OFFSET])


def _seed_intensity(sample: ImagingSample) -> float:
    """Intensity (grains per px²) of the Matérn-II parent process so that the retained grains cover
    ``minority_fraction`` of the pixels on average: retained = (1 − exp(−λ₀a))/a, a = π·d²."""
    lo, hi = sample.minority_grain_px
    target = sample.minority_fraction / (0.5 * (lo + hi))
    a = math.pi * MINORITY_EXCLUSION_PX ** 2
    if target * a >= 0.9:
        raise ValueError(f"minority_fraction {sample.minority_fraction} too high for non-touching grains "
                         f"(at most {0.9 / a * 0.5 * (lo + hi):.3f})")
    return -math.log1p(-target * a) / a


def _cells(lo_px: float, hi_px: float, cell: float, pad: int) -> range:
    return range(math.floor(lo_px / cell) - pad, math.floor(hi_px / cell) + pad + 1)


def _domain_seeds(sample: ImagingSample, ys: range, xs: range) -> tuple[np.ndarray, np.ndarray]:
    """Seed points (n, 2) (global px, y then x) and phase indices of the coarse cells ``ys × xs``."""
    L = sample.cell_px
    lo, hi = np.log(sample.grain_px)
    pts, phase = [], []
    for cy in ys:
        for cx in xs:
            rng = _rng(sample.seed, _STREAM_DOMAINS, cy, cx)
            size = math.exp(rng.uniform(lo, hi))
            n = max(1, int(rng.poisson((L / size) ** 2)))
            pts.append((np.array([cy, cx]) + rng.random((n, 2))) * L)
            phase.append(rng.integers(0, len(sample.phases), n))
    return np.concatenate(pts), np.concatenate(phase)


def _minority_grains(sample: ImagingSample, ys: range, xs: range) -> tuple[np.ndarray, ...]:
    """Candidate minority grains of the cells ``ys × xs``: centres (n, 2) px, sizes (n,) px, marks (n,) and the
    jitter (n, window) of their blob shapes."""
    L = sample.cell_px
    lam = _seed_intensity(sample) * L * L
    lo, hi = sample.minority_grain_px
    nwin = len(_window())
    out = [], [], [], []
    for cy in ys:
        for cx in xs:
            rng = _rng(sample.seed, _STREAM_MINORITY, cy, cx)
            n = int(rng.poisson(lam))
            for acc, v in zip(out, ((np.array([cy, cx]) + rng.random((n, 2))) * L, rng.integers(lo, hi + 1, n),
                                    rng.random(n), rng.random((n, nwin))), strict=True):
                acc.append(v)
    return tuple(np.concatenate(acc) for acc in out)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    r = np.arange(-BLOB_WINDOW_PX, BLOB_WINDOW_PX + 1)
    return np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


def _minority_mask(sample: ImagingSample, y0: int, x0: int, H: int, W: int) -> np.ndarray:
    """Hard minority mask (H, W) bool of the region [y0, y0+H) × [x0, x0+W) (global px)."""
    mask = np.zeros((H, W), bool)
    if sample.minority is None or sample.minority_fraction == 0:
        return mask
    L = sample.cell_px
    reach = BLOB_WINDOW_PX + 1 + MINORITY_EXCLUSION_PX  # px: grains and their competitors near the region
    cand = _minority_grains(sample, _cells(y0 - reach, y0 + H + reach, L, 0),
                            _cells(x0 - reach, x0 + W + reach, L, 0))
    centres, sizes, marks, jitter = cand
    near = ((centres[:, 0] > y0 - BLOB_WINDOW_PX - 1) & (centres[:, 0] < y0 + H + BLOB_WINDOW_PX + 1)
            & (centres[:, 1] > x0 - BLOB_WINDOW_PX - 1) & (centres[:, 1] < x0 + W + BLOB_WINDOW_PX + 1))
    keep = near.copy()
    if len(centres) > 1:
        pairs = cKDTree(centres).query_pairs(MINORITY_EXCLUSION_PX, output_type="ndarray")
        if len(pairs):
            i, j = pairs[:, 0], pairs[:, 1]
            loser = np.where(marks[i] > marks[j], i, j)  # Matérn II: the higher mark yields
            keep[loser] = False
    centres, sizes, jitter = centres[keep], sizes[keep], jitter[keep]
    if not len(centres):
        return mask
    base = np.floor(centres).astype(np.int64)
    win = _window()
    pix = base[:, None, :] + win[None]  # (n, 49, 2)
    d = np.linalg.norm(pix + 0.5 - centres[:, None, :], axis=-1)
    rank = np.argsort(np.argsort(d + BLOB_JITTER_PX * jitter, axis=1), axis=1)
    take = rank < sizes[:, None]
    py, px = pix[take][:, 0] - y0, pix[take][:, 1] - x0
    inside = (py >= 0) & (py < H) & (px >= 0) & (px < W)
    mask[py[inside], px[inside]] = True
    return mask


def _voronoi(pts: np.ndarray, y0: int, x0: int, H: int, W: int) -> np.ndarray:
    """Index (H, W) of the seed in ``pts`` nearest each pixel centre of [y0, y0+H) × [x0, x0+W), exact: per
    ``VORONOI_BLOCK_PX`` block aligned to the global grid, only the seeds within d₀ + 2·r of the block's centre
    (d₀: its nearest seed's distance, r: the block's half diagonal) can be nearest to one of its pixels."""
    B = VORONOI_BLOCK_PX
    by0, bx0 = y0 // B, x0 // B
    nby, nbx = (y0 + H - 1) // B - by0 + 1, (x0 + W - 1) // B - bx0 + 1
    cy, cx = np.meshgrid((by0 + np.arange(nby) + 0.5) * B, (bx0 + np.arange(nbx) + 0.5) * B, indexing="ij")
    centres = np.column_stack([cy.ravel(), cx.ravel()])
    tree = cKDTree(pts)
    d0, _ = tree.query(centres)
    cand = tree.query_ball_point(centres, d0 + B * math.sqrt(2) + 1e-6)
    K = max(map(len, cand))
    idx = np.full((len(cand), K), len(pts))  # padding points to a seed at infinity
    for i, c in enumerate(cand):
        idx[i, :len(c)] = c
    far = np.vstack([pts, [np.inf, np.inf]])
    off = np.arange(B) + 0.5
    py = (by0 + np.arange(nby))[:, None] * B + off  # (nby, B) pixel-centre rows
    px = (bx0 + np.arange(nbx))[:, None] * B + off
    sy, sx = far[idx, 0].reshape(nby, nbx, K), far[idx, 1].reshape(nby, nbx, K)
    best = np.empty((nby, B, nbx, B), np.int64)
    dmin = np.full((nby, B, nbx, B), np.inf)
    for k in range(K):  # K ~ 5: the loop is over candidate ranks, each step over all pixels
        dy = py[:, :, None, None] - sy[:, None, :, k, None]
        dx = px[None, None, :, :] - sx[:, None, :, k, None]
        d = dy * dy + dx * dx
        closer = d < dmin
        dmin = np.where(closer, d, dmin)
        best = np.where(closer, idx.reshape(nby, nbx, K)[:, None, :, k, None], best)
    best = best.reshape(nby * B, nbx * B)
    oy, ox = y0 - by0 * B, x0 - bx0 * B
    return best[oy:oy + H, ox:ox + W]


def _smooth_field(seed: int, stream: int, y: np.ndarray, x: np.ndarray,
                  wavelengths: tuple[float, float] = FIELD_WAVELENGTH_PX) -> np.ndarray:
    """A smooth field in [−1, 1] on the global rows ``y`` × columns ``x`` (px): N_WAVES cosines, separable."""
    rng = np.random.default_rng([int(seed), stream])
    lam = np.exp(rng.uniform(*np.log(wavelengths), N_WAVES))
    theta, phi = rng.uniform(0, 2 * np.pi, (2, N_WAVES))
    amp = rng.uniform(0.5, 1.0, N_WAVES)
    ky, kx = 2 * np.pi / lam * np.sin(theta), 2 * np.pi / lam * np.cos(theta)
    ay = np.asarray(y, float)[:, None] * ky + phi  # (H, N) in float64: exact at 10⁴-px coordinates
    bx = np.asarray(x, float)[:, None] * kx
    cy, sy = (np.cos(ay) * amp).astype(np.float32), (np.sin(ay) * amp).astype(np.float32)
    cx, sx = np.cos(bx).astype(np.float32), np.sin(bx).astype(np.float32)
    return (cy @ cx.T - sy @ sx.T) / np.float32(amp.sum())  # Σ a·cos(ky·y + φ + kx·x) / Σ a


def smooth_field(seed: int, stream: int, y0: int, x0: int, h: int, w: int,
                 wavelengths: tuple[float, float] = FIELD_WAVELENGTH_PX) -> np.ndarray:
    """The smooth hash-seeded field in [−1, 1] (float32, (h, w)) on global pixels [y0, y0+h) × [x0, x0+w)."""
    return _smooth_field(seed, stream, np.arange(y0, y0 + h), np.arange(x0, x0 + w), wavelengths)


def sample_tile(sample: ImagingSample, y0: int, x0: int, h: int, w: int, margin: int = 0) -> dict:
    """The truth on global pixels [y0 − margin, y0 + h + margin) × [x0 − margin, x0 + w + margin) (shape
    (H, W) = (h + 2·margin, w + 2·margin)): ``fractions`` (C, H, W) float32 (``sample.names`` order: majority
    phases, then the minority if any; they sum to 1), ``thickness`` (H, W) float32 (Fe edge jump Δμt),
    ``background`` (H, W) float32 (absorbance at 7112 eV), ``label`` (H, W) int8 (argmax of the fractions,
    an index into ``sample.names``). Deterministic in global coordinates: overlapping tiles agree."""
    if h <= 0 or w <= 0 or margin < 0:
        raise ValueError(f"tile shape must be positive and margin non-negative, got {h}×{w}, margin {margin}")
    Y0, X0, H, W = int(y0) - margin, int(x0) - margin, int(h) + 2 * margin, int(w) + 2 * margin
    pad = int(math.ceil(4 * MAJORITY_BLUR_PX)) + 1
    Yp, Xp, Hp, Wp = Y0 - pad, X0 - pad, H + 2 * pad, W + 2 * pad
    L = sample.cell_px
    pts, phase = _domain_seeds(sample, _cells(Yp, Yp + Hp, L, 2), _cells(Xp, Xp + Wp, L, 2))
    major = phase[_voronoi(pts, Yp, Xp, Hp, Wp)]
    P = len(sample.phases)
    fractions = np.empty((len(sample.names), H, W), np.float32)
    crop = (slice(pad, pad + H), slice(pad, pad + W))
    for p in range(P):
        fractions[p] = ndimage.gaussian_filter((major == p).astype(np.float32), MAJORITY_BLUR_PX)[crop]
    if sample.minority is not None:
        m = ndimage.gaussian_filter(_minority_mask(sample, Yp, Xp, Hp, Wp).astype(np.float32),
                                    MINORITY_BLUR_PX)[crop]
        fractions[:P] *= 1 - m
        fractions[P] = m
    fractions /= fractions.sum(0)  # exact unit sum after the float32 filters
    y, x = np.arange(Y0, Y0 + H), np.arange(X0, X0 + W)
    t0, t1 = sample.thickness
    thickness = t0 + (t1 - t0) * (0.5 + 0.5 * _smooth_field(sample.seed, _STREAM_THICKNESS, y, x))
    background = sample.background * (1 + BACKGROUND_SPREAD * _smooth_field(sample.seed, _STREAM_BACKGROUND, y, x))
    return {"fractions": fractions, "thickness": thickness.astype(np.float32),
            "background": background.astype(np.float32), "label": np.argmax(fractions, 0).astype(np.int8)}


def _edge_spectra(library, names) -> np.ndarray:
    """Normalised spectra (k, m) of ``names`` on the library's own grid over ``EDGE_WINDOW_EV``."""
    e = library.energy[(library.energy >= EDGE_WINDOW_EV[0] - 1e-9) & (library.energy <= EDGE_WINDOW_EV[1] + 1e-9)]
    return library.only(list(names)).on(e).T


def spectral_distance(library, a: str, b: str) -> float:
    """RMS difference of the normalised spectra of ``a`` and ``b`` over 7100-7180 eV (the library's grid)."""
    sa, sb = _edge_spectra(library, (a, b))
    return float(np.sqrt(np.mean((sa - sb) ** 2)))


def minority_partner(library, phases) -> tuple[str, str]:
    """The default hard minority: (the library standard outside ``phases`` nearest to one of them by RMS
    normalised-spectrum distance over 7100-7180 eV, the majority phase it neighbours)."""
    phases = [library.canonical(p) for p in phases]
    others = [n for n in library.names if n not in phases]
    major, rest = _edge_spectra(library, phases), _edge_spectra(library, others)
    d = np.sqrt(np.mean((major[:, None] - rest[None]) ** 2, -1))
    i, j = np.unravel_index(np.argmin(d), d.shape)
    return others[j], phases[i]


def default_sample(seed: int = 0, minority_fraction: float = 0.005, library=None) -> ImagingSample:
    """``DEFAULT_PHASES`` with their ``minority_partner`` hidden at ``minority_fraction`` of the pixels (the
    library: ``SpectraLibrary.from_csv()`` unless given)."""
    if library is None:
        from sim_devices.imaging.detector import spectra_library

        library = spectra_library()
    minority, _ = minority_partner(library, DEFAULT_PHASES)
    return ImagingSample(DEFAULT_PHASES, minority, minority_fraction=minority_fraction, seed=seed)
