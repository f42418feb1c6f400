"""Settings of rig and rig-agent: a value out of its range is refused at start, naming
the variable and what it allows (exit 2, one line, no traceback), never accepted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli as agent_cli
from agent import settings as agent_settings
from rig import cli as rig_cli
from rig import settings as rig_settings


def rig_from(**env: str) -> rig_settings.Settings:
    args = rig_cli.build_parser().parse_args(["serve"])
    return rig_settings.settings_from(args, env)


def agent_from(**env: str) -> agent_settings.AgentSettings:
    args = agent_cli.build_parser().parse_args([])
    return agent_settings.settings_from(args, env)


RIG_REFUSED = [
    ("RIG_PORT", "70000"),
    ("RIG_PORT", "65536"),
    ("RIG_PORT", "-1"),
    ("RIG_PORT", "0"),  # rig would log :0 and listen on a port nobody is told
    ("RIG_PORT", "abc"),
    ("RIG_TOKEN_TTL", "-5"),
    ("RIG_TOKEN_TTL", "0"),
    ("RIG_AGENT_TOKEN_TTL", "0"),
    ("RIG_AGENT_TOKEN_TTL", "60"),  # the agent renews 60 s before expiry: every call
    ("RIG_CLAIM_TTL", "0"),
    ("RIG_CLAIM_TTL", "1"),
    ("RIG_LOG_LEVEL", "LOUD"),
    ("RIG_LOG_LEVEL", "10"),
    ("RIG_DATABASE_POOL_SIZE", "0"),
    ("RIG_RATE_LIMIT_ADDRESS", "-1"),
    ("RIG_RATE_LIMIT_WINDOW", "0"),
    ("RIG_RATE_LIMIT_WINDOW", "nan"),
    ("RIG_REQUEST_TIMEOUT", "0"),
    ("RIG_KEEPALIVE_TIMEOUT", "0"),  # aiohttp: no idle timer at all then
    ("RIG_KEEPALIVE_TIMEOUT", "inf"),
    ("RIG_EVENTS_PER_USER", "0"),
    ("RIG_MAX_DESTINATIONS", "0"),
    ("RIG_SERVICE_URL_YOUTUBE", "rtmp://a.rtmp.youtube.com:99999/live2"),
    ("RIG_SERVICE_URL_TWITCH", "live.twitch.tv"),
]


@pytest.mark.parametrize(("var", "value"), RIG_REFUSED)
def test_rig_refuses_a_setting_out_of_range_naming_it(var, value):
    with pytest.raises(ValueError, match=rf"^{var}: must be .*, not '{value}'$"):
        rig_from(**{var: value})


def test_rig_accepts_the_edges_of_each_range():
    settings = rig_from(
        RIG_PORT="65535",
        RIG_TOKEN_TTL="1",
        RIG_AGENT_TOKEN_TTL="120",
        RIG_CLAIM_TTL="2",
        RIG_LOG_LEVEL="debug",
        RIG_DATABASE_POOL_SIZE="1",
        RIG_RATE_LIMIT_ADDRESS="0",  # 0: no limit
        RIG_RATE_LIMIT_WINDOW="0.5",
        RIG_KEEPALIVE_TIMEOUT="0.5",
    )
    assert (settings.port, settings.token_ttl, settings.claim_ttl) == (65535, 1, 2)
    assert settings.log_level == "DEBUG"
    assert settings.rate_limit_address == 0
    assert rig_from(RIG_PORT="1").port == 1


AGENT_REFUSED = [
    ("RIG_AGENT_RTMP_LISTEN", "127.0.0.1:99999"),
    ("RIG_AGENT_RTMP_LISTEN", "127.0.0.1:65536"),
    ("RIG_AGENT_RTMP_LISTEN", "127.0.0.1:-1"),
    ("RIG_AGENT_RTMP_LISTEN", "nohost"),
    ("RIG_AGENT_RTMP_LISTEN", "127.0.0.1"),
    ("RIG_AGENT_HTTP_LISTEN", "127.0.0.1:70000"),
    ("RIG_AGENT_HTTP_LISTEN", "nohost"),
    ("RIG_URL", "http://127.0.0.1:99999"),
    ("RIG_URL", "127.0.0.1:8080"),
    ("RIG_URL", "ftp://rig.example"),
    ("RIG_AGENT_PUBLIC_URL", "rtmp://live.example.com:99999/live"),
    ("RIG_AGENT_PUBLIC_URL", "live.example.com"),
    ("RIG_AGENT_HEARTBEAT_INTERVAL", "0"),
    ("RIG_AGENT_HEARTBEAT_INTERVAL", "0.5"),
    ("RIG_AGENT_HEARTBEAT_INTERVAL", "-1"),
    ("RIG_AGENT_HEARTBEAT_INTERVAL", "nan"),
    ("RIG_AGENT_LOG_LEVEL", "LOUD"),
    ("RIG_AGENT_MAX_CONNECTIONS", "0"),
    ("RIG_AGENT_MAX_CONNECTIONS_PER_ADDRESS", "0"),
    ("RIG_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS", "0"),
    ("RIG_AGENT_HANDSHAKE_TIMEOUT", "0"),
    ("RIG_AGENT_PUBLISH_TIMEOUT", "-1"),
    ("RIG_AGENT_IDLE_TIMEOUT", "0"),
    ("RIG_AGENT_STALL_TIMEOUT", "0"),
    ("RIG_AGENT_MAX_MESSAGE_BYTES", "0"),
    ("RIG_AGENT_UNAUTHENTICATED_MAX_MESSAGE_BYTES", "0"),
    ("RIG_AGENT_UNAUTHENTICATED_BUFFER_BYTES", "0"),
    ("RIG_AGENT_FAILED_PUBLISH_BURST", "-1"),
    ("RIG_AGENT_FAILED_PUBLISHES_PER_MINUTE", "0"),
    ("RIG_AGENT_REFUSED_KEY_TTL", "-1"),
    ("RIG_AGENT_QUEUE_SECONDS", "0"),
    ("RIG_AGENT_QUEUE_BYTES", "0"),
    ("RIG_AGENT_CONNECT_TIMEOUT", "0"),
    ("RIG_AGENT_WRITE_TIMEOUT", "0"),
    ("RIG_AGENT_RETRY_INITIAL", "0"),
    ("RIG_AGENT_RETRY_MAX", "0"),
    ("RIG_AGENT_SHUTDOWN_TIMEOUT", "-1"),
    ("RIG_AGENT_WORKERS", "0"),
]


@pytest.mark.parametrize(("var", "value"), AGENT_REFUSED)
def test_agent_refuses_a_setting_out_of_range_naming_it(var, value):
    with pytest.raises(ValueError, match=rf"^{var}: .*'{value}'"):
        agent_from(**{var: value})


def test_agent_accepts_the_edges_of_each_range():
    settings = agent_from(
        RIG_URL="https://rig.example.com:8443/",
        RIG_AGENT_RTMP_LISTEN="127.0.0.1:0",  # 0: any free port (the tests use it)
        RIG_AGENT_HTTP_LISTEN="[::1]:65535",
        RIG_AGENT_PUBLIC_URL="rtmps://live.example.com:443/live",
        RIG_AGENT_HEARTBEAT_INTERVAL="1",
        RIG_AGENT_LOG_LEVEL="warning",
        RIG_AGENT_FAILED_PUBLISH_BURST="0",  # 0: no limit
        RIG_AGENT_REFUSED_KEY_TTL="0",  # 0: off
        RIG_AGENT_SHUTDOWN_TIMEOUT="0",
    )
    assert settings.listen_port == 0
    assert settings.heartbeat_interval == 1.0
    assert settings.log_level == "WARNING"
    assert agent_from(RIG_AGENT_RTMP_LISTEN=":1935").listen_host == "0.0.0.0"  # noqa: S104
    assert agent_from(RIG_AGENT_HTTP_LISTEN="OFF").http_listen == "OFF"


def test_a_flag_out_of_range_is_refused_with_what_is_allowed(capsys):
    with pytest.raises(SystemExit) as exit_:
        rig_cli.build_parser().parse_args(["serve", "--port", "70000"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port: invalid setting: must be an integer from 1 to 65535" in err
    with pytest.raises(SystemExit):
        agent_cli.build_parser().parse_args(["--heartbeat-interval", "0"])
    assert "argument --heartbeat-interval: invalid setting: must be" in capsys.readouterr().err


def run(module: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIG_")}
    clean.update(
        RIG_DATABASE_URL="postgresql://rig@127.0.0.1:1/rig",  # nothing there: exit 1
        RIG_DATA_DIR=str(cwd),
        RIG_URL="http://127.0.0.1:9",
        RIG_AGENT_KEY="unused",
        RIG_AGENT_RTMP_LISTEN="127.0.0.1:0",
        RIG_AGENT_HTTP_LISTEN="off",
        RIG_AGENT_WORKERS="1",
    )
    clean.update(env)
    command = [sys.executable, "-m", module, *(["migrate", "--status"] if module == "rig" else [])]
    # A setting accepted by mistake starts the agent for good: the timeout fails the test.
    return subprocess.run(
        command, env=clean, cwd=cwd, capture_output=True, text=True, check=False, timeout=20
    )


@pytest.mark.parametrize(
    ("module", "var", "value"),
    [
        ("rig", "RIG_LOG_LEVEL", "LOUD"),
        ("rig", "RIG_DATABASE_POOL_SIZE", "0"),
        ("rig", "RIG_PORT", "70000"),
        ("rig", "RIG_TOKEN_TTL", "-5"),
        ("agent", "RIG_AGENT_LOG_LEVEL", "LOUD"),
        ("agent", "RIG_AGENT_RTMP_LISTEN", "nohost"),
        ("agent", "RIG_AGENT_RTMP_LISTEN", "127.0.0.1:99999"),
        ("agent", "RIG_AGENT_HEARTBEAT_INTERVAL", "0"),
    ],
)
def test_the_programs_refuse_in_one_line_with_exit_2(module, var, value, tmp_path):
    result = run(module, tmp_path, **{var: value})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{'rig' if module == 'rig' else 'rig-agent'}: invalid setting: ")
    assert f"{var}: must be" in lines[0] and repr(value) in lines[0]
