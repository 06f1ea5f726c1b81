"""`trial-matcher lint`: check trial files and say, for each problem, where it is and how to fix it.

Each problem reads `FILE:LINE: TRIAL criterion ID: message`, with "did you mean" for misspelt
variables, classes, groups, rule keywords and fields. One bad file never hides the others: every file
is checked, and the service starts without the files that do not pass (saying so in its log).

A trial file is input like any other: it is read within bounds before it is parsed (a regular file,
at most TRIAL_MATCHER_TRIAL_FILE_MAX_BYTES, UTF-8), and its YAML is walked as an event stream (no
recursion) to refuse deep nesting, alias bombs and oversized documents before anything is built
from it. A file that breaks a bound is one problem line, like any other lint problem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cds_service import parsed_cache
from cds_service.authoring import checks
from cds_service.authoring.problem import Problem
from cds_service.authoring.sources import source_text, unquoted
from cds_service.eligibility.rules import RuleError, RuleParser, suggest
from cds_service.eligibility.trials import Criterion, Trial
from cds_service.fhir.mappings import Mappings

MAX_DEPTH = 32  # nesting of mappings and lists; real trial files stay under 10
MAX_NODES = 20_000  # YAML nodes of one file; the largest real trial file has 1,300
MAX_ALIASES = 16  # no real trial file uses one; a few are harmless, hundreds are a bomb
DEFAULT_MAX_BYTES = 256 * 1024  # settings.trial_file_max_bytes: 15 times the largest real trial file
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~20x faster than the pure-Python one
_CONTAINER_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CONTAINER_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_BOUNDS = f"depth {MAX_DEPTH}, nodes {MAX_NODES}, aliases {MAX_ALIASES}"  # a kept tree passed these


class Unreadable(ValueError):
    """A trial file that is not read, and why (no content quoted), with the line it was refused at."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


def max_file_bytes() -> int:
    """The configured size cap (imported late: settings import the API, which imports the catalogue)."""
    from cds_service.settings import get_settings

    return get_settings().trial_file_max_bytes


