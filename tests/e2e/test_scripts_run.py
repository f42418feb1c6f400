"""`scripts/run` as a newcomer uses it: Ctrl-C while live, a second one by mistake
(issue 12, rough edges)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .harness import REPO, Api, clean_env, free_port, key_id, wait_until

pytestmark = pytest.mark.e2e

READY = "rig is running."


class ScriptsRun:
    """`scripts/run` in a session of its own, so that SIGINT to its process group is
    what Ctrl-C in a terminal sends."""

    def __init__(self, root: Path, env: dict[str, str], name: str = "run") -> None:
        self.output = root / f"{name}.out"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(REPO / "scripts" / "run")],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"scripts/run exited:\n{self.text()[-4000:]}")
            return READY in self.text()

        wait_until(ready, 180, "scripts/run to say it is running", interval=0.2)

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def run_env(tmp_path: Path) -> dict[str, str]:
    return clean_env(
        RIG_DATA_DIR=str(tmp_path / "rig-data"),
        RIG_PORT=str(free_port()),
        RIG_AGENT_RTMP_LISTEN=f"127.0.0.1:{free_port()}",
        RIG_AGENT_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
    )


def publish_test_pattern(url: str, log: Path) -> subprocess.Popen:
    """The README's "Try it" publisher: a test pattern with a tone, in real time."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [
                "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
                "-f", "lavfi", "-i", "sine=frequency=440",
                "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-f", "flv", url,
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def test_ctrl_c_while_live_releases_the_stream(e2e_tools, tmp_path):
    env = run_env(tmp_path)
    run = ScriptsRun(tmp_path, env)
    publisher = None
    try:
        run.wait_ready()
        api = Api(f"http://127.0.0.1:{env['RIG_PORT']}")
        api.login_new_user()
        stream = api.stream({})
        url = f"rtmp://{env['RIG_AGENT_RTMP_LISTEN']}/live/{stream.key}"
        publisher = publish_test_pattern(url, tmp_path / "ffmpeg.err")

        def live() -> bool:
            return api.call("GET", f"/streams/{stream.id}")["isStreaming"]  # type: ignore[index]

        wait_until(live, 30, "the stream to be live", interval=0.2)
        assert run.ctrl_c() == 0, run.text()[-4000:]
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait(timeout=30)
        run.kill()
    # Right after the stop (well within the claim's 15 s), the stream is offline: the
    # agent stopped first and released its claim while rig still answered.
    listing = subprocess.run(
        [str(REPO / ".venv" / "bin" / "rig"), "streams", "list", "--json"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (row,) = json.loads(listing.stdout)
    assert row["live_on"] is None, (row, run.text()[-4000:])
    output = run.text()
    assert f"stream {key_id(stream.key)} from" in output
    assert "ended: shutdown" in output, output[-4000:]
    assert "ended: kicked" not in output, output[-4000:]
    assert "could not release" not in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    # The embedded PostgreSQL stopped cleanly (pgserver runs it as its own user when we
    # are root: it must still reach its directory in the data dir).
    assert "Failed to stop server" not in output, output[-4000:]


def test_a_second_run_does_not_claim_to_be_running(e2e_tools, tmp_path):
    env = run_env(tmp_path)
    first = ScriptsRun(tmp_path, env, "first")
    second = None
    try:
        first.wait_ready()
        second = ScriptsRun(tmp_path, env, "second")
        rc = second.proc.wait(timeout=180)
        assert rc != 0, second.text()
        assert READY not in second.text(), second.text()
        assert "already" in second.text(), second.text()
        # The first one is untouched.
        assert first.proc.poll() is None
        time.sleep(0.5)
        assert first.ctrl_c() == 0
    finally:
        if second is not None:
            second.kill()
        first.kill()
