"""The immutable cluster model: what every service reads, built once per (re)load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

from .errors import Problem
from .fields import canonical_mac, hostname_from_mac


class DHCPMode(StrEnum):
    FULL = "full"
    PROXY = "proxy"
    OFF = "off"


class UnknownMachines(StrEnum):
    ALLOW = "allow"
    APPROVE = "approve"  # discovered: waits until the operator approves it
    IGNORE = "ignore"


class InstallPolicy(StrEnum):
    ONCE = "once"  # an installed machine that network-boots boots its own disk
    ALWAYS = "always"  # every network boot installs (Sextant's behaviour; disposable labs)


class Role(StrEnum):
    MASTER = "master"
    ETCD = "etcd"
    CEPH_MONITOR = "ceph-monitor"
    INGRESS = "ingress"
    WORKER = "worker"


@dataclass(frozen=True)
class BMCConfig:
    """A node's BMC (``nodes[].bmc``): where it is and how to log in; the password stays in
    ``password_file``, read only when a command is sent."""

    address: str
    protocol: str  # "ipmi" or "redfish"
    port: int | None
    username: str
    password_file: Path
    insecure: bool
    ca_file: Path | None


@dataclass(frozen=True)
class Node:
    index: int
    mac: str  # canonical: lowercase, colon-separated
    hostname: str
    fqdn: str
    kube_master: bool
    etcd_member: bool
    ceph_monitor: bool
    ingress_label: bool
    flannel_iface: str | None
    ip: IPv4Address | None  # static DHCP reservation; None = from the pool
    bmc: BMCConfig | None = None

    @property
    def roles(self) -> tuple[Role, ...]:
        roles = []
        if self.kube_master:
            roles.append(Role.MASTER)
        if self.etcd_member:
            roles.append(Role.ETCD)
        if self.ceph_monitor:
            roles.append(Role.CEPH_MONITOR)
        if self.ingress_label:
            roles.append(Role.INGRESS)
        if not self.kube_master:
            roles.append(Role.WORKER)
        return tuple(roles)

    @property
    def etcd_address(self) -> str:
        """How peers reach this node: its static address when it has one, else its FQDN."""
        return str(self.ip) if self.ip is not None else self.fqdn


@dataclass(frozen=True)
class AddressPool:
    """The dynamic range ``iplow``..``iphigh`` (inclusive); empty when the description has none."""

    low: IPv4Address | None
    high: IPv4Address | None

    @property
    def size(self) -> int:
        if self.low is None or self.high is None or self.low > self.high:
            return 0
        return int(self.high) - int(self.low) + 1

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, IPv4Address) or self.low is None or self.high is None:
            return False
        return self.low <= address <= self.high


@dataclass(frozen=True)
class OSConfig:
    name: str  # "flatcar" | "coreos"
    channel: str
    version: str  # a version number or "current"
    mirror: str | None  # base URL replacing the public release host
    # Where name, channel and version came from, as ``check`` says it: "from os.version; …",
    # "from coreos_channel / coreos_version, Sextant keys; …", or "the defaults".
    source: str = "the defaults"


@dataclass(frozen=True)
class Downloads:
    """Where ``bootstrapperd-pack`` fetches from (the ``downloads`` block); None = the default."""

    kubernetes: str  # base URL: <base>/<version>/bin/linux/amd64/<binary> (+ .sha256)
    ipxe: str  # base URL of undionly.kpxe and ipxe.efi, used when the ipxe package is absent
    signing_key: str | None  # URL or file of the OS image signing key (None: the OS's own)
    signing_key_fingerprint: str | None  # its primary key fingerprint (None: the OS's own)
    registries: Mapping[str, str]  # registry host as written in references -> base URL


class RegistryMode(StrEnum):
    AUTO = "auto"  # a Docker engine if one answers, else a registry binary on PATH
    DOCKER = "docker"
    BINARY = "binary"
    EXTERNAL = "external"
    OFF = "off"


@dataclass(frozen=True)
class RegistryConfig:
    """The registry nodes pull from at ``<dockerdomain>:5000`` (the ``registry`` block)."""

    mode: RegistryMode
    url: str | None  # the external registry's base URL (mode external)
    image: str  # the registry image pack fetches and the Docker mode runs


@dataclass(frozen=True)
class RouterAdvertisement:
    """IPv6 Router Advertisements on the serving interface (``dhcp.router_advertisement``):
    they spare iPXE and Linux their wait for IPv6 autoconfiguration at link-up."""

    enabled: bool
    prefix: IPv6Network | None  # a /64 advertised for SLAAC; None: no Prefix Information
    interval: int  # seconds between unsolicited advertisements (the most; jittered below it)


@dataclass(frozen=True)
class DHCPConfig:
    mode: DHCPMode
    unknown_machines: UnknownMachines
    router_advertisement: RouterAdvertisement


@dataclass(frozen=True)
class UpdatePolicy:
    """Sextant's ``coreos:`` block: locksmith reboot strategy and window."""

    reboot_strategy: str
    start_time: str
    time_length: str


@dataclass(frozen=True)
class CephConfig:
    zap_and_start_osd: bool
    osd_journal_size: int


@dataclass(frozen=True)
class PackSettings:
    """Keys only the laptop-side tooling reads (kept so that nothing in a description is lost)."""

    os_name: str | None
    centos_version: str | None
    mirror_site: str | None
    download_kernel: bool
    set_gpu: bool
    gpu_drivers_version: str | None
    set_yum_repo: str | None


