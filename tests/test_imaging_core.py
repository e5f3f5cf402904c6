"""The XAS-imaging numerics (agent/imaging): noise model, profile likelihood, cells, classes, Potts filter and
the whole two-pass classification, against brute force and a toy stack whose truth is known."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import least_squares

from agent.imaging.classify import class_loglik
from agent.imaging.noise import NoiseModel, absorbance, absorbance_variance, estimate_gain
from agent.imaging.orchestration import classify_stack, executor_for
from agent.imaging.partition import CellTable, SpectralSpace, cell_centres, cell_keys, find_classes
from agent.imaging.psf import WIENER_LAMBDA, deconvolved_labels, fraction_maps, psf_kernel, wiener_kernel
from agent.imaging.registration import RegisteredSource, spline_variance_factor
from agent.imaging.scoring import scores
from agent.imaging.spatial import potts_meanfield
from agent.imaging.tiles import ArraySource, tile_labels, windows
from agent.imaging.unmixing import common_endmember, fan_endpoint
from agent.xas.prior import SpectraLibrary

ENERGIES = np.array([7100.0, 7112.0, 7120.0, 7125.0, 7128.0, 7131.0, 7135.0, 7140.0, 7150.0, 7185.0])
GAIN, READ_VAR = 1.5, 4.0
PHASES = ("Fe3O4", "LiFePO4", "a-Fe2O3")
MINORITY = "Fe_OH_3"  # the library's nearest neighbour of a-Fe2O3 over 7100-7180 eV


@pytest.fixture(scope="module")
def library():
    return SpectraLibrary.from_csv()


def toy_stack(library, size=400, n0=1e4, seed=0, grain=3, fraction=0.005):
    """Blocks of the three majority phases, square minority grains of ``grain``² px, a smooth edge jump
    0.4–1.5, background 0.3; Gaussian counting noise, gain ``GAIN``, read noise, 10 averaged flats."""
    rng = np.random.default_rng(seed)
    spec = library.on(ENERGIES).T
    names = list(library.names)
    yy, xx = np.mgrid[0:size, 0:size]
    lab = ((yy // 70 + 2 * (xx // 90)) % 3).astype(int)
    cells = rng.random((size // grain, size // grain)) < fraction
    mm = np.kron(cells, np.ones((grain, grain), bool))
    lab[: mm.shape[0], : mm.shape[1]][mm] = 3
    idx = np.array([names.index(p) for p in (*PHASES, MINORITY)])
    t = 0.4 + 1.1 * (0.5 + 0.5 * np.sin(xx / 60.0) * np.cos(yy / 50.0))
    a = 0.3 + t[None] * spec[idx][lab].transpose(2, 0, 1)
    n = n0 * np.exp(-a)
    img = GAIN * (n + np.sqrt(n) * rng.standard_normal(n.shape)) + 100 + 2 * rng.standard_normal(n.shape)
    flat = GAIN * n0 + 100 + np.sqrt((GAIN**2 * n0 + READ_VAR) / 10) * rng.standard_normal(n.shape)
    known = [i for i in range(len(names)) if names[i] != MINORITY]
    src = ArraySource(img.astype(np.float32), flat.astype(np.float32), np.full((size, size), 100.0, np.float32),
                      ENERGIES, 1)
    return src, lab, spec[known], [names[i] for i in known]


def test_profile_likelihood_is_the_least_squares_minimum_over_background_and_edge_jump():
    rng = np.random.default_rng(1)
    k, n = 8, 5
    m = np.sort(rng.random((3, k)), axis=1)
    a = 0.3 + 1.2 * m[1][:, None] + 0.02 * rng.standard_normal((k, n))
    var = (0.01 + 0.01 * rng.random((k, n))) ** 2
    _, x2, t = class_loglik(a, var, m)
    for c in range(3):
        for j in range(n):
            fit = least_squares(lambda p, c=c, j=j: (a[:, j] - p[0] - p[1] * m[c]) / np.sqrt(var[:, j]), [0, 1])
            assert x2[c, j] == pytest.approx(2 * fit.cost, rel=1e-8)
            assert t[c, j] == pytest.approx(fit.x[1], rel=1e-6)


def test_gain_and_read_noise_from_two_flats_and_two_darks():
    rng = np.random.default_rng(2)
    shape = (400, 400)
    pattern = 8000 * (0.8 + 0.4 * rng.random(shape))  # fixed pattern: cancels in the differences

    def frame(signal):
        return GAIN * (signal + np.sqrt(signal) * rng.standard_normal(shape)) + 100 + 2 * rng.standard_normal(shape)

    g, r = estimate_gain(frame(pattern), frame(pattern), frame(np.zeros(shape)), frame(np.zeros(shape)))
    assert g == pytest.approx(GAIN**2 / GAIN, rel=0.02)  # ADU variance per ADU of signal = the gain
    assert r == pytest.approx(READ_VAR, rel=0.03)


def test_absorbance_variance_matches_the_scatter_of_repeated_images():
    rng = np.random.default_rng(3)
    n0, a_true, shape = 1e3, 0.9, (4, 50_000)
    n = n0 * np.exp(-a_true)
    img = GAIN * (n + np.sqrt(n) * rng.standard_normal(shape)) + 100 + 2 * rng.standard_normal(shape)
    flat = GAIN * n0 + 100 + np.sqrt((GAIN**2 * n0 + READ_VAR) / 10) * rng.standard_normal(shape)
    dark = np.full(shape[1:], 100.0)
    model = NoiseModel(GAIN, READ_VAR, 10, 10**9)
    a = absorbance(img, flat, dark)
    v = absorbance_variance(img, flat, dark, model)
    tol = float(3 * np.sqrt(np.mean(v) / a.size) + np.mean(v))  # the standard error and the log's bias
    assert float(np.mean(a)) == pytest.approx(a_true, abs=tol)
    assert float(np.var(a)) == pytest.approx(float(np.mean(v)), rel=0.03)


def test_cells_round_trip_and_chunked_counting_equals_counting_at_once():
    rng = np.random.default_rng(4)
    y = rng.normal(0, 3, (4, 20_000))
    z = rng.normal(0, 1, (6, 20_000))
    keys = cell_keys(y, 1.0)
    assert np.all(np.abs(cell_centres(keys, 4, 1.0) - y) <= 0.5 + 1e-12)
    whole = CellTable.of(keys, z)
    parts = CellTable.merge([CellTable.of(keys[i:i + 3000], z[:, i:i + 3000]) for i in range(0, 20_000, 3000)])
    assert np.array_equal(whole.keys, parts.keys) and np.array_equal(whole.counts, parts.counts)
    assert np.allclose(whole.zsum, parts.zsum)
    assert whole.pixels == 20_000


def _blobs(centres, n, rng, r=4):
    """A CellTable of unit-noise blobs about ``centres`` (r-dim) with ``n`` points each, in a space where
    z = y (identity whitening over r energies)."""
    pts = np.concatenate([c[:, None] + rng.standard_normal((r, m)) for c, m in zip(centres, n, strict=True)], axis=1)
    space = SpectralSpace(np.arange(r + 2.0), np.linspace(0, 1, r + 2), np.ones(r + 2), np.eye(r, r + 2))
    z = np.vstack([pts, np.zeros((2, pts.shape[1]))])
    return CellTable.of(cell_keys(pts, 1.0), z), space


def test_classes_are_the_separated_modes_and_noise_buried_or_mixture_modes_are_not():
    rng = np.random.default_rng(5)
    far = [np.zeros(4), np.array([10.0, 0, 0, 0]), np.array([0, 10.0, 0, 0])]
    table, space = _blobs(far, [200_000, 150_000, 2_000], rng)
    got = find_classes(table, space)
    assert len(got.counts) == 3
    for c in far:
        assert np.min(np.linalg.norm(got.y - c, axis=1)) < 0.2
    near = [np.zeros(4), np.array([1.5, 0, 0, 0])]  # closer than one pixel's noise can tell: one class
    table, space = _blobs(near, [100_000, 100_000], rng)
    assert len(find_classes(table, space).counts) == 1
    mix = far[:2] + [np.array([5.0, 0, 0, 0])]  # half-way between two classes: their mixture
    table, space = _blobs(mix, [200_000, 150_000, 20_000], rng)
    got = find_classes(table, space)
    assert len(got.counts) == 2
    assert any(r["why"].startswith("a mixture") for r in got.rejected)


def test_potts_filter_corrects_an_isolated_ambiguous_pixel_but_keeps_a_decided_small_grain():
    logp = np.zeros((2, 20, 20))
    logp[0] = 3.0  # class 0 everywhere by 3 nats
    logp[:, 10, 10] = [0.0, 1.0]  # an ambiguous pixel leaning to class 1
    logp[:, 3, 3:6] = [[0.0] * 3, [30.0] * 3]  # a 3-pixel grain decided for class 1 by 27 nats
    q = potts_meanfield(logp, beta=1.0, iterations=2)
    assert q[0, 10, 10] > 0.9
    assert np.all(q[1, 3, 3:6] > 0.99)


@pytest.fixture(scope="module")
def toy(library):
    return toy_stack(library)


def test_the_partition_finds_the_majority_phases_and_the_residual_search_the_hidden_minority(toy):
    src, lab, spec, names = toy
    res = classify_stack(src, NoiseModel(GAIN, READ_VAR, 10, 10**9), library=spec, library_names=names,
                         truth=lambda y0, x0, h, w: lab[y0:y0 + h, x0:x0 + w], n_truth=4, tile=128,
                         keep_labels=True)
    s = scores(res.confusion, 3)
    assert set(PHASES) <= set(res.names)
    assert s["majority_accuracy"] > 0.995
    assert s["minority_found"] and s["minority_recall"] > 0.8 and s["minority_precision"] > 0.9, s
    minority_class = s["class_to_phase"].index(3)
    assert res.names[minority_class] not in PHASES  # not named after a majority phase
    assert res.decided_fraction > 0.98
    assert res.unexplained_fraction < 10 * 1e-4
    assert np.array_equal(np.unique(res.labels), np.arange(res.n_classes))


def test_thread_pool_and_dask_cluster_give_the_same_classification(toy):
    src, lab, spec, names = toy
    noise = NoiseModel(GAIN, READ_VAR, 10, 10**9)
    sub = ArraySource(src.images[:, :200, :200], src.flats[:, :200, :200], src.dark[:200, :200], ENERGIES, 1)
    out = []
    for scheduler in ("sync", "local"):
        with executor_for(scheduler, workers=2) as ex:
            out.append(classify_stack(sub, noise, ex, library=spec, library_names=names, tile=64,
                                      keep_labels=True))
    assert out[0].names == out[1].names
    assert np.array_equal(out[0].labels, out[1].labels)
    assert out[0].cells == out[1].cells


def test_the_pure_spectrum_is_where_the_fans_from_the_hosts_cross_though_no_pixel_is_pure():
    """Pixels of a phase seen only in mixtures (fractions 0.3–0.85) with three hosts, unit noise in 4 whitened
    dimensions: the fans' crossing is the pure spectrum within 1 σ, while the pixels' mean is far from it; along
    one fan alone, the fitted far end of the fractions (uniform on [0.2, 1]) is its length within 5 %."""
    rng = np.random.default_rng(3)
    hosts = np.array([[0.0, 0, 0, 0], [60, 0, 0, 0], [0, 45, 0, 0]])
    e = np.array([15.0, 10, 12, 0])
    own = rng.integers(0, 3, 3000)
    f = rng.uniform(0.3, 0.85, 3000)
    y = (hosts[own] + f[:, None] * (e - hosts[own]) + rng.standard_normal((3000, 4))).T
    start = y.mean(axis=1)
    assert np.linalg.norm(start - e) > 5
    found, per_fan = common_endmember(y, np.ones(3000), hosts, start)
    assert np.linalg.norm(found - e) < 1.0, found
    assert per_fan == pytest.approx(np.bincount(own, minlength=3), abs=60)
    p = rng.uniform(0.2, 1.0, 4000) * 20.0 + rng.standard_normal(4000)
    assert fan_endpoint(p, np.ones(4000)) == pytest.approx(20.0, rel=0.05)


def test_spline_registration_variance_factor_against_the_scatter_of_shifted_noise():
    """White noise shifted by the registration's cubic spline loses the variance ``spline_variance_factor`` says."""
    rng = np.random.default_rng(5)
    shifts = np.array([[0.0, 0.0], [0.5, 0.5], [0.25, -0.7], [1.0, 2.0]])
    k = len(shifts)
    noise = rng.standard_normal((k, 300, 300)).astype(np.float32)
    src = ArraySource(noise + 1000, np.ones((k, 300, 300), np.float32), np.zeros((300, 300), np.float32),
                      np.arange(k, dtype=float), 1)
    images, _, _ = RegisteredSource(src, shifts).read(20, 20, 250, 250)
    measured = images.reshape(k, -1).var(axis=1)
    assert measured == pytest.approx(spline_variance_factor(shifts), rel=0.03)
    assert spline_variance_factor(shifts)[[0, 3]] == pytest.approx(1.0)


