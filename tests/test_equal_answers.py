"""Equal answers whatever the order of the record: the engine, the screen's cohort-first path and the hook
give the same verdicts for a record shuffled and with resources sent twice (real records repeat them)."""

from __future__ import annotations

import copy
import random
import uuid

import pytest
from helpers import ext, open_service

from cds_service.screening.run import cohort_first
from demo.hook_request import prefetch_for
from demo.load import demo_bundles, resources


def verdicts(trials) -> dict[str, tuple]:
    return {t.id: (t.status, t.eligible_from, tuple((c.id, c.outcome) for c in t.criteria)) for t in trials}


def scrambled(res: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = copy.deepcopy(res)
    out += [copy.deepcopy(r) for r in rng.sample(out, k=max(1, len(out) // 4)) if r["resourceType"] != "Patient"]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_shuffled_and_duplicated_records_get_the_same_verdicts(catalog, as_of, seed, tmp_path):
    bundles = demo_bundles(as_of)
    with open_service(tmp_path, as_of=as_of) as client:
        for pid, bundle in bundles.items():
            res = resources(bundle)
            want = verdicts(catalog.report(catalog.facts(res, pid), as_of).trials)
            mixed = scrambled(res, seed)
            assert verdicts(catalog.report(catalog.facts(mixed, pid), as_of).trials) == want, pid
            assert verdicts(cohort_first(catalog, pid, mixed, as_of, None)) == want, pid
            hook = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": pid},
                    "prefetch": prefetch_for(mixed, pid)}  # fmt: skip
            cards = client.post("/cds-services/trial-matcher", json=hook).json()["cards"]
            shown = {(ext(c)["trialId"], ext(c)["status"]) for c in cards}
            expected = {(t, v[0]) for t, v in want.items() if v[0] in ("likely-eligible", "possibly-eligible")}
            assert shown == expected, pid
