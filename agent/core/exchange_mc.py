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

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, types
from scipy.special import erfcinv, logsumexp
from scipy.stats import truncnorm

_MH_TARGET = 0.44
BURN_PER_TEMPERATURE = 30  # minimum burn-in sweeps per temperature: replicas must cross the ladder


def _run_chain_py(ll, args, theta, betas, steps, lo, hi, mu, isd, n_burn, n_keep, thin, rng, adapt_ladder):
    """One replica-exchange run. ``theta`` (L, d), ``betas`` (L,), ``steps`` (L, d) are updated
    in place; ``rng`` is a numpy Generator. Returns (β=1 samples, log-likelihood trace
    (n_keep, L), MH and swap acceptance, likelihood evaluations, proposal axes (L, d, d)).

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
        if not burn and (it - n_burn) % thin == 0:
            samples[kept] = theta[n_rep - 1]
            trace[kept] = logl
            kept += 1
    norm = max(n_keep * thin, 1)
    return samples, trace, mh_acc / norm, ex_acc / norm, n_eval, rot


_run_chain = njit(nogil=True)(_run_chain_py)  # specialised per loglike: for those _chain_for cannot take

_CHAINS: dict = {}  # numba type of args -> _run_chain compiled for loglikes taking such args
_CHAINS_LOCK = threading.Lock()


def _chain_for(loglike, args):
    """``_run_chain`` for ``loglike``: compiled once per type of ``args`` (and cached on disk) for any numba
    loglike ``float64(float64[::1], args)``, which it calls through a function pointer. Specialised on the
    loglike itself, as numba does by default, it was compiled anew for every loglike (each model, each
    dataset's closure) in every process: seconds each, uncacheable. Loglikes of another kind (not a numba
    function, another return type) get that specialised chain."""
    if not isinstance(loglike, numba.core.dispatcher.Dispatcher):
        return _run_chain
    try:
        args_type = numba.typeof(args)
        theta_type = types.float64[::1]
        loglike.compile((theta_type, args_type))
        if loglike.overloads[(theta_type, args_type)].signature.return_type != types.float64:
            return _run_chain
    except Exception:  # not typeable or not compilable with these types: the specialised chain says why
        return _run_chain
    with _CHAINS_LOCK:
        chain = _CHAINS.get(args_type)
        if chain is None:
            vector, matrix = types.float64[::1], types.float64[:, ::1]
            signature = (types.FunctionType(types.float64(theta_type, args_type)), args_type, matrix, vector,
                         matrix, vector, vector, vector, vector, types.int64, types.int64, types.int64,
                         numba.typeof(np.random.default_rng(0)), types.boolean)
            chain = _CHAINS[args_type] = njit(signature, nogil=True, cache=True)(_run_chain_py)
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
    rhat: np.ndarray  # (d,)
    n_evals: int
    wall_s: float
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
) -> ExchangeResult:
    """Sample p(θ|D) ∝ L(θ)p(θ) with replica exchange and estimate F = −log Z.

    ``loglike`` is numba-compiled ``(theta: float64[:], args) -> float`` (log-likelihood incl.
    its normalisation, nats). The prior is uniform on [lower, upper] for parameters with
    ``prior_sd`` 0/None, else Normal(prior_mean, prior_sd) truncated to the bounds. ``betas``
    (fixed ladder) defaults to :func:`auto_ladder`, refined by pilot runs until every neighbour
    swap acceptance is ≥ ``min_exchange``. ``n_burn`` is a minimum: burn-in lasts at least
    30 sweeps per temperature. Runs go to ``n_workers`` threads.
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
    rng = np.random.default_rng(seed)
    pilot = draw_prior(rng, 200, lo, hi, mu, sd)
    logl_pilot = np.array([loglike(t, args) for t in pilot])
    if not np.all(np.isfinite(logl_pilot)):
        bad = pilot[~np.isfinite(logl_pilot)][0]
        raise ValueError(f"log-likelihood is not finite at prior draw theta={bad.tolist()}")
    ladder = auto_ladder(logl_pilot, d, target_exchange, max_temps) if betas is None else np.asarray(betas, float)
    if ladder[0] != 0.0 or ladder[-1] != 1.0 or np.any(np.diff(ladder) <= 0):
        raise ValueError("betas must increase strictly from 0 to 1")
    scale = np.where(sd > 0, np.minimum(sd, np.where(np.isfinite(hi - lo), hi - lo, np.inf)), hi - lo)

    def start(r: int, b: np.ndarray):
        rr = np.random.default_rng([seed, r])
        return draw_prior(rr, b.size, lo, hi, mu, sd), np.outer(1.0 / np.sqrt(1.0 + b * b.size), 0.2 * scale)

    chain = _chain_for(loglike, args)
    chain(loglike, args, draw_prior(rng, 2, lo, hi, mu, sd), np.array([0.0, 1.0]),
          np.outer(np.ones(2), 0.1 * scale), lo, hi, mu, isd, 1, 1, 1, np.random.default_rng(0), False)
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
    ladders = np.stack([o[6] for o in outs])
    f_runs = np.array([-bridge_log_z(tr, b) for tr, b in zip(traces, ladders, strict=True)])
    f_ti = float(np.mean([-ti_log_z(tr, b) for tr, b in zip(traces, ladders, strict=True)]))
    batch_err = []
    for tr, b in zip(traces, ladders, strict=True):
        fb = [-bridge_log_z(part, b) for part in np.array_split(tr, n_batches)]
        batch_err.append(np.std(fb, ddof=1) / np.sqrt(n_batches))
    within = float(np.sqrt(np.mean(np.square(batch_err)) / n_runs))
    across = float(np.std(f_runs, ddof=1) / np.sqrt(n_runs)) if n_runs > 1 else within
    rhat = gelman_rubin(samples) if n_runs > 1 else np.full(d, np.nan)
    return ExchangeResult(
        samples=samples,
        logl=traces,
        betas=ladders,
        free_energy=float(np.mean(f_runs)),
        free_energy_err=max(within, across),
        free_energy_runs=f_runs,
        free_energy_ti=f_ti,
        exchange_acceptance=np.mean([o[3][: n_rep - 1] for o in outs], axis=0),
        mh_acceptance=np.mean([o[2] for o in outs], axis=0),
        rhat=rhat,
        n_evals=int(sum(o[4] for o in outs)) + n_pilot,
        wall_s=wall,
        extra={"n_workers": workers, "pilot_evals": n_pilot, "n_burn": n_burn},
    )
