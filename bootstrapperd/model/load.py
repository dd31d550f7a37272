"""parse → normalise → validate → freeze: cluster-desc.yml into one ClusterModel.

Reads Sextant's format unchanged (every key its Go code and scripts read, YAML 1.1 y/n booleans,
``ingress_label`` and ``ingresslabel``, ``ssh_authorized_keys`` as a block that is itself a
YAML list) plus bootstrapperd's own keys (per-node ``ip``, ``os``, ``dhcp``, ``http_port``).
Every error is collected, each with its key path and line; warnings never stop a load.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import Any

from . import keys
from .errors import ConfigError, Problem, Severity
from .fields import (
    canonical_mac,
    hostname_from_mac,
    is_dns_label,
    is_domain_name,
    parse_bool,
    parse_lease,
)
from .reader import Reader, type_name
from .types import (
    AddressPool,
    BMCConfig,
    CephConfig,
    ClusterModel,
    DHCPConfig,
    DHCPMode,
    Downloads,
    InstallPolicy,
    Node,
    OSConfig,
    PackSettings,
    RegistryConfig,
    RegistryMode,
    RouterAdvertisement,
    UnknownMachines,
    UpdatePolicy,
)
from .yamlsrc import Path, YAMLLimitError, YAMLSyntaxError, load_with_lines, read_bounded

# The documented defaults and the known keys of every block come from the key table (keys.py),
# which also writes the JSON schema and the docs' tables: the three cannot disagree.
DEFAULT_DOMAIN = keys.default_text("domainname")
DEFAULT_DOCKERDOMAIN = keys.default_text("dockerdomain")
DEFAULT_SERVICE_RANGE = keys.default_text("k8s_service_cluster_ip_range")
DEFAULT_FLANNEL_BACKEND = keys.default_text("flannel_backend")
DEFAULT_LEASE_SECONDS = keys.default_int("lease")
DEFAULT_KUBERNETES_VERSION = keys.default_text("kubernetes_version")
DEFAULT_RA_INTERVAL = keys.default_int("dhcp.router_advertisement.interval")
_K8S_VERSION = re.compile(r"v\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+_-]+)?")

CHANNELS = keys.find("os.channel").known
# The keys of the top and of a node, as the table has them (for tests that try every key).
TOP_KEYS = keys.names("")
NODE_KEYS = keys.names("nodes[]")
# Keys Sextant read that bootstrapperd has no use for: accepted, with a warning saying so.
IGNORED_KEYS = keys.ignored("")

_SSH_KEY = re.compile(
    r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r"\s+[A-Za-z0-9+/]+=*(\s.*)?$"
)
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")

# ---- release facts: versions that cannot exist are warned about (a mirror may hold anything,
# so never an error) ---------------------------------------------------------------------------
# Flatcar's first release is 1688.5.3, "Initial Flatcar release", published 2018-04-25
# (https://github.com/flatcar-linux/manifest/releases/tag/v1688.5.3; the release notes at
# flatcar/flatcar-website, data/releases/stable/1688.5.3.yml). Flatcar continued CoreOS
# Container Linux's numbering, so a lower number (Sextant's samples say 1122.2.0) is CoreOS's.
FLATCAR_FIRST = (1688, 5, 3)
# CoreOS Container Linux ended on 26 May 2020; its last release branches were 2512 (stable),
# 2513 (beta) and 2514 (alpha), which carried the end-of-life notice (coreos/coreos-overlay pull
# requests 3951, 3952, 3953). Its downloads were removed on 1 September 2020
# (https://www.flatcar.org/blog/2020/02/flatcar-container-linux-enters-new-era-after-coreos-end-of-life-announcement/).
COREOS_LAST_MAJOR = 2514
# Fedora CoreOS numbers releases X.YYYYMMDD.Z.N (Fedora major, date of its content, stream,
# respin: https://github.com/coreos/fedora-coreos-tracker/issues/211); bootstrapperd installs
# neither its images nor its Ignition flavour, so such a number is a mix-up.
_FEDORA_COREOS_VERSION = re.compile(r"^\d{2}\.20\d{6}\.\d+\.\d+$")
OS_NAMES = {"flatcar": "Flatcar", "coreos": "CoreOS Container Linux"}
# The node templates (config/templates/node.yaml.j2) start kubelet with containerd's CRI socket
# as --container-runtime-endpoint and no --container-runtime flag. Before v1.24 kubelet's
# runtime defaulted to the built-in dockershim and needed --container-runtime=remote for a CRI
# socket; v1.24 removed the dockershim (kubernetes/kubernetes#97252) and the flag went in v1.27.
OLDEST_KUBERNETES = (1, 24)


def load_cluster_file(path: str | FilePath) -> ClusterModel:
    """Load and validate a cluster description file. Raises ConfigError listing every error."""
    return read_cluster_file(FilePath(path))[0]


def read_cluster_file(path: FilePath) -> tuple[ClusterModel, str]:
    """The model and the sha256 of the file's bytes (what the daemon reports it is serving)."""
    try:
        raw = read_bounded(path)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem(Severity.ERROR, "", f"cannot read: {exc}")]) from None
    except YAMLSyntaxError as exc:  # larger than the bound: not read to its end
        raise ConfigError(str(path), [Problem(Severity.ERROR, "", exc.message, exc.line)]) from exc
    return load_cluster_text(text, source=str(path)), hashlib.sha256(raw).hexdigest()


