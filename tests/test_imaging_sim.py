"""The simulated full-field XAS-imaging end station (issue 15): truth maps deterministic in global coordinates,
the noise model the classifier assumes, and the ophyd devices through a real RunEngine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sim_devices.imaging.detector import (
    DetectorModel,
    TileFields,
    _blur,
    _shifted,
    dark_pattern,
    dark_tile,
    flat_tile,
    image_tile,
    phase_spectra,
    psf_variance_factor,
    psf_weights,
    registration_shift,
    spectra_library,
    stack_tile,
)
from sim_devices.imaging.sample import (
    DEFAULT_PHASES,
    ImagingSample,
    default_sample,
    minority_partner,
    sample_tile,
    spectral_distance,
)

SAMPLE = ImagingSample(DEFAULT_PHASES, "Fe3_PO4_2_8H2O", seed=3)


@pytest.fixture(scope="module")
def big_map():
    return sample_tile(SAMPLE, 0, 0, 2000, 2000)


def test_default_sample_hides_the_nearest_standard_of_distinguishable_phases():
    lib = spectra_library()
    minority, partner = minority_partner(lib, DEFAULT_PHASES)
    s = default_sample(5)
    assert s.minority == minority and s.phases == DEFAULT_PHASES and s.seed == 5
    d = spectral_distance(lib, minority, partner)
    others = [n for n in lib.names if n not in DEFAULT_PHASES]
    assert d == pytest.approx(min(spectral_distance(lib, p, o) for p in DEFAULT_PHASES for o in others))
    pairs = [spectral_distance(lib, a, b) for i, a in enumerate(DEFAULT_PHASES) for b in DEFAULT_PHASES[i + 1:]]
    assert min(pairs) > 3 * d > 0


def test_overlapping_tiles_agree_on_the_overlap():
    a = sample_tile(SAMPLE, 1000, 2000, 300, 400)
    b = sample_tile(SAMPLE, 1150, 2210, 300, 400, margin=7)  # covers [1143, 1457) × [2203, 2617)
    ya, xa = slice(143, 300), slice(203, 400)
    yb, xb = slice(0, 157), slice(0, 197)
    for key in ("fractions", "thickness", "background", "label"):
        assert np.array_equal(a[key][..., ya, xa], b[key][..., yb, xb]), key
    far = sample_tile(SAMPLE, 19000, 19000, 50, 50)  # a far tile of a 20000-px image costs what a near one does
    assert far["fractions"].shape == (4, 50, 50)


def test_fractions_labels_and_fields(big_map):
    f, lab = big_map["fractions"], big_map["label"]
    assert f.dtype == np.float32 and lab.dtype == np.int8
    assert np.allclose(f.sum(0), 1, atol=1e-6) and f.min() >= 0
    assert np.array_equal(lab, np.argmax(f, 0))
    mixed = (f.max(0) < 0.9).mean()
    assert 0.005 < mixed < 0.2  # boundaries are mixtures; domains are not
    assert np.all(f[3][lab == 3] > 0.6) and np.all(f[3][lab != 3] < 0.35)
    assert all(0.15 < (lab == p).mean() < 0.55 for p in range(3))
    t, b = big_map["thickness"], big_map["background"]
    assert 0.4 <= t.min() and t.max() <= 1.5 and t.max() - t.min() > 0.2
    assert 0.24 <= b.min() and b.max() <= 0.36


def test_minority_fraction_and_grain_sizes(big_map):
    lab = big_map["label"]
    grains, n = ndimage.label(lab == 3, structure=np.ones((3, 3)))
    sizes = np.bincount(grains.ravel())[1:]
    edge = np.unique(np.concatenate([grains[0], grains[-1], grains[:, 0], grains[:, -1]]))
    inner = np.delete(sizes, edge[edge > 0] - 1)
    assert inner.min() >= 3 and inner.max() <= 10  # 8-connected: no grain touches another or splits
    assert len(np.unique(inner)) == 8
    # sizes uniform in 3..10: E n = 6.5, E n² = 46.5; the number of grains is at most Poisson-dispersed
    sd = math.sqrt(n * 46.5 / 6.5 ** 2) * 6.5 / lab.size
    assert abs((lab == 3).mean() - 0.005) < 4 * sd
    assert abs(n - 0.005 * lab.size / 6.5) < 4 * math.sqrt(n)


def test_no_minority_sample():
    s = ImagingSample(("Fe3O4", "FePO4"), None, seed=1)
    t = sample_tile(s, 0, 0, 100, 120)
    assert t["fractions"].shape == (2, 100, 120) and t["label"].max() <= 1


def test_psf_variance_factor_against_brute_force():
    for sigma in (0.6, 1.3):
        w = psf_weights(sigma)
        r = len(w) // 2
        delta = np.zeros((2 * r + 1 + 2 * r, 2 * r + 1 + 2 * r), np.float32)
        delta[2 * r, 2 * r] = 1
        kernel = _blur(delta, w)
        assert kernel.sum() == pytest.approx(1, abs=1e-6)
        assert psf_variance_factor(sigma) == pytest.approx(float(np.sum(kernel.astype(float) ** 2)), rel=1e-5)
        z = np.random.default_rng(0).standard_normal((1000 + 2 * r, 1000 + 2 * r), dtype=np.float32)
        assert _blur(z, w).var() == pytest.approx(psf_variance_factor(sigma), rel=0.02)
    assert psf_variance_factor(0) == 1.0


def test_the_registration_shift_translates_without_blurring():
    """A sample moved by a sub-pixel shift and moved back is the sample again (a band-limited field, as the
    sample's smoothed fractions are), a whole-pixel shift is exact, and the shift moves the content by its value."""
    rng = np.random.default_rng(4)
    a = ndimage.gaussian_filter(rng.standard_normal((80, 80)), 1.5).astype(np.float32)
    m = 8
    there = _shifted(a, 0.5, -0.37, m, m - 4)  # margin 4 left for the way back
    back = _shifted(there, -0.5, 0.37, 4, 0)
    core = a[m:-m, m:-m]
    assert np.sqrt(np.mean((back - core) ** 2)) < 0.02 * core.std()
    assert np.array_equal(_shifted(a, 1.0, -2.0, m, 0), a[m - 1:80 - m - 1, m + 2:80 - m + 2])
    bump = np.zeros((40, 40), np.float32)
    bump[20, 20] = 1
    bump = ndimage.gaussian_filter(bump, 1.2)
    moved = _shifted(bump, 0.3, -0.6, 8, 4)  # output pixel i is input pixel i + 4
    yy, xx = np.mgrid[0:32, 0:32] + 4
    assert (moved * yy).sum() / moved.sum() == pytest.approx(20.3, abs=0.02)
    assert (moved * xx).sum() / moved.sum() == pytest.approx(19.4, abs=0.02)


def test_images_reproducible_and_independent_by_index():
    d = DetectorModel()
    a = image_tile(SAMPLE, d, 7125.0, 40, 60, 64, 80, seed=2)
    assert a.dtype == np.float32 and a.shape == (64, 80)
    assert np.array_equal(a, image_tile(SAMPLE, d, 7125.0, 40, 60, 64, 80, seed=2))
    assert not np.array_equal(a, image_tile(SAMPLE, d, 7125.0, 40, 60, 64, 80, seed=3))
    assert not np.array_equal(a, image_tile(SAMPLE, d, 7125.0, 40, 60, 64, 80, exposure_index=1, seed=2))
    assert registration_shift(d, 0) == (0.0, 0.0) and registration_shift(d, 1) != (0.0, 0.0)
    # the fixed patterns agree across tilings
    assert np.array_equal(dark_pattern(d, 300, 250, 40, 40)[10:, 5:], dark_pattern(d, 310, 255, 30, 35))


def test_passes_sum_as_their_images_do():
    d = DetectorModel()
    energies = [7110.0, 7126.0, 7150.0]
    both = stack_tile(SAMPLE, d, energies, 0, 0, 48, 40, passes=2, seed=1)
    one = [stack_tile(SAMPLE, d, energies, 0, 0, 48, 40, passes=1, seed=1, first_pass=p) for p in (0, 1)]
    assert both["images"].shape == (3, 48, 40) and both["n_flat"] == 2 * d.n_flat and both["passes"] == 2
    assert np.allclose(both["images"], one[0]["images"] + one[1]["images"], rtol=2e-6)
    assert np.allclose(both["flats"], 0.5 * (one[0]["flats"] + one[1]["flats"]), rtol=2e-6)
    assert np.array_equal(both["dark"], one[0]["dark"])


@pytest.mark.parametrize("n0", [1e4, 1e3])
def test_flat_noise_follows_the_classifiers_model(n0):
    """var(ADU − D) = g_eff·(ADU − D) + σ_r², from two single flats (their difference cancels the patterns)."""
    d = DetectorModel(n0=n0)
    f1, f2 = (flat_tile(d, 0, 0, 500, 500, exposure_index=i, n_avg=1) for i in (0, 1))
    signal = 0.5 * (f1 + f2) - dark_pattern(d, 0, 0, 500, 500)
    var = 0.5 * np.var((f1 - f2).astype(float))
    assert var == pytest.approx(d.g_eff * signal.mean() + d.read_noise ** 2, rel=0.02)
    assert signal.mean() == pytest.approx(d.gain * n0, rel=0.05)  # P averages ~1
    dk = dark_tile(d, 0, 0, 500, 500, n_avg=4) - dark_pattern(d, 0, 0, 500, 500)
    assert dk.var() == pytest.approx(d.read_noise ** 2 / 4, rel=0.02)


def test_absorbance_of_a_uniform_region_is_the_truth():
    """One phase, energy 0 (no registration shift): −ln((I − D̄)/(F̄ − D̄)) is A within its standard error, and its
    variance is var(I)/I² + var(F̄)/F̄² with var(I) = g_eff·I + σ_r²."""
    s = ImagingSample(("Fe3O4",), None, seed=4)
    d = DetectorModel()
    e = 7135.0
    h = w = 200
    st = stack_tile(s, d, [e], 500, 500, h, w, seed=9)
    img, flat, dark = st["images"][0] - st["dark"], st["flats"][0] - st["dark"], st["dark"]
    a = -np.log(img / flat).astype(float)
    truth = sample_tile(s, 500, 500, h, w)
    mu = float(phase_spectra(s.names, [e])[0, 0])
    true_a = truth["background"] * (e / 7112.0) ** -2.8 + truth["thickness"] * mu
    resid = a - true_a
    assert resid.std() > 0.005
    se = resid.std() / math.sqrt(resid.size * psf_variance_factor(d.psf_sigma_px))  # PSF-correlated noise
    assert abs(resid.mean()) < 4 * se
    read = d.read_noise ** 2
    var_i = d.g_eff * img + read + read / d.n_dark
    var_f = (d.g_eff * flat + read) / d.n_flat + read / d.n_dark
    assert resid.var() == pytest.approx(float(np.mean(var_i / img ** 2 + var_f / flat ** 2)), rel=0.05)
    assert np.all(dark > 50)


def test_tile_fields_serve_many_energies():
    f = TileFields(SAMPLE, DetectorModel(), 0, 0, 32, 32)
    with pytest.raises(ValueError):
        f.absorbance(7000.0, 0)  # outside the library's tabulated range


@pytest.fixture()
def station():
    from sim_devices.core.clock import SimClock
    from sim_devices.core.ring import RingCurrent
    from sim_devices.imaging.endstation import make_imaging_endstation

    clock = SimClock(time_scale=math.inf)
    ring = RingCurrent(name="ring", clock=clock)
    return make_imaging_endstation(SAMPLE, clock, ring=ring, shape=(48, 64), seed=1)


def test_devices_through_a_run_engine_count(station):
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps
    from bluesky import plans as bp

    RE = RunEngine({})
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    det = station.detector

    def plan():
        yield from bps.mv(station.mono, 7126.0)
        yield from bp.count([det], num=2)
        yield from bps.mv(station.stage, "out")
        yield from bp.count([det], num=1)
        yield from bps.mv(station.shutter, "closed")
        yield from bp.count([det], num=1)

    t0 = station.clock.now
    RE(plan())
    desc = [d for n, d in docs if n == "descriptor"][0]
    key = desc["data_keys"]["imaging_det_image"]
    assert key["shape"] == [48, 64] and key["dtype"] == "array" and key["dtype_numpy"] == "<f4"
    assert desc["hints"]["imaging_det"]["fields"] == ["imaging_det_mean"]
    assert "imaging_det_exposure_s" in desc["configuration"]["imaging_det"]["data"]
    events = [d["data"] for n, d in docs if n == "event"]
    assert [e["imaging_det_frame_type"] for e in events] == ["image", "image", "flat", "dark"]
    assert [e["imaging_det_repeat"] for e in events] == [0, 1, 0, 0]
    assert all(e["imaging_det_energy"] == 7126.0 for e in events)
    image, flat, dark = events[0]["imaging_det_image"], events[2]["imaging_det_image"], events[3]["imaging_det_image"]
    assert dark.mean() < flat.mean() * 0.02 and dark.mean() < image.mean() < flat.mean()
    assert station.clock.now - t0 >= 4 * det.frame_duration()
    # a frame is what TileFields makes of the same indices at the ring's current
    n0 = events[0]["imaging_det_incident"]
    assert 0.99e4 < n0 <= 1e4
    assert np.array_equal(image, det.fields.image(7126.0, 0, range(0, 1), n0=n0))


def test_detector_faults(station):
    from bluesky import RunEngine
    from bluesky import plans as bp
    from bluesky.utils import FailedStatus

    det = station.detector
    with pytest.raises(ValueError):
        det.fail_next("explode")
    det.fail_next("corrupt")
    st = det.trigger()
    st.wait(5)
    assert np.any(np.all(det.image.get() == 0, axis=1))
    det.fail_next("timeout")
    RE = RunEngine({})
    with pytest.raises(FailedStatus):
        RE(bp.count([det]))
    det.exposure_s.put(0.0)
    with pytest.raises(ValueError):
        det.trigger().wait(5)
