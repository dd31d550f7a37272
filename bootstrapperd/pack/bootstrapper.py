"""The bootstrapper itself, carried in bsroot: what installs and runs bootstrapperd on a site
with no internet.

``bsroot/bootstrapper/`` gets, in every case, an offline Python install — a wheelhouse holding
bootstrapperd's own wheel, every runtime dependency as a binary wheel for the bootstrapper's
Python (version, architecture, glibc: ``SiteTarget``), at the versions installed here (the ones
tested with), and pip's wheel, which installs them into a venv without ``python3-venv``'s
ensurepip — plus the systemd units. When an image builder (Docker or podman) is there, it also
gets the container image as a ``docker load``/``podman load``-able archive, built from the
project's ``Containerfile`` (or an image already built, named by ``--bootstrapper-image``).
``bsroot/install-bootstrapper.sh`` installs and starts either form from bsroot alone;
``bootstrapper/site.env`` tells it what was packed. The manifest covers all of it.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .. import __version__
from ..bsroot.layout import Bsroot, write_atomically
from ..oci.reference import parse_reference
from ..runtime.resources import config_dir, systemd_dir

__all__ = [
    "BootstrapperError",
    "SiteTarget",
    "add_options",
    "own_wheel",
    "pack_bootstrapper",
]

DIST = "bootstrapperd"
UNITS = ("bootstrapperd.service", "bootstrapperd-container.service")
IMAGE_ARCHIVE = "bootstrapperd-image.tar"
INSTALL_SCRIPT = "install-bootstrapper.sh"
# The glibc assumed when this machine is not Linux (a Mac laptop): Debian 12's, the Containerfile's
# base.
DEFAULT_GLIBC = "2.36"
# Files of an installed distribution that a wheel does not carry (the installer writes them).
_INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


class BootstrapperError(Exception):
    """The bootstrapper's own install could not be put into bsroot; the message says why."""


@dataclass(frozen=True)
class SiteTarget:
    """The bootstrapper's Python: the wheels must be for this version, architecture and glibc."""

    python: str  # "3.11"
    arch: str  # "x86_64", "aarch64"
    glibc: str  # "2.36": the newest glibc the wheels may need

    @classmethod
    def here(cls) -> SiteTarget:
        """This machine's Python, architecture and glibc (a laptop like the bootstrapper); the
        Containerfile's Debian 12 where this is not Linux."""
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        glibc = ""
        if sys.platform == "linux":
            with contextlib.suppress(ValueError, OSError):
                glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").removeprefix("glibc ")
        arch = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
        return cls(python, arch or "x86_64", glibc or DEFAULT_GLIBC)

    @classmethod
    def parse(cls, python: str | None, arch: str | None, glibc: str | None) -> SiteTarget:
        here = cls.here()
        target = cls(python or here.python, arch or here.arch, glibc or here.glibc)
        if not re.fullmatch(r"3\.\d{1,2}", target.python):
            raise BootstrapperError(f"--site-python {target.python!r}: expected 3.N, like 3.11")
        if target.arch not in ("x86_64", "aarch64"):
            raise BootstrapperError(f"--site-arch {target.arch!r}: expected x86_64 or aarch64")
        if not re.fullmatch(r"2\.\d{1,2}", target.glibc):
            raise BootstrapperError(f"--site-glibc {target.glibc!r}: expected 2.N, like 2.36")
        return target

    def pip_options(self) -> list[str]:
        """pip's cross-platform download options. pip takes a wheel only when one of its tags is
        named exactly, so every manylinux tag the site's glibc runs is listed: PEP 600's
        ``manylinux_2_N`` down to glibc 2.5 and the legacy names (manylinux2014 = 2.17, 2010 =
        2.12, 1 = 2.5); ``abi3`` and ``none`` wheels come with the CPython ABI."""
        tag = self.python.replace(".", "")
        newest = int(self.glibc.split(".")[1])
        platforms = [f"manylinux_2_{minor}_{self.arch}" for minor in range(newest, 4, -1)]
        legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
        platforms += [f"{name}_{self.arch}" for name, minor in legacy.items() if minor <= newest]
        platforms.append(f"linux_{self.arch}")  # wheels built locally, in a find-links wheelhouse
        return [
            "--only-binary=:all:",
            "--implementation=cp",
            f"--python-version={self.python}",
            f"--abi=cp{tag}",
            *(f"--platform={platform}" for platform in platforms),
        ]