def load_cluster_text(text: str, source: str = "<cluster-desc>") -> ClusterModel:
    """Load and validate a description's text. Raises ConfigError; one caused by a bound of
    the reader (size, depth, values) has the YAMLLimitError as its ``__cause__``."""
    try:
        data, smap = load_with_lines(text)
    except YAMLSyntaxError as exc:
        raise ConfigError(source, [Problem(Severity.ERROR, "", exc.message, exc.line)]) from exc
    reader = Reader(smap)
    for dup_path, first, again in smap.duplicates:
        reader.warn(dup_path, f"given twice (lines {first} and {again}); the later one is used")
    if not isinstance(data, dict):
        reader.error((), f"expected a mapping of keys at the top, got {type_name(data)}")
        raise ConfigError(source, reader.problems)
    model = _build(data, reader, source)
    if model is None or reader.failed():
        raise ConfigError(source, reader.problems)
    return model


def _build(data: dict[str, Any], r: Reader, source: str) -> ClusterModel | None:
    _known_keys(r, data, ())

    # ---- the network ---------------------------------------------------------------------------
    bootstrapper = r.ipv4(data, (), "bootstrapper")
    if "bootstrapper" not in data or data["bootstrapper"] is None:
        r.error(("bootstrapper",), "required key is missing (the bootstrapper's IPv4 address)")
    network = _network(data, r)
    broadcast = _broadcast(data, r, network)
    routers = r.ipv4_list(data, (), "routers")
    if routers is None:
        routers = []
        r.warn(("routers",), "not set; DHCP clients will get no default gateway")
    nameservers = r.ipv4_list(data, (), "nameservers")
    if nameservers is None:
        nameservers = [bootstrapper] if bootstrapper is not None else []
        r.warn(("nameservers",), "not set; using the bootstrapper, which serves the cluster's DNS")
    upstream = r.ipv4_list(data, (), "upstreamnameservers") or []

    domain = _domain(data, r)
    dockerdomain = r.string(data, (), "dockerdomain")
    if dockerdomain is not None:
        dockerdomain = dockerdomain.strip().rstrip(".").lower()
    if dockerdomain is None:
        dockerdomain = DEFAULT_DOCKERDOMAIN
        r.warn(("dockerdomain",), f"not set; using {DEFAULT_DOCKERDOMAIN!r} (the registry's name)")
    elif not is_domain_name(dockerdomain):
        r.error(("dockerdomain",), f"{dockerdomain!r} is not a valid DNS name")

    if network is not None:
        if bootstrapper is not None and bootstrapper not in network:
            r.warn(
                ("bootstrapper",),
                f"{bootstrapper} is outside subnet {network}; machines can reach DHCP only "
                "through a relay",
            )
        for i, router in enumerate(routers):
            if router not in network:
                r.error(_item_path(data, "routers", i), f"{router} is outside subnet {network}")

    pool = _pool(data, r, network, broadcast)

    # ---- Kubernetes ----------------------------------------------------------------------------
    service_range = r.network(data, (), "k8s_service_cluster_ip_range")
    if service_range is None:
        service_range = IPv4Network(DEFAULT_SERVICE_RANGE)
        if "k8s_service_cluster_ip_range" not in data:
            r.warn(("k8s_service_cluster_ip_range",), f"not set; using {DEFAULT_SERVICE_RANGE}")
    if service_range.num_addresses < 16:
        r.warn(
            ("k8s_service_cluster_ip_range",),
            f"{service_range} has only {service_range.num_addresses} addresses for services",
        )
    cluster_dns = r.ipv4(data, (), "k8s_cluster_dns")
    if cluster_dns is None:
        cluster_dns = service_range.network_address + min(10, service_range.num_addresses - 1)
        if "k8s_cluster_dns" not in data:
            r.warn(("k8s_cluster_dns",), f"not set; using {cluster_dns}")
    elif cluster_dns not in service_range:
        r.warn(("k8s_cluster_dns",), f"{cluster_dns} is outside {service_range}")
    cluster_domain = _text(r, data, (), "k8s_cluster_domain").strip().rstrip(".").lower()
    if not is_domain_name(cluster_domain):
        r.error(("k8s_cluster_domain",), f"{cluster_domain!r} is not a valid DNS name")
    if "flannel_backend" not in data:
        r.warn(("flannel_backend",), f"not set; using {DEFAULT_FLANNEL_BACKEND!r}")
    flannel_backend = _choice(r, data, (), "flannel_backend")
    kube_master_ip = _string_list(data, r, "kube_master_ip")
    for i, entry in enumerate(kube_master_ip):
        try:
            IPv4Address(entry)
        except ValueError:
            r.warn(_item_path(data, "kube_master_ip", i), f"{entry!r} is not an IPv4 address")
    kube_master_dns = _string_list(data, r, "kube_master_dns")

    # ---- DHCP, OS, HTTP --------------------------------------------------------------------------
    lease_seconds = _lease(data, r)
    dhcp = _dhcp(data, r)
    os_config = _os(data, r)
    http_port = _number(r, data, (), "http_port")
    install_policy = InstallPolicy(_choice(r, data, (), "install_policy"))

    # ---- nodes -----------------------------------------------------------------------------------
    base = FilePath(source).parent if not source.startswith("<") else FilePath()
    nodes = _nodes(data, r, domain, network, broadcast, bootstrapper, routers, base)

    images = _images(data, r)
    kubernetes_version, kubernetes_version_source = _kubernetes_version(data, r, images)
    downloads = _downloads(data, r)
    registry = _registry(data, r)
    keys = _ssh_keys(data, r)
    coreos = r.mapping(data, (), "coreos")
    _known_keys(r, coreos, ("coreos",))
    update_policy = UpdatePolicy(
        reboot_strategy=_choice(r, coreos, ("coreos",), "reboot_strategy"),
        start_time=_text(r, coreos, ("coreos",), "start_time"),
        time_length=_text(r, coreos, ("coreos",), "time_length"),
    )
    ceph = r.mapping(data, (), "ceph")
    _known_keys(r, ceph, ("ceph",))
    ceph_config = CephConfig(
        zap_and_start_osd=_flag(r, ceph, ("ceph",), "zap_and_start_osd"),
        osd_journal_size=_number(r, ceph, ("ceph",), "osd_journal_size"),
    )
    pack = PackSettings(
        os_name=r.string(data, (), "os_name"),
        centos_version=r.string(data, (), "centos_version"),
        mirror_site=r.string(data, (), "mirror_site"),
        download_kernel=_flag(r, data, (), "download_kernel"),
        set_gpu=_flag(r, data, (), "set_gpu"),
        gpu_drivers_version=r.string(data, (), "gpu_drivers_version"),
        set_yum_repo=r.string(data, (), "set_yum_repo"),
    )
    if (
        pack.os_name is not None
        and pack.os_name.lower() not in ("coreos", "flatcar")
        and "os" not in data
    ):
        r.warn(
            ("os_name",),
            f"{pack.os_name!r}: bootstrapperd installs Flatcar Container Linux (or CoreOS); "
            f"nodes get {os_config.name} (set an `os` block to choose)",
        )
    set_ntp = _flag(r, data, (), "set_ntp")
    ingress_hostnetwork = _flag(r, data, (), "ingress_hostnetwork")

    # The cross-checks run whatever else is wrong: one run of `check` shows every error.
    _cross_check(r, data, nodes, bootstrapper, routers, pool, network)
    if r.failed() or bootstrapper is None or network is None or broadcast is None:
        return None
    return ClusterModel(
        source=source,
        bootstrapper=bootstrapper,
        network=network,
        broadcast=broadcast,
        pool=pool,
        routers=tuple(routers),
        nameservers=tuple(nameservers),
        upstream_nameservers=tuple(upstream),
        domain=domain,
        dockerdomain=dockerdomain,
        service_cluster_ip_range=service_range,
        cluster_dns=cluster_dns,
        cluster_domain=cluster_domain,
        flannel_backend=flannel_backend,
        ingress_hostnetwork=ingress_hostnetwork,
        kube_master_ip=tuple(kube_master_ip),
        kube_master_dns=tuple(kube_master_dns),
        set_ntp=set_ntp,
        lease_seconds=lease_seconds,
        dhcp=dhcp,
        os=os_config,
        http_port=http_port,
        install_policy=install_policy,
        ssh_authorized_keys=tuple(keys),
        update_policy=update_policy,
        ceph=ceph_config,
        images=MappingProxyType(dict(images)),
        kubernetes_version=kubernetes_version,
        downloads=downloads,
        registry=registry,
        pack=pack,
        nodes=tuple(nodes),
        warnings=tuple(p for p in r.problems if p.severity is Severity.WARNING),
        kubernetes_version_source=kubernetes_version_source,
        _by_mac=MappingProxyType({n.mac: n for n in nodes}),
    )


