"""Attacks on the screen's forked workers (run.worker_pool, screen(pool=...), command._embedded: 289dcf2).

What held is kept as regression tests; the tests under "faults" failed on 289dcf2, each with the cause in its
docstring, and pass since the fix that followed it. A test forces the start method by patching `workers._threads` (1:
fork, 2: spawn), so neither the threads this test process happens to run nor the machine decide what is tested; a
fork inherits what the test patched in this process (a slow router, say), which is how a slow or failing span is
staged."""

from __future__ import annotations

import contextlib
import gc
import gzip
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from test_prefilter_attack import MEDICATION, _as, _diff, _med_request, _whole

from cds_service.eligibility.catalog import Catalog
from cds_service.screening import run, workers
from cds_service.screening.bulk import COUNTS, ExportFileError, ReadLimits
from cds_service.settings import REPO_ROOT
from demo.load import demo_bundles, resources

DIRS = (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365)
AS_OF_ARG = "2026-11-23"


# --- helpers ------------------------------------------------------------------------------------------


def _summary(got: run.Screening) -> dict:
    """Everything a screen answers: its rows (every field), its funnel, and its read counts."""
    f, st = got.funnel, got.stats
    return {
        "rows": list(got.rows),
        "funnel": (f.order, f.failed, f.unknown, f.screened, f.statuses),
        "counts": {**{k: getattr(st, k) for k in COUNTS}, "patients": sorted(st.patients),
                   "too_large": sorted(st.too_large)},
    }  # fmt: skip


@pytest.fixture
def methods(monkeypatch) -> Iterator[list[str]]:
    """The start method of every pool `worker_pool` makes while the test runs."""
    made: list[str] = []
    real = run.worker_pool

    def spy(*args):  # noqa: ANN002, ANN202
        pool = real(*args)
        made.append(pool.method)
        return pool

    monkeypatch.setattr(run, "worker_pool", spy)
    yield made


def _screen_as(method: str, monkeypatch, methods: list[str], *args, **kwargs) -> run.Screening:
    """`screen` with its workers forked or spawned, as `worker_pool` decides from the thread count."""
    monkeypatch.setattr(workers, "_threads", lambda: 1 if method == "fork" else 2)
    got = run.screen(*args, **kwargs)
    assert methods[-1] == method
    return got


def _tricky_lines(as_of) -> dict[str, list[bytes]]:
    """The demo records twice (inside some cohort, and without their Conditions: outside), spread over files
    by type, with a shared Medication, junk, resources naming no patient or two, and one over-long line."""
    demo = [resources(b) for b in demo_bundles(as_of).values()]
    files: dict[str, list[bytes]] = {"Patient": [], "Condition": [], "Observation": [], "MedicationRequest": []}
    for i, res in enumerate(demo):
        for pid, inside in ((f"in{i}", True), (f"out{i}", False)):
            for r in [*_as(res, pid, conditions=inside), _med_request(pid)]:
                files[r["resourceType"] if r["resourceType"] in files else "Observation"].append(orjson.dumps(r))
    files["MedicationRequest"].append(orjson.dumps(MEDICATION))
    obs = files["Observation"]
    obs.insert(5, b"{not json")
    obs.insert(9, orjson.dumps({"resourceType": "Observation", "id": "nobody", "status": "final"}))
    two = {"resourceType": "Observation", "id": "two", "subject": {"reference": "Patient/in0"},
           "performer": [{"reference": "Patient/in1"}]}  # fmt: skip
    obs.insert(17, orjson.dumps(two))
    long = {"resourceType": "Observation", "id": "long", "subject": {"reference": "Patient/in2"},
            "note": [{"text": "L" * 5000}]}  # fmt: skip
    obs.insert(23, orjson.dumps(long))
    return files


def _tricky_export(folder: Path, as_of) -> tuple[Path, list[bytes]]:
    """The tricky lines as an export: Conditions gzipped, Patients with CRLF, a blank line, the
    MedicationRequests without a final newline; and every line, for the whole-record reference."""
    folder.mkdir()
    files = _tricky_lines(as_of)
    (folder / "Patient.ndjson").write_bytes(b"\r\n".join(files["Patient"]) + b"\r\n")
    (folder / "Condition.000.ndjson.gz").write_bytes(gzip.compress(b"\n".join(files["Condition"]) + b"\n\n"))
    (folder / "Observation.ndjson").write_bytes(b"\n".join(files["Observation"]) + b"\n")
    (folder / "MedicationRequest.ndjson").write_bytes(b"\n".join(files["MedicationRequest"]))
    return folder, [x for v in files.values() for x in v]


