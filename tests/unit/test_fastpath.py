"""agent/fastpath.py: a compiled build is used only when made from the sources in place;
and in CI the suite runs the compiled modules (scripts/bootstrap builds them)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

import agent.egress
import agent.ingest
import agent.relay
import agent.rtmp.chunk
from agent import fastpath


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the compiled modules' sources, standing in for the package; activate()
    looks for its build there."""
    copy = tmp_path / "agent"
    for module in fastpath.MODULES:
        (copy / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fastpath.PACKAGE / module, copy / module)
    monkeypatch.setattr(fastpath, "PACKAGE", copy)
    monkeypatch.setattr(fastpath, "BUILD", copy / "_compiled")
    monkeypatch.setattr(fastpath, "digest", lambda package=copy: real_digest(package))
    monkeypatch.setattr(fastpath, "STATE", fastpath.STATE)
    monkeypatch.setattr(fastpath, "ACTIVE", fastpath.ACTIVE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("RIG_AGENT_PURE_PYTHON", raising=False)
    return copy


real_digest = fastpath.digest


def stamp(package: Path, text: str) -> None:
    (package / "_compiled").mkdir(exist_ok=True)
    (package / "_compiled" / fastpath.STAMP).write_text(text + "\n")


def test_a_build_of_these_sources_goes_first_on_the_path(package: Path) -> None:
    stamp(package, real_digest(package))
    path = ["/the/package"]
    assert fastpath.activate(path)
    assert path == [str(package / "_compiled" / "agent"), "/the/package"]
    assert str(package / "_compiled") in sys.path  # mypyc's shared library of the group
    assert fastpath.STATE == "compiled (mypyc)"
    rtmp_path = ["/the/package/rtmp"]
    fastpath.extend(rtmp_path, "rtmp")
    assert rtmp_path[0] == str(package / "_compiled" / "agent" / "rtmp")


def test_a_build_of_other_sources_is_not_used(package: Path) -> None:
    stamp(package, real_digest(package))
    with (package / "relay.py").open("a") as source:
        source.write("\n# edited after the build\n")
    path = ["/the/package"]
    assert not fastpath.activate(path)
    assert path == ["/the/package"]
    assert "other sources" in fastpath.STATE
    rtmp_path = ["/the/package/rtmp"]
    fastpath.extend(rtmp_path, "rtmp")
    assert rtmp_path == ["/the/package/rtmp"]


def test_no_build_or_the_override_leaves_the_interpreted_modules(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ["/the/package"]
    assert not fastpath.activate(path) and "not compiled" in fastpath.STATE
    stamp(package, real_digest(package))
    monkeypatch.setenv("RIG_AGENT_PURE_PYTHON", "1")
    assert not fastpath.activate(path) and "RIG_AGENT_PURE_PYTHON" in fastpath.STATE
    assert path == ["/the/package"]


def test_the_digest_covers_every_compiled_module(package: Path) -> None:
    before = real_digest(package)
    for module in fastpath.MODULES:
        source = package / module
        original = source.read_bytes()
        source.write_bytes(original + b"\n")
        assert real_digest(package) != before, module
        source.write_bytes(original)
    assert real_digest(package) == before


PURE = os.environ.get("RIG_AGENT_PURE_PYTHON", "") not in ("", "0")


@pytest.mark.skipif(not PURE, reason="the interpreted pass of scripts/test")
def test_the_override_runs_the_interpreted_modules() -> None:
    assert not fastpath.ACTIVE and "RIG_AGENT_PURE_PYTHON" in fastpath.STATE
    for module in (agent.relay, agent.rtmp.chunk, agent.ingest, agent.egress):
        assert module.__file__ is not None and module.__file__.endswith(".py"), module


@pytest.mark.skipif(
    PURE or not os.environ.get("CI"), reason="a developer's checkout may be unbuilt"
)
def test_ci_runs_the_compiled_modules() -> None:
    """scripts/bootstrap compiles them; a build that failed would leave the whole suite
    testing only the interpreted modules (and the agent slower) without a word."""
    assert fastpath.ACTIVE, fastpath.STATE
    for module in (agent.relay, agent.rtmp.chunk, agent.ingest, agent.egress):
        assert module.__file__ is not None and module.__file__.endswith(".so"), module
