"""The screen's workers: forked, with the screen process's catalogue, from a process that runs no other
thread; spawned, loading the catalogue, from one that does; the same rows, funnel and counts either way;
and the collector's frozen heap left as it was found."""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from cds_service.screening.run import worker_pool

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter, so whether this process runs other threads (a server a fixture started)
# cannot decide the start method under test. argv: the export folder, "thread" to start one first.
SCRIPT = """
import os, sys, threading, orjson
from datetime import date
from pathlib import Path
from cds_service.eligibility.catalog import Catalog
from cds_service.screening import run

root, folder = Path(sys.argv[1]), Path(sys.argv[2])
if sys.argv[3] == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
catalog = Catalog.load(root / "mappings", root / "trials")
dirs = (root / "mappings", root / "trials", 365)
with run.worker_pool(2, catalog) as pool:
    method = pool.method
    got = run.screen(folder, dirs, date(2026, 11, 23), workers=2, catalog=catalog, pool=pool)
    alive = pool.call(os.getpid) > 0  # the caller's pool is the caller's to close: still working
rows = sorted((r["patient"], r["trial"], r["status"], r["failed"], r["unknowns"]) for r in got.rows)
funnel = {t: (got.funnel.screened[t], got.funnel.failed[t], got.funnel.unknown[t]) for t in got.funnel.order}
st = got.stats
print(orjson.dumps({"method": method, "alive": alive, "rows": rows, "funnel": funnel,
                    "counts": [st.malformed, st.no_patient, st.other_types, sorted(st.patients)]}).decode())
"""


def _export(folder: Path) -> Path:
    from demo.load import demo_bundles, resources

    files: dict[str, list[bytes]] = {}
    for bundle in demo_bundles().values():
        for r in resources(bundle):
            files.setdefault(r["resourceType"], []).append(orjson.dumps(r))
    for rtype, lines in files.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n{not json\n")
    return folder


def _screened(folder: Path, thread: bool) -> dict:
    argv = [sys.executable, "-c", SCRIPT, str(ROOT), str(folder), "thread" if thread else "alone"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def test_forked_and_spawned_workers_screen_alike(tmp_path):
    folder = _export(tmp_path)
    forked, spawned = _screened(folder, thread=False), _screened(folder, thread=True)
    assert forked["method"] == "fork" and spawned["method"] == "spawn"
    assert forked["alive"] and spawned["alive"]
    assert forked["rows"] and {r[2] for r in forked["rows"]} - {"ineligible"}  # someone is still in
    for key in ("rows", "funnel", "counts"):
        assert forked[key] == spawned[key], key
    assert forked["counts"][0] > 0  # the junk lines were counted by both


def test_the_frozen_heap_is_left_as_found(catalog):
    was = gc.get_freeze_count()
    gc.unfreeze()
    try:
        with worker_pool(1, catalog) as pool:
            assert pool.call(sum, [1, 2]) == 3
        assert gc.get_freeze_count() == 0  # a process that froze nothing gets nothing frozen
        gc.freeze()
        frozen = gc.get_freeze_count()
        with worker_pool(1, catalog) as pool:
            assert pool.call(sum, [1, 2]) == 3
        # one that froze its start-up heap keeps it frozen (less what was freed meanwhile), not thawed
        assert gc.get_freeze_count() > frozen // 2 > 0
    finally:
        gc.unfreeze()
        if was:
            gc.freeze()


def test_spawned_workers_load_the_catalogue_from_its_own_folders(catalog, monkeypatch):
    """A spawned worker cannot be handed the catalogue: it loads the one the catalogue says it came from, and
    one built otherwise is refused rather than replaced by whatever the screen's arguments name."""
    from cds_service.screening import workers

    assert catalog.source == (str((ROOT / "mappings").resolve()), str((ROOT / "trials").resolve()))
    monkeypatch.setattr(workers, "_threads", lambda: 2)  # as if another thread ran: spawn
    with worker_pool(1, catalog) as pool:
        assert pool.method == "spawn"
        assert pool.call(sum, [2, 3]) == 5
    with pytest.raises(ValueError, match="not loaded from its folders"):
        worker_pool(1, dataclasses.replace(catalog, source=None))


def test_workers_must_be_a_positive_number(tmp_path, capsys):
    from cds_service.cli import main

    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as stop:
            main(["screen", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", bad])
        assert stop.value.code == 2
        assert "--workers: a number of processes, 1 or more" in capsys.readouterr().err


# The command, with a worker killed outright as it starts on a partition, as the out-of-memory killer does.
KILLED = """
import os, signal, sys
from cds_service.screening import run
def screen_partition(job):  # only ever run by a worker
    os.kill(os.getpid(), signal.SIGKILL)
run.screen_partition = screen_partition
from cds_service.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_worker_killed_mid_screen_stops_the_screen_instead_of_hanging(tmp_path):
    """A multiprocessing.Pool waited for a dead worker's task for ever: an overnight screen never ended."""
    (tmp_path / "export").mkdir()
    (tmp_path / "tmp").mkdir()
    folder = _export(tmp_path / "export")
    argv = [sys.executable, "-c", KILLED, "screen", str(folder), "--workers", "2", "--as-of", "2026-11-23",
            "--out", str(tmp_path / "out"), "--no-store"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "screen: a worker process ended abruptly (killed, out of memory, or failed to start); nothing was written"
    )
    assert not (tmp_path / "out" / "patients.csv").exists()
    assert not list((tmp_path / "tmp").iterdir()), "the partitions were left behind"


def test_loading_a_workers_catalogue_leaves_the_process_signals_alone():
    """`run._init` also loads the catalogue in Spark's Python workers and in tests: only the screen's pool workers
    take the pool's signals (SIGTERM's default, Ctrl-C ignored)."""
    import signal

    from cds_service.screening import run

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run._init(str(ROOT / "mappings"), str(ROOT / "trials"), 365)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# A pool of two workers (forked, or spawned when "thread" starts another thread first) whose pids are printed;
# then the process waits to be killed.
ORPHANS = """
import os, sys, threading, time
from cds_service.screening import workers
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
pool = workers.start(2, (int, ()), (int, ()))
for f in [pool.submit(time.sleep, 0.3) for _ in range(2)]:  # two at once: a spawned pool starts both
    f.result()
print(pool.method, *sorted(pool._executor._processes), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["fork", "thread"])
def test_workers_end_when_the_screen_process_is_killed(kind, tmp_path):
    """A screen SIGKILLed (a job runner's grace period over, the out-of-memory killer) cannot stop its workers:
    they waited for tasks for ever, each holding its memory. Each now ends within a second of it."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the results folder a killed pool leaves
    proc = subprocess.Popen([sys.executable, "-c", ORPHANS, kind], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    pids: list[int] = []
    try:
        method, *found = proc.stdout.readline().split()
        pids = [int(p) for p in found]
        assert method == ("spawn" if kind == "thread" else "fork")
        assert len(pids) == 2 and all(map(_alive, pids))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in pids if _alive(p)] == [], "workers left running after their screen was killed"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for p in filter(_alive, pids):
            os.kill(p, signal.SIGKILL)
