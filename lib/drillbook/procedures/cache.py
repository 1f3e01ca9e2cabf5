"""The cache is unavailable: is Redis running, listening, out of memory, failing to persist; restart it.

Behind the ``redis-unavailable`` runbook and the ``cache-down`` drill.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..targets.redis import Redis, RedisError

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


@dataclass(frozen=True)
class Diagnosis:
    answering: bool
    ping: str
    listening: bool
    memory: str = ""
    persistence: str = ""
    uptime_seconds: int | None = None

    def describe(self) -> str:
        if self.answering:
            return "\n".join([f"PING: {self.ping}; up {self.uptime_seconds} s", f"memory: {self.memory}",
                              f"persistence: {self.persistence}",
                              "Redis answers: if the application still reports the cache down, look at its "
                              "configuration (address, password) and the network"])
        where = ("something listens on the port but does not answer PING (hung, or loading its data set)"
                 if self.listening else "nothing listens on the port: the process is gone")
        return f"PING: {self.ping}\n{where}: restarting it is the fix (Resolve below)"


def applicable(cache: Redis | None) -> str | None:
    """Why the Redis parts do not apply here (none described, or not installed), or None."""
    if cache is None:
        return "the environment describes no redis service"
    return cache.missing()


def diagnose(cache: Redis) -> Diagnosis:
    ok, ping = cache.ping()
    listening = _listening(cache.service.address, cache.service.port)
    if not ok:
        return Diagnosis(False, ping, listening)
    info = cache.info()
    memory = (f"{info.get('used_memory_human')} used of maxmemory {info.get('maxmemory_human') or 'unlimited'} "
              f"(policy {info.get('maxmemory_policy')}), evicted keys {info.get('evicted_keys', 0)}")
    persistence = (f"last RDB save {info.get('rdb_last_bgsave_status')}, {info.get('rdb_changes_since_last_save')} "
                   f"changes since; AOF {'on' if info.get('aof_enabled') else 'off'}")
    return Diagnosis(True, ping, listening, memory, persistence, int(info.get("uptime_in_seconds", 0)))


def _listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((address, port)) == 0


def check_round_trip(drill: Drill, cache: Redis, timeout: float = 30.0) -> float | None:
    """Validate: a SET/GET round trip answers (waiting for a restarted Redis to load its data)."""
    try:
        took = cache.wait_answering(timeout)
    except RedisError as exc:
        drill.check("a SET/GET round trip answers", False, exc.message)
        return None
    drill.check("a SET/GET round trip answers", True, f"within {took:.2f} s")
    return took


def check_hit_rate(drill: Drill, cache: Redis, reads: int = 20) -> None:
    """Validate: reads of a key just written hit (the hit rate recovers); not a measure of the old data."""
    key = f"drillbook:hit:{os.getpid()}"
    with cache.client() as client:
        before = client.info("stats")
        client.set(key, "1", ex=60)
        for _ in range(reads):
            client.get(key)
        after = client.info("stats")
        client.delete(key)
    hits = int(after["keyspace_hits"]) - int(before["keyspace_hits"])
    drill.check("reads of a fresh key hit the cache", hits >= reads, f"{hits} hits for {reads} reads")


# ----------------------------------------------------------------------------- the fault (drill)
def kill(cache: Redis) -> str:
    """SIGKILL the Redis process (its pid from INFO) on its host, and wait until PING fails."""
    pid = cache.pid()
    if pid is None:
        raise RedisError(f"{cache.name}: cannot read its process id", "is it running?")
    done = cache.shell().run(f"kill -KILL {int(pid)}", timeout=15)
    if not done.ok:
        raise RedisError(f"{cache.name}: kill -KILL {pid} failed on {cache.service.host}",
                         done.stderr.strip() or "as whom?")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cache.ping()[0]:
        time.sleep(0.05)
    return f"killed pid {pid}"
