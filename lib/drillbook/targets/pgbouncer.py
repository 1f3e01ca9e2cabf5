"""A PgBouncer in front of a PostgreSQL service: its pools, its clients, its settings, a RELOAD.

    bouncer = PgBouncer.from_drill(drill)
    bouncer.missing()                  # None, or why it cannot be used here (not installed, not described)
    bouncer.pools()                    # SHOW POOLS: clients active/waiting, servers active/idle, max wait
    bouncer.set_pool_size(20)          # edit default_pool_size in its configuration, then RELOAD
    with bouncer.connect() as conn: …  # the application's path: through the pool, TLS verified

The admin console (database ``pgbouncer``) speaks only the simple query protocol, so its
commands go through psycopg's ``ClientCursor``. Connections through the pool are in transaction
pooling: a session's state does not survive its transaction.
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psycopg

from ..config.environments import PgBouncerService
from ..config.secrets import SecretRef
from ..errors import DrillbookError
from ..shells.base import Shell
from .process import start_as_owner
from .service import ServiceTarget


class PgBouncerError(DrillbookError):
    """PgBouncer did not answer, or refused a command."""


@dataclass(frozen=True)
class Pool:
    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    maxwait: float
    mode: str

    @property
    def exhausted(self) -> bool:
        return self.cl_waiting > 0


class PgBouncer(ServiceTarget[PgBouncerService]):
    """One PgBouncer service of an environment."""

    KIND = "pgbouncer"

    def __init__(self, service: PgBouncerService, *, shell: Callable[[str], Shell], secret: Callable[[str], str],
                 project: Path, name: str = "pgbouncer", connect_timeout: int = 3) -> None:
        super().__init__(service, shell=shell, secret=secret, project=project, name=name)
        self.connect_timeout = connect_timeout

    # ------------------------------------------------------------------ the host
    def missing(self) -> str | None:
        """Why this PgBouncer cannot be used here (its binary is not on its host), or None."""
        binary = shlex.quote(self.service.binary)  # Debian's is in /usr/sbin, off a normal user's PATH
        found = self.shell().run(f"command -v {binary} || test -x /usr/sbin/{binary}", timeout=15)
        return None if found.ok else f"{self.service.binary} is not installed on host {self.service.host}"

    def config_path(self) -> str | None:
        if not self.service.config:
            return None
        path = Path(self.service.config).expanduser()
        return str(path if path.is_absolute() else (self.project / path).resolve())

    # ------------------------------------------------------------------ connections
    def connect(self, *, admin: bool = False, timeout: int | None = None) -> psycopg.Connection:
        """A connection through the pool as the application (or to the admin console)."""
        svc = self.service
        params: dict[str, Any] = dict(
            host=svc.address, port=svc.port, dbname="pgbouncer" if admin else svc.database,
            user=svc.admin_user if admin else svc.user,
            password=self._secret(svc.admin_password if admin else svc.password), sslmode=svc.sslmode,
            connect_timeout=max(2, int(timeout or self.connect_timeout)), application_name="drillbook",
            autocommit=True, cursor_factory=psycopg.ClientCursor if admin else psycopg.Cursor,
            prepare_threshold=None)  # transaction pooling: a prepared statement is not on the next server
        if svc.sslrootcert:
            path = Path(svc.sslrootcert)
            params["sslrootcert"] = str(path if path.is_absolute() else self.project / path)
        return psycopg.connect(**params)

    def connector(self, timeout: int | None = None) -> BouncerConnector:
        """Opens a new connection through the pool at each call: for probes (picklable, so a load
        in its own process can use it; the password is read from its reference at each call)."""
        return BouncerConnector(self.service, self.project, timeout or self.connect_timeout, self.name)

    def console(self, command: str) -> list[dict[str, Any]]:
        """Rows of an admin-console command (SHOW …, RELOAD, KILL …), as dictionaries."""
        try:
            with self.connect(admin=True) as conn:
                cur = conn.execute(command)
                if cur.description is None:
                    return []
                names = [d.name for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        except psycopg.Error as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PgBouncerError(f"{self.name}: {command} failed: {why}",
                                 f"is PgBouncer running on {self.service.address}:{self.service.port}?") from None

    def pools(self) -> list[Pool]:
        return [Pool(str(r["database"]), str(r["user"]), int(r["cl_active"]), int(r["cl_waiting"]),
                     int(r["sv_active"]), int(r["sv_idle"]),
                     float(r["maxwait"]) + float(r.get("maxwait_us") or 0) / 1e6,
                     str(r.get("pool_mode") or ""))
                for r in self.console("SHOW POOLS") if r["database"] != "pgbouncer"]

    def setting(self, key: str) -> str:
        for row in self.console("SHOW CONFIG"):
            if row["key"] == key:
                return str(row["value"])
        raise PgBouncerError(f"{self.name}: no setting {key!r}", "SHOW CONFIG lists them")

    def pool_size(self) -> int:
        return int(self.setting("default_pool_size"))

    def set_pool_size(self, size: int) -> str:
        """Write ``default_pool_size`` into the configuration file, then RELOAD (persisted, no restart)."""
        path = self.config_path()
        if path is None:
            raise PgBouncerError(f"{self.name}: no configuration file described (services.{self.name}.config)",
                                 "add config: PATH to the service, or change the pool size by hand")
        script = (f"sed -i -E 's/^default_pool_size *=.*/default_pool_size = {int(size)}/' {shlex.quote(path)} && "
                  f"grep -q '^default_pool_size = {int(size)}$' {shlex.quote(path)}")
        done = self.shell().run(script, timeout=30)
        if not done.ok:
            raise PgBouncerError(f"{self.name}: could not write default_pool_size in {path}",
                                 done.stderr.strip() or "check the file")
        self.console("RELOAD")
        return f"default_pool_size = {int(size)} in {path}, reloaded"

    def reload(self) -> None:
        self.console("RELOAD")

    def backend(self) -> tuple[str, int]:
        """Where PgBouncer forwards the service's database (SHOW DATABASES): (host, port)."""
        for row in self.console("SHOW DATABASES"):
            if row["name"] == self.service.database:
                return str(row["host"]), int(row["port"])
        raise PgBouncerError(f"{self.name}: no database {self.service.database!r} in SHOW DATABASES",
                             f"add it to the [databases] section of {self.config_path() or 'pgbouncer.ini'}")

    def point_at(self, host: str, port: int) -> str:
        """Rewrite the database's host and port in the configuration file, then RELOAD."""
        path = self.config_path()
        if path is None:
            raise PgBouncerError(f"{self.name}: no configuration file described (services.{self.name}.config)",
                                 "change the [databases] entry by hand and RELOAD")
        db, q = re.escape(self.service.database), shlex.quote(path)
        script = (f"sed -i -E '/^{db} *=/ {{ s/host=[^ ]+/host={host}/; s/port=[0-9]+/port={int(port)}/ }}' {q} && "
                  f"grep -Eq '^{db} *=.*host={re.escape(host)} .*port={int(port)}' {q}")
        done = self.shell().run(script, timeout=30)
        if not done.ok:
            raise PgBouncerError(f"{self.name}: could not point {self.service.database} at {host}:{port} in {path}",
                                 done.stderr.strip() or "check the [databases] section")
        self.reload()
        return f"{self.service.database} → {host}:{port} in {path}, reloaded"

    def start(self) -> str:
        """Start PgBouncer (daemonised) with its configuration, as the file's owner (cold start)."""
        path = self.config_path()
        if path is None:
            raise PgBouncerError(f"{self.name}: no configuration file described (services.{self.name}.config)",
                                 "start it the way its host does (e.g. systemctl start pgbouncer)")
        done = start_as_owner(self.shell(), self.service.binary, path, "-d")
        if not done.ok:
            raise PgBouncerError(f"{self.name}: start failed (exit {done.exit_code})",
                                 (done.stderr.strip() or done.stdout.strip() or "read its log").splitlines()[-1])
        return f"started {self.service.binary} -d {path}"

    def round_trip(self, timeout: int | None = None) -> float:
        """Seconds to connect through the pool and run ``SELECT 1`` (raises if refused)."""
        started = time.monotonic()
        with self.connect(timeout=timeout) as conn:
            conn.execute("SELECT 1")
        return time.monotonic() - started

    def wait_serving(self, timeout: float = 30.0) -> float:
        """Wait until a new connection through the pool is served; the seconds it took."""
        started = time.monotonic()
        last = ""
        while time.monotonic() - started < timeout:
            try:
                self.round_trip(timeout=2)
                return time.monotonic() - started
            except psycopg.Error as exc:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            time.sleep(0.05)
        raise PgBouncerError(f"{self.name}: no new connection served within {timeout:g} s: {last}",
                             "SHOW POOLS on the admin console: who holds the servers?")


@dataclass(frozen=True)
class BouncerConnector:
    service: PgBouncerService
    project: Path
    timeout: int = 3
    name: str = "pgbouncer"

    def __call__(self) -> psycopg.Connection:
        def secret(ref: str) -> str:
            return SecretRef.parse(ref).resolve(self.project)

        bouncer = PgBouncer(self.service, shell=_no_shell, secret=secret, project=self.project, name=self.name,
                            connect_timeout=self.timeout)
        return bouncer.connect()


def _no_shell(host: str) -> Shell:
    raise PgBouncerError(f"no shell to {host} in a connector", "connectors only connect")


def pool_size_in(ini: str) -> int | None:
    """``default_pool_size`` of a pgbouncer.ini text (None when unset)."""
    found = re.search(r"^default_pool_size\s*=\s*(\d+)", ini, re.M)
    return int(found.group(1)) if found else None
