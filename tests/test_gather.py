"""Gathering under faults (fakes only inject faults; the happy path runs against a real server in integration/)."""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import parse_qs, quote

import httpx
import pytest
import respx

from cds_service.fhir.facts import MEDICATION_SOURCES
from cds_service.fhir.gather import Gatherer
from cds_service.fhir.queries import MAX_CODES_CHARS, QUERIES
from cds_service.fhir.urls import AllowList

BASE = "http://127.0.0.1:9999/fhir"


def run(coro):
    return asyncio.run(coro)


def searchset(resources, next_url=None):
    b = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


MEDS = (*MEDICATION_SOURCES, "Immunization")
# every source the service searches (from the code, so a new source joins these tests)
SEARCHED = frozenset(t for _, t in QUERIES.values()) - {"Patient"}


def others(*besides: str) -> str:
    """A route for the searches of every source but Observation (and `besides`)."""
    return r".*/(" + "|".join(sorted(SEARCHED - {"Observation", *besides})) + r")\?.*"


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-01-01"}


def gatherer(client, **kw) -> Gatherer:
    return Gatherer(client, AllowList.parse(BASE), kw.get("page_cap", 5), kw.get("budget", 1.0))


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://127.0.0.1:9999/fhir", "http://127.0.0.1:9999", True),
        ("http://127.0.0.1:9999/fhir", "http://127.0.0.1", False),  # an entry without a port means port 80
        ("http://127.0.0.10:9999/fhir", "http://127.0.0.1:9999", False),
        ("http://127.0.0.1.evil.example/fhir", "http://127.0.0.1", False),
        ("https://ehr.example.org/fhir/r4", "https://ehr.example.org/fhir", True),
        ("https://ehr.example.org:443/fhir/r4", "https://ehr.example.org/fhir", True),
        ("https://ehr.example.org.attacker.tld/fhir", "https://ehr.example.org", False),
        ("https://ehr.example.org/fhirx", "https://ehr.example.org/fhir", False),
        ("https://ehr.example.org/fhir/../admin", "https://ehr.example.org/fhir", False),
        ("https://ehr.example.org/fhir?x=1", "https://ehr.example.org/fhir", False),
        ("https://ehr.example.org/fhir#x", "https://ehr.example.org/fhir", False),
        ("https://u:p@ehr.example.org/fhir", "https://ehr.example.org/fhir", False),
        ("http://ehr.example.org/fhir", "https://ehr.example.org/fhir", False),
        ("https://ehr.example.org:8443/fhir", "https://ehr.example.org:443", False),
        ("http://169.254.169.254/latest", "http://localhost", False),
        ("http://127.0.0.1:5/x", "", False),  # the default allow-list contacts nothing
        ("http://anything", "*", True),
    ],
)
def test_allow_list(url, allowed, ok):
    assert (AllowList.parse(allowed).check(url) is not None) is ok


@respx.mock
def test_paging_follows_next_and_skips_operation_outcomes():
    respx.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    page2 = f"{BASE}/Observation?page=2"
    respx.get(page2).respond(
        json=searchset([{"resourceType": "Observation", "id": "o2", "subject": {"reference": "Patient/p1"}}])
    )
    respx.get(url__startswith=f"{BASE}/Observation?patient=").respond(
        json=searchset(
            [
                {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}},
                {"resourceType": "OperationOutcome", "issue": []},
            ],
            page2,
        )
    )
    respx.get(url__regex=others()).respond(json=searchset([]))

    async def go():
        async with httpx.AsyncClient() as c:
            return await gatherer(c).gather("p1", None, BASE, "tok")

    got = run(go())
    assert sorted(r["id"] for r in got.resources if r["resourceType"] == "Observation") == ["o1", "o2"]
    assert got.complete == SEARCHED and got.gaps == []
    assert respx.calls[0].request.headers["Authorization"] == "Bearer tok"


@respx.mock
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (httpx.Response(500), "HTTP 500"),
        (httpx.Response(403), "HTTP 403"),
        (httpx.Response(200, text="<html>not json</html>"), "not JSON"),
        (httpx.Response(302, headers={"Location": "http://10.0.0.1/steal"}), "HTTP 302"),
        (httpx.ConnectError("refused"), "ConnectError"),
    ],
)
def test_faults_become_gaps_never_exceptions(fault, expected, caplog):
    respx.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    route = respx.get(url__startswith=f"{BASE}/Observation")
    if isinstance(fault, Exception):
        route.mock(side_effect=fault)
    else:
        route.mock(return_value=fault)
    respx.get(url__regex=others()).respond(json=searchset([]))

    async def go():
        async with httpx.AsyncClient() as c:
            return await gatherer(c).gather("p1", None, BASE, None)

    with caplog.at_level("WARNING", logger="trial_matcher"):
        got = run(go())
    assert "Observation" not in got.complete and {"Condition", *MEDS} <= got.complete
    # the caller learns what could not be read; why (status, exception) goes to the operator's log only
    assert any("results (Observation) could not be read" in g for g in got.gaps)
    assert not any(expected in g for g in got.gaps)
    assert any(getattr(r, "error_type", None) and expected in r.error_type for r in caplog.records)
    assert all("10.0.0.1" not in str(call.request.url) for call in respx.calls)  # redirect not followed


