from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from cds_service.eligibility.catalog import Catalog
from demo import synthetic as syn

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 23)


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
