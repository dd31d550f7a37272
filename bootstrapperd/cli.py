"""``bootstrapperd``: check a cluster description, serve a bsroot, or run the demo lab.

Every bad input is one line and an exit code, never a traceback: a bad flag or
``BOOTSTRAPPERD_*`` variable (each variable goes through its flag's own validator, see
:class:`opt.Setting`) or a path that is no bsroot is exit 2; a cluster description that is invalid
or cannot be read, a bsroot with nothing to boot, or a daemon that cannot start is exit 1; a bug
is exit 70 with the one line to report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__, routes
from . import options as opt
from .bsroot.layout import Bsroot
from .bsroot.manifest import Manifest, ManifestError
from .bsroot.manifest import verify as verify_manifest
from .bsroot.pki import ClusterPKI, PKIError
from .daemon import StartupError, resolve_listen, run
from .model import ClusterModel, ConfigError, load_cluster_file
from .model.holder import ModelHolder
from .model.summary import render_summary
from .operator import AdminChannel, AdminError, format_table
from .preflight import missing_boot_files, preflight
from .render import Kind, Renderer, TemplateError
from .routes import base_url
from .runtime import logs
from .runtime.errors import internal_error
from .runtime.sdnotify import Notifier

log = logging.getLogger("bootstrapperd")

EXIT_OK = 0
EXIT_INVALID = 1  # bad or unreadable cluster description, nothing to boot, cannot start
EXIT_USAGE = 2  # bad flag or BOOTSTRAPPERD_* variable, or no bsroot where one is named
EXIT_INTERNAL = 70  # a bug (sysexits' EX_SOFTWARE): one line, to be reported
EXIT_INTERRUPTED = 130

EXIT_CODES = """\
exit codes: 0 done; 1 the cluster description is invalid or cannot be read, the bsroot has
nothing to boot, or the daemon cannot start (ports taken, no such interface); 2 a bad option
or BOOTSTRAPPERD_* variable, or no bsroot at the path given; 70 an internal error (please
report it)."""

# Validators: one per kind of value, for a flag (``type=``) and its variable alike. Each message
# starts with the value's repr, so that argparse's "argument --x: MESSAGE" and the variable's
# "BOOTSTRAPPERD_X=MESSAGE" both read as a sentence.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bootstrapperd",
        description="DHCP, TFTP, DNS and HTTP for a bare-metal Kubernetes cluster.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, description: str | None = None
    ) -> tuple[argparse.ArgumentParser, list[opt.Setting]]:
        """A subcommand, and the list its variable-backed options go in."""
        settings: list[opt.Setting] = []
        found = sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=EXIT_CODES,
        )
        found.set_defaults(settings=settings)
        return found, settings

    check, _ = command("check", help="validate a cluster description and summarise it")
    check.add_argument("file", type=opt.path, help="cluster-desc.yml")
    check.add_argument("-q", "--quiet", action="store_true", help="print errors only")

    serve, settings = command(
        "serve",
        help="serve a bsroot",
        description="Serve the cluster described in BSROOT/config/cluster-desc.yml. Every "
        "option has a BOOTSTRAPPERD_<NAME> environment equivalent (e.g. BOOTSTRAPPERD_BSROOT), "
        "checked as the option is; the option wins, and an empty variable counts as unset. "
        "Before it binds anything, serve checks that bsroot holds what a machine boots (the "
        "iPXE binaries, the OS kernel and initrd) and refuses to start when it does not.",
    )
    opt.option(serve, settings, "--bsroot", "BSROOT", opt.path, "the bsroot directory, required")
    opt.option(
        serve,
        settings,
        "--interface",
        "INTERFACE",
        opt.interface,
        "serve on this interface (default: the one holding the bootstrapper address)",
    )
    opt.option(
        serve,
        settings,
        "--address",
        "ADDRESS",
        opt.ipv4,
        "IPv4 address to bind (default: the bootstrapper address)",
    )
    opt.option(
        serve,
        settings,
        "--http-port",
        "HTTP_PORT",
        opt.port,
        "HTTP port (default: http_port from the model, else 80)",
    )
    opt.option(
        serve,
        settings,
        "--grace-period",
        "GRACE_PERIOD",
        opt.seconds,
        "seconds to let transfers finish on shutdown (default 3)",
        default=3.0,
    )
    opt.option(
        serve,
        settings,
        "--verify-bsroot",
        "VERIFY_BSROOT",
        opt.choice(*opt.VERIFY_MODES),
        "check bsroot against manifest.json at start: full (sha256 of every file, the "
        "default), quick (presence and size) or off",
        default="full",
        metavar=opt.metavar(*opt.VERIFY_MODES),
    )
    opt.option(
        serve,
        settings,
        "--serve-without-boot-files",
        "SERVE_WITHOUT_BOOT_FILES",
        opt.boolean,
        "start even when bsroot lacks the iPXE binaries or the OS kernel and initrd (a "
        "warning instead of exit 1: DHCP, DNS and the API serve, no machine can install); "
        "the variable takes 1/true/yes/on or 0/false/no/off",
        default=False,
        nargs=0,
        action=opt.Flag,
    )
    _add_log_options(serve, settings)

    render, settings = command(
        "render",
        help="print what the server serves a machine",
        description="Print exactly what bootstrapperd serves machine MAC for KIND, from "
        "BSROOT's cluster description, templates and certificates (creating the certificates "
        "when missing, as the server does).",
    )
    render.add_argument(
        "--mac", required=True, type=opt.mac, help="the machine's MAC, any spelling"
    )
    kinds = tuple(k.value for k in Kind)
    render.add_argument(
        "--kind",
        required=True,
        type=opt.choice(*kinds),
        metavar=opt.metavar(*kinds),
        help="what to render",
    )
    opt.option(render, settings, "--bsroot", "BSROOT", opt.path, "the bsroot, required")
    render.add_argument(
        "--server",
        type=opt.base_url,
        default=None,
        help="base URL the machine reaches the server by (default: http://<bootstrapper>"
        "[:http_port] from the model)",
    )

    preflight = sub.add_parser(
        "preflight",
        help="check that this machine can serve a bsroot now (what install-bootstrapper.sh runs)",
        description="Check, without serving, what `serve` needs: the bsroot and its cluster "
        "description, the bootstrapper address on an interface, and ports 67 (DHCP), 69 (TFTP), "
        "53 (DNS) and the HTTP port free. Exit 0 when serve can start, 1 with the reasons.",
    )
    preflight.add_argument("--bsroot", type=opt.path, required=True, help="the bsroot directory")
    preflight.add_argument(
        "--interface", type=opt.interface, help="serve on this interface (as serve's --interface)"
    )
    preflight.add_argument(
        "--address", type=opt.ipv4, help="bind this address (as serve's --address)"
    )
    preflight.add_argument("--http-port", type=opt.port, help="HTTP port (as serve's --http-port)")

    admin_help = (
        "the bsroot the daemon serves: its admin channel is BSROOT/state/admin.sock (mode 0600: "
        "run as root on the bootstrapper; env BOOTSTRAPPERD_BSROOT)"
    )
    machines, settings = command(
        "machines", help="the fleet: every machine with its state, address and last event"
    )
    opt.option(machines, settings, "--bsroot", "BSROOT", opt.path, admin_help)
    machines.add_argument("--json", action="store_true", help="the daemon's JSON, as it is")
    for name, what in (
        ("reinstall", "install MAC again at its next network boot (installed or failed → ready)"),
        ("approve", "let a discovered MAC install (dhcp.unknown_machines: approve)"),
    ):
        change, settings = command(name, help=what)
        opt.option(change, settings, "--bsroot", "BSROOT", opt.path, admin_help)
        change.add_argument("macs", metavar="MAC", nargs="+", type=opt.mac, help="any spelling")
        if name == "reinstall":
            change.add_argument(
                "--power-cycle",
                action="store_true",
                help="then, through each machine's BMC (nodes[].bmc), set its next boot to the "
                "network once and power-cycle it",
            )
    power, settings = command(
        "power",
        help="power machines through their BMCs: MAC... on|off|cycle|status|pxe-once",
        description="Send ACTION to each machine's BMC (nodes[].bmc), through the running "
        "daemon: IPMI or Redfish, at most --concurrency at once, power-on staggered by "
        "--stagger seconds; one line per machine as it happens, in its timeline too. Exit 1 "
        "when any machine failed.",
    )
    opt.option(power, settings, "--bsroot", "BSROOT", opt.path, admin_help)
    power.add_argument(
        "words", metavar="MAC... ACTION", nargs="+", help="the machines, then the action"
    )
    power.add_argument(
        "--all", action="store_true", help="every machine of the description with a bmc"
    )
    power.add_argument(
        "--stagger", type=opt.seconds, default=2.0, help="seconds between power-ons (default 2)"
    )
    power.add_argument(
        "--concurrency",
        type=opt.concurrency,
        default=8,
        help="machines handled at once (1-64, default 8)",
    )

    demo, settings = command("demo", help="check and serve the bundled example in a network lab")
    demo.add_argument(
        "--hold",
        action="store_true",
        help="keep serving until Ctrl-C instead of stopping after the tour",
    )
    demo.add_argument(
        "--example",
        type=opt.path,
        default=None,
        help="cluster description to use (default: the bundled example)",
    )
    _add_log_options(demo, settings)
    # The lab's own variables, read by bootstrapperd.lab.vm: checked here, before the lab.
    settings.append(opt.Setting(None, "LAB_ACCEL", opt.choice(*opt.ACCELS)))
    settings.append(opt.Setting(None, "LAB_CACHE", opt.directory))
    return parser


def _add_log_options(parser: argparse.ArgumentParser, settings: list[opt.Setting]) -> None:
    opt.option(
        parser,
        settings,
        "--log-format",
        "LOG_FORMAT",
        opt.choice(*logs.LOG_FORMATS),
        "text or json lines (default text)",
        default="text",
        metavar=opt.metavar(*logs.LOG_FORMATS),
    )
    opt.option(
        parser,
        settings,
        "--log-level",
        "LOG_LEVEL",
        opt.choice(*opt.LOG_LEVELS),
        "the least severe level logged (default info)",
        default="info",
        metavar=opt.metavar(*opt.LOG_LEVELS),
    )


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """A bad command line or variable, or no bsroot: one line, exit 2 (argparse's own)."""
    print(f"bootstrapperd {args.command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be a cluster description without even opening it: a directory, or a
    FIFO or device (reading one could block forever). None: the loader says the rest."""
    if os.path.isdir(path):
        return f"{path}: cannot read: is a directory"
    if os.path.exists(path) and not os.path.isfile(path):
        return f"{path}: cannot read: not a regular file (a FIFO, socket or device)"
    return None


def _not_a_bsroot(path: Path) -> str | None:
    """Why ``path`` is no bsroot at all (serve, render and preflight exit 2), or None."""
    make = f"bootstrapperd-pack CLUSTER-DESC.yml -o {path} makes one"
    if not os.path.exists(path):
        return f"bsroot {path} does not exist: {make}"
    if not os.path.isdir(path):
        return f"bsroot {path} is not a directory"
    if not os.path.isfile(Bsroot(path).cluster_desc):
        return f"{path} is not a bsroot: it has no config/cluster-desc.yml; {make}"
    return None


def _bsroot(args: argparse.Namespace) -> Bsroot | str:
    """The bsroot the command line or BOOTSTRAPPERD_BSROOT names, or why there is none."""
    if args.bsroot is None:
        return "no bsroot: pass --bsroot DIR or set BOOTSTRAPPERD_BSROOT"
    return _not_a_bsroot(args.bsroot) or Bsroot(args.bsroot)


def cmd_check(args: argparse.Namespace) -> int:
    unreadable = _unreadable(args.file)
    if unreadable is not None:
        print(unreadable, file=sys.stderr)
        return EXIT_INVALID
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
    bsroot = _bsroot(args)
    if isinstance(bsroot, str):
        return _usage_error(args, bsroot)
    logs.configure(args.log_format, args.log_level)
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
    if not check_boot_files(bsroot, holder.model, anyway=args.serve_without_boot_files):
        return EXIT_INVALID
    if args.verify_bsroot != "off":
        check_bsroot(bsroot, full=args.verify_bsroot == "full")
    try:
        listen = resolve_listen(holder.model, args.interface, args.address, args.http_port)
        return asyncio.run(run(holder, listen, args.grace_period, bsroot, Notifier()))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_INVALID


def check_boot_files(bsroot: Bsroot, model: ClusterModel, *, anyway: bool) -> bool:
    """Refuse a bsroot that no machine can boot from (exit 1: a daemon that answers DHCP with
    boot files it does not have strands every machine), naming each file and the command that
    fills bsroot. With ``anyway`` (the operator asked), one warning line and serve. True:
    serve."""
    missing = missing_boot_files(bsroot, model)
    if not missing:
        return True
    fill = f"bootstrapperd-pack {bsroot.cluster_desc} -o {bsroot.root}"
    if anyway:
        log.warning(
            "bsroot lacks boot files (%s): serving anyway (--serve-without-boot-files); no "
            "machine installs until %s fills it",
            ", ".join(f"{path} {why}" for path, why in missing),
            fill,
        )
        return True
    for path, why in missing:
        log.error("bsroot: boot file %s: %s", path, why, extra={"fields": {"path": str(path)}})
    log.error(
        "bsroot lacks %d of the files machines boot from: fill it with %s "
        "(or pass --serve-without-boot-files to serve DHCP, DNS and the API anyway)",
        len(missing),
        fill,
    )
    return False


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
    bsroot = _bsroot(args)
    if isinstance(bsroot, str):
        return _usage_error(args, bsroot)
    try:
        model = load_cluster_file(bsroot.cluster_desc)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INVALID
    server = args.server or base_url(model.bootstrapper, model.http_port)
    try:
        rendered = Renderer(bsroot, ClusterPKI(bsroot.tls)).render(
            Kind(args.kind), model, args.mac, server.rstrip("/")
        )
    except (TemplateError, PKIError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if rendered is None:
        print(
            f"render: {args.mac} is not in the cluster and unknown machines are ignored",
            file=sys.stderr,
        )
        return EXIT_INVALID
    sys.stdout.write(rendered.text)
    return EXIT_OK


def cmd_preflight(args: argparse.Namespace) -> int:
    bsroot = _bsroot(args)
    if isinstance(bsroot, str):
        return _usage_error(args, bsroot)
    report = preflight(bsroot, args.interface, args.address, args.http_port)
    for fact in report.facts:
        print(f"ok: {fact}")
    for problem in report.problems:
        print(f"refused: {problem}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INVALID


def _channel(args: argparse.Namespace) -> AdminChannel | str:
    bsroot = _bsroot(args)
    if isinstance(bsroot, str):
        return bsroot
    return AdminChannel(bsroot.admin_socket)


def cmd_machines(args: argparse.Namespace) -> int:
    channel = _channel(args)
    if isinstance(channel, str):
        return _usage_error(args, channel)
    try:
        table = channel.machines()
    except AdminError as exc:
        print(f"bootstrapperd machines: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_table(table))
    return EXIT_OK


def cmd_change(args: argparse.Namespace) -> int:
    """reinstall or approve each MAC; every MAC is tried, the exit is 1 if any was refused."""
    channel = _channel(args)
    if isinstance(channel, str):
        return _usage_error(args, channel)
    route = routes.ADMIN_REINSTALL if args.command == "reinstall" else routes.ADMIN_APPROVE
    code = EXIT_OK
    changed = []
    for mac in args.macs:
        try:
            answer = channel.change(route, mac)
        except AdminError as exc:
            print(f"bootstrapperd {args.command}: {exc}", file=sys.stderr)
            code = EXIT_INVALID
            continue
        changed.append(mac)
        print(f"{mac}: {answer.get('state')} ({answer.get('why')})")
    if getattr(args, "power_cycle", False) and changed:
        try:
            # Network boot once (a machine whose disk comes first would boot it), then cycle.
            # (A BMC that refuses pxe-once still cycles: a network-first machine needs no more.)
            once = _power(channel, "pxe-once", changed)
            if not _power(channel, "cycle", changed) or not once:
                code = EXIT_INVALID
        except AdminError as exc:
            print(f"bootstrapperd reinstall: {exc}", file=sys.stderr)
            code = EXIT_INVALID
    return code


POWER_ACTIONS = ("on", "off", "cycle", "status", "pxe-once")


def _power(
    channel: AdminChannel, action: str, macs: list[str], *, every: bool = False,
    stagger: float = 0.0, concurrency: int = 8
) -> bool:  # fmt: skip
    """Run ``action`` through the daemon, printing each machine's result; True: all went well."""
    failed: list[str] = []

    def line(item: dict[str, object]) -> None:
        if item.get("done"):
            ok = item.get("ok") is True
            if not ok:
                failed.append(str(item.get("mac")))
            mark = "ok" if ok else f"FAILED ({item.get('failure')})"
            print(f"{item.get('mac')}: power {action}: {mark}: {item.get('message')}", flush=True)

    channel.power(action, macs, line, every=every, stagger=stagger, concurrency=concurrency)
    return not failed


def cmd_power(args: argparse.Namespace) -> int:
    *named, action = args.words
    if action not in POWER_ACTIONS:
        return _usage_error(args, f"{action!r} is not an action ({', '.join(POWER_ACTIONS)})")
    macs = []
    for text in named:
        try:
            macs.append(opt.mac(text))
        except argparse.ArgumentTypeError as exc:
            return _usage_error(args, str(exc))
    if bool(macs) == args.all:
        return _usage_error(args, "name the machines or pass --all (not both)")
    channel = _channel(args)
    if isinstance(channel, str):
        return _usage_error(args, channel)
    try:
        ok = _power(
            channel, action, macs, every=args.all, stagger=args.stagger,
            concurrency=args.concurrency,
        )  # fmt: skip
    except AdminError as exc:
        print(f"bootstrapperd power: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK if ok else EXIT_INVALID


def cmd_demo(args: argparse.Namespace) -> int:
    from .lab.demo import run_demo

    if args.example is not None:  # the operator's input first, before the lab's prerequisites
        unreadable = _unreadable(args.example)
        if unreadable is not None:
            print(unreadable, file=sys.stderr)
            return EXIT_INVALID
        try:
            load_cluster_file(args.example)
        except ConfigError as exc:
            print(exc.report(), file=sys.stderr)
            return EXIT_INVALID
    logs.configure(args.log_format, args.log_level)
    return run_demo(example=args.example, hold=args.hold)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: its exit code, and never a traceback (see the module's docstring)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): nobody left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INVALID
    except Exception as exc:  # the last resort: a bug, said in one line
        print(internal_error("bootstrapperd", exc), file=sys.stderr)
        return EXIT_INTERNAL


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    for setting in getattr(args, "settings", ()):
        try:
            setting.apply(args)
        except argparse.ArgumentTypeError as exc:
            return _usage_error(args, str(exc))
    commands = {
        "check": cmd_check,
        "serve": cmd_serve,
        "render": cmd_render,
        "preflight": cmd_preflight,
        "machines": cmd_machines,
        "reinstall": cmd_change,
        "approve": cmd_change,
        "power": cmd_power,
        "demo": cmd_demo,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
