"""The image's native stage copies everything `native/` builds from (there is no Docker engine here to build it).

The Dockerfile copies `native/`'s files one by one, so its build cache survives edits elsewhere. A file added to
the crate later (a build script, a second module) and not copied would fail the image's build, or, worse, build
a scan without it; and `native/target` in the build context would ship the build machine's artefacts.
"""

from __future__ import annotations

from pathlib import Path

from cds_service.settings import REPO_ROOT

NATIVE = REPO_ROOT / "native"


def _stage_copies(dockerfile: str, stage: str) -> list[str]:
    """The sources of the COPY lines of one build stage (`FROM ... AS stage` up to the next FROM)."""
    sources: list[str] = []
    current = None
    for line in dockerfile.splitlines():
        words = line.split()  # FROM and COPY lines here are plain words (no quotes, no JSON form)
        if not words or words[0].upper() not in ("FROM", "COPY"):
            continue
        if words[0].upper() == "FROM":
            current = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else None
        elif words[0].upper() == "COPY" and current == stage and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    return sources


def _crate_files() -> set[Path]:
    """What the crate builds from: every file under native/ but its build output and caches."""
    return {
        p.relative_to(REPO_ROOT)
        for p in NATIVE.rglob("*")
        if p.is_file() and "target" not in p.relative_to(NATIVE).parts[:1] and "__pycache__" not in p.parts
    }


def test_the_native_stage_copies_every_file_the_crate_builds_from():
    copied = [Path(s.rstrip("/")) for s in _stage_copies((REPO_ROOT / "Dockerfile").read_text(), "native")]
    assert copied, "the Dockerfile has a stage named native that copies the crate"
    missing = {f for f in _crate_files() if not any(f == c or c in f.parents for c in copied)}
    assert not missing, f"native/ files the image's build does not copy: {sorted(map(str, missing))}"


def test_the_runtime_stage_installs_the_wheel_the_native_stage_built():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY --from=native /wheels" in text
    runtime = text.split("AS runtime", 1)[1]
    assert "/wheels/*.whl" in runtime.split("USER app", 1)[0], "installed as root, before the user is set"


def test_the_build_context_leaves_out_the_build_machines_native_output():
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert "native/target" in ignored
