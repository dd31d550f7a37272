"""What a TFTP file name means: a generated boot script or a file under ``bsroot/tftpboot``.

Read-only and rooted, by construction: the name is normalised (``\\`` → ``/``, empty and ``.``
parts dropped); ``..`` parts, absolute names and control characters are refused; the path is
resolved with every symlink followed and must still lie inside bsroot (so Sextant's relative
links from ``tftpboot/`` into ``html/static/`` work, a link to ``/etc`` does not); only regular
files are opened. ``static/...`` falls back to the image mirror (``html/static``) when
``tftpboot/static`` does not exist, as if Sextant's link were there.

Generated names (a file on disk of the same name wins, so a site can pin its own):
``boot.ipxe``, ``ipxe/<mac>`` (any MAC spelling, optional ``.ipxe``),
``pxelinux.cfg/01-<mac>`` and ``pxelinux.cfg/default``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from protocols.tftp.endpoint import Opened, Refusal
from protocols.tftp.netascii import netascii_size
from protocols.tftp.packet import ErrorCode, Request
from protocols.tftp.session import Address

from .. import routes
from ..bsroot.layout import Bsroot
from ..model import ClusterModel
from ..model.fields import canonical_mac
from ..render import Renderer

READ_BUFFER = 64 * 1024  # per open file: the bound on what a transfer holds besides its window
MAX_NAME = 512

log = logging.getLogger("bootstrapperd.tftp")

_PXELINUX_MAC = re.compile(r"01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TFTPFiles:
    """The ``Opener`` for the TFTP endpoint: ``files(request, peer) -> Opened | Refusal``."""

    def __init__(
        self,
        bsroot: Bsroot,
        model: Callable[[], ClusterModel],
        server: str,
        renderer: Renderer,
    ) -> None:
        self.bsroot = bsroot
        self._renderer = renderer
        self._model = model
        self.server = server  # base URL of the HTTP server, for the scripts
        self._root = Path(os.path.realpath(bsroot.root))

    def __call__(self, request: Request, peer: Address) -> Opened | Refusal:
        name = request.filename
        if len(name) > MAX_NAME:
            return Refusal(ErrorCode.ACCESS_VIOLATION, "file name too long")
        if _CONTROL.search(name):
            return Refusal(ErrorCode.ACCESS_VIOLATION, "control character in file name")
        name = name.replace("\\", "/")
        if name.startswith("/"):
            return Refusal(ErrorCode.ACCESS_VIOLATION, "absolute paths are not served")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            return Refusal(ErrorCode.ACCESS_VIOLATION, "'..' is not allowed in file names")
        if not parts:
            return Refusal(ErrorCode.FILE_NOT_FOUND, "no file name")
        relative = "/".join(parts)
        netascii = request.mode == "netascii"
        found = self._open_file(relative, netascii)
        if found is not None:
            return found
        generated = self._generate(relative)
        if generated is not None:
            data = generated.encode()
            size = netascii_size([data]) if netascii else len(data)
            return Opened(relative, io.BytesIO(data), size)
        return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found")

    # --- files on disk ------------------------------------------------------------------------

    def _candidates(self, relative: str) -> list[Path]:
        first = self.bsroot.tftpboot / relative
        static = routes.TFTP_STATIC_DIR
        if relative.startswith(static) and not (self.bsroot.tftpboot / static).exists():
            return [first, self.bsroot.html_static / relative.removeprefix(static)]
        return [first]

    def _open_file(self, relative: str, netascii: bool) -> Opened | Refusal | None:
        for candidate in self._candidates(relative):
            real = Path(os.path.realpath(candidate))
            if not real.is_relative_to(self._root):
                return Refusal(ErrorCode.ACCESS_VIOLATION, "path leaves the served tree")
            try:
                fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                return Refusal(ErrorCode.FILE_NOT_FOUND, "not a file")
            except PermissionError:
                return Refusal(ErrorCode.ACCESS_VIOLATION, "permission denied")
            except OSError as exc:  # ELOOP: the last part became a symlink since realpath
                return Refusal(ErrorCode.ACCESS_VIOLATION, f"cannot open: {exc.strerror}")
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    return Refusal(ErrorCode.FILE_NOT_FOUND, "not a file")
                file = os.fdopen(fd, "rb", buffering=READ_BUFFER)
            except OSError as exc:
                os.close(fd)
                return Refusal(ErrorCode.ACCESS_VIOLATION, f"cannot open: {exc.strerror}")
            size = _netascii_size_of(file) if netascii else os.fstat(fd).st_size
            return Opened(relative, file, size, file.close)
        return None

    # --- generated files ----------------------------------------------------------------------

    def _generate(self, relative: str) -> str | None:
        model = self._model()
        lowered = relative.lower()
        if lowered == routes.TFTP_CHAIN:
            return self._renderer.chain(self.server)
        if lowered == routes.TFTP_PXELINUX_DEFAULT:
            return self._renderer.pxelinux_default(model, self.server)
        if lowered.startswith(routes.TFTP_IPXE_DIR):
            name = lowered.removeprefix(routes.TFTP_IPXE_DIR).removesuffix(".ipxe")
            mac = canonical_mac(name)
            return self._renderer.ipxe(model, mac, self.server) if mac else None
        if lowered.startswith(routes.TFTP_PXELINUX_DIR):
            match = _PXELINUX_MAC.fullmatch(lowered.removeprefix(routes.TFTP_PXELINUX_DIR))
            mac = canonical_mac(match.group(1)) if match else None
            return self._renderer.pxelinux(model, mac, self.server) if mac else None
        return None


def _netascii_size_of(file: BinaryIO) -> int:
    """The netascii size of an open file, read in chunks; the file is left at its start."""
    size = netascii_size(iter(lambda: file.read(READ_BUFFER), b""))
    file.seek(0)
    return size
