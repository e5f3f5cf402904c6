"""Replica-exchange ("exchange") Monte Carlo with the Bayesian free energy (DESIGN §4.3).

Replicas sample p_β(θ) ∝ L(θ)^β p(θ) on a ladder 0 = β_0 < … < β_L = 1. Each sweep updates every
parameter of every replica by a one-dimensional Gaussian random-walk Metropolis step, then
proposes swaps between all neighbouring temperatures. The inner loop is compiled with numba and
calls a numba-compiled ``loglike(theta, args) -> float`` (natural log, nats).

During burn-in the step sizes (per replica and parameter, target acceptance 0.44) and the ladder
(log-gaps nudged towards equal neighbour swap acceptance) adapt; afterwards both are frozen so the
kept samples come from a fixed Markov chain. Several independent runs (random streams spawned from ``seed``) give
R-hat and the spread of the free energy.

Free energy F = −log Z (nats) from the kept log-likelihood traces, by geometric bridge sampling
between neighbouring temperatures (two-sided stepping stone); thermodynamic integration
(trapezoid over β) is reported as a cross-check. The error is the spread across runs, or of
batches within runs if larger.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, types
from scipy.optimize import minimize
from scipy.special import erfcinv, logsumexp, ndtri
from scipy.stats import rankdata, truncnorm

_MH_TARGET = 0.44
BURN_PER_TEMPERATURE = 30  # minimum burn-in sweeps per temperature: replicas must cross the ladder


def _run_chain_py(ll, args, theta, betas, steps, lo, hi, mu, isd, n_burn, n_keep, thin, rng, adapt_ladder):
    """One replica-exchange run. ``theta`` (L, d), ``betas`` (L,), ``steps`` (L, d) are updated
    in place; ``rng`` is a numpy Generator. Returns (β=1 samples, log-likelihood trace
    (n_keep, L), MH and swap acceptance, likelihood evaluations, proposal axes (L, d, d), summed
    round-trip sweeps and number of round trips).

    A round trip (kept sweeps only, ladder frozen) is counted when a replica reaches the coldest
    temperature having visited the hottest since its previous arrival at the coldest; its length is
    the number of sweeps between those two arrivals. Positions are read at the end of each sweep.

    Metropolis moves are one-dimensional along per-replica axes: the coordinate axes at first,
    the principal axes of each replica's covariance (learned in the 2nd quarter of burn-in) from
    mid burn-in on, so that correlated ridges (e.g. Δ and U_fc) mix."""
    n_rep, d = theta.shape
    rot = np.zeros((n_rep, d, d))
    for k in range(n_rep):
        for j in range(d):
            rot[k, j, j] = 1.0
    s1 = np.zeros((n_rep, d))
    s2 = np.zeros((n_rep, d, d))
    q1, q2 = n_burn // 4, n_burn // 2
    logl = np.empty(n_rep)
    for k in range(n_rep):
        logl[k] = ll(theta[k], args)
    samples = np.empty((n_keep, d))
    trace = np.empty((n_keep, n_rep))
    mh_acc = np.zeros((n_rep, d))
    ex_acc = np.zeros(max(n_rep - 1, 1))
    log_gap = np.log(np.maximum(betas[1:] - betas[:-1], 1e-300))
    width = hi - lo
    prop = np.empty(d)
    who = np.arange(n_rep)  # replica (walker) at each temperature slot
    trip_start = np.full(n_rep, -1)  # per replica: sweep of its last arrival at the coldest, -1 before any
    seen_hot = np.zeros(n_rep, dtype=np.bool_)
    trip_sum = 0
    trip_count = 0
    n_eval = n_rep
    kept = 0
    total = n_burn + n_keep * thin
    for it in range(total):
        burn = it < n_burn
        gamma = 1.0 / (1.0 + it / 20.0) ** 0.6
        for k in range(n_rep):
            beta = betas[k]
            for j in range(d):
                z = steps[k, j] * rng.standard_normal()
                inside = True
                dlp = 0.0
                for i in range(d):
                    prop[i] = theta[k, i] + z * rot[k, i, j]
                    if not lo[i] <= prop[i] <= hi[i]:
                        inside = False
                    if isd[i] > 0.0:
                        dlp -= 0.5 * (((prop[i] - mu[i]) * isd[i]) ** 2 - ((theta[k, i] - mu[i]) * isd[i]) ** 2)
                prob = 0.0
                if inside:
                    l_new = ll(prop, args)
                    n_eval += 1
                    la = beta * (l_new - logl[k]) + dlp
                    if la != la:
                        la = -np.inf
                    prob = 1.0 if la >= 0.0 else np.exp(la)
                    if rng.random() < prob:
                        logl[k] = l_new
                        theta[k] = prop
                if burn:
                    s = steps[k, j] * np.exp(gamma * (prob - _MH_TARGET))
                    cap = 0.0
                    for i in range(d):
                        cap += (rot[k, i, j] * width[i]) ** 2
                    steps[k, j] = min(max(s, 1e-14), np.sqrt(cap))
                else:
                    mh_acc[k, j] += prob
        if q1 <= it < q2:
            for k in range(n_rep):
                for i in range(d):
                    s1[k, i] += theta[k, i]
                    for m in range(d):
                        s2[k, i, m] += theta[k, i] * theta[k, m]
        if it == q2 - 1 and q2 - q1 >= 10 and d > 1:
            n_acc = q2 - q1
            for k in range(n_rep):
                mean = s1[k] / n_acc
                cov = s2[k] / n_acc - np.outer(mean, mean)
                vals, vecs = np.linalg.eigh(cov)
                if vals[0] > 1e-300 and np.all(np.isfinite(vecs)):
                    rot[k] = vecs
                    steps[k] = 2.4 * np.sqrt(vals)
        for k in range(n_rep - 1):
            la = (betas[k + 1] - betas[k]) * (logl[k] - logl[k + 1])
            prob = 1.0 if la >= 0.0 else np.exp(la)
            if rng.random() < prob:
                for j in range(d):
                    tmp = theta[k, j]
                    theta[k, j] = theta[k + 1, j]
                    theta[k + 1, j] = tmp
                tmp = logl[k]
                logl[k] = logl[k + 1]
                logl[k + 1] = tmp
                w = who[k]
                who[k] = who[k + 1]
                who[k + 1] = w
            if burn:
                ex_acc[k] = prob
            else:
                ex_acc[k] += prob
        if burn and adapt_ladder and n_rep > 2:
            kappa = 0.5 / (1.0 + it / 100.0)
            mean_acc = np.mean(ex_acc[: n_rep - 1])
            for k in range(n_rep - 1):
                log_gap[k] += kappa * (ex_acc[k] - mean_acc)
            gaps = np.exp(log_gap - np.max(log_gap))
            gaps /= np.sum(gaps)
            acc_beta = 0.0
            for k in range(n_rep - 2):
                acc_beta += gaps[k]
                betas[k + 1] = acc_beta
            betas[n_rep - 1] = 1.0
        if burn and it == n_burn - 1:
            ex_acc[:] = 0.0
        if not burn and n_rep > 1:
            w = who[0]
            if trip_start[w] >= 0:
                seen_hot[w] = True
            w = who[n_rep - 1]
            if trip_start[w] < 0:
                trip_start[w] = it
            elif seen_hot[w]:
                trip_sum += it - trip_start[w]
                trip_count += 1
                trip_start[w] = it
                seen_hot[w] = False
        if not burn and (it - n_burn) % thin == 0:
            samples[kept] = theta[n_rep - 1]
            trace[kept] = logl
            kept += 1
    norm = max(n_keep * thin, 1)
    return samples, trace, mh_acc / norm, ex_acc / norm, n_eval, rot, trip_sum, trip_count


_run_chain = njit(nogil=True)(_run_chain_py)  # specialised per loglike: for those _chain_for cannot take


class CompileRegistry:
    """In-process registry of numba-compiled objects (sampler chains, models, log-likelihoods), so that
    each is compiled once per process and key (function and argument types), whatever the number of
    fits. ``compiles`` and ``hits`` count, per kind of object, the builds and the reuses; ``compile_s``
    sums the build times (s), disk-cache loads included."""

    def __init__(self):
        self._items: dict = {}
        self._lock = threading.RLock()
        self.compiles: Counter = Counter()
        self.hits: Counter = Counter()
        self.compile_s = 0.0

    def get(self, kind: str, key, build):
        """(object, seconds spent building it now: 0 on a hit) for ``(kind, key)``; ``build()`` makes and
        compiles the object on a miss. A failed build is not stored."""
        with self._lock:
            found = self._items.get((kind, key))
            if found is not None:
                self.hits[kind] += 1
                return found, 0.0
            t0 = time.perf_counter()
            obj = build()
            dt = time.perf_counter() - t0
            self._items[(kind, key)] = obj
            self.compiles[kind] += 1
            self.compile_s += dt
            return obj, dt


COMPILED = CompileRegistry()

_NUMBA_ERRORS = (numba.core.errors.NumbaError, numba.core.errors.UnsupportedBytecodeError)


def numba_error_line(exc: BaseException) -> str:
    """The informative line of a numba compilation error (its messages span many lines and start with
    the failing pipeline step)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Failed in ", "During: "))]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _chain_signature(args_type):
    vector, matrix = types.float64[::1], types.float64[:, ::1]
    theta_type = types.float64[::1]
    return (types.FunctionType(types.float64(theta_type, args_type)), args_type, matrix, vector,
            matrix, vector, vector, vector, vector, types.int64, types.int64, types.int64,
            numba.typeof(np.random.default_rng(0)), types.boolean)


