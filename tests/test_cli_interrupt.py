"""Ctrl-C in a rehearsal: the run is aborted cleanly (stop document, summary, figure, --json); a
second Ctrl-C quits at once. The Ctrl-C is sent by a subscriber on the run's first posterior event,
so it always arrives mid-run, whatever the machine's load."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRIVER = textwrap.dedent("""
    import os, signal, sys, threading, time
    import bayesbeam.rehearsal.common as common
    from bayesbeam.cli import main

    hits = int(sys.argv[1])
    opened = common.open_run_engine

    def open_run_engine(location=None):
        RE, location = opened(location)
        sent = []

        def ctrl_c(data):
            if not sent:
                sent.append(1)
                def press():
                    for i in range(hits):
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(0.3)
                threading.Thread(target=press, daemon=True).start()

        RE.subscribe(common.stream_subscriber("posterior", ctrl_c))
        return RE, location

    common.open_run_engine = open_run_engine
    for name in ("compton", "xas", "xps"):
        module = sys.modules.get(f"bayesbeam.rehearsal.{name}.cli")
        if module is not None:
            module.open_run_engine = open_run_engine
    main(sys.argv[2:], standalone_mode=True)
""")


def rehearse(tmp_path, hits: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "BAYESBEAM_CATALOG": str(tmp_path / "catalog")}
    return subprocess.run([sys.executable, str(script), str(hits), "rehearse", *args, "--catalog",
                           str(tmp_path / "catalog"), "--figure", str(tmp_path / "fig.png"), "--json",
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)


def test_ctrl_c_aborts_the_run_and_still_reports(tmp_path):
    # slow enough that the target (5 cycles or more) is far from reached at the first posterior event
    out = rehearse(tmp_path, 1, "compton", "--no-progress", "--seed", "3", "--time-scale", "2000",
                   "--target-std", "0.005")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Ctrl-C: stopping the run after the current count" in out.stderr
    assert "Traceback" not in out.stderr and "RE.resume()" not in out.stdout + out.stderr
    assert "aborted: interrupted from the command line (Ctrl-C)" in " ".join(out.stdout.split())
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["stop_reason"] == "aborted: interrupted from the command line (Ctrl-C)"
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    from bayesbeam.catalog import open_catalog

    run = open_catalog(tmp_path / "catalog")[data["uid"]]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "abort" and stop["reason"] == "interrupted from the command line (Ctrl-C)"
    cycles = int(data["steps"])
    assert cycles >= 1 and len(run["posterior"]["mu_s_std"].read()) == cycles
    # every spectrum counted is stored: the count in progress at Ctrl-C finished and was kept
    assert len(run["primary"]["ge_spectrum"].read()) >= 4 * cycles


def test_ctrl_c_aborts_an_xas_run_the_same_way(tmp_path):
    out = rehearse(tmp_path, 1, "xas", "--sample", "Fe3O4", "--seed", "1", "--time-scale", "1000",
                   "--target-rmse", "0.001", "--max-points", "400")
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["stop_reason"] == "aborted: interrupted from the command line (Ctrl-C)" and data["steps"] < 400
    from bayesbeam.catalog import open_catalog

    run = open_catalog(tmp_path / "catalog")[data["uid"]]
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert len(run["primary"]["i0_counts"].read()) >= data["steps"]


def test_a_second_ctrl_c_quits_at_once(tmp_path):
    out = rehearse(tmp_path, 2, "compton", "--no-progress", "--seed", "4", "--time-scale", "300",
                   "--target-std", "0.002")
    assert out.returncode == 128 + signal.SIGINT, (out.returncode, out.stderr[-3000:])
    assert "Ctrl-C: quitting now" in out.stderr and "Traceback" not in out.stderr
    from bayesbeam.catalog import load_backup, open_catalog

    # What was counted before quitting is stored: in the run's journal at once, in the catalog once the journal
    # is loaded (quitting at once does not wait for the catalog's writer thread).
    catalog = open_catalog(tmp_path / "catalog")
    assert [row["action"] for row in load_backup(catalog)] in ([], ["replaced"])
    run = catalog[-1]
    assert len(run["primary"]["ge_spectrum"].read()) >= 4  # the first cycle's spectra preceded its posterior event
