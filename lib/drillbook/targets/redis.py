"""A Redis cache: PING, a SET/GET round trip, INFO (process, memory, persistence, hits), restart.

    cache = Redis.from_drill(drill)
    cache.missing()          # None, or why it cannot be used here (redis-server not on its host)
    cache.ping()             # (True, "PONG") or (False, the error)
    cache.round_trip()       # seconds for SET + GET of a scratch key, checked
    cache.restart()          # the service's ``restart`` command, else ``binary config`` as the file's owner

Spoken with the ``redis`` client library; the password is a secret reference, resolved (and
registered for scrubbing) only when a connection is made.
"""
from __future__ import annotations

import secrets as pysecrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import redis as redislib
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config.environments import RedisService
from ..config.secrets import SecretRef
from ..errors import DrillbookError
from ..shells.base import Shell
from .process import start_as_owner
from .service import ServiceTarget


class RedisError(DrillbookError):
    """Redis did not answer, or could not be restarted."""


class Redis(ServiceTarget[RedisService]):
    """One Redis service of an environment."""

    KIND = "redis"

    def __init__(self, service: RedisService, *, shell: Callable[[str], Shell], secret: Callable[[str], str],
                 project: Path, name: str = "redis", timeout: float = 1.0) -> None:
        super().__init__(service, shell=shell, secret=secret, project=project, name=name)
        self.timeout = timeout

    def missing(self) -> str | None:
        """Why this Redis cannot be used here (its server binary is not on its host), or None."""
        if self.service.restart:
            return None  # a managed service: its host need not have the binary on PATH
        found = self.shell().run(f"command -v {shlex.quote(self.service.binary)}", timeout=15)
        return None if found.ok else f"{self.service.binary} is not installed on host {self.service.host}"

    def client(self) -> redislib.Redis:
        password = self._secret(self.service.password) if self.service.password else None
        # No retries: a probe must see each failure, and a diagnosis must not wait out a backoff.
        return redislib.Redis(host=self.service.address, port=self.service.port, password=password,
                              socket_timeout=self.timeout, socket_connect_timeout=self.timeout, decode_responses=True,
                              retry=Retry(NoBackoff(), 0))

    # ------------------------------------------------------------------ health
    def ping(self) -> tuple[bool, str]:
        try:
            with self.client() as client:
                return bool(client.ping()), "PONG"
        except redislib.RedisError as exc:
            return False, _first_line(exc)

    def info(self) -> dict[str, Any]:
        try:
            with self.client() as client:
                return dict(client.info())
        except redislib.RedisError as exc:
            raise RedisError(f"{self.name}: INFO failed: {_first_line(exc)}",
                             f"is Redis running on {self.service.address}:{self.service.port}?") from None

    def round_trip(self) -> float:
        """Seconds for SET then GET of a scratch key (expires in 60 s); raises if the value is wrong."""
        key, value = f"drillbook:probe:{pysecrets.token_hex(4)}", pysecrets.token_hex(8)
        started = time.monotonic()
        with self.client() as client:
            client.set(key, value, ex=60)
            got = client.get(key)
            client.delete(key)
        if got != value:
            raise RedisError(f"{self.name}: GET returned {got!r} after SET", "the cache is not keeping writes")
        return time.monotonic() - started

    def connector(self) -> RoundTripConnector:
        return RoundTripConnector(self.service, self.project, self.name)

    def hit_rate(self) -> float | None:
        stats = self.info()
        hits, misses = int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))
        return hits / (hits + misses) if hits + misses else None

    def pid(self) -> int | None:
        try:
            return int(self.info()["process_id"])
        except RedisError:
            return None

    # ------------------------------------------------------------------ restart
    def restart(self) -> str:
        """Start Redis again: the service's ``restart`` command, else ``binary config`` as the file's owner."""
        if self.service.restart:
            done = self.shell().run(self.service.restart, timeout=60)
        elif self.service.config:
            path = Path(self.service.config).expanduser()
            config = path if path.is_absolute() else (self.project / path).resolve()
            done = start_as_owner(self.shell(), self.service.binary, str(config))
        else:
            raise RedisError(f"{self.name}: the environment says neither how to restart it nor its configuration",
                             f"add restart: COMMAND (e.g. systemctl restart redis-server) to services.{self.name}")
        if not done.ok:
            raise RedisError(f"{self.name}: restart failed (exit {done.exit_code}): "
                             f"{(done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]}", "read the Redis log")
        how = "its restart command" if self.service.restart else f"{self.service.binary} {self.service.config}"
        return f"ran on {self.service.host}: {how}"

    def wait_answering(self, timeout: float = 30.0) -> float:
        """Wait for the first good SET/GET round trip; the seconds it took."""
        started, last = time.monotonic(), ""
        while time.monotonic() - started < timeout:
            try:
                self.round_trip()
                return time.monotonic() - started
            except (redislib.RedisError, RedisError) as exc:
                last = _first_line(exc)
            time.sleep(0.05)
        raise RedisError(f"{self.name}: no good round trip within {timeout:g} s: {last}", "read the Redis log")


@dataclass(frozen=True)
class RoundTripConnector:
    """For ``measure.load.Probe``: each call connects; the probe's ``execute`` is a SET/GET round trip.
    Picklable (a load in its own process uses it); the password is read from its reference each time."""

    service: RedisService
    project: Path
    name: str = "redis"

    def __call__(self) -> RoundTrip:
        cache = Redis(self.service, shell=_no_shell, secret=lambda ref: SecretRef.parse(ref).resolve(self.project),
                      project=self.project, name=self.name)
        return RoundTrip(cache)


class RoundTrip:
    """Quacks like a connection for the probe: ``execute`` does the round trip, ``close`` nothing."""

    def __init__(self, cache: Redis) -> None:
        self.cache = cache

    def execute(self, query: str, params: object = None) -> None:
        self.cache.round_trip()

    def close(self) -> None:
        pass


def _no_shell(host: str) -> Shell:
    raise RedisError(f"no shell to {host} in a connector", "connectors only connect")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
