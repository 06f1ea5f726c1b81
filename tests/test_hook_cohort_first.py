"""The hooks read a chart outside every trial's cohort no further than its Patient and Conditions.

Most charts a clinician opens are of patients without the disease any trial studies. Their answer (no
card) is decided by the cohort entry, which reads only Conditions; normalising their years of Observations
and medications was most of the hook's time, for nothing. The statuses stay those of the whole record.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from helpers import drop, open_service

from cds_service.fhir.facts import SOURCES
from cds_service.fhir.gather import Gathered, Gatherer
from cds_service.fhir.observations import ObservationReader
from cds_service.fhir.urls import AllowList
from cds_service.pipeline import Matcher
from demo import synthetic as syn
from demo.hook_request import prefetch_for
from demo.load import demo_bundles, resources

SLE_CODES = ("55464009", "M32.9", "M32.10", "M32.14", "M32.19")


def without_sle(res: list[dict]) -> list[dict]:
    """The same chart with its lupus diagnoses taken out and essential hypertension on its problem list."""
    pid = next(r["id"] for r in res if r["resourceType"] == "Patient")
    return [*drop(res, *SLE_CODES), syn.condition(pid, icd="I10", display="Essential hypertension")]


def whole_and_hook(catalog, got: Gathered, pid: str, as_of):
    """The report of the whole record and the one the hooks make (`whole=False`), each as its trials' dump."""
    matcher = Matcher(catalog, Gatherer(httpx.AsyncClient(), AllowList()))
    dump = lambda report: [t.model_dump(mode="json") for t in report.trials]  # noqa: E731
    return dump(matcher.report(got, pid, as_of)), dump(matcher.report(got, pid, as_of, whole=False))


@pytest.mark.parametrize("unread", [None, "Condition", "Observation"])
def test_the_hooks_report_what_the_whole_record_says_inside_and_outside_the_cohorts(catalog, as_of, unread):
    """Every demo chart, and each without its lupus: the same trials, statuses, entries and criteria; with
    every source read, and with the problem list (then no entry can be `out`) or the labs left unread."""
    complete = set(SOURCES) - {unread}
    for pid, bundle in demo_bundles(as_of).items():
        for res in (resources(bundle), without_sle(resources(bundle))):
            whole, hook = whole_and_hook(catalog, Gathered(resources=res, complete=complete), pid, as_of)
            assert hook == whole, pid


@pytest.fixture()
def observations_read(monkeypatch):
    """How many Observations the normaliser reads (the hook runs in this process, in a worker thread)."""
    seen = []
    real = ObservationReader._observation

    def counting(self, obs, facts):
        seen.append(obs.get("id"))
        return real(self, obs, facts)

    monkeypatch.setattr(ObservationReader, "_observation", counting)
    return seen


def test_a_chart_outside_every_cohort_is_answered_from_its_conditions(tmp_path, as_of, observations_read):
    inside = syn.eligible_patient(as_of)
    outside = without_sle(inside)
    assert sum(r["resourceType"] == "Observation" for r in outside) > 5  # a chart with labs to skip
    with open_service(tmp_path, as_of=as_of) as client:

        def hook(res: list[dict]) -> list[dict]:
            body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"},
                    "prefetch": prefetch_for(res, "p1")}  # fmt: skip
            r = client.post("/cds-services/trial-matcher", json=body)
            assert r.status_code == 200, r.text[:300]
            return r.json()["cards"]

        assert hook(inside) and observations_read  # the counter sees a chart inside a cohort read whole
        observations_read.clear()
        assert hook(outside) == []
        assert observations_read == []  # outside: not one Observation normalised


def test_an_order_for_a_chart_outside_every_cohort_reads_no_further(tmp_path, as_of, observations_read):
    outside = without_sle(syn.eligible_patient(as_of))
    order = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "medicationCodeableConcept": {"text": "rituximab 500 mg IV"}}  # fmt: skip
    with open_service(tmp_path, as_of=as_of) as client:
        body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                "context": {"patientId": "p1", "userId": "Practitioner/1",
                            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]}},
                "prefetch": prefetch_for(outside, "p1")}  # fmt: skip
        r = client.post("/cds-services/trial-order-sign", json=body)
        assert r.status_code == 200 and r.json()["cards"] == []
    assert observations_read == []
