"""PostgreSQL: a private cluster in ``<run-dir>/pg`` with one database per service.

Auth: peer over the run dir's unix socket for the cluster's superuser (the OS
user the cluster runs as), scram-sha-256 over TCP for the ``paymesh`` role,
whose password is in secrets.env. initdb refuses to run as root, so as root
the cluster runs as the ``postgres`` system user.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

from devstack.components import Component, Context
from devstack.ports import HOST, SERVICES
from devstack.procs import RunAs, StackError, is_running, run_command

log = logging.getLogger("devstack")

ROLE = "paymesh"
DATABASES = tuple(f"paymesh_{service}" for service in SERVICES)
# A unix socket path must fit in sockaddr_un.sun_path (108 bytes with the NUL).
MAX_SOCKET_PATH = 107
# Test stacks trade crash safety for speed: the data is thrown away anyway.
TEST_ONLY_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# The local stack (`make up`, `make bench`) keeps its data and grows with every bench: with the
# defaults (128 MB of shared buffers, 1 GB of WAL between checkpoints) its working set outgrew the
# buffers, backends wrote out dirty pages themselves and bursts forced checkpoints, so the same bench
# got slower run after run (docs/performance.md). Sized like a small dedicated database instead;
# durability is untouched (fsync and synchronous commit stay on).
# Autovacuum looks at each database every 5 s instead of every minute: a fresh database's first
# payments are planned on empty tables, and the PL/pgSQL functions of the money path keep those plans
# (whole-table scans) until an ANALYZE of the grown tables invalidates them. With the default minute, a
# bench's first step ran entirely on them (finish_wallet_transfers 1.3-1.6 ms per call instead of 0.8).
LOCAL_SETTINGS = ("shared_buffers=1GB", "max_wal_size=4GB", "checkpoint_timeout=15min", "autovacuum_naptime=5s")


def postgres_bin_dir() -> Path:
    """The newest installed server's bin dir (e.g. /usr/lib/postgresql/15/bin)."""
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not candidates:
        raise StackError("postgres: no /usr/lib/postgresql/*/bin/initdb; run devstack/bootstrap.sh")
    return max(candidates, key=lambda path: int(path.parent.name))


def database_name(service: str) -> str:
    return f"paymesh_{service}"


def grant_traversal(path: Path, uid: int, gid: int) -> list[Path]:
    """Add o+x to every ancestor of `path` that `uid` could not enter; return them.

    E.g. a repo cloned into a `mktemp -d` dir (mode 700): the postgres user
    must be able to walk down to its data dir.
    """
    changed: list[Path] = []
    for directory in reversed([path, *path.parents]):
        info = directory.stat()
        if info.st_uid == uid:
            can_enter = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            can_enter = bool(info.st_mode & stat.S_IXGRP)
        else:
            can_enter = bool(info.st_mode & stat.S_IXOTH)
        if not can_enter:
            os.chmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
            changed.append(directory)
    return changed


