"""User-facing nonlinear fitting: input validation and Bayesian integration of two spectra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from numba import njit
from numba.core import event
from scipy.special import logsumexp

from agent.core.exchange_mc import COMPILED, relabel
from agent.core.nonlinear import Dataset, Param, _disk_cacheable, fit, integrate, jit_model
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


def cubic(theta, x):
    """A plain Python model in a module: compiled by the registry with numba's disk cache."""
    return theta[0] * x**3


def _numba_compiles(run) -> int:
    """Number of numba compilations (any function) while ``run()`` executes."""
    with event.install_recorder("numba:compile") as rec:
        run()
    return sum(1 for _, ev in rec.buffer if ev.is_start)


def test_second_fit_of_a_model_does_not_compile_again():
    """Through the registry: the first fit of ``cubic`` builds its dispatcher, model, boundscheck twin and
    log-likelihood; a second fit with a new Dataset (other data, other seed) builds nothing and reuses each,
    and numba compiles nothing during it."""
    kw = dict(n_sweeps=100, n_burn=50, n_runs=1)
    fit([Param("a", 0, 5)], Dataset(cubic, X, 2 * X**3, 0.05, ["a"]), **kw)
    before, hits = COMPILED.compiles.copy(), COMPILED.hits.copy()
    post = {}

    def second():
        post["p"] = fit([Param("a", 0, 5)], Dataset(cubic, X, 3 * X**3, 0.05, ["a"]), seed=4, **kw)

    assert _numba_compiles(second) == 0
    assert COMPILED.compiles == before
    for kind in ("model_dispatcher", "model", "model_boundscheck", "loglike_wrapper", "loglike", "chain"):
        assert COMPILED.hits[kind] > hits[kind], kind
    assert post["p"].result.compile_s < 0.5 and abs(post["p"].mean["a"] - 3) < 0.1


def test_module_models_use_the_disk_cache_interactive_ones_memory():
    offset = 0.5

    def closure_model(theta, x):
        return theta[0] * x + offset

    assert _disk_cacheable(cubic) and not _disk_cacheable(closure_model)
    assert jit_model(cubic) is jit_model(cubic)
    assert jit_model(closure_model)._cache.__class__.__name__ == "NullCache"


