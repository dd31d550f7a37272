"""The vocabulary of boot timelines: who reports an event (:class:`Source`) and what happened
(:class:`EventKind`). Every service records with these, and the stages are read off them, so a
kind renamed here is renamed for both. The values are what the state database, the API and the
status page carry: they are kept as they have always been spelled."""

from __future__ import annotations

from enum import StrEnum

from .. import routes

__all__ = ["FAILURES", "REPORTS", "EventKind", "Source", "mirror_kind"]


class Source(StrEnum):
    DHCP = "dhcp"
    TFTP = "tftp"
    HTTP = "http"
    INSTALL = "install"  # what install.sh reports about itself
    ADMIN = "admin"  # the operator, through the admin channel


class EventKind(StrEnum):
    # DHCP: the message answered or received (option 53's names).
    DISCOVER = "discover"
    OFFER = "offer"
    REQUEST = "request"
    DECLINE = "decline"
    ACK = "ack"
    NAK = "nak"
    RELEASE = "release"
    INFORM = "inform"
    # TFTP: how a request ended.
    TRANSFER = "transfer"
    TRANSFER_FAILED = "transfer_failed"
    NOT_FOUND = "not_found"
    REFUSED = "refused"
    # HTTP: the route that answered (its name in bootstrapperd.routes) ...
    BOOT_FILE = routes.BOOT_FILE.name
    CHAIN = routes.CHAIN.name
    IPXE_SCRIPT = routes.IPXE_SCRIPT.name
    INSTALL_SH = routes.INSTALL_SH.name
    CLOUD_CONFIG = routes.CLOUD_CONFIG.name
    IGNITION = routes.IGNITION.name
    TLS = routes.TLS.name
    CSR = routes.CSR.name  # a certificate request signed (or refused)
    STATIC = routes.STATIC.name
    # ... or, for a file of the image mirror, what the file is.
    KERNEL = "kernel"
    INITRD = "initrd"
    SIGNATURE = "signature"
    INSTALL_IMAGE = "install-image"
    VERSION = "version"
    # install.sh's reports (POST /api/v1/nodes/<mac>/report).
    INSTALLING = "installing"
    INSTALLED = "installed"
    INSTALL_FAILED = "install-failed"
    NOTE = "note"  # a remark from the machine (a check it made), kept in its timeline; no stage
    # The boot decision for an installed or waiting machine (machines/lifecycle.py).
    LOCAL_BOOT = "local-boot"  # told to boot its own disk
    WAITING = "waiting"  # discovered: told to ask again until approved
    STATE = "state"  # the operator changed its state (reinstall, approve)
    POWER = "power"  # a power command through its BMC, and how it went


# Kinds that say the step failed.
FAILURES = frozenset({EventKind.TRANSFER_FAILED, EventKind.INSTALL_FAILED, EventKind.NAK})
# What install.sh may report.
REPORTS = (EventKind.INSTALLING, EventKind.INSTALLED, EventKind.INSTALL_FAILED, EventKind.NOTE)

# Files of the image mirror, by the end of their names.
_MIRROR_FILES = (
    ("_pxe.vmlinuz", EventKind.KERNEL),
    ("vmlinuz", EventKind.KERNEL),
    (".cpio.gz", EventKind.INITRD),
    ("initrd", EventKind.INITRD),
    (".sig", EventKind.SIGNATURE),
    ("_image.bin.bz2", EventKind.INSTALL_IMAGE),
    ("version.txt", EventKind.VERSION),
)


def mirror_kind(name: str) -> EventKind:
    """The kind of a fetch of the image mirror's file ``name``."""
    for ending, kind in _MIRROR_FILES:
        if name.endswith(ending):
            return kind
    return EventKind.STATIC
