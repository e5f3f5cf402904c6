"""The spectrometer physics of magnetic Compton scattering (agent.compton.corrections) and the simulator's
instrument truth built on it (sim_devices.compton.instrument, issue 12)."""

import dataclasses

import numpy as np
import pytest
import xraylib

from agent.compton import corrections as cx
from agent.compton.model import ComptonGeometry
from agent.compton.profiles import compton_peak_kev, convolve_at
from sim_devices.compton.instrument import WINDOW_AU, instrument
from sim_devices.compton.samples import compton_sample

E1, PHI = 175.0, 178.0
PEAK = compton_peak_kev(E1, PHI)


def test_charge_cross_section_is_klein_nishina_at_the_peak_and_follows_its_trends():
    assert cx.charge_ddcs(PEAK, E1, PHI) / cx.BARN_CM2 == pytest.approx(xraylib.DCS_KN(E1, np.deg2rad(PHI)), rel=1e-6)
    assert cx.charge_cross_section(PEAK, E1, PHI) == pytest.approx(1.0)
    # Across angles the peak value tracks Klein–Nishina's ratio between angles.
    for phi in (90.0, 150.0):
        ours = cx.charge_ddcs(compton_peak_kev(E1, phi), E1, phi) / cx.charge_ddcs(PEAK, E1, PHI)
        kn = xraylib.DCS_KN(E1, np.deg2rad(phi)) / xraylib.DCS_KN(E1, np.deg2rad(PHI))
        assert ours == pytest.approx(kn, rel=1e-6)
    e = np.linspace(92.0, 118.0, 50)
    assert np.all(np.diff(cx.charge_cross_section(e, E1, PHI)) > 0)  # rises with E₂ (the E₂/E₁-type factors)
    assert np.all(np.abs(cx.charge_cross_section(e, E1, PHI) - 1) < 0.25)


def test_spin_term_and_the_flipping_ratio_shape():
    ratio = cx.spin_to_charge(PEAK, E1, PHI)
    c = np.cos(np.deg2rad(PHI))  # Lipps–Tolhoek at the peak: −(1 − cosφ)(E₁ + E₂)cosφ/mc² over the KN bracket
    phi0 = 1 + c**2 + (E1 - PEAK) * (1 - c) / 510.99895
    assert ratio == pytest.approx(-(1 - c) * (E1 + PEAK) * c / 510.99895 / phi0, rel=1e-9)
    assert 0.3 < ratio < 0.6
    assert cx.spin_cross_section(PEAK, E1, PHI) == pytest.approx(ratio)
    e = np.linspace(92.0, 118.0, 5)
    assert cx.flipping_ratio_shape(PEAK, E1, PHI) == pytest.approx(1.0)
    assert np.all(np.abs(cx.flipping_ratio_shape(e, E1, PHI) - 1) < 0.1)


def test_self_absorption_against_a_brute_force_integral():
    e2 = np.array([95.0, PEAK, 115.0])
    for alpha, t_mm in ((90.0, 1.0), (60.0, 3.0)):
        got = cx.self_absorption(e2, E1, PHI, "Fe", t_mm, incidence_deg=alpha)
        x = np.linspace(0, t_mm / 10, 20001)
        sa, sb = np.sin(np.deg2rad(alpha)), np.sin(np.deg2rad(PHI - alpha))
        mu1 = xraylib.CS_Total(26, E1) * xraylib.ElementDensity(26)
        for k, e in enumerate(e2):
            mu2 = xraylib.CS_Total(26, float(e)) * xraylib.ElementDensity(26)
            brute = np.trapezoid(np.exp(-(mu1 / sa + mu2 / sb) * x), x) / sa
            assert got[k] == pytest.approx(brute, rel=1e-6)
    assert np.array_equal(cx.self_absorption(e2, E1, PHI, "Fe", 0.0), np.ones(3))


def test_ge_efficiency_escape_and_the_escape_matrix():
    eff = cx.ge_efficiency(np.array([80.0, 100.0, 120.0]), 15.0)
    assert np.all((eff > 0.3) & (eff < 1)) and np.all(np.diff(eff) < 0)
    assert np.array_equal(cx.ge_efficiency(np.array([100.0]), 0.0), [1.0])
    fa, fb = cx.escape_fraction(100.0, 15.0)
    assert 1e-3 < fa + fb < 2e-2 and fb < fa  # ~0.1–2 % at 100 keV, Kα the larger
    assert cx.escape_fraction(10.0, 15.0) == (0.0, 0.0)  # below the Ge K edge
    e = 86.0 + 0.036 * np.arange(1024)
    m = cx.escape_matrix(e, 15.0)
    shift = int(np.ceil(max(line for line, _ in cx.escape_lines()) / 0.036)) + 1
    # Counts are conserved (column sums 1) wherever both escape peaks land inside the spectrum; below, the
    # escapes leave it (lost: column sums 1 − f).
    assert np.allclose(m.sum(axis=0)[shift:], 1.0, atol=1e-12)
    assert np.all(m.sum(axis=0)[:int(min(line for line, _ in cx.escape_lines()) / 0.036) - 1] < 1)
    assert np.array_equal(cx.escape_matrix(e, 0.0), np.eye(1024))


