"""The node set-up (``node.yaml.j2``) written as Ignition, spec 3.3.0 as Flatcar consumes it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

__all__ = ["IGNITION_VERSION", "to_ignition"]

IGNITION_VERSION = "3.3.0"


def _data_url(text: str) -> str:
    return "data:," + quote(text, safe="")


def to_ignition(setup: dict[str, Any]) -> dict[str, Any]:
    files: list[dict[str, Any]] = [
        {
            "path": "/etc/hostname",
            "mode": 0o644,
            "overwrite": True,
            "contents": {"source": _data_url(setup["hostname"] + "\n")},
        }
    ]
    for file in setup.get("files") or ():
        files.append(
            {
                "path": file["path"],
                "mode": int(file.get("mode", 0o644)),
                "overwrite": True,
                "contents": {"source": _data_url(file["contents"])},
            }
        )
    units: list[dict[str, Any]] = []
    for unit in setup.get("units") or ():
        entry: dict[str, Any] = {"name": unit["name"]}
        if unit.get("mask"):
            entry["mask"] = True
        if unit.get("enabled"):
            entry["enabled"] = True
        if unit.get("contents"):
            entry["contents"] = unit["contents"]
        if unit.get("dropins"):
            entry["dropins"] = [
                {"name": d["name"], "contents": d["contents"]} for d in unit["dropins"]
            ]
        units.append(entry)
    return {
        "ignition": {"version": IGNITION_VERSION},
        "passwd": {
            "users": [{"name": "core", "sshAuthorizedKeys": list(setup["ssh_authorized_keys"])}]
        },
        "storage": {"files": files},
        "systemd": {"units": units},
    }


def dumps(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
