"""Operator commands of `rig`: list and revoke agents, list users and streams.

`rig agents list`, `rig agents revoke NAME|ID`, `rig users list`, `rig streams list
[--user NAME]`. They read the database directly (RIG_DATABASE_URL, or the embedded one
in RIG_DATA_DIR) and never print a secret: no API key or its hash, no password hash,
no stream key, no destination key, no webhook secret. `--json` prints one JSON array
for scripts instead of a table.
"""

import argparse
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from rig.settings import Settings, add_arguments

Work = Callable[[asyncpg.Connection], Awaitable[None]]


def _run(settings: Settings, work: Work) -> int:
    # The CLI's database setup (embedded PostgreSQL when unset); imported here because
    # rig.cli imports this module.
    import asyncio

    from rig.cli import _with_connection, resolve

    async def guarded(conn: asyncpg.Connection) -> None:
        try:
            await work(conn)
        except asyncpg.UndefinedTableError as exc:
            raise SystemExit("rig: the database has no rig schema yet (run: rig migrate)") from exc

    asyncio.run(_with_connection(resolve(settings), guarded))
    return 0


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """A table with a header (or, with --json, a JSON array of objects)."""
    if as_json:
        print(json.dumps([{c: _jsonable(row[c]) for c in columns} for row in rows], indent=2))
        return
    cells = [[_text(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cmd_agents_list(settings: Settings, args: argparse.Namespace) -> int:
    """Every agent: name, id, created, revoked, live streams now."""

    async def work(conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT a.name, a.id, a.created_at AS created, a.revoked_at AS revoked,
                      count(c.stream_id) FILTER (WHERE c.expires_at > now()) AS live
                 FROM agents a LEFT JOIN stream_claims c ON c.agent_id = a.id
                GROUP BY a.id ORDER BY a.created_at, a.name"""
        )
        print_rows([dict(r) for r in rows], ("name", "id", "created", "revoked", "live"), args.json)

    return _run(settings, work)


def cmd_agents_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke an agent by name or id: its key and tokens stop working at once."""

    async def work(conn: asyncpg.Connection) -> None:
        try:
            by_id = uuid.UUID(args.agent)
        except ValueError:
            by_id = None
        row = await conn.fetchrow(
            """UPDATE agents SET revoked_at = now()
                WHERE revoked_at IS NULL AND (name = $1 OR id = $2)
            RETURNING id, name""",
            args.agent,
            by_id,
        )
        if row is None:
            raise SystemExit(f"rig: no active agent named {args.agent!r}")
        print(f"revoked agent {row['name']} ({row['id']}); its live claims expire on their own")

    return _run(settings, work)


def cmd_users_list(settings: Settings, args: argparse.Namespace) -> int:
    """Every user: username, id, email, created, streams."""

    async def work(conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT u.username, u.id, u.email, u.created_at AS created,
                      count(s.id) AS streams
                 FROM users u LEFT JOIN streams s ON s.user_id = u.id
                GROUP BY u.id ORDER BY u.created_at, u.username"""
        )
        print_rows(
            [dict(r) for r in rows], ("username", "id", "email", "created", "streams"), args.json
        )

    return _run(settings, work)


def cmd_streams_list(settings: Settings, args: argparse.Namespace) -> int:
    """Every stream (or one user's), without keys: id, name, owner, active, live where."""

    async def work(conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT s.id, s.name, u.username AS owner, s.is_active AS active,
                      a.name AS live_on, c.since AS live_since,
                      (SELECT count(*) FROM destinations d WHERE d.stream_id = s.id)
                          AS destinations,
                      s.created_at AS created
                 FROM streams s JOIN users u ON u.id = s.user_id
                 LEFT JOIN stream_claims c ON c.stream_id = s.id AND c.expires_at > now()
                 LEFT JOIN agents a ON a.id = c.agent_id
                WHERE $1::text IS NULL OR lower(u.username) = lower($1)
                ORDER BY s.created_at, s.id""",
            args.user,
        )
        columns = (
            "id", "name", "owner", "active", "live_on", "live_since", "destinations", "created"
        )  # fmt: skip
        print_rows([dict(r) for r in rows], columns, args.json)

    return _run(settings, work)


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array, not a table")
    add_arguments(parser)


def add_commands(
    sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
    agents_sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add `agents list|revoke`, `users list` and `streams list` to rig's parser."""
    listing = agents_sub.add_parser("list", help="list agents (never their keys)")
    _listing(listing)
    listing.set_defaults(func=cmd_agents_list)
    revoke = agents_sub.add_parser("revoke", help="revoke an agent's key and tokens at once")
    revoke.add_argument("agent", help="the agent's name or id")
    add_arguments(revoke)
    revoke.set_defaults(func=cmd_agents_revoke)

    users = sub.add_parser("users", help="list users")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    users_list = users_sub.add_parser("list", help="list users (never passwords)")
    _listing(users_list)
    users_list.set_defaults(func=cmd_users_list)

    streams = sub.add_parser("streams", help="list streams")
    streams_sub = streams.add_subparsers(dest="streams_command", required=True, metavar="ACTION")
    streams_list = streams_sub.add_parser("list", help="list streams (never their keys)")
    streams_list.add_argument("--user", help="only this user's streams")
    _listing(streams_list)
    streams_list.set_defaults(func=cmd_streams_list)