def test_dead_time():
    assert cx.live_fraction(0.0, 1e-5) == 1.0
    rate = cx.operating_rate(1e-5, 0.3)
    assert 1 - cx.live_fraction(rate, 1e-5) == pytest.approx(0.3)
    assert cx.output_rate(rate, 1e-5) == pytest.approx(rate * 0.7)
    with pytest.raises(ValueError):
        cx.operating_rate(1e-5, 1.0)


def test_channel_factors_are_ones_with_every_correction_off():
    g = ComptonGeometry.from_calibration(1024, 86.0, 0.036)
    charge, magnetic = cx.channel_factors(g, "Fe")
    assert np.array_equal(charge, np.ones(1024)) and np.array_equal(magnetic, np.ones(1024))
    on = dataclasses.replace(g, cross_section=1.0, sample_thickness_mm=1.0, ge_thickness_mm=15.0)
    charge, magnetic = cx.channel_factors(on, "Fe")
    k = np.argmin(np.abs(g.energy_kev - PEAK))
    assert charge[k] == pytest.approx(1.0, abs=0.01) and magnetic[k] == pytest.approx(1.0, abs=0.01)
    assert np.allclose(magnetic / charge, cx.flipping_ratio_shape(g.energy_kev, E1, PHI))


def test_the_count_rate_is_derived_and_capped_by_the_operating_point():
    inst, fe = instrument(), compton_sample("fe")
    b = inst.count_rate_breakdown(fe)
    assert all(np.isfinite(v) for v in b.values())
    assert b["input_rate_cps_per_element"] <= inst.operating_rate_cps * (1 + 1e-9)
    assert b["dead_fraction"] <= inst.max_dead_fraction + 1e-9 and 0 < b["attenuation"] <= 1
    assert 0 < b["window_compton_cps"] < b["output_rate_cps"]
    assert b["kappa_peak"] == pytest.approx(inst.circular_polarisation * cx.spin_to_charge(PEAK, E1, PHI))


def test_live_time_differs_between_field_signs():
    inst, fe = instrument(), compton_sample("fe")
    g = inst.default_geometry(fe)
    (plus, live_p), (minus, live_m) = (inst.expected_counts(fe, g, s, 60.0) for s in (1, -1))
    assert live_p < live_m < 60.0  # the magnetic effect raises the + rate: more dead time
    assert abs(live_p - live_m) / 60.0 < 0.02


def test_the_difference_over_the_channel_factors_is_kappa_times_the_magnetic_profile():
    """Backgrounds, multiple scattering, escape and dead-time losses off: (N₊ − N₋)/(magnetic factor), normalised
    by (N₊ + N₋)/(charge factor), recovers κ·(J_mag ⊗ G)/(J_tot ⊗ G) area-normalised."""
    inst, fe = instrument().ideal(), compton_sample("fe")
    g = inst.default_geometry(fe)
    (plus, tp), (minus, tm) = (inst.expected_counts(fe, g, s, 60.0) for s in (1, -1))
    plus, minus = plus / tp, minus / tm
    charge_f, magnetic_f = cx.channel_factors(g, "Fe")
    inside = np.abs(g.pz) <= WINDOW_AU
    diff = (plus - minus)[inside] / magnetic_f[inside] / 2
    total = (plus + minus)[inside] / charge_f[inside] / 2
    from agent.compton.profiles import total_profile

    gamma = inst.resolution_fwhm_au
    jc = convolve_at(total_profile("Fe"), gamma, g.pz[inside])
    jm = convolve_at(fe.magnetic_profile(), gamma, g.pz[inside])
    dp = g.pz_width[inside]
    scale = total.sum() / (jc @ dp)  # counts per unit of J_tot⊗G area
    got = diff / dp / scale  # κ·J_mag⊗G (μB per a.u.)
    assert np.allclose(got, inst.kappa * jm, atol=2e-3 * inst.kappa * jm.max())
    assert diff.sum() / total.sum() == pytest.approx(inst.kappa * (jm @ dp) / (jc @ dp), rel=2e-3)


