"""A project's Flower PKI: its CA, the SuperLink's server certificate, and the learners' SuperNode keys.

- The operator generates the CA once per project (`new_ca`: key and certificate in one PEM bundle) and keeps it
  with the project's other credentials. Learners get only the certificate (`ca_certificate`), to trust nothing
  else; the aggregator gets the bundle and issues its SuperLink's certificate at each start
  (`server_certificate`) for the addresses the learners and its own Flower tools use.
- A learner's SuperNode key (P-384, which Flower's SuperNode authentication requires) is derived from a per-project
  seed and the learner's partition (`learner_key`): the operator renders each learner's own key into its
  environment, and the aggregator, which holds the seed, computes the public keys of exactly the learners the
  project has and registers them with its SuperLink. A learner added while training needs no new secret stored,
  and a learner's key never leaves that learner and the aggregator (which could impersonate its own learners
  anyway).

Keys and certificates travel as one line (base64 of the PEM text, `one_line`): container env files and some
runtimes take no newline in a value. `pem` reads either form back.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVE = ec.SECP384R1()
# P-384's group order: a derived scalar is reduced into [1, n-1].
_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
CA_YEARS = 10
SERVER_DAYS = 825
# Where the aggregator's own Flower tools (flwr CLI, SuperExec) reach the SuperLink.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_ca(common_name: str = "FLOps project CA") -> str:
    """A new self-signed CA: its private key and certificate, PEM, in one string (`one_line`)."""
    key = ec.generate_private_key(CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return one_line(_pem_key(key) + cert.public_bytes(serialization.Encoding.PEM).decode())


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
    """The CA's certificate alone (what learners trust), PEM (`one_line`)."""
    return one_line(_split(bundle)[1].public_bytes(serialization.Encoding.PEM).decode())


def server_certificate(bundle: str, hosts: list[str]) -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a new TLS server key, signed by the CA, valid for `hosts` (IP
    addresses or DNS names) and the loopback names."""
    ca_key, ca_cert = _split(bundle)
    key = ec.generate_private_key(CURVE)
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK_NAMES]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(min(now + datetime.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def _learner_private(seed: str, partition: int) -> ec.EllipticCurvePrivateKey:
    if not seed:
        raise ValueError("the learner key seed is empty")
    digest = hmac.new(seed.encode(), f"flops-learner-key/{partition}".encode(), hashlib.sha512).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % (_ORDER - 1) + 1, CURVE)


def learner_key(seed: str, partition: int) -> str:
    """Learner `partition`'s SuperNode private key, PKCS#8 PEM (`one_line`): the same text at every rendering (the
    OpenSSH format `flower-supernode` reads holds a random check number; `openssh_private` converts on the learner)."""
    return one_line(_pem_key(_learner_private(seed, partition)))


def openssh_private(value: str) -> str:
    """A PEM private key (or `one_line` of one) in the OpenSSH format `flower-supernode --auth-supernode-private-key`
    reads."""
    key = serialization.load_pem_private_key(pem(value).encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def learner_public_key(seed: str, partition: int) -> str:
    """Learner `partition`'s SuperNode public key, in the OpenSSH format `flwr supernode register` reads."""
    return _learner_private(seed, partition).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def write_private(path: Path, text: str) -> Path:
    """Write a key file readable by its owner only (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
