"""A throw-away PostgreSQL server for the data-source tests.

It runs PostgreSQL's own binaries (Debian: ``/usr/lib/postgresql/*/bin``, or ``PG_BIN``) in
a temporary folder on a free loopback port, with password (SCRAM) authentication over TCP,
and is stopped at the end of the session. Without the binaries the tests skip with the
reason; ``FEDPROFILE_REQUIRE_POSTGRES=1`` (set by CI) turns that skip into a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "fedprofile"
PG_PASSWORD = "Canary-7f3Q-pw-zx9"
"""A distinctive password: it must never appear in an error, a log or an output."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its port and the URL of a database, without the password."""

    port: int
    password: str = PG_PASSWORD

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"


def _pg_bin() -> Path | None:
    given = os.environ.get("PG_BIN")
    candidates = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                              reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _unavailable(reason: str) -> None:
    if os.environ.get("FEDPROFILE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (FEDPROFILE_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(f"no PostgreSQL server for the database tests: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> list[str]:
    """Prefix that runs a command as the ``postgres`` user when we are root (initdb refuses
    root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        _unavailable("running as root and no runuser to switch to the postgres user")
    return [str(runuser), "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (skips, or fails under CI, without binaries)."""
    pytest.importorskip("psycopg")
    bin_dir = _pg_bin()
    if bin_dir is None:
        _unavailable("initdb not found (install PostgreSQL or set PG_BIN)")
    assert bin_dir is not None
    prefix = _as_postgres()
    root = Path(tempfile.mkdtemp(prefix="fedprofile-pg-"))
    root.chmod(0o755)
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(PG_PASSWORD)
    if prefix:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    port = _free_port()
    run = [*prefix]
    try:
        subprocess.run([*run, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER,
                        f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True)
        subprocess.run([*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                        str(root / "log"), "-w", "-t", "60", "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "start"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"the server did not start ({exc})")
    try:
        yield PostgresServer(port)
    finally:
        subprocess.run([*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
