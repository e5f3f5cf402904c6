"""The command line, as a scientist types it: options, bad input, the printed result and its --json file."""

import subprocess
import sys

import numpy as np
import pytest
from cli_output import flat, read_json, table_row
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
        f"{s['bias']:+.4f} ({s['bias_sigma']:+.2f} σ)")


def test_full_rehearsal_writes_catalog_figure_and_json(tmp_path):
    cat, fig, path = tmp_path / "catalog", tmp_path / "fig.png", tmp_path / "run.json"
    out = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "rehearse", "compton", "--sample", "fe",
                          "--target-std", "0.01", "--catalog", str(cat), "--figure", str(fig), "--seed", "2",
                          "--time-scale", "1e6", "--no-progress", "--json", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
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
    assert table_row(out.stdout, "noise scale")[1:3] == [f"{s['noise_scale_mean']:.3f}", f"{s['noise_scale_std']:.3f}"]
    caption = flat(out.stdout)
    assert f"stopped after {s['steps']} valid cycles ({s['discarded']} discarded): {s['stop_reason']}" in caption
    assert f"beamtime {s['beamtime_s'] / 3600:.2f} h vs conventional 136 cycles" in caption
    assert f"run uid {s['uid']}" in caption
    listing = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "runs", "--catalog", str(cat), "--sample", "fe"],
                             capture_output=True, text=True, timeout=120)
    assert "adaptive_compton" in listing.stdout and "success" in listing.stdout
    assert s["uid"][:8] in listing.stdout and s["stop_reason"] in listing.stdout  # the catalog's stop reason
