"""Accounts: create, log in, change password (`/accounts/...`)."""

import uuid

import asyncpg
from aiohttp import web

from rig.api import ApiRoutes
from rig.appkeys import LOGIN_HASHING, PASSWORD_CHANGE_HASHING, POOL, RATE_LIMITS, SETTINGS, TOKENS
from rig.auth import require_user
from rig.body import read_body
from rig.errors import CreateFailed, InvalidCredentials, UpdateFailed
from rig.shapes import AccountCreated, LoggedIn, Login, NewAccount, PasswordChange, PasswordChanged

routes = ApiRoutes()

# Index name -> the field a duplicate is about (sql/0001_initial.sql).
UNIQUE_FIELDS = {"users_username_key": "username", "users_email_key": "email"}


@routes.post(
    "/accounts/",
    "createAccount",
    tag="accounts",
    summary="Create an account",
    message="User created",
    payload=AccountCreated,
    body=NewAccount,
    errors=("429",),
    conflicts=(1006,),
    description="Rate limited per client address (429).",
)
async def create_account(request: web.Request) -> AccountCreated:
    """Create a user. Duplicate username or email: 1006 naming the field."""
    body = await read_body(request, NewAccount)
    user_id = uuid.uuid4()
    password_hash = await request.app[LOGIN_HASHING].hash(body.password)
    try:
        await request.app[POOL].execute(
            "INSERT INTO users (id, username, email, password_hash) VALUES ($1, $2, $3, $4)",
            user_id,
            body.username,
            body.email,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        field = UNIQUE_FIELDS.get(exc.constraint_name or "", "username")
        raise CreateFailed(
            f"Unable to create user: {field} already taken",
            details={"field": field, "reason": "already taken"},
        ) from exc
    return AccountCreated(userID=user_id, username=body.username, email=body.email)


@routes.post(
    "/accounts/auth/local",
    "login",
    tag="accounts",
    summary="Log in: exchange username and password for a user token",
    message="Authentication successful",
    payload=LoggedIn,
    body=Login,
    errors=("401", "429"),
    description="A wrong username and a wrong password get the same answer (1003)."
    " Rate limited per client address; wrong passwords per username and address and per"
    " username (429).",
)
async def authenticate(request: web.Request) -> LoggedIn:
    """Exchange username and password for a user token.

    A wrong username and a wrong password get the same answer after the same work.
    Wrong guesses are limited per username (rig/ratelimit.py); a right one costs nothing.
    """
    body = await read_body(request, Login)
    guess = request.app[RATE_LIMITS].login_guess(request, body.username)
    pool = request.app[POOL]
    hashing = request.app[LOGIN_HASHING]
    row = await pool.fetchrow(
        "SELECT id, username, password_hash, token_generation FROM users"
        " WHERE lower(username) = lower($1)",
        body.username,
    )
    matches, needs_rehash = await hashing.verify(
        row["password_hash"] if row else None, body.password
    )
    if row is None or not matches:
        raise InvalidCredentials("Invalid username or password")
    request.app[RATE_LIMITS].guessed_right(guess)
    if needs_rehash:
        await pool.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            row["id"],
            await hashing.hash(body.password),
        )
    token, _expires = request.app[TOKENS].issue(
        str(row["id"]), "user", request.app[SETTINGS].token_ttl, row["token_generation"]
    )
    return LoggedIn(username=row["username"], token=token)


@routes.post(
    "/accounts/password",
    "changePassword",
    tag="accounts",
    summary="Change the caller's password; earlier tokens stop working",
    message="User password changed",
    payload=PasswordChanged,
    auth="account",
    body=PasswordChange,
    errors=("429",),
    conflicts=(1007,),
    description="Rate limited per client address; wrong old passwords per user (429).",
)
async def change_password(request: web.Request) -> PasswordChanged:
    """Change the caller's password; every token issued before stops working.

    Wrong old passwords are limited per user (a stolen token is no guessing oracle), and
    password changes hash one at a time, so a flood of them leaves log-ins fast.
    """
    user = await require_user(request, own_login=True)
    body = await read_body(request, PasswordChange)
    guess = request.app[RATE_LIMITS].old_password_guess(str(user.id))
    pool = request.app[POOL]
    hashing = request.app[PASSWORD_CHANGE_HASHING]
    current = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    matches, _ = await hashing.verify(current, body.oldPassword)
    if not matches:
        raise InvalidCredentials("Invalid old password", details={"field": "oldPassword"})
    request.app[RATE_LIMITS].guessed_right(guess)
    new_hash = await hashing.hash(body.newPassword)
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
    return PasswordChanged(username=user.username)
