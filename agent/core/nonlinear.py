"""Bayesian fitting of nonlinear models, one or several datasets (user-facing; DESIGN §4.3).

Define parameters (:class:`Param`: bounds, optional Gaussian prior), one or more
:class:`Dataset` (model ``f(theta, x)`` over the parameters it names, data ``y`` with 1-σ
uncertainties), and call :func:`fit`. Several datasets sharing parameters give one joint
posterior (Bayesian integration): the likelihoods multiply. :func:`integrate` also fits each
dataset alone and reports how much integration narrows each parameter and the free-energy
difference F_joint − Σ F_single (negative: sharing the parameters is supported by the data).

Models must be numba-compilable (plain numpy code usually is). Each model is compiled once per process
and argument types (:data:`agent.core.exchange_mc.COMPILED` counts builds and reuses): a plain Python
model defined in a module file is compiled with numba's disk cache (``cache=True``), so later
processes load it; one defined interactively (``__main__``, a closure) is kept in memory only. The
log-likelihood wrapped around each model (a closure, which numba cannot cache on disk) is compiled once
per process. Before sampling, a ``boundscheck=True`` twin of each model runs on prior draws, so an
out-of-bounds read, a wrong output shape or a model that is nowhere finite is a one-line ValueError.
A dataset may marginalise analytically an unknown positive scale ``a`` (``linear="scale"``) or a
scale and a constant offset ``b`` (``linear="scale+offset"``): prediction a·f(θ, x) + b, with
uniform priors a ∈ [0, scale_max], b ∈ offset_range; the Gaussian integral is taken over the whole
plane, valid when a and b are determined well inside their boxes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, types

from agent.core.exchange_mc import (
    _NUMBA_ERRORS,
    COMPILED,
    ExchangeResult,
    boundscheck_twin,
    draw_prior,
    exchange_mc,
    numba_error_line,
)

_LINEAR = {"none": 0, "scale": 1, "scale+offset": 2}


@dataclass(frozen=True)
class Param:
    """A parameter: uniform on [lower, upper] unless ``mean``/``sd`` give a Gaussian prior
    (truncated to the bounds, which may then be infinite)."""

    name: str
    lower: float = -np.inf
    upper: float = np.inf
    mean: float | None = None
    sd: float | None = None

    def __post_init__(self):
        lo, hi = float(self.lower), float(self.upper)
        if np.isnan(lo) or np.isnan(hi) or not lo < hi:
            raise ValueError(f"parameter {self.name!r}: lower bound {lo} must be < upper bound {hi}")
        if (self.mean is None) != (self.sd is None):
            raise ValueError(f"parameter {self.name!r}: give both mean and sd for a Gaussian prior")
        if self.sd is None:
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"parameter {self.name!r}: a uniform prior needs finite bounds")
        elif not (np.isfinite(self.mean) and np.isfinite(self.sd) and self.sd > 0):
            raise ValueError(f"parameter {self.name!r}: prior sd must be > 0 and finite, mean finite")


def prior_arrays(params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, mean, sd) of ``Param``s as exchange_mc takes them (mean, sd 0 for a uniform prior)."""
    lo = np.array([p.lower for p in params], float)
    hi = np.array([p.upper for p in params], float)
    mu = np.array([p.mean if p.sd is not None else 0.0 for p in params], float)
    sd = np.array([p.sd if p.sd is not None else 0.0 for p in params], float)
    return lo, hi, mu, sd


