"""The IPython profiles and the beamline configuration: the sim profile's startup files, the
configuration checks, and the messages for a typo'd PV and for an IOC that is not up."""

import os
import shutil
import subprocess
import sys

import caioc
import pytest

from bayesbeam.beamline_config import BeamlineConfigError, default_beamline_file, load_beamline, validate

SIM_FILE = default_beamline_file()


def _edited(tmp_path, old, new):
    text = SIM_FILE.read_text()
    assert old in text
    path = tmp_path / "bl.toml"
    path.write_text(text.replace(old, new))
    return path


def test_shipped_beamline_file_is_valid():
    cfg = load_beamline(SIM_FILE)
    assert cfg.name == "sim_bl08w" and cfg.pvs()["magnet.setpoint"] == "SIM08W:MAG:FieldSP"
    assert cfg.where("SIM08W:GE:mca1EraseStart") == "[detector] mca in sim_bl08w.toml"


def test_configuration_problems_are_all_named(tmp_path):
    path = _edited(tmp_path, 'readback = "SIM08W:MAG:FieldRB"', 'readbak = "SIM08W:MAG FieldRB"')
    with pytest.raises(BeamlineConfigError) as err:
        load_beamline(path)
    msg = str(err.value)
    assert "[magnet] unknown key 'readbak'" in msg and "[magnet] missing key 'readback'" in msg
    problems = validate({"name": "x", "epics": {"addr_list": "127.0.0.1:5064"}, "detector": {"mca": "A B"}})
    assert any("[detector] mca = 'A B' is not a valid PV name" in p for p in problems)
    assert any("missing section [magnet]" in p for p in problems)
    xas_only = {k: v for k, v in load_beamline(SIM_FILE).data.items() if k not in ("detector", "magnet")}
    assert any("[temperature] is the sample temperature of the magnetic Compton end station" in p
               for p in validate(xas_only))
    with pytest.raises(BeamlineConfigError, match="does not exist"):
        load_beamline(tmp_path / "nope.toml")


@pytest.fixture(scope="module")
def sim_beamline():
    """The shipped beamline connected with a generous timeout (it returns as soon as every PV is up)."""
    caioc.shared_ioc()
    from bayesbeam.epics_devices import connect_beamline

    return connect_beamline(load_beamline(SIM_FILE), timeout_s=120)


def test_writes_go_only_to_configured_pvs(sim_beamline):
    from bayesbeam.epics_devices import WriteGate, writable_pvs

    bl = sim_beamline
    assert WriteGate.active() is not None and bl.config.records() == [
        "SIM08W:GE:mca1", "SIM08W:DCM:Energy", "SIM08W:XAS:scaler1"]
    for pv in writable_pvs(bl.devices().values()):
        assert bl.gate.allows(pv), pv
    temp = bl.sample_temp  # [temperature]: the device plans find as sample_temp, in the controller's range
    assert temp.name == "sample_temp" and bl.devices()["sample_temp"] is temp and temp.limits == (10.0, 1200.0)
    assert bl.gate.allows(temp.setpoint.pvname) and not bl.gate.allows(temp.readback.pvname)


def test_typo_in_a_pv_name_is_named(tmp_path, sim_beamline):
    """The PV with the typo is named with its line. The good PVs were waited for generously first (the
    ``sim_beamline`` fixture; the typo'd file shares all but one of them); the assertion is on which PV is
    named, never on how long the connection took."""
    from bayesbeam.epics_devices import BeamlineConnectionError, connect_beamline

    cfg = load_beamline(_edited(tmp_path, '"SIM08W:MAG:FieldSP"', '"SIM08W:MAG:FieldSPX"'))
    with pytest.raises(BeamlineConnectionError) as err:
        connect_beamline(cfg, timeout_s=2.0)
    assert "SIM08W:MAG:FieldSPX  ([magnet] setpoint in bl.toml)" in str(err.value)


def _ipython(profile, tmp_path, code, env):
    """Run ``ipython --profile-dir`` (a copy, so IPython's own files stay out of the repository)."""
    prof = tmp_path / profile
    shutil.copytree(caioc.ROOT / "profiles" / profile, prof, ignore=shutil.ignore_patterns("__pycache__"))
    return subprocess.run([sys.executable, "-m", "IPython", f"--profile-dir={prof}", "--no-banner",
                           "--HistoryManager.enabled=False", "--colors=nocolor", "-c", code],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items()
                                  if not k.startswith("BAYESBEAM_") or k == "BAYESBEAM_SHARED_DATA"}, **env})


def test_epics_profile_with_the_ioc_down_names_the_pvs(tmp_path, catalog_dir):
    dead = caioc.free_port()
    out = _ipython("epics", tmp_path, "print('SESSION-UP')", {
        "EPICS_CA_ADDR_LIST": f"127.0.0.1:{dead}", "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "BAYESBEAM_CATALOG": str(catalog_dir), "BAYESBEAM_PLOTS": "0"})
    text = out.stdout + out.stderr
    assert "no PV of beamline 'sim_bl08w' answered within 5 s: is the IOC up" in text, text[-3000:]
    assert f"EPICS_CA_ADDR_LIST=127.0.0.1:{dead}" in text and "SIM08W:RING:Current" in text


def test_sim_profile_startup_and_an_adaptive_run(tmp_path, catalog_dir):
    code = ("agent = spin_moment_agent(0.02, element=sample.element); "
            "(uid,) = RE(adaptive_compton([ge], magnet, agent, ring=ring, beamtime=beamtime, beam_poll_s=0, "
            "md={'sample': sample.name})); "
            "run = catalog[uid]; "
            "print('STOP', run.metadata['stop']['reason'], len(run['primary']['ge_spectrum'].read()))")
    out = _ipython("sim", tmp_path, code, {"BAYESBEAM_CATALOG": str(catalog_dir), "BAYESBEAM_PLOTS": "0",
                                          "BAYESBEAM_TIME_SCALE": "1e6"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]  # IPython prints startup tracebacks to stdout
    assert "bayesbeam simulated session — sample fe" in out.stdout
    assert "Transient Scan ID" in out.stdout  # the BestEffortCallback's live table
    assert "  posterior 1 · μs = " in out.stdout and "(target σ 0.02)" in out.stdout  # the watched quantity
    assert "ended: success — target reached: σ(μs) = " in out.stdout  # the stop line when RE() returns
    stop = [line for line in out.stdout.splitlines() if line.startswith("STOP ")]
    assert stop and "target_std: std(mu_s)" in stop[0] and int(stop[0].split()[-1]) % 4 == 0
