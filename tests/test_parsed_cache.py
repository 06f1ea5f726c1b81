"""The catalogue's parsed YAML kept across runs (cds_service/parsed_cache.py): the same catalogue as parsing,
never a stale or untrusted tree, nothing kept where it cannot be kept exactly or safely."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from cds_service import parsed_cache
from cds_service.authoring.lint import load_checked
from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.mappings import load_mappings
from cds_service.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the maps and trials, without any tree kept from the repository's own runs."""
    ignore = shutil.ignore_patterns(parsed_cache.FOLDER)
    maps, trials = tmp_path / "mappings", tmp_path / "trials"
    shutil.copytree(ROOT / "mappings", maps, ignore=ignore)
    shutil.copytree(ROOT / "trials", trials, ignore=ignore)
    return maps, trials


@pytest.fixture
def cache_off(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("TRIAL_MATCHER_CATALOGUE_CACHE", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _kept(folder: Path) -> list[str]:
    where = folder / parsed_cache.FOLDER
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def _shape(catalog: Catalog) -> dict:
    return {tid: t.model_dump(mode="json") for tid, t in catalog.trials.items()}


def _parsed_every_time(maps: Path, trials: Path) -> Catalog:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIAL_MATCHER_CATALOGUE_CACHE", "false")
        get_settings.cache_clear()
        try:
            return Catalog.load(maps, trials)
        finally:
            get_settings.cache_clear()


def test_a_catalogue_from_kept_trees_is_the_one_parsed_from_yaml(folders) -> None:
    maps, trials = folders
    first = Catalog.load(maps, trials)
    yamls = sorted(p.name for p in trials.glob("*.yaml"))
    assert [name.split(".yaml.")[0] + ".yaml" for name in _kept(trials)] == yamls  # one tree per trial file
    assert len(_kept(maps)) == len(list(maps.glob("*.yaml")))
    calls = []
    real = parsed_cache._read
    parsed_cache._read = lambda *a: calls.append(real(*a)) or calls[-1]  # type: ignore[assignment]
    try:
        again = Catalog.load(maps, trials)
    finally:
        parsed_cache._read = real  # type: ignore[assignment]
    assert calls and all(tree is not None for tree in calls)  # every file came from a kept tree
    parsed = _parsed_every_time(maps, trials)
    assert _shape(again) == _shape(parsed) == _shape(first)
    assert again.mappings.variables.keys() == parsed.mappings.variables.keys()
    assert {k: v.model_dump() for k, v in again.mappings.variables.items()} == {
        k: v.model_dump() for k, v in parsed.mappings.variables.items()
    }
    assert again.problems == parsed.problems


def test_a_changed_file_is_parsed_again_and_its_old_tree_removed(folders) -> None:
    maps, trials = folders
    Catalog.load(maps, trials)
    path = sorted(trials.glob("*.yaml"))[0]
    before = _kept(trials)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\ntitle:", "\ntitle: Changed", 1), encoding="utf-8")
    trial = Catalog.load(maps, trials).trials[path.stem]
    assert trial.title.startswith("Changed")  # never the tree of the earlier bytes
    after = _kept(trials)
    assert len(after) == len(before) and after != before  # the old tree went, the new one is kept


@pytest.mark.parametrize("spoil", ["group-writable file", "group-writable folder", "linked folder", "not JSON"])
def test_an_untrusted_or_spoilt_tree_is_never_read(folders, tmp_path, spoil: str) -> None:
    maps, trials = folders
    Catalog.load(maps, trials)
    path = sorted(trials.glob("*.yaml"))[0]
    entry = trials / parsed_cache.FOLDER / next(n for n in _kept(trials) if n.startswith(path.name))
    tree = entry.read_bytes()
    # the kept tree says something else: read, it would change the trial without changing its file
    entry.write_bytes(tree.replace(b'"title":"', b'"title":"Tampered ', 1))
    assert Catalog.load(maps, trials).trials[path.stem].title.startswith("Tampered")  # the premise: it is read
    if spoil == "group-writable file":
        entry.chmod(0o664)
    elif spoil == "group-writable folder":
        entry.parent.chmod(0o775)
    elif spoil == "linked folder":
        elsewhere = tmp_path / "elsewhere"
        entry.parent.rename(elsewhere)
        (trials / parsed_cache.FOLDER).symlink_to(elsewhere)
    else:
        entry.write_bytes(b'{"title": "Tampered')
    title = Catalog.load(maps, trials).trials[path.stem].title
    assert not title.startswith("Tampered")


def test_a_tree_json_cannot_hold_exactly_is_not_kept(tmp_path) -> None:
    path = tmp_path / "dated.yaml"
    path.write_text("when: 2024-01-02\nname: x\n", encoding="utf-8")
    data = path.read_bytes()
    tree, kept = parsed_cache.tree(path, data, lambda: yaml.safe_load(data))
    assert tree["when"].isoformat() == "2024-01-02" and not kept
    assert not (tmp_path / parsed_cache.FOLDER).exists() or not any((tmp_path / parsed_cache.FOLDER).iterdir())
    for value in (float("nan"), 2**64, {1: "a"}, {"a": {3, 4}}, b"raw", "\ud800"):
        parsed_cache.tree(path, repr(value).encode(), lambda v=value: {"v": v})
    assert _kept(tmp_path) == []
    tree, _ = parsed_cache.tree(path, data, lambda: {"plain": [1, 2.5, None, True, "s"]})
    assert _kept(tmp_path) and parsed_cache.tree(path, data, lambda: None) == (tree, True)


def test_other_bounds_are_another_key(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    data = b"a: 1\n"
    parsed_cache.tree(path, data, lambda: {"a": 1}, salt="depth 32")
    assert parsed_cache.tree(path, data, lambda: {"a": 2}, salt="depth 8") == ({"a": 2}, False)


def test_a_folder_that_cannot_be_written_loads_without_keeping(folders) -> None:
    maps, trials = folders
    (trials / parsed_cache.FOLDER).write_bytes(b"not a folder")  # as a read-only image: no tree can be kept
    catalog = Catalog.load(maps, trials)
    assert catalog.trials.keys() == _parsed_every_time(maps, trials).trials.keys() != set()
    assert (trials / parsed_cache.FOLDER).read_bytes() == b"not a folder"


def test_turned_off_nothing_is_kept(folders, cache_off) -> None:
    maps, trials = folders
    assert Catalog.load(maps, trials).trials
    assert _kept(trials) == [] and _kept(maps) == []


def test_a_kept_trial_with_errors_is_reported_at_its_lines(folders) -> None:
    """Problems read from a kept tree have no YAML positions: an error sends the file back to its YAML,
    so the service's log names the same lines as `lint`."""
    maps, trials = folders
    path = sorted(trials.glob("*.yaml"))[0]
    text = path.read_text(encoding="utf-8")
    broken = text.replace("\ncriteria:", "\nunknown_field: 1\ncriteria:", 1)
    assert broken != text
    path.write_text(broken, encoding="utf-8")
    mappings = load_mappings(maps)
    _, first = load_checked(trials, mappings)
    assert _kept(trials)  # the tree was kept, errors and all
    _, again = load_checked(trials, mappings)
    line = broken.splitlines().index("unknown_field: 1") + 1
    assert [p.line for p in again if "unknown_field" in p.message] == [line]
    assert again == first


def test_a_self_referencing_alias_loads_without_hanging_or_being_kept(folders) -> None:
    """`&n [*n]` is one alias, within lint's bounds: a list that holds itself. Walking it to keep it
    would never end; it is parsed every time (and the trial refused by lint, as without the cache)."""
    maps, trials = folders
    path = sorted(trials.glob("*.yaml"))[0]
    path.write_text(path.read_text(encoding="utf-8") + "notes: &n [*n]\n", encoding="utf-8")
    (maps / "predicates.yaml").write_text(
        (maps / "predicates.yaml").read_text(encoding="utf-8") + "x_comment: &c [*c]\n", encoding="utf-8"
    )
    for _ in range(2):
        catalog = Catalog.load(maps, trials)
        assert path.stem not in catalog.trials and any(p.file == str(path) for p in catalog.problems)
    assert not any(n.startswith(path.name) for n in _kept(trials))
    assert not any(n.startswith("predicates.yaml") for n in _kept(maps))


def test_an_alias_shared_many_times_is_not_written_out(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    data = b"a: &x [1, 2, 3]\nb: [*x, *x, *x]\n"
    shared, _ = parsed_cache.tree(path, data, lambda: yaml.safe_load(data))
    assert shared["b"][0] is shared["a"]  # the premise: one list, four times
    assert _kept(tmp_path) == []


def test_a_map_folder_whose_trees_cannot_be_kept_still_loads(folders) -> None:
    maps, trials = folders
    (maps / parsed_cache.FOLDER).write_bytes(b"a file, not a folder")
    assert Catalog.load(maps, trials).mappings.variables
    (maps / parsed_cache.FOLDER).unlink()
    (maps / parsed_cache.FOLDER).mkdir()
    Catalog.load(maps, trials)
    entry = maps / parsed_cache.FOLDER / _kept(maps)[0]
    entry.unlink()
    entry.mkdir()  # an entry that is a folder: not read, not an error
    assert Catalog.load(maps, trials).mappings.variables


def test_an_empty_file_is_kept_and_names_are_matched_exactly(tmp_path) -> None:
    empty, longer = tmp_path / "a.yaml", tmp_path / "a.yaml.b.yaml"
    empty.write_bytes(b"")
    longer.write_bytes(b"x: 1\n")
    parsed_cache.tree(longer, b"x: 1\n", lambda: {"x": 1})
    assert parsed_cache.tree(empty, b"", lambda: None) == (None, False)
    assert parsed_cache.tree(empty, b"", lambda: {"never": "parsed"}) == (None, True)  # null is a tree too
    parsed_cache.tree(empty, b"\n", lambda: None)  # a new content of a.yaml removes a.yaml's old tree only
    assert parsed_cache.tree(longer, b"x: 1\n", lambda: {"x": 2}) == ({"x": 1}, True)
    assert len([n for n in _kept(tmp_path) if n.startswith("a.yaml.")]) == 2


def _as_user(uid: int, fn) -> object:  # type: ignore[no-untyped-def]
    """fn() in a forked child running as `uid` (its result sent back as JSON)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, orjson.dumps(fn()))
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    return orjson.loads(out)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changing users needs root")
@pytest.mark.parametrize(
    ("file_owner", "tree_owner", "trusted"), [(0, 12345, False), (12345, 12345, True), (12345, 23456, False)]
)
def test_only_root_or_the_files_owner_may_own_a_kept_tree(file_owner: int, tree_owner: int, trusted: bool) -> None:
    """A service user (12345) who cannot change a root-owned trial must not change it through a tree it
    keeps; the trial's own owner may; no other user may."""
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        path = root / "t.yaml"
        path.write_bytes(b"a: 1\n")
        os.chown(path, file_owner, file_owner)
        parsed_cache.tree(path, b"a: 1\n", lambda: {"a": 1})
        folder = root / parsed_cache.FOLDER
        entry = folder / _kept(root)[0]
        entry.write_bytes(b'{"tree": {"a": "tampered"}}')
        os.chown(folder, tree_owner, tree_owner)
        os.chown(entry, tree_owner, tree_owner)
        found = _as_user(12345, lambda: parsed_cache.tree(path, b"a: 1\n", lambda: {"a": 1}))
        assert found == ([{"a": "tampered"}, True] if trusted else [{"a": 1}, False])
    finally:
        shutil.rmtree(root)


def test_an_entry_that_is_a_folder_holds_no_descriptor(folders) -> None:
    maps, trials = folders
    Catalog.load(maps, trials)
    for name in _kept(trials):
        entry = trials / parsed_cache.FOLDER / name
        entry.unlink()
        entry.mkdir()
    for _ in range(20):
        assert Catalog.load(maps, trials).trials
    # the descriptors that point into the kept trees (the process's count moved with other tests' loops and
    # sockets being collected meanwhile: 42 before, 40 after, in one CI run)
    assert _held_in(trials / parsed_cache.FOLDER) == []


def _held_in(folder: Path) -> list[str]:
    """What this process's open descriptors point to inside `folder`."""
    inside = str(folder.resolve())
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
        if target == inside or target.startswith(inside + os.sep):
            held.append(target)
    return held


def test_a_change_of_the_parsers_code_is_another_key(folders, monkeypatch) -> None:
    """A kept tree passed the lint's checks of its day: a release that checks more parses again."""
    maps, trials = folders
    Catalog.load(maps, trials)
    hits = []
    real = parsed_cache._read
    monkeypatch.setattr(parsed_cache, "_read", lambda *a: hits.append(real(*a)[0]) or real(*a))
    Catalog.load(maps, trials)
    assert hits and all(hits)
    hits.clear()
    monkeypatch.setattr(parsed_cache, "_code", lambda files: "another release")
    Catalog.load(maps, trials)
    assert hits and not any(hits)


def test_a_source_that_cannot_be_read_parses_every_time(folders, monkeypatch) -> None:
    """Imported from a zip, the parser's source has no file to hash: nothing is kept, and all still loads."""
    maps, trials = folders

    def unreadable(files: tuple[str, ...]) -> str:
        raise OSError("no source")

    monkeypatch.setattr(parsed_cache, "_code", unreadable)
    catalog = Catalog.load(maps, trials)
    assert catalog.trials.keys() == _parsed_every_time(maps, trials).trials.keys() != set()
    assert not catalog.problems and _kept(trials) == [] and _kept(maps) == []


def test_a_string_many_aliases_repeat_is_never_written_out(tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.yaml"
    data = b"a: &s " + b"x" * 100_000 + b"\nb: [" + b", ".join([b"*s"] * 1000) + b"]\n"
    path.write_bytes(data)
    dumped = []
    monkeypatch.setattr(parsed_cache.orjson, "dumps", lambda x: dumped.append(x) or b"{}")
    tree, kept = parsed_cache.tree(path, data, lambda: yaml.safe_load(data))
    assert len(tree["b"]) == 1000 and not kept  # the premise: 100 MB of JSON from 100 kB of YAML
    assert dumped == [] and _kept(tmp_path) == []
