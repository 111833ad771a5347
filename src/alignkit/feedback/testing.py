"""Helpers for end-to-end tests of the feedback app (ours, and users' own).

``ServerProcess`` runs the real ``alignkit feedback serve`` command in a child process bound to
127.0.0.1, so a test exercises what users run (CLI, uvicorn, migrations on start) and can kill
it with SIGKILL to prove durability. ``fresh_postgres_database`` gives a test its own empty
PostgreSQL schema and drops it afterwards.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx
from sqlalchemy import create_engine, text

from alignkit.feedback.database import normalize_url

LOOPBACK = "127.0.0.1"
POSTGRES_ENV = "ALIGNKIT_TEST_POSTGRES_URL"
"""Environment variable naming a PostgreSQL database for tests (the role may create schemas)."""
POSTGRES_SKIP_REASON = (
    f"{POSTGRES_ENV} is not set: PostgreSQL tests need a server, e.g. "
    "postgresql://alignkit:alignkit@127.0.0.1:5432/alignkit_test (see docs/feedback.md)"
)


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m alignkit.feedback.cli serve`` on a free loopback port, as a context manager.

    ``start`` waits (bounded by ``startup_timeout``) until ``/healthz`` answers; a port taken
    between choosing and binding is retried with another, unless ``port`` fixes it (a restart
    after a crash reuses the port so clients can simply retry). ``kill`` sends SIGKILL (no shutdown
    handlers run: the crash case); ``stop`` asks politely, then kills.
    """

    def __init__(
        self,
        db: str | Path,
        *,
        per_item: int = 1,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.db = str(db)
        self.per_item = per_item
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.fixed_port = port
        self.port = port or 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> ServerProcess:
        last_error = "not started"
        for _attempt in range(1 if self.fixed_port else 3):
            self.port = self.fixed_port or free_port()
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
            cmd = [
                sys.executable,
                "-m",
                "alignkit.feedback.cli",
                "serve",
                "--db",
                self.db,
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--per-item",
                str(self.per_item),
                "--log-level",
                "warning",
                *self.extra_args,
            ]
            self.process = subprocess.Popen(cmd, stdout=log, stderr=log, env=os.environ.copy())
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    last_error = f"server exited with status {self.process.returncode}"
                    break
                try:
                    # trust_env=False: never route loopback traffic through a configured proxy.
                    health = httpx.get(self.url + "/healthz", timeout=1.0, trust_env=False)
                    if health.status_code == 200:
                        return self
                except httpx.HTTPError as exc:
                    last_error = str(exc)
                time.sleep(0.05)
            else:
                self.kill()
                raise RuntimeError(f"server did not start within {self.startup_timeout}s")
        raise RuntimeError(f"server failed to start: {last_error} (log: {self.log_path})")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, exactly like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """Yield a URL whose connections see an empty PostgreSQL schema; drop it afterwards.

    A schema (selected through ``search_path``) isolates a test as well as a new database
    would, at a fraction of the cost (``CREATE DATABASE`` copies a template and takes ~0.3 s).
    The role in ``base_url`` needs the CREATE privilege on its database. The name is random,
    so concurrent test runs do not collide.
    """
    url = normalize_url(base_url)
    name = "alignkit_test_" + secrets.token_hex(6)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    # A schema name is an identifier, which cannot be a bound parameter: the name is generated
    # above from hex digits and quoted by the dialect's identifier preparer.
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    try:
        with admin.connect() as conn:
            conn.execute(text("CREATE SCHEMA " + quoted))
        try:
            scoped = url.update_query_dict({"options": f"-csearch_path={name}"})
            yield scoped.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS " + quoted + " CASCADE"))
    finally:
        admin.dispose()
