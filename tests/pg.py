"""A real PostgreSQL server for the tests: initdb into a temporary directory, 127.0.0.1 only.

The binaries come from ``PG_BINDIR`` (exported by ``.ci/run``), else ``pg_config --bindir``, else
the newest ``/usr/lib/postgresql/*/bin``. initdb and postgres refuse to run as root, so as root
they run as the ``postgres`` user (``runuser``), which is given the temporary directory. When no
server can be found or started, `PostgresServer.start` raises `PostgresUnavailable` with the
reason, and the tests that need it fail with that reason (they are never skipped).

Each test gets a database of its own (`PostgresServer.create_database`); the server runs with
``fsync=off``: its data dir is thrown away at the end, so durability buys nothing here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SUPERUSER = "bot_admin"
PASSWORD = "pg-test-pa55word-XYZ"
START_TIMEOUT = 60.0
_NO_FSYNC = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class PostgresUnavailable(RuntimeError):
    """The test server's binaries are missing or it would not start; the message says why."""


def find_bindir() -> Path:
    """Return the directory holding initdb and postgres, or raise PostgresUnavailable."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, postgres) found in PG_BINDIR, "
        f"`pg_config --bindir` or /usr/lib/postgresql/*/bin (looked in {candidates}); "
        "install them with `apt-get install -y postgresql` (what .ci/run does)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throw-away PostgreSQL server on 127.0.0.1 with a password-protected superuser."""

    def __init__(self) -> None:
        self.port = 0
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        """Return the postgresql:// URL of `database` on this server."""
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root, but runuser is missing to drop to postgres")
        return ["runuser", "-u", "postgres", "--", *argv]

    def start(self, *, durable: bool = False) -> None:
        """Create the cluster and start the server; raise PostgresUnavailable with the reason.

        Not `durable` (the tests): no fsync at all. `durable` (the benchmark): PostgreSQL's
        defaults, an fsync per commit.
        """
        bindir = find_bindir()
        self._root = Path(tempfile.mkdtemp(prefix="bot-pg-"))
        data, log, pwfile = self._root / "data", self._root / "server.log", self._root / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "running as root and there is no postgres user to run the server as"
                ) from exc
            for path in (self._root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        init = subprocess.run(
            self._as_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
        self.port = _free_port()
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                self._as_owner(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(data),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-k",
                        str(self._root),
                        "-c",
                        "max_connections=200",
                        *([] if durable else _NO_FSYNC),
                    ]
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {self._proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with psycopg.connect(self.url(), connect_timeout=5):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresUnavailable(
                        f"postgres did not accept connections: {exc}"
                    ) from exc
            time.sleep(0.1)

    def _signal_postmaster(self, proc: subprocess.Popen[bytes]) -> None:
        pidfile = None if self._root is None else self._root / "data" / "postmaster.pid"
        try:
            assert pidfile is not None
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
        except (AssertionError, OSError, ValueError, IndexError):
            proc.send_signal(signal.SIGINT)

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # "Fast" shutdown (clients are disconnected), sent to the postmaster itself: runuser
            # in between does not pass SIGINT on.
            self._signal_postmaster(proc)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
