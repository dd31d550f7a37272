"""What machines fetch: boot scripts, install.sh, their configuration, certificates, the image
mirror. A response carrying a private key goes only to the address that holds the machine's
lease or static reservation; anyone else gets 403 and a log line."""

from __future__ import annotations

import logging

from aiohttp import web

from .. import routes
from ..machines.events import EventKind, mirror_kind
from ..model.fields import canonical_mac
from ..render import PRIVATE_KINDS, Kind
from .context import CONTEXT, EVENT
from .files import ObservedFile

log = logging.getLogger("bootstrapperd.http")

_TLS_FILES = {
    "worker.pem": ("worker", "cert"),
    "worker-key.pem": ("worker", "key"),
    "apiserver.pem": ("apiserver", "cert"),
    "apiserver-key.pem": ("apiserver", "key"),
}


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
    """403 unless the client is the machine ``mac`` itself."""
    client = request.remote or ""
    if request.app[CONTEXT].resolver.owns(mac, client):
        return
    log.warning(
        "private key refused: the client is not this machine",
        extra={"fields": {"client": client, "mac": mac, "path": request.path}},
    )
    raise web.HTTPForbidden(
        text=f"this holds {mac}'s private key: only {mac}, from its own address, may fetch it\n"
    )


def _served(request: web.Request, mac: str) -> None:
    """404 for a machine that gets nothing (unknown, and unknown machines are ignored)."""
    if not request.app[CONTEXT].resolver.is_served(mac):
        raise web.HTTPNotFound(text=f"{mac} is not in the cluster (unknown machines: ignore)\n")


async def _rendered(request: web.Request, kind: Kind, mac: str) -> web.Response:
    context = request.app[CONTEXT]
    _served(request, mac)
    if kind in PRIVATE_KINDS:
        _own_only(request, mac)  # before rendering: a refused client costs no keys or template
    rendered = context.renderer.render(kind, context.holder.model, mac, server_of(request))
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
    """``/tls/<mac>/<file>``: the machine's own certificates and keys, for the machine only."""
    mac = _mac(request.match_info["mac"])
    name = request.match_info["name"]
    if name not in _TLS_FILES:
        raise web.HTTPNotFound(text=f"no such file; there are {', '.join(_TLS_FILES)}\n")
    mark(request, EventKind.TLS, mac, file=name)
    context = request.app[CONTEXT]
    model = context.holder.model
    _served(request, mac)
    _own_only(request, mac)
    which, part = _TLS_FILES[name]
    certs = context.pki.node(model, mac)
    issued = certs.worker if which == "worker" else certs.apiserver
    if issued is None:
        raise web.HTTPNotFound(text=f"{mac} is not a master: it has no apiserver certificate\n")
    body = issued.cert_pem if part == "cert" else issued.key_pem
    return web.Response(
        body=body, content_type="application/x-pem-file", headers={"Cache-Control": "no-store"}
    )


async def boot_binary(request: web.Request) -> web.StreamResponse:
    """The iPXE binaries of ``tftpboot/`` over HTTP, for UEFI HTTP-boot firmware (the URL the
    DHCP server gives it). Only plain files directly in ``tftpboot/``."""
    name = request.match_info["name"]
    if "/" in name or name.startswith(".") or "\0" in name:
        raise web.HTTPNotFound()
    path = request.app[CONTEXT].bsroot.tftpboot / name
    if not path.is_file():
        raise web.HTTPNotFound()
    mark(request, EventKind.BOOT_FILE, file=name)
    return ObservedFile(path)


async def mirror(request: web.Request) -> web.StreamResponse:
    """``/static/...``: the image mirror and everything else under ``html/static``. Range,
    ETag / If-None-Match, If-Modified-Since and HEAD, sent with sendfile."""
    relative = request.match_info["path"]
    path = request.app[CONTEXT].renderer.mirror.resolve(relative)
    if path is None:
        where = routes.STATIC.path(path=relative)
        raise web.HTTPNotFound(text=f"{where}: no such file in the mirror\n")
    mark(request, mirror_kind(path.name), file=relative)
    return ObservedFile(path)
