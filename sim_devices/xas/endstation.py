"""A simulated XAS end station on a given clock and ring: monochromator, ion chambers I0/It (and Iref
after a reference foil), a fluorescence detector (If) when asked for, sample."""

from __future__ import annotations

from dataclasses import dataclass

from sim_devices.core.clock import SimClock
from sim_devices.xas.beam import BeamModel, Glitch
from sim_devices.xas.fluorescence import FluorescenceModel, SimFluorescenceDetector
from sim_devices.xas.ion_chambers import SharedDwell, SimIonChamber, ion_chambers
from sim_devices.xas.monochromator import SimMonochromator
from sim_devices.xas.samples import XASSample

REFERENCE_FOIL = "Fe-foil"
#: The fluorescence detector's sample (``make_xas_endstation(fluorescence=True)``): 1 wt% Fe in cellulose, a 3 mm
#: pellet of 1 g/cm³ at 45°/45° (thick: ρd(μ/sin φ + μ_f/sin θ) ≈ 12), the agent's default composition.
DILUTE_SAMPLE = FluorescenceModel(fe_fraction=0.01, thickness_cm=0.3)

#: The realistic truth of a rehearsal (``bayesbeam rehearse xas --realistic``), keyword arguments of
#: ``make_xas_endstation``: I0 falling 5 %/100 eV with curvature, two crystal glitches (0.3-0.4 eV FWHM,
#: 20-30 % of the flux, 1-1.5 % of the step left in ln(I0/It)), 0.5 % third harmonic, a μt background,
#: a monochromator 0.4 eV off drifting 0.2 eV/h, 0.1 eV of lash on reversals, and the reference foil.
#: What a beamline does about them: ``REALISTIC_PRACTICE``.
REALISTIC_TRUTH = {
    "beam": BeamModel(slope=-0.05, curvature=0.02, glitches=(Glitch(7141.3, 0.3, 0.3, 0.01),
                                                             Glitch(7168.9, 0.4, 0.2, 0.015)),
                      harmonic_fraction=0.005),
    "calibration_offset_eV": 0.4, "calibration_drift_eV_h": 0.2, "lash_eV": 0.1, "reference_foil": True,
}
REALISTIC_BACKGROUND = {"c3": 0.04, "c4": -0.02}  # μt background (E_ref/E)^3, ^4 on the sample
#: The beamline's answers to that truth: an anti-backlash approach from below (eV of overshoot, more
#: than the lash; the monochromator's and the agent's move cost), the glitch map (eV windows the
#: agent never chooses, ± 2 FWHM about each glitch) and the harmonic rejection as the beamline knows it
#: (detuned crystals or a mirror leave up to ~1 % at 3E: the prior sd of the harmonic fraction, the
#: agent's and its foil channel's; not the simulated 0.5 % itself).
REALISTIC_PRACTICE = {"backlash_eV": 0.2,
                      "avoid_eV": [[g.energy_eV - 2 * g.width_eV, g.energy_eV + 2 * g.width_eV]
                                   for g in REALISTIC_TRUTH["beam"].glitches],
                      "harmonic_sd": 0.01}


def realistic_practice(mode: str = "transmission") -> dict:
    """``xas_agent`` keyword arguments of ``REALISTIC_PRACTICE``: move cost, glitch map and, in transmission
    (the harmonic term is transmission's: ln(I0/It)), the harmonic prior."""
    from agent.xas.design import MoveCost, Nuisance

    practice = {"cost": MoveCost(backlash_eV=REALISTIC_PRACTICE["backlash_eV"]),
                "avoid_eV": REALISTIC_PRACTICE["avoid_eV"]}
    if mode == "transmission":
        practice["nuisance"] = Nuisance(harmonic_sd=REALISTIC_PRACTICE["harmonic_sd"])
    return practice


@dataclass
class XASEndStation:
    sample: XASSample
    mono: SimMonochromator
    i0: SimIonChamber
    it: SimIonChamber
    dwell: SharedDwell
    iref: SimIonChamber | None = None
    foil: XASSample | None = None
    ifl: SimFluorescenceDetector | None = None

    @property
    def detectors(self) -> list[SimIonChamber]:
        """[i0, it], [i0, it, iref], and the fluorescence detector ``ifl`` last when there is one: the plan's."""
        return [d for d in (self.i0, self.it, self.iref, self.ifl) if d is not None]


def make_xas_endstation(sample: str | XASSample, clock: SimClock, ring=None, seed: int | None = None,
                        settle_s: float = 0.3, speed_eV_s: float = 20.0, backlash_eV: float = 0.0,
                        dwell_s: float = 1.0, *, reference_foil: bool = False, foil_amplitude: float = 1.0,
                        foil_offset: float = 0.2, foil_mut_3e: float = 0.0, beam: BeamModel | None = None,
                        calibration_offset_eV: float = 0.0, calibration_drift_eV_h: float = 0.0,
                        lash_eV: float = 0.0, fluorescence: FluorescenceModel | bool = False) -> XASEndStation:
    """The XAS devices for the Fe K-edge standard ``sample`` (a name, ``ValueError`` if unknown, or an
    ``XASSample``) on ``clock``; counts follow ``ring`` (mA) when given. The monochromator range is the
    tabulated truth (eV), it starts at its low end and moves in ``settle_s`` + |ΔE|/``speed_eV_s`` seconds
    of beamtime. Truth options (all off by default): ``beam`` (``BeamModel``: flux slope, glitches,
    harmonics), the monochromator's hidden ``calibration_offset_eV`` (eV), ``calibration_drift_eV_h``
    (eV/h) and ``lash_eV`` (eV, ``SimMonochromator``). ``reference_foil``: a third chamber ``iref`` behind
    the Fe-foil standard (μt = ``foil_amplitude``·μ_foil + ``foil_offset``, ``foil_mut_3e`` at 3E) in
    the same scaler gate. ``fluorescence``: a fluorescence detector ``ifl`` in that gate, on the sample as the
    ``FluorescenceModel`` given (True: ``DILUTE_SAMPLE``)."""
    s = sample if isinstance(sample, XASSample) else XASSample(sample, seed=seed)
    lo, hi = s.energy_range
    mono = SimMonochromator(name="mono", clock=clock, limits_eV=(lo, hi), start_eV=lo, settle_time_s=settle_s,
                            speed_eV_s=speed_eV_s, backlash_eV=backlash_eV, lash_eV=lash_eV,
                            calibration_offset_eV=calibration_offset_eV,
                            calibration_drift_eV_h=calibration_drift_eV_h)
    foil = XASSample(REFERENCE_FOIL, amplitude=foil_amplitude, offset=foil_offset) if reference_foil else None
    chambers = ion_chambers(clock, mono, s, ring=ring, dwell_s=dwell_s, beam=beam, foil=foil,
                            foil_mut_3e=foil_mut_3e)
    ifl = None
    if fluorescence:
        ifl = SimFluorescenceDetector(name="ifl", clock=clock, mono=mono, sample=s, ring=ring, beam=beam,
                                      gate=chambers[0].gate,
                                      model=DILUTE_SAMPLE if fluorescence is True else fluorescence)
        ifl.dwell_s.put(float(dwell_s))
        chambers = (*chambers, ifl)
    return XASEndStation(s, mono, chambers[0], chambers[1], SharedDwell(list(chambers), name="dwell"),
                         chambers[2] if foil is not None else None, foil, ifl)
