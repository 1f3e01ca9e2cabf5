"""A real PostgreSQL service of an environment (a primary and its streaming standbys) as a drill target.

In a drill or runbook notebook::

    from drillbook.targets import postgres
    pg = postgres.Postgres.from_drill(drill)          # the environment's "postgres" service
    pg.roles()                                        # {"pg1": "primary", "pg2": "standby"}
    old = pg.primary()                                # "pg1"; raises if there is none, or two
    pg.stop(old)                                      # immediate: the fault
    pg.fence(old)                                     # it can never come back as a second primary
    pg.promote("pg2")                                 # pg_ctl promote, waits until writes are accepted
    pg.rebuild_standby(old)                           # pg_rewind (or pg_basebackup) → healthy pair again
    with pg.connect() as conn: ...                    # the current primary, as the application role, TLS

    backup = pg.base_backup()                         # pg_basebackup of the primary
    with pg.restore_scratch(backup, port=55440) as scratch:   # a throw-away instance on another port
        table_checksums(scratch.connect()) == table_checksums(pg.connect())
    pg.remove_backup(backup)

    rotation = pg.rotate_app_credentials()            # dual credential: next login role, then publish
    pg.retire_login(rotation.old_user)                # after the grace period
    cert, key = pg.issue_server_certificate()         # lab CA only (``ca_key`` in the environment)
    pg.install_server_certificate("pg1", cert, key); pg.reload("pg1")
    pg.served_certificate("pg1").sha256

Connections use psycopg with the service's TLS settings (``sslmode=verify-full`` against
``sslrootcert`` in the lab). Server-side work (pg_ctl, pg_rewind, pg_basebackup, files in the
data directory) goes through the environment's shells — ``drill.shell(node.host)``, local or
SSH — as the owner of the data directory (``runuser``/``sudo -n`` when the login differs), so the
same code drives a remote host. Secrets reach commands on stdin, never on a command line.

Conventions this module relies on: configuration files live in the data directory (initdb
layout); per-node settings (``port``, ``primary_conninfo``) live in ``drillbook.node.conf``,
included last from ``postgresql.conf`` and rewritten whenever a node is rebuilt, because
pg_rewind and pg_basebackup copy every file of the source.

Modules: ``pg_connect`` (nodes, credentials, connections, ``Connector``), ``pg_server`` (commands
on a node's host, pg_ctl), ``pg_replication`` (roles, state, lag, rebuilding a standby),
``pg_backup`` (base backup, scratch restore, ``table_checksums``), ``pg_rotation`` (credentials
and certificates), ``pg_results`` (what it returns, ``PostgresError``) and ``pg_conventions``
(file names, text formats, pure rules). ``Postgres`` puts them together; import from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..environments import Environment, PostgresService
from ..errors import NotFound
from ..secrets import Redactor, SecretRef
from .pg_backup import PostgresBackups, Scratch, table_checksums
from .pg_connect import Connector
from .pg_conventions import (FENCE_MARKER, NODE_CONF, PASSFILE, REFUSALS, choose_bin_dir, conf_string, conninfo,
                             is_refusal, parse_lsn, pgpass_line, render_node_conf)
from .pg_results import Backup, Credentials, Lag, NodeState, PostgresError, Rotation, ServedCert, TableSum
from .pg_rotation import ALTERNATES, SSL_REQUEST, PostgresRotation, alternate_login, fetch_served_certificate


class Postgres(PostgresBackups, PostgresRotation):
    """One PostgreSQL service of an environment: its nodes, reached through the environment's shells.

    ``shell(host)`` opens a shell on one of the environment's hosts, ``secret(ref)`` resolves a
    secret reference (and registers it for redaction). Use ``from_drill`` in notebooks and
    ``from_environment`` elsewhere. Close it (or let the drill's cleanup do it) to close the shells.
    """

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_drill(cls, drill: Any, service: str | None = None) -> Postgres:
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
        from ..shell import open_shell

        redactor = redactor or Redactor()
        name, spec = _service(env, service)

        def secret(ref: str) -> str:
            value = SecretRef.parse(ref).resolve(project)
            redactor.add(ref, value)
            return value

        return cls(spec, shell=lambda host: open_shell(env, host, secret, redactor, project), secret=secret,
                   project=project, name=name, redactor=redactor)

    def close(self) -> None:
        for shell in self._shells.values():
            shell.close()
        self._shells.clear()

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


__all__ = ["ALTERNATES", "FENCE_MARKER", "NODE_CONF", "PASSFILE", "REFUSALS", "SSL_REQUEST", "Backup", "Connector",
           "Credentials", "Lag", "NodeState", "Postgres", "PostgresError", "Rotation", "Scratch", "ServedCert",
           "TableSum", "alternate_login", "choose_bin_dir", "conf_string", "conninfo", "fetch_served_certificate",
           "is_refusal", "parse_lsn", "pgpass_line", "render_node_conf", "table_checksums"]
