"""What machines fetch: boot scripts, install.sh, their configuration, certificates, the image
mirror. A response carrying a private key goes only to the address that holds the machine's
lease or static reservation; anyone else gets 403 and a log line."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_fileresponse import CONTENT_TYPES, FALLBACK_CONTENT_TYPE

from .. import routes
from ..bsroot.layout import Refused, open_inside
from ..bsroot.pki import NODE_CERTIFICATES, PKIError, csr_public_key, node_spec
from ..machines.boot import BootAction
from ..machines.events import EventKind, Source, mirror_kind
from ..machines.tokens import Verdict
from ..model.fields import canonical_mac
from ..render import PRIVATE_KINDS, Kind
from .context import CONTEXT, EVENT
from .files import ObservedFile

log = logging.getLogger("bootstrapperd.http")


def server_of(request: web.Request) -> str:
    """The base URL the client reached us by: what its scripts should fetch from next."""
    return f"http://{request.host}"


def mark(request: web.Request, kind: EventKind, mac: str | None = None, **detail: object) -> None:
    """Record this request in the machine's timeline (done by the middleware once answered)."""
    request[EVENT] = (kind, mac, detail)


def _mac(text: str, *suffixes: str) -> str:
    lowered = text.lower()
    for suffix in suffixes:
        if lowered.endswith(suffix):
            text = text[: -len(suffix)]
            break
    mac = canonical_mac(text)
    if mac is None:
        raise web.HTTPNotFound(text=f"{text!r} is not a MAC address\n")
    return mac


def _own_only(request: web.Request, mac: str) -> None:
    """403 unless the client is the machine ``mac`` itself (defence in depth for what is only
    the machine's business: an address is no credential, so nothing secret rests on this)."""
    client = request.remote or ""
    if request.app[CONTEXT].resolver.owns(mac, client):
        return
    log.warning(
        "machine's own file refused: the client is not this machine",
        extra={"fields": {"client": client, "mac": mac, "path": request.path}},
    )
    raise web.HTTPForbidden(
        text=f"this is {mac}'s own: only {mac}, from its own address, may fetch it\n"
    )