def _failing_export(folder: Path, as_of) -> Path:
    """An export whose `Observation.000.ndjson` routes (slowly, when the test makes it so) while
    `Observation.999.ndjson.gz`, truncated, fails at once: the screen raises with a span still routing."""
    folder.mkdir()
    files = _tricky_lines(as_of)
    (folder / "Patient.ndjson").write_bytes(b"\n".join(files["Patient"]) + b"\n")
    (folder / "Condition.ndjson").write_bytes(b"\n".join(files["Condition"]) + b"\n")
    (folder / "Observation.000.ndjson").write_bytes(b"\n".join(files["Observation"]) + b"\n")
    whole = gzip.compress(b"\n".join(files["Observation"] * 20) + b"\n")
    (folder / "Observation.999.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    return folder


def _group_alive(pgid: int) -> list[int]:
    """Processes still in process group `pgid` (zombies aside)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill_group(proc: subprocess.Popen) -> None:
    """End the process group this test started (its session), if anything of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _gone(pgid: int, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := _group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.fixture(scope="module")
def big_export(tmp_path_factory) -> Path:
    """An export the command takes a second or two to screen on two workers (about 30 MB)."""
    from bench.screen import write_export

    folder = tmp_path_factory.mktemp("big")
    write_export(folder, 1500, 60, 3)
    return folder


# --- held: fork and spawn answer alike -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["plain", "strict", "trials", "limits"])
def test_forked_and_spawned_workers_screen_a_tricky_export_alike(case, catalog, as_of, tmp_path, monkeypatch, methods):
    """Gzip, CRLF, junk, no-patient and two-patient lines, an over-long line, a shared Medication; a strict
    catalogue, a subset of trials, tight caps: the forked workers give the spawned ones' rows, funnel, counts."""
    folder, every = _tricky_export(tmp_path / "export", as_of)
    cat = Catalog.load(DIRS[0], DIRS[1], strict=True) if case == "strict" else catalog
    trial_ids = sorted(catalog.trials)[:2] if case == "trials" else None
    limits = ReadLimits(max_line_bytes=3000, max_patient_resources=60) if case == "limits" else ReadLimits()
    args = (folder, DIRS, as_of, trial_ids, 2)
    forked = _summary(_screen_as("fork", monkeypatch, methods, *args, limits=limits, catalog=cat))
    spawned = _summary(_screen_as("spawn", monkeypatch, methods, *args, limits=limits, catalog=cat))
    for key in ("rows", "funnel", "counts"):
        assert forked[key] == spawned[key], key
    counts = forked["counts"]
    assert counts["malformed"] >= 1 and counts["no_patient"] >= 1 and counts["two_patients"] >= 1
    assert counts["outside_cohort"] > 0 and {r["status"] for r in forked["rows"]} - {"ineligible"}
    if case == "plain":
        assert counts["too_long"] == 0
        assert _diff(forked["rows"], _whole(cat, every, as_of)) == []
    if case == "limits":
        assert counts["too_long"] == 1 and counts["too_large"]


def test_a_callers_pool_serves_screens_in_a_row(catalog, as_of, tmp_path, monkeypatch):
    """One forked pool, three screens (every trial, a subset, every trial again; its workers keep an entry
    test per subset): each answers as a screen with a pool of its own, and the pool is still the caller's."""
    folder, _ = _tricky_export(tmp_path / "export", as_of)
    subset = sorted(catalog.trials)[1:3]
    alone = {key: _summary(run.screen(folder, DIRS, as_of, ids, 2, catalog=catalog)) for key, ids in
             (("all", None), ("subset", subset))}  # fmt: skip
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    with run.worker_pool(2, catalog) as pool:
        assert pool.method == "fork"
        for key, ids in (("all", None), ("subset", subset), ("all", None)):
            assert _summary(run.screen(folder, DIRS, as_of, ids, 2, catalog=catalog, pool=pool)) == alone[key], key
        assert pool.call(os.getpid) != os.getpid()  # left open for the caller
    assert mp.active_children() == []


SCREEN_TWICE = """
import sys
from datetime import date
from pathlib import Path
from cds_service.screening import run

root, folder = Path(sys.argv[1]), Path(sys.argv[2])
made, real = [], run.worker_pool
def spy(*args):
    pool = real(*args)
    made.append(pool.method)
    return pool
run.worker_pool = spy
dirs = (root / "mappings", root / "trials", 365)
first = run.screen(folder, dirs, date(2026, 11, 23), workers=2)
second = run.screen(folder, dirs, date(2026, 11, 23), workers=2)
assert list(first.rows) == list(second.rows)
print(",".join(made))
"""


def test_a_second_screen_in_the_same_process_forks_again(as_of, tmp_path):
    """The first screen's pool handler threads are joined when it closes: the second screen is forked too."""
    folder, _ = _tricky_export(tmp_path / "export", as_of)
    argv = [sys.executable, "-c", SCREEN_TWICE, str(REPO_ROOT), str(folder)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "fork,fork"


def test_a_worker_error_reaches_the_caller_and_no_worker_is_left(catalog, as_of, tmp_path, monkeypatch, methods):
    """A truncated gzip read in a forked worker: the screen raises the file's error, and its workers are gone."""
    folder = _failing_export(tmp_path / "export", as_of)
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    with pytest.raises(ExportFileError, match=r"Observation\.999\.ndjson\.gz cannot be read"):
        run.screen(folder, DIRS, as_of, workers=2, catalog=catalog)
    assert methods == ["fork"]
    assert mp.active_children() == []


LOCK_PROBE = "import sqlite3, sys; sqlite3.connect(sys.argv[1], timeout=0).execute('begin immediate')"


def test_a_write_lock_the_screen_process_holds_survives_its_forked_workers(catalog, as_of, tmp_path, monkeypatch):
    """An open SQLite write transaction at the fork (a store the caller has open): the workers come and go
    and the lock is still the screen process's (a worker's exit closes its copies of the file's descriptors,
    which must not release it), and its transaction commits."""
    folder, _ = _tricky_export(tmp_path / "export", as_of)
    db = tmp_path / "store.sqlite3"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("create table runs(x)")
    con.execute("begin immediate")
    con.execute("insert into runs values (1)")
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    got = run.screen(folder, DIRS, as_of, workers=2, catalog=catalog)
    assert got.stats.patients
    probe = [sys.executable, "-c", LOCK_PROBE, str(db)]
    locked = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    assert locked.returncode != 0 and "locked" in locked.stderr
    con.execute("commit")
    assert subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    assert con.execute("select count(*) from runs").fetchone() == (1,)
    con.close()


DUCKDB_FIRST = """
import sys
from pathlib import Path
import duckdb
from cds_service.eligibility.catalog import Catalog
from cds_service.screening import run, workers

root = Path(sys.argv[1])
con = duckdb.connect()  # open, as the store's or the output's would be: its native threads run
con.execute("select 1").fetchall()
catalog = Catalog.load(root / "mappings", root / "trials")
threads = workers._threads()
with run.worker_pool(1, catalog) as pool:
    print(threads, pool.method)
"""


def test_a_process_running_native_threads_spawns_its_workers():
    done = subprocess.run([sys.executable, "-c", DUCKDB_FIRST, str(REPO_ROOT)], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    threads, method = done.stdout.split()
    assert int(threads) > 1 and method == "spawn"


# --- held: the command ---------------------------------------------------------------------------------

# The command as run from a shell, reporting the start method of the pool it makes.
COMMAND = """
import sys
from cds_service.screening import command, run
real = run.worker_pool
def spy(*args):
    pool = real(*args)
    print("workers:", pool.method, file=sys.stderr, flush=True)
    return pool
command.worker_pool = spy
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


def _own_tmp(tmp_path: Path) -> dict[str, str]:
    """The environment, with a temporary folder of the test's own: a screen process killed outright (SIGTERM
    to the command, or this test ending a hung one) leaves its partitions there, not in /tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp_path / "tmp")}


def _command(folder: Path, out: Path, tmp_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-c", COMMAND, "screen", str(folder), "--workers", "2", "--as-of", AS_OF_ARG,
            "--out", str(out), "--no-store"]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=_own_tmp(tmp_path))  # fmt: skip


