"""The cluster PKI: chains verify with openssl, names are exact and come from the description
(never from the machine's request), the CA and the bootstrapper's pair are kept, requests that
cannot be signed are refused."""

from __future__ import annotations

import datetime as dt
import logging
import re
import stat
import subprocess
import threading
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bootstrapperd.bsroot import pki as certs
from bootstrapperd.bsroot.pki import ClusterPKI, Issued, PKIError
from bootstrapperd.model import ClusterModel, load_cluster_file, load_cluster_text
from tests.conftest import EXAMPLE, SEXTANT_FIXTURES, need_tools

SAMPLE = next(p for p in SEXTANT_FIXTURES if p.name == "cluster-desc.sample.yaml")
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
K8S = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
K8S += ["kubernetes.default.svc.cluster.local"]
MASTER_MAC = "52:54:00:77:00:10"
WORKER_MAC = "52:54:00:77:00:11"
NEW_MASTER = """
  - mac: "52:54:00:77:00:20"
    cur_host_name: "master2"
    ip: 10.77.0.20
    kube_master: y
    etcd_member: n
"""
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def example(extra: str = "", **replace: str) -> ClusterModel:
    text = EXAMPLE.read_text() + extra
    for old, new in replace.items():
        text = text.replace(old, new)
    return load_cluster_text(text, str(EXAMPLE))


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def sans(pem: bytes) -> list[str]:
    """SANs in certificate order: DNS names, then IP addresses."""
    ext = load(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = ext.value.get_values_for_type(x509.DNSName)
    return [*dns, *(str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress))]


def name(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def request_for(key: _PrivateKey) -> bytes:
    """A certificate request for ``key`` that deliberately asks for what a machine is never
    given: another CN, ``system:masters``, names and addresses of its own choosing."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "mallory"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("evil.example"),
                    x509.DNSName("kubernetes"),
                    x509.IPAddress(IPv4Address("203.0.113.9")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def sign(
    pki: ClusterPKI, model: ClusterModel, mac: str, which: str, key: _PrivateKey | None = None
) -> bytes:
    """Have ``pki`` sign a request for a key made here (EC P-256 unless given), as a machine
    would: the certificate is for that very key."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    pem = pki.sign(model, mac, which, request_for(key))
    assert load(pem).public_key() == key.public_key()
    return pem


def sign_all(pki: ClusterPKI, model: ClusterModel) -> list[Path]:
    """Every certificate of every machine of ``model``, signed; the files they are kept in."""
    out = []
    for node in model.nodes:
        kinds = ["worker", "apiserver", "admin"] if node.kube_master else ["worker"]
        for which in kinds:
            pem = sign(pki, model, node.mac, which)
            path = pki.tls_dir / "nodes" / node.mac.replace(":", "-") / f"{which}.pem"
            assert path.read_bytes() == pem
            out.append(path)
    return out


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPKI:
    return ClusterPKI(tmp_path / "tls")


@pytest.mark.parametrize("path", [*SEXTANT_FIXTURES, EXAMPLE], ids=lambda p: p.name)
def test_every_chain_verifies_with_openssl(path: Path, pki: ClusterPKI) -> None:
    need_tools("openssl")
    model = load_cluster_file(path)
    pki.ensure_all(model)
    signed = sign_all(pki, model)
    assert len(signed) == len(model.nodes) + 2 * len(model.masters)
    files = [str(pki.bootstrapper(model).cert_path), *map(str, signed)]
    ca = str(pki.ca().cert_path)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", ca, *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{f}: OK" for f in files]


EXAMPLE_SANS = [
    ("bootstrapper", None, ["bootstrapper", "bootstrapper.cluster.example", "10.77.0.1"]),
    ("worker", MASTER_MAC, ["master1", "master1.cluster.example", "10.77.0.10"]),
    ("worker", WORKER_MAC, ["worker1", "worker1.cluster.example"]),
    (
        "worker",
        "52:54:00:77:00:12",
        ["52-54-00-77-00-12", "52-54-00-77-00-12.cluster.example"],
    ),
    ("worker", "de:ad:be:ef:00:01", ["de-ad-be-ef-00-01", "de-ad-be-ef-00-01.cluster.example"]),
    (
        "apiserver",
        MASTER_MAC,
        [*K8S, "master1", "master1.cluster.example", "10.100.0.1", "10.77.0.10"],
    ),
]


