"""Simulated SAXS end station: Pilatus geometry and masks against pyFAI, frames against their expected counts, what
the cell position puts in the beam, xraylib transmission, ring scaling, refusals, faults, beamtime on the clock,
damage between frames, and the sample's curve against sasmodels called directly."""

import json
import math

import numpy as np
import pytest
from ophyd.utils import LimitError, StatusTimeoutError

from agent.saxs.geometry import GEOMETRIES, DetectorGeometry, detector_geometry
from sim_devices.core.clock import SimClock
from sim_devices.saxs import SLOTS, make_saxs_endstation, saxs_sample
from sim_devices.saxs.samples import in_beam, presets

G300 = GEOMETRIES["pilatus-300k"]


@pytest.fixture()
def st():
    return make_saxs_endstation("silica-50nm", detector="pilatus-300k", seed=3, time_scale=float("inf"))


def expose(st, t=1.0):
    st.det.exposure_time.put(t)
    status = st.det.trigger()
    status.wait(5)
    return st.det.read()


@pytest.mark.parametrize("name", ["pilatus-300k", "pilatus-1m"])
def test_gap_mask_is_the_pilatus_layout_pyfai_knows(name):
    from pyFAI.detectors import Pilatus1M, Pilatus300k

    g = GEOMETRIES[name]
    reference = {"pilatus-300k": Pilatus300k, "pilatus-1m": Pilatus1M}[name]()
    assert tuple(reference.max_shape) == g.shape and reference.pixel1 == g.pixel_m
    assert np.array_equal(g.gap_mask(), reference.mask.astype(bool))
    rows_masked = np.flatnonzero(g.gap_mask().all(axis=1))
    assert rows_masked.size == 17 * (g.modules[0] - 1)
    assert rows_masked.min() == g.module_shape[0]  # the first gap starts right after the first module
    if g.modules[1] > 1:
        assert np.flatnonzero(g.gap_mask().all(axis=0)).tolist() == list(range(487, 494))
    assert not g.gap_mask()[int(g.beam_center_px[0]), int(g.beam_center_px[1])]  # beam centre on a module


def test_beam_stop_and_arm_mask():
    g = G300
    r0, c0 = (int(v) for v in g.beam_center_px)
    bs = g.beamstop_mask()
    assert bs[r0, c0] and bs[r0, c0 - int(g.beamstop_radius_px) + 1]
    assert not bs[r0, c0 - int(g.beamstop_radius_px) - 2] and not bs[r0 + int(g.beamstop_radius_px) + 2, c0]
    assert bs[r0, c0:].all() and bs[r0, -1]  # the arm reaches the edge along +col
    assert not bs[r0, : c0 - int(g.beamstop_radius_px) - 1].any()
    assert np.array_equal(g.static_mask(), g.gap_mask() | bs)
    plain = DetectorGeometry(**{**g.config(), "shape": g.shape, "module_shape": g.module_shape, "gap_px": g.gap_px,
                                "beam_center_px": g.beam_center_px, "beamstop_arm_width_px": 0.0})
    assert plain.beamstop_mask().sum() < bs.sum() and not plain.beamstop_mask()[r0, -1]


