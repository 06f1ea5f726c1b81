from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from cds_service.eligibility.catalog import Catalog
from cds_service.settings import get_settings
from demo import synthetic as syn

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 23)


@pytest.fixture(scope="session", autouse=True)
def _private_store(tmp_path_factory) -> Iterator[None]:
    """`screen` keeps every run in the store: the tests' runs go to a store of their own, not ./var."""
    before = os.environ.get("TRIAL_MATCHER_DATABASE_URL")
    if before is None:
        os.environ["TRIAL_MATCHER_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('store') / 'tests.sqlite3'}"
        get_settings.cache_clear()
    yield
    if before is None:
        os.environ.pop("TRIAL_MATCHER_DATABASE_URL", None)
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "mappings", ROOT / "trials")


@pytest.fixture(scope="session")
def as_of() -> date:
    return AS_OF


@pytest.fixture
def eligible() -> list[dict]:
    """A fresh copy of the all-in-range patient for each test to mutate."""
    return syn.eligible_patient(AS_OF)


@pytest.fixture(scope="session")
def catalog_session(catalog: Catalog) -> Catalog:
    """The catalog under a name hypothesis tests can take (function-scoped fixtures are refused there)."""
    return catalog


@pytest.fixture
def trials_dir(tmp_path, monkeypatch) -> Iterator[Path]:
    """A copy of the trials folder, configured as TRIAL_MATCHER_TRIALS_DIR for the CLI and the app."""
    folder = tmp_path / "trials"
    shutil.copytree(ROOT / "trials", folder)
    monkeypatch.setenv("TRIAL_MATCHER_TRIALS_DIR", str(folder))
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()
