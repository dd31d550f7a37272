"""The cluster's PKI under ``bsroot/tls/``: one CA, the bootstrapper's server certificate, the
masters' shared service-account key, and the certificates of the keys machines make themselves
(kubelet, apiserver, admin), signed on request (:meth:`ClusterPKI.sign`).

The CA, the bootstrapper's certificate and the service-account key are made when missing and
never replaced: a bootstrapper certificate that no longer says what the model asks for, expires
within 30 days or was not signed by the current CA is kept, with a warning that says why. No
machine's private key is made or kept here: a machine's certificate says what the model says
(:func:`node_spec`), is signed for the key of its request and kept, public, as
``nodes/<mac>/<which>.pem``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ..model import ClusterModel, hostname_from_mac
from .layout import write_atomically

log = logging.getLogger("bootstrapperd.tls")

CA_LIFETIME = dt.timedelta(days=3652)
LEAF_LIFETIME = dt.timedelta(days=365)
BACKDATE = dt.timedelta(minutes=5)
EXPIRY_WARNING = dt.timedelta(days=30)  # the bootstrapper's certificate: warn, never replace
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH

_Stamp = tuple[int, int, int] | None  # (mtime_ns, size, inode); None: no such file
_IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class PKIError(Exception):
    """The TLS directory is in a state that must not be repaired automatically."""


@dataclass(frozen=True)
class Issued:
    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class _Spec:
    """What a leaf certificate must say."""

    cn: str
    org: str | None
    dns: tuple[str, ...]
    ips: tuple[IPv4Address, ...]
    usages: tuple[ObjectIdentifier, ...]


@dataclass(frozen=True)
class _CA:
    issued: Issued
    cert: x509.Certificate
    key: _IssuerKey
    stamps: tuple[_Stamp, _Stamp]


@dataclass(frozen=True)
class _Kept:
    """The bootstrapper's certificate as last read, with what it was checked against."""

    spec: _Spec
    stamps: tuple[_Stamp, _Stamp, tuple[_Stamp, _Stamp]]
    issued: Issued