@dataclass
class Dataset:
    """One measured spectrum: ``y`` ± ``sigma`` at ``x``, modelled by ``model(theta, x)`` where
    ``theta`` holds the named ``params`` in order."""

    model: Callable
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | float
    params: Sequence[str]
    name: str = "data"
    linear: str = "none"
    scale_max: float | None = None
    offset_range: tuple[float, float] | None = None
    jitted: Callable = field(init=False, repr=False, default=None)

    def __post_init__(self):
        self.x = np.ascontiguousarray(self.x, dtype=float)
        self.y = np.ascontiguousarray(self.y, dtype=float)
        if self.y.ndim != 1 or self.y.size == 0:
            raise ValueError(f"dataset {self.name!r}: y must be a non-empty 1-D array")
        sigma = np.asarray(self.sigma, dtype=float)
        if sigma.ndim and sigma.shape != self.y.shape:
            raise ValueError(f"dataset {self.name!r}: sigma has shape {sigma.shape} but y has {self.y.shape}: "
                             "give one sigma for all points or one per point")
        self.sigma = np.ascontiguousarray(np.broadcast_to(sigma, self.y.shape))
        for label, arr in (("x", self.x), ("y", self.y), ("sigma", self.sigma)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"dataset {self.name!r}: {label} contains non-finite values")
        if np.any(self.sigma <= 0):
            raise ValueError(f"dataset {self.name!r}: uncertainties must be > 0")
        if self.linear not in _LINEAR:
            raise ValueError(f"dataset {self.name!r}: linear must be one of {sorted(_LINEAR)}")
        if self.linear != "none":
            if self.scale_max is None or not self.scale_max > 0:
                raise ValueError(f"dataset {self.name!r}: linear={self.linear!r} needs scale_max > 0")
            if self.linear == "scale+offset":
                if self.offset_range is None or not self.offset_range[0] < self.offset_range[1]:
                    raise ValueError(f"dataset {self.name!r}: offset_range must be (low, high), low < high")
        if not callable(self.model):
            raise ValueError(f"dataset {self.name!r}: model must be callable f(theta, x)")
        self.params = tuple(self.params)
        self.jitted = jit_model(self.model)

    @property
    def model_name(self) -> str:
        return getattr(self.model, "__name__", repr(self.model))

    def log_volume(self) -> float:
        """log of the prior box volume of the marginalised linear parameters."""
        if self.linear == "none":
            return 0.0
        v = np.log(self.scale_max)
        if self.linear == "scale+offset":
            v += np.log(self.offset_range[1] - self.offset_range[0])
        return float(v)

    def args(self, index: np.ndarray) -> tuple:
        w = 1.0 / self.sigma**2
        const = -np.sum(np.log(self.sigma)) - 0.5 * self.y.size * np.log(2 * np.pi)
        return (self.x, self.y, w, index.astype(np.int64), float(const), self.log_volume())


def _disk_cacheable(func) -> bool:
    """numba can cache ``func`` on disk: defined in a module file, not interactively, not a closure."""
    if func.__module__ == "__main__" or func.__code__.co_freevars:
        return False
    try:
        return inspect.getsourcefile(func) is not None
    except TypeError:
        return False


def jit_model(model: Callable):
    """The numba dispatcher of ``model``, one per model function in the process (a numba dispatcher is
    its own); disk-cached when the model is defined in a module file."""
    if isinstance(model, numba.core.dispatcher.Dispatcher):
        return model
    if not callable(model) or not hasattr(model, "__code__"):
        raise ValueError(f"model {model!r} must be a Python function f(theta, x)")
    jitted, _ = COMPILED.get("model_dispatcher", model, lambda: njit(cache=_disk_cacheable(model))(model))
    return jitted


def _model_types(ds: Dataset):
    return (types.float64[::1], numba.typeof(ds.x))


def compile_model(ds: Dataset) -> float:
    """Compile ``ds``'s model for (theta float64[::1], x) once per process; one-line ValueError naming the
    model if numba cannot. Returns the seconds spent now (0 when already compiled)."""
    sig = _model_types(ds)

    def build():
        try:
            ds.jitted.compile(sig)
        except _NUMBA_ERRORS as exc:
            raise ValueError(f"dataset {ds.name!r}: model {ds.model_name!r} cannot be compiled by numba: "
                             f"{numba_error_line(exc)}") from exc
        return ds.jitted

    return COMPILED.get("model", (ds.jitted, sig), build)[1]


