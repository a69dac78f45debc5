"""A throwaway PostgreSQL cluster for tests, on a free loopback port, in a temp folder.

    cluster = PgCluster.create()      # initdb + pg_ctl start; skips when PostgreSQL is absent
    url = cluster.new_database()      # postgresql://postgres@127.0.0.1:PORT/test_xxx
    cluster.stop(mode="immediate")    # like a crash (the database is "gone")
    cluster.start()                   # same port and data
    cluster.destroy()

Tests make it a fixture of their own (see tests/test_record_pg.py). initdb refuses to run
as root, so as root the cluster belongs to `nobody` (binaries run with
that user id; the folder is made for it outside pytest's root-only temp folder). Trust
authentication on 127.0.0.1 only, and a private socket folder. Binaries are looked up on PATH,
then in Debian's /usr/lib/postgresql/<version>/bin (apt-get install postgresql).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def find_bin_dir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, bin_dir: Path, base: Path, user: str | None, fsync: bool):
        self.bin = bin_dir
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.log = base / "postgres.log"
        self.user = user  # run the server as this user (root cannot)
        self.port = _free_port()
        self.fsync = fsync
        self.host = "127.0.0.1"

    @classmethod
    def create(cls, fsync: bool = False) -> PgCluster:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL not installed (apt-get install postgresql; .ci/run does)")
        pytest.importorskip("psycopg", reason="psycopg 3 is in the [record] extra")
        user = None
        if os.geteuid() == 0:
            user = "nobody"
            try:
                pwd.getpwnam(user)
            except KeyError:
                pytest.skip("running as root and there is no `nobody` user to run PostgreSQL")
        base = Path(tempfile.mkdtemp(prefix="emotion-edge-pg-"))
        os.chmod(base, 0o700)
        c = cls(bin_dir, base, user, fsync)
        c.sock.mkdir()
        if user:
            pw = pwd.getpwnam(user)
            for p in (base, c.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        c._run(
            "initdb",
            "-D",
            str(c.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        c.start()
        return c

    def _run(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kw = {}
        if self.user:
            pw = pwd.getpwnam(self.user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        p = subprocess.run(
            [str(self.bin / name), *args],
            capture_output=True,
            text=True,
            cwd=str(self.base),
            timeout=120,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
            **kw,
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"{name} failed ({p.returncode}): {p.stderr}\n{self.log_text()}")
        return p

    def start(self) -> None:
        opts = (
            f"-c listen_addresses={self.host} -c port={self.port} "
            f"-c unix_socket_directories={self.sock} -c max_connections=50 "
            f"-c fsync={'on' if self.fsync else 'off'} -c shared_buffers=32MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def new_database(self) -> str:
        import psycopg

        name = f"test_{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""