# ---- reading a key as the table declares it ------------------------------------------------------
def _known_keys(r: Reader, block: dict[str, Any], path: Path) -> None:
    """Warn about each key of the mapping at ``path`` that the table does not know, and about
    each one it knows but ignores."""
    where = keys.dotted(path)
    ignored = keys.ignored(where)
    r.unknown_keys(block, path, (*keys.names(where), *ignored))
    for key, why in ignored.items():
        if key in block:
            r.warn((*path, key), why)


def _flag(r: Reader, block: dict[str, Any], path: Path, key: str) -> bool:
    """A boolean key; absent or empty: the table's default."""
    return r.boolean(block, path, key, keys.default_flag(keys.dotted(path, key)))


def _text(r: Reader, block: dict[str, Any], path: Path, key: str) -> str:
    """A text key as written; absent or empty: the table's default."""
    default = keys.default_text(keys.dotted(path, key))
    return r.string(block, path, key, default) or default


def _number(r: Reader, block: dict[str, Any], path: Path, key: str) -> int:
    """A whole-number key within the table's range; absent or empty: the table's default."""
    where = keys.dotted(path, key)
    spec = keys.find(where)
    return r.integer(block, path, key, keys.default_int(where), spec.low, spec.high)


def _choice(
    r: Reader, block: dict[str, Any], path: Path, key: str, default: str | None = None
) -> str:
    """One of the table's choices for the key; absent: ``default``, else the table's default."""
    where = keys.dotted(path, key)
    fallback = keys.default_text(where) if default is None else default
    return r.choice(block, path, key, keys.find(where).choices, fallback)