def _dataset_loglike(f, mode: int):
    """numba log-likelihood of one dataset, args = (x, y, w, index, const, log_volume); one per (model,
    mode) in the process, so that repeated fits reuse the compiled function."""

    def build():
        @njit
        def ll(theta, args):
            x, y, w, index, const, logvol = args
            pred = f(theta[index], x)
            if mode == 0:
                r = y - pred
                return const - 0.5 * np.sum(w * r * r)
            sff = sfy = syy = sf = sy = s1 = 0.0
            for i in range(y.size):
                wp = w[i] * pred[i]
                sff += wp * pred[i]
                sfy += wp * y[i]
                syy += w[i] * y[i] * y[i]
                sf += wp
                sy += w[i] * y[i]
                s1 += w[i]
            if mode == 1:
                if not sff > 0:
                    return -np.inf
                chi2 = syy - sfy * sfy / sff
                return const - 0.5 * chi2 + 0.5 * np.log(2 * np.pi / sff) - logvol
            det = sff * s1 - sf * sf
            if not det > 0:
                return -np.inf
            a = (s1 * sfy - sf * sy) / det
            b = (sff * sy - sf * sfy) / det
            chi2 = syy - a * sfy - b * sy
            return const - 0.5 * chi2 + np.log(2 * np.pi) - 0.5 * np.log(det) - logvol

        return ll

    return COMPILED.get("loglike_wrapper", (f, mode), build)[0]


def _sum_loglike(first, rest):
    def build():
        @njit
        def ll(theta, args):
            return first(theta, args[0]) + rest(theta, args[1])

        return ll

    return COMPILED.get("loglike_sum", (first, rest), build)[0]


def _joint(lls: list):
    """Fold dataset log-likelihoods into one; args nest as (a0, (a1, (a2, …)))."""
    total = lls[-1]
    for one in reversed(lls[:-1]):
        total = _sum_loglike(one, total)
    return total


def _compile_loglike(ll, args) -> float:
    """Compile the joint log-likelihood for its args' type once per process; seconds spent now."""
    sig = (types.float64[::1], numba.typeof(args))

    def build():
        ll.compile(sig)
        return ll

    return COMPILED.get("loglike", (ll, sig), build)[1]


def _nest(args: list) -> tuple:
    nested = args[-1]
    for a in reversed(args[:-1]):
        nested = (a, nested)
    return nested


def _check_model(ds: Dataset, thetas: np.ndarray, names: Sequence[str]) -> float:
    """Validate ``ds``'s model on prior draws ``thetas`` (n, its parameters): compiles, reads within
    bounds (boundscheck twin on the first draw), returns y's shape, is finite somewhere. Returns the
    compile seconds spent now."""
    spent = compile_model(ds)
    twin, dt = boundscheck_twin(ds.jitted, _model_types(ds), "model_boundscheck")
    label = f"dataset {ds.name!r}: model {ds.model_name!r}"
    try:
        first = np.asarray(twin(thetas[0], ds.x))
    except IndexError as exc:
        raise ValueError(f"{label} reads out of bounds ({exc}) with theta of {thetas.shape[1]} parameters "
                         f"{tuple(names)} at theta={thetas[0].tolist()}") from exc
    if first.shape != ds.y.shape:
        raise ValueError(f"{label} returned shape {first.shape}, data have {ds.y.shape}")
    finite = np.array([np.all(np.isfinite(ds.jitted(t, ds.x))) for t in thetas])
    if not finite.any():
        raise ValueError(f"{label} returned non-finite values at all {thetas.shape[0]} prior draws "
                         f"(e.g. theta={thetas[0].tolist()})")
    return spent + dt


