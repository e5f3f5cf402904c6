"""Beamline configuration files (``profiles/beamlines/<beamline>.toml``): PV names and presets.

One file per beamline. Every PV the session reads or writes is named here; the session writes only
to the PVs it drives (``WRITES``: the MCA, motor and scaler records and their fields, the magnet
and sample-temperature setpoints) and, in a file that declares itself ``simulated = true``, to the
``[faults]`` PVs of the simulated IOC (``BeamlineConfig.allows_write``; ``bayesbeam.epics_devices.WriteGate``
enforces it on every write). ``load_beamline`` checks the file against ``SCHEMA`` and reports every problem
at once, each naming the file, the section and the key. A file configures one or both end stations
(``END_STATIONS``): magnetic Compton (``[detector]`` + ``[magnet]``, optionally the sample temperature
controller ``[temperature]``) and XAS (``[mono]`` motor record + ``[ion_chambers]`` scaler record, optionally
the fly-scan scaler ``[fly]``: a multichannel scaler's SIS38XX PVs and the encoder's position-compare step).
``access_security`` and ``gateway_pvlist`` give the same rule as an EPICS access-security file and a
CA-gateway PV list, shipped next to the beamline file (what really stops a person typing ``caput`` in the
session is the IOC's access security or a gateway).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PV_NAME = re.compile(r"^[A-Za-z0-9_:\-\[\]<>;{}$()]+(\.[A-Z0-9]{1,4})?$")

# section -> key -> (type, required, is_pv, meaning). Sections marked optional below may be absent.
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool, bool, str]]] = {
    "epics": {
        "addr_list": (str, True, False, "EPICS_CA_ADDR_LIST used when the environment does not set one"),
        "connection_timeout_s": ((int, float), False, False, "how long to wait for every PV to connect (s)"),
        "timeout_floor_s": ((int, float), False, False, "absolute wall-clock floor of every device timeout (s): "
                                                        "a count or move times out after twice its expected "
                                                        "duration plus this (default 10)"),
    },
    "detector": {
        "name": (str, True, False, "device name (event keys start with it)"),
        "mca": (str, True, True, "MCA record (ophyd EpicsMCA prefix)"),
        "monitor": (str, True, True, "incident-beam monitor counts of the last spectrum"),
        "incident_energy_kev": ((int, float), True, False, "incident energy (keV)"),
        "scattering_angle_deg": ((int, float), True, False, "scattering angle (deg)"),
        "flipping_factor": ((int, float), True, False, "polarisation flipping factor"),
        "flipping_factor_rel_std": ((int, float), False, False, "relative std of κ from its reference calibration"),
        "sample_thickness_mm": ((int, float), False, False, "sample thickness (mm; 0: no self-absorption correction)"),
        "incidence_deg": ((int, float), False, False, "beam to sample surface (deg)"),
        "ge_thickness_mm": ((int, float), False, False, "Ge crystal thickness (mm; 0: no efficiency/escape fix)"),
        "cross_section": ((int, float), False, False, "1: correct the cross-sections' energy dependence, 0: not"),
        "ms_fraction": ((int, float), False, False, "multiple-scattering fraction of single scattering in the window"),
        "ms_fwhm_au": ((int, float), False, False, "FWHM of the multiple-scattering shape (a.u.)"),
        "ms_fraction_rel_std": ((int, float), False, False, "relative std of ms_fraction"),
        "ms_depolarisation": ((int, float), False, False, "fraction of the magnetic part lost in double scattering"),
        "background_cps_per_kev": ((int, float), False, False, "flat room background of the detector, all "
                                                               "elements (counts/s/keV of live time, beam off)"),
        "energy_offset_std_kev": ((int, float), False, False, "std of the MCA energy offset (keV): p_z calibration"),
        "incident_std_kev": ((int, float), False, False, "std of the incident energy E1 (keV): p_z calibration"),
        "resolution_const_kev2": ((int, float), False, False, "detector energy resolution FWHM² = c + f·E: c (keV²)"),
        "resolution_fano_kev": ((int, float), False, False, "detector energy resolution FWHM² = c + f·E: f (keV)"),
        "resolution_fwhm_au": ((int, float), False, False, "resolution FWHM at the Compton peak (a.u.)"),
        "resolution_rel_std": ((int, float), False, False, "relative std of the resolution"),
    },
    "magnet": {
        "name": (str, True, False, "device name"),
        "setpoint": (str, True, True, "field setpoint (T); put-callback completes when settled"),
        "readback": (str, True, True, "field readback (T)"),
        "max_field_t": ((int, float), True, False, "field limit (T)"),
        "flip_time_s": ((int, float), False, False, "longest field change (s of beamtime); the move timeout "
                                                    "derives from it (default 60)"),
    },
    "temperature": {
        "name": (str, True, False, "device name (plans find it by this name: sample_temp)"),
        "setpoint": (str, True, True, "sample temperature setpoint (K); put-callback completes when settled; "
                                      "its control limits are the controller's range"),
        "readback": (str, True, True, "sample temperature readback (K)"),
        "in_position": (str, False, True, "1 once the temperature has settled at the setpoint; a move that "
                                          "ends without it fails"),
        "ramp_rate": (str, False, True, "controller ramp rate (K/s); with settle_time, the move timeout "
                                        "derives from it"),
        "settle_time": (str, False, True, "settle time after the ramp (s of beamtime)"),
        "max_move_s": ((int, float), False, False, "longest temperature change (s of beamtime) when the file "
                                                   "names no ramp_rate and settle_time PVs (default 7200)"),
    },
    "mono": {
        "name": (str, True, False, "device name (the energy readback's event key)"),
        "motor": (str, True, True, "monochromator energy motor record, eV (ophyd EpicsMotor prefix)"),
    },
    "ion_chambers": {
        "scaler": (str, True, True, "scaler record of the ion chambers (ophyd EpicsScaler prefix)"),
        "i0_name": (str, True, False, "device name of the incident-beam chamber"),
        "i0_channel": (int, True, False, "scaler channel of I0 (1-32: the .S<n> field)"),
        "it_name": (str, True, False, "device name of the transmitted-beam chamber"),
        "it_channel": (int, True, False, "scaler channel of It (1-32)"),
    },
    "fly": {
        "name": (str, True, False, "device name of the fly-scan scaler (event keys start with it; plans find it "
                                   "by this name)"),
        "mcs": (str, True, True, "prefix of the multichannel scaler's SIS38XX PVs (EraseStart, StopAll, NuseAll, "
                                 "ChannelAdvance, Acquiring, CurrentChannel, mca<n> …)"),
        "pulse_step": (str, True, True, "the monochromator encoder's position-compare step (eV of encoder travel per "
                                        "channel-advance pulse of the MCS)"),
        "clock_channel": (int, True, False, "MCS input (1-32) of the internal reference clock"),
        "i0_channel": (int, True, False, "MCS input of I0"),
        "it_channel": (int, True, False, "MCS input of It"),
        "ring_channel": (int, True, False, "MCS input of the ring current's V/F converter"),
        "encoder_channel": (int, True, False, "MCS input of the monochromator encoder's counts"),
        "clock_hz": ((int, float), True, False, "reference clock frequency (Hz): gate time = ticks / clock_hz"),
        "ring_hz_per_ma": ((int, float), True, False, "ring current V/F gain (Hz per mA)"),
        "encoder_ev_per_count": ((int, float), True, False, "encoder resolution (eV per count)"),
        "max_speed_eV_s": ((int, float), False, False, "fastest sweep speed the plans may ask (eV/s, default 20)"),
    },
    "ring": {
        "name": (str, True, False, "device name"),
        "current": (str, True, True, "ring current (mA)"),
        "floor_ma": ((int, float), True, False, "suspend runs below this current (mA)"),
        "resume_ma": ((int, float), True, False, "resume once the current is back above this (mA)"),
        "resume_sleep_s": ((int, float), True, False, "… and has stayed there this long (s)"),
        "max_gap_s": ((int, float), False, False, "the ring PV's update period with slack (s, default 2): a count "
                                                  "over which it was silent longer proves no beam"),
    },
    "beamtime": {
        "name": (str, True, False, "device name"),
        "pv": (str, True, True, "elapsed beamtime (s)"),
        "time_scale": (str, False, True, "simulation only: beamtime seconds per wall second of the simulated "
                                         "IOC (its count and move times are beamtime)"),
    },
    "faults": {
        "beam_dump": (str, False, True, "simulation only: dump the beam now for N s"),
        "dump_mid_count": (str, False, True, "simulation only: dump half-way through the next count"),
        "magnet_stuck": (str, False, True, "simulation only: next N magnet moves get stuck"),
        "detector_nan": (str, False, True, "simulation only: next N spectra carry NaNs"),
        "detector_refuse": (str, False, True, "simulation only: next N MCA counts are acknowledged, not counted"),
        "detector_hang": (str, False, True, "simulation only: next N MCA counts never end until stopped"),
        "scaler_refuse": (str, False, True, "simulation only: next N scaler counts are acknowledged, not counted"),
        "scaler_hang": (str, False, True, "simulation only: next N scaler counts never end until stopped"),
        "magnet_hang": (str, False, True, "simulation only: next N magnet moves never report done"),
        "temperature_excursion": (str, False, True, "simulation only: from half-way through the next MCA count "
                                                    "the sample temperature is N K off, until 0 is put"),
        "temperature_stuck": (str, False, True, "simulation only: next N temperature moves complete without "
                                                "the heater moving"),
        "mcs_hang": (str, False, True, "simulation only: next N MCS acquisitions never report their end until "
                                       "StopAll"),
    },
}
OPTIONAL_SECTIONS = {"beamtime", "faults", "detector", "magnet", "temperature", "mono", "ion_chambers", "fly"}
# End stations: sections that come together; a beamline file has at least one of them.
END_STATIONS = {"magnetic Compton": ("detector", "magnet"), "XAS": ("mono", "ion_chambers")}
RECORDS = (("detector", "mca"), ("mono", "motor"), ("ion_chambers", "scaler"))
# What the session writes: these records (and their fields) and PVs; the [faults] PVs in a simulated file.
WRITES = (*RECORDS, ("magnet", "setpoint"), ("temperature", "setpoint"), ("fly", "mcs"), ("fly", "pulse_step"))
# The records of mca.db beside an MCA record (prefix + suffix) that ophyd's EpicsMCA writes.
MCA_DB_RECORDS = ("Start", "Stop", "Erase", "EraseStart", "CheckACQG", "ClientWait", "EnableWait", "Read",
                  "SetClientWait", "Status", "WhenAcqStops", "Why1", "Why2", "Why3", "Why4")
# The SIS38XX PVs (after the [fly] mcs prefix) the fly scaler writes, and those it reads besides its mca<n> records.
MCS_WRITES = ("EraseStart", "StopAll", "NuseAll", "ChannelAdvance", "Dwell")
MCS_READS = ("Acquiring", "CurrentChannel", "MaxChannels", "ElapsedReal")
FLY_CHANNELS = ("clock_channel", "i0_channel", "it_channel", "ring_channel", "encoder_channel")
SIMULATION_ONLY = (("faults", None), ("beamtime", "time_scale"))  # (section, key or None: the whole section)
TOP_LEVEL = {"name": str, "description": str, "simulated": bool}


class BeamlineConfigError(ValueError):
    """The beamline configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class BeamlineConfig:
    """A validated beamline configuration: ``data`` is the parsed TOML."""

    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.data["name"]

    def section(self, name: str) -> dict[str, Any] | None:
        return self.data.get(name)

    def pvs(self) -> dict[str, str]:
        """Every configured PV: ``"section.key"`` -> PV name."""
        return {f"{sec}.{key}": value for sec, keys in SCHEMA.items() for key, (_, _, is_pv, _) in keys.items()
                if is_pv and (value := self.data.get(sec, {}).get(key)) is not None}

    def records(self) -> list[str]:
        """The configured EPICS records (MCA, motor, scaler) whose fields the devices may write."""
        return [self.data[sec][key] for sec, key in RECORDS if sec in self.data]

    def has(self, end_station: str) -> bool:
        """Whether the file configures ``end_station`` (a key of ``END_STATIONS``)."""
        return all(sec in self.data for sec in END_STATIONS[end_station])

    def where(self, pv: str) -> str:
        """Where ``pv`` comes from in the file (``[section] key``), for messages."""
        best = max((k for k, v in self.pvs().items() if pv.startswith(v)), key=lambda k: len(self.pvs()[k]),
                   default=None)
        if best is None:
            return f"not in {self.path.name}"
        sec, key = best.split(".")
        return f"[{sec}] {key} in {self.path.name}"

    @property
    def simulated(self) -> bool:
        """Whether the file declares itself a simulated beamline (``simulated = true``): only then may it
        name fault PVs and a simulator's time scale."""
        return self.data.get("simulated", False) is True

    def written_pvs(self) -> dict[str, str]:
        """The configured PVs the session writes (``"section.key"`` -> PV): ``WRITES`` and, in a simulated
        file, the ``[faults]`` PVs. Records among them may also be written in their fields."""
        return {k: v for k, v in self.pvs().items()
                if tuple(k.split(".")) in WRITES or (k.startswith("faults.") and self.simulated)}

    def allows_write(self, pv: str) -> bool:
        """Whether the session may write ``pv``: a written PV of the file, a field (``REC.FIELD``) of a
        record the file names, or a record of the mca.db beside its MCA record. Read-only PVs of the
        file (readbacks, the ring current, the beamtime) and everything else are refused."""
        written = self.written_pvs()
        if pv in written.values():
            return True
        for sec, key in RECORDS:
            rec = self.data.get(sec, {}).get(key)
            if rec is None:
                continue
            if pv.startswith(rec + "."):
                return True
            if sec == "detector" and pv.startswith(rec) and pv[len(rec):] in MCA_DB_RECORDS:
                return True
        mcs = self.data.get("fly", {}).get("mcs")
        return mcs is not None and pv.startswith(mcs) and pv[len(mcs):] in MCS_WRITES

    def mcs_read_pvs(self) -> list[str]:
        """The PVs of the ``[fly]`` MCS the session reads (``MCS_READS`` and the configured inputs' mca records)."""
        fly = self.data.get("fly")
        if fly is None:
            return []
        return [fly["mcs"] + r for r in MCS_READS] + [f"{fly['mcs']}mca{fly[k]}" for k in FLY_CHANNELS]

    def timeout_floor_s(self) -> float:
        """The absolute wall-clock floor of every device timeout (s): ``$BAYESBEAM_TIMEOUT_FLOOR_S`` if
        set, else the file's ``[epics] timeout_floor_s``, else 10 s."""
        env = os.environ.get("BAYESBEAM_TIMEOUT_FLOOR_S")
        return float(env) if env else float(self.data["epics"].get("timeout_floor_s", 10.0))

    def timeout_s(self) -> float:
        """How long to wait for every PV to connect (s): ``$BAYESBEAM_CONNECTION_TIMEOUT_S`` if set
        (a loaded host, where a lost UDP search is retried only after seconds), else the file's."""
        env = os.environ.get("BAYESBEAM_CONNECTION_TIMEOUT_S")
        return float(env) if env else float(self.data["epics"].get("connection_timeout_s", 5.0))


