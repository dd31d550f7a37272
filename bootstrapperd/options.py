"""The command line's values: one validator per kind of value, shared by a flag and its
``BOOTSTRAPPERD_*`` variable (:class:`Setting`), each refusing with a one-line message that
starts with the value (argparse prefixes ``argument --flag:``; a variable, its name)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from .model.fields import canonical_mac


def ipv4(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def interface(text: str) -> str:
    """A name Linux accepts for an interface (``dev_valid_name``); whether this machine has it
    is for ``serve`` to find out (exit 1, "cannot start")."""
    if (
        not 1 <= len(text) <= 15
        or text in (".", "..")
        or any(c in "/:" or c.isspace() or not c.isprintable() for c in text)
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an interface name (1-15 characters, no '/', ':' or spaces)"
        )
    return text


def path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a path")
    return Path(text)


def directory(text: str) -> Path:
    """A directory that may not exist yet, but is nothing else when it does."""
    found = path(text)
    if os.path.lexists(found) and not os.path.isdir(found):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return found


def mac(text: str) -> str:
    found = canonical_mac(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address")
    return found


def base_url(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    host = rest.split("/", 1)[0]
    if scheme not in ("http", "https") or not sep or not host or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a base URL (http://HOST[:PORT] or https://…)"
        )
    if any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a base URL: it holds a space")
    return text.rstrip("/")


TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def boolean(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a boolean ({', '.join(TRUE)}; {', '.join(FALSE)})"
    )


def choice(*choices: str) -> Callable[[str], str]:
    """A validator for one of ``choices`` (argparse's ``choices=`` is not applied to a default,
    so a variable would escape it)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def metavar(*choices: str) -> str:
    return "{" + ",".join(choices) + "}"


LOG_LEVELS = ("debug", "info", "warning", "error")
VERIFY_MODES = ("full", "quick", "off")
ACCELS = ("kvm", "tcg")


@dataclass(frozen=True)
class Setting:
    """An option that ``BOOTSTRAPPERD_<variable>`` may set instead of its flag, through the
    flag's own validator. The flag wins; an unset or empty variable means ``default`` (an
    environment file's template line, ``BOOTSTRAPPERD_INTERFACE=``, is no setting). ``dest``
    None: a variable without a flag, read elsewhere (the demo lab's), validated here."""

    dest: str | None
    variable: str
    parse: Callable[[str], object]
    default: object = None

    @property
    def name(self) -> str:
        return f"BOOTSTRAPPERD_{self.variable}"

    def apply(self, args: argparse.Namespace) -> None:
        """Fill ``args.<dest>`` from the variable when the flag was not given. Raises
        ArgumentTypeError naming the variable and its value."""
        if self.dest is not None and getattr(args, self.dest) is not None:
            return
        text = os.environ.get(self.name, "")
        value = self.default
        if text:
            try:
                value = self.parse(text)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{self.name}={exc}") from None
        if self.dest is not None:
            setattr(args, self.dest, value)


def option(
    parser: argparse.ArgumentParser,
    settings: list[Setting],
    flag: str,
    variable: str,
    parse: Callable[[str], object],
    help: str,
    default: object = None,
    **kwargs: object,
) -> None:
    """``flag`` and ``BOOTSTRAPPERD_<variable>``, both through ``parse``."""
    action = parser.add_argument(
        flag,
        type=parse,
        default=None,
        help=f"{help}; env BOOTSTRAPPERD_{variable}",
        **kwargs,  # type: ignore[arg-type]
    )
    settings.append(Setting(action.dest, variable, parse, default))


class Flag(argparse.Action):
    """A switch (no value) that leaves None when absent, so that its variable may set it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)


def concurrency(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 64")
    return int(text)


def url(text: str) -> str:
    if not text.startswith(("http://", "https://", "file://")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a URL: it starts with http://, https:// or file://"
        )
    return text


def source(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a URL nor a file")
    return text


def fingerprint(text: str) -> str:
    digits = text.replace(" ", "")
    if len(digits) != 40 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a key fingerprint (40 hex digits, spaces allowed)"
        )
    return text


def count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(
                f"{text!r}: must be at least 1" if least else f"{text!r}: must be 0 or more"
            )
        return value

    return parse
