"""Beamline configuration files (``profiles/beamlines/<beamline>.toml``): PV names and presets.

One file per beamline. Every PV the session reads or writes is named here; the session writes
only to these PVs (and to the fields of the records they name). ``load_beamline`` checks the file
against ``SCHEMA`` and reports every problem at once, each naming the file, the section and the key.
A file configures one or both end stations (``END_STATIONS``): magnetic Compton (``[detector]`` +
``[magnet]``) and XAS (``[mono]`` motor record + ``[ion_chambers]`` scaler record).
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
    },
    "detector": {
        "name": (str, True, False, "device name (event keys start with it)"),
        "mca": (str, True, True, "MCA record (ophyd EpicsMCA prefix)"),
        "monitor": (str, True, True, "incident-beam monitor counts of the last spectrum"),
        "incident_energy_kev": ((int, float), True, False, "incident energy (keV)"),
        "scattering_angle_deg": ((int, float), True, False, "scattering angle (deg)"),
        "flipping_factor": ((int, float), True, False, "polarisation flipping factor"),
    },
    "magnet": {
        "name": (str, True, False, "device name"),
        "setpoint": (str, True, True, "field setpoint (T); put-callback completes when settled"),
        "readback": (str, True, True, "field readback (T)"),
        "max_field_t": ((int, float), True, False, "field limit (T)"),
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
    "ring": {
        "name": (str, True, False, "device name"),
        "current": (str, True, True, "ring current (mA)"),
        "floor_ma": ((int, float), True, False, "suspend runs below this current (mA)"),
        "resume_ma": ((int, float), True, False, "resume once the current is back above this (mA)"),
        "resume_sleep_s": ((int, float), True, False, "… and has stayed there this long (s)"),
    },
    "beamtime": {
        "name": (str, True, False, "device name"),
        "pv": (str, True, True, "elapsed beamtime (s)"),
    },
    "faults": {
        "beam_dump": (str, False, True, "simulation only: dump the beam now for N s"),
        "dump_mid_count": (str, False, True, "simulation only: dump half-way through the next count"),
        "magnet_stuck": (str, False, True, "simulation only: next N magnet moves get stuck"),
        "detector_nan": (str, False, True, "simulation only: next N spectra carry NaNs"),
    },
}
OPTIONAL_SECTIONS = {"beamtime", "faults", "detector", "magnet", "mono", "ion_chambers"}
# End stations: sections that come together; a beamline file has at least one of them.
END_STATIONS = {"magnetic Compton": ("detector", "magnet"), "XAS": ("mono", "ion_chambers")}
RECORDS = (("detector", "mca"), ("mono", "motor"), ("ion_chambers", "scaler"))
TOP_LEVEL = {"name": str, "description": str}


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
                problems.append(f"{where}: {key} must be a string")
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
    chambers = data.get("ion_chambers")
    if isinstance(chambers, dict):
        chans = [chambers.get(k) for k in ("i0_channel", "it_channel")]
        if all(isinstance(c, int) for c in chans):
            if not all(1 <= c <= 32 for c in chans) or chans[0] == chans[1]:
                problems.append(f"{where}: [ion_chambers] channels {chans} must be two different of 1-32")
    ring = data.get("ring")
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
