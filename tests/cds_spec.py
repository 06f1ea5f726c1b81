"""The CDS Hooks 2.0 field rules for what a service sends, as a checker of our own.

Each rule names its clause of https://cds-hooks.org/specification/current/ ; `problems` returns one
sentence per broken rule, so a test shows every deviation at once.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

INDICATORS = {"info", "warning", "critical"}  # Card.indicator
SELECTION = {"at-most-one", "any"}  # Card.selectionBehavior
ACTION_TYPES = {"create", "update", "delete"}  # Action.type
LINK_TYPES = {"absolute", "smart"}  # Link.type


def _empty(value: Any) -> bool:
    return value in (None, "", [], {})


def _coding(c: Any, where: str) -> list[str]:
    if not isinstance(c, dict) or not isinstance(c.get("code"), str) or not isinstance(c.get("system"), str):
        return [f"{where}: a Coding needs string code and system (Coding)"]
    return []


def _action(a: Any, where: str) -> list[str]:
    out = []
    if not isinstance(a, dict) or a.get("type") not in ACTION_TYPES:
        return [f"{where}: type must be create, update or delete (Action)"]
    if not isinstance(a.get("description"), str):
        out.append(f"{where}: description is REQUIRED (Action)")
    if a["type"] in ("create", "update") and not isinstance(a.get("resource"), dict):
        out.append(f"{where}: create/update carry a resource (Action)")
    if a["type"] == "delete":
        rid = a.get("resourceId")
        if not isinstance(rid, str) or rid.count("/") != 1:
            out.append(f"{where}: delete carries resourceId, one relative reference string (Action)")
    return out


def _link(link: Any, where: str) -> list[str]:
    out = []
    if not isinstance(link, dict) or not isinstance(link.get("label"), str):
        return [f"{where}: label is REQUIRED (Link)"]
    parts = urlsplit(link.get("url") or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        out.append(f"{where}: url must be an absolute URL (Link)")
    if link.get("type") not in LINK_TYPES:
        out.append(f"{where}: type must be absolute or smart (Link)")
    if "autoLaunchable" in link and not isinstance(link["autoLaunchable"], bool):
        out.append(f"{where}: autoLaunchable is a boolean (Link)")
    return out


def card_problems(card: Any, where: str = "card") -> list[str]:
    if not isinstance(card, dict):
        return [f"{where}: not an object"]
    out = []
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) >= 140:
        out.append(f"{where}: summary is REQUIRED, under 140 characters (Card)")
    if card.get("indicator") not in INDICATORS:
        out.append(f"{where}: indicator must be info, warning or critical (Card)")
    source = card.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("label"), str):
        out.append(f"{where}: source with a label is REQUIRED (Card, Source)")
    if "uuid" in card:
        try:
            uuid.UUID(str(card["uuid"]))
        except ValueError:
            out.append(f"{where}: uuid must be a UUID (Card)")
    suggestions = card.get("suggestions")
    if suggestions is not None:
        if card.get("selectionBehavior") not in SELECTION:
            out.append(f"{where}: selectionBehavior is REQUIRED with suggestions (Card)")
        for i, s in enumerate(suggestions):
            if not isinstance(s, dict) or not isinstance(s.get("label"), str):
                out.append(f"{where}.suggestions[{i}]: label is REQUIRED (Suggestion)")
                continue
            if "isRecommended" in s and not isinstance(s["isRecommended"], bool):
                out.append(f"{where}.suggestions[{i}]: isRecommended is a boolean (Suggestion)")
            for j, a in enumerate(s.get("actions") or []):
                out += _action(a, f"{where}.suggestions[{i}].actions[{j}]")
    for i, c in enumerate(card.get("overrideReasons") or []):
        out += _coding(c, f"{where}.overrideReasons[{i}]")
    for i, link in enumerate(card.get("links") or []):
        out += _link(link, f"{where}.links[{i}]")
    ext = card.get("extension")
    if ext is not None and (not isinstance(ext, dict) or any("." not in k for k in ext)):
        out.append(f"{where}: extension keys are namespaced reverse-domain names (Extensions)")
    return out


def _no_empty(value: Any, where: str) -> list[str]:
    """JSON fields with no value are left out, never null, "", [] or {} (FHIR and CDS Hooks JSON)."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += [f"{where}.{k}: empty"] if _empty(v) else _no_empty(v, f"{where}.{k}")
        return out
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _no_empty(v, f"{where}[{i}]")]
    return []


def response_problems(body: Any) -> list[str]:
    """Every broken field rule of a CDS Service response (cards REQUIRED, systemActions optional)."""
    if not isinstance(body, dict) or not isinstance(body.get("cards"), list):
        return ["cards is REQUIRED, an array (CDS Service Response)"]
    out = [p for i, c in enumerate(body["cards"]) for p in card_problems(c, f"cards[{i}]")]
    for i, a in enumerate(body.get("systemActions") or []):
        out += _action(a, f"systemActions[{i}]")
    return out + [p for i, c in enumerate(body["cards"]) for p in _no_empty(c, f"cards[{i}]")]


def discovery_problems(body: Any) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("services"), list):
        return ["services is REQUIRED, an array (Discovery)"]
    out = []
    for i, s in enumerate(body["services"]):
        for key in ("hook", "description", "id"):
            if not isinstance(s.get(key), str) or not s[key]:
                out.append(f"services[{i}]: {key} is REQUIRED (Discovery)")
        prefetch = s.get("prefetch")
        if prefetch is not None and not all(isinstance(v, str) for v in prefetch.values()):
            out.append(f"services[{i}]: prefetch values are query strings (Discovery)")
    return out
