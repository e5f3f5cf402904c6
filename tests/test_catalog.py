"""The catalog as databroker 2 users index it, sample names normalised when written, and ``bayesbeam runs``.

One fresh embedded catalog with known content (exact uids and order are asserted): three runs stored as
before ``sample_key`` existed, runs through ``make_run_engine`` (sample from the plan's md, from
``RE(plan, sample=...)`` and from ``RE.md`` of a second engine, as another process would), a failed run
and one still running (no stop document).
"""

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import ophyd.sim
import pytest
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from event_model import compose_run
from tiled.queries import Key
from unprivileged import without_write_override

from bayesbeam.catalog import (
    RUNS_SPEC,
    CatalogError,
    add_sample_keys,
    find_runs,
    open_catalog,
    replay,
    run_status,
    sample_key,
)
from bayesbeam.session import CatalogWriter, make_run_engine, normalise_start_md


def failing_plan(md):
    yield from bps.open_run(md=md)
    raise RuntimeError("detector on fire")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """``(location, client, uids)``; uids by name, in the order written (scan ids 1-8)."""
    location = tmp_path_factory.mktemp("known_catalog")
    client = open_catalog(location)
    uids = {}
    old = RunEngine({})  # as runs were written before this change: no sample_key, scan ids of one session
    old.subscribe(TiledWriter(client, batch_size=1))
    (uids["old_la2o3"],) = old(bp.count([ophyd.sim.det], md={"sample": "La2O3"}))
    (uids["old_fe"],) = old(bp.count([ophyd.sim.det], md={"sample": "fe"}))
    (uids["old_ceo2"],) = old(bp.count([ophyd.sim.det], md={"sample": "CeO2"}))
    RE = make_run_engine(client)
    (uids["la2o3"],) = RE(bp.count([ophyd.sim.det], md={"sample": "La2O3"}))
    (uids["la2o3_call"],) = RE(bp.count([ophyd.sim.det]), sample="LA2O3 ")
    RE2 = make_run_engine(client, md={"sample": "Fe"})  # a second session: scan ids continue from the catalog
    (uids["fe"],) = RE2(bp.count([ophyd.sim.det, ophyd.sim.motor]))
    with pytest.raises(RuntimeError, match="detector on fire"):
        RE2(failing_plan({"sample": "Ni"}))
    uids["failed"] = client.values()[-1].metadata["start"]["uid"]
    running = compose_run(metadata=normalise_start_md({"sample": "FE", "scan_id": 8, "plan_name": "count"}))
    writer = CatalogWriter(client)  # as a live RunEngine's: its journal stays locked while this module runs
    writer("start", running.start_doc)  # its stop document is not written yet
    uids["running"] = running.start_doc["uid"]
    while uids["running"] not in client:  # stored by the writer's thread
        time.sleep(0.02)
    yield location, client, uids
    writer("stop", running.compose_stop())


def start(run):
    return run.metadata["start"]


def test_root_carries_the_spec_and_reopens(stored):
    location, client, uids = stored
    assert type(client).__name__ == "RunCatalog" and client.is_sql
    assert [(s.name, s.version) for s in client.specs] == [(RUNS_SPEC["name"], RUNS_SPEC["version"])]
    again = open_catalog(location)  # an existing directory: same runs, same spec
    assert list(again) == list(uids.values()) and list(again.specs) == list(client.specs)
    # Created in-process, the database is stamped at tiled's current schema revision as `tiled catalog init` does.
    from tiled.catalog.core import REQUIRED_REVISION

    with sqlite3.connect(location / "catalog.db") as db:
        assert db.execute("select version_num from alembic_version").fetchall() == [(REQUIRED_REVISION,)]


def test_indexing_as_databroker(stored):
    _, catalog, uids = stored
    order = list(uids.values())
    assert start(catalog[-1])["uid"] == uids["running"]
    assert [start(r)["uid"] for r in catalog[-2:]] == order[-2:]
    assert [start(r)["uid"] for r in catalog[-3:]] == order[-3:]
    assert [start(r)["uid"] for r in catalog[-4:-1]] == order[-4:-1]
    assert [start(r)["uid"] for r in catalog[-8:3]] == order[:3] and catalog[-2:-2] == []
    assert [start(catalog[uid])["scan_id"] for uid in order] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert start(catalog[4])["uid"] == uids["la2o3"] and start(catalog[6])["uid"] == uids["fe"]
    for uid in order:
        assert start(catalog[uid[:8]])["uid"] == uid and start(catalog[uid])["uid"] == uid
    with pytest.raises(KeyError):
        catalog["ffffffff"]
    with pytest.raises(KeyError):
        catalog[99]
    assert catalog[uids["fe"]]["primary"]["motor"].read().shape == (1,)  # runs still read as BlueskyRun
    assert [name for name, _ in catalog[uids["fe"]].documents()] == ["start", "descriptor", "event", "stop"]
    docs = []
    replay(catalog[uids["running"]], lambda name, doc: docs.append(name))
    assert docs == ["start"]  # the exporter's empty stand-in for a missing stop document is not replayed


