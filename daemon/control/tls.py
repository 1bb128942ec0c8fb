"""The node's HTTPS certificate: made once by `formd init`, pinned by clients by fingerprint.

A self-signed certificate: the node's API has no name a public CA could vouch for. Its key is
ECDSA P-256, which every TLS stack and browser accepts (Chromium refuses Ed25519 server
certificates). Clients trust it by its SHA-256 fingerprint, which `formd init` and `form status` print and
the node's signed record carries, so trusting one node's fingerprint lets a client check
every other node's from that node's view.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "https.crt"
KEY_NAME = "https.key"
VALID_DAYS = 3650


class TlsError(Exception):
    """The certificate files are missing or unreadable; the text says which."""


def fingerprint_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: bytes) -> str:
    return fingerprint_of_der(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))


def create_certificate(state_dir: Path, node_hex: str, hosts: list[str]) -> str:
    """Write the certificate and its key (0600) into the state dir; return the fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"formd {node_hex[:12]}")])
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # A trust anchor of its own: clients load exactly this certificate as their CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = state_dir / KEY_NAME
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    (state_dir / CERT_NAME).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))


def load_fingerprint(state_dir: Path) -> str:
    try:
        return fingerprint_of_pem((state_dir / CERT_NAME).read_bytes())
    except OSError as exc:
        raise TlsError(
            f"{state_dir / CERT_NAME}: {exc.strerror}; run formd init again or restore it"
        ) from None
    except ValueError as exc:
        raise TlsError(f"{state_dir / CERT_NAME}: not a PEM certificate ({exc})") from None
