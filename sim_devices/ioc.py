"""A caproto IOC serving the simulated beamline over EPICS Channel Access (DESIGN §5).

One process serves the magnetic-Compton end station and an XAS end station on one simulated clock
and one storage ring (so a beam dump hits both). The physics and faults are those of
``sim_devices`` (the IOC drives a ``make_compton_beamline`` and a ``make_xas_endstation`` behind
the PVs); the PVs are the record fields real beamlines use, and they answer bad values as the real
records do (below). Beamtime passes at ``time_scale`` × wall time while the IOC runs. Every socket
is on 127.0.0.1 (the IOC is a CA server only: no CA client context, whose UDP socket would bind
0.0.0.0). PVs, after ``prefix`` (default ``SIM08W:``):

- ``RING:Current`` ring current (mA), read-only, posted every ``tick_s``; ``CLOCK:Beamtime`` (s);
  ``CLOCK:TimeScale`` (beamtime s per wall s), read-only
- ``MAG:FieldSP`` / ``MAG:FieldRB`` magnet field setpoint / readback (T); a put completes when the
  magnet has settled (put-callback), as a power supply with a done flag does
- ``GE:mca1.<FIELD>`` an MCA record: ``VAL`` (spectrum, counts), ``PRTM``/``PLTM`` (preset real/live
  time, s), ``ERTM``/``ELTM`` (the count's elapsed real time and the detector's live time, s),
  ``CALO``/``CALS``/``CALQ`` (calibration, keV), ``NUSE``, ``ACQG``, ``NACK``, ``MODE``, ``BG``, ``STOP``; and the
  mca.db extras ``GE:mca1EraseStart`` … that ophyd's ``EpicsMCA`` connects. A put to ``EraseStart`` completes when the
  count is done. As on the record (mcaRecord.c passes PRTM to device support unchecked; PRTM = 0 "instructs
  the hardware to ignore it", and drivers test ``preset > 0``), a PRTM <= 0 is accepted as written and the
  count then has no preset: it runs until ``STOP``/``Stop``.
- ``MON:Counts`` incident-beam monitor counts of the last spectrum
- ``TEMP:SP`` / ``TEMP:RB`` sample temperature controller setpoint / readback (K; ``sim_devices.compton.temperature``:
  a change of ΔT takes ``TEMP:SettleTime`` + |ΔT|/``TEMP:RampRate`` s of beamtime, a put completes when it
  has settled (put-callback); the setpoint's control limits are the controller's range, 10-1200 K, and caproto
  refuses a put outside them); ``TEMP:InPosition`` 1 once settled within ``IN_POSITION_K`` of the setpoint
  (0 while ramping, settling or off it); ``TEMP:RampRate`` (K/s), ``TEMP:SettleTime`` (s), read-only. The
  readback and the flag are computed afresh on every read and posted every ``tick_s``. For Fe the sample's
  spin moment, and so the magnetic signal the MCA counts, follows μs(T, B) of the true temperature over each
  count (``sim_devices.compton.magnetisation``), as in the ophyd simulation; a sample without that model has
  the controller, but its counts do not follow it (the ready line says so)
- ``XAS:scaler1.<FIELD>`` a scaler record: ``CNT`` (put 1: count ``TP`` seconds; the put completes
  when done; a put while counting joins that count, as on the record; put 0: abort), ``S1`` clock ticks
  (``FREQ`` Hz), ``S2`` I0, ``S3`` It (counts: Poisson from the sample's μ(E), the ring current over the
  count), ``T`` (the count's elapsed time, s), ``NM1``…, ``PR1``…, ``G1``…, ``CONT``, ``DLY``, ``TP1``,
  ``RATE``, ``EGU``. As on the record (scalerRecord.c: ``PR1 = (epicsUInt32)(TP * FREQ)``, no check), a
  TP <= 0 is accepted as written and gives no usable time preset: the count runs until CNT = 0.
- ``DCM:Energy`` a motor record (caproto's ``MotorFields``): the monochromator energy (eV). A put to
  ``.VAL`` moves in |ΔE|/``.VELO`` + ``.ACCL`` seconds of beamtime (linear ramps of ``.ACCL`` s from rest to
  ``.VELO`` and back: a new ``.VELO`` applies from the next move, which starts and ends at rest; a move too short
  to reach the speed takes 2·√(|ΔE|·ACCL/VELO)), then the ``.DLY`` settle (s), with ``.DMOV``
  0 → 1 and ``.MOVN`` 1 → 0 around it; the put completes when the move is done; ``.RBV``/``.DRBV``
  readback, ``.MSTA`` status bits; ``.HLM``/
  ``.LLM`` soft limits (eV, also the ``.VAL`` control limits ophyd checks). As motorRecord.cc does_work()
  does, a put outside them is accepted: ``.LVIO`` = 1, ``.VAL`` keeps the previous target, nothing moves,
  ``.DMOV`` blinks 0 → 1 and the put completes (no alarm: ``.HLSV`` is NO_ALARM by default). ``.STOP``
  is accepted (a move is short and completes).
- ``DCM:PSO:Step`` the monochromator encoder's position-compare output (eV): one channel-advance pulse to the
  MCS per this much encoder travel, from where the encoder was at the MCS's ``EraseStart``; it also gates the
  MCS on while the monochromator moves up
- ``XAS:mcs1:…`` a Struck SIS3820 multichannel scaler with the PVs of synApps' ``SIS38XX`` database
  (``sim_devices.xas.mcs``): ``EraseStart`` (put 1: erase and start; completes once acquiring), ``StopAll``
  (put 1), ``Acquiring`` (1 while acquiring), ``NuseAll`` (channels, 1-``MaxChannels`` = 2048),
  ``ChannelAdvance`` (``Internal``: ``Dwell`` s per channel at the standing monochromator; ``External``: one channel
  per ``DCM:PSO:Step`` of encoder travel, counted only while the monochromator moves up, so the ramps are in the
  gate times and the stops between moves are not), ``CurrentChannel``, ``ElapsedReal`` (s), and the inputs'
  mca records ``mca1`` … ``mca5`` (``.VAL`` counts per channel, ``.NUSE``, ``.NORD`` channels acquired): 1 the
  50 MHz clock (gate time = ticks / 5e7 s), 2 I0, 3 It (Poisson, the sample's μ(E) at the photons' energy: the
  monochromator's calibration offset, drift and lash), 4 the ring current's V/F converter (2000 Hz per mA), 5 the
  encoder (1 count per meV). The acquisition ends once ``NuseAll`` channels are filled or at ``StopAll``
- ``STAT:Counts`` / ``STAT:ScalerCounts`` / ``STAT:MonoMoves`` spectra, scaler counts, monochromator moves
  since start; ``STAT:MonoMoveSpeeds`` the ``.VELO`` (eV/s) of each of the last 256 moves, oldest first
  (read-only diagnostics)
- faults, writable only when the IOC was started with ``faults=True`` (``bayesbeam ioc --faults``),
  read-only otherwise (as an access-security group would make them): ``FAULT:BeamDump`` (put s: the
  beam is dumped now for that long), ``FAULT:DumpMidCount`` (put s: dumped half-way through the next
  count of either end station, for an MCS acquisition when its channel advance reaches the middle channel;
  the ring current PV is posted at the moment of the dump, so a run's suspender sees it while the count is
  still going), ``FAULT:McsHang`` (put n: the next n MCS acquisitions never report their end, until
  ``StopAll``), ``FAULT:MagnetStuck`` (put n: the next n moves do
  not reach the field), ``FAULT:MagnetHang`` (put n: the next n setpoint puts never complete; a later
  put abandons them), ``FAULT:DetectorNaN`` (put n: the next n spectra carry NaNs),
  ``FAULT:DetectorRefuse`` / ``FAULT:ScalerRefuse`` (put n: the next n counts are acknowledged at once
  and nothing is counted, as when device support refuses to start: the record keeps the previous
  count's fields; the MCA sets ``NACK``), ``FAULT:DetectorHang`` / ``FAULT:ScalerHang`` (put n: the next
  n counts never end until stopped), ``FAULT:TempExcursion`` (put ΔK: from half-way through the next MCA count
  the sample temperature is ΔK off, a tripped heater, until 0 is put; a put ends any excursion in progress),
  ``FAULT:TempStuck`` (put n: the next n temperature moves complete without the heater moving)
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from pathlib import Path

from caproto import AccessRights, ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty
from caproto.server.server import PvpropertyDouble

from sim_devices.compton.beamline import make_compton_beamline
from sim_devices.compton.magnetisation import magnetisation_model
from sim_devices.compton.samples import compton_sample
from sim_devices.compton.temperature import SimTemperature
from sim_devices.xas.endstation import make_xas_endstation
from sim_devices.xas.mcs import MCSAcquisition, MCSRecords

N_CHANNELS = 1024
N_SCALER = 32
SCALER_FREQ_HZ = 1e7
MSTA_DONE, MSTA_MOVING = 0x2, 0x400  # motor record status bits
IN_POSITION_K = 1.0  # TEMP:InPosition window around the setpoint (K)
N_SPEEDS = 256  # STAT:MonoMoveSpeeds keeps the speeds of this many last moves
_LIMIT_PUTS = asyncio.Lock()  # the soft-limit putters, one at a time (see the mono limit putters)


async def _wait(status, poll_s: float = 0.002) -> None:
    """Await an ophyd status from the simulated clock; re-raise its failure."""
    while not status.done:
        await asyncio.sleep(poll_s)
    if status.exception() is not None:
        raise status.exception()


class MCARecord(PVGroup):
    """The fields of a synApps MCA record and of mca.db that ``ophyd.EpicsMCA`` uses."""

    val = pvproperty(name=".VAL", value=[0.0] * N_CHANNELS, dtype=float, max_length=N_CHANNELS, read_only=True,
                     doc="spectrum (counts)")
    bg = pvproperty(name=".BG", value=[0.0] * N_CHANNELS, dtype=float, max_length=N_CHANNELS, read_only=True)
    prtm = pvproperty(name=".PRTM", value=60.0, doc="preset real time (s)")
    pltm = pvproperty(name=".PLTM", value=0.0, doc="preset live time (s)")
    ertm = pvproperty(name=".ERTM", value=0.0, read_only=True, doc="elapsed real time (s)")
    eltm = pvproperty(name=".ELTM", value=0.0, read_only=True, doc="elapsed live time (s)")
    calo = pvproperty(name=".CALO", value=86.0, doc="calibration offset (keV)")
    cals = pvproperty(name=".CALS", value=0.036, doc="calibration slope (keV/channel)")
    calq = pvproperty(name=".CALQ", value=0.0, doc="calibration quadratic term (keV/channel²)")
    nuse = pvproperty(name=".NUSE", value=N_CHANNELS, read_only=True)
    acqg = pvproperty(name=".ACQG", value=0, read_only=True, doc="1 while acquiring")
    nack = pvproperty(name=".NACK", value=0, read_only=True, doc="1: device support refused the last command")
    mode = pvproperty(name=".MODE", value="PHA", dtype=ChannelType.ENUM, enum_strings=["PHA", "MCS", "List"])
    rec_stop = pvproperty(name=".STOP", value=0)
    erase_start = pvproperty(name="EraseStart", value=0, doc="put 1: erase and count PRTM seconds")
    start_pv = pvproperty(name="Start", value=0)
    stop_pv = pvproperty(name="Stop", value=0)
    erase = pvproperty(name="Erase", value=0)
    check_acqg = pvproperty(name="CheckACQG", value=0)
    client_wait = pvproperty(name="ClientWait", value=0)
    enable_wait = pvproperty(name="EnableWait", value=0)
    force_read = pvproperty(name="Read", value=0)
    set_client_wait = pvproperty(name="SetClientWait", value=0)
    status_pv = pvproperty(name="Status", value=0)
    when_acq_stops = pvproperty(name="WhenAcqStops", value=0)
    why1 = pvproperty(name="Why1", value=0)
    why2 = pvproperty(name="Why2", value=0)
    why3 = pvproperty(name="Why3", value=0)
    why4 = pvproperty(name="Why4", value=0)

    @erase_start.putter
    async def erase_start(self, instance, value):
        if value:
            await self.parent.count()
        return 0

    @start_pv.putter
    async def start_pv(self, instance, value):
        if value:
            await self.parent.count()
        return 0

    @rec_stop.putter
    async def rec_stop(self, instance, value):
        if value:
            self.parent.stop_count()
        return 0

    @stop_pv.putter
    async def stop_pv(self, instance, value):
        if value:
            self.parent.stop_count()
        return 0


def _scaler_channels() -> dict:
    """``.S<n>`` (counts), ``.NM<n>``, ``.PR<n>``, ``.G<n>`` for the 32 channels of a scaler record."""
    names = {1: "clock", 2: "I0", 3: "It"}
    ns = {}
    for n in range(1, N_SCALER + 1):
        ns[f"s{n}"] = pvproperty(name=f".S{n}", value=0.0, read_only=True, doc=f"channel {n} counts")
        ns[f"nm{n}"] = pvproperty(name=f".NM{n}", value=names.get(n, ""), dtype=ChannelType.STRING)
        ns[f"pr{n}"] = pvproperty(name=f".PR{n}", value=0)
        ns[f"g{n}"] = pvproperty(name=f".G{n}", value="N", dtype=ChannelType.ENUM, enum_strings=["N", "Y"])
    return ns


ScalerChannels = type(PVGroup)("ScalerChannels", (PVGroup,), _scaler_channels())


class ScalerRecord(PVGroup):
    """The fields of a synApps scaler record that ``ophyd.EpicsScaler`` uses."""

    cnt = pvproperty(name=".CNT", value=0, doc="put 1: count TP seconds; completes when done; put 0: abort")
    cont = pvproperty(name=".CONT", value="OneShot", dtype=ChannelType.ENUM, enum_strings=["OneShot", "AutoCount"])
    dly = pvproperty(name=".DLY", value=0.0, doc="delay before counting (s)")
    dly1 = pvproperty(name=".DLY1", value=0.0)
    t = pvproperty(name=".T", value=0.0, read_only=True, doc="elapsed time of the last count (s)")
    freq = pvproperty(name=".FREQ", value=SCALER_FREQ_HZ, doc="clock frequency (Hz)")
    tp = pvproperty(name=".TP", value=1.0, doc="preset time (s)")
    tp1 = pvproperty(name=".TP1", value=1.0)
    rate = pvproperty(name=".RATE", value=10.0)
    rat1 = pvproperty(name=".RAT1", value=10.0)
    egu = pvproperty(name=".EGU", value="sec", dtype=ChannelType.STRING)
    ch = SubGroup(ScalerChannels, prefix="")

    @cnt.putter
    async def cnt(self, instance, value):
        if value:
            await self.parent.scaler_count()
        else:
            self.parent.stop_scaler()
        return 0


class MotorValData(PvpropertyDouble):
    """``.VAL`` of a motor record: it reports the soft limits as its control limits (clients such as
    ophyd check them), but a put outside them reaches the record, which answers with ``.LVIO`` rather
    than a Channel Access error (caproto would refuse it at the control limits)."""

    async def verify_value(self, value):
        return await self.putter(self, value) if self.putter is not None else value


class ComptonBeamlineIOC(PVGroup):
    """The simulated BL08W-style beamline behind Channel Access (see module docstring)."""

    ring_current = pvproperty(name="RING:Current", value=0.0, read_only=True, precision=3, units="mA")
    beamtime = pvproperty(name="CLOCK:Beamtime", value=0.0, read_only=True, precision=1, units="s")
    time_scale = pvproperty(name="CLOCK:TimeScale", value=1.0, read_only=True, doc="beamtime s per wall s")
    field_sp = pvproperty(name="MAG:FieldSP", value=0.0, precision=4, units="T")
    field_rb = pvproperty(name="MAG:FieldRB", value=0.0, read_only=True, precision=4, units="T")
    monitor = pvproperty(name="MON:Counts", value=0.0, read_only=True, units="counts")
    temp_sp = pvproperty(name="TEMP:SP", value=295.0, precision=3, units="K",
                         doc="sample temperature setpoint (K); completes when settled")
    temp_rb = pvproperty(name="TEMP:RB", value=295.0, read_only=True, precision=3, units="K")
    temp_in_position = pvproperty(name="TEMP:InPosition", value=1, read_only=True,
                                  doc="1: settled within IN_POSITION_K of the setpoint")
    temp_ramp = pvproperty(name="TEMP:RampRate", value=0.2, read_only=True, precision=3, units="K/s")
    temp_settle = pvproperty(name="TEMP:SettleTime", value=180.0, read_only=True, precision=1, units="s")
    mca = SubGroup(MCARecord, prefix="GE:mca1")
    fault_dump = pvproperty(name="FAULT:BeamDump", value=0.0, units="s")
    fault_dump_mid = pvproperty(name="FAULT:DumpMidCount", value=0.0, units="s")
    fault_stuck = pvproperty(name="FAULT:MagnetStuck", value=0)
    fault_nan = pvproperty(name="FAULT:DetectorNaN", value=0)
    fault_detector_refuse = pvproperty(name="FAULT:DetectorRefuse", value=0)
    fault_detector_hang = pvproperty(name="FAULT:DetectorHang", value=0)
    fault_scaler_refuse = pvproperty(name="FAULT:ScalerRefuse", value=0)
    fault_scaler_hang = pvproperty(name="FAULT:ScalerHang", value=0)
    fault_magnet_hang = pvproperty(name="FAULT:MagnetHang", value=0)
    fault_temp_excursion = pvproperty(name="FAULT:TempExcursion", value=0.0, units="K")
    fault_temp_stuck = pvproperty(name="FAULT:TempStuck", value=0)
    n_counts = pvproperty(name="STAT:Counts", value=0, read_only=True)
    mono = pvproperty(name="DCM:Energy", value=7000.0, record="motor", precision=3, units="eV", dtype=MotorValData,
                      doc="monochromator energy (eV)")
    scaler = SubGroup(ScalerRecord, prefix="XAS:scaler1")
    n_scaler_counts = pvproperty(name="STAT:ScalerCounts", value=0, read_only=True)
    n_mono_moves = pvproperty(name="STAT:MonoMoves", value=0, read_only=True)
    mono_speeds = pvproperty(name="STAT:MonoMoveSpeeds", value=[0.0], max_length=N_SPEEDS, read_only=True,
                             doc="the .VELO (eV/s) of each of the last moves, oldest first")
    mcs = SubGroup(MCSRecords, prefix="XAS:mcs1:")
    pso_step = pvproperty(name="DCM:PSO:Step", value=0.1, precision=4, units="eV",
                          doc="position compare: one channel-advance pulse per this much encoder travel (eV)")
    fault_mcs_hang = pvproperty(name="FAULT:McsHang", value=0)

    def __init__(self, *args, sample: str = "fe", xas_sample: str = "Fe3O4", time_scale: float = 1e3,
                 seed: int | None = None, tick_s: float = 0.02, faults: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults_enabled = bool(faults)
        if not self.faults_enabled:  # the fault PVs are read-only, as in an access-security group FAULTS
            for attr in dir(type(self)):
                if attr.startswith("fault_"):
                    getattr(self, attr).check_access = lambda host, user: AccessRights.READ
        try:  # the sample's moment follows the controller's temperature where it has a μs(T, B) model
            magnetisation_model(compton_sample(sample).element)
            coupled = True
        except ValueError:
            coupled = False
        self.bl = make_compton_beamline(sample, time_scale=time_scale, seed=seed, with_temperature=coupled)
        self.temp = self.bl.sample_temp or SimTemperature(name="sample_temp", clock=self.bl.clock,
                                                          seed=None if seed is None else seed + 2)
        self.temp_coupled = coupled
        self._temp_move_end = self.bl.clock.now  # beamtime (s) at which the last temperature move settles
        self._temp_excursion: float | None = None  # ΔK armed for the next count (FAULT:TempExcursion)
        self.xas = make_xas_endstation(xas_sample, self.bl.clock, ring=self.bl.ring,
                                       seed=None if seed is None else seed + 1)
        self.tick_s = float(tick_s)
        self._count_lock = asyncio.Lock()
        self._scaler_done: asyncio.Event | None = None
        self._scaler_stop: asyncio.Event | None = None
        self._mca_stop: asyncio.Event | None = None
        self._magnet_abandon: asyncio.Event | None = None
        self._mcs_run: MCSAcquisition | None = None  # the MCS acquisition in progress
        self._speeds: list[float] = []
        self._tasks: set[asyncio.Task] = set()
        self._wall0 = time.monotonic()

    def _advance_clock(self) -> None:
        """Let beamtime pass with wall time (s × time_scale)."""
        target = (time.monotonic() - self._wall0) * self.bl.clock.time_scale
        if target > self.bl.clock.now:
            self.bl.clock.idle(target - self.bl.clock.now)

    @time_scale.startup
    async def time_scale(self, instance, async_lib):
        await instance.write(self.bl.clock.time_scale)

    @ring_current.startup
    async def ring_current(self, instance, async_lib):
        while True:
            self._advance_clock()
            await instance.write(float(self.bl.ring.current_at(self.bl.clock.now)))
            await self.beamtime.write(self.bl.clock.now)
            await self._post_temperature()
            await async_lib.library.sleep(self.tick_s)

    def _temperature_now(self) -> tuple[float, int]:
        """The controller's readback (K) now and its in-position flag (1: the last move has settled and
        the readback is within ``IN_POSITION_K`` of the setpoint)."""
        self._advance_clock()
        reading = float(self.temp.readback.get())
        settled = self.bl.clock.now >= self._temp_move_end
        return reading, int(settled and abs(reading - float(self.temp.setpoint.get())) <= IN_POSITION_K)

    async def _post_temperature(self) -> None:
        reading, in_position = self._temperature_now()
        await self.temp_rb.write(reading)
        await self.temp_in_position.write(in_position)

    @temp_rb.getter
    async def temp_rb(self, instance):
        return self._temperature_now()[0]  # a read is the sensor now, not the last tick's value

    @temp_in_position.getter
    async def temp_in_position(self, instance):
        return self._temperature_now()[1]

    @temp_sp.startup
    async def temp_sp(self, instance, async_lib):
        lo, hi = self.temp.limits
        await instance.write_metadata(lower_ctrl_limit=lo, upper_ctrl_limit=hi)
        await self.temp_ramp.write(float(self.temp.ramp_rate_k_s.get()))
        await self.temp_settle.write(float(self.temp.settle_time_s.get()))
        await instance.write(float(self.temp.setpoint.get()), verify_value=False)
        await self._post_temperature()

    @temp_sp.putter
    async def temp_sp(self, instance, value):
        """Move the sample temperature (caproto has refused a value outside the control limits); the put
        completes when the move has settled. ``FAULT:TempStuck``: the heater does not move."""
        self._advance_clock()
        if self.fault_temp_stuck.value > 0:
            self.temp.fail_next(1, mode="stuck")
            await self.fault_temp_stuck.write(self.fault_temp_stuck.value - 1)
        self._temp_move_end = self.bl.clock.now + self.temp.move_time(value)
        status = self.temp.set(value)
        await self._post_temperature()
        await _wait(status)
        await self._post_temperature()
        return value

    @fault_temp_excursion.putter
    async def fault_temp_excursion(self, instance, value):
        if not math.isfinite(value):
            raise ValueError(f"temperature excursion {value!r} K is not a number")
        self._advance_clock()
        self.temp.end_excursions()  # the heater is reset: an excursion in progress ends now
        self._temp_excursion = float(value) if value else None
        await self._post_temperature()
        return value

    async def _post_ring(self, at_s: float | None = None) -> None:
        """Post the ring current at beamtime ``at_s`` (s; default now) and the beamtime now, not
        waiting for the next tick."""
        self._advance_clock()
        at_s = self.bl.clock.now if at_s is None else at_s
        await self.ring_current.write(float(self.bl.ring.current_at(at_s)))
        await self.beamtime.write(self.bl.clock.now)

    async def _post_dump_during_count(self, t0: float, count_s: float, dump_s: float) -> None:
        """A dump half-way through a count of ``count_s`` s started at beamtime ``t0``: post the ring
        current when the beam goes and, if it is refilled before the count ends, when it is back, as
        the ring's monitor would (a dump shorter than the IOC's tick would otherwise never be seen)."""
        scale = self.bl.clock.time_scale
        await asyncio.sleep(count_s / 2 / scale)
        await self._post_ring(at_s=t0 + count_s / 2)
        if dump_s < count_s / 2:
            await asyncio.sleep(dump_s / scale)
            await self._post_ring(at_s=t0 + count_s / 2 + dump_s)
        await asyncio.sleep(self.tick_s)  # the count ends after the monitor's update

    @mono.startup
    async def mono(self, instance, async_lib):
        f, m = instance.field_inst, self.xas.mono
        lo, hi = m.limits
        await instance.write_metadata(lower_ctrl_limit=lo, upper_ctrl_limit=hi)
        for field, value in ((f.user_low_limit, lo), (f.user_high_limit, hi), (f.dial_low_limit, lo),
                             (f.dial_high_limit, hi), (f.velocity, m.speed_eV_s.get()),
                             (f.readback_settle_time, m.settle_time_s.get()), (f.engineering_units, "eV"),
                             (f.user_readback_value, m.position), (f.dial_readback_value, m.position),
                             (f.done_moving_to_value, 1), (f.motor_is_moving, 0), (f.motor_status, MSTA_DONE),
                             (f.limit_violation, 0), (f.retry_deadband, 0.01)):
            await field.write(value)
        await instance.write(m.position, verify_value=False)

    @mono.putter
    async def mono(self, instance, value):
        f, m = instance.field_inst, self.xas.mono
        lo, hi = f.user_low_limit.value, f.user_high_limit.value
        await f.done_moving_to_value.write(0)  # the record blinks DMOV on every put to .VAL
        if lo < hi and not lo <= value <= hi:  # motorRecord do_work(): LVIO, VAL restored, no motion, no error
            await f.limit_violation.write(1)
            await f.done_moving_to_value.write(1)
            return instance.value
        await f.limit_violation.write(0)
        m.low_limit_eV.put(float(lo))
        m.high_limit_eV.put(float(hi))
        speed, accel = float(f.velocity.value), float(f.seconds_to_velocity.value)
        m.speed_eV_s.put(speed)
        m.accel_s.put(max(accel, 0.0))
        m.settle_time_s.put(float(f.readback_settle_time.value))
        self._advance_clock()
        await f.direction_of_travel.write(int(value >= m.position))
        await f.motor_status.write(MSTA_MOVING)
        await f.motor_is_moving.write(1)
        run, plan = self._mcs_run, None
        if run is not None:  # the MCS counts the move's encoder bins (before m.set: from where it starts)
            plan = run.plan_move(m, (self.xas.i0, self.xas.it), self.bl.ring, m.position, float(value),
                                 self.bl.clock.now, speed, max(accel, 0.0))
            if plan is not None and plan.dump_at_s is not None:
                self._spawn(self._post_ring_at(plan.dump_at_s, plan.dump_at_s + run.dump_armed_s))
        try:
            await _wait(m.set(value))
            await self.n_mono_moves.write(self.n_mono_moves.value + 1)
            self._speeds = (self._speeds + [speed])[-N_SPEEDS:]
            await self.mono_speeds.write(self._speeds)
            if plan is not None and self._mcs_run is run:
                run.apply(plan)
                await self.mcs.current_channel.write(min(run.channel, run.nuse))
                if run.full and not run.hang:
                    await self._mcs_finish(run)
        finally:
            await f.user_readback_value.write(m.position)
            await f.dial_readback_value.write(m.position)
            await f.motor_is_moving.write(0)
            await f.motor_status.write(MSTA_DONE)
            await f.done_moving_to_value.write(1)
        return value

    @mono.fields.user_high_limit.putter
    async def mono(fields, instance, value):
        async with _LIMIT_PUTS:  # in order: a later put's control limit is never overwritten by an earlier one's
            await fields.parent.write_metadata(upper_ctrl_limit=value)
        return value

    @mono.fields.user_low_limit.putter
    async def mono(fields, instance, value):
        async with _LIMIT_PUTS:
            await fields.parent.write_metadata(lower_ctrl_limit=value)
        return value

    async def mcs_start(self) -> None:
        """``EraseStart``: erase the MCS arrays and start acquiring ``NuseAll`` channels (``sim_devices.xas.mcs``);
        consumes ``FAULT:McsHang`` (the acquisition never reports its end) and ``FAULT:DumpMidCount`` (the
        beam goes when the channel advance reaches the middle channel). A start while acquiring ends that
        acquisition first."""
        if self._mcs_run is not None:
            await self._mcs_finish(self._mcs_run)
        mcs, m = self.mcs, self.xas.mono
        self._advance_clock()
        hang, dump = False, float(self.fault_dump_mid.value)
        if self.fault_mcs_hang.value > 0:
            hang = True
            await self.fault_mcs_hang.write(self.fault_mcs_hang.value - 1)
        if dump > 0:
            await self.fault_dump_mid.write(0.0)
        run = MCSAcquisition(nuse=int(mcs.nuse_all.value), external=mcs.channel_advance.value == "External",
                             origin=m.position, step=float(self.pso_step.value), t0=self.bl.clock.now, hang=hang,
                             dump_s=max(dump, 0.0))
        for ch, counts in zip(mcs.channels, run.padded(0), strict=True):
            await ch.val.write(counts)
            await ch.nuse.write(run.nuse)
            await ch.nord.write(0)
        await mcs.current_channel.write(0)
        await mcs.acquiring.write(1)
        self._mcs_run = run
        if not run.external:
            self._spawn(self._mcs_internal(run))

    async def _mcs_internal(self, run: MCSAcquisition) -> None:
        """An Internal-advance acquisition: ``NuseAll`` × ``Dwell`` s of beamtime, then its end (none with no
        positive dwell or ``FAULT:McsHang``: until ``StopAll``)."""
        x = self.xas
        timed = run.internal_counts(x.mono, (x.i0, x.it), self.bl.ring, float(self.mcs.dwell.value))
        if timed is None:
            return
        total, dump_at = timed
        if dump_at is not None:
            self._spawn(self._post_ring_at(dump_at, dump_at + run.dump_armed_s))
        await _wait(self.bl.clock.action(total, obj=None, what="MCS acquisition"))
        if self._mcs_run is run and not run.hang:
            await self._mcs_finish(run)

    async def mcs_stop(self) -> None:
        """``StopAll``: end the acquisition in progress (the arrays keep what was counted)."""
        if self._mcs_run is not None:
            await self._mcs_finish(self._mcs_run)

    async def _mcs_finish(self, run: MCSAcquisition) -> None:
        """Post the arrays, ``NORD``, ``ElapsedReal``, then ``Acquiring`` = 0 (a client that sees the end reads
        the new arrays)."""
        if self._mcs_run is not run:
            return
        self._mcs_run = None
        self._advance_clock()
        n = min(run.channel, run.nuse)
        for ch, counts in zip(self.mcs.channels, run.padded(n), strict=True):
            await ch.val.write(counts)
            await ch.nord.write(n)
        await self.mcs.elapsed_real.write(self.bl.clock.now - run.t0)
        await self.mcs.current_channel.write(n)
        await self.mcs.acquiring.write(0)

    def _spawn(self, coro) -> None:
        """Run ``coro`` as a task of the IOC's loop, referenced until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_ring_at(self, *at_s: float) -> None:
        """Post the ring current at each beamtime of ``at_s`` (s) when it comes (a dump inside a sweep and
        the refill, as the ring's monitor would)."""
        for t in at_s:
            await asyncio.sleep(max(0.0, (t - self.bl.clock.now) / self.bl.clock.time_scale))
            await self._post_ring(at_s=t)

    async def scaler_count(self) -> None:
        """One scaler count of TP seconds of beamtime: S2 = I0, S3 = It. A count requested while
        one is running joins it (one gate for both chambers, as on a scaler record). TP <= 0 (no
        usable preset) or ``FAULT:ScalerHang``: the count runs until CNT = 0; ``FAULT:ScalerRefuse``:
        acknowledged at once, nothing counted."""
        if self._scaler_done is not None:
            await self._scaler_done.wait()
            return
        if self.fault_scaler_refuse.value > 0:
            await self.fault_scaler_refuse.write(self.fault_scaler_refuse.value - 1)
            return
        self._scaler_done = done = asyncio.Event()
        self._scaler_stop = asyncio.Event()
        sc, x, ring = self.scaler, self.xas, self.bl.ring
        try:
            self._advance_clock()
            dwell = float(sc.tp.value)
            hang = not (math.isfinite(dwell) and dwell > 0)
            if self.fault_scaler_hang.value > 0:
                hang = True
                await self.fault_scaler_hang.write(self.fault_scaler_hang.value - 1)
            if hang:  # no time preset: counts until stopped (CNT = 0)
                t0 = self.bl.clock.now
                await sc.t.write(0.0)
                await self._scaler_stop.wait()
                self._advance_clock()
                await sc.t.write(self.bl.clock.now - t0)
                return
            x.dwell.put(dwell)
            t0, dump = self.bl.clock.now, float(self.fault_dump_mid.value)
            if dump > 0:
                ring.dump(at_s=t0 + dwell / 2, duration_s=dump)
                await self.fault_dump_mid.write(0)
            statuses = [x.i0.trigger(), x.it.trigger()]
            if dump > 0:
                await self._post_dump_during_count(t0, dwell, dump)
            for st in statuses:
                await _wait(st)
            await sc.ch.s1.write(dwell * float(sc.freq.value))
            await sc.ch.s2.write(float(x.i0.counts.get()))
            await sc.ch.s3.write(float(x.it.counts.get()))
            await sc.t.write(float(x.i0.elapsed_s.get()))
            await self.n_scaler_counts.write(self.n_scaler_counts.value + 1)
        finally:
            self._scaler_done = self._scaler_stop = None
            done.set()

    def stop_scaler(self) -> None:
        """CNT = 0: abort the count in progress (if any)."""
        if self._scaler_stop is not None:
            self._scaler_stop.set()

    @field_sp.putter
    async def field_sp(self, instance, value):
        if self._magnet_abandon is not None:  # a new setpoint: the supply drops the request it never finished
            self._magnet_abandon.set()
            self._magnet_abandon = None
        if self.fault_magnet_hang.value > 0:  # the supply never reports ready for this setpoint
            await self.fault_magnet_hang.write(self.fault_magnet_hang.value - 1)
            self._magnet_abandon = abandoned = asyncio.Event()
            await abandoned.wait()
            return value
        if self.fault_stuck.value > 0:
            self.bl.magnet.fail_next(1, mode="stuck")
            await self.fault_stuck.write(self.fault_stuck.value - 1)
        await _wait(self.bl.magnet.set(value))
        await self.field_rb.write(float(self.bl.magnet.readback.get()))
        return value

    @fault_dump.putter
    async def fault_dump(self, instance, value):
        if value > 0:
            self.bl.ring.dump(at_s=self.bl.clock.now, duration_s=value)
        return value

    async def count(self) -> None:
        """One spectrum of PRTM seconds of beamtime (counts are serialised, as one MCA does). PRTM <= 0
        (no preset) or ``FAULT:DetectorHang``: acquires until ``STOP``; ``FAULT:DetectorRefuse``:
        acknowledged at once with ``NACK`` = 1, nothing counted, the fields keep the last count's values."""
        ge, mca = self.bl.ge, self.mca
        if self.fault_detector_refuse.value > 0:
            await self.fault_detector_refuse.write(self.fault_detector_refuse.value - 1)
            await mca.nack.write(1)
            return
        async with self._count_lock:
            self._advance_clock()
            preset = float(mca.prtm.value)
            hang = not (math.isfinite(preset) and preset > 0)
            if self.fault_detector_hang.value > 0:
                hang = True
                await self.fault_detector_hang.write(self.fault_detector_hang.value - 1)
            self._mca_stop = asyncio.Event()
            await mca.nack.write(0)
            await mca.ertm.write(0.0)  # the erase resets the elapsed times
            await mca.eltm.write(0.0)
            await mca.acqg.write(1)
            try:
                if hang:  # no preset: acquires until stopped
                    t0 = self.bl.clock.now
                    await self._mca_stop.wait()
                    self._advance_clock()
                    await mca.ertm.write(self.bl.clock.now - t0)
                    await mca.eltm.write(self.bl.clock.now - t0)
                    return
                ge.preset_time.put(preset)
                ge.calib_offset.put(float(mca.calo.value))
                ge.calib_slope.put(float(mca.cals.value))
                t0, dump = self.bl.clock.now, float(self.fault_dump_mid.value)
                if dump > 0:
                    self.bl.ring.dump(at_s=t0 + preset / 2, duration_s=dump)
                    await self.fault_dump_mid.write(0.0)
                if self._temp_excursion is not None:  # the heater trips half-way through this count
                    self.temp.excursion(at_s=t0 + preset / 2, duration_s=math.inf, delta_k=self._temp_excursion)
                    self._temp_excursion = None
                if self.fault_nan.value > 0:
                    ge.fail_next("nan")
                    await self.fault_nan.write(self.fault_nan.value - 1)
                status = ge.trigger()
                if dump > 0:
                    await self._post_dump_during_count(t0, preset, dump)
                await _wait(status)
                await mca.val.write(ge.spectrum.get())
                await mca.ertm.write(float(ge.elapsed_s.get()))
                await mca.eltm.write(float(ge.live_s.get()))  # the detector's live time (dead time)
                await self.monitor.write(float(ge.monitor.get()))
                await self.n_counts.write(self.n_counts.value + 1)
            finally:
                self._mca_stop = None
                await mca.acqg.write(0)

    def stop_count(self) -> None:
        """``STOP``/``Stop``: end the acquisition in progress if it has no preset (a counted spectrum
        of the simulation always runs its preset)."""
        if self._mca_stop is not None:
            self._mca_stop.set()


