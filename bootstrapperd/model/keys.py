"""The cluster description's keys, declared once: name, value form, default, origin and meaning.

The loader takes its known keys and documented defaults from this table;
``python -m bootstrapperd.model.keygen`` writes ``config/cluster-desc.schema.json`` and the key
tables of ``docs/cluster-description.md`` from it (``--check``: only say whether they are stale).

A key's path is its dotted name from the top (``dhcp.router_advertisement.interval``); the keys
of a list's items follow ``[]`` (``nodes[].mac``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType

from .types import DHCPMode, InstallPolicy, RegistryMode, UnknownMachines

Value = str | int | bool


class Origin(StrEnum):
    """Where a key comes from: Sextant's format (same meaning there) or bootstrapperd's own."""

    SEXTANT = "Sextant"
    NEW = "new"


class Form(Enum):
    """The form a key's value takes: what the schema accepts and the docs' Type column say."""

    BOOL = "bool"  # a YAML 1.1 boolean: y/n, yes/no, on/off, true/false, 0/1
    IPV4 = "ipv4"
    IPV4_LIST = "ipv4-list"  # a list, one address, or one string of addresses and commas
    TEXT = "text"  # any scalar, read as written
    TEXT_LIST = "text-list"  # a list of scalars, or one scalar
    STRING = "string"  # a string only (a URL, a file), matching `pattern` if the key has one
    VERSION = "version"  # `current` or a release number
    MAC = "mac"
    NETMASK = "netmask"  # dotted, or a prefix length
    NETWORK = "network"  # an IPv4 network with its prefix
    LEASE = "lease"  # infinite, seconds, or units (1h30m)
    CHOICE = "choice"  # one of `choices`, any letter case
    INTEGER = "integer"  # a whole number from `low` to `high`, or a string of digits
    SSH_KEYS = "ssh-keys"  # a list of keys, one key, or Sextant's block holding a YAML list
    STRING_MAP = "string-map"  # free-form names → strings matching `pattern`
    BLOCK = "block"  # a mapping of the nested `keys`
    BLOCK_LIST = "block-list"  # a list of mappings of the nested `keys`
    BOOL_OR_BLOCK = "bool-or-block"  # a boolean (the first nested key) or a mapping
    ANY = "any"  # anything (an ignored key)


# The docs tables of docs/cluster-description.md, in the order they appear there.
SECTIONS = ("network", "dns", "kubernetes", "os", "downloads", "nodes", "pack", "ignored")


@dataclass(frozen=True)
class Key:
    """One key of the cluster description.

    ``doc`` is Markdown (code spans, links); the schema gets it as plain text. ``default`` is what
    the loader uses when the key is absent or empty; ``default_doc`` replaces it in the docs when
    the default depends on other keys (the schema then gives no ``default``).
    """

    name: str
    form: Form
    origin: Origin
    doc: str
    default: Value | None = None
    default_doc: str = ""
    required: bool = False
    choices: tuple[str, ...] = ()  # CHOICE: the accepted values
    known: tuple[str, ...] = ()  # values the loader knows; another one is warned about
    low: int = 0  # INTEGER: the range
    high: int = 0
    pattern: str = ""  # STRING, STRING_MAP values, INTEGER digit strings: a schema regex
    type_doc: str = ""  # the docs' Type column, when the form's own name is too vague
    keys: tuple[Key, ...] = ()  # BLOCK, BLOCK_LIST, BOOL_OR_BLOCK: the nested keys
    item_doc: str = ""  # BLOCK_LIST, STRING_MAP: what each item (value) is
    alias_of: str = ""  # another spelling of this sibling key
    ignored: str = ""  # accepted but not used: the warning the loader gives
    section: str = ""  # the docs table; nested keys are in their block's


SEXTANT = Origin.SEXTANT
NEW = Origin.NEW
CHANNELS = ("stable", "beta", "alpha", "lts", "edge")
URL_PATTERN = "^(https?|file)://"
HTTP_URL_PATTERN = "^https?://"

# fmt: off
TOP: tuple[Key, ...] = (
    # ---- network, DHCP and HTTP ------------------------------------------------------------------
    Key("bootstrapper", Form.IPV4, SEXTANT, required=True, section="network",
        doc="The bootstrapper's own address: DHCP, TFTP, DNS, HTTP and the image registry are "
            "served here. Outside `subnet`: warning (machines reach DHCP only through a relay). "
            "The subnet's network or broadcast address: error."),
    Key("subnet", Form.IPV4, SEXTANT, required=True, section="network",
        doc="Network address of the machines' LAN, e.g. `10.10.14.0`. Host bits set: warning, "
            "the network address is used."),
    Key("netmask", Form.NETMASK, SEXTANT, required=True, section="network",
        doc="Netmask of `subnet`: `255.255.255.0`, or a prefix length `24` or `/24`."),
    Key("broadcast", Form.IPV4, SEXTANT, section="network",
        default_doc="subnet's broadcast",
        doc="Broadcast address given to DHCP clients. A different value is used as given, with a "
            "warning."),
    Key("iplow", Form.IPV4, SEXTANT, section="network",
        doc="First address of the dynamic DHCP pool, inclusive. Give both `iplow` and `iphigh` "
            "or neither; with neither, there is a warning and only nodes with `ip` get "
            "addresses."),
    Key("iphigh", Form.IPV4, SEXTANT, section="network",
        doc="Last address of the dynamic DHCP pool, inclusive. `iplow` ≤ `iphigh`; both inside "
            "`subnet` and not its network or broadcast address."),
    Key("routers", Form.IPV4_LIST, SEXTANT, section="network",
        doc="Default gateway(s) given to DHCP clients; each must be inside `subnet`. Not set: "
            "warning, clients get no gateway."),
    # 3600: dnsmasq's own default when a dhcp-range gives none
    Key("lease", Form.LEASE, SEXTANT, default=3600, section="network",
        doc="DHCP lease time: `infinite`, seconds (`3600`, 1 h), or units w/d/h/m/s combined "
            "(`30m`, `12h`, `1h30m`, `7d`, `1w`); see [Lease times](#lease-times-lease). Under "
            "120 seconds: warning."),
    Key("start_pxe", Form.BOOL, SEXTANT, default=True, section="network",
        doc="Serve DHCP/PXE (in Sextant, `n` meant that dnsmasq was not started). Here `n` makes "
            "`dhcp.mode` default to `off`."),
    Key("set_ntp", Form.BOOL, SEXTANT, default=False, section="network",
        doc="Sextant announced the bootstrapper as NTP server over DHCP and ran an NTP container."),
    Key("dhcp", Form.BLOCK, NEW, section="network",
        doc="How DHCP (and IPv6 router advertisements) are served.",
        keys=(
            Key("mode", Form.CHOICE, NEW, default=DHCPMode.FULL.value,
                choices=tuple(m.value for m in DHCPMode),
                default_doc="`full` (`off` if `start_pxe: n`)",
                doc="`full`: addresses and PXE boot. `proxy`: PXE boot only, beside another DHCP "
                    "server. `off`: no DHCP. If it is set and `start_pxe: n`, `dhcp.mode` wins, "
                    "with a warning unless it is `off`."),
            Key("unknown_machines", Form.CHOICE, NEW, default=UnknownMachines.ALLOW.value,
                choices=tuple(u.value for u in UnknownMachines),
                doc="What DHCP does for a MAC that is not in `nodes`: `allow` (serve it; it "
                    "installs as a worker), `approve` (it is `discovered` and waits in iPXE "
                    "until `bootstrapperd approve MAC`, then installs as a worker) or `ignore`."),
            Key("router_advertisement", Form.BOOL_OR_BLOCK, NEW,
                default_doc="enabled in mode `full`",
                doc="IPv6 Router Advertisements on the serving interface, so that iPXE and Linux "
                    "do not wait for IPv6 autoconfiguration at link-up "
                    "([docs/dhcp.md](dhcp.md#ipv6-router-advertisements)). A boolean is `enabled` "
                    "with the defaults below; an empty value gives the defaults.",
                keys=(
                    Key("enabled", Form.BOOL, NEW, default=True,
                        default_doc="`y` if `dhcp.mode` is `full`, `n` if `proxy` or `off`",
                        doc="Send RAs."),
                    Key("prefix", Form.STRING, NEW,
                        pattern=r"^\s*[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*/0*64\s*$", type_doc="IPv6 /64",
                        doc="A /64 advertised for SLAAC (on-link and autonomous flags), e.g. "
                            "`fd77::/64`; without one, the RA carries no prefix. Not an IPv6 "
                            "prefix, not a /64, link-local or multicast: error. Host bits set: "
                            "warning, the /64 is used."),
                    # RFC 4861: MaxRtrAdvInterval defaults to 600 s and is at most 1800 s
                    Key("interval", Form.INTEGER, NEW, default=600, low=10, high=1800,
                        pattern=r"^\s*0*(1[0-7][0-9][0-9]|1800|[1-9][0-9][0-9]|[1-9][0-9])\s*$",
                        doc="Seconds between unsolicited RAs (the most; each wait is 75–100 % of "
                            "it). A digit string also works."),
                ),
            ),
        ),
    ),
    Key("http_port", Form.INTEGER, NEW, default=80, low=1, high=65535, section="network",
        doc="TCP port of the HTTP server. A digit string (`\"8080\"`) also works. `bootstrapperd "
            "serve --http-port` overrides it."),
    Key("install_policy", Form.CHOICE, NEW, default=InstallPolicy.ONCE.value,
        choices=tuple(p.value for p in InstallPolicy), section="network",
        doc="What a machine that network-boots again after its install gets: `once` (the "
            "default: an `installed` machine boots its own disk; `bootstrapperd reinstall MAC` "
            "installs it again) or `always` (every network boot installs: Sextant's behaviour, "
            "for disposable labs). See docs/lifecycle.md."),
    Key("kubernetes_version", Form.TEXT, NEW, default="v1.31.4", section="network",
        default_doc="tag of `images.hyperkube`, else `v1.31.4`",
        doc="The Kubernetes version the nodes run: kubelet (fetched from the bootstrapper's "
            "mirror, `static/kubernetes/<version>/kubelet`) and the control-plane images. A "
            "leading `v` is added when missing."),
    # ---- DNS -------------------------------------------------------------------------------------
    Key("nameservers", Form.IPV4_LIST, SEXTANT, section="dns",
        default_doc="`[bootstrapper]`",
        doc="DNS servers given to DHCP clients. Not set: warning, the bootstrapper is used."),
    Key("upstreamnameservers", Form.IPV4_LIST, SEXTANT, section="dns",
        doc="Where names outside the cluster are resolved (Sextant: dnsmasq `server=` lines)."),
    Key("domainname", Form.TEXT, SEXTANT, default="k8s.internal", type_doc="DNS name",
        section="dns",
        doc="DNS domain of the nodes: a node's name is `<hostname>.<domainname>`. Lowercased; a "
            "trailing dot is removed. Not set: warning."),
    Key("dockerdomain", Form.TEXT, SEXTANT, default="bootstrapper", type_doc="DNS name",
        section="dns",
        doc="Name of the bootstrapper's image registry (`<dockerdomain>:5000`). Lowercased. Not "
            "set: warning."),
    # ---- Kubernetes ------------------------------------------------------------------------------
    Key("k8s_service_cluster_ip_range", Form.NETWORK, SEXTANT, default="10.100.0.0/24",
        section="kubernetes",
        doc="Kubernetes service network. Give the prefix (`/24`): without one, the network is a "
            "single address. Host bits set: warning. Absent: warning."),
    Key("k8s_cluster_dns", Form.IPV4, SEXTANT, section="kubernetes",
        default_doc="range's address + 10 (`10.100.0.10`)",
        doc="Cluster DNS service address. Outside `k8s_service_cluster_ip_range`: warning. "
            "Absent: warning."),
    Key("k8s_cluster_domain", Form.TEXT, SEXTANT, default="cluster.local", type_doc="DNS name",
        section="kubernetes",
        doc="Kubernetes cluster domain (the API server certificate's names). Lowercased; a "
            "trailing dot is removed. Listed with Sextant's keys, though it is not in Sextant's "
            "Go `Cluster` struct or its sample files."),
    Key("flannel_backend", Form.CHOICE, SEXTANT, default="host-gw",
        choices=("host-gw", "udp", "vxlan"), section="kubernetes",
        doc="Flannel backend. Absent: warning."),
    Key("ingress_hostnetwork", Form.BOOL, SEXTANT, default=False, section="kubernetes",
        doc="Run the ingress controller on the host network."),
    Key("kube_master_ip", Form.TEXT_LIST, SEXTANT, section="kubernetes",
        doc="Extra IP addresses for the API server certificate. One string also works. An entry "
            "that is not an IPv4 address gets a warning and is used as a DNS name."),
    Key("kube_master_dns", Form.TEXT_LIST, SEXTANT, section="kubernetes",
        doc="Extra DNS names for the API server certificate."),
    Key("images", Form.STRING_MAP, SEXTANT, pattern=r"\S", type_doc="mapping name → image",
        section="kubernetes",
        item_doc="Each value is an image reference (`registry/name:tag` or `@digest`): non-empty "
                 "text; an odd-looking reference gets a warning.",
        doc="Container images to pack and serve, e.g. `pause: \"registry.k8s.io/pause:3.9\"`. "
            "Names are free-form. Absent: warning, no images are packed or served."),
    Key("ceph", Form.BLOCK, SEXTANT, section="kubernetes",
        doc="Ceph settings.",
        keys=(
            Key("zap_and_start_osd", Form.BOOL, SEXTANT, default=False,
                doc="Wipe every disk at install and start Ceph OSDs on them."),
            Key("osd_journal_size", Form.INTEGER, SEXTANT, default=5000, low=1, high=10**9,
                type_doc="int 1–10⁹",
                doc="Ceph OSD journal size (MB). A digit string also works."),
        ),
    ),
    # ---- operating system ------------------------------------------------------------------------
    Key("os", Form.BLOCK, NEW, section="os",
        doc="The operating system installed on the nodes. `channel` and `version` here win over "
            "`coreos_channel` and `coreos_version`.",
        keys=(
            Key("name", Form.CHOICE, NEW, default="flatcar", choices=("flatcar", "coreos"),
                doc="`flatcar` (Flatcar Container Linux) or `coreos`."),
            Key("channel", Form.TEXT, NEW, default="stable", known=CHANNELS,
                default_doc="`coreos_channel`, else `stable`",
                doc="Release channel. Lowercased."),
            Key("version", Form.VERSION, NEW, default="current",
                default_doc="`coreos_version`, else `current`",
                doc="`current` or a release version such as `3815.2.0`. Anything else is an "
                    "error."),
            Key("mirror", Form.STRING, NEW, pattern=URL_PATTERN, type_doc="URL",
                default_doc="public release server",
                doc="Base URL that replaces the public release server when packing images. Must "
                    "start with `http://`, `https://` or `file://` (lowercase, no leading "
                    "spaces)."),
        ),
    ),
    Key("coreos_channel", Form.TEXT, SEXTANT, default="stable", known=CHANNELS, section="os",
        doc="Release channel, used when `os.channel` is absent. Same rules as `os.channel`."),
    Key("coreos_version", Form.VERSION, SEXTANT, default="current", section="os",
        doc="Release version such as `1122.2.0`, or `current`; quote it. Used when `os.version` "
            "is absent. Same rules as `os.version`."),
    Key("coreos", Form.BLOCK, SEXTANT, section="os",
        doc="Update and reboot policy (locksmith) of the nodes.",
        keys=(
            Key("reboot_strategy", Form.CHOICE, SEXTANT, default="etcd-lock",
                choices=("etcd-lock", "reboot", "best-effort", "off"),
                doc="How nodes reboot after an update."),
            Key("start_time", Form.TEXT, SEXTANT, default="03:00",
                doc="Start of the daily reboot window, e.g. `'03:00'`. Unquoted `3:00` is read "
                    "as written."),
            Key("time_length", Form.TEXT, SEXTANT, default="3h",
                doc="Length of the reboot window, e.g. `3h`."),
        ),
    ),
    Key("ssh_authorized_keys", Form.SSH_KEYS, SEXTANT, section="os",
        doc="SSH public keys allowed to log in to the nodes: Sextant's block (`|1+`) whose text "
            "is itself a YAML list, a YAML list, or a single key; see "
            "[`ssh_authorized_keys`](#ssh_authorized_keys). None: warning, nobody can log in."),
    # ---- nodes -----------------------------------------------------------------------------------
    Key("nodes", Form.BLOCK_LIST, SEXTANT, required=True, section="nodes",
        item_doc="Each item is one machine, named by its MAC address.",
        doc="The cluster's machines, one mapping per machine. At least one node needs "
            "`kube_master` and one `etcd_member`; an empty list is an error.",
        keys=(
            Key("mac", Form.MAC, SEXTANT, required=True,
                doc="The machine's MAC address, stored lowercase with colons; see [MAC "
                    "addresses](#mac-addresses). Must be unique."),
            Key("cur_host_name", Form.TEXT, SEXTANT, type_doc="hostname",
                default_doc="MAC with dashes (`00-25-90-c0-f7-80`)",
                doc="One DNS label: letters, digits and dashes, at most 63 characters. Capitals "
                    "are lowercased, with a warning. Empty means the default. Must be unique."),
            Key("ip", Form.IPV4, NEW,
                default_doc="from the pool",
                doc="A static DHCP reservation. It must be inside `subnet`, must not be the "
                    "network, broadcast, bootstrapper or a router address, and must be unique. "
                    "It may lie inside the pool; it is then reserved."),
            Key("kube_master", Form.BOOL, SEXTANT, default=False,
                doc="Runs the Kubernetes control plane. At least one node must have it."),
            Key("etcd_member", Form.BOOL, SEXTANT, default=False,
                doc="Runs an etcd member. At least one node must have it; an even count gets a "
                    "warning."),
            Key("ceph_monitor", Form.BOOL, SEXTANT, default=False,
                doc="Runs a Ceph monitor."),
            Key("ingress_label", Form.BOOL, SEXTANT, default=False,
                doc="Runs the ingress controller. This is the spelling in Sextant's sample files."),
            Key("ingresslabel", Form.BOOL, SEXTANT, default=False, alias_of="ingress_label",
                doc="The name Sextant's Go code read. Used when `ingress_label` is absent. If "
                    "both are present and disagree, `ingress_label` wins, with a warning."),
            Key("flannel_iface", Form.TEXT, SEXTANT,
                default_doc="flannel's choice",
                doc="Network interface flannel uses on this node, e.g. `eth1`. Blank means the "
                    "default."),
            Key("bmc", Form.BLOCK, NEW,
                doc="The machine's BMC, for `bootstrapperd power` and `reinstall --power-cycle` "
                    "(docs/lifecycle.md, docs/power.md). The password is never in the "
                    "description: `password_file` names a file the daemon's user can read.",
                keys=(
                    Key("address", Form.TEXT, NEW, required=True, type_doc="host or IP",
                        doc="The BMC's address (on the management network)."),
                    Key("protocol", Form.CHOICE, NEW, default="ipmi",
                        choices=("ipmi", "redfish"),
                        doc="`ipmi` (IPMI 2.0 over LAN, RMCP+) or `redfish` (HTTPS)."),
                    Key("port", Form.INTEGER, NEW, low=1, high=65535,
                        default_doc="623 (ipmi), 443 (redfish)",
                        doc="The BMC's port."),
                    Key("username", Form.TEXT, NEW, required=True,
                        doc="The BMC user."),
                    Key("password_file", Form.TEXT, NEW, required=True, type_doc="path",
                        doc="A file holding the BMC user's password (its first line), readable "
                            "by the daemon's user; relative to the description's directory."),
                    Key("insecure", Form.BOOL, NEW, default=False,
                        doc="Redfish: accept the BMC's TLS certificate unverified."),
                    Key("ca_file", Form.TEXT, NEW, type_doc="path",
                        doc="Redfish: the CA that signed the BMC's certificate."),
                ),
            ),
        ),
    ),
    # ---- Sextant's pack-side keys: loaded into the model, unused ---------------------------------
    Key("os_name", Form.TEXT, SEXTANT, section="pack",
        doc="Sextant: `CentOS` or `CoreOS`. bootstrapperd installs Flatcar (or CoreOS); any "
            "other value, without an `os` block, gets a warning."),
    Key("centos_version", Form.TEXT, SEXTANT, section="pack",
        doc="CentOS version of Sextant's CentOS installs; quote it (`\"7.2.1511\"`)."),
    Key("mirror_site", Form.TEXT, SEXTANT, section="pack",
        doc="CentOS mirror URL."),
    Key("download_kernel", Form.BOOL, SEXTANT, default=False, section="pack",
        doc="Download a CentOS kernel."),
    Key("set_gpu", Form.BOOL, SEXTANT, default=False, section="pack",
        doc="Build GPU drivers."),
    Key("gpu_drivers_version", Form.TEXT, SEXTANT, section="pack",
        doc="NVIDIA driver version; quote it (`\"375.26\"`)."),
    Key("set_yum_repo", Form.TEXT, SEXTANT, section="pack",
        doc="CentOS yum repository host."),
    # ---- Sextant's keys that bootstrapperd ignores -----------------------------------------------
    Key("nginx_root_dir", Form.ANY, SEXTANT,
        ignored="bootstrapperd serves HTTP itself; nginx_root_dir is not used", section="ignored",
        doc="Sextant's nginx document root."),
    # ---- downloads and the registry --------------------------------------------------------------
    Key("downloads", Form.BLOCK, NEW, section="downloads",
        doc="Where `bootstrapperd-pack` downloads from (all optional; its command-line options "
            "win). Only pack reads it.",
        keys=(
            Key("kubernetes", Form.STRING, NEW, default="https://dl.k8s.io/release",
                pattern=URL_PATTERN, type_doc="URL",
                doc="Base URL of the Kubernetes binaries: "
                    "`<base>/<version>/bin/linux/amd64/<binary>` and its `.sha256`."),
            Key("ipxe", Form.STRING, NEW, default="https://boot.ipxe.org", pattern=URL_PATTERN,
                type_doc="URL",
                doc="Base URL of `undionly.kpxe` and `ipxe.efi`, used only when the laptop has "
                    "no `ipxe` package."),
            Key("signing_key", Form.STRING, NEW, type_doc="URL or file",
                default_doc="the OS vendor's published key",
                doc="OpenPGP public key of the OS images (armored or binary). A relative file is "
                    "relative to the description."),
            Key("signing_key_fingerprint", Form.STRING, NEW, pattern="^[0-9A-Fa-f ]{40,80}$",
                type_doc="40 hex digits",
                default_doc="the OS vendor's (Flatcar `F88CFEDEFF29A5B4D9523864E25D9AED0593B34A`)",
                doc="The key's primary fingerprint; spaces allowed. A key from a URL must match "
                    "a pinned fingerprint."),
            Key("registries", Form.STRING_MAP, NEW, pattern=HTTP_URL_PATTERN,
                doc="Registry host as written in image references (`docker.io`, `quay.io`) → "
                    "base URL to pull from instead (an internal mirror)."),
        ),
    ),
    Key("registry", Form.BLOCK, NEW, section="downloads",
        doc="How `bootstrapperd serve` provides the container registry nodes pull from at "
            "`<dockerdomain>:5000`.",
        keys=(
            Key("mode", Form.CHOICE, NEW, default=RegistryMode.AUTO.value,
                choices=tuple(m.value for m in RegistryMode),
                default_doc="`auto` (`external` when `url` is set)",
                doc="`auto`: a Docker engine if one answers, else a `registry`/`docker-registry` "
                    "binary on PATH. `docker`, `binary`: that one. `external`: push to `url`. "
                    "`off`: no registry."),
            Key("url", Form.STRING, NEW, pattern=HTTP_URL_PATTERN, type_doc="URL",
                doc="An external registry's base URL: bootstrapperd pushes the images there and "
                    "starts none. Required by `external`."),
            Key("image", Form.TEXT, NEW, default="docker.io/library/registry:2.8.3",
                type_doc="image reference",
                doc="The registry image pack fetches (into `images/registry.tar`) and the Docker "
                    "mode runs."),
        ),
    ),
)
# fmt: on


def walk(keys: Sequence[Key] = TOP, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """Every key with its path, depth first, in the table's order."""
    for key in keys:
        path = f"{prefix}.{key.name}" if prefix else key.name
        yield path, key
        inner = f"{path}[]" if key.form is Form.BLOCK_LIST else path
        yield from walk(key.keys, inner)


