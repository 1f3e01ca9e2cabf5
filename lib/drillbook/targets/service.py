"""What a target for one service of an environment shares (PgBouncer, Redis): finding the service,
being built from a drill or from an environment, and one shell to the service's host, closed at the end.

    bouncer = PgBouncer.from_drill(drill)        # None when the environment describes no such service
    cache = Redis.from_environment(env, project)  # outside a drill: secrets resolved and scrubbed here
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Protocol, TypeVar

from ..config.environments import Environment
from ..config.secrets import Redactor, SecretRef
from ..errors import NotFound
from ..shells.base import Shell
from ..shells.open import open_shell

S = TypeVar("S")  # the service's model (PgBouncerService, RedisService)
T = TypeVar("T", bound="ServiceTarget[Any]")


class RunContext(Protocol):
    """The parts of a run (a ``Drill``) a target needs: its environment, shells, secrets, cleanups."""

    env: Environment
    project: Path

    def shell(self, host: str) -> Shell: ...

    def secret(self, name_or_ref: str) -> str: ...

    def cleanup(self, fn: Callable[[], Any], title: str | None = None, *, mutating: bool = True) -> None: ...


def find_service(env: Environment, kind: str, service: str | None = None) -> tuple[str, Any] | None:
    """The environment's service of ``kind`` (the only one, or the one named), or None."""
    found = {name: svc for name, svc in env.services.items() if svc.kind == kind}
    if service is not None:
        if service not in found:
            raise NotFound(f"environment {env.name!r} has no {kind} service {service!r}",
                           f"known: {', '.join(found) or 'none'}")
        return service, found[service]
    return next(iter(found.items()), None)


class ServiceTarget(Generic[S]):
    """One service of kind ``KIND``; subclasses speak its protocol."""

    KIND: ClassVar[str]

    def __init__(self, service: S, *, shell: Callable[[str], Shell], secret: Callable[[str], str],
                 project: Path, name: str) -> None:
        self.service, self.name, self.project = service, name, project
        self._open_shell, self._secret = shell, secret
        self._shell: Shell | None = None

    @classmethod
    def from_drill(cls: type[T], drill: RunContext, service: str | None = None) -> T | None:
        """The drill environment's service of this kind, or None when it describes none."""
        found = find_service(drill.env, cls.KIND, service)
        if found is None:
            return None
        target = cls(found[1], shell=drill.shell, secret=drill.secret, project=drill.project, name=found[0])
        drill.cleanup(target.close, f"close the shell to {found[0]}'s host", mutating=False)
        return target

    @classmethod
    def from_environment(cls: type[T], env: Environment, project: Path, redactor: Redactor | None = None) -> T | None:
        found = find_service(env, cls.KIND)
        if found is None:
            return None
        scrub = redactor or Redactor()

        def secret(ref: str) -> str:
            value = SecretRef.parse(ref).resolve(project)
            scrub.add(ref, value)
            return value

        return cls(found[1], shell=lambda host: open_shell(env, host, secret, scrub, project), secret=secret,
                   project=project, name=found[0])

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None

    def shell(self) -> Shell:
        if self._shell is None:
            self._shell = self._open_shell(self.service.host)  # type: ignore[attr-defined]  # every service has a host
        return self._shell
