"""Bounded load on loopback: concurrent clients send hook calls and feedback posts.

    .venv/bin/python -m bench.load --clients 32 --seconds 60

Prints a table: requests, errors, throughput, latency percentiles, feedback
acknowledged vs persisted (counted in the database afterwards), and the
service's resident memory over the run. Exits non-zero on any error, any lost
feedback record, or memory growth over --max-growth-mb in the second half.
Traffic goes only to the service it starts on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from demo.hook_request import hook_request

from .service import ServiceProcess, rss_mb

PATIENTS = ["demo-amara", "demo-bruno", "demo-chen", "demo-dana", "demo-eli", "demo-fiona"]


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def client_loop(url: str, bodies: list[bytes], stop_at: float, max_requests: int, stats: dict) -> None:
    rng = random.Random()
    async with httpx.AsyncClient(timeout=60) as c:
        i = 0
        while time.monotonic() < stop_at and i < max_requests:
            i += 1
            t0 = time.perf_counter()
            try:
                r = await c.post(
                    f"{url}/cds-services/trial-matcher",
                    content=rng.choice(bodies),
                    headers={"Content-Type": "application/json"},
                )
                ok = r.status_code == 200 and "cards" in r.json()
            except httpx.HTTPError:
                ok = False
            stats["hook_ms"].append((time.perf_counter() - t0) * 1000)
            stats["errors"] += 0 if ok else 1
            if i % 2 == 0:
                item = {
                    "card": str(uuid.uuid4()),
                    "outcome": rng.choice(["accepted", "overridden"]),
                    "outcomeTimestamp": "2026-11-23T10:00:00Z",
                }
                if item["outcome"] == "accepted":  # CDS Hooks: an accepted card names the suggestions taken
                    item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
                fb = {"feedback": [item]}
                t0 = time.perf_counter()
                try:
                    r = await c.post(f"{url}/cds-services/trial-matcher/feedback", json=fb)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                stats["feedback_ms"].append((time.perf_counter() - t0) * 1000)
                if ok:
                    stats["acknowledged"] += 1
                else:
                    stats["errors"] += 1


async def sample_memory(pid: int, stop_at: float, samples: list[tuple[float, float]]) -> None:
    t0 = time.monotonic()
    while time.monotonic() < stop_at:
        samples.append((time.monotonic() - t0, rss_mb(pid)))
        await asyncio.sleep(1.0)


async def run(url: str, pid: int, clients: int, seconds: float, max_requests: int) -> dict:
    bodies = [json.dumps(hook_request(p)).encode() for p in PATIENTS]
    stats: dict = {"hook_ms": [], "feedback_ms": [], "errors": 0, "acknowledged": 0, "memory": []}
    start = time.monotonic()
    stop_at = start + seconds
    await asyncio.gather(
        sample_memory(pid, stop_at, stats["memory"]),
        *(client_loop(url, bodies, stop_at, max_requests, stats) for _ in range(clients)),
    )
    stats["elapsed"] = time.monotonic() - start
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-requests", type=int, default=100_000, help="per client, a hard bound")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-growth-mb", type=float, default=50)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        svc = ServiceProcess(Path(tmp), workers=args.workers)
        try:
            stats = asyncio.run(run(svc.url, svc.proc.pid, args.clients, args.seconds, args.max_requests))
        finally:
            svc.stop()
        persisted = sqlite3.connect(svc.db).execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    hooks, fbs, mem = stats["hook_ms"], stats["feedback_ms"], stats["memory"]
    half = [m for t, m in mem if t >= args.seconds / 2]
    growth = (max(half) - min(half)) if half else 0.0
    total = len(hooks) + len(fbs)
    print(f"load: {args.clients} clients, {stats['elapsed']:.0f} s, {args.workers} worker(s), loopback")
    print(f"{'':<22}{'requests':>10}{'per s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, xs in (("hook (full prefetch)", hooks), ("feedback", fbs)):
        print(
            f"{name:<22}{len(xs):>10}{len(xs) / stats['elapsed']:>9.1f}{pct(xs, 50):>9.0f}{pct(xs, 95):>9.0f}"
            f"{pct(xs, 99):>9.0f}"
        )
    print(f"errors: {stats['errors']} of {total} requests")
    print(f"feedback: {stats['acknowledged']} acknowledged, {persisted} persisted")
    if mem:
        print(
            f"service RSS MiB: start {mem[0][1]:.0f}, peak {max(m for _, m in mem):.0f}, end {mem[-1][1]:.0f}; "
            f"second-half range {growth:.1f}"
        )
    ok = stats["errors"] == 0 and persisted == stats["acknowledged"] and growth <= args.max_growth_mb
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
