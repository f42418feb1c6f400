"""Accounts: create, log in, change password (`/accounts/...`)."""

import uuid

import asyncpg
from aiohttp import web

from rig.appkeys import POOL, SETTINGS, TOKENS
from rig.auth import require_user
from rig.body import check_email, check_password, check_username, read_json
from rig.errors import CreateFailed, InvalidCredentials, UpdateFailed, success
from rig.passwords import hash_password, verify_password

routes = web.RouteTableDef()

# Index name -> the field a duplicate is about (sql/0001_initial.sql).
UNIQUE_FIELDS = {"users_username_key": "username", "users_email_key": "email"}


@routes.post("/accounts/")
async def create_account(request: web.Request) -> web.Response:
    """Create a user. Duplicate username or email: 1006 naming the field."""
    body = await read_json(request, ("username", "password", "email"))
    check_username(body["username"])
    check_password(body["password"])
    check_email(body["email"])
    user_id = uuid.uuid4()
    password_hash = await hash_password(body["password"])
    try:
        await request.app[POOL].execute(
            "INSERT INTO users (id, username, email, password_hash) VALUES ($1, $2, $3, $4)",
            user_id,
            body["username"],
            body["email"],
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        field = UNIQUE_FIELDS.get(exc.constraint_name or "", "username")
        raise CreateFailed(
            f"Unable to create user: {field} already taken",
            details={"field": field, "reason": "already taken"},
        ) from exc
    payload = {"userID": str(user_id), "username": body["username"], "email": body["email"]}
    return success("User created", payload)


@routes.post("/accounts/auth/local")
async def authenticate(request: web.Request) -> web.Response:
    """Exchange username and password for a user token.

    A wrong username and a wrong password get the same answer after the same work.
    """
    body = await read_json(request, ("username", "password"))
    pool = request.app[POOL]
    row = await pool.fetchrow(
        "SELECT id, username, password_hash, token_generation FROM users"
        " WHERE lower(username) = lower($1)",
        body["username"],
    )
    matches, needs_rehash = await verify_password(
        row["password_hash"] if row else None, body["password"]
    )
    if row is None or not matches:
        raise InvalidCredentials("Invalid username or password")
    if needs_rehash:
        await pool.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            row["id"],
            await hash_password(body["password"]),
        )
    token, _expires = request.app[TOKENS].issue(
        str(row["id"]), "user", request.app[SETTINGS].token_ttl, row["token_generation"]
    )
    return success("Authentication successful", {"username": row["username"], "token": token})


@routes.post("/accounts/password")
async def change_password(request: web.Request) -> web.Response:
    """Change the caller's password; every token issued before stops working."""
    user = await require_user(request)
    body = await read_json(request, ("oldPassword", "newPassword"))
    check_password(body["newPassword"], "newPassword")
    pool = request.app[POOL]
    current = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    matches, _ = await verify_password(current, body["oldPassword"])
    if not matches:
        raise InvalidCredentials("Invalid old password", details={"field": "oldPassword"})
    new_hash = await hash_password(body["newPassword"])
    # Compare-and-set: a concurrent change of the same password makes this one fail.
    updated = await pool.execute(
        "UPDATE users SET password_hash = $2, token_generation = token_generation + 1"
        " WHERE id = $1 AND password_hash = $3",
        user.id,
        new_hash,
        current,
    )
    if updated != "UPDATE 1":
        raise UpdateFailed("Password changed concurrently; try again")
    return success("User password changed", {"username": user.username})
