"""The simulated BL08W-style beamline (sim_devices): clock, ring, magnet, Ge detector, and the XAS end
station on the same clock and ring: monochromator ``mono`` (eV), ion chambers ``i0``/``it``, a fluorescence
detector ``ifl`` seeing the XAS standard as a dilute sample (1 wt% Fe in cellulose, ``adaptive_xas([i0, ifl], mono,
mode="fluorescence")``); the sample
temperature ``sample_temp`` (K; Fe only, whose simulated moment follows mu_s(T, B)); the 3d XPS
electron analyser ``analyser`` (the one the sample needs, sim_devices.xps.analyser_for); the SAXS end station
(BL40B2-style) on the same clock and ring: the pixel detector
``saxs_det`` (pilatus-300k) and the sample-cell stage ``cell_x`` (mm; slots sample, buffer, standard, empty); the
full-field XAS-imaging station on the XAS monochromator: the detector ``imaging_det`` (the default LiFePO4/FePO4/
Fe3O4 sample with its hidden 0.5 % minority), the sample stage ``sample_x`` (in/out for flats) and the ``shutter``.
Registered by name for plans queued with plain parameters (``plans.registry``).

``$BAYESBEAM_SAMPLE`` (default fe), ``$BAYESBEAM_XAS_SAMPLE`` (an Fe K-edge standard, default Fe3O4),
``$BAYESBEAM_XPS_SAMPLE`` (default ceo2-full, on the wide analyser; la2o3, ceo2: the narrow one),
``$BAYESBEAM_SAXS_SAMPLE`` (default silica-50nm),
``$BAYESBEAM_IMAGING_PIXELS`` (the imaging detector's side, px, default 256) and ``$BAYESBEAM_TIME_SCALE``
(simulated s per wall s, default 1e4)."""

import os

from plans.registry import register_devices
from sim_devices import BeamtimeSignal, make_compton_beamline, make_saxs_endstation, make_xas_endstation
from sim_devices.imaging import default_sample, make_imaging_endstation
from sim_devices.xas.fly import fly_scaler
from sim_devices.xps import analyser_for, xps_sample

sim = make_compton_beamline(os.environ.get("BAYESBEAM_SAMPLE", "fe"),
                            time_scale=float(os.environ.get("BAYESBEAM_TIME_SCALE", "1e4")),
                            with_temperature=os.environ.get("BAYESBEAM_SAMPLE", "fe").lower() == "fe")
ge, magnet, ring, sample = sim.ge, sim.magnet, sim.ring, sim.sample
sample_temp = sim.sample_temp  # K: Fe's mu_s(T, B) in the simulator (None for a sample without that model)
beamtime = BeamtimeSignal(sim.clock, name="beamtime")
xas = make_xas_endstation(os.environ.get("BAYESBEAM_XAS_SAMPLE", "Fe3O4"), sim.clock, ring=sim.ring, fluorescence=True)
mono, i0, it, ifl, xas_sample = xas.mono, xas.i0, xas.it, xas.ifl, xas.sample
fly = fly_scaler(xas)  # counts I0/It per energy bin of a continuous sweep (adaptive_fly_xas)
xps = xps_sample(os.environ.get("BAYESBEAM_XPS_SAMPLE", "ceo2-full"))  # the default (Poisson) analysis's truth, Ce
analyser = analyser_for(xps, name="analyser", clock=sim.clock)
saxs = make_saxs_endstation(os.environ.get("BAYESBEAM_SAXS_SAMPLE", "silica-50nm"), clock=sim.clock, ring=sim.ring)
saxs_det, cell_x, saxs_sample = saxs.det, saxs.cell, saxs.sample
_side = int(os.environ.get("BAYESBEAM_IMAGING_PIXELS", "256"))
imaging = make_imaging_endstation(default_sample(), sim.clock, ring=sim.ring, shape=(_side, _side), mono=mono)
imaging_det, sample_x, shutter, imaging_sample = imaging.detector, imaging.stage, imaging.shutter, imaging.sample
register_devices({k: v for k, v in dict(ge=ge, magnet=magnet, ring=ring, beamtime=beamtime, sample_temp=sample_temp,
                                        mono=mono, i0=i0, it=it, ifl=ifl, fly=fly, analyser=analyser,
                                        saxs_det=saxs_det, cell_x=cell_x, imaging_det=imaging_det,
                                        sample_x=sample_x, shutter=shutter).items()
                  if v is not None})
