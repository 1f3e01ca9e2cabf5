"""The conventions the PostgreSQL target relies on, as constants and pure functions.

File names drillbook keeps in a data directory (the per-node settings file, the replication
passfile, the fence marker), the text formats libpq and the server read (conninfo strings,
postgresql.conf literals, pgpass lines, LSNs), which connection errors are refusals, and which
binaries match a data directory. Nothing here touches a server.
"""
from __future__ import annotations

NODE_CONF = "drillbook.node.conf"  # per-node settings, included last from postgresql.conf
PASSFILE = "drillbook.pgpass"  # the replication password for primary_conninfo (0600, in the data dir)
FENCE_MARKER = "drillbook.fenced"  # why and when a node was fenced
# Connection errors that mean "the server answered and said no to *us*": a configuration
# problem, not a node that is down (psycopg reports connection failures without an SQLSTATE).
REFUSALS = ("password authentication failed", "not permitted to log in", "no pg_hba.conf entry",
            "does not exist", "certificate verify failed", "server certificate")


def is_refusal(exc: BaseException) -> bool:
    """Did the server refuse these credentials/settings (as opposed to being unreachable or starting)?"""
    text = str(exc)
    return any(marker in text for marker in REFUSALS)


def parse_lsn(text: str) -> int:
    """'16/B374D848' → byte position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def conninfo(**params: object) -> str:
    """A libpq key=value string; values quoted as libpq wants (so paths may hold spaces)."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = str(value).replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{key}='{text}'")
    return " ".join(parts)


def conf_string(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def pgpass_line(address: str, port: int, user: str, password: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    return f"{esc(address)}:{port}:*:{esc(user)}:{esc(password)}"


def render_node_conf(port: int, primary_conninfo: str | None = None) -> str:
    """The per-node settings file: its port and, on a standby, where it streams from."""
    lines = ["# Written by drillbook for this node; rewritten when the node is rebuilt.", f"port = {port}"]
    if primary_conninfo:
        lines.append(f"primary_conninfo = {conf_string(primary_conninfo)}")
    return "\n".join(lines) + "\n"


def choose_bin_dir(candidates: list[tuple[int, str]], want: int | None) -> str | None:
    """Pick PostgreSQL binaries: the major version the data directory needs, else the highest."""
    if not candidates:
        return None
    if want is not None:
        matching = [path for major, path in candidates if major == want]
        return matching[0] if matching else None
    return max(candidates, key=lambda c: c[0])[1]


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (or its type's name), for a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
