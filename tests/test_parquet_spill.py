"""The Parquet conversion's memory is bounded, and what DuckDB spills goes to a scratch folder of ours, never
to `./.tmp` in the folder the command was run from (its default: patient ids in a user's working folder)."""

from __future__ import annotations

import contextlib
import csv
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cds_service.screening import output


def _csv(path: Path, patients: int) -> list[tuple[str, str]]:
    """A patients.csv as the screen writes it; its (patient, trial) pairs in order."""
    pairs = []
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(output.ROW_TYPES))
        for p in range(patients):
            for t in range(5):
                pid, trial = f"patient-{p:07d}", f"NCT0{t}"
                w.writerow([pid, trial, "possibly-eligible", "", 3, 0, 9, 4, "", "inc-4;inc-5;inc-7.1;inc-7.2;exc-1"])
                pairs.append((pid, trial))
    return pairs


def _pairs(parquet: Path) -> list[tuple[str, str]]:
    con = duckdb.connect(config={"threads": "1"})  # one thread reads the file in its order
    try:
        return [tuple(r) for r in con.execute("SELECT patient, trial FROM read_parquet(?)", [str(parquet)]).fetchall()]
    finally:
        con.close()


@pytest.fixture
def spill(tmp_path, monkeypatch) -> Path:
    """The scratch folder the conversion is given, where the test can watch it."""
    folder = tmp_path / "spill"

    @contextlib.contextmanager
    def scratch(prefix: str) -> Iterator[Path]:
        folder.mkdir()
        yield folder

    monkeypatch.setattr(output, "scratch_folder", scratch)
    return folder


def test_what_duckdb_spills_goes_to_our_scratch_folder_not_the_working_folder(tmp_path, monkeypatch, spill) -> None:
    pairs = _csv(tmp_path / "raw.csv", 40_000)  # 20 MB: more than the bound below holds
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(output, "PARQUET_MEMORY", "32MB")
    seen: dict[str, int] = {"spill": 0, "cwd": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen["spill"] += bool(spill.is_dir() and any(spill.iterdir()))
            seen["cwd"] += any(cwd.iterdir())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        output._parquet(tmp_path / "raw.csv", tmp_path / "patients.parquet")
    finally:
        done.set()
        watcher.join()
    assert seen["spill"] > 0, "the premise: the bound made DuckDB spill"
    assert seen["cwd"] == 0 and not os.listdir(cwd)
    assert _pairs(tmp_path / "patients.parquet") == pairs


def test_a_conversion_the_bound_cannot_hold_runs_again_without_it(tmp_path, monkeypatch, spill) -> None:
    pairs = _csv(tmp_path / "raw.csv", 2_000)
    monkeypatch.setattr(output, "PARQUET_MEMORY", "1MB")  # not even one block
    with pytest.raises(duckdb.OutOfMemoryException):  # the premise
        output._copy(
            tmp_path / "raw.csv", tmp_path / "x.parquet", {"memory_limit": "1MB", "temp_directory": str(spill)}
        )
    output._parquet(tmp_path / "raw.csv", tmp_path / "patients.parquet")
    assert _pairs(tmp_path / "patients.parquet") == pairs
