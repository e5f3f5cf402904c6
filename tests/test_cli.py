"""The command line, as a scientist types it: options, bad input, the printed result and its --json file."""

import os
import subprocess
import sys

import numpy as np
import pytest
from cli_output import read_json, table_row
from click.testing import CliRunner

from bayesbeam.cli import main


def test_help_explains_options_with_units():
    out = CliRunner().invoke(main, ["rehearse", "compton", "--help"]).output
    for option, unit in [("--target-std", "μB"), ("--count-time", "s of beamtime"), ("--catalog", "tiled"),
                         ("--repeats", "coverage"), ("--max-cycles", "cycles"), ("--json", "JSON")]:
        assert option in out and unit in out
    for command in ("xas", "xps"):
        assert "--json" in CliRunner().invoke(main, ["rehearse", command, "--help"]).output


@pytest.mark.parametrize("command, args, message", [
    ("compton", ["--target-std", "-0.01"], "must be a positive"),
    ("compton", ["--target-std", "0"], "must be a positive"),
    ("compton", ["--sample", "unobtainium"], "unknown sample"), ("compton", ["--quantity", "m_s"], "unknown quantity"),
    ("compton", ["--max-cycles", "0"], "max_cycles"), ("compton", ["--count-time", "0"], "count time"),
    ("compton", ["--time-scale", "0"], "time_scale"), ("compton", ["--seed", "-1"], "seed"),
    ("compton", ["--repeats", "-1"], "repeats"),
    ("xas", ["--target-rmse", "0"], "target RMSE"), ("xas", ["--sample", "unobtainium"], "unknown sample"),
    ("xas", ["--max-points", "0"], "max_points"),
    ("xps", ["--p-model", "1.5"], "probability"), ("xps", ["--mc-sweeps", "10"], "mc_sweeps"),
    ("xps", ["--dwell", "0"], "dwell"),
])
def test_bad_input_is_refused_before_anything_is_written(command, args, message, tmp_path):
    """The options' validate() message is the one-line usage error; no catalog, JSON or figure appears."""
    outputs = ["--catalog", str(tmp_path / "c"), "--json", str(tmp_path / "r.json"),
               "--figure", str(tmp_path / "f.png")]
    result = CliRunner().invoke(main, ["rehearse", command, *outputs, *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_repeats_json_matches_the_planning_table(tmp_path):
    path = tmp_path / "planning.json"
    result = CliRunner().invoke(main, ["rehearse", "compton", "--repeats", "20", "--no-progress", "--seed", "1",
                                       "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "cycles, median" in result.output and "95 % interval covers" in result.output
    s = read_json(path)
    assert s["repeats"] == 20 and s["sample"] == "fe" and s["seed"] == 1 and s["options"]["target_std"] == 0.01
    for key in ("coverage_68", "coverage_95", "reached_fraction"):
        assert 0 <= s[key] <= 1
    assert s["steps_p10"] <= s["steps_median"] <= s["steps_p90"]
    assert s["hours_p10"] <= s["hours_median"] <= s["hours_p90"] < s["conventional_hours"]
    assert abs(s["bias"]) < 0.05 and np.isfinite(s["bias_sigma"]) and sum(s["stop_rules"].values()) == 20
    out = result.output
    assert table_row(out, "cycles, median [10–90 %]")[1] == (
        f"{s['steps_median']:.0f} [{s['steps_p10']:.0f}–{s['steps_p90']:.0f}]")
    assert table_row(out, "hours, median [10–90 %]")[1] == (
        f"{s['hours_median']:.2f} [{s['hours_p10']:.2f}–{s['hours_p90']:.2f}]")
    assert table_row(out, "conventional 136 cycles (h)")[1] == f"{s['conventional_hours']:.2f}"
    assert table_row(out, "runs that reached the target")[1] == f"{100 * s['reached_fraction']:.1f} %"
    for level in (68, 95):
        cell = table_row(out, f"{level} % interval covers true μ_s")[1]
        assert cell.startswith(f"{100 * s[f'coverage_{level}']:.1f} % (nominal {level}")
    assert table_row(out, "bias of stopped μ_s (μB; posterior stds)")[1] == (
        f"{s['bias']:+.4f} ({s['bias_sigma']:+.2f} ± {s['bias_sigma_se']:.2f} σ)")


def test_full_rehearsal_writes_catalog_figure_and_json(tmp_path):
    """Piped, as a script or a log file sees it: no library warnings, every line whole (none wrapped). No
    --catalog, as the README's first command on a fresh machine: the default catalog's directories are made."""
    fig, path = tmp_path / "fig.png", tmp_path / "run.json"
    data_home = tmp_path / "fresh-home" / ".local" / "share"  # nothing of it exists yet
    cat = data_home / "bayesbeam" / "catalog"
    env = {k: v for k, v in os.environ.items() if k != "BAYESBEAM_CATALOG"} | {"XDG_DATA_HOME": str(data_home)}
    out = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "rehearse", "compton", "--sample", "FE",
                          "--target-std", "0.01", "--figure", str(fig), "--seed", "2",
                          "--time-scale", "1e6", "--json", str(path)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # no StarletteDeprecationWarning, no "Tiled version", no progress
    assert "stopped after" in out.stdout and "target_std" in out.stdout and "conventional 136 cycles" in out.stdout
    assert fig.stat().st_size > 10_000 and (cat / "catalog.db").exists()
    s = read_json(path)
    assert s["sample"] == "fe" and s["seed"] == 2 and s["options"]["time_scale"] == 1e6
    assert s["stop_reason"].startswith("target_std: std(mu_s)") and s["mu_s_std"] <= 0.01
    assert s["steps"] == s["cycles"] >= 1 and s["beamtime_s"] == pytest.approx(s["steps"] * s["cycle_time_s"], rel=0.1)
    for q in ("mu_s", "a3d", "a4s"):
        assert table_row(out.stdout, f"{q} (μB)")[1:] == [
            f"{s[f'{q}_mean']:.4f}", f"{s[f'{q}_std']:.4f}", f"[{s[f'{q}_lo95']:.4f}, {s[f'{q}_hi95']:.4f}]"]
    assert table_row(out.stdout, "Γ resolution (a.u. FWHM)")[1:3] == [f"{s['gamma_mean']:.3f}", f"{s['gamma_std']:.3f}"]
    assert table_row(out.stdout, "misfit τ (μB)")[1:3] == [f"{s['misfit_mean']:.4f}", f"{s['misfit_std']:.4f}"]
    lines = out.stdout.splitlines()
    assert lines[0] == "Magnetic Compton rehearsal: bcc Fe foil, room temperature (seed 000, BL08W)"
    assert f"stopped after {s['steps']} valid cycles ({s['discarded']} discarded): {s['stop_reason']}" in lines
    assert any(line.startswith(f"beamtime {s['beamtime_s'] / 3600:.2f} h vs conventional 136 cycles")
               and line.endswith(f"true μ_s of the simulation {s['truth_mu_s']:.4f} μB") for line in lines)
    assert f"run uid {s['uid']}" in lines
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 8 and len({len(row) for row in rows}) == 1  # one line per row: no cell wrapped
    for key, name in (("kappa", "κ calibration"), ("multiple_scattering", "multiple scattering"),
                      ("pz_calibration", "p_z calibration")):
        assert table_row(out.stdout, f"μs systematic: {name} (μB)")[2] == f"{s[f'mu_s_sys_{key}']:.4f}"
    assert s["mu_s_sys_kappa"] == pytest.approx(abs(s["mu_s_mean"]) * 0.01)  # beside, not in, the stop
    listing = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "runs", "--catalog", str(cat), "--sample", "fe"],
                             capture_output=True, text=True, timeout=120)
    assert listing.stderr == "", listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["scan", "uid", "start", "plan", "sample", "status", "reason"]
    assert row.split()[1:2] + row.split()[3:6] == [s["uid"][:8], "adaptive_compton", "fe", "finished"]
    assert row.endswith(s["stop_reason"])  # the catalog's stop reason
    verbose = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "-v", "runs", "--catalog", str(cat)],
                             capture_output=True, text=True, timeout=120)
    assert verbose.stdout == listing.stdout and "Tiled version" in verbose.stderr  # -v: the libraries speak again


