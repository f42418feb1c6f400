"""Placeholder and guessable secrets stop `rig` at start (issue 12, item 10)."""

import secrets
from pathlib import Path

import pytest
import yaml

from rig.secret_strength import secret_problem

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def deploy_placeholders() -> dict[str, str]:
    """The secret values shipped in deploy/'s examples."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "secret.yaml").read_text()))
    values = {name: value for doc in docs for name, value in doc["stringData"].items()}
    for line in (DEPLOY / "compose.env.example").read_text().splitlines():
        name, _, value = line.partition("=")
        if value and not line.startswith("#"):
            values[name] = value
    return values


WEAK_SECRETS = {
    "placeholder from deploy/": deploy_placeholders()["RIG_JWT_SECRET"],
    "repetition": "a" * 40,
    "words": "mysupersecretpasswordforrig12345",
    "repeated word": "passwordpasswordpasswordpassword",
    "sequence": "abcdefghijklmnopqrstuvwxyz0123456789",
    "short": secrets.token_urlsafe(16)[:20],
}


@pytest.mark.parametrize("secret", WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
def test_serve_refuses_a_weak_jwt_secret(run_rig, rig_env, free_port, tmp_path, secret):
    result = run_rig(
        "serve",
        "--port",
        str(free_port()),
        env=rig_env(RIG_JWT_SECRET=secret, RIG_DATA_DIR=str(tmp_path / "data")),
        cwd=tmp_path,
        timeout=30,  # before the fix, rig served (and this timed out)
    )
    assert result.returncode == 2, result.stderr
    output = result.stdout + result.stderr
    assert "RIG_JWT_SECRET refused" in output
    assert "secrets.token_urlsafe(48)" in output  # says how to make a good one
    assert secret not in output
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "postgres").exists()  # refused before starting anything


def test_placeholder_database_password_is_refused(run_rig, rig_env, tmp_path):
    placeholder = deploy_placeholders()["RIG_DATABASE_URL"]
    assert "CHANGE-ME" in placeholder
    for command in (["migrate"], ["agents", "list"]):
        result = run_rig(*command, env=rig_env(RIG_DATABASE_URL=placeholder), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "RIG_DATABASE_URL refused: its password is a placeholder" in result.stderr
        assert "Traceback" not in result.stderr
    # The compose file's password placeholder of earlier releases, as it builds the URL.
    url = "postgresql://rig:change-me-to-a-long-random-password@postgres:5432/rig"
    result = run_rig("migrate", env=rig_env(RIG_DATABASE_URL=url), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "change-me-to" not in result.stderr


def test_generated_secrets_pass():
    for _ in range(200):
        for secret in (secrets.token_urlsafe(48), secrets.token_hex(32), secrets.token_hex(16)):
            assert secret_problem(secret) is None, secret
    assert secret_problem("correct horse battery staple orbit jelly tundra") is None
