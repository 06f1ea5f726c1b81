from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
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
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of this test run (its binaries come with the machine; TEST_POSTGRES_DSN names
    another): the DSN of its `postgres` database."""
    if os.environ.get("TEST_POSTGRES_DSN"):
        yield os.environ["TEST_POSTGRES_DSN"]
        return
    # on PATH, or where Debian's postgresql package puts them (scripts/database-deps.sh installs it)
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    if not found:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine and TEST_POSTGRES_DSN is unset")
    bin_dir = os.path.dirname(found)
    root = tempfile.mkdtemp(prefix="pgtest-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = f"{root}/data"
    init = [*as_user, f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "test"]
    subprocess.run(init, check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    start = [*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{root}/log", "-w", "-o", options, "start"]
    subprocess.run(start, check=True, capture_output=True)
    try:
        yield f"postgresql://test@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: str) -> str:
    """A database of its own on the test run's PostgreSQL server, for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A store on each database the service supports: SQLite in a file, PostgreSQL (`postgres_dsn`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_dsn")


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