@pytest.mark.parametrize(("kind", "mac", "want"), EXAMPLE_SANS)
def test_sans_of_the_example(kind: str, mac: str | None, want: list[str], pki: ClusterPKI) -> None:
    model = example()
    pem = pki.bootstrapper(model).cert_pem if mac is None else sign(pki, model, mac, kind)
    assert sans(pem) == want


def test_sans_of_sextant_sample(pki: ClusterPKI) -> None:
    model = load_cluster_file(SAMPLE)
    assert sans(sign(pki, model, "00:25:90:c0:f7:80", "apiserver")) == [
        *K8S,
        "node1",
        "node1.ail.unisound.com",
        "aa-bb-cc-dd",
        "10.100.0.1",
        "192.168.61.73",
        "192.168.48.23",
    ]
    assert sans(sign(pki, model, "00:25:90:c0:f7:80", "worker")) == [
        "node1",
        "node1.ail.unisound.com",
    ]
    boot = ["bootstrapper", "bootstrapper.ail.unisound.com", "10.10.14.253"]
    assert sans(pki.bootstrapper(model).cert_pem) == boot
    with pytest.raises(PKIError, match="0c:c4:7a:82:c5:bc is given no apiserver certificate"):
        sign(pki, model, "0c:c4:7a:82:c5:bc", "apiserver")


def test_dotted_dockerdomain_is_not_qualified(pki: ClusterPKI) -> None:
    model = example(**{'dockerdomain: "bootstrapper"': 'dockerdomain: "registry.example.org"'})
    issued = pki.bootstrapper(model)
    assert name(load(issued.cert_pem), NameOID.COMMON_NAME) == ["registry.example.org"]
    assert sans(issued.cert_pem) == [
        "registry.example.org",
        "bootstrapper",
        "bootstrapper.cluster.example",
        "10.77.0.1",
    ]


@pytest.mark.parametrize("path", [*SEXTANT_FIXTURES, EXAMPLE], ids=lambda p: p.name)
def test_apiserver_sans_are_the_models(path: Path, pki: ClusterPKI) -> None:
    model = load_cluster_file(path)
    for master in model.masters:
        want = model.apiserver_sans
        pem = sign(pki, model, master.mac, "apiserver")
        assert sans(pem) == [*want.dns_names, *map(str, want.ip_addresses)]


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_subjects_usages_keys_and_validity(pki: ClusterPKI) -> None:
    model = example()
    before = dt.datetime.now(dt.UTC)
    pki.ensure_all(model)
    ca = load(pki.ca().cert_pem)
    assert name(ca, NameOID.COMMON_NAME) == ["bootstrapperd cluster CA (cluster.example)"]
    assert ca.issuer == ca.subject
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= dt.timedelta(days=3650)
    table: list[tuple[bytes, list[str], list[str], list[x509.ObjectIdentifier]]] = [
        (pki.bootstrapper(model).cert_pem, ["bootstrapper"], [], [SERVER]),
        (sign(pki, model, MASTER_MAC, "admin"), ["admin"], ["system:masters"], [CLIENT]),
        (sign(pki, model, MASTER_MAC, "worker"), ["master1"], [], [SERVER, CLIENT]),
        (sign(pki, model, WORKER_MAC, "worker"), ["worker1"], [], [SERVER, CLIENT]),
        (sign(pki, model, MASTER_MAC, "apiserver"), ["kube-apiserver"], [], [SERVER, CLIENT]),
    ]
    for pem, cn, org, eku in table:
        cert = load(pem)
        assert name(cert, NameOID.COMMON_NAME) == cn
        assert name(cert, NameOID.ORGANIZATION_NAME) == org
        assert cert.issuer == ca.subject
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == eku
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical
        assert not basic.value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.digital_signature
        assert not usage.value.key_encipherment  # EC keys
        assert not usage.value.key_cert_sign
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski(ca)
        assert ski(cert)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        assert before - dt.timedelta(minutes=6) < start <= before - dt.timedelta(minutes=4)
        assert end - start == dt.timedelta(days=365, minutes=5)