def _blurred_grains(library, size=120, sigma=0.6, n0=1e5, seed=7):
    """Phase 1 with grains of phase 2 every 12 px (2×2 squares, 5-px crosses, 1×3 bars, in turn) whose edges
    are mixtures (the mask smoothed by a Gaussian of 0.5 px; the truth: phase 2 where its fraction > 0.5), then
    blurred by the Gaussian PSF of σ ``sigma`` px (``psf_kernel``): A = 0.3 + t·Σ f·m, t = 1, with the
    Gaussian absorbance noise of a pixel at ``n0`` photons."""
    spec = library.only(["LiFePO4", "Fe3O4"]).on(ENERGIES).T
    shapes = [np.ones((2, 2)), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]), np.ones((1, 3))]
    mask = np.zeros((size, size))
    for i, y in enumerate(range(4, size - 6, 12)):
        for j, x in enumerate(range(4, size - 6, 12)):
            g = shapes[(i + j) % 3]
            mask[y:y + g.shape[0], x:x + g.shape[1]] = g
    f1 = ndimage.gaussian_filter(mask, 0.5)
    truth = (f1 > 0.5).astype(int)
    f = np.stack([ndimage.correlate(x, psf_kernel(sigma), mode="nearest") for x in (1 - f1, f1)])
    a = 0.3 + np.einsum("ck,chw->khw", spec, f)
    var = np.exp(a) / n0
    a = a + np.sqrt(var) * np.random.default_rng(seed).standard_normal(a.shape)
    return a, var, spec, truth


