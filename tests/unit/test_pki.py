"""flops_runtime.pki: the project's Flower CA, the SuperLink's certificate, the learners' derived keys."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flops_runtime import pki


@pytest.fixture(scope="module")
def ca() -> str:
    return pki.new_ca()


def test_a_new_ca_is_a_p384_key_and_a_self_signed_ca_certificate(ca):
    cert = x509.load_pem_x509_certificate(pki.pem(pki.ca_certificate(ca)).encode())
    key = serialization.load_pem_private_key(pki.pem(ca).encode(), None)
    assert "\n" not in ca and "\n" not in pki.ca_certificate(ca)  # one line: env files take no newline
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert cert.public_key() == key.public_key()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(cert)
    assert "PRIVATE KEY" not in pki.pem(pki.ca_certificate(ca))
    assert pki.new_ca() != ca  # a new key every time


def test_the_server_certificate_is_signed_by_the_ca_for_the_hosts_and_loopback(ca):
    cert_pem, key_pem = pki.server_certificate(ca, ["10.30.4.2", "superlink.example"])
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.pem(pki.ca_certificate(ca)).encode()))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.30.4.2", "127.0.0.1", "::1")}
    assert set(names.get_values_for_type(x509.DNSName)) == {"superlink.example", "localhost"}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.public_key() == serialization.load_pem_private_key(key_pem.encode(), None).public_key()


@pytest.mark.parametrize("bundle", ["", "<flower-ca>", pki.ca_certificate(pki.new_ca()), pki.one_line("junk")])
def test_anything_but_a_ca_bundle_is_refused_plainly(bundle):
    with pytest.raises(ValueError, match="not a CA bundle"):
        pki.server_certificate(bundle, ["127.0.0.1"])


def test_learner_keys_derive_from_seed_and_partition_and_read_as_flower_reads_them():
    keys = {(seed, i): pki.learner_key(seed, i) for seed in ("seed-a", "seed-b") for i in range(3)}
    assert len(set(keys.values())) == 6  # distinct per seed and partition
    assert pki.learner_key("seed-a", 1) == keys[("seed-a", 1)]  # the same text at every rendering
    public = serialization.load_ssh_public_key(pki.learner_public_key("seed-a", 1).encode())
    private = serialization.load_ssh_private_key(pki.openssh_private(keys[("seed-a", 1)]).encode(), None)
    assert pki.openssh_private(pki.pem(keys[("seed-a", 1)])).startswith("-----BEGIN OPENSSH PRIVATE KEY")
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
    assert private.public_key() == public
    with pytest.raises(ValueError):
        pki.learner_key("", 0)


def test_private_files_are_created_for_their_owner_only(tmp_path):
    path = pki.write_private(tmp_path / "tls" / "key.pem", "secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "secret"
    pki.write_private(path, "again")
    assert path.read_text() == "again"
