"""The base of the PostgreSQL target: the context its parts share, credentials, connections.

``PostgresContext`` is what every part of ``Postgres`` shares: the service's description, its
nodes and paths, how to open a shell on a host and resolve a secret. ``Connections`` reads
credentials and opens connections; ``Connector`` is ``Connections.connect`` as a picklable
callable, for a load running in another process.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
from psycopg.abc import Params

from ...config.environments import PostgresNode, PostgresService
from ...config.secrets import Redactor, SecretRef
from ...errors import NotFound
from ...shells.base import Shell
from .. import write_file_secret
from .conventions import conninfo
from .results import Credentials, PostgresError


@dataclass
class PostgresContext:
    """The service's description and how to reach its environment, shared by every part of ``Postgres``.

    ``open_shell(host)`` opens a shell on one of the environment's hosts, ``secret(ref)`` resolves
    a secret reference (and registers it for redaction).
    """

    service: PostgresService
    open_shell: Callable[[str], Shell]
    secret: Callable[[str], str]
    project: Path
    name: str = "postgres"
    redactor: Redactor | None = None
    connect_timeout: int = 2  # libpq counts whole seconds, at least 2

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

    def rootcert(self) -> str | None:
        return self.path(self.service.sslrootcert) if self.service.sslrootcert else None

    def secret_or_empty(self, ref: str | None) -> str:
        return self.secret(ref) if ref else ""


class Connections:
    """The service's credentials and connections."""

    def __init__(self, context: PostgresContext) -> None:
        self.context = context

    # ------------------------------------------------------------------ credentials
    def credentials(self, login: str = "app") -> Credentials:
        """Who to connect as: ``app`` (the application role, read afresh each time), ``admin`` or
        ``replication``. The app's login role and password are read together under a shared lock,
        so a rotation publishing a new pair is never seen half-done."""
        svc = self.context.service
        if login == "admin":
            return Credentials(svc.admin_user, self.context.secret_or_empty(svc.admin_password))
        if login == "replication":
            return Credentials(svc.replication_user, self.context.secret_or_empty(svc.replication_password))
        if login != "app":
            raise NotFound(f"unknown login {login!r}", "use 'app', 'admin' or 'replication'")
        with self._credentials_lock(shared=True):
            user = self._read_user()
            return Credentials(user, self.context.secret_or_empty(svc.password))

    def _read_user(self) -> str:
        ref = self.context.service.user
        if not ref.startswith("file:"):
            return ref
        path = SecretRef.parse(ref).path(self.context.project)
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
        ref = self.context.service.password
        if not ref or not ref.startswith("file:") or not self.context.service.user.startswith("file:"):
            yield
            return
        lock = SecretRef.parse(ref).path(self.context.project).with_suffix(".lock")
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
        if not self.context.service.user.startswith("file:"):
            raise PostgresError(
                f"the application's login role is fixed ({self.context.service.user!r}) in the environment file",
                "point the service's user at file:PATH so a rotation can switch login roles",
            )
        context = self.context
        if context.redactor is not None:
            context.redactor.add(f"{context.name}.password (rotated)", password)
        with self._credentials_lock(shared=False):
            write_file_secret(context.service.password or "", password, context.project)
            write_file_secret(context.service.user, user, context.project)

    # ------------------------------------------------------------------ connections
    def connect(self, node: str | None = None, *, login: str = "app", dbname: str | None = None,
                user: str | None = None, password: str | None = None, timeout: int | None = None,
                autocommit: bool = True) -> psycopg.Connection:
        """A psycopg connection to ``node`` (default: whichever node accepts writes), with TLS.

        ``login`` picks the credentials (``app``, ``admin``); ``user``/``password`` override them.
        """
        creds = self.credentials(login)
        svc = self.context.service
        nodes = [self.context.node(node)] if node else list(svc.nodes)
        params: dict[str, Any] = dict(
            host=",".join(n.address for n in nodes), port=",".join(str(n.port) for n in nodes),
            dbname=dbname or (svc.database if login != "admin" else "postgres"),
            user=user or creds.user, password=password if password is not None else creds.password,
            sslmode=svc.sslmode, connect_timeout=max(2, int(timeout or self.context.connect_timeout)),
            application_name="drillbook", autocommit=autocommit,
            # A server cut off mid-query (a partition) never answers: fail once what we sent stays
            # unacknowledged this long, instead of hanging until the kernel's TCP gives up (minutes).
            tcp_user_timeout=1000 * max(2, int(timeout or self.context.connect_timeout)),
        )
        if self.context.rootcert():
            params["sslrootcert"] = self.context.rootcert()
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
        context = self.context
        return Connector(context.service, context.project, node, login, timeout or context.connect_timeout,
                         context.name)

    def query(self, node: str, text: str, params: Params | None = None, *, login: str = "admin") -> list[tuple]:
        with self.connect(node, login=login) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []

    def source_conninfo(self, primary: str, login: str) -> tuple[str, str]:
        """(conninfo, password) to reach ``primary`` as ``login``: for pg_rewind and pg_basebackup,
        whose scripts read the password from stdin into PGPASSWORD, never from a command line."""
        node = self.context.node(primary)
        creds = self.credentials(login)
        info = conninfo(host=node.address, port=node.port, user=creds.user, dbname="postgres",
                        sslmode=self.context.service.sslmode, sslrootcert=self.context.rootcert(),
                        application_name="drillbook")
        return info, creds.password


@dataclass(frozen=True)
class Connector:
    """``Connections.connect`` as a picklable callable (``measure.isolated.IsolatedLoad`` runs it in another
    process). It holds the service's description and the project root only: credentials, and the
    application's rotating login, are read from their references afresh at every call."""

    service: PostgresService
    project: Path
    node: str | None = None
    login: str = "app"
    timeout: int | None = None
    name: str = "postgres"

    def __call__(self) -> psycopg.Connection:
        context = PostgresContext(self.service, open_shell=_no_shell, secret=partial(_resolve_secret, self.project),
                                  project=self.project, name=self.name)
        return Connections(context).connect(self.node, login=self.login, timeout=self.timeout)


def _resolve_secret(project: Path, ref: str) -> str:
    return SecretRef.parse(ref).resolve(project)


def _no_shell(host: str) -> Shell:
    raise PostgresError(f"a portable connector cannot open a shell on {host!r}", "use Postgres for server-side work")