def _chain_for(loglike, args):
    """``_run_chain`` for ``loglike``: compiled once per type of ``args`` (and cached on disk) for any numba
    loglike ``float64(float64[::1], args)``, which it calls through a function pointer. Specialised on the
    loglike itself, as numba does by default, it was compiled anew for every loglike (each model, each
    dataset's closure) in every process: seconds each, uncacheable. Loglikes of another kind (not a numba
    function, another return type) get that specialised chain. A loglike numba cannot compile raises a
    one-line ValueError naming it."""
    if not isinstance(loglike, numba.core.dispatcher.Dispatcher):
        return _run_chain
    name = getattr(loglike, "__name__", repr(loglike))
    try:
        args_type = numba.typeof(args)
    except ValueError as exc:
        raise ValueError(f"loglike {name!r}: args are not numba-typeable: {exc}") from exc
    theta_type = types.float64[::1]
    try:
        loglike.compile((theta_type, args_type))
    except _NUMBA_ERRORS as exc:
        raise ValueError(f"loglike {name!r} cannot be compiled by numba: {numba_error_line(exc)}") from exc
    if loglike.overloads[(theta_type, args_type)].signature.return_type != types.float64:
        return _run_chain
    chain, _ = COMPILED.get("chain", args_type,
                            lambda: njit(_chain_signature(args_type), nogil=True, cache=True)(_run_chain_py))
    return chain


