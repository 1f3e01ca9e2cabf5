"""Keys and certificates: SSH key pairs, a certificate authority, and server certificates it signs.

    private, public = make_ssh_key("drillbook-run-42")     # ed25519: OpenSSH private key, public line
    public_line(private)                                    # the public key line of a private key
    ca_cert, ca_key = make_ca()                             # PEM, a self-signed CA
    cert, key = issue_server_certificate(ca_cert, ca_key, ["127.0.0.1", "localhost"])

The lab creates its CA and keys with these; production code uses them too: an SSH key rotation
makes its new key here, a TLS certificate rotation issues its certificate from the environment's CA
(``pg.rotation.issue_server_certificate()``).
"""
from __future__ import annotations

import datetime as dt
import ipaddress


def make_ssh_key(comment: str) -> tuple[str, str]:
    """A new ed25519 key: (private key in OpenSSH format, public key line)."""
    # cryptography is imported on first use: it costs start-up time and most commands make no key.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def public_line(private_openssh: str, comment: str = "") -> str:
    """The public key line (``ssh-ed25519 AAAA… comment``) of an OpenSSH private key."""
    from cryptography.hazmat.primitives import serialization  # start-up time, as above

    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{public} {comment}".strip()


def make_ca(common_name: str = "drillbook lab CA", days: int = 3650) -> tuple[str, str]:
    """A new CA certificate and key (PEM)."""
    from cryptography import x509  # start-up time, as above
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
    from cryptography import x509  # start-up time, as above
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
