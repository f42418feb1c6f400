"""The relay's hot path compiled with mypyc, used only when built from these very sources.

Each message a publisher sends goes through the same few modules: the publisher's
connection (ingest.py, the loop's protocol: each read), the chunk parser, the publish
session, the classifier, the timeline, the ingest's measurements (ingest_facts.py), the
relay, the destinations' queues and chunking, and the destination's connection
(egress.py: each write). Compiled to C by mypyc (from the same type-annotated Python,
nothing rewritten) the relay took ~20 % less CPU per stream and ~10 MB less memory at
32 streams in A/B runs (docs/performance.md, Run L). The rest of the agent (rig,
heartbeats, placement, workers, pictures, slate) stays interpreted: it is not per
message.

What keeps compiled code fast here (Run O): module constants `Final` (others are looked
up in the module's dict on each use); no dataclass made per message (its `__init__` is
the interpreted one the dataclasses module writes); bytes rather than memoryviews where
bytes are indexed (a C array access against a generic call); methods called directly,
not bound to a local first (a bound method is called through the interpreter).

Compiled, a class is a native class: arguments and attributes typed with a compiled
class are checked (a test's stand-in for one is refused: hand it the real thing), a
class that interpreted code subclasses must say so (`mypyc_attr`, as `_Connection`
does), and compiled code calls the group's functions directly (monkeypatching one is
not seen there). The protocols (`IngestConnection`, `RtmpPublish`) derive from asyncio's
interpreted protocol classes, which mypyc allows: their instances keep a `__dict__`
beside the native attributes.

`python -m agent.build_fastpath` compiles `MODULES` into `agent/_compiled/` (needs mypy
and a C compiler: `scripts/bootstrap` does it), with a digest of the sources it was
built from. At import, `agent/__init__.py` puts the build in front of the package's
search path only when that digest matches the sources now in place: an edited module,
another Python, or no build at all, and the agent runs the interpreted modules, as
before, saying so in its first log lines (`STATE`). `RIG_AGENT_PURE_PYTHON=1` forces the
interpreted ones.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
BUILD = PACKAGE / "_compiled"
STAMP = "SOURCES"
# Per-message modules, in the package (paths relative to it).
MODULES = (
    "rtmp/message.py",
    "rtmp/chunk.py",
    "rtmp/_connection.py",
    "rtmp/server_session.py",
    "tags.py",
    "timeline.py",
    "ingest_facts.py",
    "media_queue.py",
    "relay.py",
    "destination.py",
    "broadcast.py",
    "ingest.py",
    "egress.py",
)

# Read at import, before the agent's settings (agent/settings.py) exist.
PURE_PYTHON = "RIG_AGENT_PURE_PYTHON"
STATE = "pure Python: not activated"  # what activate() found, for the agent's log
ACTIVE = False


def digest(package: Path = PACKAGE) -> str:
    """What a build must have been made from: these modules' bytes and this Python."""
    h = hashlib.sha256(sys.implementation.cache_tag.encode())
    for module in MODULES:
        h.update(module.encode() + b"\0" + (package / module).read_bytes() + b"\0")
    return h.hexdigest()


def activate(package_path: list[str]) -> bool:
    """Put a build of the current sources in front of `agent`'s search path (its
    `__path__`); False, and `STATE` says why, when there is none."""
    global STATE, ACTIVE
    ACTIVE = False
    if os.environ.get(PURE_PYTHON, "") not in ("", "0"):
        STATE = f"pure Python: {PURE_PYTHON} is set"
        return False
    try:
        built_from = (BUILD / STAMP).read_text().strip()
    except OSError:
        STATE = "pure Python: not compiled (python -m agent.build_fastpath)"
        return False
    if built_from != digest():
        STATE = "pure Python: the compiled build is of other sources (scripts/bootstrap)"
        return False
    sys.path.append(str(BUILD))  # mypyc's shared library of the group, a top-level module
    package_path.insert(0, str(BUILD / "agent"))
    STATE, ACTIVE = "compiled (mypyc)", True
    return True


def extend(subpackage_path: list[str], name: str) -> None:
    """A subpackage's part of `activate` (`agent.rtmp`'s modules)."""
    if ACTIVE:
        subpackage_path.insert(0, str(BUILD / "agent" / name))
