"""Environments: named target systems described in ``parameters/environments/<name>.yaml``.

An environment lists its hosts (where commands run: locally or over SSH), its services (what
a drill acts on, e.g. a PostgreSQL pair), the objectives a drill is measured against
(``rto_seconds``, ``rpo_seconds``, …), secret *references*, and per-notebook parameters.
Validation is strict: an unknown key or a wrong type is an error naming file, key and expectation.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import paths
from ..errors import ConfigError, DrillbookError, NotFound, SecretError
from .access import Access
from .secrets import SecretRef
from .yamlfile import read_yaml

# Names of environments (and of PostgreSQL nodes): they become file names, so never paths.
NAME_BODY = r"[a-z0-9][a-z0-9_-]{0,63}"
NAME = rf"^{NAME_BODY}$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_ref(value: Any) -> str:
    try:
        SecretRef.parse(value)
    except SecretError as exc:  # pydantic reports ValueErrors with the key's location
        raise ValueError(f"{exc.message}; {exc.hint}") from None
    return value


# A string that must be a secret reference; invalid ones are reported with their key's location.
SecretRefText = Annotated[str, AfterValidator(_secret_ref)]


class Host(Model):
    """Where commands run. ``local`` runs a subprocess here; ``ssh`` runs over paramiko."""

    shell: Literal["local", "ssh"] = "local"
    address: str = "127.0.0.1"
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    key: SecretRefText | None = None  # the private key: file:PATH (or env:NAME holding the key text)
    known_hosts: str | None = None  # path; host keys are checked against it, never auto-added
    connect_timeout: float = Field(10.0, gt=0)
    # An optional host may be missing (e.g. the lab without openssh-server): runs do not refuse
    # to start, and drill parts that need it are recorded as not applicable, never as passed.
    optional: bool = False
    # Where the login's authorized_keys file lives on the host (for SSH key rotation). Expanded by
    # the host's shell, so ``~/.ssh/authorized_keys`` or ``$DRILLBOOK_LAB_DIR/ssh/authorized_keys``.
    authorized_keys: str | None = Field(None, pattern=r"^[A-Za-z0-9_$./{}~-]+$")


class PostgresNode(Model):
    name: str = Field(pattern=NAME)
    host: str  # a key of ``hosts``: where pg_ctl and friends run for this node
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    data_dir: str | None = None


class PostgresService(Model):
    """A PostgreSQL primary and its standbys. Relative paths (``sslrootcert``, ``bin_dir``, a node's
    ``data_dir``) are relative to the project root, so they only suit hosts on this machine (the lab)."""

    # Fields holding secret references; the runner resolves (and scrubs) every one of them.
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "admin_password", "replication_password", "ca_key")

    kind: Literal["postgres"]
    database: str = "postgres"
    # The application's login role, or ``file:PATH`` naming a file that holds it: alternating login
    # roles (app_blue / app_green) let credentials rotate with no failed connection.
    user: str
    password: SecretRefText | None = None
    admin_user: str = "postgres"
    admin_password: SecretRefText | None = None
    replication_user: str = "replicator"  # what standbys stream as (pg_basebackup, primary_conninfo)
    replication_password: SecretRefText | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    # Secret reference to the private key of the CA that signs the server certificate: only a lab
    # issues its own certificates (TLS rotation drills); real environments leave this out.
    ca_key: SecretRefText | None = None
    bin_dir: str | None = None  # where pg_ctl etc. live on the node's host; found if omitted
    os_user: str | None = None  # unprivileged OS user that owns the data directories; their owner if omitted
    nodes: list[PostgresNode] = Field(min_length=1)

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        if value.startswith("file:"):
            return _secret_ref(value)
        if not value or value.startswith("env:"):
            raise ValueError("expected a role name or file:PATH of a file holding it")
        return value

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, value: list[PostgresNode]) -> list[PostgresNode]:
        names = [node.name for node in value]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        return value


class PgBouncerService(Model):
    """A PgBouncer in front of a PostgreSQL service: where clients connect, and its admin console.

    ``config`` is the pgbouncer.ini on ``host`` that a RELOAD re-reads (raising the pool size edits it).
    """

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "admin_password")

    kind: Literal["pgbouncer"]
    host: str  # a key of ``hosts``: where the pgbouncer process and its configuration live
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    backend: str = "postgres"  # the postgres service it pools
    database: str = "app"
    user: str  # the pooled login clients use
    password: SecretRefText
    admin_user: str = "pgbouncer"
    admin_password: SecretRefText
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    config: str | None = None
    binary: str = "pgbouncer"  # looked up on ``host``: without it, runbooks that need it do not apply


class RedisService(Model):
    """A Redis cache. ``restart`` is the command (run on ``host``) that starts it again."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password",)

    kind: Literal["redis"]
    host: str
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    password: SecretRefText | None = None
    restart: str | None = None  # e.g. "sudo systemctl restart redis-server"
    config: str | None = None  # without ``restart``: started as ``binary config``, as the file's owner
    binary: str = "redis-server"