def add_options(parser: ArgumentParser) -> None:
    """pack's options for the bootstrapper's own install."""
    group = parser.add_argument_group(
        "the bootstrapper itself (bsroot/bootstrapper, bsroot/install-bootstrapper.sh)"
    )
    group.add_argument(
        "--no-bootstrapper",
        action="store_true",
        help="leave bootstrapperd itself out of bsroot (it is then installed on site otherwise)",
    )
    group.add_argument(
        "--site-python",
        metavar="3.N",
        help="the bootstrapper's CPython version the wheels are for (default: this one's)",
    )
    group.add_argument(
        "--site-arch", metavar="ARCH", help="x86_64 or aarch64 (default: this machine's)"
    )
    group.add_argument(
        "--site-glibc",
        metavar="2.N",
        help=f"the bootstrapper's glibc version (default: this machine's, else {DEFAULT_GLIBC})",
    )
    group.add_argument(
        "--bootstrapper-image",
        type=_image_choice,
        default="auto",
        metavar="auto|none|IMAGE",
        help="the container image archive: auto (build it from the Containerfile when docker or "
        "podman answers, else leave it out), none, or the name of an image already built",
    )


def _image_choice(text: str) -> str:
    if text in ("auto", "none"):
        return text
    try:
        parse_reference(text)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not auto, none or an image name") from None
    return text


@dataclass(frozen=True)
class Packed:
    """What went into ``bsroot/bootstrapper``."""

    wheels: tuple[str, ...]
    image: str | None  # the image's name when its archive is there


