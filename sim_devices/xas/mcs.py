"""The multichannel scaler of the IOC's XAS end station (a Struck SIS3820 as synApps' mca module serves it,
``SIS38XX.template``) and the counting behind it, for fly scans over Channel Access (``sim_devices.ioc``).

Inputs (one mca record each, ``mca1`` … ``mca5``): 1 the internal ``MCS_CLOCK_HZ`` reference (gate time =
ticks / clock), 2 I0, 3 It (the ion chambers' V/F counts: Poisson), 4 the ring current's V/F converter
(``RING_VF_HZ_PER_MA`` Hz per mA; counts = gain × mean current × gate time, rounded), 5 the monochromator
encoder (one count per ``ENCODER_EV_PER_COUNT`` eV of travel: its position, channel by channel).

``External`` channel advance: the pulses come from the monochromator's position-compare output, one every
``DCM:PSO:Step`` eV of encoder travel from where the encoder was at ``EraseStart``, and the same output gates
the MCS on only while the monochromator moves upward (a stopped or downward-moving monochromator is not
counted). So the channels are encoder bins, and a stop between two motor-record moves (the record's
``.DLY`` settle and the client's turnaround before its next move) costs beamtime but adds no gate time: the
simulated clock runs at ``time_scale`` × wall time, so a client's 5 ms turnaround is 10 s of beamtime at
2000×, which an ungated channel would record as a bin counted at rest. The ramps (``.ACCL``) are inside
the motion and so in the bins' gate times. ``Internal``: ``NuseAll`` channels of ``Dwell`` s each at the
monochromator's position as the acquisition starts (it is not expected to move). The acquisition ends once
``NuseAll`` channels are filled (``Acquiring`` 1 → 0) or at ``StopAll``.

Counts come from the end station's own physics (``sim_devices.xas.fly``: ``photon_energies`` with the
calibration offset, drift and lash, ``expected_bin_counts``), integrated over each part of a bin a move
crosses (``fly.SUBSAMPLES`` midpoints, at the times of the move's trapezoidal profile), times the ring's
mean current over it, then Poisson.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from sim_devices.xas.fly import SUBSAMPLES, expected_bin_counts, photon_energies, subsamples
from sim_devices.xas.monochromator import time_at_distance

N_MCS_CHANNELS = 2048  # MaxChannels
MCS_INPUTS = ("clock", "I0", "It", "ring current V/F", "encoder")  # mca1 … mca5
MCS_CLOCK_HZ = 50e6  # the SIS3820's internal reference clock (Hz)
RING_VF_HZ_PER_MA = 2000.0  # ring current V/F converter (Hz per mA)
ENCODER_EV_PER_COUNT = 1e-3  # monochromator encoder resolution (eV per count)
_EDGE_TOL = 1e-6  # fraction of a step within which a position is on a channel edge


class MCSChannel(PVGroup):
    """One mca record of the MCS: ``.VAL`` counts per channel (``MaxChannels`` long, the first ``.NORD``
    acquired), ``.NUSE`` channels in use."""

    val = pvproperty(name=".VAL", value=[0] * N_MCS_CHANNELS, dtype=int, max_length=N_MCS_CHANNELS,
                     read_only=True, doc="counts per channel")
    nuse = pvproperty(name=".NUSE", value=N_MCS_CHANNELS, read_only=True, doc="channels in use")
    nord = pvproperty(name=".NORD", value=0, read_only=True, doc="channels acquired")


class MCSRecords(PVGroup):
    """The SIS38XX PVs a fly-scan client uses (module docstring). ``EraseStart`` (put 1: erase and start; the
    put completes once acquiring), ``StopAll`` (put 1: stop; the arrays keep what was counted)."""

    erase_start = pvproperty(name="EraseStart", value=0, doc="put 1: erase the arrays and start acquiring")
    stop_all = pvproperty(name="StopAll", value=0, doc="put 1: stop acquiring")
    acquiring = pvproperty(name="Acquiring", value=0, read_only=True, doc="1 while acquiring")
    nuse_all = pvproperty(name="NuseAll", value=N_MCS_CHANNELS, lower_ctrl_limit=1, upper_ctrl_limit=N_MCS_CHANNELS,
                          doc="channels to acquire")
    max_channels = pvproperty(name="MaxChannels", value=N_MCS_CHANNELS, read_only=True)
    current_channel = pvproperty(name="CurrentChannel", value=0, read_only=True, doc="channel being counted")
    channel_advance = pvproperty(name="ChannelAdvance", value="Internal", dtype=ChannelType.ENUM,
                                 enum_strings=["Internal", "External"])
    dwell = pvproperty(name="Dwell", value=1.0, precision=4, units="s", doc="Internal advance: s per channel")
    elapsed_real = pvproperty(name="ElapsedReal", value=0.0, read_only=True, precision=4, units="s",
                              doc="beamtime of the last acquisition (s)")
    mca1 = SubGroup(MCSChannel, prefix="mca1")
    mca2 = SubGroup(MCSChannel, prefix="mca2")
    mca3 = SubGroup(MCSChannel, prefix="mca3")
    mca4 = SubGroup(MCSChannel, prefix="mca4")
    mca5 = SubGroup(MCSChannel, prefix="mca5")

    @erase_start.putter
    async def erase_start(self, instance, value):
        if value:
            await self.parent.mcs_start()
        return 0

    @stop_all.putter
    async def stop_all(self, instance, value):
        if value:
            await self.parent.mcs_stop()
        return 0

    @property
    def channels(self) -> tuple[MCSChannel, ...]:
        return self.mca1, self.mca2, self.mca3, self.mca4, self.mca5


def _draw(mono, chambers, ring, readback, times, t_lo, t_hi, encoder) -> np.ndarray:
    """(5, parts) counts per input of gate parts [t_lo, t_hi] (beamtime s) with (parts, m) subsample ``readback``
    (eV) at ``times`` (s), the crystals starting at the monochromator's position + lag (the move's start): clock
    ticks, I0 and It (Poisson), ring V/F, the given ``encoder`` counts."""
    gate = np.asarray(t_hi, float) - np.asarray(t_lo, float)
    current = np.array([ring.mean_current(a, z) for a, z in zip(t_lo, t_hi, strict=True)])
    photon, _ = photon_energies(mono, readback, times, float(mono.position) + float(getattr(mono, "lag_eV", 0.0)))
    lam = expected_bin_counts(chambers, photon, gate, current)
    i0, it = (ch.sample.rng.poisson(x) for ch, x in zip(chambers, lam, strict=True))
    return np.vstack([np.round(gate * MCS_CLOCK_HZ), i0, it, np.round(RING_VF_HZ_PER_MA * current * gate), encoder])


@dataclass
class MovePlan:
    """The counts one move adds: ``channels`` (the channel of each part of a bin it crosses), ``counts``
    (5, parts) per input, ``advances`` (channel-advance pulses), ``dump_at_s`` (beamtime of an armed dump)."""

    channels: np.ndarray
    counts: np.ndarray
    advances: int
    dump_at_s: float | None = None


@dataclass
class MCSAcquisition:
    """One acquisition of ``nuse`` channels: External (``step`` eV per channel from encoder position ``origin``)
    or Internal; ``hang``: it never reports its end (``FAULT:McsHang``); ``dump_s``: a dump armed for when
    the channel advance reaches the middle channel (``FAULT:DumpMidCount``)."""

    nuse: int
    external: bool
    origin: float
    step: float
    t0: float
    hang: bool = False
    dump_s: float = 0.0
    channel: int = 0
    counts: np.ndarray = field(default=None)
    dump_armed_s: float = 0.0  # the armed dump's length (s), kept after it is scheduled

    def __post_init__(self):
        if self.counts is None:
            self.counts = np.zeros((len(MCS_INPUTS), self.nuse))
        self.dump_armed_s = self.dump_s

    @property
    def full(self) -> bool:
        return self.channel >= self.nuse

    def plan_move(self, mono, chambers, ring, start: float, target: float, t0: float, speed: float, accel_s: float
                  ) -> MovePlan | None:
        """What a move of ``mono`` from ``start`` to ``target`` (eV) starting at beamtime ``t0`` (s), at ``speed``
        eV/s with ``accel_s`` ramps, counts (None: not gated: Internal advance, a move down, no step). An armed dump
        is scheduled on ``ring`` when the move crosses into the middle channel, before the counts are drawn."""
        if not (self.external and target > start and self.step > 0 and speed > 0) or self.full:
            return None
        o, s, dist = self.origin, self.step, target - start
        k1 = math.floor((start - o) / s + _EDGE_TOL) + 1
        k2 = math.floor((target - o) / s + _EDGE_TOL)
        cuts = [o + k * s for k in range(k1, k2 + 1)]
        points, advance = [start, *cuts], [True] * len(cuts)
        if cuts and target - cuts[-1] <= _EDGE_TOL * s:
            points[-1] = target
        else:
            points.append(target)
            advance.append(False)
        lo, hi = np.array(points[:-1]), np.array(points[1:])
        channels = self.channel + np.concatenate([[0], np.cumsum(advance)[:-1]]).astype(int)
        t_lo = t0 + time_at_distance(lo - start, dist, speed, accel_s)
        t_hi = t0 + time_at_distance(hi - start, dist, speed, accel_s)
        dump_at = None
        mid = max(self.nuse // 2, 1)
        if self.dump_s > 0:
            crossing = [j for j, (c, a) in enumerate(zip(channels, advance, strict=True)) if a and c + 1 == mid]
            if crossing:
                dump_at = float(t_hi[crossing[0]])
                ring.dump(at_s=dump_at, duration_s=self.dump_s)
                self.dump_s = 0.0
        keep = channels < self.nuse
        lo, hi, t_lo, t_hi, channels = lo[keep], hi[keep], t_lo[keep], t_hi[keep], channels[keep]
        counts = np.zeros((len(MCS_INPUTS), 0))
        if lo.size:
            readback = subsamples(lo, hi - lo)
            times = t0 + time_at_distance(readback - start, dist, speed, accel_s)
            encoder = np.round(hi / ENCODER_EV_PER_COUNT) - np.round(lo / ENCODER_EV_PER_COUNT)
            counts = _draw(mono, chambers, ring, readback, times, t_lo, t_hi, encoder)
        return MovePlan(channels, counts, int(sum(advance)), dump_at)

    def apply(self, plan: MovePlan) -> None:
        """Add a move's counts (once it has happened) and advance the channel."""
        np.add.at(self.counts.T, plan.channels, plan.counts.T)
        self.channel += plan.advances

    def internal_counts(self, mono, chambers, ring, dwell_s: float) -> tuple[float, float | None] | None:
        """Count all channels of ``dwell_s`` s at the monochromator's position from ``t0`` (Internal advance);
        an armed dump is scheduled half-way. Returns (the acquisition's beamtime s, the dump's beamtime or None);
        None: no positive dwell (the acquisition would not end)."""
        if not (math.isfinite(dwell_s) and dwell_s > 0):
            return None
        k, total, dump_at = self.nuse, self.nuse * dwell_s, None
        if self.dump_s > 0:
            dump_at = self.t0 + total / 2
            ring.dump(at_s=dump_at, duration_s=self.dump_s)
            self.dump_s = 0.0
        edges = self.t0 + dwell_s * np.arange(k + 1)
        readback = subsamples(np.full(k, float(mono.position)), 0.0)
        times = edges[:-1, None] + dwell_s * ((np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES)[None, :]
        self.counts = _draw(mono, chambers, ring, readback, times, edges[:-1], edges[1:], np.zeros(k))
        self.channel = k
        return total, dump_at

    def padded(self, n: int) -> list[np.ndarray]:
        """Each input's counts as an integer array of ``MaxChannels`` (``N_MCS_CHANNELS``), zero past ``nuse``."""
        out = []
        for row in self.counts:
            a = np.zeros(N_MCS_CHANNELS, dtype=np.int64)
            a[:n] = row[:n]
            out.append(a)
        return out
