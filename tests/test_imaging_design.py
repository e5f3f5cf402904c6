"""Imaging energy design: profiled distance = brute-force least squares, greedy bound monotone, designed
energies beat random ones, indistinguishable phases grouped, dose and beamtime bookkeeping."""

import json

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.special import ndtr

from agent.imaging.design import (
    POST_EDGE_MIN_EV,
    PRE_EDGE_MAX_EV,
    default_candidates,
    design_energies,
    design_for_target,
    error_bound,
    full_xanes_energies,
    imaging_beamtime_s,
    passes_for_error,
    profiled_distance,
)
from agent.xas.prior import SpectraLibrary

SUBSET = ("Fe-foil", "FeO_2", "a-Fe2O3", "Fe3O4", "LiFePO4", "FeS2", "SUS304", "SUS316L", "FeCl3", "FeTiO3")


@pytest.fixture(scope="module")
def library():
    return SpectraLibrary.from_csv()


@pytest.fixture(scope="module")
def subset(library):
    return library.only(SUBSET)


def toy_pair(grid):
    """Two edges with a pre-edge peak 1.5 eV apart: separable only near 7113 eV."""
    edge = 0.5 * (1 + np.tanh((grid - 7122.0) / 2.0))
    peak = lambda e0: 0.15 * np.exp(-0.5 * ((grid - e0) / 0.8) ** 2)  # noqa: E731
    return np.stack([edge + peak(7112.5), edge + peak(7114.0)])