def pack_bootstrapper(
    bsroot: Bsroot,
    target: SiteTarget,
    image: str,
    say: Callable[[str], None],
    runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> Packed:
    """Fill ``bsroot/bootstrapper`` and ``bsroot/install-bootstrapper.sh``. ``image``: ``auto``
    (build the container image when an image builder is there, else leave it out and say why),
    ``none``, or the name of an image already built (saved, never rebuilt)."""
    site = bsroot.bootstrapper
    site.mkdir(parents=True, exist_ok=True)
    wheels = _wheelhouse(site / "wheels", target, say, runner)
    for unit in UNITS:
        write_atomically(site / "systemd" / unit, (systemd_dir() / unit).read_bytes())
    script = (config_dir() / "site" / INSTALL_SCRIPT).read_bytes()
    write_atomically(bsroot.root / INSTALL_SCRIPT, script, mode=0o755)
    saved = None if image == "none" else _image(site, image, say, runner)
    if saved is None:
        (site / IMAGE_ARCHIVE).unlink(missing_ok=True)
    env = {
        "VERSION": __version__,
        "PYTHON": target.python,
        "ARCH": target.arch,
        "GLIBC": target.glibc,
        "IMAGE": saved or "",
    }
    text = "".join(f"{key}={value}\n" for key, value in env.items())
    write_atomically(site / "site.env", text.encode())
    say(
        f"bootstrapper: {len(wheels)} wheels for CPython {target.python} {target.arch} "
        f"(glibc {target.glibc})"
        + (f", image {saved}" if saved else ", no container image")
        + f"; install on site with {bsroot.root / INSTALL_SCRIPT}"
    )
    return Packed(tuple(wheels), saved)


# ---- the wheelhouse ---------------------------------------------------------------------------


def _wheelhouse(
    dest: Path,
    target: SiteTarget,
    say: Callable[[str], None],
    runner: Callable[..., subprocess.CompletedProcess[str]],
) -> list[str]:
    """bootstrapperd's wheel, its dependencies for ``target`` pinned to the versions installed
    here, and pip's wheel, downloaded beside and renamed into place whole (a failed run leaves
    the previous wheelhouse, never half of one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheels.", dir=dest.parent) as tmp:
        work = Path(tmp)
        fresh = work / "wheels"
        fresh.mkdir()
        wheel = own_wheel(fresh, runner)
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(_pins().items())))
        _pip(
            runner,
            "download",
            "--quiet",
            "--dest",
            str(fresh),
            *target.pip_options(),
            "--constraint",
            str(constraints),
            str(wheel),
            "pip",
            what=f"the dependencies for CPython {target.python} {target.arch}",
        )
        names = sorted(p.name for p in fresh.glob("*.whl"))
        if not any(n.startswith("pip-") for n in names):
            raise BootstrapperError("pip download gave no pip wheel")
        old = work / "old"
        if dest.exists():
            dest.rename(old)
        fresh.rename(dest)
    say(f"bootstrapper: wheelhouse {dest} ({len(names)} wheels)")
    return names


def _pins() -> dict[str, str]:
    """The installed versions of bootstrapperd's runtime dependencies, transitively, and of pip."""
    pins: dict[str, str] = {}
    todo = [DIST, "pip"]
    while todo:
        name = _normal(todo.pop())
        if name in pins:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # needed only under markers that do not hold here: pip resolves it
        pins[name] = dist.version
        for requirement in dist.requires or []:
            if re.search(r"\bextra\s*==", requirement):
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    pins.pop(DIST, None)  # its wheel is given by path
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip(
    runner: Callable[..., subprocess.CompletedProcess[str]], *args: str, what: str
) -> subprocess.CompletedProcess[str]:
    # pip reads PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX … from the environment: a laptop
    # behind a mirror, or one packing from a local wheelhouse, sets them as for any pip.
    result = runner(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = " / ".join(lines[-3:]) or f"exit status {result.returncode}"
        raise BootstrapperError(f"pip could not get {what}: {reason}")
    return result


def own_wheel(
    dest: Path,
    runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> Path:
    """bootstrapperd's own wheel, in ``dest``. From a source checkout (an editable or a
    directory install, as in development) the build backend builds it; from an installed
    wheel, the installed files are packed again as the wheel they came from."""
    dist = importlib.metadata.distribution(DIST)
    source = _source_tree(dist)
    if source is not None:
        _pip(
            runner,
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(dest),
            str(source),
            what=f"bootstrapperd's wheel built from {source}",
        )
        built = sorted(dest.glob(f"{DIST}-{__version__}-*.whl"))
        if not built:
            raise BootstrapperError(f"pip wheel {source} made no {DIST} {__version__} wheel")
        return built[0]
    return _repack(dist, dest)


def _source_tree(dist: importlib.metadata.Distribution) -> Path | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    with contextlib.suppress(ValueError, AttributeError):
        info = json.loads(text)
        url = urlparse(info["url"])
        if url.scheme == "file" and "dir_info" in info:
            path = Path(unquote(url.path))
            if (path / "pyproject.toml").is_file():
                return path
    return None


def _repack(dist: importlib.metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed pure-Python distribution: its files under site-packages (not
    the console scripts, which the installer makes from entry_points.txt), its dist-info with
    the WHEEL file, and a RECORD of sha256 digests (the wheel format, PEP 427)."""
    files = [f for f in dist.files or [] if not str(f).startswith("..")]
    info = next((f.parent for f in files if f.name == "WHEEL"), None)
    if info is None:
        raise BootstrapperError(f"the installed {DIST} has no dist-info WHEEL file to pack")
    wheel_file = (dist.read_text("WHEEL") or "").splitlines()
    tags = [line.split(":", 1)[1].strip() for line in wheel_file if line.startswith("Tag:")]
    name = f"{DIST}-{dist.version}-{tags[0] if tags else 'py3-none-any'}.whl"
    target = dest / name
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for item in sorted(files, key=str):
            path = item.as_posix()
            if "__pycache__" in path or (item.parent == info and item.name in _INSTALLER_FILES):
                continue
            data = Path(str(item.locate())).read_bytes()
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            writer.writerow([path, f"sha256={digest.decode()}", len(data)])
        writer.writerow([f"{info.as_posix()}/RECORD", "", ""])
        wheel.writestr(f"{info.as_posix()}/RECORD", record.getvalue())
    return target


# ---- the container image ----------------------------------------------------------------------


def _image(
    site: Path,
    image: str,
    say: Callable[[str], None],
    runner: Callable[..., subprocess.CompletedProcess[str]],
) -> str | None:
    """Build (``auto``) or take (a name) the image and save it as ``bootstrapperd-image.tar``:
    its name, or None when ``auto`` found no way to build it (said, not an error)."""
    engine = _engine(runner)
    if engine is None:
        if image != "auto":
            raise BootstrapperError(
                f"--bootstrapper-image {image}: no image builder (docker or podman) answers here"
            )
        say(
            "bootstrapper: no container image (no docker or podman engine answers here); "
            "the wheelhouse installs it without one"
        )
        return None
    name = image
    if image == "auto":
        source = _source_tree(importlib.metadata.distribution(DIST))
        if source is None or not (source / "Containerfile").is_file():
            say(
                "bootstrapper: no container image (this install of bootstrapperd-pack has no "
                "source tree with the Containerfile; name a built image with "
                "--bootstrapper-image NAME)"
            )
            return None
        name = f"bootstrapperd:{__version__}"
        say(f"bootstrapper: building {name} with {engine} from {source / 'Containerfile'}")
        built = runner(
            [engine, "build", "-t", name, "-f", str(source / "Containerfile"), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            tail = " / ".join(built.stderr.strip().splitlines()[-2:])
            say(
                f"bootstrapper: no container image ({engine} build failed: {tail}); "
                "the wheelhouse installs it without one"
            )
            return None
    fd, tmp = tempfile.mkstemp(prefix=f".{IMAGE_ARCHIVE}.", suffix=".part", dir=site)
    os.close(fd)
    try:
        saved = runner(
            [engine, "save", "-o", tmp, name], capture_output=True, text=True, check=False
        )
        if saved.returncode != 0:
            raise BootstrapperError(f"{engine} save {name}: {saved.stderr.strip()}")
        os.replace(tmp, site / IMAGE_ARCHIVE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    say(f"bootstrapper: image {name} saved as {site / IMAGE_ARCHIVE}")
    return name


def _engine(runner: Callable[..., subprocess.CompletedProcess[str]]) -> str | None:
    """docker or podman, whichever is installed and answers (its engine is reachable)."""
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        try:
            probe = runner(
                [engine, "info", "--format", "{{json .}}"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return engine
    return None
