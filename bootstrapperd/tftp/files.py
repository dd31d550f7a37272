"""What a TFTP file name means: a generated boot script or a file under ``bsroot/tftpboot``.

Read-only and rooted, by construction: the name is normalised (``\\`` → ``/``, empty and ``.``
parts dropped); ``..`` parts, absolute names and control characters are refused; the path is
resolved with every symlink followed and must still lie inside ``tftpboot/`` or
``html/static/`` (``Bsroot.tftp_trees``: Sextant's relative links from ``tftpboot/`` into the
mirror work; a link to ``/etc``, ``tls/``, ``state/`` or ``config/`` does not); only regular
files are opened, and the opened file must still lie there (``bsroot.layout.open_inside``).
``static/...`` falls back to the image mirror (``html/static``) when ``tftpboot/static`` does
not exist, as if Sextant's link were there.

Generated names (a file on disk of the same name wins, so a site can pin its own):
``boot.ipxe``, ``ipxe/<mac>`` (any MAC spelling, optional ``.ipxe``),
``pxelinux.cfg/01-<mac>`` and ``pxelinux.cfg/default``.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from protocols.tftp.endpoint import Opened, Refusal
from protocols.tftp.netascii import netascii_size
from protocols.tftp.packet import ErrorCode, Request
from protocols.tftp.session import Address

from .. import routes
from ..bsroot.layout import Bsroot, Refused, open_inside
from ..machines.boot import BootAction
from ..machines.resolver import is_served
from ..model import ClusterModel
from ..model.fields import canonical_mac
from ..render import Renderer

READ_BUFFER = 64 * 1024  # per open file: the bound on what a transfer holds besides its window
MAX_NAME = 512

log = logging.getLogger("bootstrapperd.tftp")

_PXELINUX_MAC = re.compile(r"01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REASONS = {  # what the client is told for each kind of ``Refused``
    "outside": "path leaves the served tree",
    "loop": "symlink loop",
    "changed": "file changed while opening",
    "special": "not a regular file",
}


class TFTPFiles:
    """The ``Opener`` for the TFTP endpoint: ``files(request, peer) -> Opened | Refusal``."""

    def __init__(
        self,
        bsroot: Bsroot,
        model: Callable[[], ClusterModel],
        server: str,
        renderer: Renderer,
        issue_token: Callable[[str], str] | None = None,
        boot_action: Callable[[str], BootAction | None] | None = None,
    ) -> None:
        self.bsroot = bsroot
        self._renderer = renderer
        self._model = model
        self.server = server  # base URL of the HTTP server, for the scripts
        # A machine's boot script hands it a fresh install token (machines/tokens.py).
        self._issue_token = issue_token
        self._boot_action = boot_action

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
        found = self._open_file(relative, netascii, peer)
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

    def _open_file(self, relative: str, netascii: bool, peer: Address) -> Opened | Refusal | None:
        for candidate in self._candidates(relative):
            try:
                fd = open_inside(candidate, self.bsroot.tftp_trees)
            except FileNotFoundError:
                continue
            except Refused as refused:
                return self._refused(refused, peer)
            except PermissionError:
                return Refusal(ErrorCode.ACCESS_VIOLATION, "permission denied")
            except OSError as exc:
                return Refusal(ErrorCode.ACCESS_VIOLATION, f"cannot open: {exc.strerror}")
            file = os.fdopen(fd, "rb", buffering=READ_BUFFER)
            size = _netascii_size_of(file) if netascii else os.fstat(fd).st_size
            return Opened(relative, file, size, file.close)
        return None

    def _refused(self, refused: Refused, peer: Address) -> Refusal:
        if not refused.edge:
            return Refusal(ErrorCode.FILE_NOT_FOUND, "not a file")
        self.bsroot.refusals.record("tftp", refused, f"{peer[0]}:{peer[1]}")
        return Refusal(ErrorCode.ACCESS_VIOLATION, _REASONS[refused.kind])

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
            if not mac:
                return None
            action = self._action(mac)
            token = self._token(model, mac, action)
            return self._renderer.ipxe(model, mac, self.server, token, action)
        if lowered.startswith(routes.TFTP_PXELINUX_DIR):
            match = _PXELINUX_MAC.fullmatch(lowered.removeprefix(routes.TFTP_PXELINUX_DIR))
            mac = canonical_mac(match.group(1)) if match else None
            if not mac:
                return None
            action = self._action(mac)
            token = self._token(model, mac, action)
            return self._renderer.pxelinux(model, mac, self.server, token, action)
        return None

    def _action(self, mac: str) -> BootAction:
        """What this boot gets (its state decides: machines/lifecycle.py); install without one."""
        action = self._boot_action(mac) if self._boot_action is not None else None
        return action or BootAction.INSTALL

    def _token(self, model: ClusterModel, mac: str, action: BootAction) -> str | None:
        """A fresh install token for a served machine's installing boot (none for the others)."""
        if self._issue_token is None or action is not BootAction.INSTALL:
            return None
        if not is_served(model, mac):
            return None
        return self._issue_token(mac)


def _netascii_size_of(file: BinaryIO) -> int:
    """The netascii size of an open file, read in chunks; the file is left at its start."""
    size = netascii_size(iter(lambda: file.read(READ_BUFFER), b""))
    file.seek(0)
    return size
