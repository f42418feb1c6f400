"""rig's settings: read once from the environment and flags, then passed explicitly."""

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rig.cors import origins_setting
from rig.logs import log_format, log_level
from rig.networks import networks_setting
from rig.services import ingest_urls_setting, service_urls_from_env


@dataclass(frozen=True)
class Settings:
    """Everything rig needs to run. Built by the CLI; the tests build their own."""

    database_url: str | None = None
    data_dir: Path = Path(".rig-data")
    host: str = "127.0.0.1"
    port: int = 8080
    jwt_secret: str | None = None
    token_ttl: int = 24 * 3600
    agent_token_ttl: int = 15 * 60
    claim_ttl: int = 15
    service_urls: Mapping[str, str] = field(default_factory=lambda: service_urls_from_env({}))
    log_level: str = "INFO"
    # The claim sweeper and webhook sender; API tests that drive them by hand turn them off.
    background_tasks: bool = True
    # Operations (rig/operations.py): logs, CORS, abuse limits, timeouts.
    log_format: str = "text"
    cors_origins: str = ""
    rate_limit_address: int = 30
    rate_limit_address_username: int = 10
    # Far above what a person mistypes: only a guesser spread over many addresses gets
    # there, and the owner's known-good address is exempt (rig/ratelimit.py).
    rate_limit_username: int = 100
    # Unknown stream keys an agent may look up (claim, config) per window: a stranger
    # hammering an agent with wrong keys must not cost rig a transaction each.
    rate_limit_agent_misses: int = 120
    rate_limit_window: float = 60.0
    trusted_proxies: str = ""
    request_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    # Connections to PostgreSQL per rig process: requests beyond it wait for one, which
    # measured as the API's tail latency under load with 10 (bench/, wrk 32 connections).
    database_pool_size: int = 32
    # The dashboard (rig/dashboard, rig/events.py, rig/ingest.py).
    ingest_urls: str = ""
    events_per_user: int = 8
    # Users' destinations (rig/netpolicy.py): callbackUrl and Custom rtmpUrl may point
    # at non-public addresses only when the operator allows it; destinations per stream.
    allow_private_destinations: bool = False
    max_destinations: int = 10