def default_beamline_file() -> Path:
    """``$BAYESBEAM_BEAMLINE`` or the simulated BL08W file shipped in ``profiles/beamlines``."""
    if env := os.environ.get("BAYESBEAM_BEAMLINE"):
        return Path(env)
    return Path(__file__).resolve().parent.parent / "profiles" / "beamlines" / "sim_bl08w.toml"


def validate(data: dict[str, Any], where: str = "configuration") -> list[str]:
    """Every problem in ``data`` (empty if valid)."""
    problems = []
    for key, value in data.items():
        if key in SCHEMA:
            if not isinstance(value, dict):
                problems.append(f"{where}: [{key}] must be a table")
        elif key in TOP_LEVEL:
            if not isinstance(value, TOP_LEVEL[key]):
                problems.append(f"{where}: {key} must be a {'true/false' if TOP_LEVEL[key] is bool else 'string'}")
        else:
            problems.append(f"{where}: unknown section or key {key!r} (known: {sorted([*SCHEMA, *TOP_LEVEL])})")
    if "name" not in data:
        problems.append(f"{where}: missing top-level key 'name'")
    for sec, keys in SCHEMA.items():
        table = data.get(sec)
        if not isinstance(table, dict):
            if sec not in OPTIONAL_SECTIONS and table is None:
                problems.append(f"{where}: missing section [{sec}]")
            continue
        for key in table:
            if key not in keys:
                problems.append(f"{where}: [{sec}] unknown key {key!r} (known: {sorted(keys)})")
        for key, (typ, required, is_pv, meaning) in keys.items():
            if key not in table:
                if required:
                    problems.append(f"{where}: [{sec}] missing key {key!r} ({meaning})")
                continue
            value = table[key]
            if not isinstance(value, typ) or isinstance(value, bool):
                problems.append(f"{where}: [{sec}] {key} = {value!r} has the wrong type ({meaning})")
            elif is_pv and not PV_NAME.match(value):
                problems.append(f"{where}: [{sec}] {key} = {value!r} is not a valid PV name")
    present = {name: [sec in data for sec in secs] for name, secs in END_STATIONS.items()}
    for name, secs in END_STATIONS.items():
        if any(present[name]):
            problems += [f"{where}: missing section [{sec}] (the {name} end station needs "
                         + " and ".join(f"[{s}]" for s in secs) + ")" for sec in secs if sec not in data]
    if not any(any(v) for v in present.values()):
        problems.append(f"{where}: no end station: give " + ", or ".join(
            " and ".join(f"[{s}]" for s in secs) for secs in END_STATIONS.values()))
    if data.get("simulated", False) is not True:
        for sec, key in SIMULATION_ONLY:
            table = data.get(sec)
            if isinstance(table, dict) and (key is None or key in table):
                what = f"[{sec}]" if key is None else f"[{sec}] {key}"
                problems.append(f"{where}: {what} is accepted only in a beamline file that declares itself "
                                "simulated (simulated = true): a real beamline has no such PVs")
    temp = data.get("temperature")
    if isinstance(temp, dict):
        if not all(sec in data for sec in END_STATIONS["magnetic Compton"]):
            problems.append(f"{where}: [temperature] is the sample temperature of the magnetic Compton end station: "
                            "it needs [detector] and [magnet]")
        if ("ramp_rate" in temp) != ("settle_time" in temp):
            problems.append(f"{where}: [temperature] ramp_rate and settle_time come together (the move time is "
                            "settle + |ΔT|/ramp rate)")
        if isinstance(temp.get("max_move_s"), (int, float)) and not temp["max_move_s"] > 0:
            problems.append(f"{where}: [temperature] max_move_s must be > 0 s, got {temp['max_move_s']}")
    chambers = data.get("ion_chambers")
    if isinstance(chambers, dict):
        chans = [chambers.get(k) for k in ("i0_channel", "it_channel")]
        if all(isinstance(c, int) for c in chans):
            if not all(1 <= c <= 32 for c in chans) or chans[0] == chans[1]:
                problems.append(f"{where}: [ion_chambers] channels {chans} must be two different of 1-32")
    fly = data.get("fly")
    if isinstance(fly, dict):
        if not all(sec in data for sec in END_STATIONS["XAS"]):
            problems.append(f"{where}: [fly] is the XAS end station's fly-scan scaler: it needs [mono] and "
                            "[ion_chambers]")
        chans = [fly.get(k) for k in FLY_CHANNELS]
        if all(isinstance(c, int) for c in chans) and not (all(1 <= c <= 32 for c in chans)
                                                           and len(set(chans)) == len(chans)):
            problems.append(f"{where}: [fly] inputs {chans} must be different ones of 1-32")
    ring = data.get("ring")
    if isinstance(ring, dict) and isinstance(ring.get("max_gap_s"), (int, float)) and not ring["max_gap_s"] > 0:
        problems.append(f"{where}: [ring] max_gap_s must be > 0 s, got {ring['max_gap_s']}")
    if isinstance(ring, dict) and isinstance(ring.get("floor_ma"), (int, float)) \
            and isinstance(ring.get("resume_ma"), (int, float)) and ring["resume_ma"] < ring["floor_ma"]:
        problems.append(f"{where}: [ring] resume_ma {ring['resume_ma']} is below floor_ma {ring['floor_ma']}")
    return problems


