"""Shared fixtures: one embedded catalog per test session (creating one costs ~5 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="session")
def catalog(catalog_dir):
    from bayesbeam.catalog import open_catalog

    return open_catalog(catalog_dir)


@pytest.fixture()
def RE(catalog):
    from bayesbeam.session import make_run_engine

    return make_run_engine(catalog)


@pytest.fixture(scope="session")
def epics_session(catalog, catalog_dir):
    """The epics profile's startup files executed as IPython would, against this process's IOC
    (started on 127.0.0.1 on first use, see tests/caioc.py). One per test process: every CA test
    module shares its devices, so their channels are searched for once."""
    import caioc

    caioc.shared_ioc()
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("BAYESBEAM_CATALOG", str(catalog_dir))
        mp.setenv("BAYESBEAM_PLOTS", "0")
        mp.setenv("BAYESBEAM_CONNECTION_TIMEOUT_S", "30")  # a loaded CI host retries lost UDP searches late
        ns = caioc.run_startup(caioc.ROOT / "profiles" / "epics")
        ns["bec"].disable_table()
        yield ns
    finally:
        mp.undo()
