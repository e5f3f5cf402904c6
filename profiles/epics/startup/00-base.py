"""Session base: beamline file, Channel Access environment (before pyepics starts), RunEngine +
embedded catalog + BestEffortCallback. ``$BAYESBEAM_BEAMLINE`` picks the file (default
profiles/beamlines/sim_bl08w.toml)."""

import bluesky.plan_stubs as bps  # noqa: F401
import bluesky.plans as bp  # noqa: F401
import numpy as np  # noqa: F401
from bluesky.plan_stubs import mv, mvr  # noqa: F401  (stock plans by name, also for the queue)
from bluesky.plans import count, list_scan, rel_scan, scan  # noqa: F401

from bayesbeam.beamline_config import load_beamline
from bayesbeam.epics_devices import ca_environment
from bayesbeam.interactive import configure_session

beamline = load_beamline()
ca_env = ca_environment(beamline)
RE, catalog, bec = configure_session(md={"beamline_id": beamline.name, "profile": "epics"})
