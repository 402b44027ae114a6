"""A certificate authority and node certificates made by the tests themselves (``cryptography``).

Kafka reads the node's files as PEM keystores (``ssl.keystore.type=PEM``): an unencrypted PKCS#8
private key followed by the certificate chain. The clients get the CA's certificate as
``ssl.ca.location``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The names librdkafka checks against the certificate (ssl.endpoint.identification.algorithm=https).
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Authority:
    """A CA: its key, its certificate, and the PEM file clients trust it from."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    path: Path


@dataclass(frozen=True)
class Keystore:
    """A node's PEM keystore (key, certificate, CA certificate) and the key's PEM text."""

    path: Path
    key_pem: str

    @property
    def key_body_lines(self) -> list[str]:
        """The base64 lines of the private key, without its BEGIN/END lines: the secret part."""
        return [line for line in self.key_pem.splitlines() if not line.startswith("-----")]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_authority(directory: Path, name: str) -> Authority:
    """A self-signed CA valid from yesterday for a year, its certificate in ``directory/name.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(key, certificate, path)


def make_keystore(authority: Authority, directory: Path, name: str, *, expired: bool = False) -> Keystore:
    """A node certificate for ``HOSTS`` signed by ``authority``, in the PEM keystore
    ``directory/name.pem``; with ``expired``, it ended yesterday (valid the month before)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (
        (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
        if expired
        else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOSTS[0])), x509.DNSName(HOSTS[1])]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (certificate, authority.certificate))
    path = directory / f"{name}.pem"
    path.write_bytes(key_pem.encode() + chain)
    path.chmod(0o600)
    return Keystore(path, key_pem)
