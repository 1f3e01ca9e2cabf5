"""Network faults with nftables, in tables of our own: a partition between two TCP endpoints, or
one port cut off from everyone.

    table = network.table_name(drill.project, "standby")     # inet drillbook_<project>_<what>
    fault = network.Partition(client=Endpoint("127.0.0.1", user="postgres"),     # the standby's processes
                              server=Endpoint("127.0.0.1", 5432), table=table)    # … cut off from the primary

Each fault creates one table (family ``inet``) and its heal deletes that table; nothing else in the
ruleset is read or changed. The names start with ``drillbook_`` and the project's tag, so
``drillbook lab up``/``down`` remove what a dead run left behind (``remove_tables``) and never
another project's or anyone else's table.

How a partition drops a connection, also on loopback (both ends on 127.0.0.1): packets from the
client to the server's port are dropped and their source (address, port) is added to a set; the
server's packets to any (address, port) in the set are dropped too, so neither side hears the other
and new connections fail, while other clients of the same port go on. The client is told apart by
its address, or on one host by the user its processes run as (``meta skuid``, output hook only).
Needs root on the host (``nft``); otherwise the fault is not applicable, never passed.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from ..shells.base import Shell
from .base import FaultError, needs

PREFIX = "drillbook_"
FAMILY = "inet"
_NAME = re.compile(r"^[a-z0-9_]{1,48}$")


def project_tag(project: Path) -> str:
    """A short tag for one project: its tables' names start with ``drillbook_<tag>_``."""
    return hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:10]


def table_name(project: Path, what: str) -> str:
    """The table of one fault of this project (``what``: letters, digits, ``_``)."""
    name = f"{PREFIX}{project_tag(project)}_{what}"
    if not _NAME.match(name):
        raise FaultError(f"{what!r} cannot be part of an nftables table name", "use lowercase letters, digits and _")
    return name


@dataclass(frozen=True)
class Endpoint:
    """One side of a TCP conversation: an address, a port (None: any) and, on the local host, the
    OS user whose processes own the sockets (None: any)."""

    address: str
    port: int | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.address)  # ValueError on anything but an IP address: it goes into a rule
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.user is not None and not re.match(r"^[a-z_][a-z0-9_.-]{0,31}$", self.user):
            raise ValueError(f"{self.user!r} is not a user name")

    @property
    def ip(self) -> str:
        """The nft keyword of its address family: ``ip`` or ``ip6``."""
        return "ip6" if ipaddress.ip_address(self.address).version == 6 else "ip"

    def describe(self) -> str:
        where = f"{self.address}:{self.port}" if self.port else self.address
        return where + (f" (processes of {self.user})" if self.user else "")


def _tables(shell: Shell) -> list[str]:
    done = shell.run(["nft", "list", "tables", FAMILY], timeout=15)
    if not done.ok:
        return []
    return [line.split()[-1] for line in done.stdout.splitlines() if line.startswith(f"table {FAMILY} ")]


def _apply(shell: Shell, table: str, body: str) -> None:
    script = f"table {FAMILY} {table} {{\n{body}}}\n"
    shell.run(["nft", "-f", "-"], input=script, timeout=30, check=True)


def delete_table(shell: Shell, table: str) -> bool:
    """Delete our table ``table`` if it exists (it may already be gone); True if it was there."""
    if not table.startswith(PREFIX) or table not in _tables(shell):
        return False
    shell.run(["nft", "delete", "table", FAMILY, table], timeout=30, check=True)
    return True


def remove_tables(shell: Shell, project: Path) -> list[str]:
    """Delete every table this project's faults may have left behind (a run that died mid-fault)."""
    prefix = f"{PREFIX}{project_tag(project)}_"
    gone = [name for name in _tables(shell) if name.startswith(prefix)]
    for name in gone:
        shell.run(["nft", "delete", "table", FAMILY, name], timeout=30, check=True)
    return gone


def _chain(hook: str, rules: list[str]) -> str:
    lines = "".join(f"    {rule}\n" for rule in rules)
    return f"  chain {hook} {{\n    type filter hook {hook} priority -10; policy accept;\n{lines}  }}\n"


