"""Procedures: the logic behind the runbook and drill notebooks, so their cells stay a few lines.

* ``steady``    is a PostgreSQL service in its steady state? (a drill must not break a broken system)
* ``failover``  choose the standby to promote, fence, verify a write, measure RTO/RPO, heal the pair
* ``restore``   compare every table of a restored copy with its source at the backup point
* ``rotation``  certificates (fingerprints, served and verified), refused logins, SSH key rotation
* ``runbooks``  run a runbook from a drill and adopt its results; tell the operator what to do next

Every function acts on the real target (``targets.postgres.Postgres``, shells); the pure parts
(choosing nodes, comparing checksums) are separate functions, tested without a database.
"""