def test_the_command_forks_its_workers_and_leaves_none_behind(as_of, tmp_path):
    folder, _ = _tricky_export(tmp_path / "export", as_of)
    proc = _command(folder, tmp_path / "out", tmp_path)
    try:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert "workers: fork" in err.decode()
        assert _gone(proc.pid) == []
        assert (tmp_path / "out" / "patients.csv").is_file()
    finally:
        _kill_group(proc)


def test_the_command_on_a_truncated_gzip_exits_2_in_one_line_and_leaves_no_worker(as_of, tmp_path):
    folder = _failing_export(tmp_path / "export", as_of)
    proc = _command(folder, tmp_path / "out", tmp_path)
    try:
        _, err = proc.communicate(timeout=60)
        text = err.decode()
        assert proc.returncode == 2, text[-3000:]
        assert "workers: fork" in text and "Traceback" not in text
        assert text.strip().splitlines()[-1].startswith("screen: ")
        assert _gone(proc.pid) == []
    finally:
        _kill_group(proc)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_the_command_interrupted_leaves_no_worker(how, big_export, tmp_path):
    """Ctrl-C (SIGINT to the whole foreground group) or SIGTERM to the screen process alone (a job runner
    stopping it), while it screens: the command ends in one line with status 130, its forked workers with
    it, and its partitions on disk are removed (SIGTERM had ended it where it stood and left them)."""
    proc = _command(big_export, tmp_path / "out", tmp_path)
    try:
        deadline = time.monotonic() + 20
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_children(proc.pid)) >= 2, "the workers never started"
        time.sleep(0.3)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode != 0, "the screen ended before it was interrupted: the test proves nothing"
        assert proc.returncode == 130, err.decode()[-3000:]
        assert err.decode().strip().splitlines()[-1].startswith("screen: interrupted"), err.decode()[-3000:]
        assert "Traceback" not in err.decode()
        assert _gone(proc.pid) == []
        assert not list((tmp_path / "tmp").glob("screen-*")), "the partitions were left behind"
    finally:
        _kill_group(proc)


