"""Bearer tokens: missing, garbage, forged, expired, tampered, and used outside their scope."""

import base64
import json
import secrets
import time
import uuid

import jwt
import pytest

from rig import tokens
from rig.agents import create_agent
from rig.tokens import TokenError, TokenIssuer

PASSWORD = "correct horse battery"


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unb64(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def claims(subject: str, **overrides) -> dict:
    """The claims of a genuine user token (as rig issues them), with overrides."""
    now = int(time.time())
    base = {
        "sub": subject,
        "typ": "user",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "aud": "rig-api",
        "iss": "rig",
        "gen": 0,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(secret: str, subject: str, algorithm: str = "HS256", **overrides) -> str:
    return jwt.encode(claims(subject, **overrides), secret, algorithm=algorithm)


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def list_streams(client, headers):
    return await client.get("/streams/", headers=headers)


async def test_token_minted_with_the_app_secret_works(api, settings, expect_ok):
    """The control for every forgery below: done right, a minted token is accepted."""
    account = await api.account()
    token = mint(settings.jwt_secret, account.id)
    await expect_ok(await list_streams(api.client, auth(token)), "Stream list for user")
    lower = {"Authorization": f"bearer {token}"}  # the scheme is case-insensitive
    await expect_ok(await list_streams(api.client, lower), "Stream list for user")


async def test_alg_none_token_is_refused(api, settings, expect_error):
    account = await api.account()
    body = b64(claims(account.id))
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"alg": "NONE"}):
        for signature in ("", "AAAA"):
            token = f"{b64(header)}.{body}.{signature}"
            await expect_error(await list_streams(api.client, auth(token)), 1003, 401)
    # The genuine signature of that very payload would have been accepted.
    genuine = mint(settings.jwt_secret, account.id)
    assert unb64(genuine.split(".")[1])["sub"] == account.id


async def test_token_signed_with_another_key_is_refused(api, expect_error):
    account = await api.account()
    token = mint(secrets.token_urlsafe(48), account.id)
    await expect_error(await list_streams(api.client, auth(token)), 1003, 401)


async def test_other_algorithm_with_the_right_key_is_refused(api, settings, expect_error):
    account = await api.account()
    for algorithm in ("HS384", "HS512"):
        token = mint(settings.jwt_secret, account.id, algorithm=algorithm)
        await expect_error(await list_streams(api.client, auth(token)), 1003, 401)


async def test_expired_token_is_refused(api, settings, expect_error):
    account = await api.account()
    now = int(time.time())
    token = mint(settings.jwt_secret, account.id, iat=now - 7200, nbf=now - 7200, exp=now - 60)
    await expect_error(await list_streams(api.client, auth(token)), 1003, 401)


async def test_token_not_yet_valid_is_refused(api, settings, expect_error):
    account = await api.account()
    now = int(time.time())
    token = mint(settings.jwt_secret, account.id, nbf=now + 600, exp=now + 7200)
    await expect_error(await list_streams(api.client, auth(token)), 1003, 401)


async def test_tampered_payload_is_refused(api, expect_ok, expect_error):
    alice, bob = await api.account(), await api.account()
    bob_stream = await api.stream(bob)
    header, payload, signature = alice.token.split(".")
    tampered_claims = unb64(payload)
    assert tampered_claims["sub"] == alice.id
    tampered_claims["sub"] = bob.id
    tampered = f"{header}.{b64(tampered_claims)}.{signature}"
    await expect_error(await list_streams(api.client, auth(tampered)), 1003, 401)
    resp = await api.client.get(f"/streams/{bob_stream['id']}", headers=auth(tampered))
    await expect_error(resp, 1003, 401)
    # The untampered token still works, for Alice only.
    assert (
        await expect_ok(await list_streams(api.client, alice.headers), "Stream list for user") == []
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "someone-else"},
        {"aud": None},
        {"iss": "not-rig"},
        {"iss": None},
        {"exp": None},
        {"sub": None},
        {"typ": None},
        {"typ": "admin"},
        {"gen": 1},
        {"gen": "0"},
        {"sub": "not-a-uuid"},
        {"sub": "UNKNOWN USER"},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
