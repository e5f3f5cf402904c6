"""The imaging commands: ``rehearse xas-imaging`` at a small field of view writing its JSON, figure and run;
``imaging-stack`` writing a simulated HDF5 stack that ``classify`` reads on a thread pool and on the default local
Dask cluster (127.0.0.1), and ``classify --run`` on the stored run; one-line errors before anything runs."""

import json

import h5py
import numpy as np
from click.testing import CliRunner

from bayesbeam.cli import main

REQUIRED = ("minority_precision", "minority_recall", "majority_accuracy", "pixels", "energies", "beamtime_s",
            "wall_s", "full_xanes_beamtime_s", "beamtime_ratio", "stop_reason", "classes")


def test_rehearse_writes_json_with_the_required_keys_and_the_run(tmp_path, catalog, catalog_dir):
    path, figure = tmp_path / "img.json", tmp_path / "img.png"
    res = CliRunner().invoke(main, ["rehearse", "xas-imaging", "--pixels", "6400", "--minority", "0.005",
                                    "--energies", "7085,7113.5,7121,7162", "--max-passes", "2", "--n-flat", "2",
                                    "--n-dark", "2", "--seed", "2",
                                    "--catalog", str(catalog_dir), "--json", str(path), "--figure", str(figure),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    s = json.loads(path.read_text())
    assert all(k in s for k in REQUIRED), [k for k in REQUIRED if k not in s]
    assert s["pixels"] == 6400 and s["energies"] == [7085.0, 7113.5, 7121.0, 7162.0]
    assert 0 <= s["majority_accuracy"] <= 1 and 0 <= s["minority_recall"] <= 1 and 0 <= s["minority_precision"] <= 1
    assert s["majority_accuracy"] > 0.8  # three well-separated majority phases
    assert s["full_xanes_beamtime_s"] > s["beamtime_s"] > 0 and s["beamtime_ratio"] > 1
    assert s["minority_phase"] == "Fe3_PO4_2_8H2O" and "Fe3_PO4_2_8H2O" not in s["classes"]
    assert "stop reason" in res.output and "full XANES stack" in res.output and figure.stat().st_size > 20_000
    run = catalog[s["uid"]]
    assert run.metadata["stop"]["reason"] == s["stop_reason"]
    assert "Fe3_PO4_2_8H2O" not in run.metadata["start"]["library_names"]
    assert run.metadata["start"]["agent_config"]["psf_sigma_px"] == 0.6  # the simulated detector's PSF, as measured
    out = CliRunner().invoke(main, ["classify", "--catalog", str(catalog_dir), "--run", s["uid"][:8], "--scheduler",
                                    "threads", "--psf-sigma-px", "0.6", "--json", str(tmp_path / "run.json"),
                                    "--no-progress"])
    assert out.exit_code == 0, out.output
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["run"] == s["uid"] and again["pixels"] == 6400 and again["passes"] == s["passes"]
    assert again["psf_sigma_px"] == 0.6


def test_bad_options_are_one_line_before_anything(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["rehearse", "xas-imaging", "--library", "LiFePO4,FePO5", "--catalog",
                               str(tmp_path / "c")])
    assert res.exit_code == 2 and "unknown standard 'FePO5'" in res.output and not (tmp_path / "c").exists()
    res = runner.invoke(main, ["rehearse", "xas-imaging", "--energies", "6000,7113,7162", "--catalog",
                               str(tmp_path / "c")])
    assert res.exit_code == 2 and "outside" in res.output and not (tmp_path / "c").exists()
    res = runner.invoke(main, ["classify", str(tmp_path / "none.h5"), "--scheduler", "threads"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and res.output.startswith("Error:")


def test_classify_a_written_stack_on_threads_and_on_the_local_dask_cluster(tmp_path):
    stack, labels = tmp_path / "stack.h5", tmp_path / "labels.h5"
    runner = CliRunner()
    res = runner.invoke(main, ["imaging-stack", str(stack), "--pixels", "16384", "--minority", "0.005", "--seed",
                               "3", "--passes", "2", "--energies", "7085,7113.5,7121,7129,7162"])
    assert res.exit_code == 0, res.output
    with h5py.File(stack) as f:
        assert f["/entry/data/images"].shape == (5, 128, 128) and f["/entry/data"].attrs["passes"] == 2
        truth = f["/entry/truth/label"][()]
    out = {}
    for scheduler in ("threads", "local"):
        path = tmp_path / f"{scheduler}.json"
        args = ["classify", str(stack), "--json", str(path), "--tile", "64", "--no-progress"]
        args += ["--scheduler", "threads", "--labels", str(labels)] if scheduler == "threads" else []
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
        assert "classes of" in res.output and "majority accuracy" in res.output
        out[scheduler] = json.loads(path.read_text())
    t, d = out["threads"], out["local"]
    assert t["pixels"] == d["pixels"] == 128 * 128 and t["scheduler"] == "threads" and d["scheduler"] == "local"
    assert t["classes"] == d["classes"] and t["class_pixels"] == d["class_pixels"]  # the same partition either way
    assert t["majority_accuracy"] > 0.8 and t["noise"]["gain"] > 0
    with h5py.File(labels) as f:
        lab = f["/entry/classes/labels"][()]
        names = json.loads(f["/entry/classes"].attrs["names"])
    assert lab.shape == truth.shape and len(names) == len(t["classes"]) and np.all(lab < len(names))
