"""schemathesis against a live `rig serve` with the OpenAPI document rig serves.

Every documented operation gets generated requests (valid and invalid) four times:
without a token, with a user token, with an agent token and with a user's API key.
Each response must not be a 5xx and must conform to the document: a documented status
code, content type and headers, and a body matching the schema of that status (which
names the errorCodes it may carry). Invalid input must be rejected. The number of
examples is bounded so the whole run stays well under a minute.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rig.app import openapi_document as build_document

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Invalid input must be refused with one of these (a 5xx is a failure of its own).
REJECTED = ["400", "401", "403", "404", "409", "413", "429"]
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
        "generation": {"max-examples": MAX_EXAMPLES},
    }
)
schema = schemathesis.openapi.from_dict(build_document(), config=CONFIG)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rig_env(**settings: str) -> dict[str, str]:
    """The environment of the rig process: no RIG_* leaking in from outside."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RIG_")}, **settings}


@dataclass
class LiveRig:
    url: str
    headers: dict[str, dict[str, str]]  # by caller: anonymous, user, agent
    log_path: Path


def _call(method: str, url: str, body: dict | None = None, token: str | None = None) -> dict:
    request = urllib.request.Request(url, method=method)  # noqa: S310 (a local URL)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        return json.load(resp)["payload"]


@pytest.fixture(scope="module")
def live_rig(make_database, tmp_path_factory) -> Iterator[LiveRig]:
    """`python -m rig serve` on a fresh database, with a user, a stream and an agent."""
    root = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    env = rig_env(
        RIG_DATABASE_URL=make_database(),
        RIG_JWT_SECRET=secrets.token_urlsafe(48),
        RIG_DATA_DIR=str(root / "data"),
    )
    log_path = root / "rig.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rig", "serve", "--port", str(port)],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                _call("GET", f"{url}/readyz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        user = {"username": "fuzzer", "password": "fuzzing password", "email": "f@example.org"}
        _call("POST", f"{url}/accounts/", user)
        token = _call("POST", f"{url}/accounts/auth/local", user)["token"]
        stream = _call("POST", f"{url}/streams/", token=token)
        _call(
            "POST",
            f"{url}/streams/{stream['id']}/destination",
            {"service": "YouTube", "streamKey": "fuzz-destination"},
            token,
        )
        created = subprocess.run(
            [sys.executable, "-m", "rig", "agents", "create", "fuzz-agent"],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        api_key = created.stdout.strip().splitlines()[-1]
        user_key = _call("POST", f"{url}/accounts/apikeys", {"name": "fuzz"}, token)["apiKey"]
        agent_token = _call("POST", f"{url}/agents/auth", {"apiKey": api_key})["token"]
        headers = {
            "anonymous": {},
            "user": {"Authorization": f"Bearer {token}"},
            "agent": {"Authorization": f"Bearer {agent_token}"},
            "apikey": {"X-Api-Key": user_key},
        }
        yield LiveRig(url, headers, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    log_text = log_path.read_text()
    assert "Traceback" not in log_text, log_text[-5000:]
    assert " ERROR " not in log_text, log_text[-5000:]


@schema.parametrize()
@pytest.mark.parametrize("caller", ["anonymous", "user", "agent", "apikey"])
@settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_document(case, caller, live_rig):
    headers = live_rig.headers[caller]
    response = case.call(base_url=live_rig.url, headers=headers, timeout=15)
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_the_document_covers_the_four_callers():
    """The run above exercises every operation (and the schema's security schemes)."""
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) == sum(len(item) for item in build_document()["paths"].values())
    schemes = build_document()["components"]["securitySchemes"]
    assert set(schemes) == {"userToken", "agentToken", "apiKey"}