INDEX: Mapping[str, Key] = MappingProxyType(dict(walk()))


def find(path: str) -> Key:
    """The key at ``path`` (``dhcp.mode``, ``nodes[].mac``). KeyError if the table has none."""
    return INDEX[path]


def dotted(path: Sequence[str | int], key: str = "") -> str:
    """The table path of a place in the parsed tree: ``("nodes", 3), "mac"`` → ``nodes[].mac``."""
    out = ""
    for part in (*path, key) if key else path:
        if isinstance(part, int):
            out += "[]"
        else:
            out = f"{out}.{part}" if out else part
    return out


def block(path: str) -> tuple[Key, ...]:
    """The keys of the mapping at ``path``: ``""`` is the top, ``nodes[]`` a node."""
    if not path:
        return TOP
    if path.endswith("[]"):
        owner = find(path[:-2])
        if owner.form is not Form.BLOCK_LIST:
            raise KeyError(path)
        return owner.keys
    owner = find(path)
    if owner.form not in (Form.BLOCK, Form.BOOL_OR_BLOCK):
        raise KeyError(path)
    return owner.keys


def names(path: str) -> tuple[str, ...]:
    """The keys the mapping at ``path`` reads (not the ignored ones), in the table's order."""
    return tuple(key.name for key in block(path) if not key.ignored)


def ignored(path: str) -> Mapping[str, str]:
    """The keys the mapping at ``path`` accepts but ignores, each with the warning it gets."""
    return MappingProxyType({key.name: key.ignored for key in block(path) if key.ignored})


def default_text(path: str) -> str:
    """The documented default of a text key."""
    value = find(path).default
    if not isinstance(value, str):
        raise TypeError(f"{path}: the table's default is {value!r}, not text")
    return value


def default_int(path: str) -> int:
    """The documented default of a whole-number key."""
    value = find(path).default
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{path}: the table's default is {value!r}, not a whole number")
    return value


def default_flag(path: str) -> bool:
    """The documented default of a boolean key."""
    value = find(path).default
    if not isinstance(value, bool):
        raise TypeError(f"{path}: the table's default is {value!r}, not a boolean")
    return value