def switch(text: str) -> bool:
    """A yes/no setting: 1, true, yes, on or 0, false, no, off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not yes or no: {text!r}")


class Number:
    """An option type: an integer or a number within bounds, the one place a setting's
    range is written; its ValueError says what is allowed. `low` is the least value
    allowed (`above`: the value must be greater than `low`), `high` the greatest."""

    def __init__(
        self,
        kind: type[int] | type[float],
        low: float,
        high: float | None = None,
        *,
        above: bool = False,
    ) -> None:
        self.kind, self.low, self.high, self.above = kind, low, high, above

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            value = math.nan
        high = math.inf if self.high is None else self.high
        low_ok = value > self.low if self.above else value >= self.low  # False for NaN
        if not (low_ok and value <= high and value != math.inf):
            raise ValueError(f"must be {self}, not {text!r}")
        return value

    def __str__(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.high is not None:
            return f"{noun} from {self.low:g} to {self.high:g}"
        return f"{noun} {'above' if self.above else 'of at least'} {self.low:g}"


MAX_PORT = 65535
# RIG_PORT: 0 (any free port) is refused, rig would announce :0 and serve elsewhere.
PORT = Number(int, 1, MAX_PORT)
# An address an agent listens on: 0 is any free port (the agent logs the one it got).
LISTEN_PORT = Number(int, 0, MAX_PORT)
POSITIVE = Number(int, 1)  # counts and sizes
NO_LIMIT_OR_MORE = Number(int, 0)  # a limit where 0 means none (or a feature off)
SECONDS = Number(float, 0, above=True)  # timeouts and windows: above 0
SECONDS_OR_ZERO = Number(float, 0)  # a delay where 0 means none
# The agent renews its token 60 s before it expires (agent/rig_client.py,
# REFRESH_MARGIN): under 2 minutes, it would ask for one at nearly every call.
AGENT_TOKEN_TTL = Number(int, 120)
# Claims must outlive a heartbeat: the agent's shortest interval is 1 s
# (agent/settings.py, HEARTBEAT_INTERVAL), twice that at least.
CLAIM_TTL = Number(int, 2)


# (flag or "" for environment only, environment variable, Settings field, type, help):
# the type turns the text into the value, or raises ValueError saying what is allowed.
Option = tuple[str, str, str, Callable[[str], object], str]

OPTIONS: list[Option] = [
    (
        "--database-url",
        "RIG_DATABASE_URL",
        "database_url",
        str,
        "PostgreSQL URL (put a password in the env var, not here);"
        " unset: an embedded PostgreSQL in the data dir",
    ),
    (
        "--data-dir",
        "RIG_DATA_DIR",
        "data_dir",
        Path,
        "where the embedded PostgreSQL and the generated JWT secret live",
    ),
    ("--host", "RIG_HOST", "host", str, "address the HTTP API listens on"),
    ("--port", "RIG_PORT", "port", PORT, "port the HTTP API listens on"),
    # Secrets have no flag: process arguments are visible to every local user.
    (
        "",
        "RIG_JWT_SECRET",
        "jwt_secret",
        str,
        "HS256 signing key; unset: generated once and kept in the data dir (mode 0600)",
    ),
    ("--token-ttl", "RIG_TOKEN_TTL", "token_ttl", POSITIVE, "lifetime of user tokens, seconds"),
    (
        "--agent-token-ttl",
        "RIG_AGENT_TOKEN_TTL",
        "agent_token_ttl",
        AGENT_TOKEN_TTL,
        "lifetime of agent tokens, seconds",
    ),
    (
        "--claim-ttl",
        "RIG_CLAIM_TTL",
        "claim_ttl",
        CLAIM_TTL,
        "seconds a live claim lasts without a heartbeat (a crashed agent frees keys after it)",
    ),
    (
        "--log-level",
        "RIG_LOG_LEVEL",
        "log_level",
        log_level,
        "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    ),
    ("--log-format", "RIG_LOG_FORMAT", "log_format", log_format, "text (one line) or json"),
    (
        "--cors-origins",
        "RIG_CORS_ORIGINS",
        "cors_origins",
        origins_setting,
        "comma-separated web origins allowed to call the API from a browser (* for any);"
        " empty: none",
    ),
    (
        "--rate-limit-address",
        "RIG_RATE_LIMIT_ADDRESS",
        "rate_limit_address",
        NO_LIMIT_OR_MORE,
        "log-in, sign-up, password-change and agent-auth requests per client address per"
        " window, per route (0: no limit)",
    ),
    (
        "--rate-limit-address-username",
        "RIG_RATE_LIMIT_ADDRESS_USERNAME",
        "rate_limit_address_username",
        NO_LIMIT_OR_MORE,
        "wrong passwords per username from one address per window; wrong old passwords"
        " per user (password change) per window (0: no limit)",
    ),
    (
        "--rate-limit-username",
        "RIG_RATE_LIMIT_USERNAME",
        "rate_limit_username",
        NO_LIMIT_OR_MORE,
        "wrong passwords per username from all addresses per window, except from an"
        " address that logged in as that user before (0: no limit)",
    ),
    (
        "--rate-limit-agent-misses",
        "RIG_RATE_LIMIT_AGENT_MISSES",
        "rate_limit_agent_misses",
        NO_LIMIT_OR_MORE,
        "unknown stream keys one agent may look up (claim, config) per window; known keys"
        " are not counted (0: no limit)",
    ),
    (
        "--rate-limit-window",
        "RIG_RATE_LIMIT_WINDOW",
        "rate_limit_window",
        SECONDS,
        "seconds in which a rate limit's allowance refills",
    ),
    (
        "--trusted-proxies",
        "RIG_TRUSTED_PROXIES",
        "trusted_proxies",
        networks_setting,
        "comma-separated addresses or networks of load balancers whose X-Forwarded-For"
        " names the client",
    ),
    (
        "--request-timeout",
        "RIG_REQUEST_TIMEOUT",
        "request_timeout",
        SECONDS,
        "seconds a request may take before it is answered 503",
    ),
    (
        "--keepalive-timeout",
        "RIG_KEEPALIVE_TIMEOUT",
        "keepalive_timeout",
        SECONDS,
        "seconds an idle keep-alive connection stays open (above your load balancer's)",
    ),
    (
        "--database-pool-size",
        "RIG_DATABASE_POOL_SIZE",
        "database_pool_size",
        POSITIVE,
        "PostgreSQL connections per rig process (keep processes x size under the server's"
        " max_connections)",
    ),
    (
        "--ingest-urls",
        "RIG_INGEST_URLS",
        "ingest_urls",
        ingest_urls_setting,
        "comma-separated public RTMP ingest URLs of your agents (rtmp://live.example.com/live),"
        " shown to streamers as OBS's Server; first one the default",
    ),
    (
        "--events-per-user",
        "RIG_EVENTS_PER_USER",
        "events_per_user",
        POSITIVE,
        "live-update connections (GET /streams/{id}/events) per user per rig process",
    ),
    (
        "--allow-private-destinations",
        "RIG_ALLOW_PRIVATE_DESTINATIONS",
        "allow_private_destinations",
        switch,
        "let callbackUrl and Custom rtmpUrl point at loopback, private, link-local and other"
        " non-public addresses (yes/no)",
    ),
    (
        "--max-destinations",
        "RIG_MAX_DESTINATIONS",
        "max_destinations",
        POSITIVE,
        "destinations a stream may have",
    ),
]


def flag_type(kind: Callable[[str], object]) -> Callable[[str], object]:
    """`kind` for argparse: its ValueError, which says what is allowed, is the message."""

    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid setting: {exc}") from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def add_option_arguments(
    parser: argparse.ArgumentParser, options: list[Option], defaults: object
) -> None:
    """Add one flag per option; each defaults to its environment variable, then `defaults`."""
    for flag, env, name, kind, text in options:
        if not flag:
            continue
        default = getattr(defaults, name)
        shown = "unset" if default is None else default
        parser.add_argument(
            flag,
            dest=name,
            type=flag_type(kind),
            default=None,
            help=f"{text} [env {env}; default: {shown}]",
        )


def option_values(
    args: argparse.Namespace, options: list[Option], env: Mapping[str, str]
) -> dict[str, object]:
    """Flags win over environment variables; unset ones are left out (dataclass default)."""
    values: dict[str, object] = {}
    for _flag, var, name, kind, _text in options:
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = flag_value
        elif env.get(var):
            try:
                values[name] = kind(env[var])
            except ValueError as exc:
                raise ValueError(f"{var}: {exc}") from None
    return values


# What every command needs: where the database is, and how to log. The rest are the
# server's (`rig serve`); other commands read them from the environment only.
COMMAND_SETTINGS = ("database_url", "data_dir", "log_level", "log_format")


def add_arguments(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    """Add rig's flags to a subcommand's parser: all of them for `serve` (`server`),
    the database and logging ones for the other commands."""
    options = [o for o in OPTIONS if server or o[2] in COMMAND_SETTINGS]
    add_option_arguments(parser, options, Settings())


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    env = os.environ if env is None else env
    values = option_values(args, OPTIONS, env)
    values["service_urls"] = service_urls_from_env(env)
    return Settings(**values)  # type: ignore[arg-type]
