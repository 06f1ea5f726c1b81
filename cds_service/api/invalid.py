"""What a 400 says back about a request that does not validate: where and what kind of error, in the
service's own words only. Pydantic's errors quote the input in places (the UUID parser's "found `x` at 1",
a dict key the caller chose in a location, the length of what was sent), and the input may hold patient
data or a token, so those parts are dropped or shown as `<key>`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cds_service.fhir.queries import QUERIES


def said_back(errors: Sequence[Any], names: frozenset[str]) -> list[dict[str, str]]:
    """Each error as {"loc", "msg"}, with nothing of the input in either. `names`: `defined_names`."""
    return [{"loc": where(e.get("loc", ()), names), "msg": message(e)} for e in errors]


def defined_names(openapi: dict[str, Any]) -> frozenset[str]:
    """The names a 400's location may show: what this service defines, read from its OpenAPI description (every
    parameter's name and every property of every schema: the request models' fields as sent on the wire), the
    prefetch keys discovery asks for and FastAPI's roots; never a key the caller chose."""
    names = {"body", "query", "path", "header", "cookie", *QUERIES}
    nodes: list[Any] = [openapi]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                names.update(node["properties"])
            if node.get("in") in ("query", "path", "header", "cookie") and isinstance(node.get("name"), str):
                names.add(node["name"])
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return frozenset(names)


def where(loc: tuple, names: frozenset[str]) -> str:
    """An error's location without the caller's words in it: the model's field names, the prefetch keys the
    service asks for and list positions stay; any other part (a key the caller chose: an unknown prefetch
    key, an unknown field, which may be anything, a token or a name) is shown as `<key>`."""
    return ".".join(str(p) if isinstance(p, int) or p in names else "<key>" for p in loc)


def message(e: Any) -> str:
    """Pydantic's message less the parser's own account of the input when it quotes it ("Input should be a
    valid UUID, invalid character: ... found `x` at 1" is said as "Input should be a valid UUID"), and less
    the length of what was sent. Our validators' messages (a ValueError in the context) name no input and
    stay whole."""
    ctx = e.get("ctx") or {}
    msg, quoted = str(e.get("msg", "")), ctx.get("error")
    if isinstance(quoted, str) and quoted and quoted in msg:
        msg = msg.replace(f", {quoted}", "").replace(f": {quoted}", "").replace(quoted, "").strip(" ,:")
    if "actual_length" in ctx:  # "at most 16384 items after validation, not 27000": the length of what was sent
        msg = msg.replace(f", not {ctx['actual_length']}", "")
    return msg
