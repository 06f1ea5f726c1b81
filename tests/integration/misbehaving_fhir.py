"""A FHIR server on loopback that misbehaves on purpose, one way per path prefix.

    /ok/fhir/...       answers properly (a Patient, an SLE Condition, other searchsets empty)
    /slow/fhir/...     Patient fine, searches answer after 10 s
    /drop/fhir/...     closes the connection without answering
    /500/fhir/...      HTTP 500 to everything
    /garbage/fhir/...  HTTP 200 with bytes that are not JSON
    /401/fhir/...      HTTP 401 to everything
    /halfdown/fhir/... Patient fine, searches 503
    /delay/fhir/...    answers properly, every request after 250 ms, many at once

A raw asyncio server, so it can really drop connections.
"""

from __future__ import annotations

import asyncio
import json
import threading

PATIENT = {
    "resourceType": "Patient",
    "id": "zq-7731",
    "gender": "male",
    "birthDate": "1971-02-03",
    "name": [{"family": "Quixote-Marchetti", "given": ["Zebulon"]}],
    "identifier": [{"system": "urn:oid:1.2.3.4.5.1", "value": "MRN-99887766"}],
}


SLE_SEARCH = {
    "resourceType": "Bundle",
    "type": "searchset",
    "entry": [
        {
            "resource": {
                "resourceType": "Condition",
                "id": "sle-1",
                "subject": {"reference": f"Patient/{PATIENT['id']}"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
            }
        }
    ],
}


def _response(status: int, body: bytes, ctype: str = "application/fhir+json") -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error", 503: "Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'X')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class MisbehavingFhir:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def base(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/fhir"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            self.requests.append(path)
            mode = path.split("/")[1]
            is_patient = "/Patient/" in path
            if mode == "delay":
                await asyncio.sleep(0.25)
            if mode == "drop":
                writer.transport.abort()
                return
            if mode == "500":
                writer.write(_response(500, b'{"resourceType":"OperationOutcome"}'))
            elif mode == "401":
                writer.write(_response(401, b""))
            elif mode == "garbage":
                writer.write(_response(200, b"\x00\xff<html>definitely not fhir", "text/html"))
            elif is_patient:
                writer.write(_response(200, json.dumps(PATIENT).encode()))
            elif mode == "slow":
                await asyncio.sleep(10)
                writer.write(_response(200, b'{"resourceType":"Bundle","type":"searchset"}'))
            elif mode == "halfdown":
                writer.write(_response(503, b""))
            elif "/Condition" in path:  # the trials' disease: the patient is in their cohort
                writer.write(_response(200, json.dumps(SLE_SEARCH).encode()))
            else:
                writer.write(_response(200, b'{"resourceType":"Bundle","type":"searchset"}'))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
