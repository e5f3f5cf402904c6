"""User-facing nonlinear fitting: input validation and Bayesian integration of two spectra."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from agent.core.nonlinear import Dataset, Param, fit, integrate
from agent.xps.cluster_models import CEO2, XAS3_PARAMS, XPS3_PARAMS, theta_of, xas3, xps3

X = np.linspace(0.0, 1.0, 20)
Y = 2.0 * X


@njit
def line(theta, x):
    return theta[0] * x


@njit
def wrong_shape(theta, x):
    return theta[0] * x[:-1]


@njit
def nan_model(theta, x):
    return np.full(x.size, np.nan)


def test_bad_data_raise():
    with pytest.raises(ValueError, match="non-finite"):
        Dataset(line, X, np.where(X > 0.5, np.nan, Y), 0.1, ["a"])
    with pytest.raises(ValueError, match="non-finite"):
        Dataset(line, X, Y, np.full(X.size, np.inf), ["a"])
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="uncertainties must be > 0"):
            Dataset(line, X, Y, np.where(X > 0.5, bad, 0.1), ["a"])
    with pytest.raises(ValueError, match="1-D"):
        Dataset(line, X, Y.reshape(4, 5), 0.1, ["a"])
    with pytest.raises(ValueError, match="scale_max"):
        Dataset(line, X, Y, 0.1, ["a"], linear="scale")


def test_bad_params_raise():
    with pytest.raises(ValueError, match="lower bound"):
        Param("a", 1.0, 1.0)
    with pytest.raises(ValueError, match="lower bound"):
        Param("a", 2.0, 1.0)
    with pytest.raises(ValueError, match="finite bounds"):
        Param("a", 0.0)
    with pytest.raises(ValueError, match="sd"):
        Param("a", mean=0.0, sd=0.0)
    with pytest.raises(ValueError, match="duplicate"):
        fit([Param("a", 0, 1), Param("a", 0, 1)], Dataset(line, X, Y, 0.1, ["a"]))
    with pytest.raises(ValueError, match="unknown parameters"):
        fit([Param("a", 0, 3)], Dataset(line, X, Y, 0.1, ["b"]))
    with pytest.raises(ValueError, match="enter no dataset"):
        fit([Param("a", 0, 3), Param("c", 0, 1)], Dataset(line, X, Y, 0.1, ["a"]))


def test_bad_models_raise():
    with pytest.raises(ValueError, match="shape"):
        fit([Param("a", 0, 3)], Dataset(wrong_shape, X, Y, 0.1, ["a"]))
    with pytest.raises(ValueError, match="non-finite"):
        fit([Param("a", 0, 3)], Dataset(nan_model, X, Y, 0.1, ["a"]))

    def not_numba(theta, x):
        return theta[0] * np.array(str(x).split(), dtype=float)

    with pytest.raises(ValueError, match="numba"):
        fit([Param("a", 0, 3)], Dataset(not_numba, X, Y, 0.1, ["a"]))


def test_plain_python_model_is_compiled():
    def quad(theta, x):
        return theta[0] * x * x

    post = fit([Param("a", 0, 5)], Dataset(quad, X, 3 * X**2, 0.05, ["a"]), n_sweeps=300, n_burn=100, n_runs=2)
    assert abs(post.mean["a"] - 3) < 0.05


def test_joint_posterior_narrower_than_each_spectrum():
    """CeO₂: 3d XPS (Poisson counts) + 3d→4f XAS (Gaussian noise) share Δ, V, U_ff, U_fc."""
    rng = np.random.default_rng(2)
    truth = {**CEO2, "gamma_xas": 0.4}
    e = np.linspace(-16, 8, 240)
    lam = xps3(theta_of(truth, XPS3_PARAMS), e)
    y = rng.poisson(100 * lam / lam.max() + 10).astype(float)
    ex = np.linspace(-5, 18, 120)
    mu = xas3(theta_of(truth, XAS3_PARAMS), ex)
    yx = mu / mu.max() + 0.1 + rng.normal(0, 0.01, ex.size)
    xps = Dataset(xps3, e, y, np.sqrt(y + 1), XPS3_PARAMS, name="xps", linear="scale+offset",
                  scale_max=3 * y.sum() * (e[1] - e[0]), offset_range=(0, y.max()))
    xas = Dataset(xas3, ex, yx, 0.01, XAS3_PARAMS, name="xas", linear="scale+offset", scale_max=100.0,
                  offset_range=(-1, 1))
    params = [Param("delta", -2, 16), Param("V", 0.2, 1.5), Param("U_ff", 6, 14), Param("U_fc", 8, 16),
              Param("gamma", 0.2, 1.5), Param("gamma_xas", 0.1, 1.5)]
    res = integrate(params, [xps, xas], n_sweeps=1000, n_burn=500, n_runs=2, seed=1)
    for single in ("xps", "xas"):
        for q in ("delta", "V", "U_ff", "U_fc"):
            assert res.narrowing[single][q] < 0.9, (single, q, res.narrowing)
    ci = res.joint.interval()
    assert all(ci[q][0] <= truth[q] <= ci[q][1] for q in res.joint.names), ci
    assert res.delta_f + 2 * res.delta_f_err < 0  # sharing the parameters is supported by the data