def loopback_environment(port: int) -> dict[str, str]:
    """The EPICS server environment that keeps the IOC on 127.0.0.1:``port`` (DESIGN §8)."""
    return {"EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_CA_SERVER_PORT": str(int(port)),
            "EPICS_CA_ADDR_LIST": f"127.0.0.1:{int(port)}", "EPICS_CA_AUTO_ADDR_LIST": "NO"}


def sockets_off_loopback(pid: int | str = "self") -> list[str]:
    """The local addresses of ``pid``'s IPv4/IPv6 sockets that are not on 127.0.0.1 (Linux ``/proc``;
    empty where it cannot tell)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    off = []
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[9] in inodes and not fields[1].startswith("0100007F:"):
                off.append(f"{proto} {fields[1]}")
    return off


def serve(port: int = 5064, prefix: str = "SIM08W:", sample: str = "fe", time_scale: float = 1e3,
          seed: int | None = None, xas_sample: str = "Fe3O4", faults: bool = False) -> None:
    """Run the IOC on 127.0.0.1:``port`` until interrupted; prints ``IOC ready`` once serving.
    ``faults``: the ``FAULT:*`` PVs are writable (otherwise read-only)."""
    from caproto.asyncio.server import run

    os.environ.update(loopback_environment(port))
    epics_ca = sys.modules.get("epics.ca")
    if epics_ca is not None and getattr(epics_ca, "libca", None) is not None:
        # The IOC is no CA client: a pyepics context (made when ophyd is imported with its pyepics layer)
        # holds a UDP socket on 0.0.0.0. `bayesbeam ioc` avoids making one; close one made anyway.
        epics_ca.finalize_libca()
    # No caRepeater listens on 127.0.0.1: beacons are refused, harmlessly (DESIGN §8).
    logging.getLogger("caproto.ctx").addFilter(lambda rec: "beacon" not in rec.getMessage())
    ioc = ComptonBeamlineIOC(prefix=prefix, sample=sample, xas_sample=xas_sample, time_scale=time_scale,
                             seed=seed, faults=faults)

    async def ready(async_lib):
        off = sockets_off_loopback()
        print(f"IOC ready: {len(ioc.pvdb)} PVs with prefix {prefix!r} on 127.0.0.1:{port} "
              f"(sample {sample}, XAS sample {xas_sample}, time scale {time_scale:g}; sample temperature "
              + ("TEMP:*, mu_s(T, B) follows it" if ioc.temp_coupled else
                 f"TEMP:*, but {sample} has no mu_s(T, B) model: its counts do not follow it") + "; fault PVs "
              + ("writable" if faults else "read-only: start with --faults to inject faults") + ")"
              + (f"; WARNING: sockets not on 127.0.0.1: {', '.join(off)}" if off else ""), flush=True)

    sys.stdout.flush()
    run(ioc.pvdb, interfaces=["127.0.0.1"], startup_hook=ready)
