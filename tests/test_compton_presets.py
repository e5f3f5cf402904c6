"""Magnetic-Compton sample presets as data: one file per sample, the user's own folder, and the one-line
messages of a bad file."""

import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from bayesbeam.cli import main
from sim_devices.compton.preset_files import PRESET_KEYS, PRESETS_DIR, PRESETS_ENV
from sim_devices.compton.samples import PresetError, PresetOverride, compton_presets, compton_sample

GD = """[gd]
description = "hcp Gd below its Curie temperature (a user's own preset)"
element = "Gd"
orbitals = ["4f", "6s"]
amplitudes_mub = [7.0, 0.5]
pz_broadening = [1.0, 1.0]
diffuse_area_mub = 0.0
diffuse_fwhm_au = 1.0
thickness_mm = 1.0
"""


NUMBERS = ("amplitudes_mub", "pz_broadening", "diffuse_area_mub", "diffuse_fwhm_au", "band_terms", "thickness_mm",
           "density_g_cm3")


@pytest.fixture()
def user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "my_presets"
    folder.mkdir()
    monkeypatch.setenv(PRESETS_ENV, str(folder))
    return folder


def test_every_packaged_file_is_one_sample_with_every_key_and_a_source_for_each_number():
    files = sorted(PRESETS_DIR.glob("*.toml"))
    assert [f.name for f in files] == ["co.toml", "fe.toml", "ni.toml"]
    for f in files:
        (name, table), = tomllib.loads(f.read_text()).items()
        assert f.stem == name and set(table) == set(PRESET_KEYS) - {"density_g_cm3"}  # the density is optional
        text = f.read_text()
        for key in PRESET_KEYS:  # the schema comment documents each key
            assert f"#   {key}" in text, (f.name, key)
        lines = text.splitlines()
        for i, line in enumerate(lines):  # each number's line, or the comment above it, says where it comes from
            if line.split("=")[0].strip() in NUMBERS:
                assert "#" in line or lines[i - 1].startswith("#"), (f.name, line)
    assert compton_sample("fe").source == str(PRESETS_DIR / "fe.toml")


def test_a_sample_in_the_users_folder_is_found(user_folder):
    (user_folder / "gd.toml").write_text(GD)
    gd = compton_sample("GD")
    assert gd.element == "Gd" and gd.orbitals == ("4f", "6s") and gd.spin_moment_mub == 7.5
    assert gd.source == str((user_folder / "gd.toml").resolve())
    assert sorted(compton_presets()) == ["co", "fe", "gd", "ni"]
    assert gd.density_g_cm3 is None  # xraylib's ElementDensity
    (user_folder / "gd.toml").write_text(GD + "density_g_cm3 = 7.9\n")  # an edited file is read again
    assert compton_sample("gd").density_g_cm3 == 7.9
    with pytest.raises(ValueError, match="unknown sample 'gdx'; did you mean gd"):
        compton_sample("gdx")


def test_a_user_preset_replaces_the_packaged_one_of_its_name_and_says_so(user_folder, monkeypatch):
    packaged = compton_sample("fe")
    text = (PRESETS_DIR / "fe.toml").read_text().replace("thickness_mm = 1.0", "thickness_mm = 0.5")
    (user_folder / "my_fe.toml").write_text(text)
    with pytest.warns(PresetOverride, match=r"sample preset 'fe': .*my_fe.toml replaces .*presets/fe.toml"):
        fe = compton_sample("fe")
    assert fe.thickness_mm == 0.5 and fe.amplitudes_mub == packaged.amplitudes_mub and fe is not packaged
    monkeypatch.setenv(PRESETS_ENV, "")
    assert compton_sample("fe") is packaged


