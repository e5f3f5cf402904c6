"""XAS priors from the standards library: construction, bad libraries, leave-one-out quality."""

import numpy as np
import pytest

from agent.xas.prior import (
    REFERENCE_CUTOFF_EV,
    GaussianPrior,
    SpectraLibrary,
    default_grid,
    fit_cutoff,
    leave_one_out,
    library_prior,
    reference_measured_cov,
    reference_prior,
)


def test_library_has_the_61_standards(lib):
    assert len(lib) == 61 and lib.spectra.shape == (2537, 61)
    assert "Fe-foil" in lib.names and lib.energy[0] == pytest.approx(7070.05)
    assert default_grid().size == 1051


@pytest.mark.parametrize("energy, spectra, names, msg", [
    (np.arange(5.0), np.zeros((5, 0)), (), "empty"),
    (np.arange(4.0), np.zeros((5, 2)), ("a", "b"), "mismatch"),
    (np.arange(5.0), np.zeros((5, 2)), ("a",), "mismatch"),
    (np.arange(5.0)[::-1], np.zeros((5, 1)), ("a",), "increasing"),
    (np.arange(5.0), np.full((5, 1), np.nan), ("a",), "non-finite"),
])
def test_bad_libraries_raise_clear_errors(energy, spectra, names, msg):
    with pytest.raises(ValueError, match=msg):
        SpectraLibrary(energy, spectra, names)


def test_unknown_standard_lists_the_names(lib):
    with pytest.raises(KeyError, match="Fe-foil"):
        lib.without("unobtainium")


def test_prior_mismatch_and_grid_outside_library_raise(lib):
    with pytest.raises(ValueError, match="mismatch"):
        GaussianPrior(np.arange(3.0), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="outside the library"):
        reference_prior(lib, np.array([7000.0, 7100.0]))
    with pytest.raises(ValueError, match="cutoff"):
        reference_prior(lib, default_grid()[::10], cutoff_eV=0.0)


def test_reference_prior_is_the_library_mean_and_kernel(lib):
    g = default_grid()[::10]
    p = reference_prior(lib, g)
    y = lib.on(g)
    np.testing.assert_allclose(p.mean, y.mean(1))
    np.testing.assert_allclose(p.std, y.std(1))
    i, j = 30, 33
    expect = y.std(1)[i] * y.std(1)[j] * np.exp(-((g[i] - g[j]) ** 2) / REFERENCE_CUTOFF_EV**2)
    assert p.cov[i, j] == pytest.approx(expect)
    meas = reference_measured_cov(p)
    assert meas.shape == p.cov.shape and np.all(np.diag(meas) > np.diag(p.cov))


def test_shifted_prior_moves_the_edge(lib):
    p = library_prior(lib)
    s = p.shifted(1.0)
    inner = slice(20, -20)
    np.testing.assert_allclose(s.mean[inner], np.interp(p.energy - 1.0, p.energy, p.mean)[inner], atol=1e-12)
    assert np.linalg.eigvalsh(s.cov[::10, ::10]).min() > -1e-9


def test_fitted_cutoff_is_in_the_reference_neighbourhood(lib):
    c = fit_cutoff(lib, default_grid()[::10], cutoffs=np.arange(2.0, 8.01, 0.25))
    assert 3.0 <= c <= 6.0


def test_library_prior_beats_the_reference_leave_one_out(lib):
    """Held-out expected log-likelihood per point, all 61 standards, 1 eV grid."""
    g = default_grid()
    ref = leave_one_out(lib, lambda lb, gg: reference_prior(lb, gg), g, stride=10)
    new = leave_one_out(lib, lambda lb, gg: library_prior(lb, gg), g, stride=10)
    assert new.mean() > ref.mean() + 0.05
    assert np.median(new - ref) > 0 and new.min() > ref.min()
