"""How the tests reach PostgreSQL: the machine's server at 127.0.0.1:5432 (trust auth, database
``test``), else a throwaway server from local PostgreSQL binaries. In CI an unreachable server fails
the tests; elsewhere, with no server and no binaries, they are skipped with one loud line."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def reachable(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


def _throwaway_server() -> tuple[str, subprocess.Popen | None, str] | None:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        return None
    bindir = os.path.dirname(binaries[-1])
    data = tempfile.mkdtemp(prefix="greenstream-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            *as_user,
            f"{bindir}/postgres",
            "-D",
            data,
            "-p",
            str(port),
            "-k",
            data,
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for _ in range(100):
        if reachable(url):
            return url, server, data
        time.sleep(0.1)
    server.terminate()
    return None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("GREENSTREAM_TEST_PG_URL", DEFAULT_URL)
    if reachable(url):
        yield url
        return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is unreachable at {url}: CI requires it (.ci/run starts it)")
    started = _throwaway_server()
    if started is None:
        print(
            f"\n!!! PostgreSQL unreachable at {url} and no local binaries: PostgreSQL tests SKIPPED !!!",
            file=sys.stderr,
        )
        pytest.skip(f"PostgreSQL unreachable at {url} and no local PostgreSQL binaries to start one")
    url, server, data = started
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A schema of its own for one test, dropped afterwards."""
    schema = f"gs_test_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