def swap_acceptance_step(target: float) -> float:
    """x = Δβ·std(log L) giving mean neighbour-swap acceptance ``target`` (Gaussian energies:
    acceptance = erfc(x/2))."""
    return 2.0 * float(erfcinv(target))


def auto_ladder(logl_prior: np.ndarray, n_dim: int, target: float = 0.5, max_temps: int = 64) -> np.ndarray:
    """Inverse temperatures 0 = β_0 < … < β_L = 1 for swap acceptance ≈ ``target``.

    Uses std(log L) ≈ min(σ_prior, sqrt(d/2)/β), σ_prior from log-likelihoods of prior draws
    (a Gaussian posterior at temperature β has Var(log L) = d/(2β²)); steps Δβ = x/std(log L).
    """
    x = swap_acceptance_step(target)
    sigma0 = max(float(np.std(logl_prior)), 1e-3)
    half_d = np.sqrt(max(n_dim, 1) / 2.0)
    betas = [0.0]
    while betas[-1] < 1.0 and len(betas) < max_temps:
        b = betas[-1]
        sd = sigma0 if b == 0.0 else min(sigma0, half_d / b)
        betas.append(b + x / sd)
    betas = np.array(betas[:-1] + [1.0]) if len(betas) > 2 else np.array([0.0, 1.0])
    if len(betas) == 2:
        betas = np.array([0.0, 0.5, 1.0])
    if len(betas) >= max_temps:
        inner = np.geomspace(min(x / sigma0, 0.5), 1.0, max_temps - 1)
        betas = np.concatenate([[0.0], inner])
    return betas


