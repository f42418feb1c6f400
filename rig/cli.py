"""The `rig` command: serve the API, apply migrations, manage agent credentials."""

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace

import asyncpg
import uvloop
from aiohttp import web

from rig import __version__, operators
from rig.agents import create_agent
from rig.app import AccessLogger, create_app
from rig.embedded_db import start_embedded_postgres
from rig.keyfile import load_or_create_secret
from rig.logs import setup_logging
from rig.migrations import applied_migrations, available_migrations, migrate
from rig.secret_strength import SecretRefused, check_database_url, check_jwt_secret
from rig.settings import Settings, add_arguments, settings_from

log = logging.getLogger("rig")


def resolve(settings: Settings, *, signing: bool = False) -> Settings:
    """Fill in what the first run generates: the embedded database and (when `signing`,
    for `serve`) the JWT secret. Placeholder or guessable secrets are refused first."""
    if settings.database_url:
        check_database_url(settings.database_url)
    if signing and settings.jwt_secret:
        check_jwt_secret(settings.jwt_secret)
    if not settings.database_url:
        settings = replace(settings, database_url=start_embedded_postgres(settings.data_dir))
    if signing and not settings.jwt_secret:
        settings = replace(settings, jwt_secret=load_or_create_secret(settings.data_dir))
    return settings


async def _with_connection(
    settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[None]]
) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await work(conn)
    finally:
        await conn.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations, then serve the API until SIGINT/SIGTERM."""
    settings = resolve(settings, signing=True)
    asyncio.run(_with_connection(settings, migrate))
    app = create_app(settings)
    log.info("rig %s listening on http://%s:%s", __version__, settings.host, settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log_class=AccessLogger,
        print=None,
        shutdown_timeout=10,
        keepalive_timeout=settings.keepalive_timeout,
        loop=uvloop.new_event_loop(),
    )
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations (or, with --status, list them)."""
    settings = resolve(settings)

    async def work(conn: asyncpg.Connection) -> None:
        if args.status:
            done = set(await applied_migrations(conn))
            for version, _sql in available_migrations():
                print(f"{'applied' if version in done else 'pending'}  {version}")
            return
        applied = await migrate(conn)
        print(
            f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
        )

    asyncio.run(_with_connection(settings, work))
    return 0


def cmd_agents_create(settings: Settings, args: argparse.Namespace) -> int:
    """Register an agent and print its API key, alone on the last line."""
    settings = resolve(settings)

    async def work(conn: asyncpg.Connection) -> None:
        await migrate(conn)
        try:
            agent_id, api_key = await create_agent(conn, args.name)
        except asyncpg.UniqueViolationError as exc:
            raise SystemExit(f"rig: an agent named {args.name!r} already exists") from exc
        print(f"created agent {args.name} ({agent_id}); its API key, shown only once:")
        print(api_key)

    asyncio.run(_with_connection(settings, work))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with --help on every subcommand."""
    parser = argparse.ArgumentParser(
        prog="rig",
        description="rig: the control plane of the rig RTMP multistreaming relay.",
        epilog="Every flag can also be set by the environment variable named in its help.",
    )
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the REST API (applies migrations first)")
    add_arguments(serve, server=True)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending database migrations")
    add_arguments(mig)
    mig.add_argument("--status", action="store_true", help="list migrations, apply nothing")
    mig.set_defaults(func=cmd_migrate)

    agents = sub.add_parser("agents", help="manage agent credentials")
    agents_sub = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    create = agents_sub.add_parser("create", help="create an agent and print its API key once")
    create.add_argument("name", help="a name for the agent, e.g. the ingest host's name")
    add_arguments(create)
    create.set_defaults(func=cmd_agents_create)
    operators.add_commands(sub, agents_sub)  # agents list|revoke, users list, streams list
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rig` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:  # one line naming the variable, no usage text
        parser.exit(2, f"{parser.prog}: invalid setting: {exc}\n")
    setup_logging(settings.log_level, settings.log_format)
    try:
        return args.func(settings, args)
    except SecretRefused as exc:
        log.error("%s", exc)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