# --- faults found in 289dcf2, fixed -----------------------------------------------------------------------------------


def _slow_router(log: Path, seconds: float):  # noqa: ANN202
    """`run.route`, but `Observation.000.ndjson`'s span is routed `seconds` late, and when it starts
    routing it notes the time and whether the screen's work folder is still there."""
    real = run.route

    def route(spans, files, max_line, cohort):  # noqa: ANN001, ANN202
        if spans[0].path.name.startswith("Observation.000"):
            time.sleep(seconds)
            with log.open("a") as f:
                f.write(f"{time.time()} {files.work.is_dir()}\n")
        return real(spans, files, max_line, cohort)

    return route


def test_a_screen_that_raises_has_no_task_left_running_in_the_callers_pool(catalog, as_of, tmp_path, monkeypatch):
    """Was a fault in 289dcf2. With the caller's pool (`_embedded` always passes one), `screen` leaves its `with` on an
    error without stopping the tasks it queued: the temporary folder of partitions is deleted while a worker still
    routes a span into it, and the pool is only terminated later, by the caller. (Before 289dcf2 the pool was
    terminated first.) A worker that opens a partition file while `TemporaryDirectory` deletes the folder makes the
    deletion fail: measured with the real command on a 92 MB export with a truncated .gz, 1 run in 10-20 reports
    `screen: cannot write the results to OUT (OSError)` instead of the file's error and leaves a /tmp/screen-*
    folder of partition files behind (0 in 20 before). Staged here deterministically: the span still routing is made
    slow."""
    folder = _failing_export(tmp_path / "export", as_of)
    log = tmp_path / "late.log"
    monkeypatch.setattr(run, "route", _slow_router(log, 0.8))  # inherited by the forked workers
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    with run.worker_pool(2, catalog) as pool:
        assert pool.method == "fork"
        with pytest.raises(ExportFileError):
            run.screen(folder, DIRS, as_of, workers=2, catalog=catalog, pool=pool)
        raised = time.time()
        time.sleep(1.5)  # past the slow span's delay: had its worker gone on, it has noted it by now
    if log.exists():  # (a worker that was stopped, or whose task was waited for, notes nothing late)
        when, folder_there = log.read_text().split()
        late = float(when) - raised
        assert late <= 0, f"a span of the failed screen started routing {late:.2f} s after screen() raised " + (
            "into its work folder" if folder_there == "True" else "when its work folder had been deleted"
        )


SIGTERM_FLAG = """
import signal, sys, time
from datetime import date
from pathlib import Path
from cds_service.screening import run
from cds_service.screening.bulk import ExportFileError

root, folder = Path(sys.argv[1]), Path(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))  # shut down gracefully, as job runners do
real = run.route
def route(spans, *rest):  # a span that takes a while to route (a 16 MB span takes about as long)
    if spans[0].path.name.startswith("Observation.000"):
        time.sleep(2)
    return real(spans, *rest)
run.route = route
try:
    run.screen(folder, (root / "mappings", root / "trials", 365), date(2026, 11, 23), workers=2)
except ExportFileError as e:
    print("raised:", e, flush=True)
"""