@respx.mock
def test_slow_server_is_cut_at_the_budget():
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json=searchset([]))

    respx.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    respx.get(url__startswith=f"{BASE}/Observation").mock(side_effect=slow)
    respx.get(url__regex=others()).respond(json=searchset([]))

    async def go():
        async with httpx.AsyncClient() as c:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got = await gatherer(c, budget=0.3).gather("p1", None, BASE, None)
            return got, loop.time() - t0

    got, elapsed = run(go())
    assert elapsed < 1.5
    assert any("could not be read" in g for g in got.gaps) and "Observation" not in got.complete


@respx.mock
def test_page_cap_and_foreign_next_links(caplog):
    respx.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    respx.get(url__startswith=f"{BASE}/Observation").respond(
        json=searchset([], f"{BASE}/Observation?patient=p1&again=1")
    )
    respx.get(url__startswith=f"{BASE}/Condition").respond(json=searchset([], "http://elsewhere.example/fhir/x"))
    respx.get(url__regex=others("Condition")).respond(json=searchset([]))

    async def go():
        async with httpx.AsyncClient() as c:
            return await gatherer(c, page_cap=3).gather("p1", None, BASE, None)

    with caplog.at_level("WARNING", logger="trial_matcher"):
        got = run(go())
    reasons = [getattr(r, "error_type", "") for r in caplog.records]
    assert any("more than 3 pages" in r for r in reasons)
    assert any("outside the FHIR server" in r for r in reasons)
    assert got.complete == SEARCHED - {"Observation", "Condition"}
    assert not any(str(c.request.url).startswith("http://elsewhere.example") for c in respx.calls)


def test_prefetch_only_null_means_none_on_record_and_other_patients_are_dropped():
    other = {"resourceType": "Condition", "id": "x", "subject": {"reference": "Patient/someone-else"}}

    async def go():
        async with httpx.AsyncClient() as c:
            return await gatherer(c).gather(
                "p1",
                {key: None for key in QUERIES} | {"patient": PATIENT, "conditions": searchset([other])},
                None,
                None,
            )

    got = run(go())
    assert [r["id"] for r in got.resources] == ["p1"]
    assert got.complete == SEARCHED
    assert any("1 resource(s) not clearly about this patient were set aside" in g for g in got.gaps)


def test_missing_keys_without_server_are_not_complete():
    async def go():
        async with httpx.AsyncClient() as c:
            return await gatherer(c).gather("p1", {"patient": PATIENT}, None, None)

    got = run(go())
    assert got.patient_found and got.complete == set()


# --- reading a long chart: only the codes the criteria read, newest first -----------------------------

CODES = frozenset({("http://loinc.org", f"{n}-0") for n in range(1000, 1400)})  # 400 codes: too many for one URL


def coded_gatherer(client, **kw) -> Gatherer:
    return Gatherer(client, AllowList.parse(BASE), kw.get("page_cap", 5), kw.get("budget", 1.0), CODES)


def obs(i: int, code: str = "1000-0") -> dict:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
    }


def others_empty():
    respx.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    respx.get(url__regex=others()).respond(json=searchset([]))


def fetch(page_cap: int = 5):
    async def go():
        async with httpx.AsyncClient() as c:
            return await coded_gatherer(c, page_cap=page_cap).gather("p1", None, BASE, None)

    return run(go())


@respx.mock
def test_observations_are_asked_by_the_codes_criteria_read_newest_first_and_counted_once():
    others_empty()
    route = respx.get(url__startswith=f"{BASE}/Observation").respond(json=searchset([obs(1), obs(2)]))
    got = fetch()
    asked = [c.request.url.params for c in route.calls]
    assert len(asked) >= 2 and all(len(quote(p["combo-code"], safe="")) <= MAX_CODES_CHARS for p in asked)
    assert all(p["_sort"] == "-date" and p["patient"] == "p1" for p in asked)
    codes = [c for p in asked for c in p["combo-code"].split(",")]
    assert sorted(codes) == sorted(c for _, c in CODES)  # by code alone: whatever system the server keeps
    assert sorted(r["id"] for r in got.resources if r["resourceType"] == "Observation") == ["o1", "o2"]
    assert "Observation" in got.complete and got.gaps == []


