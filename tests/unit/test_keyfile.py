"""The data dir holds the JWT signing key and the embedded database: only its owner may
list or change it (others may pass through, to reach what is theirs inside: PostgreSQL
run as pgserver's user), and its files are its owner's only."""

import stat
from pathlib import Path

from rig.keyfile import SECRET_FILE, ensure_private_dir, load_or_create_secret


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_is_its_owners_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / ".rig-data"
    secret = load_or_create_secret(data_dir)
    assert len(secret) >= 64
    assert mode(data_dir) == 0o711
    assert mode(data_dir / SECRET_FILE) == 0o600
    assert load_or_create_secret(data_dir) == secret  # made once


def test_an_existing_data_dir_others_could_read_is_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / ".rig-data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    ensure_private_dir(data_dir)
    assert mode(data_dir) == 0o711