@dataclass
class Posterior:
    """Posterior summary: samples (pooled over runs), means, stds, 95 % intervals, F ± error."""

    names: tuple[str, ...]
    result: ExchangeResult

    @property
    def samples(self) -> np.ndarray:
        return self.result.pooled

    @property
    def mean(self) -> dict[str, float]:
        return dict(zip(self.names, self.samples.mean(axis=0), strict=True))

    @property
    def std(self) -> dict[str, float]:
        return dict(zip(self.names, self.samples.std(axis=0, ddof=1), strict=True))

    def interval(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        q = np.quantile(self.samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return {n: (float(q[0, i]), float(q[1, i])) for i, n in enumerate(self.names)}

    @property
    def free_energy(self) -> float:
        return self.result.free_energy

    @property
    def free_energy_err(self) -> float:
        return self.result.free_energy_err

    def summary(self, prefix: str = "") -> dict[str, float]:
        """Flat dict: ``<q>_mean/_std/_lo95/_hi95``, ``F``, ``F_err`` (nats), ``rhat_max`` (across runs),
        ``rhat_split_max``, ``ess_bulk_min``, ``round_trip_sweeps``, ``exchange_min``, ``compile_s`` and
        ``wall_s`` (s)."""
        out = {}
        ci = self.interval()
        for n in self.names:
            out[f"{prefix}{n}_mean"] = float(self.mean[n])
            out[f"{prefix}{n}_std"] = float(self.std[n])
            out[f"{prefix}{n}_lo95"], out[f"{prefix}{n}_hi95"] = ci[n]
        r = self.result
        out[f"{prefix}F"] = r.free_energy
        out[f"{prefix}F_err"] = r.free_energy_err
        out[f"{prefix}rhat_max"] = _nanmax(r.rhat)
        out[f"{prefix}rhat_split_max"] = _nanmax(r.rhat_split)
        out[f"{prefix}ess_bulk_min"] = -_nanmax(-np.asarray(r.ess_bulk)) if r.ess_bulk is not None else float("nan")
        out[f"{prefix}round_trip_sweeps"] = r.round_trip_sweeps
        out[f"{prefix}exchange_min"] = float(np.min(r.exchange_acceptance))
        out[f"{prefix}compile_s"] = r.compile_s
        out[f"{prefix}wall_s"] = r.wall_s
        return out

    def report(self) -> str:
        """Plain-text table: per parameter mean, std, 95 % interval, split R-hat and bulk ESS; then F,
        the ladder's swap acceptance and round trips, compile and sampling times."""
        r = self.result
        ci = self.interval()
        rows = [f"{'parameter':<12} {'mean':>11} {'std':>10} {'lo95':>11} {'hi95':>11} {'R-hat(split)':>12} "
                f"{'ESS(bulk)':>9}"]
        for i, n in enumerate(self.names):
            rs = r.rhat_split[i] if r.rhat_split is not None else float("nan")
            es = r.ess_bulk[i] if r.ess_bulk is not None else float("nan")
            rows.append(f"{n:<12} {self.mean[n]:>11.5g} {self.std[n]:>10.3g} {ci[n][0]:>11.5g} {ci[n][1]:>11.5g} "
                        f"{rs:>12.3f} {es:>9.0f}")
        rows.append(f"F = {r.free_energy:.3f} ± {r.free_energy_err:.3f} nats (TI {r.free_energy_ti:.3f}); "
                    f"{r.betas.shape[1]} temperatures, swap acceptance ≥ {np.min(r.exchange_acceptance):.2f}; "
                    f"{r.round_trips} round trips, {r.round_trip_sweeps:.1f} sweeps each")
        rows.append(f"{r.samples.shape[0]} runs × {r.samples.shape[1]} draws, {r.n_evals} evaluations; "
                    f"compile {r.compile_s:.2f} s, sampling {r.wall_s:.2f} s")
        return "\n".join(rows)


def _nanmax(a) -> float:
    a = np.asarray(a, float) if a is not None else np.array([np.nan])
    return float(np.nanmax(a)) if np.any(np.isfinite(a)) else float("nan")


def fit(params: Sequence[Param], datasets: Dataset | Sequence[Dataset], *, exchangeable=None,
        validate: bool = True, **sampler) -> Posterior:
    """Joint posterior of ``params`` given all ``datasets`` by exchange Monte Carlo.

    ``sampler`` keywords go to :func:`agent.core.exchange_mc.exchange_mc` (n_sweeps, n_burn, n_runs,
    seed, betas, …). All inputs are validated before any sampling; with ``validate`` each model also
    runs on ``n_prior_check`` (256) prior draws (boundscheck twin on the first). ``exchangeable`` lists
    groups of interchangeable parameters, e.g. ``[("pos1", "pos2")]``, or of blocks moving together,
    ``[(("pos1", "amp1"), ("pos2", "amp2"))]``: each draw is sorted by the blocks' first parameter so
    that symmetric modes are not averaged (:func:`agent.core.exchange_mc.relabel`). The result's
    ``compile_s`` counts all compilation and validation of this fit (s), ``wall_s`` the sampling."""
    if isinstance(datasets, Dataset):
        datasets = [datasets]
    params = list(params)
    if not params or not datasets:
        raise ValueError("need at least one parameter and one dataset")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate parameter names in {names}")
    lo, hi, mu, sd = prior_arrays(params)
    groups = _exchangeable_indices(exchangeable, names)
    n_check = int(sampler.get("n_prior_check", 256))
    draws = draw_prior(np.random.default_rng([int(sampler.get("seed", 0)), 77]), max(n_check, 1), lo, hi, mu, sd)
    lls, args = [], []
    used = set()
    compile_s = 0.0
    for ds in datasets:
        missing = [n for n in ds.params if n not in names]
        if missing:
            raise ValueError(f"dataset {ds.name!r} uses unknown parameters {missing}")
        index = np.array([names.index(n) for n in ds.params], dtype=np.int64)
        used.update(ds.params)
        if validate:
            compile_s += _check_model(ds, np.ascontiguousarray(draws[:, index]), ds.params)
        else:
            compile_s += compile_model(ds)
        lls.append(_dataset_loglike(ds.jitted, _LINEAR[ds.linear]))
        args.append(ds.args(index))
    unused = [n for n in names if n not in used]
    if unused:
        raise ValueError(f"parameters {unused} enter no dataset")
    loglike, nested = _joint(lls), _nest(args)
    compile_s += _compile_loglike(loglike, nested)
    label = "+".join(f"{ds.model_name}({ds.name})" for ds in datasets)
    result = exchange_mc(loglike, nested, lo, hi, mu, sd, exchangeable=groups, validate=False, name=label,
                         **sampler)
    result.compile_s += compile_s
    return Posterior(tuple(names), result)


def _exchangeable_indices(exchangeable, names: list[str]) -> list | None:
    """Parameter names of exchangeable groups → index blocks for :func:`relabel`, checked."""
    if not exchangeable:
        return None
    groups = []
    for group in exchangeable:
        blocks = [(b,) if isinstance(b, str) else tuple(b) for b in group]
        if len(blocks) < 2 or len({len(b) for b in blocks}) != 1:
            raise ValueError(f"exchangeable group {group!r}: need ≥ 2 blocks of equal length")
        unknown = [n for b in blocks for n in b if n not in names]
        if unknown:
            raise ValueError(f"exchangeable group {group!r}: unknown parameters {unknown}")
        groups.append([tuple(names.index(n) for n in b) for b in blocks])
    return groups


@dataclass
class Integration:
    """Joint fit plus single-dataset fits: per shared parameter std(joint)/std(single)."""

    joint: Posterior
    singles: dict[str, Posterior]
    narrowing: dict[str, dict[str, float]]
    delta_f: float  # F_joint − Σ F_single, nats; < 0 supports sharing the parameters
    delta_f_err: float


def integrate(params: Sequence[Param], datasets: Sequence[Dataset], **sampler) -> Integration:
    """Bayesian integration of several spectra (DESIGN §4.3): joint and single-dataset fits."""
    joint = fit(params, datasets, **sampler)
    singles = {}
    for ds in datasets:
        own = [p for p in params if p.name in ds.params]
        singles[ds.name] = fit(own, [ds], **sampler)
    narrowing = {
        name: {n: joint.std[n] / post.std[n] for n in post.names} for name, post in singles.items()
    }
    delta = joint.free_energy - sum(p.free_energy for p in singles.values())
    err = np.sqrt(joint.free_energy_err**2 + sum(p.free_energy_err**2 for p in singles.values()))
    return Integration(joint, singles, narrowing, float(delta), float(err))