def bridge_log_z(trace: np.ndarray, betas: np.ndarray) -> float:
    """log Z from log-likelihood samples ``trace`` (n, L) at ``betas`` by geometric bridges:
    log Z_{k+1}/Z_k = log E_k[e^{Δβ ℓ/2}] − log E_{k+1}[e^{−Δβ ℓ/2}]."""
    dbeta = np.diff(betas)
    up = logsumexp(0.5 * dbeta * trace[:, :-1], axis=0)
    down = logsumexp(-0.5 * dbeta * trace[:, 1:], axis=0)
    return float(np.sum(up - down))


def mbar_log_z(trace: np.ndarray, betas: np.ndarray) -> float:
    """log Z by the multistate Bennett acceptance ratio (MBAR; Shirts & Chodera 2008), a multi-histogram
    (WHAM-like) estimate using every temperature's samples for every Z_k rather than neighbours only.

    ``trace`` (n, L) holds log L at each of ``betas`` (β_0 = 0, so Z_0 = 1 with a normalised prior).
    With c_k = −log Z_k it minimises the convex φ(c) = Σ_n log Σ_k n·exp(c_k + β_k ℓ_n) − n Σ_k c_k with
    c_0 = 0 (L-BFGS, analytic gradient), started from the bridge estimates; returns log Z_L, nats."""
    n, n_t = trace.shape
    ell = trace.reshape(-1)
    log_n = np.log(n)
    dbeta = np.diff(betas)
    steps = logsumexp(0.5 * dbeta * trace[:, :-1], axis=0) - logsumexp(-0.5 * dbeta * trace[:, 1:], axis=0)
    c0 = -np.cumsum(steps)
    bl = betas[None, :] * ell[:, None]

    def objective(c_rest):
        c = np.concatenate([[0.0], c_rest])
        a = log_n + c[None, :] + bl
        log_d = logsumexp(a, axis=1)
        weights = np.exp(a - log_d[:, None]).sum(axis=0)
        return float(log_d.sum() - n * c.sum()), (weights - n)[1:]

    res = minimize(objective, c0, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-8 * n})
    return float(-res.x[-1])


def ti_log_z(trace: np.ndarray, betas: np.ndarray) -> float:
    """log Z = ∫_0^1 <log L>_β dβ (trapezoid; biased by the ladder's discreteness)."""
    mean_l = trace.mean(axis=0)
    return float(np.sum(0.5 * (mean_l[1:] + mean_l[:-1]) * np.diff(betas)))


def gelman_rubin(chains: np.ndarray) -> np.ndarray:
    """Potential scale reduction R-hat per parameter from ``chains`` (R, n, d), R ≥ 2."""
    n = chains.shape[1]
    means = chains.mean(axis=1)
    w = chains.var(axis=1, ddof=1).mean(axis=0)
    b = n * means.var(axis=0, ddof=1)
    var_hat = (n - 1) / n * w + b / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, np.sqrt(var_hat / w), 1.0)


def split_chains(chains: np.ndarray) -> np.ndarray:
    """(R, n, …) chains cut into 2R half-chains of ⌊n/2⌋ draws (the middle draw of an odd n dropped)."""
    half = chains.shape[1] // 2
    return np.concatenate([chains[:, :half], chains[:, chains.shape[1] - half:]], axis=0)


def split_rhat(chains: np.ndarray) -> np.ndarray:
    """Split R-hat per parameter (Gelman et al., BDA3 §11.4) from ``chains`` (R, n, d), R ≥ 1: R-hat of
    the 2R half-chains, so that a drift within the chains (the same in all of them) shows as well as a
    disagreement between them."""
    return gelman_rubin(split_chains(chains))