def load_beamline(path: str | os.PathLike | None = None) -> BeamlineConfig:
    """Read and validate a beamline file; ``BeamlineConfigError`` lists every problem."""
    path = Path(path) if path is not None else default_beamline_file()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BeamlineConfigError(f"beamline configuration {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise BeamlineConfigError(f"{path}: not valid TOML ({exc})") from None
    problems = validate(data, str(path))
    if problems:
        raise BeamlineConfigError("invalid beamline configuration:\n  " + "\n  ".join(problems))
    return BeamlineConfig(path, data)


def _record_group(config: BeamlineConfig) -> list[tuple[str, str]]:
    """``(record or PV, where)`` the session writes, MCA records followed by their mca.db records."""
    out = []
    for key, pv in config.written_pvs().items():
        if key.startswith("faults."):
            continue
        sec, name = key.split(".")
        out.append((pv, f"[{sec}] {name}"))
        if key == "detector.mca":
            out += [(pv + r, f"mca.db beside [{sec}] {name}") for r in MCA_DB_RECORDS]
        if key == "fly.mcs":  # a prefix, not a record: its SIS38XX PVs
            out[-1:] = [(pv + r, f"SIS38XX after [{sec}] {name}") for r in MCS_WRITES]
    return out


def _read_group(config: BeamlineConfig) -> list[tuple[str, str]]:
    """``(PV, where)`` the session only reads: the file's read-only PVs and the MCS's read PVs."""
    rows = [(pv, f"[{k.split('.')[0]}] {k.split('.')[1]}") for k, pv in config.pvs().items()
            if k not in config.written_pvs() and not k.startswith("faults.")]
    return rows + [(pv, "SIS38XX after [fly] mcs") for pv in config.mcs_read_pvs()]


def access_security(config: BeamlineConfig) -> str:
    """The EPICS access-security file (ACF) for the IOCs serving ``config``'s records: everyone reads;
    only the bayesbeam session's account and host write the records it drives; nobody writes the
    read-only ones; fault records (a simulated IOC only) are read-only unless faults are enabled."""
    fname = config.path.name
    written = _record_group(config)
    readonly = _read_group(config)
    faults = [(pv, f"[faults] {k.split('.')[1]}") for k, pv in config.pvs().items() if k.startswith("faults.")]
    lines = [f"# EPICS access security (ACF) for beamline {config.name}: generated from {fname} by",
             "# bayesbeam.beamline_config.access_security (tests/test_device_integrity.py checks it is current).",
             "#",
             "# The bayesbeam session writes only the records of ASG BAYESBEAM_WRITE; every client may read. An IOC",
             f'# serving these records loads this file (asSetFilename("{config.path.with_suffix(".acf").name}") '
             "before iocInit) and",
             '# puts each record in its group with field(ASG, "<group>"); a record left out stays in DEFAULT,',
             "# read-only to clients. The same file is the access file of a CA gateway in front of the IOCs",
             f"# ({config.path.with_suffix('.pvlist').name}). This, not the session's own write gate, is what "
             "stops a person",
             "# typing caput in the session. Edit the UAG and HAG: the account and the host the session runs as/on.",
             "#", "# ASG BAYESBEAM_WRITE:"]
    lines += [f"#   {pv:<34} {where}" for pv, where in written]
    lines += ["#", "# ASG READONLY:"] + [f"#   {pv:<34} {where}" for pv, where in readonly]
    if faults:
        lines += ["#", "# ASG FAULTS (a simulated IOC only; it grants WRITE here only when started with faults "
                  "enabled):"]
        lines += [f"#   {pv:<34} {where}" for pv, where in faults]
    lines += ["#", "",
              "UAG(bayesbeam_users) { bayesbeam }",
              "HAG(bayesbeam_hosts) { localhost }",
              "",
              "ASG(DEFAULT) {", "    RULE(1, READ)", "}",
              "ASG(READONLY) {", "    RULE(1, READ)", "}",
              "ASG(BAYESBEAM_WRITE) {", "    RULE(1, READ)", "    RULE(1, WRITE, TRAPWRITE) {",
              "        UAG(bayesbeam_users)", "        HAG(bayesbeam_hosts)", "    }", "}"]
    if faults:
        lines += ["ASG(FAULTS) {", "    RULE(1, READ)", "}"]
    return "\n".join(lines) + "\n"


def gateway_pvlist(config: BeamlineConfig) -> str:
    """The CA-gateway PV list matching ``access_security``: each configured PV (and every field of a
    written record) in its access-security group; anything else is not served through the gateway."""
    acf = config.path.with_suffix(".acf").name
    lines = [f"# CA gateway PV list for beamline {config.name}: generated from {config.path.name} by",
             "# bayesbeam.beamline_config.gateway_pvlist. Run the gateway with -pvlist on this file and",
             f"# -access {acf}; a PV that no line allows is not served.",
             "EVALUATION ORDER ALLOW, DENY"]
    rows = [(pv, "BAYESBEAM_WRITE") for pv, _ in _record_group(config)]
    rows += [(pv, "READONLY") for pv, _ in _read_group(config)]
    rows += [(pv, "FAULTS") for k, pv in config.pvs().items() if k.startswith("faults.")]
    fields = r"(\..*)?"  # the PV itself or any of its fields
    lines += [f"{pv + fields:<40} ALLOW {group}" for pv, group in rows]
    return "\n".join(lines) + "\n"
