"""The lab's TLS: its own CA (``.lab/ca/``) and the server certificate both nodes present (``data/tls/``).

``make_ca`` and ``issue_server_certificate`` also serve a certificate rotation drill
(``pg.rotation.issue_server_certificate()`` with the lab's CA key).
"""
from __future__ import annotations

import datetime as dt
import os

from .lab_os import chown, write_private
from .lab_state import LabPaths


def make_ca(common_name: str = "drillbook lab CA", days: int = 3650) -> tuple[str, str]:
    """A new CA certificate and key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def issue_server_certificate(ca_cert_pem: str, ca_key_pem: str, names: list[str] | tuple[str, ...] = ("127.0.0.1", "localhost"),
                             days: int = 365, common_name: str = "drillbook lab postgres") -> tuple[str, str]:
    """A server certificate for ``names`` (IP addresses or DNS names) signed by the CA; (cert, key) PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


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