async def test_token_with_bad_claims_is_refused(api, settings, expect_error, overrides):
    account = await api.account()
    if overrides.get("sub") == "UNKNOWN USER":
        overrides = {"sub": str(uuid.uuid4())}
    token = mint(settings.jwt_secret, account.id, **overrides)
    await expect_error(await list_streams(api.client, auth(token)), 1003, 401)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer a.b.c",
        "Basic dXNlcjpjb3JyZWN0IGhvcnNlIGJhdHRlcnk=",
        "Token VALID",
        "VALID",
        "Bearer VALID.extra",
    ],
)
async def test_missing_or_garbage_authorization_is_1003(api, expect_error, authorization):
    account = await api.account()
    stream = await api.stream(account)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.replace("VALID", account.token)
    routes = [
        ("GET", "/streams/", None),
        ("POST", "/streams/", None),
        ("GET", f"/streams/{stream['id']}", None),
        ("POST", f"/streams/{stream['id']}/destination", {"service": "YouTube", "streamKey": "k"}),
        ("POST", f"/streams/{stream['id']}/changeKey", None),
        ("POST", "/accounts/password", {"oldPassword": PASSWORD, "newPassword": "new password!"}),
        ("GET", f"/agents/config/{stream['streamKey']}", None),
    ]
    for method, path, body in routes:
        resp = await api.client.request(method, path, json=body, headers=headers)
        await expect_error(resp, 1003, 401)
    assert await api.db.fetchval("SELECT count(*) FROM streams") == 1
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 0
    assert (await api.detail(account, stream["id"]))["streamKey"] == stream["streamKey"]


async def test_user_token_cannot_call_agent_routes(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=account.headers)
    await expect_error(resp, 1003, 403)
    # The same route answers an agent token.
    agent_token = await api.agent_token()
    resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=auth(agent_token))
    assert await expect_ok(resp, "Stream Config") == []


async def test_agent_token_cannot_call_client_routes(api, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    headers = auth(await api.agent_token())
    routes = [
        ("GET", "/streams/", None),
        ("POST", "/streams/", None),
        ("GET", f"/streams/{stream['id']}", None),
        ("POST", f"/streams/{stream['id']}/destination", {"service": "YouTube", "streamKey": "k"}),
        ("POST", f"/streams/{stream['id']}/changeKey", None),
        ("POST", "/accounts/password", {"oldPassword": PASSWORD, "newPassword": "new password!"}),
    ]
    for method, path, body in routes:
        resp = await api.client.request(method, path, json=body, headers=headers)
        await expect_error(resp, 1003, 403)
    assert await api.db.fetchval("SELECT count(*) FROM streams") == 1
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 0
    assert (await api.detail(account, stream["id"]))["streamKey"] == stream["streamKey"]
    await api.login(account.username, PASSWORD)


async def test_forged_agent_tokens_are_refused(api, settings, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    agent_id, _key = await create_agent(api.db, "edge-1")
    path = f"/agents/config/{stream['streamKey']}"
    genuine = mint(settings.jwt_secret, str(agent_id), typ="agent", gen=None)
    assert await expect_ok(await api.client.get(path, headers=auth(genuine)), "Stream Config") == []
    now = int(time.time())
    forgeries = [
        mint(secrets.token_urlsafe(48), str(agent_id), typ="agent", gen=None),
        mint(settings.jwt_secret, str(agent_id), typ="agent", gen=None, aud="x"),
        mint(
            settings.jwt_secret,
            str(agent_id),
            typ="agent",
            gen=None,
            exp=now - 1,
            iat=now - 99,
            nbf=now - 99,
        ),
        mint(settings.jwt_secret, str(uuid.uuid4()), typ="agent", gen=None),
        mint(settings.jwt_secret, "edge-1", typ="agent", gen=None),
        f"{b64({'alg': 'none'})}.{genuine.split('.')[1]}.",
    ]
    for token in forgeries:
        await expect_error(await api.client.get(path, headers=auth(token)), 1003, 401)


# ------------------------------------------------------------ the verified-token cache


def test_a_cached_token_is_refused_once_it_expires():
    issuer = TokenIssuer(secrets.token_urlsafe(32))
    token, expires = issuer.issue(str(uuid.uuid4()), "agent", ttl=1)
    first = issuer.verify(token)
    assert issuer.verify(token) is first  # the second answer came from the cache
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    with pytest.raises(TokenError):
        issuer.verify(token)
    assert token not in issuer._verified


def test_the_cache_is_bounded_and_holds_only_valid_tokens(monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    issuer = TokenIssuer(secrets.token_urlsafe(32))
    issued = [issuer.issue(str(uuid.uuid4()), "user", ttl=60)[0] for _ in range(5)]
    for token in issued:
        issuer.verify(token)
    assert len(issuer._verified) == 3
    assert list(issuer._verified) == issued[2:]  # the oldest went first
    header, payload, signature = issued[0].split(".")
    forged = ".".join((header, b64({**unb64(payload), "sub": str(uuid.uuid4())}), signature))
    with pytest.raises(TokenError):
        issuer.verify(forged)
    assert forged not in issuer._verified
