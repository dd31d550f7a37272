"""Writes the files that come from the key table: the JSON schema and the docs' key tables.

``python -m bootstrapperd.model.keygen`` rewrites them; ``--check`` only compares and exits 1,
naming each stale file. Both renderings are pure functions of the table (and, for the docs, of
the current text around the marked blocks), so tests compare them in memory.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .keys import SECTIONS, TOP, Form, Key, Origin, Value, walk

SCHEMA_FILE = Path("config") / "cluster-desc.schema.json"
DOCS_FILE = Path("docs") / "cluster-description.md"
MARKER = re.compile(
    r"(<!-- keys:begin (?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- keys:end (?P=name) -->)", re.S
)

# ---- the value forms the schema shares between keys (its $defs) ----------------------------------
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(({_OCTET}\.){{3}}{_OCTET})"
_MAC = (
    r"[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}|[0-9A-Fa-f]{1,2}(-[0-9A-Fa-f]{1,2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}|[0-9A-Fa-f]{12}"
)


def defs() -> dict[str, Any]:
    """The schema's ``$defs``: value forms that several keys share."""
    return {
        "yamlBoolean": {
            "description": "A YAML 1.1 boolean as Sextant wrote it: y/n, yes/no, on/off, "
            "true/false (any letter case, quoted or not), or 0/1. Empty (null) means the default.",
            "anyOf": [
                {"type": "boolean"},
                {"enum": ["y", "n"]},
                {
                    "type": "string",
                    "pattern": r"^\s*([Yy]([Ee][Ss])?|[Nn][Oo]?|[Oo]([Nn]|[Ff][Ff])"
                    r"|[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])\s*$",
                },
                {"enum": [0, 1]},
                {"type": "null"},
            ],
        },
        "ipv4": {
            "description": "An IPv4 address in dotted-quad form (no leading zeros).",
            "type": "string",
            "pattern": rf"^\s*{_IPV4[1:-1]}\s*$",
        },
        "optionalIpv4": {
            "description": "An IPv4 address in dotted-quad form (no leading zeros); empty (null) "
            "means not set.",
            "type": ["string", "null"],
            "pattern": rf"^\s*{_IPV4[1:-1]}\s*$",
        },
        "ipv4List": {
            "description": "A list of IPv4 addresses, or (as Sextant's templates allowed) one "
            "string holding one address or several separated by commas. Empty (null) means not "
            "set.",
            "anyOf": [
                {"type": "array", "items": {"$ref": "#/$defs/ipv4"}},
                {"type": "string", "pattern": rf"^\s*{_IPV4}?\s*(,\s*{_IPV4}?\s*)*$"},
                {"type": "null"},
            ],
        },
        "scalarString": {
            "description": "Text. Plain numbers and booleans are read as written (7.10 stays 7.10, "
            "off stays off), as Sextant's Go reader did.",
            "type": ["string", "number", "boolean", "null"],
        },
        "stringList": {
            "description": "A list of strings (numbers are turned into text), or one string.",
            "anyOf": [
                {"type": "array", "items": {"type": ["string", "number"]}},
                {"type": ["string", "number", "null"]},
            ],
        },
        "version": {
            "description": "A release version such as 3815.2.0, or current (lowercase).",
            "anyOf": [
                {"type": "string", "pattern": r"^\s*(current|\d+(\.\d+)*)\s*$"},
                {"type": "number", "minimum": 0},
                {"type": "null"},
            ],
        },
        "mac": {
            "description": "A MAC address: 00:25:90:c0:f7:80, 00-25-90-C0-F7-80 (one or two hex "
            "digits per octet, one separator throughout), 0025.90c0.f780 (Cisco) or 002590c0f780. "
            "Any letter case. Unquoted MACs that YAML 1.1 reads as numbers (12:34:56:12:34:56, "
            "001122334455) are read as written.",
            "anyOf": [{"type": "string", "pattern": rf"^\s*({_MAC})\s*$"}, {"type": "integer"}],
        },
    }


_NETMASK = rf"^\s*/*([0-9]+|{_IPV4[1:-1]})\s*$"
_NETWORK = rf"^\s*{_IPV4[1:-1]}(/([0-9]+|{_IPV4[1:-1]}))?\s*$"
_LEASE = r"^\s*([Ii][Nn][Ff][Ii][Nn][Ii][Tt]([Ee]|[Yy])|\d+|(\d+[WwDdHhMmSs])+)\s*$"
_DIGITS = r"^\s*\d+\s*$"
_REFS = MappingProxyType(
    {
        Form.BOOL: "yamlBoolean",
        Form.IPV4_LIST: "ipv4List",
        Form.TEXT: "scalarString",
        Form.TEXT_LIST: "stringList",
        Form.VERSION: "version",
        Form.MAC: "mac",
    }
)