Service = Annotated[PostgresService | PgBouncerService | RedisService, Field(discriminator="kind")]


class Environment(Model):
    name: str = Field(pattern=NAME)
    description: str = ""
    production: bool = False
    hosts: dict[str, Host] = Field(default_factory=dict)
    services: dict[str, Service] = Field(default_factory=dict)
    objectives: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    secrets: dict[str, SecretRefText] = Field(default_factory=dict)
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)  # notebook name → values
    # Minutes to resolve an incident of each severity here (the site's incidents page; default RESPONSE_TARGETS).
    response_targets: dict[Literal["P0", "P1", "P2", "P3"], Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    access: Access = Field(default_factory=Access)  # who may run and who approves (config/access.py)
    notify: list[SecretRefText] = Field(default_factory=list)  # apprise URLs (they hold tokens): see notify.py
    source: str = ""  # the file it came from, filled in by the loader

    def secret_refs(self) -> dict[str, SecretRef]:
        """Every secret reference the environment mentions, by a stable name."""
        refs = {name: SecretRef.parse(ref) for name, ref in self.secrets.items()}
        for host_name, host in self.hosts.items():
            if host.key:
                refs.setdefault(f"hosts.{host_name}.key", SecretRef.parse(host.key))
        for svc_name, svc in self.services.items():
            for field in getattr(svc, "SECRET_FIELDS", ("password", "admin_password")):
                ref = getattr(svc, field, None)
                if ref:
                    refs.setdefault(f"services.{svc_name}.{field}", SecretRef.parse(ref))
        for index, ref in enumerate(self.notify):
            refs.setdefault(f"notify.{index}", SecretRef.parse(ref))
        return refs


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    got = error.get("input")
    # Our own validators already quote the bad value; pydantic's built-in ones do not.
    got_text = f", got {got!r}" if error["type"] != "value_error" and not isinstance(got, (dict, list)) else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message[0].lower()}{message[1:]}{got_text}"


def validate_environment(data: Any, source: Path) -> Environment:
    """Turn parsed YAML into an ``Environment``, or raise one clear ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    data = {"name": source.stem, **data}
    if data["name"] != source.stem:
        raise ConfigError(
            f"{source}: name {data['name']!r} differs from the file name",
            f"rename the file to {data['name']}.yaml or drop the name key",
        )
    try:
        return Environment.model_validate({**data, "source": str(source)})
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0])}{more}") from None


def environment_names(project: Path | None = None) -> list[str]:
    directory = paths.environments_dir(project)
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def _known(project: Path | None) -> str:
    """The names an operator can pass to --env (a misnamed file is lint's to report)."""
    try:
        names = environment_names(project)
    except DrillbookError:  # not inside a project: there is nothing to list
        names = []
    return ", ".join(n for n in names if re.fullmatch(NAME_BODY, n)) or "none"


def validate_environment_name(name: object, project: Path | None = None) -> str:
    """``name`` if it is an environment's name; raise ``NotFound`` otherwise.

    Every place where a name becomes a path calls this first: ``--env /elsewhere/prod`` or
    ``../x`` would otherwise read (or lock) a file outside ``parameters/environments``.
    """
    if isinstance(name, str) and re.fullmatch(NAME_BODY, name):
        return name
    raise NotFound(
        f"not an environment name: {name!r} (a name is lower-case letters, digits, '-' and '_', not a path)",
        f"known environments: {_known(project)} (see drillbook envs)",
    )


def load_environment(name: str, project: Path | None = None) -> Environment:
    validate_environment_name(name, project)
    path = paths.environments_dir(project) / f"{name}.yaml"
    if not path.is_file():
        raise NotFound(
            f"unknown environment {name!r}",
            f"known environments: {_known(project)}; add parameters/environments/{name}.yaml to define it",
        )
    return validate_environment(read_yaml(path, "environment file"), path)


def load_environments(project: Path | None = None) -> list[Environment]:
    return [load_environment(name, project) for name in environment_names(project)]
