"""One vocabulary: every URL a machine is handed is answered by the route it was built from, the
route table is the vocabulary's, and every timeline kind a service records is an EventKind that
the stage tracker reads the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bootstrapperd import routes
from bootstrapperd.http.app import ADMIN_ROUTES, ROUTES, create_app
from bootstrapperd.machines.events import REPORTS, EventKind, Source, mirror_kind
from bootstrapperd.machines.stages import STAGES, progress_of
from bootstrapperd.machines.timeline import Event
from bootstrapperd.pack import init_bsroot
from protocols.dhcp.options import MessageType
from tests.conftest import EXAMPLE
from tests.httpapp import make_context

MAC = "52:54:00:77:00:11"
URLS = routes.URLs("http://10.77.0.1:8080")


async def resolve(app: web.Application, method: str, url: str) -> str | None:
    """The name of the route of ``app`` that answers ``url``, or None."""
    request = make_mocked_request(method, url.removeprefix(URLS.base), app=app)
    match = await app.router.resolve(request)
    return match.route.name if match.http_exception is None else None


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    context, db = make_context(init_bsroot(EXAMPLE, tmp_path / "bsroot"))
    db.close()
    return create_app(context)


@pytest.mark.parametrize(
    ("url", "route"),
    [
        (URLS.ipxe_script(MAC), routes.IPXE_SCRIPT),
        (URLS.boot_file("ipxe.efi"), routes.BOOT_FILE),
        (URLS.static("flatcar/stable/current/flatcar_production_pxe.vmlinuz"), routes.STATIC),
        (URLS.install_sh(), routes.INSTALL_SH),
        (URLS.ignition(MAC), routes.IGNITION),
        (URLS.cloud_config(MAC), routes.CLOUD_CONFIG),
        (URLS.report(MAC), routes.REPORT),
    ],
)
async def test_every_url_handed_out_is_answered_by_its_route(
    app: web.Application, url: str, route: routes.Route
) -> None:
    assert url.startswith("http://10.77.0.1:8080/")
    assert await resolve(app, route.method, url) == route.name


def test_the_route_table_is_the_vocabulary(app: web.Application) -> None:
    table = [(r.method, r.path, r.kwargs["name"]) for r in ROUTES if isinstance(r, web.RouteDef)]
    every = (*routes.ROUTES, *routes.ADMIN_ROUTES)  # the admin routes: each refused here
    vocabulary = [(route.method, route.pattern, route.name) for route in every]
    assert table == vocabulary
    served = {route.name for route in app.router.routes() if route.method != "HEAD"}
    assert served == {route.name for route in every}
    names = [route.name for route in every]
    assert len(names) == len(set(names))


def test_the_admin_app_serves_the_admin_routes_and_nothing_a_machine_fetches() -> None:
    admin = {(r.method, r.path) for r in ADMIN_ROUTES if isinstance(r, web.RouteDef)}
    assert {(r.method, r.pattern) for r in routes.ADMIN_ROUTES} <= admin
    for route in (routes.IPXE_SCRIPT, routes.IGNITION, routes.REPORT, routes.CSR, routes.TLS):
        assert (route.method, route.pattern) not in admin


def test_a_route_fills_exactly_its_placeholders() -> None:
    assert routes.TLS.parts == ("mac", "name")
    assert routes.TLS.path(mac=MAC, name="worker.pem") == f"/tls/{MAC}/worker.pem"
    assert routes.STATIC.path(path="a/b") == "/static/a/b"
    with pytest.raises(ValueError, match="takes"):
        routes.TLS.path(mac=MAC)


def test_scripts_get_urls_they_complete_themselves() -> None:
    script = routes.URLs("$SERVER")
    assert script.report("$MAC") == "$SERVER/api/v1/nodes/$MAC/report"
    assert script.ignition("$MAC") == "$SERVER/ignition/$MAC.json"
    assert routes.URLs("http://b").ipxe_script("${mac:hexhyp}") == "http://b/ipxe/${mac:hexhyp}"


def test_base_url_leaves_out_port_80() -> None:
    assert routes.base_url("10.0.0.1", 80) == "http://10.0.0.1"
    assert routes.base_url("10.0.0.1", 8080) == "http://10.0.0.1:8080"


def test_every_dhcp_message_type_is_an_event_kind() -> None:
    for message in MessageType:
        assert EventKind(message.name.lower()).name == message.name


def test_http_event_kinds_are_the_route_names() -> None:
    for kind in (EventKind.IPXE_SCRIPT, EventKind.BOOT_FILE, EventKind.IGNITION):
        assert kind.value in {route.name for route in routes.ROUTES}


def test_install_reports_are_event_kinds_and_installed_ends_the_stages() -> None:
    assert {str(kind) for kind in REPORTS} == {"installing", "installed", "install-failed", "note"}
    assert STAGES[-1] == EventKind.INSTALLED


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("flatcar_production_pxe.vmlinuz", EventKind.KERNEL),
        ("flatcar_production_pxe_image.cpio.gz", EventKind.INITRD),
        ("flatcar_production_image.bin.bz2", EventKind.INSTALL_IMAGE),
        ("flatcar_production_image.bin.bz2.sig", EventKind.SIGNATURE),
        ("version.txt", EventKind.VERSION),
        ("kubelet", EventKind.STATIC),
    ],
)
def test_mirror_files_have_their_kinds(name: str, kind: EventKind) -> None:
    assert mirror_kind(name) is kind


def test_stages_read_the_kinds_the_services_record() -> None:
    def event(source: Source, kind: EventKind, detail: str = "{}") -> Event:
        return Event(0.0, source, kind, detail)

    boot = [
        event(Source.DHCP, EventKind.ACK, '{"boot_file":"undionly.kpxe"}'),
        event(Source.TFTP, EventKind.TRANSFER, '{"file":"undionly.kpxe"}'),
        event(Source.HTTP, EventKind.IPXE_SCRIPT, '{"status":200}'),
        event(Source.HTTP, EventKind.KERNEL, '{"status":200}'),
        event(Source.HTTP, EventKind.INSTALL_SH, '{"status":200}'),
        event(Source.HTTP, EventKind.IGNITION, '{"status":200}'),
        event(Source.INSTALL, EventKind.INSTALLED),
    ]
    names = [progress_of(boot[: i + 1]).name for i in range(len(boot))]
    assert names == [
        "dhcp",
        "boot-file",
        "ipxe-script",
        "kernel",
        "install.sh",
        "config",
        "installed",
    ]
    failed = progress_of([*boot[:2], event(Source.TFTP, EventKind.TRANSFER_FAILED)])
    assert failed.failed