def test_an_admin_certificate_is_admin_of_system_masters(pki: ClusterPKI) -> None:
    cert = load(sign(pki, example(), MASTER_MAC, "admin"))
    assert cert.subject == x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        ]
    )
    with pytest.raises(x509.ExtensionNotFound):  # none of the request's names
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_accepted_keys_p384_and_rsa(pki: ClusterPKI) -> None:
    model = example()
    p384 = ec.generate_private_key(ec.SECP384R1())
    cert = load(sign(pki, model, MASTER_MAC, "worker", p384))
    assert not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = load(sign(pki, model, MASTER_MAC, "apiserver", rsa_key))
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment  # RSA key exchange
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(load(pki.ca_pem()))


def write_ca(tls: Path, days: float) -> x509.Certificate:
    """A CA of the operator's own that lives ``days`` from now, in place before the PKI runs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    tls.mkdir(parents=True)
    (tls / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tls / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_validity_is_a_year_but_never_past_the_ca(tmp_path: Path) -> None:
    ca = write_ca(tmp_path / "tls", days=100)
    pki = ClusterPKI(tmp_path / "tls")
    for which in ("worker", "apiserver", "admin"):
        cert = load(sign(pki, example(), MASTER_MAC, which))
        assert cert.not_valid_after_utc == ca.not_valid_after_utc
        cert.verify_directly_issued_by(ca)
    assert load(pki.bootstrapper(example()).cert_pem).not_valid_after_utc == ca.not_valid_after_utc
    lasting = ClusterPKI(tmp_path / "other")
    before = dt.datetime.now(dt.UTC)
    cert = load(sign(lasting, example(), MASTER_MAC, "worker"))
    after = dt.datetime.now(dt.UTC)
    year = dt.timedelta(days=365)
    assert before + year <= cert.not_valid_after_utc + dt.timedelta(seconds=1)
    assert cert.not_valid_after_utc <= after + year


def test_file_modes_and_keys_match(pki: ClusterPKI) -> None:
    model = example()
    pki.ensure_all(model)
    for issued in [pki.ca(), pki.bootstrapper(model)]:
        assert stat.S_IMODE(issued.key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(issued.cert_path.stat().st_mode) == 0o644
        assert issued.cert_path.read_bytes() == issued.cert_pem
        assert issued.key_path.read_bytes() == issued.key_pem
        key = serialization.load_pem_private_key(issued.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == load(issued.cert_pem).public_key()
    assert pki.issued(MASTER_MAC, "worker") is None  # nothing signed yet
    signed = sign_all(pki, model)
    for path in signed:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        which = path.name.removesuffix(".pem")
        assert pki.issued(path.parent.name.replace("-", ":"), which) == path.read_bytes()
    worker = pki.tls_dir / "nodes" / "52-54-00-77-00-10" / "worker.pem"
    assert worker in signed
    assert pki.issued(MASTER_MAC, "worker") == worker.read_bytes()
    # the signed certificates are all that is kept for machines: no key file, ever
    assert sorted(p for p in (pki.tls_dir / "nodes").rglob("*") if p.is_file()) == sorted(signed)
    assert sorted(p.name for p in pki.tls_dir.iterdir()) == [
        "bootstrapper-key.pem",
        "bootstrapper.pem",
        "ca-key.pem",
        "ca.pem",
        "nodes",
        "service-account-key.pem",
    ]
    assert pki.ca_pem() == (pki.tls_dir / "ca.pem").read_bytes()


def test_the_last_signed_certificate_is_kept(pki: ClusterPKI) -> None:
    first = sign(pki, example(), MASTER_MAC, "worker")
    second = sign(pki, example(), MASTER_MAC, "worker")
    assert first != second
    assert pki.issued(MASTER_MAC, "worker") == second
    assert ClusterPKI(pki.tls_dir).issued(MASTER_MAC, "worker") == second


def test_second_call_returns_the_same_files(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = ClusterPKI(tls)
    first.ensure_all(example())
    before = [first.ca(), first.bootstrapper(example())]
    again = ClusterPKI(tls)  # as after a restart, with a freshly loaded model
    assert [again.ca(), again.bootstrapper(example())] == before
    load(sign(again, example(), MASTER_MAC, "worker")).verify_directly_issued_by(
        load(before[0].cert_pem)
    )


def test_cached_certificates_are_not_read_again(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = example()
    before = [pki.ca(), pki.bootstrapper(model)]

    def no_reading(*args: object) -> None:
        raise AssertionError("read from disk although nothing changed")

    monkeypatch.setattr(certs, "_read", no_reading)
    assert [pki.ca(), pki.bootstrapper(model)] == before
    assert [pki.ca(), pki.bootstrapper(example())] == before  # a reloaded but equal model
    sign(pki, model, MASTER_MAC, "worker")  # signing reads no CA from disk either


def tls_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings the PKI logged."""
    wanted = [r for r in caplog.records if r.name == "bootstrapperd.tls"]
    return [r.getMessage() for r in wanted if r.levelno >= logging.WARNING]


