"""The simulated BL08W-style beamline (sim_devices): clock, ring, magnet, Ge detector.

``$BAYESBEAM_SAMPLE`` (default fe) and ``$BAYESBEAM_TIME_SCALE`` (simulated s per wall s, default 1e4)."""

import os

from sim_devices.clock import BeamtimeSignal
from sim_devices.compton_beamline import make_compton_beamline

sim = make_compton_beamline(os.environ.get("BAYESBEAM_SAMPLE", "fe"),
                            time_scale=float(os.environ.get("BAYESBEAM_TIME_SCALE", "1e4")))
ge, magnet, ring, sample = sim.ge, sim.magnet, sim.ring, sim.sample
beamtime = BeamtimeSignal(sim.clock, name="beamtime")