def test_psf_deconvolved_labels_recover_the_grain_pixels_the_per_pixel_labels_lose(library):
    """Small grains with mixed edges blurred by a σ = 0.6 px PSF: per-pixel labels lose a good part of the
    grain pixels; the boundary relabelling by deconvolved class amounts recovers ≥ 0.15 more of them and
    ≥ 90 % in all, with precision ≥ 0.9, and keeps the labels away from the boundaries. λ = 0.1: two phases far
    apart (LiFePO4, Fe3O4) at 10⁵ photons, a higher signal-to-noise than the default λ assumes; a λ of 1
    smooths beyond the PSF and loses grain pixels the per-pixel labels had."""
    a, var, spec, truth = _blurred_grains(library)
    k = len(ENERGIES)
    logp, _, _ = class_loglik(a.reshape(k, -1), var.reshape(k, -1), spec)
    base = logp.argmax(0).reshape(truth.shape)
    out = deconvolved_labels(base, a, var, spec, 0.6, lam=0.1)
    grain = truth == 1
    recall_base, recall = base[grain].mean(), out[grain].mean()
    assert recall >= 0.9 and recall >= recall_base + 0.15, (recall_base, recall)
    assert grain[out == 1].mean() >= 0.9, grain[out == 1].mean()
    far = ~ndimage.binary_dilation(base == 1, iterations=3)
    assert np.array_equal(out[far], base[far])
    assert np.array_equal(deconvolved_labels(base, a, var, spec, 0.0), base)
    assert deconvolved_labels(base, a, var, spec, 0.6, lam=1.0)[grain].mean() < recall_base