@pytest.mark.parametrize("power", [0.0, -2.8])
def test_profiled_distance_is_the_least_squares_residual_over_b_and_t(subset, power):
    rng = np.random.default_rng(1)
    grid = subset.energy
    spectra = np.vstack([subset.spectra.T, 1.0 - subset.spectra[:, 0]])  # the last: an edge upside down
    energies = np.sort(rng.choice(default_candidates(grid), 7, replace=False))
    n0, n_flat, t0, b0 = 3e3, 10, 0.8, 0.3
    mu = np.array([np.interp(energies, grid, s) for s in spectra])
    shape = (energies / 7112.0) ** power
    for a, b in [(0, 1), (1, 0), (6, 7), (3, 2), (0, 10), (10, 0)]:
        absorb = b0 * shape + t0 * mu[a]
        w = n0 / (np.exp(absorb) + 1 / n_flat)
        fit = least_squares(lambda p, w=w, absorb=absorb, b=b: np.sqrt(w) * (absorb - p[0] * shape - p[1] * mu[b]),
                            [0.0, 1.0], bounds=([-np.inf, 0.0], np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15)
        brute = np.sqrt(2 * fit.cost)
        d = profiled_distance(spectra, grid, energies, a, b, n0=n0, n_flat=n_flat, thickness=t0, background=b0,
                              background_power=power)
        assert d == pytest.approx(brute, rel=1e-6, abs=1e-9)
    assert profiled_distance(spectra, grid, energies, 2, 2, n0=n0) == pytest.approx(0.0, abs=1e-6)
    assert profiled_distance(spectra, grid, energies[:2], 0, 6, n0=n0) == pytest.approx(0.0, abs=1e-6)


def test_the_bound_decreases_with_every_energy_and_matches_its_recomputation(subset):
    design = design_energies(subset, n0=1e3, k_max=10, target_error=1e-9)
    bounds = [b for _, b in design.history]
    assert design.k == 10 and len(bounds) == 10
    assert np.all(np.diff(bounds) <= 1e-12 * bounds[0])
    assert bounds[2] < bounds[1]
    assert design.expected_error <= bounds[-1] * (1 + 1e-9)
    again = error_bound(subset, None, design.energies_eV, n0=1e3, groups=design.groups)
    assert again == pytest.approx(design.expected_error, rel=1e-6)
    assert np.all(np.diff(design.energies_eV) > 0)
    assert design.energies_eV[0] < PRE_EDGE_MAX_EV and design.energies_eV[-1] > POST_EDGE_MIN_EV


def test_designed_energies_separate_a_pair_better_than_random_ones():
    grid = np.round(np.arange(7080.0, 7195.0, 0.05), 6)
    spectra = toy_pair(grid)
    design = design_energies(spectra, grid, n0=1e3, k_max=5, target_error=1e-12, names=("a", "b"))
    assert design.k == 5 and design.groups == (("a",), ("b",))
    assert np.any(np.abs(design.energies_eV - 7113.2) < 2.0)
    both_ways = [profiled_distance(spectra, grid, design.energies_eV, a, b, n0=1e3) for a, b in [(0, 1), (1, 0)]]
    d_design = min(both_ways)
    rng = np.random.default_rng(0)
    cand = default_candidates(grid)
    d_random = [min(profiled_distance(spectra, grid, e, a, b, n0=1e3) for a, b in [(0, 1), (1, 0)])
                for e in (np.sort(rng.choice(cand, 5, replace=False)) for _ in range(100))]
    assert d_design > max(d_random)
    assert design.expected_error == pytest.approx(0.5 * ndtr(-np.array(both_ways) / 2).sum(), rel=1e-6)


def test_indistinguishable_duplicates_are_grouped_and_do_not_drive_the_design(subset):
    rng = np.random.default_rng(3)
    spectra = subset.spectra.T
    twin = spectra[2] + 1e-4 * rng.standard_normal(spectra.shape[1])
    names = (*SUBSET, "twin")
    both = np.vstack([spectra, twin])
    design = design_energies(both, subset.energy, n0=1e4, names=names, k_max=8, target_error=1e-12)
    assert ("a-Fe2O3", "twin") in design.groups
    assert sum(len(g) for g in design.groups) == len(names)
    alone = design_energies(subset, n0=1e4, k_max=8, target_error=1e-12)
    forced = error_bound(both, subset.energy, design.energies_eV, n0=1e4, names=names)
    assert forced > 0.1 > design.expected_error
    assert design.expected_error == pytest.approx(alone.expected_error, rel=0.5)
    assert all("twin" not in pair[:2] or "a-Fe2O3" not in pair[:2] for pair in design.worst_pairs)


def test_passes_for_error_is_the_smallest_sufficient_dose(subset):
    energies = design_energies(subset, n0=1e3, k_max=6, target_error=1e-9).energies_eV
    target = 1e-3
    p = passes_for_error(subset, None, energies, target_error=target, n0=1e3, flats_each_pass=True)
    assert p is not None and p > 1
    assert error_bound(subset, None, energies, n0=1e3 * p) <= target < error_bound(subset, None, energies,
                                                                                   n0=1e3 * (p - 1))
    once = passes_for_error(subset, None, energies, target_error=target, n0=1e3, flats_each_pass=False)
    assert once is None or once >= p


def test_design_for_target_needs_no_more_images_than_the_one_pass_design(subset):
    best = design_for_target(subset, n0=1e3, target_error=1e-3, k_max=10)
    assert best.expected_error <= 1e-3 and best.passes >= 1
    one_pass = design_energies(subset, n0=1e3, k_max=10, target_error=1e-3, groups=best.groups)
    assert best.k * best.passes <= one_pass.k * one_pass.passes_to_target
    assert error_bound(subset, None, best.energies_eV, n0=1e3 * best.passes,
                       groups=best.groups) == pytest.approx(best.expected_error, rel=1e-6)


def test_design_record_is_json_and_the_baselines_count_right(subset):
    design = design_energies(subset, n0=1e4, k_max=4)
    record = json.loads(json.dumps(design.to_dict()))
    assert record["k"] == 4 and len(record["history"]) == 4 and record["n0"] == 1e4
    full = full_xanes_energies()
    assert full.size == 101 and full[0] == 7090.0 and full[-1] == 7190.0
    assert imaging_beamtime_s(12, 3, 1.0, 0.5, 2.0, 10, n_dark=0) == pytest.approx(3 * 12 * 3.5 + 12 * 10 * 1.5)
    assert imaging_beamtime_s(12, 3, 1.0, 0.5, 2.0, 10, flats_each_pass=True, n_dark=4, sample_move_s=1.0) == \
        pytest.approx(3 * 12 * 3.5 + 3 * 12 * (15 + 2) + 4 * 1.5)
    with pytest.raises(ValueError):
        design_energies(subset, n0=1e4, k_max=2)
