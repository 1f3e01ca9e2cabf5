"""The base of the PostgreSQL target: a service's nodes and paths, its credentials, connections.

``PostgresConnections`` holds the service's description and what every part of ``Postgres``
shares; ``Connector`` is ``Postgres.connect`` as a picklable callable, for a load running in
another process.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg

from ..environments import PostgresNode, PostgresService
from ..errors import NotFound
from ..secrets import Redactor, SecretRef
from ..shell import Shell
from . import write_file_secret
from .pg_conventions import conninfo
from .pg_results import Credentials, PostgresError


class PostgresConnections:
    """What every part of ``Postgres`` shares: the service's description, its nodes and paths,
    credentials and connections.

    ``shell(host)`` opens a shell on one of the environment's hosts (``PostgresServers`` uses it),
    ``secret(ref)`` resolves a secret reference (and registers it for redaction).
    """

    def __init__(self, service: PostgresService, *, shell: Callable[[str], Shell], secret: Callable[[str], str],
                 project: Path, name: str = "postgres", redactor: Redactor | None = None,
                 connect_timeout: int = 2) -> None:
        self.service = service
        self.name = name
        self.project = project
        self.redactor = redactor
        self.connect_timeout = connect_timeout  # libpq counts whole seconds, at least 2
        self._open_shell = shell
        self._secret = secret
        self._shells: dict[str, Shell] = {}
        self._logins: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._bins: dict[str, str] = {}

    # ------------------------------------------------------------------ nodes and paths
    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.service.nodes]

    def node(self, name: str) -> PostgresNode:
        for node in self.service.nodes:
            if node.name == name:
                return node
        raise NotFound(f"service {self.name!r} has no node {name!r}", f"nodes: {', '.join(self.node_names)}")

    def path(self, text: str) -> str:
        """A path from the environment file: relative ones are relative to the project root."""
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else (self.project / path).resolve())

    def data_dir(self, name: str) -> str:
        node = self.node(name)
        if not node.data_dir:
            raise PostgresError(f"node {name!r} of {self.name!r} has no data_dir",
                                "add data_dir to the node in the environment file")
        return self.path(node.data_dir)

    def _rootcert(self) -> str | None:
        return self.path(self.service.sslrootcert) if self.service.sslrootcert else None

    # ------------------------------------------------------------------ credentials
    def credentials(self, login: str = "app") -> Credentials:
        """Who to connect as: ``app`` (the application role, read afresh each time), ``admin`` or
        ``replication``. The app's login role and password are read together under a shared lock,
        so a rotation publishing a new pair is never seen half-done."""
        svc = self.service
        if login == "admin":
            return Credentials(svc.admin_user, self._secret_or_empty(svc.admin_password))
        if login == "replication":
            return Credentials(svc.replication_user, self._secret_or_empty(svc.replication_password))
        if login != "app":
            raise NotFound(f"unknown login {login!r}", "use 'app', 'admin' or 'replication'")
        with self._credentials_lock(shared=True):
            user = self._read_user()
            return Credentials(user, self._secret_or_empty(svc.password))

    def _secret_or_empty(self, ref: str | None) -> str:
        return self._secret(ref) if ref else ""

    def _read_user(self) -> str:
        ref = self.service.user
        if not ref.startswith("file:"):
            return ref
        path = SecretRef.parse(ref).path(self.project)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PostgresError(f"cannot read the application's login role from {path}: {exc.strerror}",
                                "for the lab: drillbook lab up") from None
        except UnicodeDecodeError:
            raise PostgresError(f"the application's login role in {path} is not UTF-8 text",
                                "the file holds one role name, e.g. app_blue") from None

    @contextmanager
    def _credentials_lock(self, shared: bool) -> Iterator[None]:
        """flock beside the password file: a reader never sees a new user with an old password."""
        import fcntl

        ref = self.service.password
        if not ref or not ref.startswith("file:") or not self.service.user.startswith("file:"):
            yield
            return
        lock = SecretRef.parse(ref).path(self.project).with_suffix(".lock")
        try:
            handle = open(lock, "a+")
        except OSError:  # read-only secrets directory: nothing can rotate there either
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish_app_credentials(self, user: str, password: str) -> None:
        """Store a new login role + password for the application, atomically for readers."""
        if not self.service.user.startswith("file:"):
            raise PostgresError(
                f"the application's login role is fixed ({self.service.user!r}) in the environment file",
                "point the service's user at file:PATH so a rotation can switch login roles",
            )
        if self.redactor is not None:
            self.redactor.add(f"{self.name}.password (rotated)", password)
        with self._credentials_lock(shared=False):
            write_file_secret(self.service.password or "", password, self.project)
            write_file_secret(self.service.user, user, self.project)

    # ------------------------------------------------------------------ connections
    def connect(self, node: str | None = None, *, login: str = "app", dbname: str | None = None,
                user: str | None = None, password: str | None = None, timeout: int | None = None,
                autocommit: bool = True) -> psycopg.Connection:
        """A psycopg connection to ``node`` (default: whichever node accepts writes), with TLS.

        ``login`` picks the credentials (``app``, ``admin``); ``user``/``password`` override them.
        """
        creds = self.credentials(login)
        svc = self.service
        nodes = [self.node(node)] if node else list(svc.nodes)
        params: dict[str, Any] = dict(
            host=",".join(n.address for n in nodes), port=",".join(str(n.port) for n in nodes),
            dbname=dbname or (svc.database if login != "admin" else "postgres"),
            user=user or creds.user, password=password if password is not None else creds.password,
            sslmode=svc.sslmode, connect_timeout=max(2, int(timeout or self.connect_timeout)),
            application_name="drillbook", autocommit=autocommit,
        )
        if self._rootcert():
            params["sslrootcert"] = self._rootcert()
        if node is None:
            params["target_session_attrs"] = "read-write"
        return psycopg.connect(**params)

    def connector(self, node: str | None = None, *, login: str = "app", timeout: int | None = None
                  ) -> Callable[[], psycopg.Connection]:
        """A function that opens a new connection each call (credentials read afresh): for probes."""
        return lambda: self.connect(node, login=login, timeout=timeout)

    def portable_connector(self, node: str | None = None, *, login: str = "app", timeout: int | None = None
                           ) -> Connector:
        """Like ``connector``, but picklable: for a load running in another process."""
        return Connector(self.service, self.project, node, login, timeout or self.connect_timeout, self.name)

    def query(self, node: str, text: str, params: Any = None, *, login: str = "admin") -> list[tuple]:
        with self.connect(node, login=login) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []

    def _source_conninfo(self, primary: str, login: str) -> tuple[str, str]:
        node = self.node(primary)
        creds = self.credentials(login)
        info = conninfo(host=node.address, port=node.port, user=creds.user, dbname="postgres",
                        sslmode=self.service.sslmode, sslrootcert=self._rootcert(), application_name="drillbook")
        return info, creds.password


@dataclass(frozen=True)
class Connector:
    """``Postgres.connect`` as a picklable callable (``measure.IsolatedLoad`` runs it in another
    process). It holds the service's description and the project root only: credentials, and the
    application's rotating login, are read from their references afresh at every call."""

    service: PostgresService
    project: Path
    node: str | None = None
    login: str = "app"
    timeout: int | None = None
    name: str = "postgres"

    def __call__(self) -> psycopg.Connection:
        target = PostgresConnections(self.service, shell=_no_shell, secret=partial(_resolve_secret, self.project),
                                     project=self.project, name=self.name)
        return target.connect(self.node, login=self.login, timeout=self.timeout)


def _resolve_secret(project: Path, ref: str) -> str:
    return SecretRef.parse(ref).resolve(project)


def _no_shell(host: str) -> Shell:
    raise PostgresError(f"a portable connector cannot open a shell on {host!r}", "use Postgres for server-side work")