class Postgres(Component):
    name = "postgres"
    start_timeout = 60.0
    # SIGINT is the "fast" shutdown: SIGTERM ("smart") would wait for every
    # service's pooled connection to close.
    stop_signal = signal.SIGINT
    stop_timeout = 30.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.bin_dir = postgres_bin_dir()
        self.base_dir = ctx.run_dir / "pg"
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"

    def address(self) -> str:
        return f"{HOST}:{self.ctx.ports.postgres}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.postgres]

    def run_as(self) -> RunAs | None:
        return RunAs.named("postgres") if os.geteuid() == 0 else None

    def superuser(self) -> str:
        run_as = self.run_as()
        return run_as.user if run_as else _current_user()

    def command(self) -> list[str]:
        settings = [
            f"listen_addresses={HOST}",
            f"port={self.ctx.ports.postgres}",
            f"unix_socket_directories={self.socket_dir}",
            "max_connections=300",
        ]
        if self.ctx.profile == "test":
            settings += TEST_ONLY_SETTINGS
        else:
            settings += LOCAL_SETTINGS
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for setting in settings:
            argv += ["-c", setting]
        return argv

    # --- one-time setup -------------------------------------------------------
    def prepare(self) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{self.ctx.ports.postgres}"
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            raise StackError(
                f"postgres: socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --run-dir"
            )
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_as = self.run_as()
        if run_as:
            self._hand_over_to(run_as)
        os.chmod(self.data_dir, 0o700)  # postgres refuses a group/world-readable data dir
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._remove_stale_lock()

    def _remove_stale_lock(self) -> None:
        # After a SIGKILL the dead postmaster can stay a zombie until its parent
        # (often PID 1) reaps it; postgres sees the pid "exist" and refuses to
        # start. The pid is known dead, so its lock file is safe to remove.
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return
        if not is_running(pid):
            log.info("postgres: removing the stale lock of dead postmaster %d", pid)
            lock.unlink(missing_ok=True)

    def _hand_over_to(self, run_as: RunAs) -> None:
        for directory in grant_traversal(self.ctx.run_dir, run_as.uid, run_as.gid):
            log.warning("postgres: added o+x to %s so user %s can reach its data dir", directory, run_as.user)
        for root, dirs, files in os.walk(self.base_dir):
            for entry in [root, *(os.path.join(root, name) for name in dirs + files)]:
                os.chown(entry, run_as.uid, run_as.gid)

    def _initdb(self) -> None:
        log.info("postgres: initdb %s", self.data_dir)
        run_command(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser(),
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ],
            log_path=self.log_path,
            what="postgres: initdb",
            timeout=120,
            cwd=self.base_dir,
            run_as=self.run_as(),
        )

    # --- health ---------------------------------------------------------------
    def is_ready(self) -> bool:
        """The superuser can query over the unix socket (role/dbs may not exist yet)."""
        argv = self._psql_argv(["-h", str(self.socket_dir), "-U", self.superuser(), "-d", "postgres"])
        return _succeeds([*argv, "-c", "select 1"], run_as=self.run_as())

    def is_healthy(self) -> bool:
        """The paymesh role logs in over TCP with its password and runs a query."""
        return self.query_over_tcp(self.ctx.secrets.postgres_password)

    def query_over_tcp(self, password: str, database: str = "paymesh_auth") -> bool:
        argv = self._psql_argv(["-h", HOST, "-U", ROLE, "-d", database, "-w"])
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "3"}
        return _succeeds([*argv, "-c", "select 1"], env=env)

    def _psql_argv(self, connection: list[str]) -> list[str]:
        return [str(self.bin_dir / "psql"), "-X", "-q", "-p", str(self.ctx.ports.postgres), *connection]

    # --- role and databases -----------------------------------------------------
    def after_ready(self) -> None:
        """Create the role and the databases if missing; (re)set the password."""
        run_command(
            self._psql_argv(
                [
                    "-h",
                    str(self.socket_dir),
                    "-U",
                    self.superuser(),
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                ]
            ),
            log_path=self.log_path,
            what="postgres: create role and databases",
            timeout=60,
            cwd=self.base_dir,
            run_as=self.run_as(),
            # On stdin, not argv: the password must not show up in `ps`.
            stdin_text=self._bootstrap_sql(),
        )

    def _bootstrap_sql(self) -> str:
        # Only constants and a hex password go into this SQL: nothing to escape.
        password = self.ctx.secrets.postgres_password
        role_missing = f"NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')"
        lines = [
            f"SELECT 'CREATE ROLE {ROLE}' WHERE {role_missing}\\gexec",
            f"ALTER ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}';",
        ]
        for database in DATABASES:
            missing = f"NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database}')"
            lines.append(f"SELECT 'CREATE DATABASE {database} OWNER {ROLE}' WHERE {missing}\\gexec")
        return "\n".join(lines) + "\n"


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _succeeds(argv: list[str], env: dict[str, str] | None = None, run_as: RunAs | None = None) -> bool:
    extra = run_as.popen_kwargs() if run_as else {}
    try:
        result = subprocess.run(  # type: ignore[call-overload]
            argv, env=env, capture_output=True, timeout=10, cwd="/", **extra
        )
    except subprocess.TimeoutExpired:
        return False
    return bool(result.returncode == 0)
