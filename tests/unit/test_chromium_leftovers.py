"""The browser fixtures' clean-up: every process carrying the launch's mark is killed,
children of children included, and nothing else."""

import os
import subprocess
import time
from pathlib import Path

from tests.chromium import MARK_VARIABLE, kill_marked, launch_options


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _start(mark: str) -> tuple[subprocess.Popen, int]:
    """A shell (as the browser) with a grandchild (as its zygote) that outlives it."""
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"],
        env={**os.environ, MARK_VARIABLE: mark},
        stdout=subprocess.PIPE,
        text=True,
    )
    with shell.stdout:
        return shell, int(shell.stdout.readline())


def test_kill_marked_ends_the_marked_processes_and_their_children_only() -> None:
    mark, options = launch_options()
    assert options["env"][MARK_VARIABLE] == mark
    other_mark, _ = launch_options()
    shell, grandchild = _start(mark)
    other_shell, other_grandchild = _start(other_mark)
    try:
        killed = kill_marked(mark)
        shell.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(killed) == sorted([shell.pid, grandchild])
        assert not _alive(grandchild)
        assert other_shell.poll() is None and _alive(other_grandchild)
    finally:
        kill_marked(other_mark)
        other_shell.wait(timeout=5)