# -- names in any case, close names suggested, messages in the user's words ---------------------------
@pytest.mark.parametrize("args, words", [
    (["rehearse", "xas", "--sample", "fe3o"], "unknown sample 'fe3o'; did you mean Fe3O4"),
    (["rehearse", "compton", "--sample", "fee"], "unknown sample 'fee'; did you mean fe?"),
    (["rehearse", "compton", "--quantity", "m_s"],
     "unknown quantity 'm_s' for the target std; did you mean mu_s? (this agent reports mu_s, a3d, a4s"),
    (["rehearse", "compton", "--quantity", "m_s", "--target-std", "0.01", "--plateau", "5", "0.05"],
     "unknown quantity 'm_s' for the target std"),
    (["rehearse", "xps", "--truth", "CeO3"], "unknown XPS sample 'CeO3'; did you mean CeO2?"),
    (["design", "xas", "--points", "3", "--exclude", "fe3o"], "unknown standard 'fe3o'; did you mean Fe3O4"),
])
def test_a_misspelt_name_is_one_line_with_the_close_names(args, words, tmp_path):
    result = CliRunner().invoke(main, [*args, "--catalog", str(tmp_path / "c")] if args[0] == "rehearse" else args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and words in errors[0], result.output
    assert "TargetStd" not in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_names_in_any_case_are_the_stored_spelling():
    from bayesbeam.rehearsal.xas.options import XASOptions
    from bayesbeam.rehearsal.xas.rehearse import make_xas_beamline

    standards = XASOptions("fe3o4").agent().post.prior0.source["standards"]  # leave-one-out of the stored name
    assert len(standards) == 60 and "Fe3O4" not in standards
    assert make_xas_beamline("FE-FOIL", time_scale=float("inf")).sample.name == "Fe-foil"
    result = CliRunner().invoke(main, ["rehearse", "xps", "--truth", "ceo2", "--p-model", "1.5"])
    assert result.exit_code == 2 and "probability" in result.output  # the name passed; the next check refused


def test_an_unknown_element_or_orbital_fails_when_the_agent_is_built():
    from agent import spin_moment_agent

    assert spin_moment_agent(0.01, element="fe").element == "Fe"
    for kwargs, words in [(dict(element="Xx"), "unknown element 'Xx': give a chemical symbol such as Fe"),
                          (dict(orbitals=("3d", "4f")), "Fe has no 4f electrons"),
                          (dict(orbitals=("3x",)), "unknown orbital '3x'")]:
        with pytest.raises(ValueError, match=words):
            spin_moment_agent(0.01, **kwargs)


def test_numbers_in_messages_are_plain_numbers():
    from ophyd.utils import LimitError

    from sim_devices.core.clock import SimClock
    from sim_devices.xas.monochromator import SimMonochromator

    mono = SimMonochromator(name="mono", clock=SimClock(float("inf")), limits_eV=(7070.0, 7197.0), start_eV=7100.0)
    with pytest.raises(LimitError, match=r"^mono: energy 8000.0 eV outside the range 7070.0-7197.0 eV$"):
        mono.set(np.float64(8000.0))
    from bayesbeam.rehearsal.xas.options import XASOptions

    with pytest.raises(ValueError, match=r"max_points must be an integer >= 1, got 0$"):
        XASOptions(max_points=np.int64(0)).validate()


def test_design_writes_each_energy_once_with_its_dwell(tmp_path):
    from agent.xas.design import MoveCost, scan_time

    path = tmp_path / "scan.csv"
    result = CliRunner().invoke(main, ["design", "xas", "--points", "30", "--dwell", "0.02", "--output", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_text().splitlines()[0] == "energy_eV,dwell_s"
    energy, dwell = np.loadtxt(path, delimiter=",", skiprows=1, unpack=True)
    assert np.all(np.diff(energy) > 0) and dwell.sum() == pytest.approx(30 * 0.02)
    assert dwell.max() == pytest.approx(0.04)  # an energy chosen twice: two dwells there, one line
    first = result.output.splitlines()[0]
    assert first.startswith(f"30 points at {energy.size} energies") and first.endswith(
        f"scan time {scan_time(energy, dwell, MoveCost()):.0f} s (sorted scan)")
    assert f"{energy[np.argmax(dwell)]:.1f}×2" in result.output