def read_bounded(path: Path, max_bytes: int) -> str:
    """The text of a regular file of at most `max_bytes` bytes of UTF-8; Unreadable otherwise. Opened
    non-blocking and checked after opening, so a FIFO or a device named `*.yaml` never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise Unreadable(f"cannot be opened ({type(e).__name__})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, FIFO or device named *.yaml
        os.close(fd)
        raise Unreadable("not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Unreadable(f"larger than {max_bytes} bytes (TRIAL_MATCHER_TRIAL_FILE_MAX_BYTES); not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unreadable(f"not UTF-8 text (byte {e.start})", data[: e.start].count(b"\n") + 1) from None


def check_shape(text: str) -> None:
    """Walk the YAML events (a flat stream, no recursion) and refuse what would be costly to build."""
    depth = nodes = aliases = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, _CONTAINER_END):
            depth -= 1
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        line = event.start_mark.line + 1
        nodes += 1
        depth += isinstance(event, _CONTAINER_START)
        aliases += isinstance(event, yaml.AliasEvent)
        if depth > MAX_DEPTH:
            raise Unreadable(f"nested deeper than {MAX_DEPTH} levels", line)
        if aliases > MAX_ALIASES:
            raise Unreadable(f"more than {MAX_ALIASES} YAML aliases (*name); write the values out", line)
        if nodes > MAX_NODES:
            raise Unreadable(f"more than {MAX_NODES} YAML values; a trial file is far smaller", line)


def parse(path: Path, max_bytes: int | None = None, cached: bool = False) -> tuple[Any, Any]:
    """(root node, data) of a trial file, within the bounds above; Unreadable or yaml.YAMLError otherwise.
    `cached`: the data as parsed before from the same bytes (`parsed_cache`), with no root node (problems
    then say line 1), when there is one; parsed and kept otherwise."""
    text = read_bounded(path, max_file_bytes() if max_bytes is None else max_bytes)
    if not cached:
        return parse_text(text)
    roots = []

    def whole() -> Any:
        root, data = parse_text(text)
        roots.append(root)
        return data

    data, _ = parsed_cache.tree(path, text.encode("utf-8"), whole, _BOUNDS, (__file__,))
    return (roots[0] if roots else None), data


def parse_text(text: str) -> tuple[Any, Any]:
    check_shape(text)
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        try:
            return root, (loader.construct_document(root) if root is not None else None)
        except ValueError as e:  # e.g. an integer past Python's 4,300-digit conversion limit
            raise Unreadable(f"a value cannot be read ({type(e).__name__})", _line(root)) from None
    finally:
        loader.dispose()


def lint_file(
    path: Path, mappings: Mappings, check_source: bool = True, max_bytes: int | None = None, cached: bool = False
) -> tuple[Trial | None, list[Problem]]:
    """The compiled trial (None when it cannot be used) and every problem found in the file. `cached`: from
    the tree parsed before (see `parse`), whose problems all say line 1."""
    try:
        root, data = parse(path, max_bytes, cached)
    except Unreadable as e:
        return None, [Problem(str(path), e.line, None, None, str(e))]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        message = " ".join(f"not valid YAML: {e}".split())[:200]  # one line, whatever the file holds
        return None, [Problem(str(path), (mark.line + 1) if mark else 1, None, None, message)]
    if not isinstance(data, dict):
        return None, [Problem(str(path), 1, None, None, "a trial file is a mapping (id, title, criteria, ...)")]
    tid = data.get("id") if isinstance(data.get("id"), str) else None
    problems = _criterion_problems(path, root, data, tid, mappings)
    trial = None
    try:
        trial = Trial.model_validate(data)
    except ValidationError as e:
        problems += [_validation_problem(path, root, tid, err) for err in e.errors()]
    if trial is not None and trial.id != path.stem:
        problems.append(Problem(str(path), 1, tid, None, f"the file name must be the trial id: {trial.id}.yaml"))
    if trial is not None and not any(p.is_error for p in problems):
        trial.compile(mappings)
        problems += checks.unranged_variables(path, trial, mappings)
    if trial is not None and check_source:  # quotes and coverage need only the texts: said with the rest
        problems += _source_problems(path, root, trial)
    return (trial if not any(p.is_error for p in problems) else None), problems


def _criterion_problems(path: Path, root: Any, data: dict, tid: str | None, mappings: Mappings) -> list[Problem]:
    """Each criterion's rule compiled on its own, so every bad criterion is reported, not only the first."""
    out = _entry_problems(path, root, data, tid, mappings)
    criteria = data.get("criteria") if isinstance(data.get("criteria"), list) else []
    for i, c in enumerate(criteria):
        for key in ("rule", "suggested_rule"):  # a suggestion must parse too, so promoting it is safe
            if not isinstance(c, dict) or not isinstance(c.get(key), dict):
                continue
            node = _at(root, ("criteria", i, key))
            cid = str(c.get("id", f"#{i + 1}"))
            try:
                RuleParser(mappings).parse(c[key])
            except RuleError as e:
                line = _line_of_value(node, str(e)) or _line(node)
                message = str(e) if key == "rule" else f"suggested_rule: {e}"
                out.append(Problem(str(path), line, tid, cid, message))
                continue
            out += checks.rule_checks(path, node, c[key], key, tid, cid, mappings)
    return out + checks.placeholders(path, root, data, tid)


def _entry_problems(path: Path, root: Any, data: dict, tid: str | None, mappings: Mappings) -> list[Problem]:
    """The entry's groups must be condition groups the maps define (a misspelt one would admit nobody)."""
    entry = data.get("entry")
    if not isinstance(entry, dict) or "groups" not in entry:
        return []
    try:
        RuleParser(mappings).condition_groups(entry["groups"])
    except RuleError as e:
        node = _at(root, ("entry", "groups"))
        return [Problem(str(path), _line_of_value(node, str(e)) or _line(node), tid, None, f"entry: {e}")]
    return []


