"""`python -m agent.build_fastpath`: compile the relay's per-message modules with mypyc.

What is compiled and when a build is used: agent/fastpath.py. Needs mypy (with mypyc)
and a C compiler with Python's headers; `scripts/bootstrap` runs this whenever the
sources changed since the last build.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.fastpath import BUILD, MODULES, PACKAGE, STAMP, digest


def _mypyc() -> list[str]:
    """mypyc from this interpreter's packages, else the one on PATH (an image's build
    stage may keep mypy out of the runtime's environment: deploy/Dockerfile)."""
    if importlib.util.find_spec("mypyc") is not None:
        return [sys.executable, "-m", "mypyc"]
    found = shutil.which("mypyc")
    if found is None:
        raise RuntimeError("mypyc is not installed (pip install mypy)")
    return [found]


def build() -> Path:
    """Compile MODULES into BUILD (replacing any build); returns BUILD.

    mypyc works on a copy of the package, so the type information of the modules it
    does not compile is there while nothing but the compiled modules is kept."""
    with tempfile.TemporaryDirectory(prefix="rig-mypyc-") as tmp:
        work = Path(tmp)
        shutil.copytree(
            PACKAGE,
            work / "agent",
            ignore=shutil.ignore_patterns("_compiled*", "__pycache__", "*.so"),
        )
        subprocess.run(
            [*_mypyc(), "--ignore-missing-imports", "--follow-imports=silent",
             *(f"agent/{m}" for m in MODULES)],
            cwd=work, check=True, env={**os.environ, "MYPY_CACHE_DIR": str(work / ".mypy_cache")},
        )  # fmt: skip
        staged = work / "out"
        staged.mkdir()
        for so in work.glob("*.so"):  # the group's shared library
            shutil.copy2(so, staged / so.name)
        for module in MODULES:
            stem = Path(module).with_suffix("")
            found = list((work / "agent" / stem.parent).glob(f"{stem.name}.*.so"))
            if len(found) != 1:
                raise RuntimeError(f"mypyc made no extension for {module}")
            target = staged / "agent" / stem.parent
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found[0], target / found[0].name)
        # The sources compiled (the copy), not whatever the checkout holds by now.
        (staged / STAMP).write_text(digest(work / "agent") + "\n")
        old = BUILD.with_name("_compiled.old")
        shutil.rmtree(old, ignore_errors=True)
        if BUILD.exists():
            BUILD.rename(old)
        shutil.copytree(staged, BUILD)
        shutil.rmtree(old, ignore_errors=True)
    return BUILD


def main() -> int:
    """`python -m agent.build_fastpath`: build, then say what an agent would run."""
    print(f"compiled into {build()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
