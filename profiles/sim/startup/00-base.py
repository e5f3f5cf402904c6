"""Session base: RunEngine + embedded catalog + BestEffortCallback (the nslsii.configure_base role)."""

import bluesky.plan_stubs as bps  # noqa: F401
import bluesky.plans as bp  # noqa: F401
import numpy as np  # noqa: F401
from bluesky.plan_stubs import mv, mvr  # noqa: F401  (stock plans by name, also for the queue)
from bluesky.plans import count, list_scan, rel_scan, scan  # noqa: F401

from bayesbeam.interactive import configure_session

RE, catalog, bec = configure_session(md={"beamline_id": "sim_bl08w", "profile": "sim"})
