"""Screens that remember: two screens of an export that changed in between give a worklist that lists
exactly the changes (a new SLE patient, a washout that lifted, a new exclusion), and the screening log
adds up. Expectations come from the stored rows and the engine, never from the trial catalogue. Each runs
on both databases the store supports: SQLite, and a PostgreSQL server the tests start (conftest)."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest

from cds_service.cli import main
from cds_service.settings import get_settings
from cds_service.worklist.changes import AGED_OUT, CSV_HEADER, LISTS, compare
from cds_service.worklist.runs import RunStore, StoredRow
from demo import synthetic as syn

D1 = date(2026, 11, 23)
D2 = D1 + timedelta(days=20)


def _write_export(folder: Path, patients: list[list[dict]]) -> Path:
    folder.mkdir(parents=True)
    files: dict[str, list[bytes]] = {}
    for resources in patients:
        for r in resources:
            files.setdefault(r["resourceType"], []).append(orjson.dumps(r))
    for rtype, lines in files.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def _population() -> tuple[list[list[dict]], list[list[dict]]]:
    """The export on D1 and on D2: A unchanged; B's rituximab washout lifts in between (no new data);
    C gets a reactive HIV screen; D is a new SLE patient."""
    a = syn.eligible_patient(D1, "pa")
    b = syn.eligible_patient(D1, "pb") + [
        syn.med_statement("pb", "121191", "riTUXimab 10 MG/ML", D1 - timedelta(days=75), D1 - timedelta(days=45),
                          status="completed"),
    ]  # fmt: skip
    c = syn.eligible_patient(D1, "pc")
    hiv = syn.qualitative("pc", "56888-1", True, D2 - timedelta(days=1), display="HIV 1+2 Ab+p24 Ag")
    d = syn.eligible_patient(D2, "pd")
    return [a, b, c], [a, b, [*c, hiv], d]


def _sql(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """One statement on the store's database, outside the code under test."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as db:
            return db.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(url) as db:
        cur = db.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def screened(tmp_path, monkeypatch, trials_dir, database_url) -> str:
    """The database URL of a store holding two screens, D1's and D2's."""
    monkeypatch.setenv("TRIAL_MATCHER_DATABASE_URL", database_url)
    get_settings.cache_clear()
    first, second = _population()
    for n, (day, pop) in enumerate(((D1, first), (D2, second))):
        export = _write_export(tmp_path / f"export{n}", pop)
        out = tmp_path / f"out{n}"
        assert main(["screen", str(export), "--out", str(out), "--as-of", day.isoformat(), "--workers", "1"]) == 0
    return database_url