def _item_path(data: dict[str, Any], key: str, index: int) -> Path:
    return (key, index) if isinstance(data.get(key), list) else (key,)


def _network(data: dict[str, Any], r: Reader) -> IPv4Network | None:
    subnet = r.ipv4(data, (), "subnet")
    for key in ("subnet", "netmask"):
        if data.get(key) is None:
            r.error((key,), "required key is missing")
    raw_mask = data.get("netmask")
    if subnet is None or raw_mask is None:
        return None
    mask = str(raw_mask).strip().lstrip("/")
    try:
        network = IPv4Network(f"{subnet}/{mask}", strict=False)
    except ValueError:
        r.error(("netmask",), f"{raw_mask!r} is not a netmask (like 255.255.255.0)")
        return None
    if network.network_address != subnet:
        r.warn(("subnet",), f"{subnet} has host bits set for netmask {mask}; using {network}")
    return network


def _broadcast(data: dict[str, Any], r: Reader, network: IPv4Network | None) -> IPv4Address | None:
    given = r.ipv4(data, (), "broadcast")
    if network is None:
        return given
    if given is not None and given != network.broadcast_address:
        r.warn(("broadcast",), f"{given} is not {network}'s broadcast address; using it anyway")
        return given
    return network.broadcast_address


def _pool(
    data: dict[str, Any], r: Reader, network: IPv4Network | None, broadcast: IPv4Address | None
) -> AddressPool:
    low = r.ipv4(data, (), "iplow")
    high = r.ipv4(data, (), "iphigh")
    if data.get("iplow") is None or data.get("iphigh") is None:
        if data.get("iplow") is not None or data.get("iphigh") is not None:
            missing = "iphigh" if data.get("iphigh") is None else "iplow"
            r.error((missing,), "required when the other end of the pool is given")
        else:
            r.warn(
                ("iplow",), "no address pool (iplow/iphigh); only static `ip` nodes get addresses"
            )
        return AddressPool(None, None)
    if low is None or high is None:
        return AddressPool(None, None)
    if low > high:
        r.error(("iphigh",), f"iplow {low} is above iphigh {high}")
    if network is not None:
        for key, address in (("iplow", low), ("iphigh", high)):
            if address not in network:
                r.error((key,), f"{address} is outside subnet {network}")
            elif address in (network.network_address, broadcast):
                r.error((key,), f"{address} is the subnet's network or broadcast address")
    return AddressPool(low, high)


def _domain(data: dict[str, Any], r: Reader) -> str:
    domain = r.string(data, (), "domainname")
    if domain is None:
        r.warn(("domainname",), f"not set; using {DEFAULT_DOMAIN!r}")
        return DEFAULT_DOMAIN
    domain = domain.strip().rstrip(".").lower()
    if not is_domain_name(domain):
        r.error(("domainname",), f"{domain!r} is not a valid DNS domain name")
    return domain


def _lease(data: dict[str, Any], r: Reader) -> int | None:
    written = r.text(data, (), "lease")
    if written is None:
        if data.get("lease") is not None:
            r.error(("lease",), f"expected a lease time, got {type_name(data['lease'])}")
        return DEFAULT_LEASE_SECONDS
    ok, seconds = parse_lease(written)
    if not ok:
        r.error(("lease",), f"{written!r} is not a lease time (infinite, 24h, 30m, 3600)")
        return DEFAULT_LEASE_SECONDS
    if seconds is not None and seconds < 120:
        r.warn(("lease",), f"{seconds} s is very short; clients will renew constantly")
    return seconds


def _dhcp(data: dict[str, Any], r: Reader) -> DHCPConfig:
    block = r.mapping(data, (), "dhcp")
    _known_keys(r, block, ("dhcp",))
    start_pxe = _flag(r, data, (), "start_pxe")
    default_mode = keys.default_text("dhcp.mode") if start_pxe else DHCPMode.OFF.value
    mode = _choice(r, block, ("dhcp",), "mode", default_mode)
    if not start_pxe and "mode" in block and mode != DHCPMode.OFF.value:
        r.warn(("start_pxe",), f"start_pxe is off but dhcp.mode is {mode!r}; dhcp.mode wins")
    unknown = _choice(r, block, ("dhcp",), "unknown_machines")
    if unknown == UnknownMachines.ALLOW.value:
        _warn_unknown_machines(r, DHCPMode(mode), written="unknown_machines" in block)
    ra = _router_advertisement(block, r, DHCPMode(mode))
    return DHCPConfig(DHCPMode(mode), UnknownMachines(unknown), ra)


def _warn_unknown_machines(r: Reader, mode: DHCPMode, *, written: bool) -> None:
    """``allow`` installs whatever boots: say so plainly, it costs a machine its disk."""
    who = (
        "any machine your DHCP server sends to the bootstrapper to network-boot"
        if mode is DHCPMode.OFF
        else "any machine that network-boots on this segment"
    )
    r.warn(
        ("dhcp", "unknown_machines"),
        f"allow{'' if written else ' (the default)'}: {who} is installed and its disk wiped, "
        "a machine not in nodes as a worker; set dhcp.unknown_machines: ignore to install "
        "only the machines in nodes, or approve to install one only after "
        "`bootstrapperd approve MAC`",
    )


