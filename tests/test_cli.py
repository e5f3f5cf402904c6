"""The command line, as a scientist types it."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from bayesbeam.cli import main


def test_help_explains_options_with_units():
    out = CliRunner().invoke(main, ["rehearse", "compton", "--help"]).output
    for option, unit in [("--target-std", "μB"), ("--count-time", "s of beamtime"), ("--catalog", "tiled"),
                         ("--repeats", "coverage"), ("--max-cycles", "cycles")]:
        assert option in out and unit in out


@pytest.mark.parametrize("args, message", [
    (["--target-std", "-0.01"], "must be a positive"), (["--target-std", "0"], "must be a positive"),
    (["--sample", "unobtainium"], "unknown sample"), (["--quantity", "m_s"], "unknown quantity"),
    (["--max-cycles", "0"], "max_cycles"),
])
def test_bad_input_is_refused_before_anything_runs(args, message, tmp_path):
    result = CliRunner().invoke(main, ["rehearse", "compton", "--catalog", str(tmp_path / "c"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "c").exists()


def test_repeats_prints_the_planning_table():
    result = CliRunner().invoke(main, ["rehearse", "compton", "--repeats", "20", "--no-progress", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "cycles, median" in result.output and "95 % interval covers" in result.output


def test_full_rehearsal_writes_catalog_and_figure(tmp_path):
    cat, fig = tmp_path / "catalog", tmp_path / "fig.png"
    out = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "rehearse", "compton", "--sample", "fe",
                          "--target-std", "0.01", "--catalog", str(cat), "--figure", str(fig), "--seed", "2",
                          "--time-scale", "1e6", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "stopped after" in out.stdout and "target_std" in out.stdout and "conventional 136 cycles" in out.stdout
    assert fig.stat().st_size > 10_000 and (cat / "catalog.db").exists()
    listing = subprocess.run([sys.executable, "-m", "bayesbeam.cli", "runs", "--catalog", str(cat), "--sample", "fe"],
                             capture_output=True, text=True, timeout=120)
    assert "adaptive_compton" in listing.stdout and "success" in listing.stdout
