"""A project's Flower PKI: its CA, the SuperLink's certificate, the learners' keys and certificates.

Each party holds exactly its own material (README, "Flower's PKI"):
- The operator generates the CA (`new_ca`: key and certificate in one PEM bundle) and keeps it in the project's
  Secret (or its 0600 credentials file) only: no service ever gets the bundle. It issues from it, when a platform
  renders a service (flops_operator.plan.render):
  - the aggregator's SuperLink certificate (`server_certificate`) for a key of its own (`new_key`, random, a new one
    for every aggregator it creates), valid for the address learners use and for loopback (its own Flower tools);
  - each learner's certificate (`learner_certificate`) for that learner's own key (`new_key`, random, a new one for
    every learner service it creates or replaces): it names the learner's partition, and its serial number grows
    with the time of issue, so the newer of two certificates for one learner is known (`LearnerCertificate.serial`).
- Every service gets the CA's certificate (`ca_certificate`): learners trust nothing else, and the aggregator admits a
  learner's key only when a certificate that CA issued presents it (`read_learner_certificate`).

CA lifetime (CA_DAYS): the CA belongs to one span of training. The operator generates it when training services
start from none (an aggregator is created while no learner runs) and deletes it from the Secret once the last of
them is removed (flops_operator.plan.flower_keys), so its key exists only while a training runs. The certificate's
own end is a backstop for a copy that leaked: 90 days, three times the longest activeDeadlineSeconds the spec
allows (30 days); a suspension or a new training starts a new CA. Issued certificates end with the CA.

Keys and certificates travel as one line (base64 of the PEM text, `one_line`): container env files and some
runtimes take no newline in a value. `pem` reads either form back.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVE = ec.SECP384R1()  # what Flower's SuperNode authentication requires; the TLS keys use it too
CA_DAYS = 90
BACKDATE = datetime.timedelta(hours=1)  # clocks of the operator and of the workers may differ a little
# Where the aggregator's own Flower tools (flwr CLI, SuperExec) reach the SuperLink.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
LEARNER_NAME = re.compile(r"learner-(\d+)")


def one_line(pem: str) -> str:
    """PEM text as one line (base64), for environment variables."""
    return base64.b64encode(pem.encode()).decode()


def pem(value: str) -> str:
    """PEM text from a value given as PEM or as `one_line` made it."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("neither PEM nor base64 of PEM") from None


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _serial() -> int:
    """Unique and growing with the time of issue (nanoseconds, then 64 random bits): of two certificates for one
    learner, the one with the larger serial number is the newer."""
    return (time.time_ns() << 64) | secrets.randbits(64)


def new_key() -> str:
    """A new random P-384 private key, PKCS#8 PEM (`one_line`): a learner's SuperNode key, the SuperLink's TLS key."""
    return one_line(_pem_key(ec.generate_private_key(CURVE)))


def private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """The P-384 private key of a `new_key` value (PEM or `one_line`)."""
    try:
        key = serialization.load_pem_private_key(pem(value).encode(), password=None)
    except ValueError as exc:
        raise ValueError(f"not a private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != CURVE.name:
        raise ValueError(f"not a {CURVE.name} key")
    return key


def new_ca(common_name: str = "FLOps project CA", days: int = CA_DAYS) -> str:
    """A new self-signed CA: its private key and certificate, PEM, in one string (`one_line`)."""
    key = ec.generate_private_key(CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return one_line(_pem_key(key) + _pem_cert(cert))


def _split(bundle: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        text = pem(bundle).encode()
        key = serialization.load_pem_private_key(text, password=None)
        cert = x509.load_pem_x509_certificate(text)
    except ValueError as exc:
        raise ValueError(f"not a CA bundle (a PEM private key and certificate): {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not a CA bundle: its key is not an EC key")
    return key, cert


def ca_certificate(bundle: str) -> str:
    """The CA's certificate alone (what every service trusts), PEM (`one_line`)."""
    return one_line(_pem_cert(_split(bundle)[1]))


def _certificate(value: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem(value).encode())
    except ValueError as exc:
        raise ValueError(f"not a {what} certificate: {exc}") from None


def _issued(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, subject: str,
            public: ec.EllipticCurvePublicKey, usage: x509.ObjectIdentifier,
            names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(ca_cert.subject).public_key(public)
               .serial_number(_serial())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(ca_cert.not_valid_after_utc)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA384())


def server_certificate(bundle: str, hosts: list[str], key: str | None = None) -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a TLS server key, signed by the CA, valid for `hosts` (IP addresses or
    DNS names) and the loopback names: for `key` (a `new_key` value) if given, else for a new key."""
    ca_key, ca_cert = _split(bundle)
    server_key = private_key(key) if key is not None else ec.generate_private_key(CURVE)
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK_NAMES]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = _issued(ca_key, ca_cert, hosts[0] if hosts else "localhost", server_key.public_key(),
                   ExtendedKeyUsageOID.SERVER_AUTH, names)
    return _pem_cert(cert), _pem_key(server_key)


def learner_certificate(bundle: str, key: str, partition: int) -> str:
    """Learner `partition`'s certificate for its key (a `new_key` value): what it presents to the aggregator to be
    admitted, PEM (`one_line`)."""
    ca_key, ca_cert = _split(bundle)
    cert = _issued(ca_key, ca_cert, f"learner-{partition}", private_key(key).public_key(),
                   ExtendedKeyUsageOID.CLIENT_AUTH)
    return one_line(_pem_cert(cert))


@dataclass(frozen=True)
class LearnerCertificate:
    """A learner certificate the project's CA issued, as the aggregator admits it."""

    partition: int
    serial: int
    """Grows with the time of issue: the larger, the newer (a replaced learner's key is superseded)."""
    public_key: ec.EllipticCurvePublicKey

    def openssh(self) -> str:
        """The public key in the OpenSSH format `flwr supernode register` reads."""
        return self.public_key.public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()


def read_learner_certificate(ca_cert: str, value: str, now: datetime.datetime | None = None) -> LearnerCertificate:
    """A learner certificate (PEM or `one_line`) checked against the CA certificate `ca_cert`: issued and signed by
    that CA, for a client, naming a learner, for a P-384 key, valid now. ValueError says what is wrong."""
    ca = _certificate(ca_cert, "CA")
    cert = _certificate(value, "learner")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError("not issued by the project's CA") from None
    now = now or _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError(f"not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                         f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)")
    try:
        client = ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        leaf = not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        client = leaf = False
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    found = LEARNER_NAME.fullmatch(str(names[0].value)) if names else None
    if not (client and leaf and found):
        raise ValueError("not a learner certificate")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != CURVE.name:
        raise ValueError(f"a learner certificate for a key other than {CURVE.name}")
    return LearnerCertificate(int(found.group(1)), cert.serial_number, public)


def check_server_certificate(ca_cert: str, cert: str, key: str) -> None:
    """ValueError unless `cert` (a server certificate) is for `key` and was issued by the CA of `ca_cert`."""
    ca, server = _certificate(ca_cert, "CA"), _certificate(cert, "server")
    if server.public_key() != private_key(key).public_key():
        raise ValueError("the server certificate is not for its key")
    try:
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError("the server certificate was not issued by the project's CA") from None


def openssh_private(value: str) -> str:
    """A PEM private key (or `one_line` of one) in the OpenSSH format `flower-supernode --auth-supernode-private-key`
    reads."""
    return private_key(value).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                            serialization.NoEncryption()).decode()


def write_private(path: Path, text: str) -> Path:
    """Write a key file readable by its owner only (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