def _bearer(request: web.Request) -> str | None:
    """The install token the request presents (``Authorization: Bearer <token>``), if any."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _spend(request: web.Request, mac: str, use: str) -> bool:
    """Spend the presented install token on ``use``: True when granted, False when none was
    presented; 403 when one was presented and refused (the refusal raised an alarm)."""
    context = request.app[CONTEXT]
    client = request.remote or ""
    verdict = context.tokens.redeem(mac, _bearer(request), use, time.time(), client)
    if verdict is Verdict.GRANTED:
        return True
    if verdict is Verdict.NO_TOKEN:
        return False
    raise web.HTTPForbidden(text=f"install token refused ({verdict}) for {use}; alarm raised\n")


def _served(request: web.Request, mac: str) -> None:
    """404 for a machine that gets nothing (unknown, and unknown machines are ignored)."""
    if not request.app[CONTEXT].resolver.is_served(mac):
        raise web.HTTPNotFound(text=f"{mac} is not in the cluster (unknown machines: ignore)\n")


async def _rendered(request: web.Request, kind: Kind, mac: str) -> web.Response:
    context = request.app[CONTEXT]
    _served(request, mac)
    secrets, token, action = False, None, BootAction.INSTALL
    if kind in PRIVATE_KINDS:
        _own_only(request, mac)  # before rendering: a refused client costs no template
        secrets = _spend(request, mac, "config")
    elif kind is Kind.IPXE:
        if context.lifecycle is not None:
            action = context.lifecycle.booting(mac, Source.HTTP) or action
        if action is BootAction.INSTALL:
            # A new install of this machine: a fresh install token, the earlier one dies.
            token = context.tokens.issue(mac, time.time())
    rendered = context.renderer.render(
        kind,
        context.holder.model,
        mac,
        server_of(request),
        secrets=secrets,
        token=token,
        action=action,
    )
    if rendered is None:
        raise web.HTTPNotFound(text=f"{mac} is not in the cluster (unknown machines: ignore)\n")
    return web.Response(
        text=rendered.text,
        content_type=rendered.content_type,
        headers={"Cache-Control": "no-store"} if rendered.private else None,
    )


async def ipxe_script(request: web.Request) -> web.Response:
    mac = _mac(request.match_info["mac"], ".ipxe")
    mark(request, EventKind.IPXE_SCRIPT, mac)
    return await _rendered(request, Kind.IPXE, mac)


async def chain_ipxe(request: web.Request) -> web.Response:
    """``/boot.ipxe``: chains to ``/ipxe/${mac}`` of whichever machine runs it."""
    mark(request, EventKind.CHAIN)
    text = request.app[CONTEXT].renderer.chain(server_of(request))
    return web.Response(text=text, content_type="text/plain")


async def install_sh(request: web.Request) -> web.Response:
    mark(request, EventKind.INSTALL_SH)
    context = request.app[CONTEXT]
    text = context.renderer.install_sh(context.holder.model, server_of(request))
    return web.Response(text=text, content_type="text/x-shellscript")


async def cloud_config(request: web.Request) -> web.Response:
    mac = _mac(request.match_info["mac"], ".yaml", ".yml")
    mark(request, EventKind.CLOUD_CONFIG, mac)
    return await _rendered(request, Kind.CLOUD_CONFIG, mac)


async def ignition(request: web.Request) -> web.Response:
    mac = _mac(request.match_info["mac"], ".json", ".ign")
    mark(request, EventKind.IGNITION, mac)
    return await _rendered(request, Kind.IGNITION, mac)


async def ca_pem(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[CONTEXT].pki.ca_pem(), content_type="application/x-pem-file"
    )


async def node_tls(request: web.Request) -> web.Response:
    """``/tls/<mac>/<which>.pem``: the certificate last signed for the machine's own key
    (public). Its keys are made on the machine and never leave it: ``-key.pem`` is 404."""
    mac = _mac(request.match_info["mac"])
    name = request.match_info["name"]
    mark(request, EventKind.TLS, mac, file=name)
    _served(request, mac)
    if name.endswith("-key.pem") and name.removesuffix("-key.pem") in NODE_CERTIFICATES:
        raise web.HTTPNotFound(text="a machine's keys are made on the machine and never leave it\n")
    which = name.removesuffix(".pem")
    if which not in NODE_CERTIFICATES or not name.endswith(".pem"):
        files = ", ".join(f"{w}.pem" for w in NODE_CERTIFICATES)
        raise web.HTTPNotFound(text=f"no such file; there are {files}\n")
    pem = request.app[CONTEXT].pki.issued(mac, which)
    if pem is None:
        raise web.HTTPNotFound(text=f"no {which} certificate was signed for {mac} yet\n")
    return web.Response(body=pem, content_type="application/x-pem-file")


CSR_LIMIT = 16 * 1024  # bytes: a certificate request is a few hundred


async def sign_request(request: web.Request) -> web.Response:
    """``POST /api/v1/nodes/<mac>/csr/<which>``: the certificate for a key the machine made
    (body: its PEM certificate request), against its install token, once per certificate.
    What the certificate says comes from the description, not from the request."""
    mac = _mac(request.match_info["mac"])
    which = request.match_info["which"]
    mark(request, EventKind.CSR, mac, which=which)
    context = request.app[CONTEXT]
    _served(request, mac)
    model = context.holder.model
    if which not in NODE_CERTIFICATES or node_spec(model, mac, which) is None:
        raise web.HTTPNotFound(text=f"{mac} is given no {which} certificate\n")
    if request.content_length is not None and request.content_length > CSR_LIMIT:
        raise web.HTTPRequestEntityTooLarge(max_size=CSR_LIMIT, actual_size=request.content_length)
    body = await request.content.read(CSR_LIMIT + 1)
    if len(body) > CSR_LIMIT:
        raise web.HTTPRequestEntityTooLarge(max_size=CSR_LIMIT, actual_size=len(body))
    try:
        csr_public_key(body)  # a request that cannot be signed spends no token
    except PKIError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if not _spend(request, mac, f"csr:{which}"):
        raise web.HTTPUnauthorized(text="an install token is needed (Authorization: Bearer)\n")
    try:
        pem = await asyncio.to_thread(context.pki.sign, model, mac, which, body)
    except PKIError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return web.Response(body=pem, content_type="application/x-pem-file")


class _OpenedFile(ObservedFile):
    """A file the view has already opened inside its tree (``bsroot.layout.open_inside``), sent
    by aiohttp through ``/proc/self/fd/<fd>``: it reopens that very file, never whatever the
    name points at by then. The descriptor is closed once the response is sent (or dropped)."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(Path(f"/proc/self/fd/{fd}"))
        self.content_type = CONTENT_TYPES.guess_type(name)[0] or FALLBACK_CONTENT_TYPE
        self._close = weakref.finalize(self, os.close, fd)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            self._close()


def _open_in_tree(request: web.Request, route: str, open_file: Callable[[], int]) -> int:
    """The descriptor ``open_file`` opens, or 404: missing, not a file, or outside its tree (the
    last counted in the bsroot's refusals and logged at most once a minute)."""
    try:
        return open_file()
    except Refused as refused:
        if refused.edge:
            request.app[CONTEXT].bsroot.refusals.record(route, refused, request.remote or "")
        raise web.HTTPNotFound() from None
    except OSError:
        raise web.HTTPNotFound() from None


async def boot_binary(request: web.Request) -> web.StreamResponse:
    """The iPXE binaries of ``tftpboot/`` over HTTP, for UEFI HTTP-boot firmware (the URL the
    DHCP server gives it). Only regular files directly in ``tftpboot/`` whose real path stays
    inside it."""
    name = request.match_info["name"]
    if "/" in name or name.startswith(".") or "\0" in name:
        raise web.HTTPNotFound()
    bsroot = request.app[CONTEXT].bsroot
    path = bsroot.tftpboot / name
    fd = _open_in_tree(request, "boot", lambda: open_inside(path, bsroot.boot_trees))
    mark(request, EventKind.BOOT_FILE, file=name)
    return _OpenedFile(fd, name)


async def mirror(request: web.Request) -> web.StreamResponse:
    """``/static/...``: the image mirror and everything else under ``html/static``, never a file
    whose real path leaves it. Range, ETag / If-None-Match, If-Modified-Since and HEAD, sent
    with sendfile."""
    relative = request.match_info["path"]
    images = request.app[CONTEXT].renderer.mirror
    path = images.locate(relative)
    if path is None:
        where = routes.STATIC.path(path=relative)
        raise web.HTTPNotFound(text=f"{where}: no such file in the mirror\n")
    fd = _open_in_tree(request, "static", lambda: images.open(path))
    mark(request, mirror_kind(path.name), file=relative)
    return _OpenedFile(fd, path.name)
