"""Every link between the project's documents resolves: a relative link names a file that
exists, and its `#anchor` a heading of that file (as GitHub makes anchors of headings).
So do references to a document section from the code (`docs/agent-protocol.md#release`).

The reference documentation is split over README.md and docs/; a heading renamed or a
section moved must take its links along."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    "README.md",
    *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))),
    "bench/README.md",
    "deploy/README.md",
]
# Files whose text may name a document section, and directories never looked into.
CODE_SUFFIXES = {".py", ".sql", ".js", ".toml", ".yaml", ".yml", ".example", ".service"}
SKIPPED_DIRS = {".git", ".venv", ".cache", "node_modules", "__pycache__", "test-artifacts"}
SKIPPED_DIRS |= {".rig-data", "out", "static"}  # bench/out; vendored browser assets

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`[^`]+`")
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SECTION_IN_CODE = re.compile(r"\b((?:docs|deploy|bench)/[\w-]+\.md|README\.md)(?:#([\w-]+))?")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links as their text) in lower case,
    without punctuation but `-` and `_`, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    kept = (
        c
        for c in text
        if c.isalnum() or c in "-_ " or unicodedata.category(c).startswith(("M", "Pc"))
    )
    return "".join(kept).replace(" ", "-")


def prose(text: str) -> list[str]:
    """The document's lines outside fenced code blocks (code lines become blank)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text()):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[str]:
    """The targets of the document's links (not those inside code)."""
    text = CODE_SPAN.sub("", "\n".join(prose(path.read_text())))
    return [match.group(2) for match in LINK.finditer(text)]


def problem(source: Path, target: str) -> str | None:
    """What is wrong with a link from `source` to `target` (None: it resolves)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
        return None
    name, _, anchor = target.partition("#")
    path = (source.parent / name).resolve() if name else source
    if not path.is_relative_to(REPO):
        return None  # outside the repository (the shared specs beside it)
    if not path.exists():
        return f"{target}: no such file"
    if anchor and (path.suffix != ".md" or anchor not in anchors(path)):
        return f"{target}: no heading with that anchor in {path.relative_to(REPO)}"
    return None


def code_files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in parts):
            continue
        if path.is_file() and (path.suffix in CODE_SUFFIXES or parts[0] == "scripts"):
            found.append(path)
    return found


def test_slugs_are_githubs():
    assert slug("Disconnect protection and backup ingest: rig's side") == (
        "disconnect-protection-and-backup-ingest-rigs-side"
    )
    assert slug("Conformance: real encoders in, real receivers out") == (
        "conformance-real-encoders-in-real-receivers-out"
    )
    assert slug("Holding, takeover and backup (issue 15)") == "holding-takeover-and-backup-issue-15"
    assert slug("rig — push once, go live everywhere") == "rig--push-once-go-live-everywhere"
    assert slug("`RIG_AGENT_WORKERS` and [workers](x.md)") == "rig_agent_workers-and-workers"


def test_a_broken_link_is_found():
    assert problem(REPO / "README.md", "#no-such-section")
    assert problem(REPO / "README.md", "docs/" + "no-such-file.md")
    assert problem(REPO / "README.md", "#configuration") is None
    assert links(REPO / "README.md"), "the README has links"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_link_of_a_document_resolves(document):
    source = REPO / document
    broken = [p for target in links(source) if (p := problem(source, target))]
    assert not broken, f"{document}: " + "; ".join(broken)


def test_every_section_the_code_names_exists():
    broken = []
    for path in code_files():
        for match in SECTION_IN_CODE.finditer(path.read_text(errors="replace")):
            target = match.group(0)
            if found := problem(REPO / "README.md", target):
                broken.append(f"{path.relative_to(REPO)}: {found}")
    assert not broken, "; ".join(broken)
