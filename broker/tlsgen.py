"""Make a small PKI for a test or first deployment: a CA, a server and a client certificate.

`szb tls init DIR` writes it; tests use the same functions to make right and wrong ones.
Production deployments should use certificates from their own CA.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, both PEM."""

    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issued(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert, key)


def make_ca(name: str = "Shangzhuang broker test CA", *, days: int = 365) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _issued(cert, key)


def issue(
    ca: Issued,
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    client: bool = False,
    days: int = 365,
    valid_from: datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `ca`: server (with `hosts` as SANs) or client, valid for
    `days` from `valid_from` (now; tests make expired and not-yet-valid ones)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = valid_from or datetime.now(UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([usage]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _issued(builder.sign(ca.key, hashes.SHA256()), key)


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    # A key is created 0600, never readable for a moment under the caller's umask.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    if secret:
        os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT


def write_pki(
    folder: Path, *, hosts: Sequence[str] = DEFAULT_HOSTS, client_name: str = "szb-client"
) -> dict[str, Path]:
    """Write ca.pem, server.pem/server-key.pem and client.pem/client-key.pem into `folder`.

    The CA's own key is not kept: this set can be replaced, not extended.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    server = issue(ca, hosts[0] if hosts else "szb-server", hosts=hosts)
    client = issue(ca, client_name, client=True)
    paths = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server-key.pem",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client-key.pem",
    }
    _write(paths["ca"], ca.cert_pem, secret=False)
    _write(paths["server_cert"], server.cert_pem, secret=False)
    _write(paths["server_key"], server.key_pem, secret=True)
    _write(paths["client_cert"], client.cert_pem, secret=False)
    _write(paths["client_key"], client.key_pem, secret=True)
    return paths
