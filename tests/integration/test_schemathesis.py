"""Schemathesis against the service's own OpenAPI, over HTTP: no 5xx, responses and status codes match the schema.

Driven through schemathesis' Python API (its pytest plugin does not yet support pytest 9).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .test_faults_privacy_shutdown import Service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Service]:
    svc = Service(
        tmp_path_factory.mktemp("st"), TRIAL_MATCHER_ADMIN_TOKEN="admin-token", TRIAL_MATCHER_LOG_LEVEL="WARNING"
    )
    yield svc
    svc.stop()


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_against_its_schema(live):
    operations = _operations(live.url)
    assert len(operations) >= 10
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            # positive_data_acceptance is a heuristic ("schema-valid data must be accepted") that business rules
            # legitimately break (an unknown trial id, /match without a Bundle or a configured server).
            case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

        try:
            check()
        except Exception as e:  # name the operation in the failure
            raise AssertionError(f"{op.method.upper()} {op.path}: {e}") from e
