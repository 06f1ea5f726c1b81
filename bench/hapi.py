"""The no-prefetch hook against HAPI FHIR JPA: alone, and under concurrent clients, within the hook budget.

    .venv/bin/python -m bench.hapi                       # builds and starts HAPI on a free port
    .venv/bin/python -m bench.hapi --fhir-base URL       # a HAPI already running (no auth)

(1) For patients with about 10 and about 1,000 Observations: the hook with no prefetch (the service
    reads HAPI itself) as a ratio to the slowest single FHIR search it issues (each timed alone, all
    pages), and to all its searches issued at once from a plain client (what the server itself takes
    for them: on two cores it cannot answer ten searches in the time of one). Target: <= 1.5 x the
    latter. The plain unfiltered Observation search is timed too, to show what the refined one saves.
(2) 96 hooks from 8 and from 16 concurrent clients over the 1,000-Observation patients, with the
    service's default budget: how many ran out of it (a card naming a source it could not read, or an
    error), target none; and the hooks/s as a ratio to what the server itself sustains for the same
    searches from a plain client with no service in between (the server's floor), target >= 0.8.
    When the server's floor is below clients / budget, no client can keep every hook in budget.
The figures are printed and drawn in bench-hapi.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

from bench.chart import bar_chart
from bench.patients import make_patient
from bench.run import hook_body, pct, read_all
from bench.service import ServiceProcess, free_port
from cds_service.fhir.mappings import load_mappings
from cds_service.fhir.queries import QUERIES, plain_search, searches
from cds_service.settings import REPO_ROOT
from demo import synthetic as syn

AS_OF = date.today()
SHORTFALL = ("could not be read", "could be read only in part", "only the newest results")


def patient_with(n_obs: int, pid: str) -> list[dict]:
    """A bench patient (bench/patients.py mix) grown until it holds `n_obs` Observations."""
    n = n_obs
    while True:
        res = make_patient(n, pid, AS_OF)
        have = sum(r["resourceType"] == "Observation" for r in res)
        if have >= n_obs:
            return res
        n += n_obs - have


def load(base: str, patients: list[list[dict]]) -> None:
    with httpx.Client(timeout=600) as c:
        for res in patients:
            r = c.post(base, json=syn.bundle(res, "transaction"), headers={"Content-Type": "application/fhir+json"})
            r.raise_for_status()


async def timed(c: httpx.AsyncClient, url: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await read_all(c, url)
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs)


async def slowest_searches(base: str, pid: str, codes: frozenset, repeat: int) -> tuple[float, float, float]:
    """Median ms of the slowest single search the service issues, of all of them at once from a plain
    client (the server's own floor for this hook), and of the plain unfiltered Observation search."""
    async with httpx.AsyncClient(timeout=300) as c:
        issued = [f"{base}/{s.path}" for key in QUERIES for s in searches(key, pid, codes)]
        slowest = max([await timed(c, u, repeat) for u in issued])
        together = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await asyncio.gather(*(read_all(c, u) for u in issued))
            together.append((time.perf_counter() - t0) * 1000)
        plain = await timed(c, f"{base}/{plain_search('observations', pid)}", repeat)
    return slowest, statistics.median(together), plain


async def server_floor(base: str, pids: list[str], codes: frozenset, total: int, clients: int) -> float:
    """Hooks/s the server itself sustains: the same searches per hook from a plain client, no service."""
    queue = list(range(total))

    async def client(c: httpx.AsyncClient) -> None:
        while queue:
            pid = pids[queue.pop() % len(pids)]
            urls = [f"{base}/{s.path}" for key in QUERIES for s in searches(key, pid, codes)]
            await asyncio.gather(*(read_all(c, u) for u in urls))

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=256)) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        return total / (time.perf_counter() - t0)


async def hooks(url: str, bodies: list[bytes], total: int, clients: int) -> tuple[list[float], int]:
    """`total` hook calls from `clients` concurrent clients: latencies (ms) and how many fell short."""
    lat: list[float] = []
    short = 0
    queue = list(range(total))

    async def client() -> None:
        nonlocal short
        async with httpx.AsyncClient(timeout=60) as c:
            while queue:
                i = queue.pop()
                t0 = time.perf_counter()
                r = await c.post(url, content=bodies[i % len(bodies)], headers={"Content-Type": "application/json"})
                lat.append((time.perf_counter() - t0) * 1000)
                short += r.status_code != 200 or any(s in r.text for s in SHORTFALL)

    await asyncio.gather(*(client() for _ in range(clients)))
    return lat, short