def test_ca_and_bootstrapper_are_never_overwritten(
    pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    pki.ensure_all(example())
    ca, boot = pki.ca(), pki.bootstrapper(example())
    changed = example(
        **{
            'domainname: "cluster.example"': 'domainname: "other.example"',
            'dockerdomain: "bootstrapper"': 'dockerdomain: "registry"',
            "bootstrapper: 10.77.0.1": "bootstrapper: 10.77.0.2",
        }
    )
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.tls"):
        pki.ensure_all(changed)
        assert ClusterPKI(pki.tls_dir).bootstrapper(changed) == boot
    assert pki.ca() == ca
    assert ClusterPKI(pki.tls_dir).ca(changed) == ca
    assert pki.bootstrapper(changed) == boot
    warnings = [r.getMessage() for r in caplog.records if r.name == "bootstrapperd.tls"]
    assert warnings
    assert "bootstrapper.pem is kept" in warnings[0]
    for missing in ("registry", "registry.other.example", "10.77.0.2", "CN is 'bootstrapper'"):
        assert missing in warnings[0]
    # the new domain changes every worker's FQDN: a worker signed now says so, under the old CA
    worker = sign(pki, changed, MASTER_MAC, "worker")
    assert "master1.other.example" in sans(worker)
    assert load(worker).issuer == load(ca.cert_pem).subject
    load(worker).verify_directly_issued_by(load(ca.cert_pem))


def test_new_master_changes_the_apiserver_names(
    pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    model = example()
    pki.ensure_all(model)
    old = sign(pki, model, MASTER_MAC, "apiserver")
    workers = [sans(sign(pki, model, n.mac, "worker")) for n in model.nodes]
    grown = example(NEW_MASTER)
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.tls"):
        pki.ensure_all(grown)
    assert not tls_warnings(caplog)  # the bootstrapper's certificate still says what it should
    new = sign(pki, grown, MASTER_MAC, "apiserver")
    assert sans(new) != sans(old)
    assert not {"master2", "master2.cluster.example", "10.77.0.20"} & set(sans(old))
    assert {"master2", "master2.cluster.example", "10.77.0.20"} <= set(sans(new))
    assert pki.issued(MASTER_MAC, "apiserver") == new
    assert [sans(sign(pki, grown, n.mac, "worker")) for n in model.nodes] == workers
    second = sign(pki, grown, "52:54:00:77:00:20", "apiserver")
    assert sans(second) == sans(new)


def write_leaf(
    issued: Issued, signer: ec.EllipticCurvePrivateKey, issuer: x509.Name, days: float
) -> None:
    """Replace a pair with one that has the same names but lives ``days`` from now."""
    old = load(issued.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for ext in old.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier):
            builder = builder.add_extension(ext.value, critical=ext.critical)
    cert = builder.sign(signer, hashes.SHA256())
    issued.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    issued.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ca_key(pki: ClusterPKI) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pki.ca().key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_expiring_bootstrapper_certificate_is_kept_with_a_warning(
    pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    boot = pki.bootstrapper(example())
    ca_name = load(pki.ca().cert_pem).subject
    write_leaf(boot, ca_key(pki), ca_name, days=40)
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.tls"):
        kept = ClusterPKI(pki.tls_dir).bootstrapper(example())  # 40 days left: no warning
    assert kept.cert_pem == boot.cert_path.read_bytes() != boot.cert_pem
    assert not tls_warnings(caplog)
    write_leaf(boot, ca_key(pki), ca_name, days=10)
    short = boot.cert_path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.tls"):
        assert ClusterPKI(pki.tls_dir).bootstrapper(example()).cert_pem == short
    [warning] = tls_warnings(caplog)
    assert "bootstrapper.pem is kept as it is, but: expires" in warning
    assert boot.cert_path.read_bytes() == short


def test_bootstrapper_certificate_from_another_ca_is_kept_with_a_warning(
    pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    boot = pki.bootstrapper(example())
    stranger = ec.generate_private_key(ec.SECP256R1())
    write_leaf(boot, stranger, load(pki.ca().cert_pem).subject, days=300)
    forged = boot.cert_path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.tls"):
        assert ClusterPKI(pki.tls_dir).bootstrapper(example()).cert_pem == forged
    [warning] = tls_warnings(caplog)
    assert warning.endswith("but: not signed by the current CA")


@pytest.mark.parametrize("gone", ["ca.pem", "ca-key.pem"])
def test_half_a_ca_is_an_error(gone: str, pki: ClusterPKI) -> None:
    pki.ensure_all(example())
    (pki.tls_dir / gone).unlink()
    for fresh in (pki, ClusterPKI(pki.tls_dir)):
        with pytest.raises(PKIError, match=rf"{re.escape(gone)} is missing but .* exists"):
            fresh.ca()
        with pytest.raises(PKIError, match=rf"{re.escape(gone)} is missing"):
            sign(fresh, example(), MASTER_MAC, "worker")
        with pytest.raises(PKIError, match=rf"{re.escape(gone)} is missing"):
            fresh.bootstrapper(example())
    assert not (pki.tls_dir / gone).exists()  # not repaired behind the operator's back
    assert not (pki.tls_dir / "nodes").exists()


def test_mismatched_ca_key_is_an_error(pki: ClusterPKI) -> None:
    pki.ca()
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (pki.tls_dir / "ca-key.pem").write_bytes(pem)
    for fresh in (pki, ClusterPKI(pki.tls_dir)):
        with pytest.raises(PKIError, match=r"ca-key\.pem does not match .*/ca\.pem"):
            fresh.ca()
        with pytest.raises(PKIError, match=r"ca-key\.pem does not match .*/ca\.pem"):
            sign(fresh, example(), MASTER_MAC, "worker")


def test_half_a_bootstrapper_pair_is_an_error(pki: ClusterPKI) -> None:
    boot = pki.bootstrapper(example())
    boot.key_path.unlink()
    with pytest.raises(PKIError, match=r"bootstrapper-key\.pem is missing"):
        ClusterPKI(pki.tls_dir).bootstrapper(example())
    assert not boot.key_path.exists()


def test_unknown_machine_gets_a_worker_cert(pki: ClusterPKI) -> None:
    cert = load(sign(pki, example(), "DE-AD-BE-EF-00-01", "worker"))
    assert name(cert, NameOID.COMMON_NAME) == ["de-ad-be-ef-00-01"]
    kept = pki.tls_dir / "nodes" / "de-ad-be-ef-00-01" / "worker.pem"
    assert load(kept.read_bytes()) == cert
    for which in ("apiserver", "admin"):
        with pytest.raises(PKIError, match=f"given no {which} certificate"):
            sign(pki, example(), "DE-AD-BE-EF-00-01", which)
    with pytest.raises(ValueError, match="not a MAC"):
        sign(pki, example(), "nonsense", "worker")


def test_threads_share_one_ca(pki: ClusterPKI) -> None:
    model = example()
    results: list[tuple[bytes, bytes]] = []

    def work() -> None:
        results.append((sign(pki, model, MASTER_MAC, "worker"), pki.ca_pem()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert {ca for _, ca in results} == {pki.ca_pem()}
    ca = load(pki.ca_pem())
    for pem, _ in results:
        load(pem).verify_directly_issued_by(ca)
    assert len({pem for pem, _ in results}) == 8  # eight keys, eight certificates
    assert pki.issued(MASTER_MAC, "worker") in {pem for pem, _ in results}
    assert sorted(p.name for p in pki.tls_dir.iterdir()) == ["ca-key.pem", "ca.pem", "nodes"]


def test_ip_sans_are_ip_addresses(pki: ClusterPKI) -> None:
    model = example()
    table: list[tuple[bytes, list[IPv4Address]]] = [
        (pki.bootstrapper(model).cert_pem, [IPv4Address("10.77.0.1")]),
        (sign(pki, model, MASTER_MAC, "worker"), [IPv4Address("10.77.0.10")]),
        (
            sign(pki, model, MASTER_MAC, "apiserver"),
            [IPv4Address("10.100.0.1"), IPv4Address("10.77.0.10")],
        ),
    ]
    for pem, ips in table:
        san = load(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == ips
        assert not set(san.get_values_for_type(x509.DNSName)) & {str(ip) for ip in ips}


def tampered(pem: bytes) -> bytes:
    """``pem`` with one letter of its subject changed after it was signed."""
    csr = x509.load_pem_x509_csr(pem)
    der = csr.public_bytes(serialization.Encoding.DER)
    assert der.count(b"mallory") == 1
    changed = x509.load_der_x509_csr(der.replace(b"mallory", b"mallorz"))
    return changed.public_bytes(serialization.Encoding.PEM)


def self_signed(key: ec.EllipticCurvePrivateKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def refused_request(label: str) -> bytes:
    p256 = ec.generate_private_key(ec.SECP256R1())
    if label == "not signed by its key":
        return tampered(request_for(p256))
    if label == "junk":
        return b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n"
    if label == "empty":
        return b""
    if label == "a certificate":
        return self_signed(p256)
    if label == "RSA 1024":
        return request_for(rsa.generate_private_key(65537, 1024))  # noqa: S505 (to be refused)
    curve = {"P-521": ec.SECP521R1(), "P-224": ec.SECP224R1(), "secp256k1": ec.SECP256K1()}
    return request_for(ec.generate_private_key(curve[label]))


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("not signed by its key", "the request is not signed by its own key"),
        ("junk", "not a PEM certificate request"),
        ("empty", "not a PEM certificate request"),
        ("a certificate", "not a PEM certificate request"),
        ("P-521", "EC curve secp521r1 is not accepted (P-256 or P-384)"),
        ("P-224", "EC curve secp224r1 is not accepted (P-256 or P-384)"),
        ("secp256k1", "EC curve secp256k1 is not accepted (P-256 or P-384)"),
        ("RSA 1024", "RSA key of 1024 bits (at least 2048)"),
    ],
)
def test_requests_that_cannot_be_signed_are_refused(label: str, why: str, pki: ClusterPKI) -> None:
    request = refused_request(label)
    with pytest.raises(PKIError, match=re.escape(why)):
        pki.sign(example(), MASTER_MAC, "worker", request)
    with pytest.raises(PKIError, match=re.escape(why)):
        certs.csr_public_key(request)
    assert pki.issued(MASTER_MAC, "worker") is None
    assert not pki.tls_dir.exists()  # a refusal makes nothing, not even the CA


@pytest.mark.parametrize("which", ["apiserver", "admin", "kubelet", "ca"])
def test_a_worker_is_given_no_other_certificate(which: str, pki: ClusterPKI) -> None:
    with pytest.raises(PKIError, match=f"{WORKER_MAC} is given no {which} certificate"):
        sign(pki, example(), WORKER_MAC, which)
    assert pki.issued(WORKER_MAC, which) is None
    assert not pki.tls_dir.exists()


def test_service_account_key_is_made_once(pki: ClusterPKI) -> None:
    pem = pki.service_account_key()
    path = pki.tls_dir / "service-account-key.pem"
    assert path.read_bytes() == pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    pki.ensure_all(example())
    assert ClusterPKI(pki.tls_dir).service_account_key() == pem
