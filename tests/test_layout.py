"""The package layout and the plans' signatures: public names, one-way import arrows, real annotations."""

import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TECHNIQUES = ("compton", "xas", "xps", "saxs")


def imports_of(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports; relative ones stay in the package)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_public_names_import_from_the_top_of_each_folder():
    from agent import Dataset, Param, fit, integrate, spin_moment_agent, xas_agent, xps_agent
    from plans import adaptive_compton, adaptive_xas, adaptive_xps, flip_cycle, grid_xas
    from sim_devices import make_compton_beamline, make_xas_endstation

    assert all(callable(f) for f in (fit, integrate, spin_moment_agent, xas_agent, xps_agent, adaptive_compton,
                                     adaptive_xas, adaptive_xps, flip_cycle, grid_xas, make_compton_beamline,
                                     make_xas_endstation))
    assert Param("a", 0, 1).name == "a" and Dataset.__name__ == "Dataset"
    import agent

    with pytest.raises(AttributeError, match="no attribute 'spin_agent'"):
        agent.spin_agent  # noqa: B018


def test_agent_core_imports_no_bluesky_or_ophyd():
    """Only the document-stream feeders may speak bluesky; nothing in agent/ or plans/ imports
    sim_devices/ or profiles/, and no technique package imports another (DESIGN §2)."""
    for pkg in ("agent", "plans"):
        for path, mod in modules(pkg):
            tops = {n.split(".")[0] for n in imports_of(path)}
            assert not tops & {"sim_devices", "profiles", "bayesbeam"}, mod
            if pkg == "agent" and mod != "agent.feeders":
                assert not tops & {"bluesky", "ophyd", "event_model", "databroker", "tiled"}, mod
            parts = mod.split(".")
            if len(parts) > 2 and parts[1] in TECHNIQUES:
                others = {f"{pkg}.{t}" for t in TECHNIQUES if t != parts[1]}
                assert not any(n.startswith(tuple(others)) for n in imports_of(path)), mod


def test_importing_the_agent_core_loads_no_bluesky():
    code = ("import sys, agent.core.stopping, agent.compton, agent.xas, agent.xps\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('bluesky', 'ophyd', 'sim_devices'))\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["adaptive_compton", "adaptive_xas", "adaptive_xps", "grid_xas", "flip_cycle"])
def test_plan_signatures_are_bluesky_style_with_real_types(name):
    import plans

    plan = getattr(plans, name)
    sig = inspect.signature(plan)
    params = list(sig.parameters.values())
    assert params[0].name == "detectors"
    assert all(not isinstance(p.annotation, str) and p.annotation is not inspect.Parameter.empty for p in params), \
        "annotations must be real types (bluesky-queueserver rebuilds them)"
    hints = typing.get_type_hints(plan)  # resolves: no forward references left as strings
    assert "detectors" in hints
    if name != "flip_cycle":  # flip_cycle is a stub inside a run: no md, no start document
        assert params[-1].name == "md" and params[-1].default is None
        assert params[-1].kind is inspect.Parameter.KEYWORD_ONLY
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == {"adaptive_compton": ["detectors", "magnet", "agent"],
                          "adaptive_xas": ["detectors", "mono", "agent"], "adaptive_xps": ["detectors", "agent"],
                          "grid_xas": ["detectors", "mono", "energies"],
                          "flip_cycle": ["detectors", "magnet", "field_t"]}[name]
    if name.startswith("adaptive"):
        assert sig.parameters["continue_from"].default is None


def test_no_future_annotations_in_plans():
    for path, mod in modules("plans"):
        assert "annotations" not in imports_of(path) and not any(
            isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in ast.walk(ast.parse(path.read_text()))
        ), mod


@pytest.mark.parametrize("old, new", [("agent.mcs_agent", "agent.compton.agent"),
                                      ("agent.callbacks", "agent.feeders"),
                                      ("plans.common", "plans.core"),
                                      ("sim_devices.compton_beamline", "sim_devices.compton.beamline"),
                                      ("bayesbeam.rehearse_xas", "bayesbeam.rehearsal.xas.rehearse")])
def test_old_module_paths_warn_and_give_the_same_objects(old, new):
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        legacy = importlib.import_module(old)
    current = importlib.import_module(new)
    shared = [k for k in vars(current) if not k.startswith("_") and callable(getattr(current, k))]
    assert shared and all(getattr(legacy, k) is getattr(current, k) for k in shared)


def test_the_code_itself_uses_no_old_path():
    """Every module and profile imports the current paths: none of them triggers the aliases."""
    code = ("import warnings; warnings.filterwarnings('error', 'moved to', DeprecationWarning)\n"
            "import agent.compton, agent.xas, agent.xps, agent.feeders, plans.compton, plans.xas, plans.xps\n"
            "import sim_devices.compton, sim_devices.xas, sim_devices.xps, sim_devices.ioc, bayesbeam.cli\n"
            "import bayesbeam.rehearsal.compton.rehearse, bayesbeam.rehearsal.xas.rehearse\n"
            "import bayesbeam.rehearsal.xps.rehearse, bayesbeam.epics_devices, bayesbeam.interactive")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    old = ("agent.mcs_", "agent.xas_", "agent.xps_", "agent.callbacks", "agent.base", "plans.common",
           "sim_devices.compton_", "sim_devices.xas_", "bayesbeam.rehearse_", "bayesbeam.report_")
    for path in [*ROOT.glob("profiles/**/*.py"), *ROOT.glob("tests/**/*.py")]:  # README names them once
        if path.name == "test_layout.py":
            continue
        text = path.read_text()
        assert not [o for o in old if o in text], path
