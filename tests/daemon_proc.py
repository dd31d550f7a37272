"""Start ``bootstrapperd serve`` as a user would (the console entry point) inside a namespace.

The tests' bsroots are laid out by pack without downloads (no iPXE binaries, no OS kernel):
serve is told to start anyway (``--serve-without-boot-files``); the tests that place boot
files place them themselves."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bootstrapperd.lab.netlab import Namespace
from bootstrapperd.lab.vm.lab import console_script


def bootstrapperd_command() -> list[str]:
    """The installed console script beside this interpreter, as a user would run it."""
    return console_script("bootstrapperd", "bootstrapperd")


class DaemonProcess:
    def __init__(
        self,
        ns: Namespace,
        bsroot: Path,
        *args: str,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.log_path = log or (bsroot.parent / f"daemon-{ns.name}.log")
        argv = [
            *bootstrapperd_command(),
            *("serve", "--bsroot", str(bsroot), "--serve-without-boot-files", *args),
        ]
        with self.log_path.open("wb") as log_file:  # the child keeps its own descriptor
            self.proc = ns.spawn(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
