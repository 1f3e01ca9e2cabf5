"""The lab's TLS: its own CA (``.lab/ca/``) and the server certificate both nodes present (``data/tls/``).

The CA and the certificate are made by ``pki`` (which a certificate rotation drill also uses,
through ``Postgres.issue_server_certificate`` with the lab's CA key); this module puts them in place.
"""
from __future__ import annotations

import os

from ..pki import issue_server_certificate, make_ca
from .oslevel import chown, write_private
from .state import LabPaths


def ensure_tls(paths: LabPaths, user: str) -> None:
    """Create the CA and the server certificate if missing (the key 0600 and the lab user's)."""
    ca_cert, ca_key = paths.ca / "ca.crt", paths.ca / "ca.key"
    if not ca_cert.exists() or not ca_key.exists():
        cert, key = make_ca()
        write_private(ca_key, key)
        ca_cert.write_text(cert)
        os.chmod(ca_cert, 0o644)
    server_cert, server_key = paths.tls / "server.crt", paths.tls / "server.key"
    if not server_cert.exists() or not server_key.exists():
        cert, key = issue_server_certificate(ca_cert.read_text(), ca_key.read_text())
        write_private(server_key, key, owner=user)  # PostgreSQL insists its key is 0600 and its own
        server_cert.write_text(cert)
        os.chmod(server_cert, 0o644)
        chown(server_cert, user)