def test_sample_kept_as_typed_beside_its_key(stored):
    _, catalog, uids = stored
    assert [(start(catalog[uids[k]])["sample"], start(catalog[uids[k]]).get("sample_key"))
            for k in ("old_la2o3", "la2o3", "la2o3_call", "fe", "failed", "running")] == [
        ("La2O3", None), ("La2O3", "la2o3"), ("LA2O3 ", "la2o3"), ("Fe", "fe"), ("Ni", "ni"), ("FE", "fe")]
    assert sample_key({"name": " Fe3O4", "form": "powder"}) == "fe3o4" and sample_key(None) is None


@pytest.mark.parametrize("query", ["la2o3", "La2O3", "LA2O3"])
def test_find_runs_any_case_old_runs_included(stored, query):
    _, catalog, uids = stored
    assert list(find_runs(catalog, sample=query)) == [uids["old_la2o3"], uids["la2o3"], uids["la2o3_call"]]


@pytest.mark.parametrize("query", ["fe", "Fe", "FE "])
def test_find_runs_old_lower_case_run(stored, query):
    _, catalog, uids = stored
    assert list(find_runs(catalog, sample=query)) == [uids["old_fe"], uids["fe"], uids["running"]]
    assert list(find_runs(catalog, sample=query, plan_name="count")) == [uids["old_fe"], uids["fe"], uids["running"]]
    assert list(find_runs(catalog, sample="cu")) == []


def test_old_mixed_case_run_without_a_newer_one_needs_its_key(stored):
    """An old ``La2O3`` is found by ``la2o3`` through a newer run's display form; an old ``CeO2`` with no
    newer run only by ``CeO2``, until add_sample_keys gives it its key (here on the CeO2 runs alone)."""
    _, catalog, uids = stored
    old = uids["old_ceo2"]
    assert list(find_runs(catalog, sample="CeO2")) == [old] and list(find_runs(catalog, sample="ceo2")) == []
    ceo2 = catalog.search(Key("start.sample") == "CeO2")
    assert add_sample_keys(ceo2) == 1 and add_sample_keys(ceo2) == 0
    assert (start(catalog[old])["sample"], start(catalog[old])["sample_key"]) == ("CeO2", "ceo2")
    assert list(find_runs(catalog, sample="ceo2")) == list(find_runs(catalog, sample="CEO2")) == [old]


def test_runs_lists_header_status_and_any_case_sample(stored):
    from click.testing import CliRunner

    from bayesbeam.cli import main

    location, catalog, uids = stored
    out = CliRunner().invoke(main, ["runs", "--catalog", str(location), "--last", "20"])
    assert out.exit_code == 0, out.output
    header, *lines = out.output.splitlines()
    assert header.split() == ["scan", "uid", "start", "plan", "sample", "status", "reason"]
    assert len(lines) == 8 and [line.split()[:2] for line in lines] == [
        [str(i), uid[:8]] for i, uid in enumerate(uids.values(), start=1)]
    for column in ("uid", "start", "plan", "sample", "status"):  # aligned: every cell starts where its header does
        at = header.index(column)
        assert all(line[at - 2:at] == "  " and line[at] != " " for line in lines), column
    when = datetime.fromtimestamp(start(catalog[uids["fe"]])["time"]).isoformat(timespec="minutes")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", when) and lines[5].split()[2] == when
    assert lines[5].split()[3:6] == ["count", "Fe", "finished"]
    assert lines[6].split()[3:6] == ["failing_plan", "Ni", "failed"] and lines[6].endswith("detector on fire")
    assert lines[7].split()[3:] == ["count", "FE", "running"]
    out = CliRunner().invoke(main, ["runs", "--catalog", str(location)])  # the last 10 by default, 3 with --last 3
    assert out.output.splitlines()[1:] == lines
    out = CliRunner().invoke(main, ["runs", "--catalog", str(location), "--last", "3"])
    assert out.output.splitlines()[1:] == lines[-3:]
    out = CliRunner().invoke(main, ["runs", "--catalog", str(location), "--sample", "LA2O3", "--last", "2"])
    assert out.exit_code == 0, out.output
    assert [line.split()[1] for line in out.output.splitlines()[1:]] == [uids["la2o3"][:8], uids["la2o3_call"][:8]]
    out = CliRunner().invoke(main, ["runs", "--catalog", str(location), "--sample", "Cu"])
    assert out.exit_code == 0 and out.output.startswith("no runs of sample 'Cu'")
    assert out.output.rstrip().endswith("; known samples: CeO2, Fe, La2O3, Ni")  # each in one spelling
    out = CliRunner().invoke(main, ["runs", "--catalog", str(location), "--sample", "la2o"])
    assert out.output.rstrip().endswith("; did you mean La2O3?")