def test_the_users_folder_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(PRESETS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(PresetError, match=rf"preset folder .*nowhere \(\${PRESETS_ENV}\) is not a directory"):
        compton_sample("fe")


def _with(text: str, key: str, line: str | None) -> str:
    """``text`` with the line of ``key`` replaced by ``line`` (None: removed, a new key: added)."""
    lines = [ln for ln in text.splitlines() if ln.split("=")[0].strip() != key]
    return "\n".join(lines + ([line] if line else [])) + "\n"


@pytest.mark.parametrize("key, line, problem", [
    ("thickness_mm", None, "missing key 'thickness_mm' (sample thickness, mm"),
    ("thickness", "thickness = 1.0", "unknown key 'thickness'; did you mean thickness_mm"),
    ("count_rate_cps", "count_rate_cps = 2e5", "unknown key 'count_rate_cps'"),  # derived by the instrument now
    ("resolution_fwhm_au", "resolution_fwhm_au = 0.44", "unknown key 'resolution_fwhm_au'"),  # the instrument's
    ("diffuse_fwhm_au", 'diffuse_fwhm_au = "1.0"', "'diffuse_fwhm_au' must be a finite number > 0 (a.u., "
                                                   "a number > 0), got '1.0'"),
    ("thickness_mm", "thickness_mm = 0.0", "'thickness_mm' must be a finite number > 0"),
    ("density_g_cm3", "density_g_cm3 = -2.0", "'density_g_cm3' must be a finite number > 0"),
    ("diffuse_area_mub", "diffuse_area_mub = true", "'diffuse_area_mub' must be a finite number (μB"),
    ("diffuse_area_mub", "diffuse_area_mub = nan", "'diffuse_area_mub' must be a finite number (μB"),
    ("amplitudes_mub", "amplitudes_mub = [7.0]", "'amplitudes_mub' must have one value per orbital (2: 4f, 6s), "
                                                 "got 1 values"),
    ("pz_broadening", "pz_broadening = [1.0, 0.0]", "'pz_broadening' must be finite numbers > 0"),
    ("orbitals", "orbitals = []", "'orbitals' must be a non-empty list"),
    ("orbitals", 'orbitals = ["4f", "7s"]', "'element', 'orbitals': unknown orbital '7s'"),
    ("element", 'element = "Xx"', "'element', 'orbitals': "),
    ("band_terms", "band_terms = [[0.01, -0.8, 0.5]]", "'band_terms' must be a list of [amplitude μB, lobe position"),
])
def test_a_bad_preset_is_one_line_naming_file_table_and_key(user_folder, key, line, problem):
    path = user_folder / "gd.toml"
    path.write_text(_with(GD, key, line))
    with pytest.raises(PresetError) as err:
        compton_sample("fe")  # any look-up reads every file: a bad one is never skipped silently
    message = str(err.value)
    assert message.startswith(f"preset file {path.resolve()}, sample [gd]: {problem}"), message
    assert "\n" not in message and isinstance(err.value, ValueError)


@pytest.mark.parametrize("text, problem", [
    ("[gd\nelement = 1", "not valid TOML"),
    ("", "no sample table"),
    ('element = "Gd"\n', "key 'element' is outside any sample table"),
])
def test_a_file_that_is_no_preset_says_what_it_is(user_folder, text, problem):
    (user_folder / "x.toml").write_text(text)
    with pytest.raises(PresetError, match=rf"^preset file .*x\.toml: {re.escape(problem)}"):
        compton_presets()


def test_two_files_of_one_folder_may_not_define_the_same_sample(user_folder):
    (user_folder / "a.toml").write_text(GD)
    (user_folder / "b.toml").write_text(GD.replace("[gd]", "[GD]"))
    with pytest.raises(PresetError, match=r"b\.toml, sample \[GD\]: also defined in .*a\.toml"):
        compton_presets()


def test_the_commands_take_a_presets_folder(tmp_path, monkeypatch):
    """``--presets DIR`` on ``rehearse compton`` and ``ioc``: its samples are found, a bad file is one Error line."""
    monkeypatch.setenv(PRESETS_ENV, "")  # the option sets it for the process: restored after the test
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "gd.toml").write_text(GD)
    result = CliRunner().invoke(main, ["rehearse", "compton", "--presets", str(folder), "--sample", "Gd",
                                       "--repeats", "1", "--max-cycles", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Planning: 1 simulated beamtime" in result.output
    monkeypatch.setenv(PRESETS_ENV, "")
    result = CliRunner().invoke(main, ["ioc", "--presets", str(folder), "--sample", "gdd"])
    assert result.exit_code == 2 and "unknown sample 'gdd'; did you mean gd?" in result.output, result.output
    (folder / "my_fe.toml").write_text((PRESETS_DIR / "fe.toml").read_text())  # replaces the packaged fe
    result = CliRunner().invoke(main, ["rehearse", "compton", "--presets", str(folder), "--sample", "fe",
                                       "--repeats", "1", "--max-cycles", "2", "--no-progress"])
    said = [ln for ln in result.output.splitlines() if "replaces" in ln]
    assert result.exit_code == 0 and len(said) == 1 and said[0].startswith("warning: sample preset 'fe': "), said
    assert "preset_files.py" not in result.output  # one line, not Python's path:line and source line
    (folder / "my_fe.toml").unlink()
    (folder / "gd.toml").write_text(_with(GD, "element", None))
    result = CliRunner().invoke(main, ["rehearse", "compton", "--presets", str(folder), "--sample", "fe"])
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output
    assert f"preset file {(folder / 'gd.toml').resolve()}, sample [gd]: missing key 'element'" in errors[0]


def test_the_packaged_values_are_those_of_the_single_file_they_were_split_from():
    """Splitting the presets into files changed no profile value (commit 93159f5's compton_samples.toml); the
    tuned count rates and the resolution left the samples (the instrument derives them, issue 12) and each sample
    got a thickness (1 mm, a choice) with xraylib's density."""
    fe, ni, co = (compton_sample(s) for s in ("fe", "ni", "co"))
    assert (fe.amplitudes_mub, fe.diffuse_area_mub, fe.band_terms) == (
        (2.38, -0.12), -0.06, ((-0.085, 0.8, 0.5), (0.055, 1.8, 0.8)))
    assert (ni.amplitudes_mub, ni.diffuse_area_mub, ni.band_terms) == (
        (0.62, -0.02), -0.02, ((-0.02, 0.8, 0.5), (0.015, 1.8, 0.8)))
    assert (co.amplitudes_mub, co.diffuse_area_mub, co.band_terms) == (
        (1.63, -0.07), -0.04, ((-0.04, 0.8, 0.5), (0.035, 1.8, 0.8)))
    widths = {(s.pz_broadening, s.diffuse_fwhm_au, s.thickness_mm, s.density_g_cm3) for s in (fe, ni, co)}
    assert widths == {((1.0, 1.0), 1.2, 1.0, None)}
    assert not any(hasattr(s, "count_rate_cps") or hasattr(s, "resolution_fwhm_au") for s in (fe, ni, co))
    assert Path(fe.source).parent == PRESETS_DIR