class _NftFault:
    """What both network faults share: one table, needing root and nft, healed by deleting it.
    A subclass says what goes in its table (``body``)."""

    table: str
    title: str

    def check(self, shell: Shell) -> str | None:
        return needs(shell, ("nft", "ss"), True, "changing the firewall")

    def heal(self, shell: Shell) -> str:
        return f"table {FAMILY} {self.table} deleted" if delete_table(shell, self.table) else \
            f"table {FAMILY} {self.table} was not there"

    def body(self, shell: Shell) -> str:
        raise NotImplementedError

    def inject(self, shell: Shell) -> str:
        if self.table in _tables(shell):  # a stale one from an earlier run: start from nothing
            delete_table(shell, self.table)
        _apply(shell, self.table, self.body(shell))
        return f"rules in table {FAMILY} {self.table}"


class Partition(_NftFault):
    """Cut ``client`` off from ``server`` (whose port must be given), both ways."""

    def __init__(self, client: Endpoint, server: Endpoint, table: str, title: str | None = None) -> None:
        if server.port is None:
            raise ValueError("the server side of a partition needs its port")
        if client.ip != server.ip:
            raise ValueError("both ends of a partition need addresses of the same family")
        self.client, self.server, self.table = client, server, table
        self.title = title or f"Partition {client.describe()} from {server.describe()}"

    def plan(self) -> str:
        return (f"drop TCP between {self.client.describe()} and {self.server.describe()} both ways "
                f"(nftables table {FAMILY} {self.table}); other clients of port {self.server.port} go on")

    def body(self, shell: Shell) -> str:
        c, s = self.client, self.server
        ip = c.ip
        match = f"{ip} saddr {c.address} {ip} daddr {s.address} tcp dport {s.port}"
        learn = f"add @peers {{ {ip} saddr . tcp sport }} drop"
        back = f"{ip} saddr {s.address} tcp sport {s.port} {ip} daddr . tcp dport @peers drop"
        uid = _uid(shell, c.user) if c.user else None
        owner = f" meta skuid {uid}" if uid is not None else ""
        kind = "ipv4_addr" if ip == "ip" else "ipv6_addr"
        # Connections already open are cut at once, not only once the client next sends a packet.
        known = ", ".join(f"{a} . {p}" for a, p in established(shell, c, s, uid))
        elements = f"    elements = {{ {known} }}\n" if known else ""
        peers = f"  set peers {{\n    type {kind} . inet_service; flags dynamic; size 65535;\n{elements}  }}\n"
        # skuid exists only for packets this host sends (output): with a user, only there.
        inbound = [back] if c.user else [f"{match} {learn}", back]
        return peers + _chain("output", [f"{match}{owner} {learn}", back]) + _chain("input", inbound)


def established(shell: Shell, client: Endpoint, server: Endpoint, uid: int | None) -> list[tuple[str, int]]:
    """(address, port) of the client's open connections to the server, as ``ss`` on this host sees them."""
    where = f"[{server.address}]:{server.port}" if server.ip == "ip6" else f"{server.address}:{server.port}"
    done = shell.run(["ss", "-Htne", "state", "established", "dst", where], timeout=15)
    found = []
    for line in done.stdout.splitlines() if done.ok else []:
        fields = line.split()
        if len(fields) < 4 or (uid is not None and f"uid:{uid}" not in fields):
            continue
        address, _, port = fields[2].rpartition(":")
        address = address.strip("[]")
        if port.isdigit() and address == client.address:
            found.append((address, int(port)))
    return found


class BlockPort(_NftFault):
    """Cut a port off from everyone: nothing reaches ``address``:``port`` and it answers no one."""

    def __init__(self, endpoint: Endpoint, table: str, title: str | None = None) -> None:
        if endpoint.port is None:
            raise ValueError("BlockPort needs a port")
        self.endpoint, self.table = endpoint, table
        self.title = title or f"Block port {endpoint.describe()} from everyone"

    def plan(self) -> str:
        return f"drop every TCP packet to and from {self.endpoint.describe()} (nftables table {FAMILY} {self.table})"

    def body(self, shell: Shell) -> str:
        e, ip = self.endpoint, self.endpoint.ip
        rules = [f"{ip} daddr {e.address} tcp dport {e.port} drop", f"{ip} saddr {e.address} tcp sport {e.port} drop"]
        return _chain("output", rules) + _chain("input", rules)


def _uid(shell: Shell, user: str) -> int:
    done = shell.run(["id", "-u", user], timeout=15)
    if not done.ok or not done.stdout.strip().isdigit():
        raise FaultError(f"no user {user!r} on {shell.name}", "name a user that runs the client's processes")
    return int(done.stdout.strip())