class ClusterPKI:
    """Certificates under ``tls_dir``, created on demand; cached while the files are unchanged."""

    def __init__(self, tls_dir: Path) -> None:
        self.tls_dir = tls_dir
        self._lock = threading.RLock()
        self._ca: _CA | None = None
        self._bootstrapper: _Kept | None = None

    def ca(self, model: ClusterModel | None = None) -> Issued:
        """The CA; made when both files are missing (its CN names ``model.domain`` if given)."""
        return self._load_ca(model.domain if model is not None else None).issued

    def ca_pem(self) -> bytes:
        return self.ca().cert_pem

    def bootstrapper(self, model: ClusterModel) -> Issued:
        """The bootstrapper's server certificate and key (``bootstrapper.pem``,
        ``bootstrapper-key.pem``): made when both are missing, never replaced. One on disk that
        is not what the model asks for is kept, with a warning that says why."""
        dns = [model.dockerdomain, "bootstrapper"]
        dns += [f"{name}.{model.domain}" for name in dns if "." not in name]
        spec = _Spec(model.dockerdomain, None, _unique(dns), (model.bootstrapper,), (SERVER,))
        cert_path = self.tls_dir / "bootstrapper.pem"
        key_path = self.tls_dir / "bootstrapper-key.pem"
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            ca = self._load_ca(model.domain)
            stamps = (_stamp(cert_path), _stamp(key_path), ca.stamps)
            kept = self._bootstrapper
            if kept is not None and kept.spec == spec and kept.stamps == stamps:
                return kept.issued
            if stamps[:2] == (None, None):
                log.info("issued %s (CN %s)", cert_path, spec.cn)
                issued = _new_pair(cert_path, key_path, spec, ca, now)
            else:
                _whole_pair(stamps[0], stamps[1], cert_path, key_path)
                issued, cert = _read(cert_path, key_path)
                problems = _problems(cert, spec, ca.cert, now)
                if problems:
                    log.warning("%s is kept as it is, but: %s", cert_path, "; ".join(problems))
            stamps = (_stamp(cert_path), _stamp(key_path), ca.stamps)
            self._bootstrapper = _Kept(spec, stamps, issued)
            return issued

    def sign(self, model: ClusterModel, mac: str, which: str, csr_pem: bytes) -> bytes:
        """The certificate for the key of certificate request ``csr_pem``, which machine
        ``mac`` made itself: ``worker``, or for masters ``apiserver`` and ``admin``. What it
        says (names, addresses, usages, lifetime) comes from the model, never from the request;
        the request only brings its key, and must be signed by it. Kept (public) as
        ``nodes/<mac>/<which>.pem``. Raises PKIError for a request that cannot be signed."""
        spec = node_spec(model, mac, which)
        if spec is None:
            raise PKIError(f"{mac} is given no {which} certificate")
        key = csr_public_key(csr_pem)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            ca = self._load_ca(model.domain)
            cert = _certificate(spec, key, ca, now)
            pem = cert.public_bytes(serialization.Encoding.PEM)
            path = self.tls_dir / "nodes" / hostname_from_mac(mac) / f"{which}.pem"
            write_atomically(path, pem, 0o644)
        log.info("signed %s for %s (CN %s)", which, mac, spec.cn)
        return pem

    def issued(self, mac: str, which: str) -> bytes | None:
        """The certificate last signed for ``mac``'s ``which`` key, or None."""
        path = self.tls_dir / "nodes" / hostname_from_mac(mac) / f"{which}.pem"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def service_account_key(self) -> bytes:
        """The cluster's service-account signing key (``service-account-key.pem``, ECDSA P-256,
        PKCS#8): one for every master, created once and never replaced (tokens it signed stay
        valid). Only masters are served it."""
        path = self.tls_dir / "service-account-key.pem"
        with self._lock:
            try:
                pem = path.read_bytes()
            except FileNotFoundError:
                pem = _key_pem(ec.generate_private_key(ec.SECP256R1()))
                write_atomically(path, pem, 0o600)
            return pem

    def ensure_all(self, model: ClusterModel) -> None:
        """What the daemon needs before it serves: the CA, its own certificate and the
        service-account key. Machines' certificates are signed when they ask (:meth:`sign`)."""
        self.service_account_key()
        self.ca(model)
        self.bootstrapper(model)

    # ---- internals -----------------------------------------------------------------------

    def _load_ca(self, domain: str | None) -> _CA:
        cert_path, key_path = self.tls_dir / "ca.pem", self.tls_dir / "ca-key.pem"
        with self._lock:
            stamps = (_stamp(cert_path), _stamp(key_path))
            if self._ca is not None and self._ca.stamps == stamps:
                return self._ca
            if stamps == (None, None):
                _create_ca(cert_path, key_path, domain)
                log.info("created the cluster CA in %s", cert_path)
                stamps = (_stamp(cert_path), _stamp(key_path))
            _whole_pair(*stamps, cert_path, key_path)
            issued, cert = _read(cert_path, key_path)
            key = serialization.load_pem_private_key(issued.key_pem, password=None)
            if not isinstance(key, _IssuerKey):
                raise PKIError(f"{key_path}: unsupported CA key type {type(key).__name__}")
            self._ca = _CA(issued, cert, key, stamps)
            return self._ca


ADMIN = _Spec("admin", "system:masters", (), (), (CLIENT,))
NODE_CERTIFICATES = ("worker", "apiserver", "admin")


def node_spec(model: ClusterModel, mac: str, which: str) -> _Spec | None:
    """What machine ``mac``'s ``which`` certificate says; None when it gets none (apiserver
    and admin are for masters only)."""
    node = model.node(mac)
    if which == "worker":
        if node is not None:
            names, ips = (node.hostname, node.fqdn), (node.ip,) if node.ip is not None else ()
        else:
            hostname = model.hostname_for_mac(mac)
            names, ips = (hostname, f"{hostname}.{model.domain}"), ()
        return _Spec(names[0], None, _unique(names), ips, (SERVER, CLIENT))
    if node is None or not node.kube_master:
        return None
    if which == "apiserver":
        sans = model.apiserver_sans
        return _Spec("kube-apiserver", None, sans.dns_names, sans.ip_addresses, (SERVER, CLIENT))
    if which == "admin":
        return ADMIN
    return None


_PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def csr_public_key(csr_pem: bytes) -> _PublicKey:
    """The key of PEM certificate request ``csr_pem``, which must be signed by that key and be
    EC P-256/P-384 or RSA of at least 2048 bits; PKIError otherwise. The request's names are
    never used."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise PKIError("the request is not signed by its own key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise PKIError(f"EC curve {key.curve.name} is not accepted (P-256 or P-384)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise PKIError(f"RSA key of {key.key_size} bits (at least 2048)")
        return key
    raise PKIError(f"{type(key).__name__} keys are not accepted (EC or RSA)")


def _certificate(spec: _Spec, key: _PublicKey, ca: _CA, now: dt.datetime) -> x509.Certificate:
    """A leaf certificate for ``key`` saying what ``spec`` says, signed by ``ca``."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, spec.cn)]
    if spec.org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, spec.org))
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    usage = _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPublicKey))
    builder = (
        _builder(x509.Name(attrs), ca.cert.subject, key, now)
        .not_valid_after(min(now + LEAF_LIFETIME, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(spec.usages)), critical=False)
        .add_extension(aki, critical=False)
    )
    if spec.dns or spec.ips:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns]
        sans += [x509.IPAddress(ip) for ip in spec.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def _new_pair(cert_path: Path, key_path: Path, spec: _Spec, ca: _CA, now: dt.datetime) -> Issued:
    """A new key and its certificate saying what ``spec`` says, signed by ``ca``, written."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(spec, key.public_key(), ca, now)
    cert_pem, key_pem = cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
    write_atomically(key_path, key_pem, 0o600)
    write_atomically(cert_path, cert_pem, 0o644)
    return Issued(cert_path, key_path, cert_pem, key_pem)


def _create_ca(cert_path: Path, key_path: Path, domain: str | None) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cn = f"bootstrapperd cluster CA ({domain})" if domain else "bootstrapperd cluster CA"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        _builder(name, name, key.public_key(), now)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_atomically(key_path, _key_pem(key), 0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = "digital_signature content_commitment key_encipherment data_encipherment"
    names += " key_agreement key_cert_sign crl_sign encipher_only decipher_only"
    return x509.KeyUsage(**(dict.fromkeys(names.split(), False) | flags))


def _problems(
    cert: x509.Certificate, spec: _Spec, ca_cert: x509.Certificate, now: dt.datetime
) -> list[str]:
    """Why ``cert`` is not what ``spec`` asks for (empty: it is); SANs beyond it are fine."""
    out = []
    for oid, want, label in (
        (NameOID.COMMON_NAME, spec.cn, "CN"),
        (NameOID.ORGANIZATION_NAME, spec.org, "O"),
    ):
        values = cert.subject.get_attributes_for_oid(oid)
        have = str(values[0].value) if values else None
        if have != want:
            out.append(f"{label} is {have!r}, wanted {want!r}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have_sans = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        have_sans |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        have_sans = set()
    want_sans = {n.lower() for n in spec.dns} | {str(ip) for ip in spec.ips}
    if want_sans - have_sans:
        out.append("SANs lack " + ", ".join(sorted(want_sans - have_sans)))
    if cert.not_valid_after_utc - now <= EXPIRY_WARNING:
        out.append(f"expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        out.append("not signed by the current CA")
    return out


def _whole_pair(cert: _Stamp, key: _Stamp, cert_path: Path, key_path: Path) -> None:
    """PKIError when exactly one file of a never-replaced pair exists."""
    if (cert is None) != (key is None):
        there, gone = (cert_path, key_path) if key is None else (key_path, cert_path)
        raise PKIError(
            f"{gone} is missing but {there} exists: restore it, or remove both to make new ones "
            "(certificates signed by an old CA do not verify under a new one)"
        )


def _read(cert_path: Path, key_path: Path) -> tuple[Issued, x509.Certificate]:
    """Load a certificate and its key; PKIError when unreadable or the key does not match."""
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PKIError(f"{cert_path} or its key is unreadable: {exc}") from None
    spki, der = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise PKIError(f"{key_path} does not match {cert_path}")
    return Issued(cert_path, key_path, cert_pem, key_pem), cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _stamp(path: Path) -> _Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _unique(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
