"""A bootstrapperd container image made here, with no network, for the site install's container
form. The Containerfile's build needs Docker Hub's ``debian:12-slim`` and the Debian archive,
which a test never reaches, so the image is assembled the way its runtime stage ends up: this
machine's Debian CPython (the interpreter, its standard library and the shared libraries they
and the wheels' extensions load) and a venv in ``/opt/bootstrapperd`` installed from bsroot's own
wheelhouse, imported with the Containerfile's ENTRYPOINT and PATH. What is under test is the rest
of the path: ``bootstrapperd-pack --bootstrapper-image`` saving it into bsroot, and
``install-bootstrapper.sh --container`` loading, checking and running it on site."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

PYTHON = Path("/usr/bin/python3")
PREFIX = "/opt/bootstrapperd"


def build_rootfs(wheels: Path, version: str, workdir: Path) -> Path:
    """The image's root file system as a tar (``docker import``-able)."""
    real = PYTHON.resolve()  # /usr/bin/python3.11
    minor = real.name.removeprefix("python")
    rootfs = workdir / "rootfs"
    (rootfs / "usr" / "bin").mkdir(parents=True)
    shutil.copy2(real, rootfs / "usr" / "bin" / real.name)
    (rootfs / "usr" / "bin" / "python3").symlink_to(real.name)
    stdlib = Path(f"/usr/lib/python{minor}")
    shutil.copytree(
        stdlib,
        rootfs / stdlib.relative_to("/"),
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "test", "idlelib", "tkinter", "ensurepip"),
    )
    for directory in ("tmp", "etc", "opt", "proc", "sys", "dev"):
        (rootfs / directory).mkdir(exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    # The venv at its real path (shebangs name it), made in a private mount namespace where
    # /opt is the rootfs's.
    pip = next(wheels.glob("pip-*.whl"))
    script = (
        f"mount --bind {rootfs / 'opt'} /opt && "
        f"{PYTHON} -m venv --without-pip {PREFIX} && "
        f"PIP_CONFIG_FILE=/dev/null {PREFIX}/bin/python {pip}/pip install --quiet --no-index "
        f"--no-cache-dir --find-links {wheels} bootstrapperd=={version}"
    )
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        check=True,
        capture_output=True,
        timeout=300,
    )
    _copy_libraries(rootfs)
    tar = workdir / "rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(rootfs, arcname=".")
    return tar


def _copy_libraries(rootfs: Path) -> None:
    """Every shared library the interpreter and the extension modules load, with the loader."""
    objects = [rootfs / "usr" / "bin" / PYTHON.resolve().name, *rootfs.rglob("*.so*")]
    needed: set[Path] = set()
    for path in objects:
        if path.is_symlink() or not path.is_file():
            continue
        listing = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for match in re.finditer(r"(/\S+\.so[.\d]*) \(0x", listing):
            needed.add(Path(match.group(1)))
    for library in needed:
        if str(library).startswith(str(rootfs)):
            continue
        for name in {library, library.resolve()}:
            target = rootfs / name.relative_to("/")
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if name.is_symlink():
                target.symlink_to(name.readlink())
            else:
                shutil.copy2(name, target)
    # Debian's merged /usr: /lib and /lib64 are links into /usr.
    for link, to in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        source = rootfs / link
        if source.exists() and not source.is_symlink():
            for item in source.rglob("*"):
                if item.is_file() or item.is_symlink():
                    destination = rootfs / to / item.relative_to(source)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    if not destination.exists():
                        item.rename(destination)
            shutil.rmtree(source)
        if not source.exists():
            (rootfs / to).mkdir(parents=True, exist_ok=True)
            source.symlink_to(to)
