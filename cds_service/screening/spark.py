"""The Spark engine: the embedded engine's per-patient evaluation, on Apache Spark.

How a health system with millions of patients runs `screen`: the export's lines are read by Spark
(`textFile` reads `.ndjson` and `.ndjson.gz` alike), tagged by the same rules as bulk.py (malformed,
other type, no patient, Medication, or a patient's), grouped by patient with a shuffle instead of
partition files on disk, and each group is evaluated by run.py's code in the Python workers, one
catalogue per worker. Medication resources, which belong to no patient, are broadcast to every
patient as the embedded engine copies them into every partition, so both engines see the same record
and give the same rows. `local[*]` by default; `--spark-master` names a cluster (whose workers need
this package installed). PySpark is an optional dependency (`pip install .[spark]`).

The embedded engine's limits hold here too: Hadoop's line reader skips lines over the line limit before
they reach Python (uncounted: Spark does not say how many), and patients over the per-patient limits
are found by a size aggregation and left out before their records are grouped, so no worker holds one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from cds_service.screening import run
from cds_service.screening.bulk import ReadLimits, ReadStats, classify
from cds_service.screening.funnel import Funnel
from cds_service.screening.route import entry_files


def tag(line: str) -> tuple[str, str | None, str]:
    """(kind, patient id, line): bulk.py's rules, so both engines set the same lines aside (a byte order
    mark starting a line read as nothing, as `bulk.unmarked` reads it)."""
    line = line.removeprefix("\ufeff")
    kind, pid = classify(line)
    return kind, pid, line


def evaluate(groups: Iterable[tuple[str, Iterable[str]]], init: tuple, as_of: date, trial_ids: list[str] | None,
             shared: list[str]) -> Iterator[tuple[str, Any]]:  # fmt: skip
    """One Spark partition of patients: ("row", row) for each patient and trial, then ("funnel", its counts)."""
    if run._CATALOG is None:
        run._init(*init)
    medications = [orjson.loads(m) for m in shared]
    records = ((pid, [orjson.loads(line) for line in lines]) for pid, lines in groups)
    # as the embedded engine's patients_in: a record without its Patient is not screened
    whole = ((pid, res) for pid, res in records if any(r["resourceType"] == "Patient" for r in res))
    rows, funnel = run.evaluate_patients(whole, as_of, trial_ids, shared=medications)
    yield from (("row", r) for r in rows)
    yield "funnel", funnel


def screen_spark(
    folder: Path,
    catalog_dirs: tuple[Path, Path, int],
    as_of: date,
    trial_ids: list[str] | None = None,
    master: str = "local[*]",
) -> run.Screening:
    """Screen an export on Spark; the result has the embedded engine's shape (rows sorted the same way)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this interpreter, with this package
    from pyspark.sql import SparkSession  # optional dependency: imported only when asked for

    start = time.perf_counter()
    limits = ReadLimits.from_settings()
    spark = (
        SparkSession.builder.master(master)
        .appName("trial-matcher screen")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        # Hadoop keeps a line when the bytes it consumed, terminator included, are under the maximum
        .config("spark.hadoop.mapreduce.input.linerecordreader.line.maxlength", str(limits.max_line_bytes + 2))
        .getOrCreate()
    )
    try:
        sc = spark.sparkContext
        sc.setLogLevel("ERROR")
        # the embedded engine's order (Patient and Condition files first): of two Medications with one id the
        # later is read, so both engines must read the same one later
        entry, rest = entry_files(folder)
        tagged = sc.textFile(",".join(str(p) for p in entry + rest)).map(tag).cache()
        stats = _stats(tagged)
        shared = tagged.filter(lambda t: t[0] == "medication").map(lambda t: t[2]).collect()
        mappings_dir, trials_dir, horizon = catalog_dirs
        init = (str(mappings_dir), str(trials_dir), horizon)
        owned = tagged.filter(lambda t: t[0] in ("patient", "record")).map(lambda t: (t[1], t[2]))
        stats.too_large = _too_large(owned, limits)
        big = sc.broadcast(stats.too_large)
        by_patient = owned.filter(lambda kv: kv[0] not in big.value).groupByKey()
        out = by_patient.mapPartitions(lambda groups: evaluate(groups, init, as_of, trial_ids, shared)).collect()
    finally:
        spark.stop()
    rows = sorted((v for k, v in out if k == "row"), key=lambda r: (r["patient"], r["trial"]))
    funnel = Funnel()
    for k, v in out:
        if k == "funnel":
            funnel.merge(v)
    return run.Screening(rows, funnel, stats, time.perf_counter() - start, run.peak_rss_mb())


def _too_large(owned: Any, limits: ReadLimits) -> set[str]:
    """Patients over the per-patient limits, as the embedded reader counts them (bytes with the newline)."""
    max_bytes, max_resources = limits.max_patient_bytes, limits.max_patient_resources
    sizes = owned.mapValues(lambda line: (len(line.encode("utf-8")) + 1, 1)).reduceByKey(
        lambda a, b: (a[0] + b[0], a[1] + b[1])
    )
    return set(sizes.filter(lambda kv: kv[1][0] > max_bytes or kv[1][1] > max_resources).keys().collect())


def _stats(tagged: Any) -> ReadStats:
    counts = tagged.map(lambda t: t[0]).countByValue()
    stats = ReadStats(
        lines=sum(n for k, n in counts.items() if k != "blank"),
        resources=sum(counts.get(k, 0) for k in ("patient", "record", "medication", "no_patient", "two_patients")),
        malformed=counts.get("malformed", 0),
        no_patient=counts.get("no_patient", 0),
        other_types=counts.get("other_types", 0),
        two_patients=counts.get("two_patients", 0),
    )
    stats.patients = set(tagged.filter(lambda t: t[0] == "patient").map(lambda t: t[1]).distinct().collect())
    return stats