def test_psf_labelling_of_tiles_with_their_halo_is_the_whole_image_labelling(toy):
    """The labelling pass with the PSF step on 64-px tiles (each reading its halo) equals the one on a single
    tile, pixel for pixel, and differs from the per-pixel labels (the step does something)."""
    src, lab, spec, names = toy
    noise = NoiseModel(GAIN, READ_VAR, 10, 10**9)
    sub = ArraySource(src.images[:, :200, :200], src.flats[:, :200, :200], src.dark[:200, :200], ENERGIES, 1)
    res = classify_stack(sub, noise, library=spec, library_names=names, tile=256)
    spectra = res.classes.z + res.space.reference
    log_prior = np.log(res.classes.counts / res.classes.counts.sum())

    def labels(tile, sigma):
        out = np.full((200, 200), -9)
        for w in windows((200, 200), tile):
            _, lab_w, _ = tile_labels(sub, noise, res.space, 1.0, spectra, log_prior, 1.0, 2, w, keep=True,
                                      psf_sigma_px=sigma, psf_lambda=0.1)
            out[w[0]:w[0] + w[2], w[1]:w[1] + w[3]] = lab_w
        return out

    tiled, whole = labels(64, 0.6), labels(200, 0.6)
    assert np.array_equal(tiled, whole)
    assert (tiled != labels(200, None)).sum() > 10


def test_wiener_kernel_inverts_the_psf_as_lambda_goes_to_zero_and_fraction_maps_commute_with_the_blur(library):
    """K_λ ⊛ PSF → δ as λ → 0 (its centre > 0.95 at λ = 10⁻³); at the default λ it is barely sharper than the
    PSF itself (centre 0.44): the default mostly denoises. With one variance for all pixels the class amounts of a
    blurred stack are the blurred class amounts."""
    psf = psf_kernel(0.6)
    for lam, lo, hi in ((1e-3, 0.95, 1.0), (WIENER_LAMBDA, psf.max(), 0.6)):
        k = wiener_kernel(0.6, lam)
        delta = ndimage.convolve(np.pad(k, 4), psf, mode="constant")
        c = delta.shape[0] // 2
        assert lo < delta[c, c] < hi and delta.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(11)
    spec = library.only(["LiFePO4", "FePO4", "Fe3O4"]).on(ENERGIES).T
    u = rng.random((3, 40, 40))
    a = 0.3 + np.einsum("ck,chw->khw", spec, u)
    var = np.full(a.shape, 1e-4)
    n = a.shape[0]
    blurred = np.stack([ndimage.correlate(x, psf, mode="nearest") for x in a])
    got = fraction_maps(blurred.reshape(n, -1), var.reshape(n, -1), spec).reshape(u.shape)
    want = np.stack([ndimage.correlate(x, psf, mode="nearest") for x in u])
    assert got == pytest.approx(want, abs=1e-9)
