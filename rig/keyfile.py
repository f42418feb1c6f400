"""The JWT signing key: from the environment, or generated once into the data dir."""

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_FILE = "jwt_secret"


def ensure_private_dir(data_dir: Path) -> None:
    """Create the data dir (and its parents) so that only its owner can list or change
    it, or take that away from others on an existing one: it holds the JWT signing key,
    the agent key `scripts/run` makes and the embedded database. Mode 0711, not 0700:
    run as root, pgserver runs PostgreSQL as its own user, which must reach its
    directory inside (itself 0700, the files beside it 0600)."""
    data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o066:
        data_dir.chmod(0o711)
        log.debug("made the data dir private to its owner (mode 0711)")


def load_or_create_secret(data_dir: Path) -> str:
    """Read `data_dir/jwt_secret`, creating it (mode 0600) with 384 random bits if absent.

    Safe when several rig processes start at once: the secret is written to a private
    temporary file and linked into place, so a reader never sees a half-written key
    and exactly one writer wins.
    """
    ensure_private_dir(data_dir)
    path = data_dir / SECRET_FILE
    if not path.exists():
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            log.info("generated a new JWT signing key in %s", path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            tmp.unlink()
    return path.read_text().strip()
