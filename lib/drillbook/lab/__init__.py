"""The embedded lab: a real PostgreSQL primary + streaming standby, PgBouncer, Redis (and an sshd) on 127.0.0.1.

    drillbook lab up                      # create (~4 s) or repair; idempotent: a warm run takes < 1 s
    drillbook lab status                  # roles, timelines, replication lag, ports, ssh
    drillbook lab down [--purge]          # stop everything it started; --purge also removes .lab/

Everything lives under ``<project>/.lab/`` (git-ignored)::

    lab.json            ports, OS user, binaries: what every command agrees on
    bin -> …/bin        the PostgreSQL binaries in use (system ones, else the pgserver wheel's if it
                        was built with TLS: the lab serves nothing else, and pgserver 0.1.4's is not)
    secrets/            0700: admin_password, replication_password, app_password, app_user (0600 each)
    ca/                 the lab CA: ca.crt (clients verify against it), ca.key (0600)
    data/pg1, data/pg2  the two nodes (owned by the lab's OS user); data/tls/ server certificate and key
    data/pgN.log        each node's server log; data/backups/, data/scratch/ hold drill leftovers
    ssh/                sshd_config, host key, authorized_keys, known_hosts, client_key (0600), sshd.log

Ports: pg1 55432, pg2 55433, sshd 55422 by default; ``--pg1-port/--pg2-port/--ssh-port`` or
``DRILLBOOK_LAB_PG1_PORT``/``…_PG2_PORT``/``…_SSH_PORT`` choose others when the lab is created.
``parameters/environments/local.yaml`` must name the same ports (``status`` warns if not).

Run as root, the servers run as the system user ``drillbook-lab`` (created on first use; initdb
refuses root), and the ssh host logs in as it. Run as anyone else, they run as you; the ssh host
then works only if ``hosts.lab-ssh.user`` in local.yaml names you. Every parent directory of the
project must be searchable by that user. Without an OpenSSH server binary (or with
``DRILLBOOK_LAB_SSHD=none``; a path there picks another sshd) the lab still comes up and
``status`` says why ssh is unavailable.

Roles: ``postgres`` (superuser), ``replicator`` (replication), ``app`` (owns the sample schema,
no login) and its two login roles ``app_blue``/``app_green``; ``secrets/app_user`` names the one
in use, so credentials rotate with no failed connection. Connections need TLS (verify-full
against ``ca/ca.crt``) and a SCRAM password. Database ``app`` holds a deterministic sample shop
(customers, products, orders, order_lines: 66,000 rows) and ``drillbook.writes`` for the
sequenced writer that measures RPO.

``up`` repairs: it starts stopped nodes, keeps the newest primary after a failover, rebuilds a
fenced or diverged node as a standby (pg_rewind, else pg_basebackup), promotes a standby if no
primary is left, restores the application's login if a rotation was interrupted, and starts sshd.

PgBouncer (``data/pgbouncer/``: transaction pooling in front of the primary, port 55434, login
``app_pool``, admin console ``pgbouncer_admin``) and Redis (``data/redis/``, port 55479, a password)
start with ``up`` when Debian's ``pgbouncer`` and ``redis-server`` are installed (``…_PGBOUNCER_PORT``,
``…_REDIS_PORT`` choose other ports; ``DRILLBOOK_LAB_PGBOUNCER``/``…_REDIS=none`` leave them out).

Modules: ``state`` (ports, paths, lab.json), ``oslevel`` (the OS user, private files, loopback
ports), ``binaries`` (which PostgreSQL), ``tls`` (CA, server certificate, made by ``drillbook.pki``),
``pg`` (passwords, configuration, roles, sample data, repairing the pair), ``sshd`` (sshd, its
files), ``pgbouncer`` and ``redis`` (the pool and the cache), ``environment`` (the environment the
lab implies) and ``control`` (``up``, ``status``, ``down``). The package exports what the CLI needs; everything else is imported from its module.
"""
from __future__ import annotations

from .control import LabStatus, down, status, up
from .environment import environment_yaml
from .oslevel import lab_user
from .state import LabPaths, LabPorts

__all__ = ["LabPaths", "LabPorts", "LabStatus", "down", "environment_yaml", "lab_user", "status", "up"]