def _worklist(capsys, *extra: str) -> list[dict[str, str]]:
    capsys.readouterr()
    assert main(["worklist", "--format", "csv", *extra]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == ",".join(CSV_HEADER)
    return list(csv.DictReader(io.StringIO(text)))


def test_two_screens_give_exactly_the_three_changes(screened, capsys):
    rows = _worklist(capsys)
    by_list = {name: {r["patient"] for r in rows if r["list"] == name} for name in LISTS}
    assert by_list["newly-eligible"] == {"pb", "pd"}  # the washout that lifted, the new patient
    assert by_list["no-longer-eligible"] == {"pc"}  # the new exclusion
    assert "pa" not in {r["patient"] for r in rows}
    store = RunStore(screened)
    runs = store.runs()
    first, last = store.state(runs[0], runs), store.state(runs[1], runs)
    for r in rows:
        key = (r["patient"], r["trial"])
        if r["list"] == "newly-eligible" and r["patient"] == "pb":
            bar = first[key].eligible_from
            assert bar is not None and D1 < bar <= D2, r  # it was the bar that lifted
            assert r["criterion"] and r["criterion"] in first[key].failed.split(";")
        if r["list"] == "no-longer-eligible":
            assert last[key].status == "ineligible" and r["criterion"] in last[key].failed.split(";")
            assert first[key].eligible_on(D1)
    # every trial where pb's bar lifted by D2 is listed, and none where it did not
    lifted = {t for (p, t), row in first.items() if p == "pb" and row.eligible_from and row.eligible_from <= D2
              and last[(p, t)].eligible_on(D2)}  # fmt: skip
    assert lifted == {r["trial"] for r in rows if r["patient"] == "pb" and r["list"] == "newly-eligible"}
    assert lifted, "the rituximab washout bars at least one trial of the catalogue"


def test_bar_lifts_soon_lists_dates_within_the_window(screened, capsys):
    for within in (0, 400):
        rows = [r for r in _worklist(capsys, "--within-days", str(within)) if r["list"] == "bar-lifts-soon"]
        for r in rows:
            assert D2 < date.fromisoformat(r["eligible_from"]) <= D2 + timedelta(days=within)
            assert r["criterion"]
        if within == 0:
            assert rows == []
    store = RunStore(screened)
    runs = store.runs()
    later = [k for k, row in store.state(runs[-1], runs).items() if row.eligible_from and row.eligible_from > D2]
    assert len(rows) == len(later)  # with 400 days, every stored bar still ahead is listed


def test_the_trial_filter_and_the_table(screened, capsys):
    everything = _worklist(capsys)
    one = everything[0]["trial"]
    assert {r["trial"] for r in _worklist(capsys, "--trial", one)} == {one}
    capsys.readouterr()
    assert main(["worklist"]) == 0
    assert "newly-eligible" in capsys.readouterr().out


def test_no_store_and_pseudonymised_ids(tmp_path, monkeypatch, trials_dir, capsys, database_url):
    monkeypatch.setenv("TRIAL_MATCHER_DATABASE_URL", database_url)
    get_settings.cache_clear()
    export = _write_export(tmp_path / "e", _population()[1])
    args = ["screen", str(export), "--out", str(tmp_path / "o"), "--as-of", D2.isoformat(), "--workers", "1"]
    assert main([*args, "--no-store"]) == 0
    assert main(["worklist"]) == 1  # nothing stored yet
    monkeypatch.setenv("TRIAL_MATCHER_WORKLIST_PATIENT_IDS", "pseudonymised")
    get_settings.cache_clear()
    assert main(args) == 2  # pseudonyms need the site's key
    assert "TRIAL_MATCHER_PATIENT_ID_SALT" in capsys.readouterr().err
    monkeypatch.setenv("TRIAL_MATCHER_PATIENT_ID_SALT", "site-secret")
    get_settings.cache_clear()
    assert main(args) == 0
    raw = _sql(database_url, "SELECT patient FROM screen_row")
    assert raw and not {p for (p,) in raw} & {"pa", "pb", "pc", "pd"}
    assert all(len(p) == 32 for (p,) in raw)


def test_screening_log_adds_up_and_quotes_the_trial(screened, capsys, tmp_path, catalog):
    store = RunStore(screened)
    trial = next(t for t in catalog.trials.values() if not t.draft)
    # a card the service recorded as dismissed, in D2's month
    _sql(
        screened,
        "INSERT INTO dismissal VALUES ('subject-hash', ?, 0, 'patient-declined', ?)",
        (trial.id, D2.isoformat()),
    )
    out = tmp_path / "log"
    args = ["screening-log", "--trial", trial.id, "--from", D1.isoformat(), "--to", D2.isoformat(), "--out", str(out)]
    assert main(args) == 0
    months = list(csv.DictReader((out / "screening-log.csv").open()))
    assert [m["month"] for m in months] == [D1.isoformat()[:7], D2.isoformat()[:7]]
    runs = store.runs()
    for m, run in zip(months, runs, strict=True):
        parts = sum(int(m[k]) for k in ("likely", "possibly", "not_assessed", "failed"))
        assert int(m["screened"]) == parts == sum(1 for (_, t) in store.state(run, runs) if t == trial.id)
    texts = {c.text for c in trial.criteria} | {trial.entry.text}
    failures = list(csv.DictReader((out / "screening-failures.csv").open()))
    assert all(f["text"] in texts for f in failures)
    for m in months:
        assert int(m["failed"]) == sum(int(f["patients"]) for f in failures if f["month"] == m["month"])
    assert [int(m["dismissed"]) for m in months] == [0, 1]
    page = (out / "screening-log.html").read_text()
    assert "<svg" in page and "<script" not in page and "patient-declined" in page
    assert main(["screening-log", "--trial", "NCT00000000", "--from", "2026-01-01", "--to", "2026-02-01"]) == 2


def test_the_worklist_page_is_behind_the_admin_token(screened, tmp_path):
    from helpers import open_service

    with open_service(tmp_path, database_url=screened) as off:
        assert off.get("/worklist").status_code == 404  # no admin token: the admin pages do not exist
    with open_service(tmp_path, database_url=screened, admin_token="admin-secret-1") as c:
        anonymous = c.get("/worklist")
        assert anonymous.status_code == 401 and "Admin token" in anonymous.text and "pb" not in anonymous.text
        assert "form-action 'self'" in anonymous.headers["content-security-policy"]
        assert c.get("/worklist", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = c.get("/worklist", headers={"Authorization": "Bearer admin-secret-1"})
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        for pid in ("pb", "pc", "pd"):
            assert f">{pid}</a>" in page.text
        assert ">pa</a>" not in page.text
        link = page.text.split('href="/worklist/row/')[1].split('"')[0]
        row = c.get(f"/worklist/row/{link}", headers={"Authorization": "Bearer admin-secret-1"})
        assert row.status_code == 200 and "Protocol text" in row.text
        assert c.get(f"/worklist/row/{link}").status_code == 401
        assert c.get("/worklist/row/999999", headers={"Authorization": "Bearer admin-secret-1"}).status_code == 404
        bad = c.post("/worklist/login", data={"token": "nope"}, follow_redirects=False)
        assert bad.status_code == 401 and "not accepted" in bad.text
        good = c.post("/worklist/login", data={"token": "admin-secret-1"}, follow_redirects=False)
        assert good.status_code == 303 and "httponly" in good.headers["set-cookie"].lower()
        assert "admin-secret-1" not in good.headers["set-cookie"]
        assert c.get("/worklist").status_code == 200  # the session cookie
        c.cookies.set("tm_worklist", "9999999999.forged", path="/worklist")
        assert c.get("/worklist").status_code == 401


def test_an_incremental_state_rests_on_its_own_sources_full_screen(database_url):
    """A one-off screen of another export between a server's full screen and its `--since last` run is not
    the baseline of that run's state: only the same source's full screen is."""
    store = RunStore(database_url)
    row = {"patient": "p1", "trial": "NCT1", "status": "likely-eligible", "eligible_from": "", "failed": "",
           "unknowns": "", "outcomes": ""}  # fmt: skip
    run = {"as_of": D1.isoformat(), "kind": "full", "transaction_time": "2026-11-23T00:00:00+00:00",
           "patients": 1, "pseudonymised": 0}  # fmt: skip
    store.save({**run, "source": "http://fhir.example/r4"}, [row, {**row, "patient": "p2"}])
    store.save({**run, "source": "/exports/other"}, [{**row, "patient": "x9"}])
    store.save({**run, "source": "http://fhir.example/r4", "kind": "incremental"}, [{**row, "status": "ineligible"}])
    runs = store.runs()
    state = store.state(runs[-1], runs)
    assert set(state) == {("p1", "NCT1"), ("p2", "NCT1")}  # before: x9's one-off run stood in for p2's
    assert state[("p1", "NCT1")].status == "ineligible" and state[("p2", "NCT1")].status == "likely-eligible"


def test_a_screens_rows_are_stored_in_one_pass_with_their_patients_counted(database_url):
    """The run's patient count is taken as the rows go in (a screen's rows are read once), given or not;
    empty cells are stored as NULL, so a row without a bar has no eligible_from."""
    from cds_service.screening.rows import Rows

    store = RunStore(database_url)
    cells = {"status": "ineligible", "eligible_from": "", "failed": "cohort entry", "unknowns": "", "outcomes": ""}
    template = [{"patient": "", "trial": t, **cells} for t in ("NCT1", "NCT2")]
    rows = Rows()
    rows.add([{"patient": "p05", "trial": t, **cells, "status": "possibly-eligible"} for t in ("NCT2", "NCT1")])
    rows.add_uniform(template, [f"p{i:02d}" for i in range(10) if i != 5])
    run = {"as_of": D1.isoformat(), "source": "/exports/a", "kind": "full", "pseudonymised": 0}
    store.save(run, rows)
    store.save({**run, "patients": 7}, [{"patient": "q", "trial": "NCT1", **cells}])  # given: kept as given
    first, second = store.runs()
    assert (first.patients, second.patients) == (10, 7)
    state = store.state(first, [first])
    assert len(state) == 20 and state[("p05", "NCT1")].status == "possibly-eligible"
    assert state[("p03", "NCT2")].eligible_from is None and state[("p03", "NCT2")].unknowns in ("", None)


def test_a_failed_criterion_that_is_now_unknown_is_noted_not_taken_for_eligibility():
    """A failing result that aged out of its window makes the criterion unknown, never a fail, so the patient is
    listed as newly eligible; the entry says why, so a coordinator re-checks the data before calling."""

    def stored(status: str, failed: str, unknowns: str, run: int) -> StoredRow:
        return StoredRow(run, run, "p1", "T1", status, None, failed, unknowns, "")

    before = {("p1", "T1"): stored("ineligible", "inc-4", "", 1)}
    for unknowns, note in (("inc-2;inc-4", AGED_OUT), ("inc-2", "")):  # unknown now, or met now
        now = {("p1", "T1"): stored("possibly-eligible", "", unknowns, 2)}
        (entry,) = compare(now, before, D2, D1, 30)
        assert (entry.list, entry.criterion, entry.note) == ("newly-eligible", "inc-4", note)
        assert entry.csv()["note"] == note


@pytest.mark.parametrize(
    ("status", "said"), [("ineligible", "Outside the population"), ("not-assessed", "Not assessed")]
)
def test_a_row_without_criteria_says_why_by_its_status(catalog, status, said):
    """A not-assessed row (the diagnosis could not be read: a person checks it) is not told to staff as a patient
    outside the trial's population."""
    from cds_service.views.worklist import render_row
    from cds_service.worklist.runs import Run, StoredRow

    trial = next(iter(catalog.trials.values()))
    run = Run(1, "2026-12-01T00:00:00", date(2026, 12, 1), "export", "full", None, 1, False)
    page = render_row(run, StoredRow(1, 1, "p1", trial.id, status, None, "", "", ""), trial)
    assert said in page
    assert ("Outside the population" in page) == (status == "ineligible")
