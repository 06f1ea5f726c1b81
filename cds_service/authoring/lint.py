"""`trial-matcher lint`: check trial files and say, for each problem, where it is and how to fix it.

Each problem reads `FILE:LINE: TRIAL criterion ID: message`, with "did you mean" for misspelt
variables, classes, groups, rule keywords and fields. One bad file never hides the others: every file
is checked, and the service starts without the files that do not pass (saying so in its log).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cds_service.authoring.sources import source_text, unquoted
from cds_service.eligibility.rules import RuleError, RuleParser, suggest
from cds_service.eligibility.trials import Criterion, Trial
from cds_service.fhir.mappings import Mappings


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    trial: str | None
    criterion: str | None
    message: str

    def __str__(self) -> str:
        where = " ".join(x for x in (self.trial, f"criterion {self.criterion}" if self.criterion else None) if x)
        return f"{self.file}:{self.line}: {where + ': ' if where else ''}{self.message}"


def lint_file(path: Path, mappings: Mappings, check_source: bool = True) -> tuple[Trial | None, list[Problem]]:
    """The compiled trial (None when it cannot be used) and every problem found in the file."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return None, [Problem(str(path), (mark.line + 1) if mark else 1, None, None, f"not valid YAML: {e}")]
    if not isinstance(data, dict) or root is None:
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
    if trial is not None and not problems:
        trial.compile(mappings)
        problems += _source_problems(path, root, trial) if check_source else []
    return (trial if not problems else None), problems


def _criterion_problems(path: Path, root: Any, data: dict, tid: str | None, mappings: Mappings) -> list[Problem]:
    """Each criterion's rule compiled on its own, so every bad criterion is reported, not only the first."""
    out = _entry_problems(path, root, data, tid, mappings)
    criteria = data.get("criteria") if isinstance(data.get("criteria"), list) else []
    for i, c in enumerate(criteria):
        for key in ("rule", "suggested_rule"):  # a suggestion must parse too, so promoting it is safe
            if not isinstance(c, dict) or not isinstance(c.get(key), dict):
                continue
            try:
                RuleParser(mappings).parse(c[key])
            except RuleError as e:
                node = _at(root, ("criteria", i, key))
                line = _line_of_value(node, str(e)) or _line(node)
                message = str(e) if key == "rule" else f"suggested_rule: {e}"
                out.append(Problem(str(path), line, tid, str(c.get("id", f"#{i + 1}")), message))
    return out


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
    return [
        Problem(
            str(path),
            _line(_at(root, ("entry", "text") if cid == "entry" else ("criteria", index[cid], "text"))),
            trial.id,
            None if cid == "entry" else cid,
            f"{'entry: ' if cid == 'entry' else ''}quote not found in the source text: {fragment[:80]!r}",
        )
        for cid, fragment in unquoted(trial, source)
    ]


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


def lint_paths(paths: list[Path], mappings: Mappings) -> list[Problem]:
    """Every problem in these files and folders (a folder: its `*.yaml`)."""
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    return [problem for f in files for problem in lint_file(f, mappings)[1]]


def load_checked(folder: Path, mappings: Mappings) -> tuple[dict[str, Trial], list[Problem]]:
    """The trials that pass, and the problems of those that do not (the service starts without them).
    Quotes against sources are an authoring check (`lint`), not a reason to stop serving a trial."""
    trials: dict[str, Trial] = {}
    problems: list[Problem] = []
    for path in sorted(Path(folder).glob("*.yaml")):
        trial, found = lint_file(path, mappings, check_source=False)
        problems += found
        if trial is not None:
            if trial.id in trials:
                problems.append(Problem(str(path), 1, trial.id, None, "another file already defines this trial id"))
                continue
            trials[trial.id] = trial
    return trials, problems
