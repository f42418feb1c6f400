"""An RTMP address that cannot be bound (taken by another process) is one ERROR line
naming the setting and the address, and the agent exits 1: one process or several."""

import socket
import subprocess
import sys

import pytest

from .test_agent_ops import agent_env


@pytest.mark.parametrize(
    ("workers", "shared"), [("1", False), ("2", False), ("1", True), ("2", True)]
)
def test_a_taken_rtmp_port_names_the_setting_and_exits_1(workers, shared):
    # `shared`: the port is held with SO_REUSEPORT, as another multi-worker agent of the
    # same user holds it: a second agent must not join it and share its connections.
    with socket.socket() as taken:
        if shared:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        env = agent_env(RIG_AGENT_WORKERS=workers, RIG_AGENT_HTTP_LISTEN="off")
        env["RIG_AGENT_RTMP_LISTEN"] = listen
        done = subprocess.run(
            [sys.executable, "-m", "agent"], env=env, capture_output=True, text=True, timeout=60
        )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"ERROR agent: RIG_AGENT_RTMP_LISTEN {listen}: address already in use" in output
    assert "Errno" not in output
    assert "Traceback" not in output
    assert env["RIG_AGENT_KEY"] not in output