# ---- text ----------------------------------------------------------------------------------------
def plain(markdown: str) -> str:
    """A doc line as plain text for the schema: code spans lose their backquotes, a link becomes
    its text (a link within the docs page says which page)."""
    text = re.sub(r"\[([^\]]*)\]\(#[^)]*\)", rf"\1 ({DOCS_FILE.as_posix()})", markdown)
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).replace("`", "")


def format_default(value: Value) -> str:
    """A default as the description writes it: booleans as y/n, like Sextant's files."""
    if isinstance(value, bool):
        return "y" if value else "n"
    return str(value)


def full_doc(key: Key) -> str:
    """The key's doc line with what the table adds: known values, unquoted off, being ignored."""
    parts = [key.doc]
    if key.known:
        listed = ", ".join(f"`{value}`" for value in key.known)
        parts.append(f"Known values: {listed}; another value gets a warning.")
    if key.form is Form.CHOICE and "off" in key.choices:
        parts.append("Unquoted `off` works too.")
    if key.ignored:
        parts.append(f"Ignored, with a warning: {key.ignored}.")
    return " ".join(parts)


def default_doc(key: Key) -> str:
    """The Default column (Markdown)."""
    if key.required:
        return "**required**"
    if key.default_doc:
        return key.default_doc
    if key.default is not None:
        return f"`{format_default(key.default)}`"
    return "none"


def type_doc(key: Key) -> str:
    """The Type column (Markdown)."""
    if key.type_doc:
        return key.type_doc
    if key.form is Form.CHOICE:
        return " | ".join(f"`{choice}`" for choice in key.choices)
    if key.form is Form.INTEGER:
        return f"int {key.low}–{key.high}"
    return _TYPE_WORDS[key.form]


_TYPE_WORDS = MappingProxyType(
    {
        Form.BOOL: "bool",
        Form.IPV4: "IPv4",
        Form.IPV4_LIST: "IPv4 list",
        Form.TEXT: "text",
        Form.TEXT_LIST: "list of text",
        Form.STRING: "text",
        Form.VERSION: "version",
        Form.MAC: "MAC",
        Form.NETMASK: "netmask",
        Form.NETWORK: "IPv4 network",
        Form.LEASE: "lease time",
        Form.SSH_KEYS: "keys",
        Form.STRING_MAP: "mapping",
        Form.BLOCK: "mapping",
        Form.BLOCK_LIST: "list of mappings",
        Form.BOOL_OR_BLOCK: "bool or mapping",
        Form.ANY: "any",
    }
)


# ---- the JSON schema -----------------------------------------------------------------------------
def schema() -> dict[str, Any]:
    """config/cluster-desc.schema.json as a JSON value."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bootstrapperd cluster description (cluster-desc.yml)",
        "description": "Sextant's cluster-desc.yml, as bootstrapperd reads it, plus "
        "bootstrapperd's own keys (per-node ip, os, dhcp, http_port). Unknown keys are accepted "
        "with a warning. Generated from bootstrapperd/model/keys.py. Reference: "
        "docs/cluster-description.md.",
        "type": "object",
        **_mapping(TOP),
        "$defs": defs(),
    }


def schema_text() -> str:
    """The schema file's text."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def _mapping(keys: Sequence[Key]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    required = [key.name for key in keys if key.required]
    if required:
        out["required"] = required
    out["additionalProperties"] = True
    out["properties"] = {key.name: _property(key) for key in keys}
    return out


def _property(key: Key) -> dict[str, Any]:
    text = plain(full_doc(key))
    if key.required:
        text = f"Required. {text}"
    elif key.default_doc or key.default is not None:
        text += f" Default: {plain(default_doc(key))}."
    text += " From Sextant." if key.origin is Origin.SEXTANT else " New in bootstrapperd."
    out: dict[str, Any] = {"description": text, **_form(key)}
    if key.default is not None and not key.default_doc:
        out["default"] = format_default(key.default) if key.form is Form.BOOL else key.default
    if key.known:
        out["examples"] = list(key.known)
    return out


