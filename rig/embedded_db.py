"""The embedded PostgreSQL used when no RIG_DATABASE_URL is given.

`pgserver` ships a real PostgreSQL server in a wheel. The server runs from
`<data dir>/postgres` and listens only on a Unix socket; several rig commands (say
`rig serve` and `rig agents create`) share one server, which stops when the last
of them exits. When run as root, pgserver runs the server as a `pgserver` system user.
"""

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

from rig.keyfile import ensure_private_dir

log = logging.getLogger(__name__)

DATABASE_NAME = "rig"


def embedded_server(pgdata: Path) -> Any:
    """Start (or join) the pgserver PostgreSQL whose data directory is `pgdata`."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (services, containers); harmless.
        warnings.simplefilter("ignore", UserWarning)
        import pgserver  # imported here: only the embedded mode needs it

        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command
        pgdata.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(pgdata.resolve(), cleanup_mode="stop")


def ensure_database(server: Any, name: str) -> str:
    """Create database `name` if missing; return its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain database name: {name!r}")
    # psql takes no bind parameters; the name was checked to be a plain identifier.
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
    if "1 row" not in exists:
        # Two rig commands starting at once may both try; the loser's error is harmless.
        server.psql(f'CREATE DATABASE "{name}";')
    return server.get_uri(name)


def is_running(pgdata: Path) -> bool:
    """Whether a PostgreSQL server runs on `pgdata` (its postmaster.pid names a live process)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server in the data dir; return rig's database URL."""
    pgdata = (data_dir / "postgres").resolve()
    joined = is_running(pgdata)
    ensure_private_dir(data_dir)
    url = ensure_database(embedded_server(pgdata), DATABASE_NAME)
    ensure_private_dir(data_dir)  # run as root, pgserver opens every parent of pgdata to all
    if joined:
        log.info("using the embedded PostgreSQL already running in %s", pgdata)
    else:
        log.info("started embedded PostgreSQL in %s (set RIG_DATABASE_URL to use another)", pgdata)
    return url
