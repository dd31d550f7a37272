"""Value parsers shared by the loader: MACs, hostnames, lease durations, YAML 1.1 booleans.

Each returns ``None`` for a value it cannot read; the caller reports it with path and line.
"""

from __future__ import annotations

import re

_HEX12 = re.compile(r"^[0-9a-f]{12}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

# YAML 1.1 (as Go's yaml.v2, which Sextant used, reads it): y/n, yes/no, on/off, true/false.
_TRUE = {"y", "yes", "true", "on"}
_FALSE = {"n", "no", "false", "off"}


def canonical_mac(value: str) -> str | None:
    """``00-25-90-C0-F7-80``, ``0025.90c0.f780``, ``002590c0f780`` → ``00:25:90:c0:f7:80``."""
    text = value.strip().lower()
    if re.fullmatch(r"[0-9a-f]{1,2}([:-])[0-9a-f]{1,2}(\1[0-9a-f]{1,2}){4}", text):
        octets = re.split(r"[:-]", text)
        return ":".join(o.zfill(2) for o in octets)
    if re.fullmatch(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}", text):
        text = text.replace(".", "")
    if _HEX12.fullmatch(text):
        return ":".join(text[i : i + 2] for i in range(0, 12, 2))
    return None


def hostname_from_mac(mac: str) -> str:
    """Sextant's rule for a node without ``cur_host_name``: the MAC, lowercase, with dashes."""
    return mac.lower().replace(":", "-")


def is_dns_label(text: str) -> bool:
    return bool(_LABEL.fullmatch(text))


def is_domain_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(is_dns_label(label) for label in labels)


def parse_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def parse_lease(value: object) -> tuple[bool, int | None]:
    """A dnsmasq-style lease time. Returns (ok, seconds); seconds None means infinite.

    Accepts ``infinite``, plain seconds (``3600`` or ``"3600"``), and unit forms ``30m``,
    ``12h``, ``7d``, ``1w``, or combinations such as ``1h30m``.
    """
    if isinstance(value, bool):
        return False, None
    if isinstance(value, int):
        return (value > 0, value)
    if not isinstance(value, str):
        return False, None
    text = value.strip().lower()
    if text in ("infinite", "infinity"):
        return True, None
    if re.fullmatch(r"[0-9]+", text):
        seconds = int(text)
        return (seconds > 0, seconds)
    pos = 0
    total = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return False, None
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or total <= 0:
        return False, None
    return True, total


def format_seconds(seconds: int | None) -> str:
    if seconds is None:
        return "infinite"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