def _form(key: Key) -> dict[str, Any]:
    form = key.form
    if form in _REFS:
        return {"$ref": f"#/$defs/{_REFS[form]}"}
    if form is Form.IPV4:
        return {"$ref": "#/$defs/ipv4" if key.required else "#/$defs/optionalIpv4"}
    if form is Form.STRING:
        return {"type": ["string", "null"], **({"pattern": key.pattern} if key.pattern else {})}
    if form is Form.NETMASK:
        forms: list[Any] = [
            {"type": "string", "pattern": _NETMASK},
            {"type": "integer", "minimum": 0, "maximum": 32},
        ]
        return {"anyOf": forms if key.required else [*forms, {"type": "null"}]}
    if form is Form.NETWORK:
        return {"type": ["string", "null"], "pattern": _NETWORK}
    if form is Form.LEASE:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": _LEASE},
                {"type": "null"},
            ]
        }
    if form is Form.CHOICE:
        return {"anyOf": _choice(key.choices)}
    if form is Form.INTEGER:
        number = {"type": "integer", "minimum": key.low, "maximum": key.high}
        digits = {"type": "string", "pattern": key.pattern or _DIGITS}
        return {"anyOf": [number, digits, {"type": "null"}]}
    if form is Form.SSH_KEYS:
        strings = {"type": "array", "items": {"type": "string"}}
        return {"anyOf": [{"type": "string"}, strings, {"type": "null"}]}
    if form is Form.STRING_MAP:
        item = {"description": plain(key.item_doc)} if key.item_doc else {}
        value = {**item, "type": "string", "pattern": key.pattern}
        return {"type": ["object", "null"], "additionalProperties": value}
    if form is Form.BLOCK:
        return {"type": ["object", "null"], **_mapping(key.keys)}
    if form is Form.BLOCK_LIST:
        items = {"description": plain(key.item_doc), "type": "object", **_mapping(key.keys)}
        out: dict[str, Any] = {"type": "array" if key.required else ["array", "null"]}
        return {**out, "items": items, **({"minItems": 1} if key.required else {})}
    if form is Form.BOOL_OR_BLOCK:
        return {
            "anyOf": [{"$ref": "#/$defs/yamlBoolean"}, {"type": "object", **_mapping(key.keys)}]
        }
    return {}  # Form.ANY


def _choice(choices: Sequence[str]) -> list[Any]:
    """The written choices, the same in any letter case with spaces around, or empty."""
    spelled = "|".join("".join(_any_case(c) for c in choice) for choice in choices)
    forms: list[Any] = [
        {"enum": list(choices)},
        {"type": "string", "pattern": rf"^\s*({spelled})\s*$"},
        {"type": "null"},
    ]
    if "off" in choices:
        forms.append({"const": False, "description": "unquoted off (YAML 1.1 reads it as false)"})
    return forms


def _any_case(char: str) -> str:
    if char.isalpha():
        return f"[{char.lower()}{char.upper()}]"
    return char if char in "-_" or char.isdigit() else re.escape(char)


# ---- the docs' key tables ------------------------------------------------------------------------
def table(section: str) -> str:
    """The Markdown table of one section's keys, rows in the table's order."""
    rows = ["| Key | Type | Default | Origin | Notes |", "|---|---|---|---|---|"]
    for path, key in _section_keys(section):
        notes = f"{full_doc(key)} {key.item_doc}" if key.item_doc else full_doc(key)
        cells = (f"`{path}`", type_doc(key), default_doc(key), key.origin.value, notes)
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(markdown: str) -> str:
    return markdown.replace("|", "\\|")


def _section_keys(section: str) -> list[tuple[str, Key]]:
    out: list[tuple[str, Key]] = []
    for top in TOP:
        if top.section == section:
            out += walk((top,))
    return out


def docs_text(current: str) -> str:
    """``current`` with each marked block replaced by its section's table.

    Raises ValueError if a section has no block, or a block names no section.
    """
    found = [m.group("name") for m in MARKER.finditer(current)]
    unknown = sorted(set(found) - set(SECTIONS))
    missing = [s for s in SECTIONS if s not in found]
    if unknown or missing or len(found) != len(set(found)):
        raise ValueError(
            f"{DOCS_FILE}: key-table markers: missing {missing}, unknown {unknown}, found {found}"
        )
    return MARKER.sub(lambda m: m.group(1) + table(m.group("name")) + m.group(4), current)


# ---- the command ---------------------------------------------------------------------------------
def outputs(root: Path) -> dict[Path, str]:
    """Each generated file under ``root`` and the text it should have."""
    docs = (root / DOCS_FILE).read_text(encoding="utf-8")
    return {root / SCHEMA_FILE: schema_text(), root / DOCS_FILE: docs_text(docs)}


def stale(root: Path) -> list[Path]:
    """The generated files under ``root`` whose text differs from the table's."""
    out = []
    for path, text in outputs(root).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command: 0 when the files are (now) current, 1 when ``--check`` finds a stale one."""
    parser = argparse.ArgumentParser(
        prog="python -m bootstrapperd.model.keygen",
        description="Write the JSON schema and the docs' key tables from the key table.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="the project's directory (default: the one this module is in)",
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        old = stale(root)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for path in old:
            print(
                f"stale: {path.relative_to(root)} (run python -m bootstrapperd.model.keygen)",
                file=sys.stderr,
            )
        return 1 if old else 0
    texts = outputs(root)
    for path in old:
        path.write_text(texts[path], encoding="utf-8")
        print(f"wrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