@pytest.mark.parametrize("seed", range(30))
def test_codes_are_shared_out_evenly_under_both_caps_each_once(seed):
    """Long (a site's system) and short (LOINC) tokens, any mix: each asked once, no search over either cap."""
    import random

    from cds_service.fhir.queries import MAX_CODES_PER_SEARCH, _packed, _tokens

    rng = random.Random(seed)
    site = "https://lab.example.org/" + "x" * rng.choice([5, 60, 400])
    codes = frozenset(
        {("http://loinc.org", f"{rng.randrange(10**5)}-{rng.randrange(10)}") for _ in range(rng.randrange(1, 300))}
        | {(site, f"c,{i}") for i in range(rng.randrange(0, 40))}
    )
    values = _packed(codes)
    split = [v.replace("\\,", "\x00").split(",") for v in values]
    assert sorted(t.replace("\x00", "\\,") for ts in split for t in ts) == sorted(_tokens(codes))
    assert all(len(ts) <= MAX_CODES_PER_SEARCH and len(quote(v, safe="")) <= MAX_CODES_CHARS
               for v, ts in zip(values, split, strict=True))  # fmt: skip
    in_order, size = [[]], 0  # packing the sorted tokens in order: never fewer searches than sharing out
    for t in _tokens(codes):
        cost = len(quote(t, safe="")) + 3
        if in_order[-1] and (size + cost > MAX_CODES_CHARS or len(in_order[-1]) == MAX_CODES_PER_SEARCH):
            in_order, size = [*in_order, []], 0
        in_order[-1].append(t)
        size += cost
    assert len(values) <= len(in_order)


def test_loinc_codes_are_asked_without_their_system_and_a_sites_own_with_it():
    """A server may keep LOINC under its OID; a site's short code alone would match every system's."""
    from cds_service.fhir.queries import prefetch_templates, searches

    codes = {("http://loinc.org", "718-7"), ("https://lab.example.org/codes", "HGB"), ("urn:local", "a|b,c")}
    template, search = prefetch_templates(codes)["observations"], searches("observations", "p", codes)[0].path
    for query in (template, search):
        value = parse_qs(query.split("?", 1)[1])["combo-code"][0]  # the separator `|` bare, a code's `|` escaped
        assert value == "718-7,https://lab.example.org/codes|HGB,urn:local|a\\|b\\,c"


@respx.mock
def test_a_server_refusing_the_refined_search_is_asked_the_plain_one():
    others_empty()

    def answer(request):
        if "combo-code" in request.url.params:
            return httpx.Response(400, json={"resourceType": "OperationOutcome"})
        return httpx.Response(200, json=searchset([obs(7)]))

    route = respx.get(url__startswith=f"{BASE}/Observation").mock(side_effect=answer)
    got = fetch()
    assert [r["id"] for r in got.resources if r["resourceType"] == "Observation"] == ["o7"]
    assert "Observation" in got.complete and got.gaps == []
    assert sum("combo-code" not in c.request.url.params for c in route.calls) == 1  # the plain search, once


@respx.mock
def test_a_newest_first_read_cut_at_the_page_cap_keeps_the_newest_and_claims_no_absence():
    others_empty()
    pages = itertools.count()

    def answer(request):
        n = next(pages)
        return httpx.Response(200, json=searchset([obs(n)], f"{BASE}/Observation?patient=p1&page={n + 1}"))

    respx.get(url__startswith=f"{BASE}/Observation").mock(side_effect=answer)
    got = fetch(page_cap=2)
    searches = len({c.request.url.params.get("combo-code") for c in respx.calls if "combo-code" in str(c.request.url)})
    assert len([r for r in got.resources if r["resourceType"] == "Observation"]) == 2 * searches  # 2 pages each
    assert "Observation" not in got.complete
    assert any("only the newest results were read" in g for g in got.gaps)


@respx.mock
def test_a_newest_first_read_failing_on_a_later_page_keeps_the_pages_it_read():
    others_empty()

    def answer(request):
        if "page" in request.url.params:
            return httpx.Response(500)
        return httpx.Response(200, json=searchset([obs(1)], f"{BASE}/Observation?patient=p1&page=2"))

    respx.get(url__startswith=f"{BASE}/Observation").mock(side_effect=answer)
    got = fetch()
    assert [r["id"] for r in got.resources if r["resourceType"] == "Observation"] == ["o1"]
    assert "Observation" not in got.complete and got.sources["observations"] == "fetched"
    assert any("could be read only in part" in g for g in got.gaps)
