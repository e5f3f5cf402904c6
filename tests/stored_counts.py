"""What the spin-moment agent's sums must be, recomputed from a run's stored readings alone."""

import numpy as np


def stored_sums(primary, used) -> np.ndarray:
    """Σ+ and Σ− (2, channels) of the ``used`` stored spectra, each scaled as the agent scales it: by the
    monitor × live/real time of its count, relative to the mean of the first used cycle's four (counts)."""
    effective = (np.asarray(primary["ge_monitor"], float) * np.asarray(primary["ge_live_s"], float)
                 / np.asarray(primary["ge_elapsed_s"], float))
    idx = np.flatnonzero(np.asarray(used, bool))
    scale = effective[idx[:4]].mean() / effective[idx]
    spectra, fields = np.asarray(primary["ge_spectrum"], float)[idx], np.asarray(primary["field_sign"], float)[idx]
    return np.stack([scale[fields > 0] @ spectra[fields > 0], scale[fields < 0] @ spectra[fields < 0]])