def test_module_model_loaded_from_disk_cache_in_a_new_process(tmp_path):
    """A plain model in a module file, fitted in two fresh processes: the second loads the model from
    numba's disk cache (cache hit, no miss). The cache is numba's default, beside the source: the model's in
    this test's directory, the sampler's where the other tests keep theirs (so it is not compiled again here)."""
    (tmp_path / "usermodel.py").write_text("def slope(theta, x):\n    return theta[0] * x\n")
    script = textwrap.dedent("""
        import numpy as np
        import usermodel
        from agent.core.nonlinear import Dataset, Param, fit, jit_model
        x = np.linspace(0, 1, 20)
        fit([Param("a", 0, 5)], Dataset(usermodel.slope, x, 2 * x, 0.05, ["a"]), n_sweeps=20, n_burn=20, n_runs=1)
        s = jit_model(usermodel.slope).stats
        print(sum(s.cache_hits.values()), sum(s.cache_misses.values()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", ""), "."])
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout.split() == ["0", "1"] and runs[1].stdout.split() == ["1", "0"]


def reads_theta_5(theta, x):
    return theta[0] * x + theta[5]


def makes_a_class(theta, x):
    class Local:
        pass

    return theta[0] * x


def adds_a_string(theta, x):
    return theta[0] * x + "one"


def test_model_reading_past_its_parameters_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model 'reads_theta_5' reads out of bounds .* 2 parameters \('a', 'b'\)"):
        fit([Param("a", 0, 3), Param("b", 0, 1)], Dataset(reads_theta_5, X, Y, 0.1, ["a", "b"]))


@pytest.mark.parametrize("model, error", [(makes_a_class, "UnsupportedBytecodeError"), (adds_a_string, "TypingError")])
def test_model_numba_cannot_compile_is_a_one_line_error(model, error):
    with pytest.raises(ValueError, match=f"model '{model.__name__}' cannot be compiled by numba: {error}") as info:
        fit([Param("a", 0, 3)], Dataset(model, X, Y, 0.1, ["a"]))
    assert "\n" not in str(info.value) and info.value.__cause__ is not None


def test_sigma_of_the_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match=r"sigma has shape \(19,\) but y has \(20,\)"):
        Dataset(line, X, Y, np.full(19, 0.1), ["a"])


@njit
def line_undefined_above_2(theta, x):
    if theta[0] > 2.0:
        return np.full(x.size, np.nan)
    return theta[0] * x


def test_model_nan_on_part_of_the_prior():
    """NaN for a > 2 on a prior U(0, 3): a warning gives the fraction (1/3, from 256 draws), the region is
    outside the support, and F is −log of the evidence under the prior renormalised to [0, 2], which a
    brute-force grid integral gives (the L = 0 convention would differ by log 1.5 = 0.41 nats)."""
    y = 1.2 * X + np.random.default_rng(3).normal(0, 0.1, X.size)
    with pytest.warns(RuntimeWarning, match="not finite on") as rec:
        post = fit([Param("a", 0, 3)], Dataset(line_undefined_above_2, X, y, 0.1, ["a"]), n_sweeps=1500,
                   n_burn=300, n_runs=2, seed=2)
    frac = float(str(rec[0].message).split("not finite on ")[1].split(" %")[0]) / 100
    assert abs(frac - 1 / 3) < 0.1 and post.result.extra["nonfinite_prior_fraction"] == pytest.approx(frac, abs=1e-3)
    grid = np.linspace(0.0, 2.0, 20001)
    logl = (-0.5 * np.sum((y[None, :] - grid[:, None] * X[None, :]) ** 2, axis=1) / 0.01
            - X.size * np.log(0.1 * np.sqrt(2 * np.pi)))
    log_z = logsumexp(logl) + np.log(grid[1] - grid[0]) - np.log(2.0)
    r = post.result
    assert abs(r.free_energy + log_z) < max(3 * r.free_energy_err, 0.1), (r.free_energy, -log_z)
    assert np.all(post.samples[:, 0] <= 2.0)


def two_equal_peaks(theta, x):
    return np.exp(-0.5 * ((x - theta[0]) / 0.3) ** 2) + np.exp(-0.5 * ((x - theta[1]) / 0.3) ** 2)


def test_exchangeable_peaks_are_relabelled():
    """Two identical peaks at −1 and 1.2: the posterior has two mirror modes (labels swapped) that the
    replicas both visit; raw means then average the modes, relabelled (sorted) draws recover each peak."""
    xs = np.linspace(-3, 3, 60)
    y = two_equal_peaks(np.array([-1.0, 1.2]), xs) + np.random.default_rng(4).normal(0, 0.05, xs.size)
    params = [Param("p1", -3, 3), Param("p2", -3, 3)]
    kw = dict(n_sweeps=1500, n_burn=300, n_runs=2, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = fit(params, Dataset(two_equal_peaks, xs, y, 0.05, ["p1", "p2"]), **kw)
        tidy = fit(params, Dataset(two_equal_peaks, xs, y, 0.05, ["p1", "p2"]), exchangeable=[("p1", "p2")], **kw)
    swapped = np.mean(raw.samples[:, 0] > raw.samples[:, 1])
    assert 0.1 < swapped < 0.9, swapped
    assert abs(raw.mean["p1"] - (-1.0)) > 0.3
    assert np.array_equal(tidy.samples, relabel(raw.samples, [[(0,), (1,)]]))
    assert np.all(tidy.samples[:, 0] <= tidy.samples[:, 1])
    assert abs(tidy.mean["p1"] + 1.0) < 0.05 and abs(tidy.mean["p2"] - 1.2) < 0.05
    assert tidy.result.rhat_split.max() < raw.result.rhat_split.max() or raw.result.rhat_split.max() < 1.05
