"""The HTTPS site's certificate: the configured one, or a self-signed one the room makes.

Browsers only give a page the camera, the microphone and screen capture in a secure
context, so the client is always served over HTTPS. A room without a configured
certificate makes its own (ECDSA P-256) in the state directory and keeps it until it is
about to expire or no longer names the addresses the site is reached at.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from roomsystem.errors import ConfigError
from roomsystem.statedir import StateDir

logger = logging.getLogger(__name__)

CERT_FILE = "web-cert.pem"
KEY_FILE = "web-key.pem"
VALID_DAYS = 397  # the longest lifetime browsers accept for a server certificate
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    cert: Path
    key: Path
    self_signed: bool


def server_names(public_host: str, listen_host: str) -> list[str]:
    """The names a self-signed certificate must cover: loopback, this host, the link's host."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    for extra in (public_host, listen_host):
        if extra and extra not in ("0.0.0.0", "::") and extra not in names:
            names.append(extra)
    return names


def ensure_self_signed(state_dir: StateDir, names: Iterable[str]) -> CertificateFiles:
    """The room's own certificate for ``names``, made (or renewed) when needed."""
    wanted = sorted(set(names))
    cert_path, key_path = state_dir.path / CERT_FILE, state_dir.path / KEY_FILE
    if _still_good(cert_path, key_path, wanted):
        return CertificateFiles(cert_path, key_path, self_signed=True)
    logger.info("making a self-signed certificate for %s", ", ".join(wanted))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, wanted)
    state_dir.write_atomic(
        KEY_FILE,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    state_dir.write_atomic(CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    return CertificateFiles(cert_path, key_path, self_signed=True)


def _self_signed(key: ec.EllipticCurvePrivateKey, names: list[str]) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roomsystem")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _still_good(cert_path: Path, key_path: Path, names: list[str]) -> bool:
    """True if the kept certificate and key load, match, cover ``names`` and are not expiring."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    if key.public_key() != cert.public_key():
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    return sorted(set(_general_names(names)), key=str) == sorted(set(covered), key=str)


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """A TLS server context for the site; a certificate that will not load is a config error."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"web.tls_cert / web.tls_key ({files.cert}, {files.key}): cannot load: {exc}"
        ) from None
    return context