def test_corrected_posterior_matches_brute_force_in_count_space():
    """The agent's posterior of μs with every correction on (cross-sections, absorption, efficiency, Ge escape
    undone, multiple scattering, backgrounds in the counts) equals brute-force integration of the likelihood of
    the raw ± count differences over (a3d, a4s), with the simulator's instrument as the forward model: the
    analysis inverts the instrument. Free-atom model at the instrument's resolution (no misfit term, one Γ),
    no dead time (live = real time), the absolute scale taken from the measured charge as the analysis does."""
    from agent.compton.agent import spin_moment_agent

    inst = dataclasses.replace(instrument(), dead_time_losses=False)
    fe = compton_sample("fe")
    geometry = inst.default_geometry(fe)
    t = 600.0

    def counts(amplitudes, sign):
        sample = dataclasses.replace(fe, amplitudes_mub=amplitudes, diffuse_area_mub=0.0, band_terms=())
        return inst.expected_counts(sample, geometry, sign, t)[0]

    charge = 0.5 * (counts((2.38, -0.12), 1) + counts((2.38, -0.12), -1))
    unit = [0.5 * (counts(a, 1) - counts(a, -1)) for a in ((1.0, 0.0), (0.0, 1.0))]  # magnetic counts per μB
    rng = np.random.default_rng(12)
    n_plus, n_minus = (rng.poisson(charge + s * (2.38 * unit[0] - 0.12 * unit[1])).astype(float) for s in (1, -1))
    agent = spin_moment_agent(1e-9, max_cycles=None, gamma_grid=[inst.resolution_fwhm_au], misfit_centres=[])
    agent.configure(geometry)
    agent.ingest([{"spectra": np.stack([n_plus, n_minus]), "fields": [1, -1], "monitors": [t, t]}])
    mix = agent.posterior()["mu_s"]

    window = np.abs(geometry.pz) <= WINDOW_AU
    scale = (n_plus + n_minus)[window].sum() / (2 * charge[window].sum())  # the measured absolute scale
    d, var = (n_plus - n_minus)[window], (n_plus + n_minus)[window]
    m = np.stack([2 * scale * u[window] for u in unit])  # predicted difference per μB of each orbital
    a3 = np.linspace(2.38 - 0.25, 2.38 + 0.25, 401)
    a4 = np.linspace(-0.12 - 0.25, -0.12 + 0.25, 401)
    A3, A4 = np.meshgrid(a3, a4, indexing="ij")
    # χ² as a quadratic form: Σ (d − a·m)²/var on the grid, plus the agent's N(0, 5²) prior of each amplitude.
    h = (m / var) @ m.T
    b = (m / var) @ d
    log_p = -0.5 * (h[0, 0] * A3**2 + 2 * h[0, 1] * A3 * A4 + h[1, 1] * A4**2) + b[0] * A3 + b[1] * A4 \
        - 0.5 * (A3**2 + A4**2) / 25.0
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    mean = float((w * (A3 + A4)).sum())
    std = float(np.sqrt((w * (A3 + A4) ** 2).sum() - mean**2))
    assert abs(mix.mean - mean) < 0.05 * std, (mix.mean, mean, std)
    assert mix.std == pytest.approx(std, rel=0.02)
    assert abs(mean - 2.26) < 4 * std  # and both are right about the truth


def test_the_resolution_varies_across_the_window_and_the_convolution_follows_it():
    """The instrument's p_z resolution grows towards low E₂ (Jacobian and Fano term); the varying-width
    convolution equals the constant one for a constant width, and at each point the one of that point's width."""
    from agent.compton.profiles import convolve_varying, orbital_profile

    inst = instrument()
    width = inst.resolution_au(np.array([92.0, PEAK, 116.0]))
    assert width[0] > width[1] > width[2] and width[1] == pytest.approx(inst.resolution_fwhm_au)
    j = orbital_profile("Fe", "3d")
    pz = np.linspace(-8, 8, 41)
    assert np.allclose(convolve_varying(j, 0.45, pz), convolve_at(j, 0.45, pz), atol=2e-6)
    widths = np.linspace(0.3, 0.7, pz.size)
    each = [convolve_at(j, w, np.array([p]))[0] for p, w in zip(pz, widths, strict=True)]
    assert np.allclose(convolve_varying(j, widths, pz), each, atol=2e-6)
    g = inst.default_geometry(compton_sample("fe"))
    shape = g.resolution_shape
    assert shape[np.argmin(np.abs(g.energy_kev - PEAK))] == pytest.approx(1.0, abs=2e-3) and shape[0] > shape[-1]