def _validation_problem(path: Path, root: Any, tid: str | None, err: dict) -> Problem:
    loc = tuple(err.get("loc", ()))
    criterion = None
    if len(loc) >= 2 and loc[0] == "criteria" and isinstance(loc[1], int):
        criterion = str(_value(_at(root, loc[:2]), "id") or f"#{loc[1] + 1}")
    field = loc[-1] if loc else ""
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        known = Criterion.model_fields if criterion else Trial.model_fields
        hint = suggest(field, [f for f in known if not f.startswith("_")])
        msg = f"unknown field {field!r}" + (f"; {hint}" if hint else "")
    elif err.get("type") == "missing" and loc == ("entry",):
        msg = (
            "missing field 'entry': name the disease the trial studies, quoting the source, e.g. "
            '`entry: {groups: [sle], text: "...Systemic Lupus Erythematosus"}` '
            "(groups from mappings/conditions.yaml); without it on record a patient gets no card"
        )
    elif err.get("type") == "missing":
        msg = f"missing field {field!r}"
    else:
        msg = f"{'.'.join(map(str, loc[2:] if criterion else loc))}: {msg}"
    return Problem(str(path), _line(_at(root, loc)), tid, criterion, msg)


def _source_problems(path: Path, root: Any, trial: Trial) -> list[Problem]:
    source = source_text(path.parent, trial.id)
    if source is None:
        return [Problem(str(path), 1, trial.id, None, f"no source text in {path.parent}/sources/ to check quotes")]
    index = {c.id: i for i, c in enumerate(trial.criteria)}
    quotes = [
        Problem(
            str(path),
            _line(_at(root, ("entry", "text") if cid == "entry" else ("criteria", index[cid], "text"))),
            trial.id,
            None if cid == "entry" else cid,
            f"{'entry: ' if cid == 'entry' else ''}quote not found in the source text: {fragment[:80]!r}",
        )
        for cid, fragment in unquoted(trial, source)
    ]
    return quotes + checks.left_out_quotes(path, root, trial, source) + checks.coverage(path, root, trial)


# --- YAML node positions ------------------------------------------------------------------------------


def _at(node: Any, loc: tuple) -> Any:
    """The deepest node along a pydantic location path (keys and list indexes)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:  # an unknown key: point at the key itself
                return next((k for k, _ in node.value if k.value == part), node)
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node


def _value(node: Any, key: str) -> str | None:
    if isinstance(node, yaml.MappingNode):
        return next((v.value for k, v in node.value if k.value == key and isinstance(v, yaml.ScalarNode)), None)
    return None


def _line(node: Any) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def _line_of_value(node: Any, message: str) -> int | None:
    """The line of the first scalar under `node` that the message quotes (the misspelt name)."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode) and len(n.value) > 1 and f"'{n.value}'" in message:
            return n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            stack.extend(x for pair in n.value for x in pair)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return None


def lint_guarded(
    path: Path, mappings: Mappings, check_source: bool = True, cached: bool = False
) -> tuple[Trial | None, list[Problem]]:
    """`lint_file`, and any error it did not foresee as one problem: one bad file never stops the others
    (nor the service). The error's type is named, never its message (it may quote the file)."""
    try:
        return lint_file(path, mappings, check_source, cached=cached)
    except (RecursionError, MemoryError, ValueError, TypeError, KeyError, AttributeError, OSError) as e:
        return None, [Problem(str(path), 1, None, None, f"cannot be checked ({type(e).__name__})")]


def lint_paths(paths: list[Path], mappings: Mappings) -> list[Problem]:
    """Every problem in these files and folders (a folder: its `*.yaml`)."""
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    return [problem for f in files for problem in lint_guarded(f, mappings)[1]]


def load_checked(folder: Path, mappings: Mappings) -> tuple[dict[str, Trial], list[Problem]]:
    """The trials that pass, and the problems of those that do not (the service starts without them).
    Quotes against sources are an authoring check (`lint`), not a reason to stop serving a trial."""
    trials: dict[str, Trial] = {}
    problems: list[Problem] = []
    for path in sorted(Path(folder).glob("*.yaml")):
        trial, found = lint_guarded(path, mappings, check_source=False, cached=True)
        if any(p.is_error for p in found):  # said with their lines: from the YAML itself
            trial, found = lint_guarded(path, mappings, check_source=False)
        problems += [p for p in found if p.is_error]  # warnings (drafts) do not keep a trial out
        if trial is not None:
            if trial.id in trials:
                problems.append(Problem(str(path), 1, trial.id, None, "another file already defines this trial id"))
                continue
            trials[trial.id] = trial
    return trials, problems
