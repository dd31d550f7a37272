"""``bootstrapperd-pack``: assemble the offline bsroot for a cluster description, on a laptop.

Validates the description with the daemon's own loader, lays out the bsroot (DESIGN.md), makes
the CA and bootstrapper certificate when missing (never replacing a CA a running cluster
trusts), then downloads, verifies and places everything the machines will fetch on site: the
OS release (signatures checked against a pinned key), Kubernetes binaries (published sha256
checked), iPXE boot files, and the container images (registry API v2, digests checked) — and
writes ``manifest.json`` last. Every download goes through :mod:`.fetch`: resumed, retried,
bounded in parallel, renamed into place only when verified. A re-run fetches only what is
missing or changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp

from .. import __version__
from .. import options as opt
from ..bsroot.layout import Bsroot, write_atomically
from ..bsroot.manifest import Manifest, ManifestError, build, verify
from ..bsroot.pki import ClusterPKI, PKIError
from ..download.fetcher import Fetcher, FetchError
from ..model import ClusterModel, ConfigError, load_cluster_file
from ..runtime.errors import internal_error
from .binaries import BinaryError, fetch_ipxe, fetch_kubernetes
from .bootstrapper import BootstrapperError, SiteTarget, add_options, pack_bootstrapper
from .display import Progress
from .images import ImagesError, default_cache, pack_images
from .release import ReleaseError, fetch_release
from .signing import KNOWN_KEYS, SignatureError, SigningKey, dearmor, primary_fingerprint

__all__ = ["PackOptions", "init_bsroot", "main", "pack"]


def init_bsroot(description: Path, out: Path) -> Bsroot:
    """Validate ``description`` (raises ConfigError), create the layout, copy it into config/,
    create the CA and bootstrapper certificate when missing."""
    model = load_cluster_file(description)
    bsroot = Bsroot(out)
    for directory in bsroot.directories():
        directory.mkdir(parents=True, exist_ok=True)
    write_atomically(bsroot.cluster_desc, description.read_bytes())
    pki = ClusterPKI(bsroot.tls)
    pki.ca(model)
    pki.bootstrapper(model)
    return bsroot


@dataclass
class PackOptions:
    """What the command line can override; None = the description's value, else the default."""

    mirror: str | None = None
    kubernetes_mirror: str | None = None
    ipxe_url: str | None = None
    registry_mirrors: dict[str, str] = field(default_factory=dict)
    signing_key: str | None = None
    signing_key_fingerprint: str | None = None
    jobs: int = 4
    retries: int = 5
    backoff: float = 0.5
    cache: Path | None = None
    images: bool = True
    # bootstrapperd itself for the site; None: left out (--no-bootstrapper)
    site: SiteTarget | None = None
    bootstrapper_image: str = "auto"