def _router_advertisement(block: dict[str, Any], r: Reader, mode: DHCPMode) -> RouterAdvertisement:
    """``dhcp.router_advertisement``: a mapping, or a plain boolean for ``enabled``. On by
    default where bootstrapperd owns the segment (mode full); in proxy mode another DHCP server
    (and maybe a real IPv6 router) is there, so it is off unless asked for."""
    path: Path = ("dhcp", "router_advertisement")
    enabled = mode is DHCPMode.FULL
    value = block.get("router_advertisement")
    if value is None:
        return RouterAdvertisement(enabled, None, DEFAULT_RA_INTERVAL)
    if not isinstance(value, dict):
        parsed = parse_bool(value)
        if parsed is None:
            r.error(
                path,
                f"{value!r} is not a boolean or a mapping (with enabled, prefix, interval)",
            )
            return RouterAdvertisement(enabled, None, DEFAULT_RA_INTERVAL)
        return RouterAdvertisement(parsed, None, DEFAULT_RA_INTERVAL)
    _known_keys(r, value, path)
    enabled = r.boolean(value, path, "enabled", enabled)
    interval = _number(r, value, path, "interval")
    return RouterAdvertisement(enabled, _ra_prefix(value, r, path), interval)


def _ra_prefix(block: dict[str, Any], r: Reader, path: Path) -> IPv6Network | None:
    written = r.string(block, path, "prefix")
    if written is None:
        return None
    where: Path = (*path, "prefix")
    try:
        prefix = IPv6Network(written.strip(), strict=False)
    except ValueError:
        r.error(where, f"{written!r} is not an IPv6 prefix (like fd77::/64)")
        return None
    if "/" not in written or prefix.prefixlen != 64:
        r.error(
            where,
            f"{written!r} is not a /64: SLAAC makes addresses only in /64 prefixes "
            "(write it like fd77::/64)",
        )
        return None
    if prefix.is_link_local or prefix.is_multicast or prefix.is_loopback:
        kind = "link-local" if prefix.is_link_local else "multicast or loopback"
        r.error(where, f"{written!r} is a {kind} prefix; advertise a global or ULA /64")
        return None
    if IPv6Address(written.strip().split("/")[0]) != prefix.network_address:
        r.warn(where, f"{written!r} has host bits set; using {prefix}")
    return prefix


def _os(data: dict[str, Any], r: Reader) -> OSConfig:
    block = r.mapping(data, (), "os")
    _known_keys(r, block, ("os",))
    name = _choice(r, block, ("os",), "name")
    given: list[str] = []  # the keys that chose name, channel and version, in that order
    defaulted: list[str] = []  # "channel stable", … for what no key chose
    if _written(block, "name"):
        given.append("os.name")
    else:
        defaulted.append(f"name {name}")
    if block.get("channel") is not None:
        channel = _text(r, block, ("os",), "channel")
        channel_path: Path = ("os", "channel")
    else:
        channel = _text(r, data, (), "coreos_channel")
        channel_path = ("coreos_channel",)
    channel = channel.strip().lower()
    _chosen(given, defaulted, block, data, channel_path, f"channel {channel}")
    if channel not in CHANNELS:
        r.warn(channel_path, f"{channel!r} is not a known release channel ({', '.join(CHANNELS)})")
    if block.get("version") is not None:
        version = _text(r, block, ("os",), "version")
        version_path: Path = ("os", "version")
    else:
        version = _text(r, data, (), "coreos_version")
        version_path = ("coreos_version",)
    version = version.strip()
    _chosen(given, defaulted, block, data, version_path, f"version {version}")
    if version != "current" and not _VERSION.fullmatch(version):
        r.error(version_path, f"{version!r} is not a release version (like 3815.2.0) or 'current'")
    else:
        _impossible_os_version(r, name, version, version_path)
    mirror = r.string(block, ("os",), "mirror")
    if mirror is not None and not re.match(r"^(https?|file)://", mirror):
        r.error(("os", "mirror"), f"{mirror!r} is not an http(s):// or file:// URL")
    if name == "coreos" and mirror is None:
        r.warn(
            ("os", "name"),
            "CoreOS Container Linux reached its end of life on 26 May 2020 and its release "
            "servers were taken down on 1 September 2020: set os.mirror to a mirror that holds "
            "the release, or install flatcar",
        )
    source = _os_source(given, defaulted)
    return OSConfig(name=name, channel=channel, version=version, mirror=mirror, source=source)


def _written(block: dict[str, Any], key: str) -> bool:
    """The key is in the block with a value (an empty one means: the default)."""
    return block.get(key) not in (None, "")


def _chosen(
    given: list[str],
    defaulted: list[str],
    block: dict[str, Any],
    data: dict[str, Any],
    path: Path,
    default: str,
) -> None:
    """Note which key chose a part of the OS (``os.<part>`` or Sextant's ``coreos_<part>``)."""
    written = _written(block, str(path[-1])) if path[0] == "os" else _written(data, str(path[0]))
    if written:
        given.append(keys.dotted(path))
    else:
        defaulted.append(default)


