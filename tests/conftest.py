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
