"""Low-rank basis prior and posterior of the XAS spectrum: memory O(n r), a decision O(n r) (DESIGN §4.2; EXAFS).

Prior: μ = m + Φ z, z ~ N(0, I_r), with Φ = [Φ_pc | Φ_sp]:
  Φ_pc (n × r_pc, dense): the library's principal components scaled by s_i / sqrt(k - 1) (times sqrt(emp_weight)),
      so Φ_pc Φ_pcᵀ is ``library_prior``'s sample covariance exactly (all k - 1 of them, or the leading ones that
      hold ``pc_fraction`` of the variance);
  Φ_sp (n × r_sp, scipy CSR, ≤ 4 non-zeros per row and family): the kernel residual, two cubic B-spline
      families (scale ``kernel_scale``, cutoff c = 4.35 eV and ``fine_scale``, c = 1.0 eV), knots spaced
      h = 0.866 c in E up to E0 + 40 eV (the XANES: 3.77 and 0.87 eV; a uniform-knot cubic B-spline's
      autocorrelation has the variance c²/2 of exp(-d²/c²) when h = c sqrt(3)/2) and uniformly in k beyond
      (Δk = 0.4 and 0.1 Å⁻¹); each row scaled by sqrt(scale) s_i / |B_i| (s the library std on the grid), so the
      residual's variance is the kernel's exactly and its correlation approximately (``residual_error``).
  Above the measured library (7196.85 eV) the library, and so m, s and the PCs, are SYNTHETIC when built from
  ``agent.xas.exafs.extended_library``.

Posterior (``BasisPosterior``): the state x = [z (r), δ, a, b, c3, c4, η] with the measurement model, nuisance priors,
linearisation in (a, δ) (μ(E - δ) ≈ m - m' δ + Φ z) and design targets of ``agent.xas.design.XASPosterior``, whose
public interface it shares. Alongside the (r+6)² covariance S it keeps, per grid candidate j, the row M_j of
M = H S Cᵀ (n × (r+6); H the grid's measurement rows, CᵀC = LᵀL with L = [Φ, T] the target map), its squared
norm q_j = |L S h_j|² and s_j = h_jᵀ S h_j. A measurement is one pass over M (a numba kernel: the rank-1 update
of the row and its new squared norm, a sum of squares as in the dense class) and s_j -= (h_jᵀ S h)² / (hᵀ S h + v)
(O(n) given H S h, which costs O(n (r_pc + nnz per row)) through the sparse block): a decision is O(n r), memory
O(n r), and trace(L S Lᵀ) = Σ S ∘ (LᵀL) costs O(r²). s and M are recomputed exactly from S by ``resolve``.
No n × n matrix is ever formed (except ``BasisPrior.cov``, for tests on small grids).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy import linalg, sparse
from scipy.interpolate import BSpline
from scipy.linalg import blas

from agent.xas.design import N_NUISANCE, Nuisance, XASPosterior, draw_states
from agent.xas.exafs import E0_EV, energy_of, k_of
from agent.xas.prior import (
    LIBRARY_PRIOR_DEFAULTS,
    GaussianPrior,
    SpectraLibrary,
    default_grid,
    se_kernel,
)

XANES_TOP_EV = E0_EV + 40.0  # knots uniform in E below, uniform in k above
SPACING_PER_CUTOFF = np.sqrt(3) / 2  # B-spline knot spacing / kernel cutoff c (module doc)
DK_COARSE, DK_FINE = 0.4, 0.1  # Å^-1, above XANES_TOP_EV
_CHUNK = 4096  # grid rows per block in the O(n r) diagonals


@njit(cache=True, fastmath=True)
def _rank1_rows(m, hg, cg, alpha, q):  # m[j] += alpha hg[j] cg, q[j] = |m[j]|^2: one pass over m
    n, p = m.shape
    for j in range(n):
        a = alpha * hg[j]
        acc = 0.0
        for k in range(p):
            v = m[j, k] + a * cg[k]
            m[j, k] = v
            acc += v * v
        q[j] = acc


@dataclass(frozen=True)
class BasisPrior:
    """μ ~ N(mean, Φ Φᵀ) on ``energy`` (eV), Φ = [phi_pc (dense), phi_sp (CSR)]; ``info``: how it was built."""

    energy: np.ndarray
    mean: np.ndarray
    phi_pc: np.ndarray
    phi_sp: sparse.csr_matrix
    kind: str = "basis"
    info: dict = field(default_factory=dict, compare=False)
    source: dict | None = field(default=None, compare=False)  # as GaussianPrior.source: how to build it again

    def __post_init__(self):
        n = np.asarray(self.energy).size
        if np.shape(self.mean) != (n,) or self.phi_pc.shape[0] != n or self.phi_sp.shape[0] != n:
            raise ValueError(f"basis prior mismatch: {n} energies, mean {np.shape(self.mean)}, "
                             f"phi_pc {self.phi_pc.shape}, phi_sp {self.phi_sp.shape}")
        object.__setattr__(self, "phi_sp", sparse.csr_matrix(self.phi_sp))

    @property
    def n(self) -> int:
        return self.energy.size

    @property
    def r_pc(self) -> int:
        return self.phi_pc.shape[1]

    @property
    def r(self) -> int:
        return self.phi_pc.shape[1] + self.phi_sp.shape[1]

    @property
    def std(self) -> np.ndarray:
        return np.sqrt((self.phi_pc**2).sum(1) + np.asarray(self.phi_sp.multiply(self.phi_sp).sum(1)).ravel())

    def cov(self) -> np.ndarray:
        """The dense n × n covariance Φ Φᵀ (tests and small grids only)."""
        sp = self.phi_sp.toarray()
        return self.phi_pc @ self.phi_pc.T + sp @ sp.T

    def to_gaussian(self) -> GaussianPrior:
        """The same prior as a dense ``GaussianPrior`` (small grids only)."""
        return GaussianPrior(self.energy, self.mean, self.cov(), self.kind)

    def shifted(self, delta_eV: float) -> BasisPrior:
        """Prior of μ(E - δ) by the linear interpolation of ``GaussianPrior.shifted`` (J Φ, J m)."""
        e = self.energy
        at = np.clip(e - delta_eV, e[0], e[-1])
        j = np.clip(np.searchsorted(e, at) - 1, 0, e.size - 2)
        w = (at - e[j]) / (e[j + 1] - e[j])
        rows = np.repeat(np.arange(e.size), 2)
        jm = sparse.csr_matrix((np.column_stack([1 - w, w]).ravel(), (rows, np.column_stack([j, j + 1]).ravel())),
                               shape=(e.size, e.size))
        return BasisPrior(e, jm @ self.mean, jm @ self.phi_pc, (jm @ self.phi_sp).tocsr(), self.kind, self.info)


def spline_knots(lo_eV: float, hi_eV: float, h_eV: float, dk: float, top_eV: float = XANES_TOP_EV) -> np.ndarray:
    """Cubic B-spline knots covering [lo, hi] eV: spacing ``h_eV`` up to ``top_eV``, uniform ``dk`` (Å⁻¹) in k above."""
    n_lo = int(np.ceil((top_eV - lo_eV) / h_eV)) + 4 if lo_eV < top_eV else 4
    below = top_eV - h_eV * np.arange(n_lo, 0, -1)
    kt = float(k_of(top_eV))
    n_hi = int(np.ceil((float(k_of(max(hi_eV, top_eV))) - kt) / dk)) + 4
    above = energy_of(kt + dk * np.arange(0, n_hi + 1))
    t = np.concatenate([below, above])
    i_lo = int(np.searchsorted(t, lo_eV, side="right")) - 1
    i_hi = int(np.searchsorted(t, hi_eV, side="left"))
    return t[max(i_lo - 3, 0): i_hi + 4]


def spline_family(grid: np.ndarray, sd: np.ndarray, scale: float, cutoff_eV: float, dk: float,
                  top_eV: float = XANES_TOP_EV) -> sparse.csr_matrix:
    """One residual family (n × b, CSR): cubic B-splines on ``spline_knots`` (h = 0.866 c), row i scaled to
    norm sqrt(scale) sd_i."""
    t = spline_knots(grid[0], grid[-1], SPACING_PER_CUTOFF * cutoff_eV, dk, top_eV)
    b = BSpline.design_matrix(grid, t, 3).tocsc()
    b = b[:, np.flatnonzero(np.diff(b.indptr) > 0)].tocsr()
    norm = np.sqrt(np.asarray(b.multiply(b).sum(1)).ravel())
    return sparse.diags(np.sqrt(scale) * sd / norm) @ b


def basis_prior(library: SpectraLibrary, grid: np.ndarray | None = None, pc_fraction: float = 1.0,
                cutoff_eV: float | None = None, kernel_scale: float | None = None, emp_weight: float | None = None,
                fine_scale: float | None = None, fine_cutoff_eV: float | None = None,
                dk_coarse: float = DK_COARSE, dk_fine: float = DK_FINE) -> BasisPrior:
    """The basis counterpart of ``library_prior`` (same hyper-parameters and defaults, module doc) on ``grid``
    (eV; default ``default_grid()``; above 7196.85 eV pass an ``agent.xas.exafs.extended_library``: SYNTHETIC)."""
    given = {"cutoff_eV": cutoff_eV, "kernel_scale": kernel_scale, "emp_weight": emp_weight,
             "fine_scale": fine_scale, "fine_cutoff_eV": fine_cutoff_eV}
    p = {**LIBRARY_PRIOR_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    if not 0 < pc_fraction <= 1:
        raise ValueError(f"pc_fraction must be in (0, 1], got {pc_fraction!r}")
    grid = default_grid() if grid is None else np.asarray(grid, float)
    y = library.on(grid)
    mean, sd = y.mean(1), y.std(1)
    u, s, _ = linalg.svd(y - mean[:, None], full_matrices=False)
    keep = s > 1e-12 * s[0]
    frac = np.cumsum(s[keep] ** 2) / np.sum(s[keep] ** 2)
    n_pc = int(np.searchsorted(frac, pc_fraction - 1e-12) + 1) if pc_fraction < 1 else int(keep.sum())
    phi_pc = u[:, :n_pc] * (s[:n_pc] * np.sqrt(p["emp_weight"] / max(y.shape[1] - 1, 1)))
    fams = [spline_family(grid, sd, p["kernel_scale"], p["cutoff_eV"], dk_coarse),
            spline_family(grid, sd, p["fine_scale"], p["fine_cutoff_eV"], dk_fine)]
    synthetic = getattr(library, "synthetic_from_eV", np.inf)
    info = {**p, "pc_fraction": pc_fraction, "n_pc": n_pc, "n_spline": [f.shape[1] for f in fams],
            "dk": [dk_coarse, dk_fine], "synthetic_from_eV": float(synthetic),
            "note": f"SYNTHETIC above {synthetic:.2f} eV (agent.xas.exafs)" if grid[-1] > synthetic else ""}
    return BasisPrior(grid, mean, np.ascontiguousarray(phi_pc), sparse.hstack(fams, format="csr"), "basis", info)


EXAFS_STOP_EV = 7660.0  # k = 12 1/Å above E0 = 7112 eV


def exafs_prior(library: SpectraLibrary, grid: np.ndarray | None = None, stop_eV: float = EXAFS_STOP_EV,
                step_eV: float = 0.1, **options) -> BasisPrior:
    """The basis prior over the EXAFS range: ``library`` extended SYNTHETICALLY to ``stop_eV``
    (``agent.xas.exafs.extended_library``), on ``grid`` (default: 7076.2 eV to ``stop_eV`` in ``step_eV``
    steps, 5839 candidates at 0.1 eV); ``options`` as ``basis_prior``. Its ``source`` rebuilds it
    (``agent.xas.prior.rebuild_prior``)."""
    from agent.xas.exafs import extended_library

    lo = float(default_grid()[0])
    grid = np.round(lo + step_eV * np.arange(int(round((stop_eV - lo) / step_eV)) + 1), 6) if grid is None \
        else np.asarray(grid, float)
    prior = basis_prior(extended_library(library, stop_eV=max(stop_eV, float(grid[-1]))), grid, **options)
    source = {"construction": "exafs", "standards": list(library.names), "grid": None,
              "options": {"stop_eV": float(stop_eV), "step_eV": float(step_eV),
                          **{k: float(v) for k, v in options.items()}}}
    return BasisPrior(prior.energy, prior.mean, prior.phi_pc, prior.phi_sp, "exafs", prior.info, source)


def residual_error(prior: BasisPrior, library: SpectraLibrary, below_eV: float = np.inf) -> dict[str, float]:
    """How close the spline residual Φ_sp Φ_spᵀ is to ``library_prior``'s two kernel terms on the prior's grid
    (dense: small grids only), over energies < ``below_eV``: relative Frobenius error and max |error| / max K."""
    g = prior.energy
    sel = g < below_eV
    sd = library.on(g).std(1)
    info = prior.info
    k = (info["kernel_scale"] * se_kernel(g, sd, info["cutoff_eV"])
         + info["fine_scale"] * se_kernel(g, sd, info["fine_cutoff_eV"]))[np.ix_(sel, sel)]
    sp = prior.phi_sp[np.flatnonzero(sel)].toarray()
    d = sp @ sp.T - k
    return {"frobenius_rel": float(np.linalg.norm(d) / np.linalg.norm(k)), "max_rel": float(np.abs(d).max() / k.max())}


class BasisPosterior:
    """Linear-Gaussian posterior of μ in the basis state x = [z, δ, a, b, c3, c4, η] (module doc); the public
    interface of ``agent.xas.design.XASPosterior`` with memory O(n r) and O(n r) per update and decision."""

    def __init__(self, prior_basis: BasisPrior, nuisance: Nuisance | None = None, shift_lin_eV: float = 0.0,
                 amp_lin: float | None = None, kernel_scale: float = 1.0, target: str = "absorbance",
                 measurement=None):
        nuisance = nuisance if nuisance is not None else Nuisance()
        XASPosterior._start(self, prior_basis, nuisance, target, measurement)
        self.r, self.r_pc = prior_basis.r, prior_basis.r_pc
        self.p = self.r + N_NUISANCE
        self.set_linearisation(shift_lin_eV, nuisance.amp_mean if amp_lin is None else amp_lin, kernel_scale)

    # -- model pieces --------------------------------------------------------------------------
    def set_linearisation(self, shift_eV: float, amp: float, kernel_scale: float, full: bool = True,
                          y_lin: np.ndarray | None = None, mu_lin: np.ndarray | None = None) -> None:
        """Linearise about (``amp``, ``shift_eV``) with prior covariance × ``kernel_scale``, the harmonic term about
        the absorbance ``y_lin`` and a nonlinear measurement about ``mu_lin`` (as ``XASPosterior.set_linearisation``);
        re-solve (``full=False``: the mean only)."""
        self.shift_lin, self.amp_lin, self.kernel_scale = float(shift_eV), float(amp), float(kernel_scale)
        pb = self.prior0.shifted(self.shift_lin) if self.shift_lin else self.prior0
        self.m, self.phi_pc, self.phi_sp = pb.mean, pb.phi_pc, pb.phi_sp
        self._set_y_lin(y_lin)
        XASPosterior._linearise(self, mu_lin)  # gain, theta, offset, T, nuisance prior: the same measurement rows
        self.x0 = np.concatenate([np.zeros(self.r), self.nuisance_mean])
        self.s0 = np.concatenate([np.full(self.r, self.kernel_scale), self.theta_var])
        self.A = self._gram()
        d = np.sqrt(np.clip(np.diag(self.A), 1e-300, None))
        lam, v = linalg.eigh(self.A / np.outer(d, d))
        self.C = np.sqrt(np.clip(lam, 0, None))[:, None] * (v.T * d[None, :])  # Cᵀ C = A = Lᵀ L
        self.resolve(full)

    def _gram(self) -> np.ndarray:
        """A = Lᵀ L (p × p), L = [Φ_pc, Φ_sp, T]: O(n r) with the sparse block."""
        pc, sp, t = self.phi_pc, self.phi_sp, self.T
        spt = sp.T.tocsr()
        blocks = [[pc.T @ pc, (spt @ pc).T, pc.T @ t],
                  [spt @ pc, (spt @ sp).toarray(), spt @ t],
                  [t.T @ pc, (spt @ t).T, t.T @ t]]
        return np.block(blocks)

    def _times(self, x: np.ndarray, tail: np.ndarray, amp: float | np.ndarray = 1.0) -> np.ndarray:
        """amp Φ x[:r] + tail @ x[r:] for x (p,) or (p, q), ``amp`` a number or per grid energy (n,): the grid
        values of a state-space map."""
        r, rp = self.r, self.r_pc
        if np.ndim(amp) and np.ndim(x) == 2:
            amp = amp[:, None]
        return amp * (self.phi_pc @ x[:rp] + self.phi_sp @ x[rp:r]) + tail @ x[r:]

    def prior_cov(self) -> np.ndarray:
        """The prior covariance of the state x: diag(kernel_scale I_r, Var θ)."""
        return np.diag(self.s0)

    def rows(self, energies) -> np.ndarray:
        """State-space measurement rows H (k, r+6) for energies (eV) inside the grid (linear interpolation)."""
        e = np.atleast_1d(np.asarray(energies, float))
        j, w = self._locate(e)
        rp, r = self.r_pc, self.r
        h = np.empty((e.size, self.p))
        c1, c2 = self.gain[j] * (1 - w), self.gain[j + 1] * w
        h[:, :rp] = self.phi_pc[j] * c1[:, None] + self.phi_pc[j + 1] * c2[:, None]
        h[:, rp:r] = (sparse.diags(c1) @ self.phi_sp[j] + sparse.diags(c2) @ self.phi_sp[j + 1]).toarray()
        h[:, r:] = self.theta[j] * (1 - w)[:, None] + self.theta[j + 1] * w[:, None]
        return h

    _locate = XASPosterior._locate  # the same grid lookup, offset, data and harmonic linearisation
    offset_at = XASPosterior.offset_at
    y_data = XASPosterior.y_data
    _set_y_lin = XASPosterior._set_y_lin
    y_fundamental = XASPosterior.y_fundamental

    def _recompute(self) -> None:
        """M = H S Cᵀ, q, s and the predicted y exactly from S and x (O(n r²) flops with the sparse block)."""
        self.M = np.ascontiguousarray(self._times(self.S @ self.C.T, self.theta, self.gain))
        self.q = np.einsum("ij,ij->i", self.M, self.M)
        self.s = self.gain**2 * self._diag(self.theta / self.gain[:, None], clip=False)  # gain > 0: F increases with μ
        self._y = self._times(self.x, self.theta, self.gain) + self.offset

    # -- inference -----------------------------------------------------------------------------
    def data_terms(self, energies=None, var=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For the stored data (or ``energies`` eV with noise ``var``): H (k, r+6), S0 Hᵀ, H_z (kernel_scale I) H_zᵀ
        and H_θ Var(θ) H_θᵀ + R, as ``XASPosterior.data_terms`` (for the agent's prior-scale fit)."""
        e = np.asarray(self.data_e if energies is None else energies, float)
        var = np.asarray(self.data_var if energies is None else var, float)
        h = self.rows(e)
        hz, ht = h[:, : self.r], h[:, self.r:]
        return h, self.s0[:, None] * h.T, self.kernel_scale * hz @ hz.T, (ht * self.theta_var) @ ht.T + np.diag(var)

    def design_rmse(self, energies, var) -> float:
        """Predicted RMSE of the target (prior + a design of ``energies`` eV with noise variances ``var``,
        ignoring the stored data) at the current linearisation."""
        _, sh, ck, cn = self.data_terms(energies, np.broadcast_to(var, np.shape(energies)))
        c = linalg.cho_factor(ck + cn, lower=True)
        s = np.diag(self.s0) - sh @ linalg.cho_solve(c, sh.T)
        return float(np.sqrt(max(np.sum(s * self.A), 0.0) / self.n))

    def resolve(self, full: bool = True) -> None:
        """Condition the prior on all stored data at once (information form, O(k p² + p³)); ``full=False``
        updates only the mean x (S, M, q and s are then stale until the next full solve; the predicted y is not)."""
        if not self.data_e:
            self.x, self.S = self.x0.copy(), np.asfortranarray(np.diag(self.s0))
        else:
            free = self.s0 > 0  # a nuisance of prior sd 0 (no harmonic) stays at its prior mean
            h = self.rows(self.data_e)
            hw = h[:, free] / np.asarray(self.data_var)[:, None]
            lam = np.diag(1.0 / self.s0[free]) + h[:, free].T @ hw
            c = linalg.cho_factor(lam, lower=True)
            self.x = self.x0.copy()
            self.x[free] += linalg.cho_solve(c, hw.T @ (self.y_data() - h @ self.x0))
            if not full:
                self._y = self._times(self.x, self.theta, self.gain) + self.offset
                return
            s = np.zeros((self.p, self.p))
            s[np.ix_(free, free)] = linalg.cho_solve(c, np.eye(int(free.sum())))
            self.S = np.asfortranarray(0.5 * (s + s.T))
        self._recompute()

    update = XASPosterior.update  # rows and _rank1 are this class's
    fantasise = XASPosterior.fantasise

    def _rank1(self, h: np.ndarray, y: float | None, var: float) -> None:
        g = self.S @ h
        s = float(h @ g) + var
        hg = self._times(g, self.theta, self.gain)  # H S h: O(n (r_pc + nnz per row))
        if y is not None:
            resid = (y - h @ self.x) / s
            self.x = self.x + g * resid
            self._y = self._y + hg * resid
        self.S = blas.dger(-1.0 / s, g, g, a=self.S, overwrite_a=1)
        _rank1_rows(self.M, hg, self.C @ g, -1.0 / s, self.q)
        self.s = self.s - hg * hg / s

    def sample_mu(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` posterior draws (k, n) of normalised μ on the grid (O(n r k))."""
        x = draw_states(self.x, self.S, k, rng)
        mu = self.m[:, None] + self._times(x, np.zeros((self.n, N_NUISANCE))) - self.dm[:, None] * x[self.r][None, :]
        return mu.T

    def copy(self) -> BasisPosterior:
        new = object.__new__(BasisPosterior)
        new.__dict__.update(self.__dict__)
        new.S, new.x = self.S.copy(order="F"), self.x.copy()
        new.M, new.q, new.s, new._y = self.M.copy(order="C"), self.q.copy(), self.s.copy(), self._y.copy()
        new.data_e, new.data_y, new.data_var = list(self.data_e), list(self.data_y), list(self.data_var)
        return new

    # -- summaries -----------------------------------------------------------------------------
    def _diag(self, tail: np.ndarray, clip: bool = True) -> np.ndarray:
        """diag(L S Lᵀ) for L = [Φ, tail] (n × p): row sums in blocks of rows, O(n r²) flops, O(r) memory per row."""
        out = np.empty(self.n)
        r, rp, s = self.r, self.r_pc, self.S
        for i0 in range(0, self.n, _CHUNK):
            i1 = min(i0 + _CHUNK, self.n)
            pc, sp, t = self.phi_pc[i0:i1], self.phi_sp[i0:i1], tail[i0:i1]
            ls = pc @ s[:rp] + sp @ s[rp:r] + t @ s[r:]
            ls_sp = ls[:, rp:r]
            rows = np.repeat(np.arange(i1 - i0), np.diff(sp.indptr))
            out[i0:i1] = (np.einsum("ij,ij->i", ls[:, :rp], pc) + np.einsum("ij,ij->i", ls[:, r:], t)
                          + np.bincount(rows, sp.data * ls_sp[rows, sp.indices], minlength=i1 - i0))
        return np.clip(out, 0, None) if clip else out

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean of μ on the grid."""
        return self.m + self._times(self.x, np.zeros((self.n, N_NUISANCE))) - self.dm * self.x[self.r]

    @property
    def var(self) -> np.ndarray:
        """Posterior variance of μ on the grid."""
        t = np.zeros((self.n, N_NUISANCE))
        t[:, 0] = -self.dm
        return self._diag(t)

    @property
    def target_mean(self) -> np.ndarray:
        """Posterior mean of the design target on the grid (μ, or μt / a_lin: see ``TARGETS``)."""
        base = self.m if self.target == "mu" else 0.0
        return base + self._times(self.x, self.T)

    def target_of(self, mu: np.ndarray, amplitude: float, offset: float) -> np.ndarray:
        """The design target of a known spectrum ``mu`` on the grid measured as amplitude*mu + offset."""
        mu = np.asarray(mu, float)
        return mu if self.target == "mu" else (amplitude * mu + offset) / self.amp_lin

    @property
    def target_var(self) -> np.ndarray:
        """Posterior variance of the design target on the grid: diag(L S Lᵀ)."""
        return self._diag(self.T)

    @property
    def rmse_pred(self) -> float:
        """Predicted RMSE of the design target over the grid: sqrt(trace(L S Lᵀ) / n) = sqrt(Σ S ∘ LᵀL / n)."""
        return float(np.sqrt(max(float(np.sum(self.S * self.A)), 0.0) / self.n))

    @property
    def shift(self) -> tuple[float, float]:
        """Posterior (mean, sd) of the rigid edge shift (eV)."""
        return self.shift_lin + float(self.x[self.r]), float(np.sqrt(max(self.S[self.r, self.r], 0)))

    @property
    def amplitude(self) -> tuple[float, float]:
        """Posterior (mean, sd) of the amplitude (edge step in μt)."""
        i = self.r + 1
        return float(self.x[i]), float(np.sqrt(max(self.S[i, i], 0)))

    def y_pred(self) -> np.ndarray:
        """Posterior mean of the absorbance y on the grid (for the noise model; kept with each update)."""
        return self._y.copy()

    def gain_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """For every grid candidate j: (|L S h_j|² = |M_j|², a sum of squares, and h_jᵀ S h_j), both kept with
        each update: O(n)."""
        return self.q.copy(), np.clip(self.s, 0, None)

    def _weights(self, weights):
        w = weights if sparse.issparse(weights) else np.atleast_2d(np.asarray(weights, float))
        if w.ndim != 2 or w.shape[1] != self.n:
            raise ValueError(f"weights must be (q, {self.n}) on the grid, got shape {w.shape}")
        return w

    def _w_state(self, weights) -> np.ndarray:
        """w (q, p) with W μ = W m + w x (μ = m + Φ z - m' δ)."""
        wm, r, rp = self._weights(weights), self.r, self.r_pc
        w = np.zeros((wm.shape[0], self.p))
        w[:, :rp] = np.asarray(wm @ self.phi_pc)
        wsp = wm @ self.phi_sp if sparse.issparse(wm) else (self.phi_sp.T @ wm.T).T
        w[:, rp:r] = wsp.toarray() if sparse.issparse(wsp) else wsp
        w[:, r] = -np.asarray(wm @ self.dm).ravel()
        return w

    def functional_moments(self, weights) -> tuple[np.ndarray, np.ndarray]:
        """(mean (q,), cov (q, q)) of W μ for weights W (q, n) (dense or sparse) on the grid of normalised μ."""
        w = self._w_state(weights)
        return np.asarray(self._weights(weights) @ self.m).ravel() + w @ self.x, w @ self.S @ w.T

    mu_weights = _w_state
    design_functional_cov = XASPosterior.design_functional_cov  # the same algebra on this state

    def functional_gain(self, weights) -> tuple[np.ndarray, np.ndarray]:
        """For every grid candidate j: (Σ_k (w_k S h_j)², h_jᵀ S h_j); a measurement of noise variance v at j
        reduces trace(Cov W μ) by num_j / (s_j + v_j) in expectation. O(n r q)."""
        hsw = self._times(self.S @ self._w_state(weights).T, self.theta, self.gain)  # H S wᵀ (n, q)
        return np.einsum("ij,ij->i", hsw, hsw), np.clip(self.s, 0, None)