def _os_source(given: list[str], defaulted: list[str]) -> str:
    """Where the OS came from, for ``check``: the keys that chose it (saying which are
    Sextant's, since those once meant CoreOS) and what was left to the defaults."""
    if not given:
        return "the defaults"
    text = "from " + " / ".join(given)
    sextant = [k for k in given if not k.startswith("os.")]
    if sextant and len(sextant) == len(given):
        text += ", Sextant keys" if len(sextant) > 1 else ", a Sextant key"
    elif sextant:
        text += f", {' and '.join(sextant)} " + (
            "is a Sextant key" if len(sextant) == 1 else "are Sextant keys"
        )
    if defaulted:
        text += "; " + ", ".join(defaulted) + " by default"
    return text


def _impossible_os_version(r: Reader, name: str, version: str, path: Path) -> None:
    """Warn about a release version that cannot exist for the OS (the facts are above)."""
    if version == "current":
        return
    title = OS_NAMES[name]
    if _FEDORA_COREOS_VERSION.fullmatch(version):
        r.warn(
            path,
            f"{version} is a Fedora CoreOS version (Fedora.date.stream.respin); bootstrapperd "
            f"installs {title}, whose releases are numbered like 3815.2.0",
        )
        return
    parts = version.split(".")
    if len(parts) != 3:
        r.warn(
            path, f"{version} has {len(parts)} parts; {title} releases have three (like 3815.2.0)"
        )
        return
    if any(len(part) > 9 for part in parts):
        return  # no release has such a number, and int() of 5,000 digits is refused
    number = tuple(int(part) for part in parts)
    if name == "flatcar" and number < FLATCAR_FIRST:
        r.warn(
            path,
            f"{version} cannot be a Flatcar release: the first was 1688.5.3 (April 2018); lower "
            "numbers are CoreOS Container Linux's. Set os.version to current or a Flatcar "
            "release (like 3815.2.0)",
        )
    elif name == "coreos" and number[0] > COREOS_LAST_MAJOR:
        r.warn(
            path,
            f"{version} cannot be a CoreOS Container Linux release: it ended in May 2020, its "
            f"last releases numbered 2512 to {COREOS_LAST_MAJOR}; Flatcar continues the "
            "numbering (os.name: flatcar)",
        )


def _kubernetes_version(data: dict[str, Any], r: Reader, images: dict[str, str]) -> tuple[str, str]:
    """The version and where it came from: ``kubernetes_version`` (new); else the tag of
    Sextant's ``images.hyperkube``; else the default. The templates fetch kubelet and run the
    control plane at this version."""
    version = r.string(data, (), "kubernetes_version")
    if version is not None:
        version = version.strip()
        if not version.startswith("v"):
            version = "v" + version
        if not _K8S_VERSION.fullmatch(version):
            r.error(("kubernetes_version",), f"{version!r} is not a version like v1.31.4")
        else:
            _old_kubernetes(r, version, ("kubernetes_version",), "kubernetes_version")
        return version, "kubernetes_version"
    tag = images.get("hyperkube", "").rpartition(":")[2].split("_", 1)[0]
    if _K8S_VERSION.fullmatch(tag):
        _old_kubernetes(r, tag, ("images", "hyperkube"), "the tag of images.hyperkube")
        return tag, "the tag of images.hyperkube"
    return DEFAULT_KUBERNETES_VERSION, "the default"


def _old_kubernetes(r: Reader, version: str, path: Path, source: str) -> None:
    """Warn when the version is older than the node templates can run (OLDEST_KUBERNETES)."""
    found = re.match(r"v(\d{1,9})\.(\d{1,9})\.", version)
    if found is None or (int(found[1]), int(found[2])) >= OLDEST_KUBERNETES:
        return
    oldest = "v{}.{}".format(*OLDEST_KUBERNETES)
    r.warn(
        path,
        f"Kubernetes {version} ({source}) is older than {oldest}, the oldest the node templates "
        f"run: they start kubelet on containerd's CRI socket without the dockershim, removed in "
        f"{oldest}; set kubernetes_version to {oldest} or later",
    )


def _url(r: Reader, block: dict[str, Any], path: Path, key: str) -> str:
    url = _text(r, block, path, key)
    if not re.match(r"^(https?|file)://", url):
        r.error((*path, key), f"{url!r} is not an http(s):// or file:// URL")
    return url.rstrip("/")


def _downloads(data: dict[str, Any], r: Reader) -> Downloads:
    path: Path = ("downloads",)
    block = r.mapping(data, (), "downloads")
    _known_keys(r, block, path)
    fingerprint = r.string(block, path, "signing_key_fingerprint")
    if fingerprint is not None:
        fingerprint = fingerprint.replace(" ", "").upper()
        if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fingerprint):
            r.error((*path, "signing_key_fingerprint"), "expected a 40-hex-digit key fingerprint")
    registries: dict[str, str] = {}
    mirrors = r.mapping(block, path, "registries")
    for host, url in mirrors.items():
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            r.error((*path, "registries", host), f"{url!r} is not an http(s):// URL")
            continue
        registries[str(host)] = url.rstrip("/")
    return Downloads(
        kubernetes=_url(r, block, path, "kubernetes"),
        ipxe=_url(r, block, path, "ipxe"),
        signing_key=r.string(block, path, "signing_key"),
        signing_key_fingerprint=fingerprint,
        registries=MappingProxyType(registries),
    )