def rank_normalise(chains: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks, per parameter: Φ⁻¹((r − 3/8)/(S + 1/4)) (Vehtari et al. 2021)."""
    r, n, d = chains.shape
    ranks = rankdata(chains.reshape(r * n, d), axis=0)
    return ndtri((ranks - 0.375) / (r * n + 0.25)).reshape(r, n, d)


def _ess_1d(x: np.ndarray) -> float:
    """Effective sample size of ``x`` (m, n), m chains of n draws: multi-chain autocorrelation
    ρ_t = 1 − (W − mean_m acov_t)/var⁺ with Geyer's initial monotone sequence (pair sums Γ_k = ρ_2k + ρ_2k+1
    kept while positive, made non-increasing); ESS = m·n/τ, τ = −1 + 2 Σ Γ_k."""
    m, n = x.shape
    if n < 4:
        return float("nan")
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(centred, size, axis=1)
    acov = np.fft.irfft(spec * np.conj(spec), size, axis=1)[:, :n] / n
    w = acov[:, 0].mean() * n / (n - 1)
    var_plus = w * (n - 1) / n + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if not var_plus > 0:
        return float("nan")
    rho = 1.0 - (w - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    negative = np.flatnonzero(pairs < 0)
    pairs = pairs[: negative[0]] if negative.size else pairs
    pairs = np.minimum.accumulate(pairs)
    tau = max(-1.0 + 2.0 * float(pairs.sum()), 1.0 / np.log10(m * n))
    return m * n / tau


def effective_sample_size(chains: np.ndarray) -> np.ndarray:
    """Effective sample size per parameter of ``chains`` (R, n, d), as they are (no splitting)."""
    return np.array([_ess_1d(chains[..., j]) for j in range(chains.shape[-1])])


def ess_bulk(chains: np.ndarray) -> np.ndarray:
    """Bulk effective sample size per parameter (Vehtari et al. 2021): that of the rank-normalised,
    split chains (R, n, d)."""
    return effective_sample_size(split_chains(rank_normalise(chains)))


def relabel(samples: np.ndarray, groups) -> np.ndarray:
    """Copy of ``samples`` (…, d) with each group of exchangeable blocks sorted in every draw: ``groups``
    is a list of groups, a group a list of blocks, a block a tuple of parameter indices (the parameters
    of one component, e.g. (position, amplitude) of one peak) sorted by its first index's value. Labels
    then no longer switch between the posterior's symmetric modes, so summaries do not average them."""
    out = np.array(samples, float, copy=True)
    for blocks in groups:
        blocks = np.asarray(blocks, dtype=np.int64).reshape(len(blocks), -1)
        order = np.argsort(samples[..., blocks[:, 0]], axis=-1, kind="stable")
        for j in range(blocks.shape[1]):
            out[..., blocks[:, j]] = np.take_along_axis(samples[..., blocks[:, j]], order, axis=-1)
    return out


@dataclass
class ExchangeResult:
    """Output of :func:`exchange_mc`. Log quantities in nats."""

    samples: np.ndarray  # (R, n, d) at β = 1
    logl: np.ndarray  # (R, n, L) kept log-likelihoods per temperature
    betas: np.ndarray  # (R, L) frozen ladders
    free_energy: float  # F = −log Z (bridge), mean over runs
    free_energy_err: float
    free_energy_runs: np.ndarray
    free_energy_ti: float
    exchange_acceptance: np.ndarray  # (L−1,) mean over runs
    mh_acceptance: np.ndarray  # (L, d)
    rhat: np.ndarray  # (d,) across runs, not split; NaN for one run
    n_evals: int
    wall_s: float  # sampling (ladder pilots and runs), s; compilation excluded
    rhat_split: np.ndarray | None = None  # (d,) split R-hat over all runs' halves
    ess_bulk: np.ndarray | None = None  # (d,) bulk effective sample size, all runs together
    round_trip_sweeps: float = float("nan")  # mean sweeps coldest → hottest → coldest; NaN if none
    round_trips: int = 0  # completed round trips, all runs and replicas
    compile_s: float = 0.0  # compilation and validation before sampling, s (numba disk-cache loads included)
    free_energy_mbar: float = float("nan")  # F by MBAR over all temperatures (``mbar=True``), nats
    free_energy_mbar_err: float = float("nan")
    extra: dict = field(default_factory=dict)

    @property
    def pooled(self) -> np.ndarray:
        """All runs' β = 1 samples, (R·n, d)."""
        return self.samples.reshape(-1, self.samples.shape[-1])

    @property
    def evals_per_s(self) -> float:
        return self.n_evals / self.wall_s if self.wall_s > 0 else float("nan")


