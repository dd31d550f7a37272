"""The cluster PKI: chains verify with openssl, names are exact, files are kept or re-issued."""

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
from cryptography.hazmat.primitives.asymmetric import ec
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
NEW_MASTER = """
  - mac: "52:54:00:77:00:20"
    cur_host_name: "master2"
    ip: 10.77.0.20
    kube_master: y
    etcd_member: n
"""


def example(extra: str = "", **replace: str) -> ClusterModel:
    text = EXAMPLE.read_text() + extra
    for old, new in replace.items():
        text = text.replace(old, new)
    return load_cluster_text(text, str(EXAMPLE))


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def sans(issued: Issued) -> list[str]:
    """SANs in certificate order: DNS names, then IP addresses."""
    ext = load(issued.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = ext.value.get_values_for_type(x509.DNSName)
    return [*dns, *(str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress))]


def name(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def all_issued(pki: ClusterPKI, model: ClusterModel) -> list[Issued]:
    out = [pki.bootstrapper(model), pki.admin()]
    for node in model.nodes:
        got = pki.node(model, node.mac)
        out += [got.worker] + ([got.apiserver] if got.apiserver else [])
    return out


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPKI:
    return ClusterPKI(tmp_path / "tls")


@pytest.mark.parametrize("path", [*SEXTANT_FIXTURES, EXAMPLE], ids=lambda p: p.name)
def test_every_chain_verifies_with_openssl(path: Path, pki: ClusterPKI) -> None:
    need_tools("openssl")
    model = load_cluster_file(path)
    pki.ensure_all(model)
    issued = all_issued(pki, model)
    assert len(issued) == 2 + len(model.nodes) + len(model.masters)
    files = [str(i.cert_path) for i in issued]
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
    ("worker", "52:54:00:77:00:11", ["worker1", "worker1.cluster.example"]),
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
    issued: Issued | None = pki.bootstrapper(model)
    if mac is not None:
        got = pki.node(model, mac)
        issued = got.worker if kind == "worker" else got.apiserver
    assert issued is not None
    assert sans(issued) == want


def test_sans_of_sextant_sample(pki: ClusterPKI) -> None:
    model = load_cluster_file(SAMPLE)
    got = pki.node(model, "00:25:90:c0:f7:80")
    assert got.apiserver is not None
    assert sans(got.apiserver) == [
        *K8S,
        "node1",
        "node1.ail.unisound.com",
        "aa-bb-cc-dd",
        "10.100.0.1",
        "192.168.61.73",
        "192.168.48.23",
    ]
    assert sans(got.worker) == ["node1", "node1.ail.unisound.com"]
    boot = ["bootstrapper", "bootstrapper.ail.unisound.com", "10.10.14.253"]
    assert sans(pki.bootstrapper(model)) == boot
    assert pki.node(model, "0c:c4:7a:82:c5:bc").apiserver is None


def test_dotted_dockerdomain_is_not_qualified(pki: ClusterPKI) -> None:
    model = example(**{'dockerdomain: "bootstrapper"': 'dockerdomain: "registry.example.org"'})
    issued = pki.bootstrapper(model)
    assert name(load(issued.cert_pem), NameOID.COMMON_NAME) == ["registry.example.org"]
    assert sans(issued) == [
        "registry.example.org",
        "bootstrapper",
        "bootstrapper.cluster.example",
        "10.77.0.1",
    ]


@pytest.mark.parametrize("path", [*SEXTANT_FIXTURES, EXAMPLE], ids=lambda p: p.name)
def test_apiserver_sans_are_the_models(path: Path, pki: ClusterPKI) -> None:
    model = load_cluster_file(path)
    for master in model.masters:
        apiserver = pki.node(model, master.mac).apiserver
        assert apiserver is not None
        want = model.apiserver_sans
        assert sans(apiserver) == [*want.dns_names, *map(str, want.ip_addresses)]


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
    node = pki.node(model, MASTER_MAC)
    assert node.apiserver is not None
    table: list[tuple[Issued, list[str], list[str], list[x509.ObjectIdentifier]]] = [
        (pki.bootstrapper(model), ["bootstrapper"], [], [SERVER]),
        (pki.admin(), ["admin"], ["system:masters"], [CLIENT]),
        (node.worker, ["master1"], [], [SERVER, CLIENT]),
        (node.apiserver, ["kube-apiserver"], [], [SERVER, CLIENT]),
    ]
    for issued, cn, org, eku in table:
        cert = load(issued.cert_pem)
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


def test_file_modes_and_keys_match(pki: ClusterPKI) -> None:
    model = example()
    pki.ensure_all(model)
    for issued in [pki.ca(), *all_issued(pki, model)]:
        assert stat.S_IMODE(issued.key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(issued.cert_path.stat().st_mode) == 0o644
        assert issued.cert_path.read_bytes() == issued.cert_pem
        assert issued.key_path.read_bytes() == issued.key_pem
        key = serialization.load_pem_private_key(issued.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == load(issued.cert_pem).public_key()
    worker = pki.node(model, MASTER_MAC).worker
    assert worker.cert_path == pki.tls_dir / "nodes" / "52-54-00-77-00-10" / "worker.pem"
    assert worker.key_path.name == "worker-key.pem"
    assert pki.ca_pem() == (pki.tls_dir / "ca.pem").read_bytes()


def test_second_call_returns_the_same_files(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = ClusterPKI(tls)
    first.ensure_all(example())
    before = [first.ca(), *all_issued(first, example())]
    again = ClusterPKI(tls)  # as after a restart, with a freshly loaded model
    assert [again.ca(), *all_issued(again, example())] == before


def test_cached_certificates_are_not_read_again(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = example()
    before = all_issued(pki, model)

    def no_reading(*args: object) -> None:
        raise AssertionError("read from disk although nothing changed")

    monkeypatch.setattr(certs, "_read", no_reading)
    assert all_issued(pki, model) == before
    assert all_issued(pki, example()) == before  # a reloaded but equal model: same answers


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
    # the new domain changes every worker's FQDN: those are re-issued, under the old CA
    worker = pki.node(changed, MASTER_MAC).worker
    assert "master1.other.example" in sans(worker)
    assert load(worker.cert_pem).issuer == load(ca.cert_pem).subject


def test_new_master_reissues_apiserver_but_keeps_workers(
    pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    model = example()
    pki.ensure_all(model)
    old = pki.node(model, MASTER_MAC)
    others = [pki.node(model, n.mac).worker for n in model.nodes]
    grown = example(NEW_MASTER)
    with caplog.at_level(logging.INFO, logger="bootstrapperd.tls"):
        pki.ensure_all(grown)
        new = pki.node(grown, MASTER_MAC)
    assert new.worker == old.worker
    assert [pki.node(grown, n.mac).worker for n in model.nodes] == others
    assert old.apiserver is not None
    assert new.apiserver is not None
    assert new.apiserver.cert_pem != old.apiserver.cert_pem
    assert new.apiserver.key_pem != old.apiserver.key_pem
    assert {"master2", "master2.cluster.example", "10.77.0.20"} <= set(sans(new.apiserver))
    second = pki.node(grown, "52:54:00:77:00:20").apiserver
    assert second is not None
    assert sans(second) == sans(new.apiserver)
    reissued = [r.getMessage() for r in caplog.records if "re-issued" in r.getMessage()]
    assert len(reissued) == 1
    assert "apiserver.pem" in reissued[0]
    assert "SANs lack" in reissued[0]
    assert "master2.cluster.example" in reissued[0]


def write_leaf(
    issued: Issued, signer: ec.EllipticCurvePrivateKey, issuer: x509.Name, days: float
) -> None:
    """Replace a leaf with one that has the same names but lives ``days`` from now."""
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


def test_cert_expiring_within_30_days_is_reissued(
    pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    model = example()
    worker = pki.node(model, MASTER_MAC).worker
    ca_name = load(pki.ca().cert_pem).subject
    write_leaf(worker, ca_key(pki), ca_name, days=40)
    kept = pki.node(model, MASTER_MAC).worker  # 40 days left: kept
    assert kept.cert_pem == worker.cert_path.read_bytes() != worker.cert_pem
    write_leaf(worker, ca_key(pki), ca_name, days=10)
    short = worker.cert_path.read_bytes()
    with caplog.at_level(logging.INFO, logger="bootstrapperd.tls"):
        renewed = pki.node(model, MASTER_MAC).worker
    assert renewed.cert_pem != short
    left = load(renewed.cert_pem).not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert left > dt.timedelta(days=364)
    assert any("expires" in r.getMessage() for r in caplog.records)


def test_cert_from_another_ca_is_reissued(pki: ClusterPKI) -> None:
    admin = pki.admin()
    stranger = ec.generate_private_key(ec.SECP256R1())
    write_leaf(admin, stranger, load(pki.ca().cert_pem).subject, days=300)
    forged = admin.cert_path.read_bytes()
    renewed = pki.admin()
    assert renewed.cert_pem not in (forged, admin.cert_pem)
    load(renewed.cert_pem).verify_directly_issued_by(load(pki.ca().cert_pem))


def test_broken_leaf_pair_is_reissued(pki: ClusterPKI) -> None:
    admin = pki.admin()
    admin.key_path.unlink()
    assert pki.admin().cert_pem != admin.cert_pem
    pki.admin().key_path.write_bytes(b"not a key")
    fixed = ClusterPKI(pki.tls_dir).admin()
    assert serialization.load_pem_private_key(fixed.key_pem, password=None)


@pytest.mark.parametrize("gone", ["ca.pem", "ca-key.pem"])
def test_half_a_ca_is_an_error(gone: str, pki: ClusterPKI) -> None:
    pki.ensure_all(example())
    (pki.tls_dir / gone).unlink()
    for fresh in (pki, ClusterPKI(pki.tls_dir)):
        with pytest.raises(PKIError, match=rf"{re.escape(gone)} is missing but .* exists"):
            fresh.ca()
        with pytest.raises(PKIError):
            fresh.node(example(), MASTER_MAC)
    assert not (pki.tls_dir / gone).exists()  # not repaired behind the operator's back


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


def test_half_a_bootstrapper_pair_is_an_error(pki: ClusterPKI) -> None:
    boot = pki.bootstrapper(example())
    boot.key_path.unlink()
    with pytest.raises(PKIError, match=r"bootstrapper-key\.pem is missing"):
        ClusterPKI(pki.tls_dir).bootstrapper(example())


def test_unknown_machine_gets_a_worker_cert(pki: ClusterPKI) -> None:
    got = pki.node(example(), "DE-AD-BE-EF-00-01")
    assert got.apiserver is None
    cert = load(got.worker.cert_pem)
    assert name(cert, NameOID.COMMON_NAME) == ["de-ad-be-ef-00-01"]
    assert got.worker.cert_path.parent.name == "de-ad-be-ef-00-01"
    with pytest.raises(ValueError, match="not a MAC"):
        pki.node(example(), "nonsense")


def test_threads_share_one_ca(pki: ClusterPKI) -> None:
    model = example()
    results: list[bytes] = []

    def work() -> None:
        results.append(pki.node(model, MASTER_MAC).worker.cert_pem + pki.ca_pem())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert sorted(p.name for p in pki.tls_dir.iterdir()) == ["ca-key.pem", "ca.pem", "nodes"]


def test_ip_sans_are_ip_addresses(pki: ClusterPKI) -> None:
    ext = load(pki.bootstrapper(example()).cert_pem).extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [IPv4Address("10.77.0.1")]


def test_cached_cert_is_renewed_when_its_time_comes(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = pki.admin()
    assert pki.admin() == admin  # cached
    monkeypatch.setattr(certs, "RENEW_BEFORE", dt.timedelta(days=400))  # as if a year passed
    assert pki.admin().cert_pem != admin.cert_pem


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
