"""The options of a 3d XPS Hamiltonian-selection rehearsal, their checks, and the agent they configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.words import plain
from bayesbeam.rehearsal.common import RehearsalOptions, positive, require, whole

if TYPE_CHECKING:  # numba and the agent load when a rehearsal is built, not for --help
    from agent.xps.agent import XPSAgent
    from sim_devices.xps.samples import FullXPSSample, XPSSample

TRUTHS = ("CeO2", "La2O3")  # the names of sim_devices.xps.samples.SAMPLES (any case; "-full" ones too)
ANALYSES = ("poisson", "0.1")  # agent.xps.agent.ANALYSES, the default first


@dataclass(frozen=True)
class XPSOptions(RehearsalOptions):
    """One XPS rehearsal: repeated 3d sweeps of the simulated ``truth`` sample (any case; CeO2: 3-level,
    La2O3: 2-level cluster model).

    Stop when one model's posterior probability reaches ``p_model`` and the leading model's stds of
    Δ_f = Δ − U_fc and V reach ``target_delta_f`` and ``target_v`` (eV), or after ``max_sweeps``
    sweeps. ``dwell_s``: dwell per analyser channel (s). ``mc_sweeps``: exchange-MC sweeps per run
    and model after each sweep (burn-in: half, at least 50). ``analysis``: "poisson" (the Poisson likelihood of
    the measured line shape, on the truth's full-line-shape sample ``<truth>-full`` over the wide analyser's
    window; the element, hence the spin-orbit splitting, is the sample's) or "0.1" (the seed's line shape on the
    narrow window), agent.xps.agent. Keyword-only: ``seed`` of the simulation
    and the sampler (None: fresh spectra, sampler seed 0), ``time_scale`` (simulated seconds per
    wall-clock second).
    """

    truth: str = "CeO2"
    p_model: float = 0.99
    target_delta_f: float = 0.1
    target_v: float = 0.01
    max_sweeps: int = 20
    dwell_s: float = 0.1
    mc_sweeps: int = 800
    analysis: str = "poisson"

    def sample(self) -> XPSSample | FullXPSSample:
        """The simulated sample (checks the truth's name): for "poisson" the truth's full-line-shape version."""
        from sim_devices.xps.samples import FullXPSSample, sample

        s = sample(self.truth)
        return sample(f"{s.name}-full") if self.analysis == "poisson" and not isinstance(s, FullXPSSample) else s

    def agent(self) -> XPSAgent:
        from agent.xps import xps_agent

        require(self.analysis in ANALYSES, f"analysis must be one of {', '.join(ANALYSES)}, got {plain(self.analysis)}")
        s = self.sample()
        require(positive(self.dwell_s), f"dwell must be > 0 s, got {plain(self.dwell_s)}")
        require(whole(self.mc_sweeps, 50), f"mc_sweeps must be an integer >= 50, got {plain(self.mc_sweeps)}")
        self.check_run_settings()
        return xps_agent(self.p_model, self.target_delta_f, self.target_v, self.max_sweeps, self.seed or 0,
                         analysis=self.analysis, element=getattr(s, "element", "Ce"),
                         n_sweeps=self.mc_sweeps, n_burn=max(self.mc_sweeps // 2, 50))
