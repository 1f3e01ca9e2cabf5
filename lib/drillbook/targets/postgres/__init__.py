"""A real PostgreSQL service of an environment (a primary and its streaming standbys) as a drill target.

In a drill or runbook notebook::

    from drillbook.targets import postgres
    pg = postgres.Postgres.from_drill(drill)          # the environment's "postgres" service
    pg.replication.roles()                            # {"pg1": "primary", "pg2": "standby"}
    old = pg.replication.primary()                    # "pg1"; raises if there is none, or two
    pg.servers.stop(old)                              # immediate: the fault
    pg.servers.fence(old)                             # it can never come back as a second primary
    pg.servers.promote("pg2")                         # pg_ctl promote, waits until writes are accepted
    pg.replication.rebuild_standby(old)               # pg_rewind (or pg_basebackup) → healthy pair again
    with pg.connections.connect() as conn: ...        # the current primary, as the application role, TLS

    backup = pg.backups.base_backup()                 # pg_basebackup of the primary
    with pg.backups.restore_scratch(backup, port=55440) as scratch:   # a throw-away instance on another port
        table_checksums(scratch.connect()) == table_checksums(pg.connections.connect())
    pg.backups.remove_backup(backup)

    rotation = pg.rotation.rotate_app_credentials()   # dual credential: next login role, then publish
    pg.rotation.retire_login(rotation.old_user)       # after the grace period
    cert, key = pg.rotation.issue_server_certificate()   # lab CA only (``ca_key`` in the environment)
    pg.rotation.install_server_certificate("pg1", cert, key); pg.servers.reload("pg1")
    pg.rotation.served_certificate("pg1").sha256

Connections use psycopg with the service's TLS settings (``sslmode=verify-full`` against
``sslrootcert`` in the lab). Server-side work (pg_ctl, pg_rewind, pg_basebackup, files in the
data directory) goes through the environment's shells — ``drill.shell(node.host)``, local or
SSH — as the owner of the data directory (``runuser``/``sudo -n`` when the login differs), so the
same code drives a remote host. Secrets reach commands on stdin, never on a command line.

Conventions this package relies on: configuration files live in the data directory (initdb
layout); per-node settings (``port``, ``primary_conninfo``) live in ``drillbook.node.conf``,
included last from ``postgresql.conf`` and rewritten whenever a node is rebuilt, because
pg_rewind and pg_basebackup copy every file of the source.

Modules: ``connect`` (the shared ``PostgresContext``: nodes and paths; ``Connections``:
credentials, connections, ``Connector``), ``server`` (commands on a node's host, pg_ctl),
``replication`` (roles, state, lag, rebuilding a standby), ``backup`` (base backup, scratch
restore, ``table_checksums``), ``rotation`` (credentials and certificates), ``results`` (what
they return, ``PostgresError``) and ``conventions`` (file names, text formats, pure rules).
``Postgres`` composes one of each over one context; import other names from their modules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from ...config.environments import Environment, PostgresService
from ...config.secrets import Redactor, SecretRef
from ...errors import NotFound
from ...shells.base import Shell
from ...shells.open import open_shell
from .backup import Backups
from .connect import Connections, PostgresContext
from .replication import Replication
from .rotation import Rotations
from .server import Servers


class DrillLike(Protocol):
    """What ``Postgres.from_drill`` uses of a drill (``drillbook.drill.Drill``): targets sit below it."""

    env: Environment
    project: Path
    redactor: Redactor

    def secret(self, name_or_ref: str) -> str: ...

    def shell(self, host: str) -> Shell: ...

    def cleanup(self, fn: Callable[[], None], title: str | None = None, *, mutating: bool = True) -> None: ...


class Postgres:
    """One PostgreSQL service of an environment: its nodes, reached through the environment's shells.

    Its parts share one ``context`` (the service, the project, the redactor, how to open a shell
    and resolve a secret): ``connections`` (credentials, connections), ``servers`` (pg_ctl,
    commands on a node's host), ``replication`` (roles, state, lag, rebuilding a standby),
    ``backups`` (base backups, scratch restores) and ``rotation`` (credentials, certificates).
    ``shell(host)`` opens a shell on one of the environment's hosts, ``secret(ref)`` resolves a
    secret reference (and registers it for redaction). Use ``from_drill`` in notebooks and
    ``from_environment`` elsewhere. Close it (or let the drill's cleanup do it) to close the shells.
    """

    def __init__(self, service: PostgresService, *, shell: Callable[[str], Shell], secret: Callable[[str], str],
                 project: Path, name: str = "postgres", redactor: Redactor | None = None,
                 connect_timeout: int = 2) -> None:
        self.context = PostgresContext(service, open_shell=shell, secret=secret, project=project, name=name,
                                       redactor=redactor, connect_timeout=connect_timeout)
        self.connections = Connections(self.context)
        self.servers = Servers(self.context, self.connections)
        self.replication = Replication(self.context, self.connections, self.servers)
        self.backups = Backups(self.context, self.connections, self.servers, self.replication)
        self.rotation = Rotations(self.context, self.connections, self.servers, self.replication)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_drill(cls, drill: DrillLike, service: str | None = None) -> Postgres:
        """The service of the drill's environment; its shells close with the drill's cleanups."""
        name, spec = _service(drill.env, service)
        pg = cls(spec, shell=lambda host: drill.shell(host), secret=drill.secret, project=drill.project,
                 name=name, redactor=drill.redactor)
        drill.cleanup(pg.close, f"close connections to {name}", mutating=False)
        return pg

    @classmethod
    def from_environment(cls, env: Environment, project: Path, service: str | None = None,
                         redactor: Redactor | None = None) -> Postgres:
        """The service outside a drill (CLI, lab, tests). Secrets are scrubbed from shell output."""
        redactor = redactor or Redactor()
        name, spec = _service(env, service)

        def secret(ref: str) -> str:
            value = SecretRef.parse(ref).resolve(project)
            redactor.add(ref, value)
            return value

        return cls(spec, shell=lambda host: open_shell(env, host, secret, redactor, project), secret=secret,
                   project=project, name=name, redactor=redactor)

    def close(self) -> None:
        self.servers.close()

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _service(env: Environment, service: str | None) -> tuple[str, PostgresService]:
    found = {name: svc for name, svc in env.services.items() if svc.kind == "postgres"}
    if service is None:
        if len(found) != 1:
            raise NotFound(f"environment {env.name!r} has {len(found)} postgres services",
                           f"name one: {', '.join(found) or 'add one to the environment file'}")
        service = next(iter(found))
    if service not in found:
        raise NotFound(f"environment {env.name!r} has no postgres service {service!r}",
                       f"known: {', '.join(found) or 'none'}")
    return service, found[service]


__all__ = ["DrillLike", "Postgres"]