def test_q_map_and_limits_agree_with_pyfai_and_the_geometry():
    g = G300
    q = g.q_map()
    assert q.shape == g.shape and np.unravel_index(np.argmin(q), q.shape) == tuple(int(v) for v in g.beam_center_px)
    rr, cc = np.indices(g.shape)
    r_m = np.hypot(rr + 0.5 - g.beam_center_px[0], cc + 0.5 - g.beam_center_px[1]) * g.pixel_m
    q_geom = 4 * np.pi / g.wavelength_nm * np.sin(0.5 * np.arctan2(r_m, g.distance_m))
    np.testing.assert_allclose(q, q_geom, rtol=1e-6, atol=1e-9)
    lo, hi = g.q_limits()
    ok = ~g.static_mask()
    assert lo == pytest.approx(q_geom[ok].min()) and hi == pytest.approx(q_geom[ok].max())
    assert lo > q_geom[g.beamstop_mask()].min()
    res = g.integrator().integrate1d(np.ones(g.shape), 400, unit="q_nm^-1", mask=g.static_mask(),
                                     correctSolidAngle=False)
    filled = res.radial[res.count > 0] if hasattr(res, "count") and res.count is not None else res.radial
    width = res.radial[1] - res.radial[0]
    assert filled.min() >= lo - width and filled.max() <= hi + width
    user = np.zeros(g.shape, bool)
    user[:, : g.shape[1] // 2] = True
    assert g.q_limits(user)[1] < hi
    with pytest.raises(ValueError, match="every pixel is masked"):
        g.q_limits(np.ones(g.shape, bool))


def test_geometry_config_round_trips_through_json_and_rejects_bad_input():
    for g in GEOMETRIES.values():
        assert DetectorGeometry.from_config(json.loads(json.dumps(g.config()))) == g
    assert detector_geometry("PILATUS-1M") is GEOMETRIES["pilatus-1m"]
    with pytest.raises(ValueError, match="pilatus-1m"):
        detector_geometry("pilatus-1M2")
    with pytest.raises(ValueError, match="unknown detector geometry keys"):
        DetectorGeometry.from_config({**G300.config(), "tilt": 1.0})
    with pytest.raises(ValueError, match="whole number"):
        DetectorGeometry(**{**G300.config(), "shape": (620, 487), "module_shape": (195, 487), "gap_px": (17, 7),
                            "beam_center_px": (300.0, 300.0)})


def test_detector_describe_read_and_configuration(st):
    desc = st.det.describe()["saxs_det_image"]
    assert desc["dtype"] == "array" and desc["shape"] == list(G300.shape) and desc["dtype_numpy"] == "<i4"
    assert "saxs_det_total" in st.det.hints["fields"]
    conf = st.det.read_configuration()
    assert DetectorGeometry.from_config(json.loads(conf["saxs_det_geometry"]["value"])) == G300
    assert {"saxs_det_exposure_time", "saxs_det_attenuator"} <= set(conf)
    reading = expose(st)
    image = reading["saxs_det_image"]["value"]
    assert image.dtype == np.int32 and image.shape == G300.shape
    assert (image[G300.gap_mask()] == -1).all() and (image[~G300.gap_mask()] >= 0).all()
    assert (image[G300.beamstop_mask() & ~G300.gap_mask()] == 0).all()
    assert reading["saxs_det_total"]["value"] == image[image >= 0].sum()
    assert reading["saxs_det_elapsed_s"]["value"] == 1.0
    contents = json.loads(st.cell.read_configuration()["cell_x_contents"]["value"])
    assert contents["standard"]["thickness_mm"] > 0 and contents["sample"]["path_mm"] == 1.0


def test_frame_counts_are_poisson_about_the_expected_counts(st):
    expected = st.det.expected()
    reading = expose(st)
    image = reading["saxs_det_image"]["value"].astype(float)
    lam = expected.image
    total = lam.sum()
    assert abs(reading["saxs_det_total"]["value"] - total) < 5 * math.sqrt(total)
    assert abs(reading["saxs_det_i0"]["value"] - expected.i0) < 5 * math.sqrt(expected.i0)
    assert abs(reading["saxs_det_transmitted"]["value"] - expected.transmitted) < 5 * math.sqrt(expected.transmitted)
    ok = lam > 0
    z = (image[ok] - lam[ok]) / np.sqrt(lam[ok])
    assert abs(z.mean()) < 0.05 and 0.9 < z.var() < 1.1  # mean and variance of a Poisson pixel
    q = G300.q_map()
    for lo, hi in ((0.04, 0.1), (0.3, 0.5), (1.0, 1.6)):  # the pattern's shape, ring by ring
        ring = ok & (q >= lo) & (q < hi)
        assert abs(image[ring].sum() - lam[ring].sum()) < 5 * math.sqrt(lam[ring].sum())


def test_cell_position_decides_what_the_detector_sees(st):
    totals = {}
    for slot in ("sample", "buffer", "standard", "empty"):
        st.cell.set(slot).wait(5)
        assert st.cell.slot.get() == slot
        r = expose(st)
        totals[slot] = r["saxs_det_total"]["value"], r["saxs_det_transmitted"]["value"] / r["saxs_det_i0"]["value"]
    assert totals["sample"][0] > 100 * totals["buffer"][0] > 100 * totals["empty"][0]
    assert totals["empty"][1] > totals["standard"][1] > totals["buffer"][1] > totals["sample"][1]
    st.cell.set(SLOTS["sample"] + 0.45).wait(5)  # near the capillary's wall: less liquid in the beam
    off = expose(st)["saxs_det_total"]["value"]
    e = G300.energy_keV
    ratio = (in_beam(SLOTS["sample"] + 0.45).path_cm * st.sample.transmission(SLOTS["sample"] + 0.45, e)
             / (in_beam("sample").path_cm * st.sample.transmission("sample", e)))
    assert off < 0.6 * totals["sample"][0] and off == pytest.approx(ratio * totals["sample"][0], rel=0.02)
    st.cell.set(5.0).wait(5)  # between slots: the holder blocks the beam
    r = expose(st)
    assert st.cell.slot.get() == "" and r["saxs_det_total"]["value"] == 0 and r["saxs_det_transmitted"]["value"] == 0


def test_transmission_is_xraylibs():
    import xraylib

    s = saxs_sample("silica-50nm")
    e = G300.energy_keV
    cell = presets()["cell"]
    mu_wall = xraylib.CS_Total_CP("SiO2", e) * cell["wall_density_g_cm3"]
    mu_water = xraylib.CS_Total_CP("H2O", e) * presets()["buffer"]["water"]["density_g_cm3"]
    wall_cm = 2 * cell["capillary_wall_um"] * 1e-4
    assert s.transmission("buffer", e) == pytest.approx(math.exp(-mu_water * 0.1 - mu_wall * wall_cm), rel=1e-3)
    assert 0.6 < s.transmission("buffer", e) < 0.8  # 1 mm of water at 12.4 keV
    assert s.transmission("sample", e) < s.transmission("buffer", e)
    assert s.transmission("empty", e) == 1.0 and s.transmission(5.0, e) == 0.0
    higher = DetectorGeometry(**{**G300.config(), "shape": G300.shape, "module_shape": G300.module_shape,
                                 "gap_px": G300.gap_px, "beam_center_px": G300.beam_center_px, "wavelength_nm": 0.07})
    assert s.transmission("buffer", higher.energy_keV) > s.transmission("buffer", e)


def test_counts_follow_the_ring_current(st):
    full = expose(st, 10.0)
    st.ring.nominal_ma.put(50.0)
    half = expose(st, 10.0)
    for key in ("saxs_det_total", "saxs_det_i0", "saxs_det_transmitted"):
        assert half[key]["value"] / full[key]["value"] == pytest.approx(0.5, rel=0.02)
    st.ring.nominal_ma.put(100.0)
    t0 = st.clock.now
    st.ring.dump(at_s=t0 + 5.0, duration_s=100.0)
    dumped = expose(st, 10.0)
    share = st.ring.mean_current(t0, t0 + 10.0) / 100.0
    assert 0.3 < share < 0.7
    assert dumped["saxs_det_total"]["value"] / full["saxs_det_total"]["value"] == pytest.approx(share, rel=0.02)


def test_non_positive_exposure_is_refused_before_exposing(st):
    before = st.det.image.get().copy()
    for bad in (0.0, -1.0, float("nan")):
        st.det.exposure_time.put(bad)
        status = st.det.trigger()
        assert status.done and not status.success
        with pytest.raises(ValueError, match="not positive"):
            status.wait(1)
    assert st.clock.now == 0.0 and np.array_equal(st.det.image.get(), before)
    with pytest.raises(ValueError, match="not positive"):
        st.sample.frame(G300, "sample", 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="exposure"):
        make_saxs_endstation(exposure_s=0)
    with pytest.raises(ValueError, match="did you mean silica-50nm"):
        make_saxs_endstation("silica-50")


def test_faults_corrupt_timeout_hang_and_stall():
    clock = SimClock(time_scale=float("inf"), timeout_floor_s=0.2)
    st = make_saxs_endstation(clock=clock, seed=1)
    st.det.fail_next("corrupt")
    image = expose(st)["saxs_det_image"]["value"]
    assert (image[~G300.gap_mask()] < 0).sum() > 0.005 * image.size
    assert (expose(st)["saxs_det_image"]["value"][~G300.gap_mask()] >= 0).all()  # one frame only
    st.det.fail_next("timeout")
    with pytest.raises(Exception, match="did not report the end of the frame"):
        st.det.trigger().wait(1)
    assert st.det.elapsed_s.get() == 0.0
    st.det.fail_next("hang")
    with pytest.raises(StatusTimeoutError):
        st.det.trigger().wait(2)
    with pytest.raises(ValueError, match="unknown pixel detector failure mode"):
        st.det.fail_next("nan")
    st.cell.fail_next("stall")
    st.cell.set("buffer").wait(1)
    assert st.cell.position == pytest.approx(SLOTS["buffer"] / 2) and st.cell.slot.get() == ""
    with pytest.raises(LimitError):
        st.cell.set(50.0)


def test_beamtime_is_spent_on_the_clock(st):
    overhead = st.det.overhead_s.get()
    expose(st, 2.0)
    assert st.clock.now == pytest.approx(2.0 + overhead)
    t = st.clock.now
    st.cell.set("standard").wait(1)
    assert st.clock.now - t == pytest.approx(st.cell.settle_s.get() + 20.0 / st.cell.speed_mm_s.get())
    t = st.clock.now
    st.cell.set("standard").wait(1)
    assert st.clock.now == t and st.cell.moves == 1


def test_damage_changes_the_pattern_between_frames_and_only_with_dose():
    rng = np.random.default_rng(0)
    s = saxs_sample("silica-50nm-aggregating")
    low = (G300.q_map() < 0.08) & ~G300.static_mask()
    first = s.expected_frame(G300, "sample", 1.0).image[low].sum()
    s.frame(G300, "buffer", 10.0, rng)
    assert s.dose_s == 0.0 and s.expected_frame(G300, "sample", 1.0).image[low].sum() == first
    for _ in range(20):
        s.frame(G300, "sample", 1.0, rng)
    assert s.dose_s == pytest.approx(20.0)
    later = s.expected_frame(G300, "sample", 1.0).image[low].sum()
    assert later > 1.1 * first and s.truth()["aggregated_fraction"] > 0.1
    s.reset()
    assert s.expected_frame(G300, "sample", 1.0).image[low].sum() == pytest.approx(first)
    steady = saxs_sample("silica-50nm")
    a = steady.expected_frame(G300, "sample", 1.0).image
    steady.frame(G300, "sample", 50.0, rng)
    assert np.array_equal(a, steady.expected_frame(G300, "sample", 1.0).image)
    grown = saxs_sample("silica-50nm", damage={"radius_growth_nm_per_s": 0.1})
    grown.frame(G300, "sample", 10.0, rng)
    assert grown.truth()["radius_nm"] == pytest.approx(26.0)
    with pytest.raises(ValueError, match="unknown damage key"):
        saxs_sample("silica-50nm", damage={"aggregation_rate": 1.0})


@pytest.mark.parametrize("name", ["silica-50nm", "silica-pmma-core-shell"])
def test_sample_curve_is_sasmodels_called_directly(name):
    from sasmodels.core import load_model
    from sasmodels.data import empty_data1D
    from sasmodels.direct_model import DirectModel

    s = saxs_sample(name)
    q_nm = np.geomspace(0.05, 2.0, 60)
    pars = {"scale": s.volume_fraction, "background": 0.0, "radius": 10 * s.radius_nm, "radius_pd": s.radius_pd,
            "radius_pd_type": "schulz", "radius_pd_n": 35, "radius_pd_nsigma": 3, "sld_solvent": 9.47}
    if s.model == "sphere":
        pars.update(sld=s.sld)
    else:
        pars.update(sld_core=s.sld, sld_shell=s.sld_shell, thickness=10 * s.thickness_nm)
    direct = DirectModel(empty_data1D(q_nm / 10), load_model(s.model))(**pars)
    np.testing.assert_allclose(s.dsdo(q_nm) - s.flat_dsdo_cm(), direct, rtol=2e-3)
    assert s.truth()["radius_nm"] == pytest.approx(25.0 if name == "silica-50nm" else 30.0)
