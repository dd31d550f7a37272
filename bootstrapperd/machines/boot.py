"""What a machine boots, decided once (``boot_spec``, reached through its
:class:`~bootstrapperd.machines.resolver.MachineView`): the OS kernel and initrd in the image
mirror and the kernel arguments that point the live OS at its configuration. The templates
(``ipxe.j2``, ``pxelinux.cfg.j2``) word it; the TFTP and HTTP servers serve the same scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..model import ClusterModel
from ..routes import URLs

__all__ = ["TOKEN_ARG", "WAIT_SECONDS", "BootAction", "BootSpec", "boot_spec", "default_spec"]

WAIT_SECONDS = 15  # how often a machine waiting for approval asks for its script again


class BootAction(StrEnum):
    """What a network boot gets (machines/lifecycle.py decides it from the machine's state)."""

    INSTALL = "install"  # the OS installer: kernel, initrd and the arguments to its configuration
    LOCAL = "local"  # its own disk: iPXE sanboot (BIOS) or exit (UEFI), pxelinux LOCALBOOT
    WAIT = "wait"  # ask again in WAIT_SECONDS (discovered: waiting for the operator's approval)


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
    action: BootAction = BootAction.INSTALL

    @property
    def initrd_name(self) -> str:
        return self.initrd.rsplit("/", 1)[-1]


def _pxe_paths(model: ClusterModel) -> tuple[str, str]:
    """The OS kernel and initrd, relative to the mirror root."""
    os = model.os
    directory = f"{os.name}/{os.channel}/{os.version}"
    kernel, initrd = PXE_FILES[os.name]
    return f"{directory}/{kernel}", f"{directory}/{initrd}"


TOKEN_ARG = "bootstrapperd.token"  # noqa: S105 (the kernel argument's name: machines/tokens.py)


def boot_spec(
    model: ClusterModel,
    mac: str,
    hostname: str,
    server: str,
    token: str | None = None,
    action: BootAction = BootAction.INSTALL,
) -> BootSpec:
    """The boot of machine ``mac`` (canonical) named ``hostname`` from the server at ``server``
    (a base URL), with its install ``token`` when one was issued for this boot. Whether it is
    served at all is the resolver's to say."""
    kernel, initrd = _pxe_paths(model)
    urls = URLs(server)
    config: tuple[str, ...]
    if model.os.name == "flatcar":
        config = ("flatcar.first_boot=1", f"ignition.config.url={urls.ignition(mac)}")
    else:
        config = (f"cloud-config-url={urls.install_sh()}",)
    return BootSpec(
        mac=mac,
        hostname=hostname,
        kernel=kernel,
        initrd=initrd,
        args=(*config, *((f"{TOKEN_ARG}={token}",) if token else ()), *CONSOLE_ARGS),
        action=action,
    )


def default_spec(model: ClusterModel, server: str) -> BootSpec:
    """The boot of a machine without its own pxelinux file: the live OS runs ``install.sh``,
    which finds the machine's MAC itself (pxelinux's ``SYSAPPEND 2`` passes BOOTIF too)."""
    kernel, initrd = _pxe_paths(model)
    return BootSpec(
        mac="",
        hostname="",
        kernel=kernel,
        initrd=initrd,
        args=(f"cloud-config-url={URLs(server).install_sh()}", *CONSOLE_ARGS),
    )
