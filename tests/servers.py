"""Real loopback HTTP servers for fault and attack tests: they record every request they get.

A `RecordingServer` that records nothing proves "never contacted" better than any mock could:
the request would have had to cross a real socket to be missed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (path) -> (status, JSON body) ; None answers 404
Responder = Callable[[str], tuple[int, Any] | None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RecordingServer:
    host: str = "127.0.0.1"
    respond: Responder = field(default=lambda _path: None)
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(Seen("GET", self.path, dict(self.headers)))
                answer = outer.respond(self.path)
                status, body = answer if answer is not None else (404, {"resourceType": "OperationOutcome"})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self.httpd.server_port
        self.url = f"http://{self.host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
