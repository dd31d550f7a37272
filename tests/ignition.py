"""Reading an Ignition config as the machine would end up with it: every file it writes, with
the configs it merges (data URLs, as install.sh writes them) resolved."""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any


def data_url(source: str) -> str:
    """The text of a data URL: URL-quoted, or base64."""
    assert source.startswith("data:"), source[:40]
    header, _, data = source.partition(",")
    if header.endswith(";base64"):
        return base64.b64decode(data).decode()
    return urllib.parse.unquote(data)


def ignition_files(config: dict[str, Any]) -> dict[str, str]:
    """Every file the config writes (path → text), merged configs included."""
    files: dict[str, str] = {}
    for merged in config.get("ignition", {}).get("config", {}).get("merge", []):
        files.update(ignition_files(json.loads(data_url(merged["source"]))))
    for entry in config.get("storage", {}).get("files", []):
        files[entry["path"]] = data_url(entry["contents"]["source"])
    return files


def ignition_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config and every config it merges (data URLs), in the order Ignition applies them."""
    found = []
    for merged in config.get("ignition", {}).get("config", {}).get("merge", []):
        found += ignition_configs(json.loads(data_url(merged["source"])))
    return [*found, config]
