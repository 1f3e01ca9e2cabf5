"""Certificates about to expire: every certificate the environment serves, days left vs ``cert_min_days``.

Behind the ``certificate-expiry`` runbook and the ``cert-expiry`` drill. What is served: each running
PostgreSQL node and the PgBouncer in front of them (when it runs and offers TLS), read with the
protocol's SSLRequest. Rotation reuses the TLS rotation (``procedures.rotation``), then reloads
PgBouncer so it presents the new certificate as well.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import DrillbookError
from ..targets.pgbouncer import PgBouncer
from ..targets.postgres import Postgres
from ..targets.postgres.results import ServedCert
from ..targets.postgres.rotation import fetch_served_certificate
from . import rotation

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

DEFAULT_MIN_DAYS = 14.0


@dataclass(frozen=True)
class Served:
    name: str  # "postgres/pg1", "pgbouncer"
    cert: ServedCert

    @property
    def days_left(self) -> float:
        return rotation.days_left(self.cert.not_after)


def min_days(env: Any, given: float | None = None) -> float:
    """The objective: ``given``, else the environment's ``cert_min_days``, else 14."""
    return float(given if given is not None else env.objectives.get("cert_min_days", DEFAULT_MIN_DAYS))


def bouncer_cert(bouncer: PgBouncer | None) -> ServedCert | None:
    """What PgBouncer presents, or None (no PgBouncer, not running, or no TLS)."""
    if bouncer is None or bouncer.missing():
        return None
    rootcert = bouncer.service.sslrootcert
    cafile = str(Path(rootcert) if Path(rootcert).is_absolute() else bouncer.project / rootcert) if rootcert else None
    try:
        return fetch_served_certificate(bouncer.service.address, bouncer.service.port, cafile)
    except (OSError, DrillbookError):
        return None


def served(pg: Postgres, bouncer: PgBouncer | None) -> list[Served]:
    found = [Served(f"{pg.context.name}/{node}", cert) for node, cert in rotation.served(pg).items()]
    extra = bouncer_cert(bouncer)
    if extra is not None and bouncer is not None:
        found.append(Served(bouncer.name, extra))
    return found


def expiring(found: Sequence[Served], days: float) -> list[Served]:
    return [s for s in found if s.days_left < days or not s.cert.verified]


def describe(found: Sequence[Served], days: float) -> str:
    lines = [f"{s.name}: expires {s.cert.not_after} ({s.days_left:g} days left), sha256 {s.cert.sha256[:16]}…, "
             f"{'verifies' if s.cert.verified else 'DOES NOT VERIFY: ' + s.cert.error}" for s in found]
    bad = expiring(found, days)
    lines.append(f"EXPIRING: {', '.join(s.name for s in bad)} inside the objective of {days:g} days: rotate "
                 "(Resolve below)" if bad else
                 f"every certificate is valid for at least {days:g} more days: nothing to rotate")
    return "\n".join(lines)


def rotate(pg: Postgres, bouncer: PgBouncer | None, valid_days: int) -> rotation.Issued:
    """Issue a certificate from the CA, install it on every running node and reload them, then RELOAD
    PgBouncer (it reads the same kind of files at a reload)."""
    issued = rotation.issue(pg, valid_days)
    rotation.install(pg, rotation.running_nodes(pg), issued)
    if bouncer is not None and bouncer_cert(bouncer) is not None:
        bouncer.reload()
    return issued


def check_all_valid(drill: Drill, pg: Postgres, bouncer: PgBouncer | None, days: float, timeout: float = 10.0) -> None:
    """Validate: every served certificate verifies and is valid for at least ``days`` (reloads are
    asynchronous: wait, bounded, for each one to be)."""
    deadline = time.monotonic() + timeout
    while True:
        found = served(pg, bouncer)
        if not expiring(found, days) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for s in found:
        drill.check(f"{s.name}'s certificate is valid for at least {days:g} days and verifies",
                    s.days_left >= days and s.cert.verified, f"{s.days_left:g} days left, expires {s.cert.not_after}")
