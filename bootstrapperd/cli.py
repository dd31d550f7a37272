"""``bootstrapperd``: check a cluster description, serve a bsroot, or run the demo lab."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

from . import __version__
from .bsroot.layout import Bsroot
from .bsroot.manifest import Manifest, ManifestError
from .bsroot.manifest import verify as verify_manifest
from .bsroot.pki import ClusterPKI, PKIError
from .daemon import StartupError, resolve_listen, run
from .model import ConfigError, load_cluster_file
from .model.fields import canonical_mac
from .model.holder import ModelHolder
from .model.summary import render_summary
from .render import Kind, Renderer, TemplateError
from .routes import base_url
from .runtime import logs
from .runtime.sdnotify import Notifier

log = logging.getLogger("bootstrapperd")

EXIT_OK = 0
EXIT_INVALID = 1  # bad cluster description, or the daemon could not start


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"BOOTSTRAPPERD_{name}", default)


def _ipv4(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bootstrapperd",
        description="DHCP, TFTP, DNS and HTTP for a bare-metal Kubernetes cluster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a cluster description and summarise it")
    check.add_argument("file", type=Path, help="cluster-desc.yml")
    check.add_argument("-q", "--quiet", action="store_true", help="print errors only")

    serve = sub.add_parser(
        "serve",
        help="serve a bsroot",
        description="Serve the cluster described in BSROOT/config/cluster-desc.yml. Every "
        "option has a BOOTSTRAPPERD_<NAME> environment equivalent (e.g. BOOTSTRAPPERD_BSROOT).",
    )
    serve.add_argument(
        "--bsroot",
        type=Path,
        default=_env("BSROOT"),
        help="the bsroot directory (env BOOTSTRAPPERD_BSROOT)",
    )
    serve.add_argument(
        "--interface",
        default=_env("INTERFACE"),
        help="serve on this interface (default: the one holding the bootstrapper "
        "address; env BOOTSTRAPPERD_INTERFACE)",
    )
    serve.add_argument(
        "--address",
        type=_ipv4,
        default=_env("ADDRESS"),
        help="IPv4 address to bind (default: the bootstrapper address; env BOOTSTRAPPERD_ADDRESS)",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=_env("HTTP_PORT"),
        help="HTTP port (default: http_port from the model, else 80; env BOOTSTRAPPERD_HTTP_PORT)",
    )
    serve.add_argument(
        "--grace-period",
        type=_seconds,
        default=_env("GRACE_PERIOD", "3"),
        help="seconds to let transfers finish on shutdown (default 3; "
        "env BOOTSTRAPPERD_GRACE_PERIOD)",
    )
    serve.add_argument(
        "--verify-bsroot",
        choices=["full", "quick", "off"],
        default=_env("VERIFY_BSROOT", "full"),
        help="check bsroot against manifest.json at start: full (sha256 of every file, the "
        "default), quick (presence and size) or off (env BOOTSTRAPPERD_VERIFY_BSROOT)",
    )
    _add_log_options(serve)

    render = sub.add_parser(
        "render",
        help="print what the server serves a machine",
        description="Print exactly what bootstrapperd serves machine MAC for KIND, from "
        "BSROOT's cluster description, templates and certificates (creating the certificates "
        "when missing, as the server does).",
    )
    render.add_argument("--mac", required=True, help="the machine's MAC, any spelling")
    render.add_argument(
        "--kind", required=True, choices=[k.value for k in Kind], help="what to render"
    )
    render.add_argument(
        "--bsroot", type=Path, default=_env("BSROOT"), help="the bsroot (env BOOTSTRAPPERD_BSROOT)"
    )
    render.add_argument(
        "--server",
        default=None,
        help="base URL the machine reaches the server by (default: http://<bootstrapper>"
        "[:http_port] from the model)",
    )

    demo = sub.add_parser("demo", help="check and serve the bundled example in a network lab")
    demo.add_argument(
        "--hold",
        action="store_true",
        help="keep serving until Ctrl-C instead of stopping after the tour",
    )
    demo.add_argument(
        "--example",
        type=Path,
        default=None,
        help="cluster description to use (default: the bundled example)",
    )
    _add_log_options(demo)
    return parser


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default=_env("LOG_FORMAT", "text"),
        help="text or json lines (env BOOTSTRAPPERD_LOG_FORMAT)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=_env("LOG_LEVEL", "info"),
        help="env BOOTSTRAPPERD_LOG_LEVEL",
    )


def cmd_check(args: argparse.Namespace) -> int:
    try:
        model = load_cluster_file(args.file)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INVALID
    except (RecursionError, MemoryError) as exc:  # the file exhausted us: say so, no traceback
        print(f"{args.file}: cannot load: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not args.quiet:
        print(f"{args.file}: OK")
        print(render_summary(model))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_format, args.log_level)
    if args.bsroot is None:
        log.error("no bsroot: pass --bsroot DIR or set BOOTSTRAPPERD_BSROOT")
        return EXIT_INVALID
    bsroot = Bsroot(args.bsroot)
    path = bsroot.cluster_desc
    try:
        holder = ModelHolder.load(path)
    except ConfigError as exc:
        log.error("cannot load the cluster description", extra={"fields": {"file": str(path)}})
        for problem in exc.problems:
            log.error("  %s", problem)
        return EXIT_INVALID
    for warning in holder.model.warnings:
        log.warning("%s", warning)
    if args.verify_bsroot != "off":
        check_bsroot(bsroot, full=args.verify_bsroot == "full")
    try:
        listen = resolve_listen(holder.model, args.interface, args.address, args.http_port)
        return asyncio.run(run(holder, listen, args.grace_period, bsroot, Notifier()))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_INVALID


def check_bsroot(bsroot: Bsroot, *, full: bool) -> bool:
    """Compare bsroot with its manifest.json and name every missing or corrupt file. Serving
    goes on either way (DHCP, DNS and the files that are good still help); the log says what
    to re-run. True when everything matched."""
    try:
        manifest = Manifest.load(bsroot)
    except ManifestError as exc:
        log.warning("bsroot: %s", exc)
        return False
    started = time.monotonic()
    problems = verify_manifest(bsroot, manifest, full=full)
    fields = {
        "files": len(manifest.files),
        "check": "sha256" if full else "size",
        "seconds": round(time.monotonic() - started, 1),
    }
    for problem in problems:
        log.error("bsroot: %s", problem, extra={"fields": {"path": problem.path}})
    if problems:
        log.error(
            "bsroot: %d of %d files missing or corrupt; re-run bootstrapperd-pack and copy "
            "bsroot again",
            len(problems),
            len(manifest.files),
            extra={"fields": fields},
        )
        return False
    log.info("bsroot matches manifest.json", extra={"fields": fields})
    return True


def cmd_render(args: argparse.Namespace) -> int:
    if args.bsroot is None:
        print("render: no bsroot: pass --bsroot DIR or set BOOTSTRAPPERD_BSROOT", file=sys.stderr)
        return EXIT_INVALID
    mac = canonical_mac(args.mac)
    if mac is None:
        print(f"render: {args.mac!r} is not a MAC address", file=sys.stderr)
        return EXIT_INVALID
    bsroot = Bsroot(args.bsroot)
    try:
        model = load_cluster_file(bsroot.cluster_desc)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INVALID
    server = args.server or base_url(model.bootstrapper, model.http_port)
    try:
        rendered = Renderer(bsroot, ClusterPKI(bsroot.tls)).render(
            Kind(args.kind), model, mac, server.rstrip("/")
        )
    except (TemplateError, PKIError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if rendered is None:
        print(
            f"render: {mac} is not in the cluster and unknown machines are ignored", file=sys.stderr
        )
        return EXIT_INVALID
    sys.stdout.write(rendered.text)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .lab.demo import run_demo

    logs.configure(args.log_format, args.log_level)
    return run_demo(example=args.example, hold=args.hold)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"check": cmd_check, "serve": cmd_serve, "render": cmd_render, "demo": cmd_demo}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
