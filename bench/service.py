"""Start and stop the service as a real process on loopback (benchmarks and process-level tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MiB, from /proc."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class ServiceProcess:
    def __init__(self, workdir: Path, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = workdir / "feedback.sqlite3"
        self.log_path = workdir / "service.log"
        self.log = self.log_path.open("w")
        environ = {
            **os.environ,
            "TRIAL_MATCHER_AUTH_REQUIRED": "false",
            "TRIAL_MATCHER_LOG_LEVEL": "WARNING",
            "TRIAL_MATCHER_DATABASE_URL": f"sqlite:///{self.db}",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("service did not start: " + self.log_path.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()