async def pack(
    model: ClusterModel,
    description: Path,
    bsroot: Bsroot,
    options: PackOptions,
    progress: Progress,
    say: Callable[[str], None],
) -> tuple[list[str], dict[Path, tuple[int, int, str]]]:
    """Fetch every part into ``bsroot``: the failures, by part (empty when all went well), and
    the hashes the downloader computed (for the manifest)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
        fetcher = Fetcher(
            session,
            jobs=options.jobs,
            retries=options.retries,
            backoff=options.backoff,
            progress=progress,
        )
        key = await _signing_key(model, description, options, fetcher, say)
        parts: dict[str, Awaitable[object]] = {
            "os": fetch_release(
                fetcher,
                model.os,
                bsroot.html_static,
                key,
                mirror=options.mirror,
                log=say,
            ),
            "kubernetes": fetch_kubernetes(
                fetcher,
                options.kubernetes_mirror or model.downloads.kubernetes,
                model.kubernetes_version,
                bsroot.html_static / "kubernetes",
            ),
            "ipxe": fetch_ipxe(
                fetcher, options.ipxe_url or model.downloads.ipxe, bsroot.tftpboot, log=say
            ),
        }
        if options.images:
            registries = {**model.downloads.registries, **options.registry_mirrors}
            parts["images"] = pack_images(
                session, fetcher, model, bsroot, registries, options.cache, say
            )
        if options.site is not None:
            parts["bootstrapper"] = asyncio.to_thread(
                pack_bootstrapper, bsroot, options.site, options.bootstrapper_image, say
            )
        results = await asyncio.gather(*parts.values(), return_exceptions=True)
    failures = []
    for name, result in zip(parts, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            failures.append(f"{name}: {_describe(result)}")
    return failures, fetcher.hashed


def _describe(exc: Exception) -> str:
    known = (
        ReleaseError,
        BinaryError,
        FetchError,
        SignatureError,
        ImagesError,
        BootstrapperError,
        OSError,
    )
    return str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"


async def _signing_key(
    model: ClusterModel,
    description: Path,
    options: PackOptions,
    fetcher: Fetcher,
    say: Callable[[str], None],
) -> SigningKey:
    published = KNOWN_KEYS[model.os.name]
    source = options.signing_key or model.downloads.signing_key or published.url
    fingerprint = options.signing_key_fingerprint or model.downloads.signing_key_fingerprint
    if source.startswith(("http://", "https://")):
        data = await fetcher.fetch_bytes(source, label="signing key")
    else:
        path = Path(source.removeprefix("file://"))
        if not path.is_absolute():
            path = description.parent / path
        data = path.read_bytes()
        source = str(path)
    if fingerprint is None and source == published.url:
        fingerprint = published.fingerprint
    if fingerprint is None:
        if source.startswith(("http://", "https://")):
            raise SignatureError(
                f"signing key {source}: a key fetched from a URL needs its fingerprint pinned "
                "(downloads.signing_key_fingerprint or --signing-key-fingerprint)"
            )
        # A local key file given without a fingerprint is pinned by being that file.
        fingerprint = primary_fingerprint(dearmor(data))
        say(f"signing key {source}: fingerprint {fingerprint}")
    return SigningKey(data, fingerprint, source)


def write_tarball(bsroot: Bsroot, target: Path) -> None:
    """The bsroot as one tar (gzip when the name says so), renamed into place when complete."""
    mode = "w:gz" if target.name.endswith((".tgz", ".tar.gz")) else "w"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, mode) as tar:  # type: ignore[call-overload]
            tar.add(bsroot.root, arcname="bsroot", filter=_tar_filter)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(info.name).name
    if name.startswith(".") or info.name.startswith("bsroot/state/"):
        return None  # partial downloads and the laptop's state stay behind
    return info


def verify_command(root: Path, out: TextIO) -> int:
    bsroot = Bsroot(root)
    try:
        manifest = Manifest.load(bsroot)
    except ManifestError as exc:
        print(f"bootstrapperd-pack: {exc}", file=sys.stderr)
        return 1
    problems = verify(bsroot, manifest)
    for problem in problems:
        print(f"bootstrapperd-pack: {problem}", file=sys.stderr)
    if problems:
        print(
            f"bootstrapperd-pack: {root}: {len(problems)} of {len(manifest.files)} files bad; "
            "re-run bootstrapperd-pack to fetch them again",
            file=sys.stderr,
        )
        return 1
    print(f"{root}: all {len(manifest.files)} files match manifest.json", file=out)
    return 0


def _registry_mirror(text: str) -> tuple[str, str]:
    host, sep, url = text.partition("=")
    if not sep or not host or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST=http(s)://URL")
    return host, url.rstrip("/")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bootstrapperd-pack",
        description="Assemble the offline bsroot directory for a cluster description.",
        epilog="exit codes: 0 done; 1 the cluster description is invalid or cannot be read, or "
        "something could not be fetched or written (what is done is kept; run again); 2 a bad "
        "option, or --verify of a path that is no bsroot; 70 a bug (one line to report); 130 "
        "interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("file", type=opt.path, nargs="?", help="cluster-desc.yml")
    parser.add_argument(
        "-o", "--output", type=opt.path, default=Path("bsroot"), help="bsroot to write (./bsroot)"
    )
    parser.add_argument(
        "--verify",
        type=opt.path,
        metavar="BSROOT",
        help="check BSROOT against its manifest.json (every file's size and sha256) and exit",
    )
    parser.add_argument(
        "--mirror", type=opt.url, help="OS release base URL replacing the public host"
    )
    parser.add_argument(
        "--kubernetes-mirror", type=opt.url, help="base URL of the Kubernetes binaries"
    )
    parser.add_argument("--ipxe-url", type=opt.url, help="base URL of undionly.kpxe and ipxe.efi")
    parser.add_argument(
        "--registry-mirror",
        type=_registry_mirror,
        action="append",
        default=[],
        metavar="HOST=URL",
        help="pull images of registry HOST (as written in references) from URL; repeatable",
    )
    parser.add_argument("--signing-key", type=opt.source, help="OS image signing key: URL or file")
    parser.add_argument(
        "--signing-key-fingerprint", type=opt.fingerprint, help="the key's pinned fingerprint"
    )
    parser.add_argument("-j", "--jobs", type=opt.count(1), default=4, help="parallel downloads (4)")
    parser.add_argument("--retries", type=opt.count(0), default=5, help="retries per download (5)")
    parser.add_argument(
        "--cache",
        type=opt.path,
        help=f"where image layers are kept between runs (default {default_cache()})",
    )
    parser.add_argument("--no-images", action="store_true", help="skip the container images")
    parser.add_argument(
        "--no-downloads",
        action="store_true",
        help="only validate, lay out and make the CA; fetch nothing, write no manifest",
    )
    parser.add_argument("--tarball", type=opt.path, help="also write the finished bsroot as a tar")
    parser.add_argument(
        "--plain", action="store_true", help="plain progress lines even on a terminal"
    )
    add_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Pack; its exit code (see the parser's epilog), never a traceback."""
    try:
        return _main(argv)
    except Exception as exc:  # the last resort: a bug, said in one line
        print(internal_error("bootstrapperd-pack", exc), file=sys.stderr)
        return 70


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verify is not None:
        root = args.verify
        if not os.path.exists(root):
            parser.error(f"argument --verify: bsroot {root} does not exist")
        if not os.path.isdir(root):
            parser.error(f"argument --verify: bsroot {root} is not a directory")
        if not os.path.isfile(Bsroot(root).cluster_desc):
            parser.error(f"argument --verify: {root} is not a bsroot (no config/cluster-desc.yml)")
        return verify_command(root, sys.stdout)
    if args.file is None:
        parser.error("the cluster description is required (or --verify BSROOT)")
    for flag, directory in (("-o/--output", args.output), ("--cache", args.cache)):
        if directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
            parser.error(f"argument {flag}: {str(directory)!r} is not a directory")
    if args.tarball is not None and os.path.isdir(args.tarball):
        parser.error(f"argument --tarball: {str(args.tarball)!r} is a directory, not a file name")
    try:
        site = SiteTarget.parse(args.site_python, args.site_arch, args.site_glibc)
    except BootstrapperError as exc:
        parser.error(str(exc))
    if os.path.isdir(args.file) or (os.path.exists(args.file) and not os.path.isfile(args.file)):
        # (reading a FIFO or a device could block forever) exit 1, as for any unreadable file
        kind = "is a directory" if os.path.isdir(args.file) else "not a regular file"
        print(f"{args.file}: cannot read: {kind}", file=sys.stderr)
        return 1

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        model = load_cluster_file(args.file)
        bsroot = init_bsroot(args.file, args.output)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    except (OSError, PKIError) as exc:
        print(f"bootstrapperd-pack: {exc}", file=sys.stderr)
        return 1
    say(f"wrote {bsroot.cluster_desc} and the CA in {bsroot.tls}")
    if args.no_downloads:
        say("--no-downloads: nothing fetched, no manifest written")
        return 0
    options = PackOptions(
        mirror=args.mirror,
        kubernetes_mirror=args.kubernetes_mirror,
        ipxe_url=args.ipxe_url,
        registry_mirrors=dict(args.registry_mirror),
        signing_key=args.signing_key,
        signing_key_fingerprint=args.signing_key_fingerprint,
        jobs=args.jobs,
        retries=args.retries,
        cache=args.cache,
        images=not args.no_images,
        site=None if args.no_bootstrapper else site,
        bootstrapper_image=args.bootstrapper_image,
    )
    progress = Progress.for_stream(sys.stderr, force_plain=args.plain)
    try:
        failures, hashed = asyncio.run(pack(model, args.file, bsroot, options, progress, say))
    except (FetchError, SignatureError, OSError) as exc:
        failures, hashed = [f"signing key: {exc}"], {}
    except KeyboardInterrupt:
        say("interrupted: partial downloads are kept as .part files and resumed next time")
        return 130
    if failures:
        for failure in failures:
            print(f"bootstrapperd-pack: {failure}", file=sys.stderr)
        print(
            "bootstrapperd-pack: bsroot is incomplete (no manifest written); "
            "fix the above and run again: what is done is kept",
            file=sys.stderr,
        )
        return 1
    previous = None
    with contextlib.suppress(ManifestError):
        previous = Manifest.load(bsroot)
    manifest = build(bsroot, f"bootstrapperd-pack {__version__}", previous, hashed)
    manifest.write(bsroot)
    total = sum(e.size for e in manifest.files.values())
    say(f"wrote {bsroot.root / 'manifest.json'}: {len(manifest.files)} files, {total} bytes")
    if args.tarball is not None:
        write_tarball(bsroot, args.tarball)
        say(f"wrote {args.tarball}")
    return 0