def _registry(data: dict[str, Any], r: Reader) -> RegistryConfig:
    path: Path = ("registry",)
    block = r.mapping(data, (), "registry")
    _known_keys(r, block, path)
    url = r.string(block, path, "url")
    default_mode = RegistryMode(keys.default_text("registry.mode"))
    if url is not None:
        default_mode = RegistryMode.EXTERNAL
    if block.get("mode") is False:  # unquoted off: YAML 1.1 reads it as false
        mode = RegistryMode.OFF
    else:
        mode = RegistryMode(_choice(r, block, path, "mode", default_mode.value))
    if url is not None and not re.match(r"^https?://", url):
        r.error((*path, "url"), f"{url!r} is not an http(s):// URL")
    if mode is RegistryMode.EXTERNAL and url is None:
        r.error((*path, "url"), "mode external needs the registry's URL")
    image = _text(r, block, path, "image")
    return RegistryConfig(mode=mode, url=url.rstrip("/") if url else None, image=image.strip())


def _string_list(data: dict[str, Any], r: Reader, key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value)]
    if not isinstance(value, list):
        r.error((key,), f"expected a list of strings, got {type_name(value)}")
        return []
    out = []
    for i, item in enumerate(value):
        if isinstance(item, (str, int, float)) and not isinstance(item, bool):
            out.append(str(item))
        else:
            r.error((key, i), f"expected a string, got {type_name(item)}")
    return out


def _images(data: dict[str, Any], r: Reader) -> dict[str, str]:
    if "images" not in data:
        r.warn(("images",), "not set; no container images will be packed or served")
    block = r.mapping(data, (), "images")
    images = {}
    for name, ref in block.items():
        if not isinstance(ref, str) or not ref.strip():
            r.error(("images", name), f"expected an image reference, got {type_name(ref)}")
            continue
        if not _IMAGE_REF.fullmatch(ref.strip()):
            r.warn(("images", name), f"{ref!r} does not look like an image reference")
        images[name] = ref.strip()
    return images


