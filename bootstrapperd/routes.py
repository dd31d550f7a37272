"""The names every part of the boot path shares: the HTTP routes (the route table is built from
them, and so is every URL handed to a machine) and the names the TFTP server generates.

A URL a machine is given (by DHCP, in an iPXE or pxelinux script, in ``install.sh``, as a kernel
argument) and the route that answers it come from the same :class:`Route`, so a route renamed
here is renamed everywhere; ``tests/unit/test_routes.py`` checks that every URL a builder makes
is matched by its route. Nothing here imports the rest of the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address

__all__ = [
    "ADMIN_APPROVE",
    "ADMIN_MACHINES",
    "ADMIN_POWER",
    "ADMIN_REINSTALL",
    "ADMIN_ROUTES",
    "API",
    "API_NODE",
    "API_REGISTRY",
    "BOOT_FILE",
    "CA",
    "CHAIN",
    "CLOUD_CONFIG",
    "CLOUD_CONFIGS",
    "CSR",
    "HEALTHZ",
    "IGNITION",
    "INSTALL_SH",
    "IPXE_SCRIPT",
    "METRICS",
    "REPORT",
    "ROUTES",
    "STATIC",
    "STATUS",
    "TFTP_CHAIN",
    "TFTP_IPXE_DIR",
    "TFTP_PXELINUX_DEFAULT",
    "TFTP_PXELINUX_DIR",
    "TFTP_STATIC_DIR",
    "TLS",
    "Route",
    "URLs",
    "base_url",
]

_PLACEHOLDER = re.compile(r"\{(\w+)(?::[^{}]+)?\}")


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP route: its name (the route table's, the metrics' label, and the timeline event
    kind of the requests it answers), its method and its aiohttp path pattern."""

    name: str
    method: str
    pattern: str

    @property
    def parts(self) -> tuple[str, ...]:
        """The pattern's placeholders, in order (``/tls/{mac}/{name}`` → ``mac``, ``name``)."""
        return tuple(_PLACEHOLDER.findall(self.pattern))

    def path(self, **parts: str) -> str:
        """The pattern with every placeholder filled: ``IPXE_SCRIPT.path(mac=…)``."""
        if set(parts) != set(self.parts):
            raise ValueError(f"route {self.name} takes {self.parts}, not {tuple(parts)}")
        return _PLACEHOLDER.sub(lambda match: parts[match.group(1)], self.pattern)


# The operator's side.
STATUS = Route("status", "GET", "/")
HEALTHZ = Route("healthz", "GET", "/healthz")
METRICS = Route("metrics", "GET", "/metrics")
API = Route("api", "GET", "/api/v1/nodes")
API_NODE = Route("api-node", "GET", "/api/v1/nodes/{mac}")
API_REGISTRY = Route("api-registry", "GET", "/api/v1/registry")
# What machines fetch, in boot order.
BOOT_FILE = Route("boot-file", "GET", "/boot/{name}")
CHAIN = Route("chain", "GET", "/boot.ipxe")
IPXE_SCRIPT = Route("ipxe-script", "GET", "/ipxe/{mac}")
STATIC = Route("static", "GET", "/static/{path:.+}")
INSTALL_SH = Route("install.sh", "GET", "/install.sh")
CLOUD_CONFIG = Route("cloud-config", "GET", "/cloud-config/{mac}")
CLOUD_CONFIGS = Route("cloud-configs", "GET", "/cloud-configs/{mac}")  # Sextant's URL
IGNITION = Route("ignition", "GET", "/ignition/{mac}")
CA = Route("ca", "GET", "/tls/ca.pem")
TLS = Route("tls", "GET", "/tls/{mac}/{name}")
REPORT = Route("report", "POST", "/api/v1/nodes/{mac}/report")
CSR = Route("csr", "POST", "/api/v1/nodes/{mac}/csr/{which}")
# The operator's commands: only on the admin channel (a Unix socket only the bootstrapper's
# root can use); the cluster-facing listener answers each with 403.
ADMIN_MACHINES = Route("admin-machines", "GET", "/api/v1/admin/machines")
ADMIN_REINSTALL = Route("admin-reinstall", "POST", "/api/v1/admin/machines/{mac}/reinstall")
ADMIN_APPROVE = Route("admin-approve", "POST", "/api/v1/admin/machines/{mac}/approve")
ADMIN_POWER = Route("admin-power", "POST", "/api/v1/admin/power/{action}")

ROUTES = (
    STATUS,
    HEALTHZ,
    METRICS,
    API,
    API_NODE,
    API_REGISTRY,
    REPORT,
    CSR,
    BOOT_FILE,
    CHAIN,
    IPXE_SCRIPT,
    INSTALL_SH,
    CLOUD_CONFIG,
    CLOUD_CONFIGS,
    IGNITION,
    CA,
    TLS,
    STATIC,
)
ADMIN_ROUTES = (ADMIN_MACHINES, ADMIN_REINSTALL, ADMIN_APPROVE, ADMIN_POWER)

# Names the TFTP server generates (a file of the same name in tftpboot/ wins) and the
# directory it serves the image mirror under.
TFTP_CHAIN = "boot.ipxe"
TFTP_IPXE_DIR = "ipxe/"  # ipxe/<mac>, optional .ipxe
TFTP_PXELINUX_DIR = "pxelinux.cfg/"  # pxelinux.cfg/01-<mac with dashes>
TFTP_PXELINUX_DEFAULT = TFTP_PXELINUX_DIR + "default"
TFTP_STATIC_DIR = "static/"  # tftpboot/static, else the image mirror


def base_url(address: IPv4Address | str, http_port: int) -> str:
    """``http://address`` (``:port`` when not 80): the root of the bootstrapper's HTTP server."""
    return f"http://{address}" if http_port == 80 else f"http://{address}:{http_port}"


@dataclass(frozen=True, slots=True)
class URLs:
    """Every URL handed to a machine, from the base URL it reaches the server by.

    The base may also be a script's variable (``URLs("$SERVER")``) and a MAC argument a
    script's expansion (``"$MAC"``, ``"${mac:hexhyp}"``): the URL is then the script's to
    complete, and still spelled here.
    """

    base: str  # "http://10.77.0.1" (":port" when not 80), no trailing slash

    def ipxe_script(self, mac: str) -> str:
        return self.base + IPXE_SCRIPT.path(mac=mac)

    def boot_file(self, name: str) -> str:
        return self.base + BOOT_FILE.path(name=name)

    def static(self, path: str) -> str:
        """A file of the image mirror (``path`` relative to ``html/static``)."""
        return self.base + STATIC.path(path=path)

    def install_sh(self) -> str:
        return self.base + INSTALL_SH.path()

    def ignition(self, mac: str) -> str:
        """The machine's Ignition config: ``/ignition/<mac with dashes>.json``."""
        return self.base + IGNITION.path(mac=mac.replace(":", "-") + ".json")

    def cloud_config(self, mac: str) -> str:
        """The machine's cloud-config: ``/cloud-config/<mac>.yml``."""
        return self.base + CLOUD_CONFIG.path(mac=mac + ".yml")

    def report(self, mac: str) -> str:
        return self.base + REPORT.path(mac=mac)

    def csr(self, mac: str, which: str) -> str:
        return self.base + CSR.path(mac=mac, which=which)