def test_a_failed_screen_ends_in_a_process_with_its_own_sigterm_handler(as_of, tmp_path):
    """Was a fault in 289dcf2. A forked worker inherits the screen process's Python signal handlers, where a spawned
    one starts with the defaults. `Pool.terminate` (the pool's `with` on an error or Ctrl-C) relies on SIGTERM
    killing a worker that is busy: one that merely notes the signal finishes its task, then waits forever for the
    task queue's lock, which `terminate` has taken (`_help_stuff_finish`), and `terminate` waits forever in `join`.
    So a screen that fails (a truncated .gz) with another span still routing, in a process that handles SIGTERM
    gracefully, never returns; reproduced without staging on a 92 MB export. Before 289dcf2 (spawned workers) it
    raised the file's error at once."""
    folder = _failing_export(tmp_path / "export", as_of)
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_FLAG, str(REPO_ROOT), str(folder)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=_own_tmp(tmp_path))  # fmt: skip
    try:
        out, err = proc.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        out, err = b"", b"(hung: killed after 12 s)"
    finally:
        _kill_group(proc)
    assert out.decode().startswith("raised: Observation.999.ndjson.gz"), err.decode()[-3000:]


def test_forked_and_spawned_workers_screen_with_the_same_catalogue(as_of, tmp_path, monkeypatch, methods):
    """Was a fault in 289dcf2. `screen(catalog=...)` with a catalogue that is not the one `catalog_dirs` load (here: a
    trial fewer): forked workers evaluate with the caller's catalogue, spawned ones reload theirs from the
    directories (only `strict` is taken from the catalogue). So the same call answers differently by whether some
    thread happened to run when the pool was made; the forked answer is the consistent one (the screen process
    screens the patients outside every cohort and filters with the caller's catalogue). Neither `screen` nor
    `worker_pool` checks that the two agree."""
    folder, _ = _tricky_export(tmp_path / "export", as_of)
    trials = tmp_path / "trials"
    shutil.copytree(REPO_ROOT / "trials", trials)
    whole = Catalog.load(DIRS[0], DIRS[1])
    gone = sorted(whole.trials)[0]
    next(p for p in trials.glob("*.yaml") if f"id: {gone}\n" in p.read_text()).unlink()
    fewer = Catalog.load(DIRS[0], trials)
    assert gone not in fewer.trials and len(fewer.trials) == len(whole.trials) - 1
    args = (folder, DIRS, as_of, None, 2)
    forked = _summary(_screen_as("fork", monkeypatch, methods, *args, catalog=fewer))
    spawned = _summary(_screen_as("spawn", monkeypatch, methods, *args, catalog=fewer))
    assert {r["trial"] for r in forked["rows"]} == set(fewer.trials)
    assert {r["trial"] for r in spawned["rows"]} == set(fewer.trials), "spawned workers screened another catalogue"
    assert forked["rows"] == spawned["rows"]


def test_a_frozen_process_does_not_keep_its_garbage_frozen_for_good(catalog, monkeypatch):
    """Was a fault (minor) in 289dcf2. In a process that had frozen its start-up heap (`tune_gc`: the service, bench, a
    test process after `run._init`), `worker_pool` calls `gc.freeze()` again and never thaws: everything live or not
    yet collected at that moment, not only the start-up heap, goes to the permanent generation, so a reference cycle
    that was garbage then is never freed. Each screen in such a process adds to it."""
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    was_frozen, was_enabled = gc.get_freeze_count(), gc.isenabled()
    gc.disable()  # no automatic collection frees the cycle before the pool is made
    gc.freeze()  # the start-up heap, as tune_gc freezes it

    class Node:
        pass

    node = Node()
    node.me = node  # a cycle: only the collector frees it
    gone = weakref.ref(node)
    del node
    try:
        with run.worker_pool(1, catalog) as pool:
            assert pool.method == "fork"
            assert pool.call(sum, [1, 2]) == 3
        gc.collect()
        assert gone() is None, "the garbage of the moment of the fork stays frozen, never collected"
    finally:
        gc.unfreeze()
        if was_frozen:
            gc.freeze()
        if was_enabled:
            gc.enable()
