"""Bayesian fitting of nonlinear models, one or several datasets (user-facing; DESIGN §4.3).

Define parameters (:class:`Param`: bounds, optional Gaussian prior), one or more
:class:`Dataset` (model ``f(theta, x)`` over the parameters it names, data ``y`` with 1-σ
uncertainties), and call :func:`fit`. Several datasets sharing parameters give one joint
posterior (Bayesian integration): the likelihoods multiply. :func:`integrate` also fits each
dataset alone and reports how much integration narrows each parameter and the free-energy
difference F_joint − Σ F_single (negative: sharing the parameters is supported by the data).

Models must be numba-compilable (plain numpy code usually is); they are compiled once per fit.
A dataset may marginalise analytically an unknown positive scale ``a`` (``linear="scale"``) or a
scale and a constant offset ``b`` (``linear="scale+offset"``): prediction a·f(θ, x) + b, with
uniform priors a ∈ [0, scale_max], b ∈ offset_range; the Gaussian integral is taken over the whole
plane, valid when a and b are determined well inside their boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numba
import numpy as np
from numba import njit

from agent.core.exchange_mc import ExchangeResult, exchange_mc

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
        sigma = np.broadcast_to(np.asarray(self.sigma, dtype=float), self.y.shape)
        self.sigma = np.ascontiguousarray(sigma)
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
        self.jitted = self.model if isinstance(self.model, numba.core.dispatcher.Dispatcher) else njit(self.model)

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


@lru_cache(maxsize=64)
def _dataset_loglike(f, mode: int):
    """numba log-likelihood of one dataset, args = (x, y, w, index, const, log_volume); cached
    per (model, mode) so that repeated fits reuse the compiled sampler."""

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


@lru_cache(maxsize=64)
def _sum_loglike(first, rest):
    @njit
    def ll(theta, args):
        return first(theta, args[0]) + rest(theta, args[1])

    return ll


def _joint(lls: list):
    """Fold dataset log-likelihoods into one; args nest as (a0, (a1, (a2, …)))."""
    total = lls[-1]
    for one in reversed(lls[:-1]):
        total = _sum_loglike(one, total)
    return total


def _nest(args: list) -> tuple:
    nested = args[-1]
    for a in reversed(args[:-1]):
        nested = (a, nested)
    return nested


def _check_model(ds: Dataset, theta: np.ndarray) -> None:
    try:
        pred = np.asarray(ds.jitted(theta, ds.x))
    except numba.core.errors.NumbaError as exc:
        raise ValueError(f"dataset {ds.name!r}: model is not numba-compilable: {exc}") from exc
    if pred.shape != ds.y.shape:
        raise ValueError(f"dataset {ds.name!r}: model returned shape {pred.shape}, data have {ds.y.shape}")
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"dataset {ds.name!r}: model returned non-finite values at theta={theta.tolist()}")


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
        """Flat dict: ``<q>_mean/_std/_lo95/_hi95``, ``F``, ``F_err``, ``rhat_max``, ``exchange_min``."""
        out = {}
        ci = self.interval()
        for n in self.names:
            out[f"{prefix}{n}_mean"] = float(self.mean[n])
            out[f"{prefix}{n}_std"] = float(self.std[n])
            out[f"{prefix}{n}_lo95"], out[f"{prefix}{n}_hi95"] = ci[n]
        r = self.result
        out[f"{prefix}F"] = r.free_energy
        out[f"{prefix}F_err"] = r.free_energy_err
        out[f"{prefix}rhat_max"] = float(np.nanmax(r.rhat)) if np.any(np.isfinite(r.rhat)) else float("nan")
        out[f"{prefix}exchange_min"] = float(np.min(r.exchange_acceptance))
        return out


def fit(params: Sequence[Param], datasets: Dataset | Sequence[Dataset], **sampler) -> Posterior:
    """Joint posterior of ``params`` given all ``datasets`` by exchange Monte Carlo.

    ``sampler`` keywords go to :func:`agent.core.exchange_mc.exchange_mc` (n_sweeps, n_burn, n_runs,
    seed, betas, …). All inputs are validated before any sampling."""
    if isinstance(datasets, Dataset):
        datasets = [datasets]
    params = list(params)
    if not params or not datasets:
        raise ValueError("need at least one parameter and one dataset")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate parameter names in {names}")
    lo = np.array([p.lower for p in params], float)
    hi = np.array([p.upper for p in params], float)
    mu = np.array([p.mean if p.sd is not None else 0.0 for p in params], float)
    sd = np.array([p.sd if p.sd is not None else 0.0 for p in params], float)
    with np.errstate(invalid="ignore"):
        centre = np.where(sd > 0, np.clip(mu, lo, hi), 0.5 * (lo + hi))
    lls, args = [], []
    used = set()
    for ds in datasets:
        missing = [n for n in ds.params if n not in names]
        if missing:
            raise ValueError(f"dataset {ds.name!r} uses unknown parameters {missing}")
        index = np.array([names.index(n) for n in ds.params], dtype=np.int64)
        used.update(ds.params)
        _check_model(ds, centre[index])
        lls.append(_dataset_loglike(ds.jitted, _LINEAR[ds.linear]))
        args.append(ds.args(index))
    unused = [n for n in names if n not in used]
    if unused:
        raise ValueError(f"parameters {unused} enter no dataset")
    result = exchange_mc(_joint(lls), _nest(args), lo, hi, mu, sd, **sampler)
    return Posterior(tuple(names), result)


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