def _ssh_keys(data: dict[str, Any], r: Reader) -> list[str]:
    """Sextant wrote the keys as a YAML block (``|1+``) whose text is itself a YAML list."""
    value = data.get("ssh_authorized_keys")
    path: Path = ("ssh_authorized_keys",)
    if isinstance(value, str):
        # Sextant's form: the block's text is itself a YAML list, read under the same bounds as
        # the file (a bomb in a string is still a bomb). Anything else (plain lines, one key
        # per line, as in an authorized_keys file) is read line by line.
        inner: Any
        try:
            inner = load_with_lines(value)[0]
        except YAMLLimitError as exc:
            r.error(path, f"the YAML list inside the block is refused: {exc.message}")
            return []
        except YAMLSyntaxError:
            inner = None
        if not isinstance(inner, list):
            inner = [
                line.strip()
                for line in value.splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
        value = inner
    if value is None or value == []:
        r.warn(path, "no SSH keys; nobody will be able to log in to the nodes")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        r.error(path, f"expected a list of SSH public keys, got {type_name(value)}")
        return []
    keys = []
    for i, key in enumerate(value):
        if not isinstance(key, str):
            r.error(path, f"item {i + 1}: expected an SSH public key, got {type_name(key)}")
            continue
        key = key.strip()
        if not _SSH_KEY.fullmatch(key):
            r.warn(path, f"item {i + 1} ({key[:30]!r}) does not look like an SSH public key")
        keys.append(key)
    return keys


def _nodes(
    data: dict[str, Any],
    r: Reader,
    domain: str,
    network: IPv4Network | None,
    broadcast: IPv4Address | None,
    bootstrapper: IPv4Address | None,
    routers: list[IPv4Address],
    base: FilePath,
) -> list[Node]:
    if data.get("nodes") is None:
        r.error(("nodes",), "required key is missing (the cluster's machines)")
        return []
    items = r.sequence(data, (), "nodes")
    if isinstance(data["nodes"], list) and not items:
        r.error(("nodes",), "the list is empty; the cluster needs at least a master")
    nodes = []
    for i, raw in enumerate(items):
        path: Path = ("nodes", i)
        if not isinstance(raw, dict):
            r.error(path, f"expected a mapping with at least `mac`, got {type_name(raw)}")
            continue
        _known_keys(r, raw, path)
        mac_raw = r.text(raw, path, "mac")
        mac = canonical_mac(mac_raw) if mac_raw is not None else None
        if mac_raw is None:
            r.error((*path, "mac"), "required key is missing")
        elif mac is None:
            r.error((*path, "mac"), f"{mac_raw!r} is not a MAC address")
        hostname = _hostname(raw, r, path, mac)
        ip = r.ipv4(raw, path, "ip")
        if ip is not None and network is not None:
            if ip not in network:
                r.error((*path, "ip"), f"{ip} is outside subnet {network}")
            elif ip in (network.network_address, broadcast):
                r.error((*path, "ip"), f"{ip} is the subnet's network or broadcast address")
            elif ip == bootstrapper:
                r.error((*path, "ip"), f"{ip} is the bootstrapper's own address")
            elif ip in routers:
                r.error((*path, "ip"), f"{ip} is a router's address")
        ingress = _flag(r, raw, path, "ingress_label")
        if "ingresslabel" in raw:
            alias = _flag(r, raw, path, "ingresslabel")
            if "ingress_label" in raw and alias != ingress:
                r.warn((*path, "ingresslabel"), "disagrees with ingress_label; ingress_label wins")
            else:
                ingress = alias
        iface = r.string(raw, path, "flannel_iface")
        nodes.append(
            Node(
                index=i,
                mac=mac or "",
                hostname=hostname or "",
                fqdn=f"{hostname}.{domain}" if hostname else "",
                kube_master=_flag(r, raw, path, "kube_master"),
                etcd_member=_flag(r, raw, path, "etcd_member"),
                ceph_monitor=_flag(r, raw, path, "ceph_monitor"),
                ingress_label=ingress,
                flannel_iface=iface.strip() if iface and iface.strip() else None,
                ip=ip,
                bmc=_bmc(raw, r, path, base) if raw.get("bmc") is not None else None,
            )
        )
    return nodes


def _bmc(raw: dict[str, Any], r: Reader, node: Path, base: FilePath) -> BMCConfig | None:
    """``nodes[i].bmc``; None (with the errors said) when it cannot be used."""
    path: Path = (*node, "bmc")
    block = r.mapping(raw, node, "bmc")
    _known_keys(r, block, path)
    fields = {}
    for key in ("address", "username", "password_file"):
        value = r.string(block, path, key)
        if value is None or not value.strip():
            r.error((*path, key), "required key is missing")
        fields[key] = (value or "").strip()
    protocol = _choice(r, block, path, "protocol")
    port = r.integer(block, path, "port", 0, 1, 65535) or None
    ca = r.string(block, path, "ca_file")
    if ca is not None and protocol != "redfish":
        r.warn((*path, "ca_file"), "only Redfish uses it (protocol is ipmi)")
    if not all(fields.values()):
        return None
    password_file = base / fields["password_file"]
    return BMCConfig(
        address=fields["address"],
        protocol=protocol,
        port=port,
        username=fields["username"],
        password_file=password_file,
        insecure=_flag(r, block, path, "insecure"),
        ca_file=base / ca if ca else None,
    )


def _hostname(raw: dict[str, Any], r: Reader, path: Path, mac: str | None) -> str | None:
    given = r.string(raw, path, "cur_host_name")
    if given is None or not given.strip():
        return hostname_from_mac(mac) if mac else None
    name = given.strip()
    if name.lower() != name:
        r.warn((*path, "cur_host_name"), f"{name!r} has capitals; DNS names are used in lowercase")
        name = name.lower()
    if not is_dns_label(name):
        r.error(
            (*path, "cur_host_name"),
            f"{given!r} is not a valid hostname (letters, digits and dashes, one label)",
        )
    return name


def _cross_check(
    r: Reader,
    data: dict[str, Any],
    nodes: list[Node],
    bootstrapper: IPv4Address | None,
    routers: list[IPv4Address],
    pool: AddressPool,
    network: IPv4Network | None,
) -> None:
    """Checks across keys and nodes. They run even when other keys are wrong (the network or
    the bootstrapper unknown): what cannot be checked without them is skipped."""
    seen_mac: dict[str, int] = {}
    seen_host: dict[str, int] = {}
    seen_ip: dict[IPv4Address, int] = {}
    for node in nodes:
        path: Path = ("nodes", node.index)
        if node.mac and node.mac in seen_mac:  # "": not a MAC, reported already
            r.error((*path, "mac"), f"{node.mac} is also nodes[{seen_mac[node.mac]}]'s MAC")
        if node.mac:
            seen_mac.setdefault(node.mac, node.index)
        if node.hostname and node.hostname in seen_host:
            r.error(
                (*path, "cur_host_name") if "cur_host_name" in data["nodes"][node.index] else path,
                f"hostname {node.hostname!r} is also nodes[{seen_host[node.hostname]}]'s",
            )
        if node.hostname:
            seen_host.setdefault(node.hostname, node.index)
        if node.ip is not None:
            if node.ip in seen_ip:
                r.error((*path, "ip"), f"{node.ip} is also nodes[{seen_ip[node.ip]}]'s address")
            seen_ip.setdefault(node.ip, node.index)
    if nodes and not any(n.kube_master for n in nodes):
        r.error(("nodes",), "no node has kube_master: y; the cluster needs a Kubernetes master")
    members = sum(1 for n in nodes if n.etcd_member)
    if nodes and members == 0:
        r.error(("nodes",), "no node has etcd_member: y; the cluster needs etcd")
    elif members % 2 == 0 and members > 0:
        r.warn(
            ("nodes",),
            f"{members} etcd members: an even count tolerates no more failures than "
            f"{members - 1} and risks split votes; use an odd number",
        )
    for key, address in (("bootstrapper", bootstrapper), *(("routers", a) for a in routers)):
        if address is not None and address in pool:
            r.warn((key,), f"{address} lies inside the pool; it will never be handed out")
    if pool.size and pool.size < len([n for n in nodes if n.ip is None]):
        r.warn(("iplow",), f"the pool has {pool.size} addresses for more nodes than that")
    if network is not None and bootstrapper in (network.network_address, network.broadcast_address):
        r.error(("bootstrapper",), f"{bootstrapper} is the subnet's network or broadcast address")
