"""Reading and checking the magnetic-Compton preset files: every ``*.toml`` of the packaged folder
``presets/`` and of the user's folder (``$BAYESBEAM_PRESETS``, or the ``--presets DIR`` of the commands).

A file holds one or more sample tables (``[fe]`` …) with the keys of ``PRESET_KEYS``; a user table named
like a packaged one replaces it (``PresetOverride`` warning). A bad file is one ``PresetError`` line
naming the file, the sample table and the key.
"""

from __future__ import annotations

import math
import os
import tomllib
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from agent.compton.profiles import checked_element
from agent.core.words import suggestion

PRESETS_DIR = Path(__file__).with_name("presets")
PRESETS_ENV = "BAYESBEAM_PRESETS"

#: key → (required, what it is, with its unit): the schema of a sample table.
PRESET_KEYS: dict[str, tuple[bool, str]] = {
    "description": (False, "text"),
    "element": (True, "chemical symbol, text"),
    "orbitals": (True, 'list of orbital names, e.g. ["3d", "4s"]'),
    "amplitudes_mub": (True, "μB per orbital, a list as long as orbitals"),
    "pz_broadening": (True, "dimensionless s_k > 0 per orbital, a list as long as orbitals"),
    "diffuse_area_mub": (True, "μB, a number"),
    "diffuse_fwhm_au": (True, "a.u., a number > 0"),
    "band_terms": (False, "list of [amplitude μB, lobe position a.u. > 0, width FWHM a.u. > 0]"),
    "thickness_mm": (True, "sample thickness, mm, a number > 0"),
    "density_g_cm3": (False, "g/cm³, a number > 0 (default: xraylib ElementDensity)"),
}


class PresetError(ValueError):
    """A preset file or folder that cannot be used, in one line naming the file, the table and the key."""


class PresetOverride(UserWarning):
    """A user preset replaces the packaged preset of the same name."""


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def checked_table(path: Path, name: str, table: Any) -> dict[str, Any]:
    """The ``ComptonSample`` fields of table ``[name]`` of file ``path``, or ``PresetError``: every required
    key of ``PRESET_KEYS`` and no other, of its type, with one amplitude and one broadening per orbital
    and positive widths, thickness, density and broadenings."""

    def fail(problem: str):
        raise PresetError(f"preset file {path}, sample [{name}]: {problem}")

    if not isinstance(table, dict):
        fail(f"{name!r} is a value, not a sample table ([{name}] followed by its keys)")
    for key in table:
        if key not in PRESET_KEYS:
            fail(f"unknown key {key!r}; {suggestion(key, PRESET_KEYS, 'keys')}")
    for key, (required, what) in PRESET_KEYS.items():
        if required and key not in table:
            fail(f"missing key {key!r} ({what})")

    def number(key: str, positive: bool = False) -> float:
        x = table[key]
        if not _is_number(x) or (positive and not x > 0):
            fail(f"{key!r} must be a finite number{' > 0' if positive else ''} ({PRESET_KEYS[key][1]}), got {x!r}")
        return float(x)

    def text(key: str, x) -> str:
        if not isinstance(x, str) or not x.strip():
            fail(f"{key!r} must be non-empty text ({PRESET_KEYS[key][1]}), got {x!r}")
        return x

    orbitals = table["orbitals"]
    if not isinstance(orbitals, list) or not orbitals:
        fail(f"'orbitals' must be a non-empty list ({PRESET_KEYS['orbitals'][1]}), got {orbitals!r}")
    orbitals = tuple(text("orbitals", o) for o in orbitals)
    try:
        element = checked_element(text("element", table["element"]), orbitals)
    except ValueError as exc:
        fail(f"'element', 'orbitals': {exc}")

    def per_orbital(key: str, positive: bool = False) -> tuple[float, ...]:
        x = table[key]
        if not isinstance(x, list) or len(x) != len(orbitals):
            got = f"{len(x)} values" if isinstance(x, list) else repr(x)
            fail(f"{key!r} must have one value per orbital ({len(orbitals)}: {', '.join(orbitals)}), got {got}")
        if not all(_is_number(v) and (v > 0 or not positive) for v in x):
            fail(f"{key!r} must be finite numbers{' > 0' if positive else ''} ({PRESET_KEYS[key][1]}), got {x!r}")
        return tuple(map(float, x))

    bands = table.get("band_terms", [])
    if not isinstance(bands, list) or not all(
            isinstance(t, list) and len(t) == 3 and all(map(_is_number, t)) and t[1] > 0 and t[2] > 0 for t in bands):
        fail(f"'band_terms' must be a {PRESET_KEYS['band_terms'][1]}, got {bands!r}")
    return {
        "name": name.lower(), "description": text("description", table.get("description", name)),
        "element": element, "orbitals": orbitals, "amplitudes_mub": per_orbital("amplitudes_mub"),
        "pz_broadening": per_orbital("pz_broadening", positive=True),
        "diffuse_area_mub": number("diffuse_area_mub"), "diffuse_fwhm_au": number("diffuse_fwhm_au", True),
        "band_terms": tuple(tuple(map(float, t)) for t in bands),
        "thickness_mm": number("thickness_mm", True),
        "density_g_cm3": number("density_g_cm3", True) if "density_g_cm3" in table else None,
        "source": str(path),
    }


def preset_folders(user: str | os.PathLike | None = None) -> tuple[Path, ...]:
    """The packaged folder, then the user's: ``user``, else ``$BAYESBEAM_PRESETS`` (unset or empty: none);
    ``PresetError`` if the user's is not a directory."""
    given = user if user is not None else os.environ.get(PRESETS_ENV, "")
    if not str(given):
        return (PRESETS_DIR,)
    folder = Path(given).expanduser()
    if not folder.is_dir():
        origin = "" if user is not None else f" (${PRESETS_ENV})"
        raise PresetError(f"preset folder {folder}{origin} is not a directory")
    return (PRESETS_DIR, folder.resolve())


def _read_folder(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PresetError(f"preset file {path}: not valid TOML ({exc})") from None
        if not raw:
            raise PresetError(f"preset file {path}: no sample table ([name] followed by its keys)")
        for name, table in raw.items():
            if not isinstance(table, dict):
                raise PresetError(f"preset file {path}: key {name!r} is outside any sample table (a sample is "
                                  "[name] followed by its keys)")
            fields = checked_table(path, name, table)
            if fields["name"] in out:
                raise PresetError(f"preset file {path}, sample [{name}]: also defined in "
                                  f"{out[fields['name']]['source']} (one file per sample name in a folder)")
            out[fields["name"]] = fields
    return out


@lru_cache(maxsize=8)
def _read(stamp: tuple) -> dict[str, dict[str, Any]]:
    folders = stamp[0]
    out = _read_folder(folders[0])
    for folder in folders[1:]:
        for name, fields in _read_folder(folder).items():
            if name in out:
                warnings.warn(PresetOverride(f"sample preset {name!r}: {fields['source']} replaces "
                                             f"{out[name]['source']}"), stacklevel=2)
            out[name] = fields
    return out


def read_presets(user: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The ``ComptonSample`` fields of every preset, keyed by lower-case name, from ``preset_folders(user)``;
    read again only when a file was added, removed or changed."""
    folders = preset_folders(user)
    files = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for f in folders for p in sorted(f.glob("*.toml")))
    return _read((folders, files))