def test_run_status_of_finished_failed_and_running_runs(stored):
    _, catalog, uids = stored
    assert [run_status(catalog[uids[k]]) for k in ("fe", "failed", "running")] == ["success", "fail", "running"]
    assert catalog[uids["fe"]].metadata["writer"]["interval_s"] > 0  # the heartbeat of a bayesbeam writer


# -- catalog errors up front (issue 9, defect 9) --------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_reader_of_a_missing_catalog_is_told_so_and_nothing_is_created(tmp_path):
    from click.testing import CliRunner

    from bayesbeam.cli import main

    missing = tmp_path / "no" / "such" / "dir"
    out = CliRunner().invoke(main, ["runs", "--catalog", str(missing)])
    assert out.exit_code == 1 and out.output == f"Error: catalog {missing} does not exist\n", out.output
    assert len(out.output.strip().splitlines()) == 1 and not (tmp_path / "no").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for location, words in ((missing, f"catalog {missing} does not exist"), (empty, "a directory without catalog.db")):
        with pytest.raises(CatalogError, match=re.escape(words)):
            open_catalog(location, writable=False)
    assert list(empty.iterdir()) == []


def _as_another_user() -> list[str]:
    """The command prefix that runs a process unable to override permissions (root writes anywhere)."""
    prefix = without_write_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a directory unwritable")
    return prefix


def _unwritable(kind: str, base: Path) -> str:
    """A catalog location of ``kind`` in ``base`` that the rehearsal (run by ``_as_another_user``) cannot write."""
    if kind == "unwritable directory":
        (base / "catalog").mkdir()
        (base / "catalog").chmod(0o555)
        return str(base / "catalog")
    if kind == "read-only catalog":
        open_catalog(base / "catalog")
        for path in [base / "catalog", *(base / "catalog").rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return str(base / "catalog")
    if kind == "a file in the way":
        (base / "catalog").write_text("not a catalog")
        return str(base / "catalog" / "sub")
    return f"http://127.0.0.1:{_free_port()}/api"  # nothing listens there


def _remove(base: Path) -> None:
    subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("kind, words", [("unwritable directory", "is not writable"),
                                         ("read-only catalog", "is not writable")])
def test_an_unwritable_catalog_is_one_line_before_anything_moves(kind, words, request):
    """``bayesbeam rehearse compton`` (a process of a user who may not write there) on a catalog it cannot write:
    one line, exit status 1, nothing written (no figure, no run), well within 30 s (measured in
    tests/bench/bench_catalog_errors.py)."""
    prefix = _as_another_user()
    base = Path(tempfile.mkdtemp(prefix="bayesbeam-catalog-errors-"))  # pytest's tmp_path is private to its user
    request.addfinalizer(lambda: _remove(base))
    base.chmod(0o755)
    location = _unwritable(kind, base)
    home = base / "home"
    home.mkdir()
    home.chmod(0o777)
    figure = home / "figure.png"
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home), "NUMBA_CACHE_DIR": str(home),
           "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    out = subprocess.run([*prefix, sys.executable, "-m", "bayesbeam.cli", "rehearse", "compton", "--catalog", location,
                          "--no-progress", "--time-scale", "inf", "--figure", str(figure)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    elapsed = time.monotonic() - started
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], out.stderr
    assert not figure.exists() and "run uid" not in out.stdout
    assert elapsed < 30


@pytest.mark.parametrize("kind, words", [("a file in the way", "cannot create catalog"),
                                         ("server not listening", "no tiled server at")])
def test_an_unusable_location_is_one_line_before_anything_moves(kind, words, tmp_path):
    from click.testing import CliRunner

    from bayesbeam.cli import main

    location = _unwritable(kind, tmp_path)
    figure = tmp_path / "figure.png"
    started = time.monotonic()
    out = CliRunner().invoke(main, ["rehearse", "compton", "--catalog", location, "--no-progress", "--time-scale",
                                    "inf", "--figure", str(figure)])
    assert out.exit_code == 1 and out.output.startswith("Error: ") and words in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and not figure.exists()
    assert time.monotonic() - started < 30


def test_a_program_with_an_embedded_catalog_exits_even_if_its_server_hangs(tmp_path):
    """A task of the in-process tiled server that never ends (seen after runs that failed mid-request) used to make
    the program hang at exit for good, waiting for it; now the program ends within the close bound, saying so."""
    code = ("import anyio, sys; from bayesbeam.catalog import open_catalog; "
            f"c = open_catalog({str(tmp_path / 'c')!r}); "
            "c.context.http_client.portal.start_task_soon(anyio.sleep, 3600); print('opened', flush=True)")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=ROOT,
                         env={**os.environ, "BAYESBEAM_CLOSE_AT_EXIT_S": "2"})
    assert out.returncode == 0 and out.stdout.strip() == "opened", out.stderr[-2000:]
    assert "did not close within 2 s; exiting without it" in out.stderr
    assert time.monotonic() - started < 60
