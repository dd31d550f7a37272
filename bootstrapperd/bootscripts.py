"""Boot scripts rendered from the model: the per-machine iPXE script, the iPXE chain script, and
pxelinux configurations for legacy setups.

What a machine boots is decided here once (``boot_spec``): the OS kernel and initrd in the
image mirror and the kernel arguments that point the live OS at its configuration. The TFTP
server serves these as files; the HTTP server serves the same scripts. Sites override the
wording with templates later; the facts come from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from .model import ClusterModel
from .model.types import UnknownMachines

__all__ = [
    "BootSpec",
    "base_url",
    "boot_spec",
    "chain_script",
    "ipxe_script",
    "pxelinux_config",
    "pxelinux_default",
]

# File names in the image mirror, per OS (as the releases publish them).
PXE_FILES = {
    "flatcar": ("flatcar_production_pxe.vmlinuz", "flatcar_production_pxe_image.cpio.gz"),
    "coreos": ("coreos_production_pxe.vmlinuz", "coreos_production_pxe_image.cpio.gz"),
}
CONSOLE_ARGS = ("console=tty0", "console=ttyS0,115200n8")


@dataclass(frozen=True, slots=True)
class BootSpec:
    """What one machine boots: paths are relative to the mirror root (``html/static``)."""

    mac: str  # canonical
    hostname: str
    kernel: str
    initrd: str
    args: tuple[str, ...]


def base_url(address: IPv4Address, http_port: int) -> str:
    """``http://address`` (``:port`` when not 80): the root of the bootstrapper's HTTP server."""
    return f"http://{address}" if http_port == 80 else f"http://{address}:{http_port}"


def _pxe_paths(model: ClusterModel) -> tuple[str, str]:
    """The OS kernel and initrd, relative to the mirror root."""
    os = model.os
    directory = f"{os.name}/{os.channel}/{os.version}"
    kernel, initrd = PXE_FILES[os.name]
    return f"{directory}/{kernel}", f"{directory}/{initrd}"


def boot_spec(model: ClusterModel, mac: str, server: str) -> BootSpec | None:
    """The boot of machine ``mac`` (canonical) from the server at ``server`` (a base URL);
    None for a machine the model does not know when unknown machines are ignored."""
    node = model.node(mac)
    if node is None and model.dhcp.unknown_machines is UnknownMachines.IGNORE:
        return None
    kernel, initrd = _pxe_paths(model)
    config: tuple[str, ...]
    if model.os.name == "flatcar":
        config = (
            "flatcar.first_boot=1",
            f"ignition.config.url={server}/ignition/{mac.replace(':', '-')}.json",
        )
    else:
        config = (f"cloud-config-url={server}/install.sh",)
    return BootSpec(
        mac=mac,
        hostname=model.hostname_for_mac(mac),
        kernel=kernel,
        initrd=initrd,
        args=(*config, *CONSOLE_ARGS),
    )


def ipxe_script(spec: BootSpec, server: str) -> str:
    """The per-machine iPXE script: kernel and initrd over HTTP from the image mirror."""
    initrd_name = spec.initrd.rsplit("/", 1)[-1]
    args = " ".join(spec.args)
    return (
        "#!ipxe\n"
        f"# bootstrapperd: {spec.hostname} ({spec.mac})\n"
        f"kernel {server}/static/{spec.kernel} initrd={initrd_name} {args}\n"
        f"initrd {server}/static/{spec.initrd}\n"
        "boot\n"
    )


def chain_script(server: str) -> str:
    """``boot.ipxe``: chains to the per-machine script of whichever machine runs it."""
    return (
        "#!ipxe\n"
        "# bootstrapperd: chain to this machine's own script\n"
        f"chain {server}/ipxe/${{mac:hexhyp}}\n"
    )


def pxelinux_config(spec: BootSpec) -> str:
    """``pxelinux.cfg/01-<mac>``: kernel and initrd over TFTP (``static/`` is the image mirror,
    as Sextant linked it into tftpboot), the machine's own kernel arguments."""
    return _pxelinux(f"{spec.hostname} ({spec.mac})", spec.kernel, spec.initrd, spec.args)


def pxelinux_default(model: ClusterModel, server: str) -> str:
    """``pxelinux.cfg/default``, for a machine without its own file: the live OS runs
    ``install.sh``, which finds the machine's MAC itself (``SYSAPPEND 2`` passes BOOTIF too)."""
    kernel, initrd = _pxe_paths(model)
    args = (f"cloud-config-url={server}/install.sh", *CONSOLE_ARGS)
    about = "machines without their own pxelinux.cfg/01-<mac>"
    return _pxelinux(about, kernel, initrd, args) + "  SYSAPPEND 2\n"


def _pxelinux(about: str, kernel: str, initrd: str, args: tuple[str, ...]) -> str:
    return (
        f"# bootstrapperd: {about}\n"
        "DEFAULT install\n"
        "PROMPT 0\n"
        "LABEL install\n"
        f"  KERNEL static/{kernel}\n"
        f"  INITRD static/{initrd}\n"
        f"  APPEND {' '.join(args)}\n"
    )
