"""flops_runtime.pki: the project's Flower CA, the SuperLink's certificate, the learners' keys and certificates."""

from __future__ import annotations

import datetime
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

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


def test_the_ca_lives_as_long_as_a_span_of_training_may_and_issued_certificates_end_with_it(ca):
    cert = x509.load_pem_x509_certificate(pki.pem(pki.ca_certificate(ca)).encode())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=pki.CA_DAYS) + pki.BACKDATE and pki.CA_DAYS == 90
    for issued in (pki.server_certificate(ca, ["10.30.4.2"])[0], pki.pem(pki.learner_certificate(ca, pki.new_key(), 0))):
        assert x509.load_pem_x509_certificate(issued.encode()).not_valid_after_utc == cert.not_valid_after_utc


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


def test_the_operator_issues_the_server_certificate_for_the_aggregators_own_key(ca):
    key = pki.new_key()
    cert_pem, key_pem = pki.server_certificate(ca, ["10.30.4.2"], key=key)
    assert key_pem == pki.pem(key)
    pki.check_server_certificate(pki.ca_certificate(ca), cert_pem, key)
    with pytest.raises(ValueError, match="not for its key"):
        pki.check_server_certificate(pki.ca_certificate(ca), cert_pem, pki.new_key())
    with pytest.raises(ValueError, match="not issued by the project's CA"):
        pki.check_server_certificate(pki.ca_certificate(pki.new_ca()), cert_pem, key)


@pytest.mark.parametrize("bundle", ["", "<flower-ca>", pki.ca_certificate(pki.new_ca()), pki.one_line("junk")])
def test_anything_but_a_ca_bundle_is_refused_plainly(bundle):
    with pytest.raises(ValueError, match="not a CA bundle"):
        pki.server_certificate(bundle, ["127.0.0.1"])


def test_keys_are_random_p384_and_read_as_flower_reads_them():
    keys = {pki.new_key() for _ in range(3)}
    assert len(keys) == 3 and all("\n" not in key for key in keys)  # random; one line
    key = keys.pop()
    private = serialization.load_ssh_private_key(pki.openssh_private(key).encode(), None)
    assert pki.openssh_private(pki.pem(key)).startswith("-----BEGIN OPENSSH PRIVATE KEY")
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert private.public_key() == pki.private_key(key).public_key()
    for bad in ("", "<flower-learner-key-0>", pki.one_line(pki.pem(pki.new_ca()).split("-----BEGIN CERT")[0]
                                                           .replace("PRIVATE", "PUBLIC"))):
        with pytest.raises(ValueError):
            pki.private_key(bad)


def test_a_learner_certificate_names_its_learner_and_key_and_the_newer_has_the_larger_serial(ca):
    key = pki.new_key()
    first = pki.read_learner_certificate(pki.ca_certificate(ca), pki.learner_certificate(ca, key, 3))
    again = pki.read_learner_certificate(pki.ca_certificate(ca), pki.learner_certificate(ca, pki.new_key(), 3))
    assert first.partition == 3 and first.public_key == pki.private_key(key).public_key()
    assert serialization.load_ssh_public_key(first.openssh().encode()) == first.public_key
    assert again.serial > first.serial
    text = pki.pem(pki.learner_certificate(ca, key, 3))
    assert "PRIVATE" not in text
    cert = x509.load_pem_x509_certificate(text.encode())
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value


def test_only_a_learner_certificate_of_the_ca_valid_now_is_read(ca):
    other = pki.new_ca()
    key = pki.new_key()
    with pytest.raises(ValueError, match="not issued by the project's CA"):
        pki.read_learner_certificate(pki.ca_certificate(ca), pki.learner_certificate(other, key, 0))
    server, _ = pki.server_certificate(ca, ["127.0.0.1"], key=key)
    with pytest.raises(ValueError, match="not a learner certificate"):
        pki.read_learner_certificate(pki.ca_certificate(ca), server)
    with pytest.raises(ValueError, match="not valid now"):
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=pki.CA_DAYS + 1)
        pki.read_learner_certificate(pki.ca_certificate(ca), pki.learner_certificate(ca, key, 0), now=later)
    with pytest.raises(ValueError, match="not a learner certificate"):
        pki.read_learner_certificate(pki.ca_certificate(ca), "junk")


def test_private_files_are_created_for_their_owner_only(tmp_path):
    path = pki.write_private(tmp_path / "tls" / "key.pem", "secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "secret"
    pki.write_private(path, "again")
    assert path.read_text() == "again"