@dataclass(frozen=True)
class ApiserverSANs:
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPv4Address, ...]


@dataclass(frozen=True)
class ClusterModel:
    source: str
    bootstrapper: IPv4Address
    network: IPv4Network
    broadcast: IPv4Address
    pool: AddressPool
    routers: tuple[IPv4Address, ...]
    nameservers: tuple[IPv4Address, ...]
    upstream_nameservers: tuple[IPv4Address, ...]
    domain: str
    dockerdomain: str
    service_cluster_ip_range: IPv4Network
    cluster_dns: IPv4Address
    cluster_domain: str
    flannel_backend: str
    ingress_hostnetwork: bool
    kube_master_ip: tuple[str, ...]
    kube_master_dns: tuple[str, ...]
    set_ntp: bool
    lease_seconds: int | None  # None: infinite
    dhcp: DHCPConfig
    os: OSConfig
    http_port: int
    install_policy: InstallPolicy
    ssh_authorized_keys: tuple[str, ...]
    update_policy: UpdatePolicy
    ceph: CephConfig
    images: Mapping[str, str]
    kubernetes_version: str
    downloads: Downloads
    registry: RegistryConfig
    pack: PackSettings
    nodes: tuple[Node, ...]
    warnings: tuple[Problem, ...] = ()
    # Where kubernetes_version came from: "kubernetes_version", "the tag of images.hyperkube"
    # or "the default".
    kubernetes_version_source: str = "the default"
    # Derived once, in build; not given by callers.
    _by_mac: Mapping[str, Node] = field(default_factory=dict, repr=False, compare=False)

    # ---- derived views: computed on first use, then kept (the model never changes) ----------
    @cached_property
    def masters(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kube_master)

    @cached_property
    def etcd_members(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.etcd_member)

    @cached_property
    def etcd_initial_cluster(self) -> str:
        """etcd's ``--initial-cluster``: ``name=http://address:2380`` for every member."""
        return ",".join(f"{n.hostname}=http://{n.etcd_address}:2380" for n in self.etcd_members)

    @cached_property
    def etcd_client_endpoints(self) -> str:
        return ",".join(f"http://{n.etcd_address}:2379" for n in self.etcd_members)

    @cached_property
    def lease_infinite(self) -> bool:
        return self.lease_seconds is None

    @cached_property
    def static_addresses(self) -> Mapping[IPv4Address, Node]:
        return {n.ip: n for n in self.nodes if n.ip is not None}

    @cached_property
    def reserved_addresses(self) -> frozenset[IPv4Address]:
        """Addresses the pool must never hand out dynamically."""
        return frozenset({self.bootstrapper, *self.routers, *self.static_addresses})

    @cached_property
    def pool_free_size(self) -> int:
        return self.pool.size - sum(1 for a in self.reserved_addresses if a in self.pool)

    @cached_property
    def reverse_zones(self) -> tuple[str, ...]:
        return reverse_zones(self.network)

    @cached_property
    def apiserver_sans(self) -> ApiserverSANs:
        dns: list[str] = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{self.cluster_domain}",
        ]
        first_service = self.service_cluster_ip_range.network_address + min(
            1, self.service_cluster_ip_range.num_addresses - 1
        )
        ips: list[IPv4Address] = [first_service]
        for node in self.masters:
            dns += [node.hostname, node.fqdn]
            if node.ip is not None:
                ips.append(node.ip)
        for entry in (*self.kube_master_dns, *self.kube_master_ip):
            try:
                ips.append(IPv4Address(entry))
            except ValueError:
                dns.append(entry)
        return ApiserverSANs(tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))

    @property
    def nodes_by_mac(self) -> Mapping[str, Node]:
        """Nodes keyed by canonical MAC (lowercase, colon-separated)."""
        return self._by_mac

    def node(self, mac: str) -> Node | None:
        """The node with this MAC, in any spelling; None when the MAC is not in the model."""
        found = self._by_mac.get(mac)  # already canonical: the common case, kept fast
        if found is not None:
            return found
        canon = canonical_mac(mac)
        return self._by_mac.get(canon) if canon is not None else None

    def hostname_for_mac(self, mac: str) -> str:
        """A node's hostname; for an unknown machine, Sextant's: the MAC with dashes."""
        node = self.node(mac)
        if node is not None:
            return node.hostname
        canon = canonical_mac(mac)
        if canon is None:
            raise ValueError(f"{mac!r} is not a MAC address")
        return hostname_from_mac(canon)


def reverse_zones(network: IPv4Network) -> tuple[str, ...]:
    """The in-addr.arpa zone(s) covering ``network``, on octet boundaries.

    A /24 (or longer) lies in one zone; a /20 spans sixteen /24 zones; a /16 is one zone.
    """
    prefix = network.prefixlen
    octets = min(3, max(1, -(-prefix // 8)))  # round up to whole octets, at most /24
    zone_prefix = octets * 8
    if prefix > zone_prefix:
        subnets = [network.supernet(new_prefix=zone_prefix)]
    else:
        subnets = list(network.subnets(new_prefix=zone_prefix))
    zones = []
    for net in subnets:
        parts = str(net.network_address).split(".")[:octets]
        zones.append(".".join(reversed(parts)) + ".in-addr.arpa")
    return tuple(zones)