def measure(base: str, work: Path, quick: bool) -> tuple[list[dict], list[dict]]:
    codes = frozenset(load_mappings(REPO_ROOT / "mappings").obs_index)
    cohorts = {n: [patient_with(n, f"hapi-bench-{n}-{i}") for i in range(4 if quick else 16)] for n in (10, 1000)}
    for n, patients in cohorts.items():
        load(base, patients)
        print(f"... loaded {len(patients)} patients with {n} Observations", file=sys.stderr)
    svc = ServiceProcess(work, TRIAL_MATCHER_ALLOWED_FHIR_SERVERS=base)  # the default budget and timeouts
    url = f"{svc.url}/cds-services/trial-matcher"
    try:
        single = []
        for n, patients in cohorts.items():
            pid = patients[0][0]["id"]
            body = hook_body([], pid, base, prefetch=False)
            lat, short = asyncio.run(hooks(url, [body], 3 if quick else 10, 1))
            slowest, together, plain = asyncio.run(slowest_searches(base, pid, codes, 5))
            hook_ms = statistics.median(lat)
            row = {"obs": n, "hook": hook_ms, "slowest": slowest, "together": together, "plain": plain}
            single.append({**row, "short": short})
        bodies = [hook_body([], p[0]["id"], base, prefetch=False) for p in cohorts[1000]]
        loaded = []
        pids = [p[0]["id"] for p in cohorts[1000]]
        for clients in (8, 16):
            t0 = time.perf_counter()
            lat, short = asyncio.run(hooks(url, bodies, 96, clients))
            rate = 96 / (time.perf_counter() - t0)
            floor = asyncio.run(server_floor(base, pids, codes, 96, clients))
            row = {"clients": clients, "p50": pct(lat, 50), "p99": pct(lat, 99), "short": short}
            loaded.append({**row, "rate": rate, "floor": floor})
    finally:
        svc.stop()
    return single, loaded


def report(single: list[dict], loaded: list[dict]) -> None:
    print(f"\nno-prefetch hook against HAPI FHIR JPA 8.8.0 — {date.today()}, loopback, same run\n")
    print(
        "| Observations | hook ms | slowest search issued ms | hook / slowest | all searches at once ms | "
        "hook / at once (target <= 1.5) | plain Observation search ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in single:
        print(
            f"| {r['obs']} | {r['hook']:.0f} | {r['slowest']:.0f} | {r['hook'] / r['slowest']:.2f} | "
            f"{r['together']:.0f} | {r['hook'] / r['together']:.2f} | {r['plain']:.0f} |"
        )
    print("\n| clients | hooks | p50 ms | p99 ms | out of budget (target 0) | hooks/s | server alone hooks/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in loaded:
        print(
            f"| {r['clients']} | 96 | {r['p50']:.0f} | {r['p99']:.0f} | {r['short']} | {r['rate']:.1f} | "
            f"{r['floor']:.1f} | {r['rate'] / r['floor']:.2f} |"
        )
    rows = [(f"{r['obs']} obs: hook, no prefetch", r["hook"]) for r in single]
    rows += [(f"{r['obs']} obs: slowest search issued", r["slowest"]) for r in single]
    rows += [(f"{r['obs']} obs: plain Observation search", r["plain"]) for r in single]
    rows += [(f"{r['clients']} clients: p99 hook", r["p99"]) for r in loaded]
    bar_chart(rows, REPO_ROOT / "bench-hapi.svg", "{:.0f} ms", "No-prefetch hook against HAPI (ms)")
    print("\nchart: bench-hapi.svg")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fhir-base", help="a running HAPI server's base URL (default: start one)")
    p.add_argument("--quick", action="store_true", help="4 patients per size instead of 16")
    args = p.parse_args(argv)
    port = None
    base = args.fhir_base
    if not base:
        port = free_port()
        subprocess.run([str(REPO_ROOT / "scripts" / "hapi-fhir.sh"), "start", str(port)], check=True, timeout=900)
        base = f"http://127.0.0.1:{port}/fhir"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hapi-") as tmp:
            single, loaded = measure(base.rstrip("/"), Path(tmp), args.quick)
    finally:
        if port:
            subprocess.run([str(REPO_ROOT / "scripts" / "hapi-fhir.sh"), "stop", str(port)], timeout=60)
    report(single, loaded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