def draw_prior(rng: np.random.Generator, n: int, lo, hi, mu, sd) -> np.ndarray:
    """``n`` draws from the product prior: uniform on [lo, hi] where sd = 0, else Normal(mu, sd)
    truncated to [lo, hi]."""
    lo, hi, mu, sd = (np.asarray(a, float) for a in (lo, hi, mu, sd))
    out = np.empty((n, lo.size))
    for j in range(lo.size):
        if sd[j] > 0:
            a, b = (lo[j] - mu[j]) / sd[j], (hi[j] - mu[j]) / sd[j]
            out[:, j] = truncnorm.rvs(a, b, loc=mu[j], scale=sd[j], size=n, random_state=rng)
        else:
            out[:, j] = rng.uniform(lo[j], hi[j], n)
    return out


def _refine_ladder(chain, loglike, args, ladder, start, lo, hi, mu, isd, n_burn, seed, target, min_acc, max_temps):
    """Pilot runs (n_burn adaptive + n_burn/2 frozen sweeps) that re-space the ladder, adding
    temperatures where neighbour swaps are rare, until all acceptances are ≥ ``min_acc``.
    Returns (ladder, likelihood evaluations spent)."""
    spent = 0
    x_target = swap_acceptance_step(target)
    for attempt in range(4):
        b = ladder.copy()
        theta, steps = start(1000 + attempt, b)
        out = chain(loglike, args, theta, b, steps, lo, hi, mu, isd, n_burn, max(n_burn // 2, 10), 1,
                    np.random.default_rng([seed, 2000 + attempt]), True)
        spent += out[4]
        acc = out[3][: b.size - 1]
        if acc.min() >= min_acc or b.size >= max_temps:
            return b, spent
        dist = np.concatenate([[0.0], np.cumsum(2.0 * erfcinv(np.clip(acc, 1e-3, 1.0)))])
        n_new = int(min(max_temps, max(b.size + 1, np.ceil(dist[-1] / x_target) + 1)))
        u = np.arcsinh(b / b[1])
        ladder = np.sinh(np.interp(np.linspace(0.0, dist[-1], n_new), dist, u)) * b[1]
        ladder[0], ladder[-1] = 0.0, 1.0
    return ladder, spent


def scale_of(lo: np.ndarray, hi: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Per-parameter prior scale for the initial step sizes: the prior sd (capped by the box), else the box."""
    return np.where(sd > 0, np.minimum(sd, np.where(np.isfinite(hi - lo), hi - lo, np.inf)), hi - lo)


def boundscheck_twin(func, sig: tuple, kind: str = "boundscheck"):
    """(twin, seconds compiling it now) of the njit function ``func``: its Python function compiled with
    ``boundscheck=True`` for ``sig``, once per process (in memory only: numba's disk cache does not key on the
    flag), registered in COMPILED under ``kind``."""

    def build():
        twin = njit(boundscheck=True)(func.py_func)
        twin.compile(sig)
        return twin

    return COMPILED.get(kind, (func.py_func, sig), build)


def _check_bounds(loglike, args, theta: np.ndarray, name: str) -> None:
    """Run a ``boundscheck=True`` twin of ``loglike`` at ``theta``: an out-of-bounds read is a ValueError."""
    twin, _ = boundscheck_twin(loglike, (types.float64[::1], numba.typeof(args)))
    try:
        twin(theta, args)
    except IndexError as exc:
        raise ValueError(f"{name}: reads out of bounds ({exc}) at theta={theta.tolist()} "
                         f"({theta.size} parameters)") from exc


def exchange_mc(
    loglike,
    args: tuple,
    lower,
    upper,
    prior_mean=None,
    prior_sd=None,
    *,
    n_sweeps: int = 2000,
    n_burn: int = 1000,
    thin: int = 1,
    n_runs: int = 4,
    betas=None,
    target_exchange: float = 0.5,
    adapt_ladder: bool = True,
    seed: int = 0,
    n_workers: int | None = None,
    n_batches: int = 5,
    min_exchange: float = 0.2,
    max_temps: int = 64,
    exchangeable=None,
    validate: bool = True,
    name: str | None = None,
    n_prior_check: int = 256,
    mbar: bool = False,
) -> ExchangeResult:
    """Sample p(θ|D) ∝ L(θ)p(θ) with replica exchange and estimate F = −log Z.

    ``loglike`` is numba-compiled ``(theta: float64[:], args) -> float`` (log-likelihood incl.
    its normalisation, nats). The prior is uniform on [lower, upper] for parameters with
    ``prior_sd`` 0/None, else Normal(prior_mean, prior_sd) truncated to the bounds. ``betas``
    (fixed ladder) defaults to :func:`auto_ladder`, refined by pilot runs until every neighbour
    swap acceptance is ≥ ``min_exchange``. ``n_burn`` is a minimum: burn-in lasts at least
    30 sweeps per temperature. Runs go to ``n_workers`` threads.

    Before sampling: ``loglike`` is compiled (a one-line ValueError if numba cannot), and with
    ``validate`` a twin compiled with ``boundscheck=True`` is run on a prior draw (an out-of-bounds read
    is a ValueError, not a silent read). ``n_prior_check`` prior draws give the ladder's scale and the
    fraction of the prior where the log-likelihood is not finite: all of it is a ValueError; part of it
    a RuntimeWarning, and that region is then outside the support: moves into it are rejected (replicas
    start outside it), so F is the free energy under the prior renormalised to the finite region (under
    the convention L = 0 there it would be F − log(1 − fraction), ``extra["free_energy_zero_outside"]``).

    ``exchangeable`` (groups of blocks of parameter indices, see :func:`relabel`) sorts each group in
    every kept draw before the diagnostics. ``name`` (default the loglike's) labels error messages.
    ``mbar`` adds the multi-histogram estimate :func:`mbar_log_z` per run (a cross-check of the
    stepping stone; its error is the spread across runs).
    """
    lo = np.ascontiguousarray(lower, float)
    hi = np.ascontiguousarray(upper, float)
    d = lo.size
    mu = np.zeros(d) if prior_mean is None else np.nan_to_num(np.ascontiguousarray(prior_mean, float))
    sd = np.zeros(d) if prior_sd is None else np.nan_to_num(np.ascontiguousarray(prior_sd, float))
    if np.any(~(lo < hi)):
        raise ValueError(f"lower bounds must be < upper bounds, got {lo} and {hi}")
    if np.any((sd <= 0) & ~(np.isfinite(lo) & np.isfinite(hi))):
        raise ValueError("uniform priors need finite bounds")
    if n_runs < 1 or n_sweeps < n_batches or n_burn < 1:
        raise ValueError("need n_runs >= 1, n_sweeps >= n_batches and n_burn >= 1")
    isd = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
    name = name or getattr(loglike, "__name__", "loglike")
    rng = np.random.default_rng(seed)
    t_compile = time.perf_counter()
    chain = _chain_for(loglike, args)
    pilot = draw_prior(rng, max(int(n_prior_check), 2), lo, hi, mu, sd)
    if validate and isinstance(loglike, numba.core.dispatcher.Dispatcher):
        _check_bounds(loglike, args, pilot[0], name)
    chain(loglike, args, draw_prior(rng, 2, lo, hi, mu, sd), np.array([0.0, 1.0]),
          np.outer(np.ones(2), 0.1 * scale_of(lo, hi, sd)), lo, hi, mu, isd, 1, 1, 1, np.random.default_rng(0), False)
    compile_s = time.perf_counter() - t_compile
    logl_pilot = np.array([loglike(t, args) for t in pilot])
    finite = np.isfinite(logl_pilot)
    bad_fraction = 1.0 - float(np.mean(finite))
    if not finite.any():
        raise ValueError(f"{name}: log-likelihood is not finite at any of {pilot.shape[0]} prior draws "
                         f"(e.g. theta={pilot[0].tolist()}, log L = {logl_pilot[0]})")
    if bad_fraction > 0:
        warnings.warn(f"{name}: log-likelihood is not finite on {100 * bad_fraction:.1f} % of {pilot.shape[0]} "
                      f"prior draws (e.g. theta={pilot[~finite][0].tolist()}); that region is excluded from the "
                      "support and F refers to the prior renormalised to the rest", RuntimeWarning, stacklevel=2)
    good = pilot[finite]
    ladder = (auto_ladder(logl_pilot[finite], d, target_exchange, max_temps) if betas is None
              else np.asarray(betas, float))
    if ladder[0] != 0.0 or ladder[-1] != 1.0 or np.any(np.diff(ladder) <= 0):
        raise ValueError("betas must increase strictly from 0 to 1")
    scale = scale_of(lo, hi, sd)

    def start(r: int, b: np.ndarray):
        rr = np.random.default_rng([seed, r])
        theta = draw_prior(rr, b.size, lo, hi, mu, sd)
        if bad_fraction > 0:
            for k in range(b.size):
                if not np.isfinite(loglike(theta[k], args)):
                    theta[k] = good[rr.integers(good.shape[0])]
        return theta, np.outer(1.0 / np.sqrt(1.0 + b * b.size), 0.2 * scale)

    t0 = time.perf_counter()
    n_pilot = 0
    if betas is None and adapt_ladder:
        ladder, n_pilot = _refine_ladder(chain, loglike, args, ladder, start, lo, hi, mu, isd,
                                         max(int(n_burn), BURN_PER_TEMPERATURE * ladder.size),
                                         seed, target_exchange, min_exchange, max_temps)
    n_rep = ladder.size
    n_burn = max(int(n_burn), BURN_PER_TEMPERATURE * n_rep)

    def one(r: int):
        b = ladder.copy()
        theta, steps = start(r, b)
        out = chain(loglike, args, theta, b, steps, lo, hi, mu, isd,
                    int(n_burn), int(n_sweeps), int(thin), np.random.default_rng([seed, 3000 + r]),
                    bool(adapt_ladder))
        return (*out, b)

    workers = min(n_runs, n_workers or 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outs = list(pool.map(one, range(n_runs)))
    wall = time.perf_counter() - t0
    samples = np.stack([o[0] for o in outs])
    traces = np.stack([o[1] for o in outs])
    ladders = np.stack([o[8] for o in outs])
    f_runs = np.array([-bridge_log_z(tr, b) for tr, b in zip(traces, ladders, strict=True)])
    f_ti = float(np.mean([-ti_log_z(tr, b) for tr, b in zip(traces, ladders, strict=True)]))
    batch_err = []
    for tr, b in zip(traces, ladders, strict=True):
        fb = [-bridge_log_z(part, b) for part in np.array_split(tr, n_batches)]
        batch_err.append(np.std(fb, ddof=1) / np.sqrt(n_batches))
    within = float(np.sqrt(np.mean(np.square(batch_err)) / n_runs))
    across = float(np.std(f_runs, ddof=1) / np.sqrt(n_runs)) if n_runs > 1 else within
    if exchangeable:
        samples = relabel(samples, exchangeable)
    rhat = gelman_rubin(samples) if n_runs > 1 else np.full(d, np.nan)
    trips = int(sum(o[7] for o in outs))
    f_mean = float(np.mean(f_runs))
    f_mbar = np.full(1, np.nan)
    if mbar:
        f_mbar = np.array([-mbar_log_z(tr, b) for tr, b in zip(traces, ladders, strict=True)])
    return ExchangeResult(
        samples=samples,
        logl=traces,
        betas=ladders,
        free_energy=f_mean,
        free_energy_err=max(within, across),
        free_energy_runs=f_runs,
        free_energy_ti=f_ti,
        exchange_acceptance=np.mean([o[3][: n_rep - 1] for o in outs], axis=0),
        mh_acceptance=np.mean([o[2] for o in outs], axis=0),
        rhat=rhat,
        n_evals=int(sum(o[4] for o in outs)) + n_pilot,
        wall_s=wall,
        rhat_split=split_rhat(samples),
        ess_bulk=ess_bulk(samples),
        round_trip_sweeps=float(sum(o[6] for o in outs)) / trips if trips else float("nan"),
        round_trips=trips,
        compile_s=compile_s,
        free_energy_mbar=float(np.mean(f_mbar)),
        free_energy_mbar_err=float(np.std(f_mbar, ddof=1) / np.sqrt(f_mbar.size)) if f_mbar.size > 1 else float("nan"),
        extra={"n_workers": workers, "pilot_evals": n_pilot, "n_burn": n_burn,
               "nonfinite_prior_fraction": bad_fraction,
               "free_energy_zero_outside": f_mean - float(np.log1p(-bad_fraction)) if bad_fraction < 1 else np.inf},
    )
